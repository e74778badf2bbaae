//! The agent's async shell: folder events in, journaled jobs, admission by the sans-IO
//! [`Scheduler`], runs on the function's executor, outputs delivered, logs written.
//!
//! One task owns the scheduler and receives every message; each run is its own task. The journal
//! is written before every step it records is acted on, so a `SIGKILL` anywhere loses nothing:
//! queued jobs stay queued, interrupted runs run again in fresh folders, and finished runs whose
//! outputs were not all delivered are delivered again (to the same names).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use spillway_placement::estimate::RunTimes;
use spillway_proto::JobId;
use spillway_proto::load::{FunctionLoad, LoadReport};
use spillway_proto::quantity::{Bytes, Millicores};
use spillway_proto::wire::{DeployAck, Deployment};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::catalog::{Catalog, Runtimes};
use crate::journal::{Guest, JobRecord, JobState, Journal, JournalError, SeenFile, now_ms};
use crate::scheduler::{Demand, Scheduler};
use crate::staging::Staging;
use crate::watch::{FolderEvent, FolderWatch, WatchError, scan};
use crate::{joblog, mesh, runtime};
use spillway_agent_config::AgentConfig;

mod handover;
mod identify;
mod message;
mod run;

pub use handover::{Answer, DEFAULT_RESCHEDULER_THRESHOLD, MeshOut, predicted_local_wait_ms};

use identify::identify_file;
use run::{conclude, finish_delivery, run_job};

/// What can stop the agent from starting or keep it from running on.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum AgentError {
    /// cannot create {path}: {source}
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// {0}
    Journal(#[from] JournalError),
    /// {0}
    Watch(#[from] WatchError),
    /// {0}
    Runtime(#[from] runtime::PrepareError),
    /// {0}
    Mqtt(#[from] crate::mqtt::MqttError),
}

/// What happened to a job, for observers (tests, benchmarks, future gossip).
#[derive(Debug, Clone)]
pub enum JobEvent {
    Queued {
        id: JobId,
        function: String,
    },
    Started {
        id: JobId,
        function: String,
        at: Instant,
    },
    Finished {
        id: JobId,
        function: String,
        state: JobState,
    },
}

/// A deployed function, as the start-up banner shows it.
#[derive(Debug, Clone)]
pub struct FunctionSummary {
    pub name: String,
    pub runtime: spillway_proto::Runtime,
    pub slots: u32,
    pub inputs: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
    /// MQTT topic filters that trigger it, and topics it publishes to.
    pub topics_in: Vec<String>,
    pub topics_out: Vec<String>,
}

enum Msg {
    Folder(FolderEvent),
    /// A job for a file; `live` when inotify just saw the file arrive (not a rescan).
    Identified {
        record: Box<JobRecord>,
        seen: Option<(String, SeenFile)>,
        live: bool,
    },
    Done(JobId),
    Fatal(JournalError),
    /// A new function set from the coordinator; answered once it is in force.
    Deploy(Box<Deployment>, oneshot::Sender<DeployAck>),
    /// The coordinator's answer about an offered job; answered with whether to acknowledge it.
    Answer(JobId, Answer, oneshot::Sender<bool>),
    /// A job placed here for another node; answered with whether it is new.
    Host(Box<JobRecord>, Guest, oneshot::Sender<bool>),
}

/// Shared by the engine loop and its run tasks.
struct Shared {
    config: AgentConfig,
    journal: Journal,
    events: broadcast::Sender<JobEvent>,
    msgs: mpsc::UnboundedSender<Msg>,
    /// The way to the coordinator while the link is up (offers go nowhere otherwise).
    mesh: std::sync::Mutex<Option<mpsc::UnboundedSender<MeshOut>>>,
    /// Publishes MQTT outputs, once the MQTT client runs (`[mqtt]` set).
    mqtt: std::sync::OnceLock<crate::mqtt::Publisher>,
}

impl Shared {
    fn mesh_out(&self) -> Option<mpsc::UnboundedSender<MeshOut>> {
        self.mesh.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct Agent {
    shared: Arc<Shared>,
    scheduler: Scheduler,
    catalog: Catalog,
    rx: mpsc::UnboundedReceiver<Msg>,
    folder_rx: mpsc::UnboundedReceiver<FolderEvent>,
    folder_tx: mpsc::UnboundedSender<FolderEvent>,
    watch: FolderWatch,
    runtimes: Runtimes,
    tasks: JoinSet<()>,
    load: watch::Sender<LoadReport>,
    /// Start time of each running job, and the run times learned per function (the placement
    /// core's estimates, under this node's name: the coordinator keeps the same).
    started: HashMap<JobId, (String, Instant)>,
    run_times: RunTimes,
    /// The oldest queued job and when it was queued, so load reports need no journal read.
    oldest: Option<(JobId, u64)>,
    /// When the coordinator last declined a job of each function.
    declined: HashMap<String, Instant>,
    /// Offers sent and not answered yet, with their function.
    in_doubt: HashMap<JobId, String>,
    /// Beats every time the loop goes round its timer, for the systemd watchdog.
    heartbeat: spillway_plumbing::systemd::Heartbeat,
    /// The topic filters the deployed functions' MQTT triggers want.
    subscriptions: watch::Sender<crate::mqtt::Subscriptions>,
    /// Messages from the MQTT client (while it runs).
    mqtt_rx: Option<mpsc::Receiver<crate::mqtt::Incoming>>,
    /// MQTT messages no function wanted, and messages over `[mqtt] max_payload`.
    mqtt_unwanted: u64,
    mqtt_too_large: u64,
}

/// What the mesh link needs from a running agent: its load, its jobs, and a way to deploy.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    shared: Arc<Shared>,
    pub load: watch::Receiver<LoadReport>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl AgentHandle {
    pub fn config(&self) -> &AgentConfig {
        &self.shared.config
    }

    pub fn journal(&self) -> &Journal {
        &self.shared.journal
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    /// Lets the engine offer jobs through `out` while the link is up (`None`: it is down).
    pub fn set_mesh(&self, out: Option<mpsc::UnboundedSender<MeshOut>>) {
        *self.shared.mesh.lock().unwrap_or_else(|e| e.into_inner()) = out;
    }

    /// Applies the coordinator's answer about an offered job; `true` when the answer is
    /// journaled and should be acknowledged.
    pub async fn answer(&self, id: JobId, answer: Answer) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.shared.msgs.send(Msg::Answer(id, answer, tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Queues a job the coordinator placed here; `false` when it was already known here.
    pub async fn host(&self, record: JobRecord, guest: Guest) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .shared
            .msgs
            .send(Msg::Host(Box::new(record), guest, tx))
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Puts a deployment in force; resolves when the agent runs it.
    pub async fn deploy(&self, deployment: Deployment) -> Option<DeployAck> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .msgs
            .send(Msg::Deploy(Box::new(deployment), tx))
            .ok()?;
        rx.await.ok()
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.shared.config.node_name)
            .finish_non_exhaustive()
    }
}

/// The next MQTT message, or never when there is no MQTT client.
async fn next_message(
    rx: &mut Option<mpsc::Receiver<crate::mqtt::Incoming>>,
) -> Option<crate::mqtt::Incoming> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The CPU and memory this node offers to functions.
pub fn node_capacity(config: &AgentConfig) -> Demand {
    let cpu = config.resources.cpu.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        Millicores(cores * 1000)
    });
    let memory = config.resources.memory.unwrap_or_else(|| {
        let total = match sysinfo::System::new() {
            Ok(mut sys) => {
                sys.refresh_memory();
                sys.cgroup_limits().map_or(sys.total_memory(), |c| {
                    c.total_memory.min(sys.total_memory())
                })
            }
            Err(e) => {
                tracing::warn!(
                    "cannot read this machine's memory ({e}); assuming 1Gi (set resources.memory)"
                );
                1 << 30
            }
        };
        Bytes(total.saturating_sub(config.resources.reserved_memory.0))
    });
    Demand { cpu, memory }
}

impl Agent {
    /// Opens the journal, deploys the functions, connects to the MQTT broker (`[mqtt]`), recovers
    /// unfinished jobs and starts watching.
    /// Nothing runs until [`Agent::run`]. `container_shim` is the program started as
    /// `PROGRAM oci-run BUNDLE` for each container job: `spillway-agent` itself, or `spillway` in
    /// `spillway up`.
    pub fn start(config: AgentConfig, container_shim: &Path) -> Result<Self, AgentError> {
        for dir in [
            config.state_dir.clone(),
            config.logs_dir(),
            config.staging_dir(),
            config.run_dir(),
            config.data_root.clone(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| AgentError::CreateDir { path: dir, source })?;
        }
        let journal = Journal::open(&config.journal_path())?;
        let mut scheduler = Scheduler::new(node_capacity(&config));
        let runtimes = Runtimes::new(&config, container_shim)?;
        let mesh_functions = mesh::deployment::load(&config.state_dir)
            .map(|d| mesh::deployment::functions(&config.state_dir, &d))
            .unwrap_or_default();
        let catalog = Catalog::load(&config, &runtimes, &mut scheduler, mesh_functions);
        let (msgs, rx) = mpsc::unbounded_channel();
        let (folder_tx, folder_rx) = mpsc::unbounded_channel();
        let watch = FolderWatch::start(&catalog.input_dirs(), folder_tx.clone())?;
        let (events, _) = broadcast::channel(4096);
        // Inputs are opened beneath the data root: it must be there to open.
        crate::beneath::Beneath::open(&config.data_root).map_err(|e| AgentError::CreateDir {
            path: config.data_root.clone(),
            source: e.into_io(),
        })?;
        let shared = Arc::new(Shared {
            config,
            journal,
            events,
            msgs,
            mesh: std::sync::Mutex::new(None),
            mqtt: std::sync::OnceLock::new(),
        });
        let subscriptions = watch::channel(catalog.mqtt_subscriptions()).0;
        let mut agent = Self {
            shared,
            scheduler,
            catalog,
            rx,
            folder_rx,
            folder_tx: folder_tx.clone(),
            watch,
            runtimes,
            tasks: JoinSet::new(),
            load: watch::channel(LoadReport::default()).0,
            started: HashMap::new(),
            run_times: RunTimes::default(),
            oldest: None,
            declined: HashMap::new(),
            in_doubt: HashMap::new(),
            heartbeat: spillway_plumbing::systemd::Heartbeat::default(),
            subscriptions,
            mqtt_rx: None,
            mqtt_unwanted: 0,
            mqtt_too_large: 0,
        };
        // Before recovery: a recovered delivery may have MQTT outputs to publish. Messages
        // wait in the channel (and, beyond it, at the broker) until `run` takes them.
        if let Some(settings) = &agent.shared.config.mqtt {
            let (tx, rx) = mpsc::channel(64);
            let identity = settings
                .mesh_identity
                .then(|| crate::mesh::Membership::load(&agent.shared.config.state_dir))
                .flatten();
            let publisher = crate::mqtt::start(
                settings,
                identity.as_ref(),
                agent
                    .shared
                    .config
                    .state_dir
                    .join("mqtt-subscriptions.json"),
                agent.subscriptions.subscribe(),
                tx,
            )?;
            let _ = agent.shared.mqtt.set(publisher);
            agent.mqtt_rx = Some(rx);
        }
        agent.recover()?;
        // Files that arrived while the agent was down.
        for dir in agent.catalog.input_dirs() {
            let _ = folder_tx.send(FolderEvent::Rescan(dir));
        }
        agent.publish_load();
        Ok(agent)
    }

    /// A handle for the mesh link (load, jobs, deployments).
    pub fn mesh_handle(&self) -> AgentHandle {
        AgentHandle {
            shared: self.shared.clone(),
            load: self.load.subscribe(),
        }
    }

    /// Publishes this node's load for the mesh link (only when it changed).
    fn publish_load(&mut self) {
        let oldest = self.scheduler.oldest_queued();
        if oldest != self.oldest.map(|(id, _)| id) {
            self.oldest = oldest.map(|id| {
                let at = self
                    .shared
                    .journal
                    .get(id)
                    .ok()
                    .flatten()
                    .map_or_else(now_ms, |r| r.queued_at_ms);
                (id, at)
            });
        }
        let functions = self
            .scheduler
            .function_loads()
            .into_iter()
            .map(|(name, free_slots, queued, running)| FunctionLoad {
                mean_run_ms: self
                    .run_times
                    .measured(&name, &self.shared.config.node_name)
                    .map_or(0, |m| u32::try_from(m).unwrap_or(u32::MAX)),
                name,
                free_slots,
                queued,
                running,
            })
            .collect();
        let report = LoadReport {
            queued: self.scheduler.queued() as u32,
            running: self.scheduler.running() as u32,
            oldest_queued_ms: self.oldest.map_or(0, |(_, at)| now_ms().saturating_sub(at)),
            functions,
            mqtt_unwanted: self.mqtt_unwanted,
            mqtt_too_large: self.mqtt_too_large,
            ..LoadReport::default()
        };
        self.load.send_if_modified(|current| {
            let changed = current.queued != report.queued
                || current.running != report.running
                || current.functions != report.functions
                || current.mqtt_unwanted != report.mqtt_unwanted
                || current.mqtt_too_large != report.mqtt_too_large;
            // The age of the oldest job changes every millisecond; it rides along with real changes.
            if changed {
                *current = report;
            }
            changed
        });
    }

    /// Puts a new function set from the coordinator in force: saved first (so a reboot comes
    /// back with it), then deployed, watched and rescanned.
    fn apply_deployment(&mut self, deployment: Deployment) -> DeployAck {
        let s = self.shared.clone();
        let digest = deployment.digest();
        if let Err(e) = mesh::deployment::save(&s.config.state_dir, &deployment) {
            tracing::error!("deployment not applied: {e}");
            return DeployAck {
                deployment: [0; 32],
                running: self.catalog.functions.keys().cloned().collect(),
                refused: vec![("*".into(), e.to_string())],
            };
        }
        let defs = mesh::deployment::functions(&s.config.state_dir, &deployment);
        let catalog = Catalog::load(&s.config, &self.runtimes, &mut self.scheduler, defs);
        for gone in self
            .catalog
            .functions
            .keys()
            .filter(|n| !catalog.functions.contains_key(*n))
        {
            tracing::info!(function = %gone, "function removed by the coordinator");
            self.scheduler.remove_function(gone);
        }
        let old_dirs = self.catalog.input_dirs();
        match FolderWatch::start(&catalog.input_dirs(), self.folder_tx.clone()) {
            Ok(w) => self.watch = w,
            Err(e) => tracing::error!("cannot watch the new input folders: {e}"),
        }
        for dir in catalog
            .input_dirs()
            .into_iter()
            .filter(|d| !old_dirs.contains(d))
        {
            let _ = self.folder_tx.send(FolderEvent::Rescan(dir));
        }
        self.catalog = catalog;
        self.subscriptions
            .send_replace(self.catalog.mqtt_subscriptions());
        tracing::info!(
            functions = self.catalog.functions.len(),
            refused = self.catalog.refused.len(),
            "deployment from the coordinator in force"
        );
        DeployAck {
            deployment: digest,
            running: self.catalog.functions.keys().cloned().collect(),
            refused: self
                .catalog
                .refused
                .iter()
                .map(|r| (r.name.clone(), r.reason.clone()))
                .collect(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    pub fn node_name(&self) -> &str {
        &self.shared.config.node_name
    }

    pub fn functions(&self) -> Vec<FunctionSummary> {
        let data_root = &self.shared.config.data_root;
        self.catalog
            .functions
            .values()
            .map(|f| FunctionSummary {
                name: f.def.name.clone(),
                runtime: f.def.runtime,
                slots: self.scheduler.slots(&f.def.name),
                inputs: f.inputs.iter().map(|(d, _)| d.clone()).collect(),
                outputs: f
                    .def
                    .output
                    .iter()
                    .filter(|o| o.provider.is_local())
                    .map(|o| o.path.dir_under(data_root))
                    .collect(),
                topics_in: f
                    .def
                    .triggers
                    .iter()
                    .map(|spillway_proto::fdl::Trigger::Mqtt(m)| m.topic.clone())
                    .collect(),
                topics_out: f.def.mqtt_outputs.iter().map(|o| o.topic.clone()).collect(),
            })
            .collect()
    }

    pub fn refused(&self) -> &[crate::catalog::Refused] {
        &self.catalog.refused
    }

    pub fn capacity(&self) -> Demand {
        self.scheduler.capacity()
    }

    /// Beats while the engine loop runs (for the systemd watchdog).
    pub fn heartbeat(&self) -> spillway_plumbing::systemd::Heartbeat {
        self.heartbeat.clone()
    }

    /// Delivers, in the background, the outputs of a job journaled `Ran` to its function's
    /// outputs.
    fn spawn_delivery(
        &mut self,
        record: JobRecord,
        staging: PathBuf,
        outputs: Vec<spillway_proto::ObjectKey>,
    ) {
        let targets = self
            .catalog
            .functions
            .get(&record.function)
            .map(|f| run::Targets::of(&f.def))
            .unwrap_or_default();
        let s = self.shared.clone();
        self.tasks.spawn(async move {
            finish_delivery(&s, record, &staging, &outputs, &targets).await;
        });
    }

    /// Puts every unfinished job of the journal back in motion.
    fn recover(&mut self) -> Result<(), JournalError> {
        let s = self.shared.clone();
        if let Ok(entries) = std::fs::read_dir(s.config.run_dir()) {
            for entry in entries.flatten() {
                runtime::process::reap_orphan(&entry.path());
            }
        }
        let mut keep_staging = Vec::new();
        for record in s.journal.unfinished()? {
            match record.state.clone() {
                JobState::Queued => self.scheduler.enqueue(record.id, &record.function),
                JobState::Running if record.attempt >= s.config.defaults.max_attempts => {
                    let reason = format!(
                        "interrupted {} times by agent restarts during its run; not retried again",
                        record.attempt
                    );
                    let staging =
                        Staging::for_attempt(&s.config.staging_dir(), record.id, record.attempt)
                            .root;
                    conclude(&s, record, JobState::Failed { reason }, &staging, None)?;
                }
                JobState::Running => {
                    tracing::info!(job = %record.id.short(), function = %record.function, "re-running a job interrupted by a restart");
                    s.journal
                        .update(record.id, |r| r.state = JobState::Queued)?;
                    self.scheduler.enqueue(record.id, &record.function);
                }
                JobState::Ran { staging, outputs } if s.journal.hosting(record.id)?.is_some() => {
                    // A guest's outputs wait in its own folder for the link to send them.
                    let outputs = outputs.iter().map(|k| k.to_string()).collect();
                    conclude(
                        &s,
                        record,
                        JobState::Succeeded { outputs },
                        &staging.join("staging"),
                        None,
                    )?;
                }
                JobState::Ran { staging, outputs } => {
                    keep_staging.push(staging.clone());
                    tracing::info!(job = %record.id.short(), "delivering the outputs of a job that finished before the restart");
                    self.spawn_delivery(record, staging, outputs);
                }
                // Only the coordinator's answer moves these (the link asks again when it is up).
                JobState::Offered | JobState::Handed => {}
                JobState::Succeeded { .. } | JobState::Failed { .. } => {}
            }
        }
        // Folders of runs that will never be looked at again.
        if let Ok(entries) = std::fs::read_dir(s.config.staging_dir()) {
            for entry in entries
                .flatten()
                .filter(|e| !keep_staging.contains(&e.path()))
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        joblog::prune(&s.config.logs_dir(), s.config.logs.keep_jobs);
        Ok(())
    }

    /// Runs until `shutdown` resolves, then lets running jobs finish within the grace period.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        self.admit()?;
        tokio::pin!(shutdown);
        let mut rescheduler = tokio::time::interval(std::time::Duration::from_millis(500));
        rescheduler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(msg) = self.rx.recv() => self.handle(msg)?,
                _ = rescheduler.tick() => {
                    self.heartbeat.beat();
                    self.reschedule()?;
                    self.publish_load();
                }
                Some(ev) = self.folder_rx.recv() => self.handle(Msg::Folder(ev))?,
                Some(m) = next_message(&mut self.mqtt_rx) => {
                    self.on_message(m)?;
                    self.publish_load();
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        let grace = self.shared.config.defaults.shutdown_grace;
        tracing::info!(
            running = self.scheduler.running(),
            "shutting down; waiting up to {}s for running jobs",
            grace.as_secs()
        );
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("jobs still running after the grace period run again at the next start");
            self.tasks.shutdown().await;
        }
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<(), AgentError> {
        match msg {
            Msg::Folder(FolderEvent::Ready(path)) => self.identify(path, true),
            Msg::Folder(FolderEvent::Found(path)) => self.identify(path, false),
            Msg::Folder(FolderEvent::Rescan(dir)) => {
                let tx = self.shared.msgs.clone();
                tokio::task::spawn_blocking(move || {
                    for path in scan(&dir) {
                        let _ = tx.send(Msg::Folder(FolderEvent::Found(path)));
                    }
                });
            }
            Msg::Identified { record, seen, live } => self.accept(*record, seen, live)?,
            Msg::Done(id) => {
                self.scheduler.finish(id);
                if let Some((function, at)) = self.started.remove(&id) {
                    let ms = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let node = &self.shared.config.node_name;
                    self.run_times.observe(&function, node, ms);
                }
                self.admit()?;
            }
            Msg::Fatal(e) => return Err(e.into()),
            Msg::Deploy(deployment, reply) => {
                let ack = self.apply_deployment(*deployment);
                let _ = reply.send(ack);
                self.admit()?;
            }
            Msg::Answer(id, answer, reply) => {
                let ack = self.answer(id, answer)?;
                let _ = reply.send(ack);
            }
            Msg::Host(record, guest, reply) => {
                let new = self.host(*record, guest)?;
                let _ = reply.send(new);
            }
        }
        self.publish_load();
        Ok(())
    }

    /// Hashes a new file off the async workers and reports the job it makes, per function.
    fn identify(&self, path: PathBuf, live: bool) {
        for (function, bucket, rel) in self.catalog.triggered_by(&path) {
            let (shared, function, bucket, rel, path) = (
                self.shared.clone(),
                function.clone(),
                bucket.clone(),
                rel.to_owned(),
                path.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let identified = identify_file(&shared, &function, &bucket, &rel, &path);
                if let Some((record, seen)) = identified {
                    let record = Box::new(record);
                    let _ = shared.msgs.send(Msg::Identified { record, seen, live });
                }
            });
        }
    }

    /// Starts every job the scheduler admits, journaling `Running` before each one starts.
    fn admit(&mut self) -> Result<(), AgentError> {
        let admitted = self.scheduler.admit();
        self.launch(admitted, None)
    }

    /// Journals a newly identified job. When a slot is free it is journaled straight as
    /// `Running`: one commit (one fsync) between the file event and the function starting.
    fn accept(
        &mut self,
        mut record: JobRecord,
        seen: Option<(String, SeenFile)>,
        live: bool,
    ) -> Result<(), AgentError> {
        let s = self.shared.clone();
        if let Some(existing) = s.journal.get(record.id)? {
            // The same event seen again is the same job. But a failed job whose input is
            // delivered anew (copied or moved in again) is a request to run it again.
            let retry = live
                && matches!(existing.state, JobState::Failed { .. })
                && !matches!(record.state, JobState::Failed { .. });
            if retry {
                tracing::info!(job = %record.id.short(), function = %record.function, "input delivered again: retrying the failed job");
                s.journal.update(record.id, |r| {
                    r.state = JobState::Queued;
                    r.attempt = 0;
                    r.started_at_ms = None;
                    r.finished_at_ms = None;
                })?;
                let _ = s.events.send(JobEvent::Queued {
                    id: record.id,
                    function: record.function.clone(),
                });
                self.scheduler.enqueue(record.id, &record.function);
                self.admit()?;
            }
            return Ok(());
        }
        let seen_ref = seen.as_ref().map(|(k, v)| (k.as_str(), v));
        if let JobState::Failed { reason } = &record.state {
            tracing::warn!(job = %record.id.short(), function = %record.function, "refused: {reason}");
            joblog::write(&s.config.logs_dir(), &record, None, None);
            s.journal.insert_if_new(&record, seen_ref)?;
            let _ = s.events.send(JobEvent::Finished {
                id: record.id,
                function: record.function.clone(),
                state: record.state,
            });
            return Ok(());
        }
        self.scheduler.enqueue(record.id, &record.function);
        let admitted = self.scheduler.admit();
        if admitted.iter().any(|(id, _)| *id == record.id) {
            record.state = JobState::Running;
            record.attempt = 1;
            record.started_at_ms = Some(now_ms());
        }
        s.journal.insert_if_new(&record, seen_ref)?;
        let _ = s.events.send(JobEvent::Queued {
            id: record.id,
            function: record.function.clone(),
        });
        let waiting =
            (record.state == JobState::Queued).then(|| (record.id, record.function.clone()));
        let started = (record.state == JobState::Running).then_some(record);
        self.launch(admitted, started)?;
        if let Some((id, function)) = waiting {
            self.offer_on_arrival(id, &function)?;
        }
        Ok(())
    }

    /// Starts admitted jobs, journaling `Running` before each one starts (`journaled` already is).
    fn launch(
        &mut self,
        admitted: Vec<(JobId, String)>,
        mut journaled: Option<JobRecord>,
    ) -> Result<(), AgentError> {
        for (id, function) in admitted {
            let s = self.shared.clone();
            let Some(deployed) = self.catalog.functions.get(&function).cloned() else {
                self.scheduler.finish(id);
                continue;
            };
            let record = match journaled.take_if(|r| r.id == id) {
                Some(record) => record,
                None => s.journal.update(id, |r| {
                    r.state = JobState::Running;
                    r.attempt += 1;
                    r.started_at_ms = Some(now_ms());
                })?,
            };
            self.started.insert(id, (function.clone(), Instant::now()));
            self.tasks.spawn(async move {
                if let Err(e) = run_job(&s, &deployed, record).await {
                    let _ = s.msgs.send(Msg::Fatal(e));
                }
                let _ = s.msgs.send(Msg::Done(id));
            });
        }
        Ok(())
    }
}
