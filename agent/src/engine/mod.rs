//! The agent's async shell, the driver of the sans-IO [`JobBook`]: folder events, MQTT messages
//! and placements in, the book's plans journaled and carried out, runs on the function's
//! executor, outputs delivered, logs written.
//!
//! One task owns the book and the journal's writes and receives every message; each run and
//! each delivery is its own task, which reports how it ended and writes nothing. Every plan is
//! committed before any of its acts, so a `SIGKILL` anywhere loses nothing: queued jobs stay
//! queued, interrupted runs run again in fresh folders, and finished runs whose outputs were not
//! all delivered are delivered again (to the same names).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use spillway_proto::JobId;
use spillway_proto::load::{FunctionLoad, LoadReport};
use spillway_proto::quantity::{Bytes, Millicores};
use spillway_proto::wire::{DeployAck, Deployment};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::book::{JobBook, RunEnd};
use crate::catalog::{Catalog, Runtimes};
use crate::journal::{Change, Guest, JobRecord, JobState, Journal, JournalError, now_ms};
use crate::scheduler::{Demand, Scheduler};
use crate::watch::{FolderEvent, FolderWatch, WatchError, scan};
use crate::{mesh, runtime};
use spillway_agent_config::AgentConfig;

mod drive;
mod identify;
mod message;
mod run;

pub use crate::book::Answer;

use identify::identify_file;

/// The book's clocks now: the journal's wall clock for what is recorded, and a monotonic one,
/// counted from the agent's start, for what is measured (see [`crate::book::Now`]).
pub(crate) fn book_now() -> crate::book::Now {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    crate::book::Now {
        wall_ms: now_ms(),
        mono_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

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
    /// cannot flush the files under {path} to disk: {source} (check the disk and its free space)
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the engine hands to the mesh session: offers of queued jobs the book decided this node
/// cannot run soon enough.
#[derive(Debug)]
pub enum MeshOut {
    Offer {
        record: Box<JobRecord>,
        reason: spillway_proto::wire::OfferReason,
        /// This node's predicted wait before the job would start here, and its mean run time.
        local_wait_ms: u64,
        run_ms: u64,
    },
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
        /// What the journal learns with it (the file's hash, which write it is).
        learnt: Vec<Change>,
        live: bool,
    },
    /// A run ended; its task wrote the job's log.
    RunEnded(JobId, RunEnd),
    /// A delivery ended (`Succeeded` or `Failed`); its task wrote the job's log.
    Delivered(JobId, JobState),
    /// A new function set from the coordinator; answered once it is in force.
    Deploy(Box<Deployment>, oneshot::Sender<DeployAck>),
    /// The coordinator's answer about an offered job; answered with whether to acknowledge it.
    Answer(JobId, Answer, oneshot::Sender<bool>),
    /// A job placed here for another node; answered with whether it is new.
    Host(Box<JobRecord>, Guest, oneshot::Sender<bool>),
    /// The coordinator has a guest job's result.
    GuestAcknowledged(JobId),
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
    /// `syncfs` calls made for the MQTT inbox (one per durable commit that needed one).
    filesystem_syncs: std::sync::atomic::AtomicU64,
    metrics: Arc<crate::metrics::AgentMetrics>,
}

impl Shared {
    fn mesh_out(&self) -> Option<mpsc::UnboundedSender<MeshOut>> {
        self.mesh.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct Agent {
    shared: Arc<Shared>,
    /// Every decision about this node's jobs; the engine carries out its plans.
    book: JobBook,
    /// What recovery decided at start, carried out when the engine runs.
    recovered: Option<crate::book::Plan>,
    catalog: Catalog,
    rx: mpsc::UnboundedReceiver<Msg>,
    folder_rx: mpsc::UnboundedReceiver<FolderEvent>,
    folder_tx: mpsc::UnboundedSender<FolderEvent>,
    watch: FolderWatch,
    runtimes: Runtimes,
    tasks: JoinSet<()>,
    load: watch::Sender<LoadReport>,
    /// What keeps this node from taking work besides its load, for the coordinator.
    condition: watch::Sender<spillway_proto::wire::NodeCondition>,
    /// Beats every time the loop goes round its timer, for the systemd watchdog.
    heartbeat: spillway_plumbing::systemd::Heartbeat,
    /// The topic filters the deployed functions' MQTT triggers want.
    subscriptions: watch::Sender<crate::mqtt::Subscriptions>,
    /// Messages from the MQTT client (while it runs).
    mqtt_rx: Option<mpsc::Receiver<crate::mqtt::Incoming>>,
    /// MQTT messages no function wanted, and messages over `[mqtt] max_payload`.
    mqtt_unwanted: u64,
    mqtt_too_large: u64,
    /// What waits for the journal's next durable commit.
    after: Vec<drive::After>,
    /// MQTT inputs written since the last durable commit, not yet synced.
    inbox_unsynced: bool,
    /// Shutting down: what ends is recorded, nothing new starts (it runs at the next start).
    stopping: bool,
    /// Whether there is room on disk for new inputs, and when it was last measured.
    disk: crate::disk::DiskGuard,
    disk_checked: Option<Instant>,
    /// Folder events dropped while the disk was full: the input folders are scanned again
    /// once there is room.
    rescan_on_room: bool,
    /// When finished jobs past `[retention]` were last removed.
    pruned_at: Instant,
}

/// How often the agent made its state durable, for fsyncs per job (see
/// [`AgentHandle::disk_syncs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskSyncs {
    pub journal: crate::journal::JournalCounts,
    /// `syncfs` calls for the MQTT inbox.
    pub filesystem: u64,
}

impl DiskSyncs {
    /// Durable commits and filesystem syncs together: what reaches the disk's cache flush.
    pub fn total(&self) -> u64 {
        self.journal.durable_commits + self.filesystem
    }
}

/// What the mesh link needs from a running agent: its load, its jobs, and a way to deploy.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    shared: Arc<Shared>,
    pub load: watch::Receiver<LoadReport>,
    pub condition: watch::Receiver<spillway_proto::wire::NodeCondition>,
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

    /// Whether the disk is too full to take new inputs (placements included).
    pub fn disk_full(&self) -> bool {
        self.condition.borrow().disk_full
    }

    /// How often the agent has made its state durable since it started.
    pub fn disk_syncs(&self) -> DiskSyncs {
        DiskSyncs {
            journal: self.shared.journal.counts(),
            filesystem: self
                .shared
                .filesystem_syncs
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    /// What `/metrics` shows of this agent.
    pub fn metrics(&self) -> Arc<crate::metrics::AgentMetrics> {
        self.shared.metrics.clone()
    }

    /// Lets the engine offer jobs through `out` while the link is up (`None`: it is down).
    pub fn set_mesh(&self, out: Option<mpsc::UnboundedSender<MeshOut>>) {
        self.shared.metrics.link_up.set(i64::from(out.is_some()));
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

    /// The coordinator has a guest job's result: its files go, and the journal remembers only
    /// its origin.
    pub fn guest_acknowledged(&self, id: JobId) {
        let _ = self.shared.msgs.send(Msg::GuestAcknowledged(id));
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

/// How often finished jobs past `[retention]` are looked for while the agent runs, and how many
/// go at once (a commit of their own; the engine is never held long).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
const PRUNE_AT_ONCE: usize = 2_000;

fn retention_of(config: &AgentConfig) -> crate::journal::Retention {
    crate::journal::Retention {
        max_age_ms: u64::try_from(config.retention.keep_finished.as_millis()).unwrap_or(u64::MAX),
        max_jobs: config.retention.keep_finished_jobs,
    }
}

/// Removes up to `limit` finished jobs past `[retention]`, staged, and their logs; how many.
fn prune_some(journal: &Journal, config: &AgentConfig, limit: usize) -> Result<usize, AgentError> {
    let ids = journal.prune(now_ms(), retention_of(config), limit)?;
    for id in &ids {
        let _ = std::fs::remove_file(crate::joblog::path_for(&config.logs_dir(), *id));
    }
    Ok(ids.len())
}

/// Removes, before anything runs, the finished jobs past `[retention]` (with their logs), and
/// gives their space back to the file system when they were many (an agent upgraded onto a
/// journal that grew for years).
fn prune_at_start(journal: &mut Journal, config: &AgentConfig) -> Result<(), AgentError> {
    let started = Instant::now();
    let mut removed = 0usize;
    loop {
        let n = prune_some(journal, config, 50_000)?;
        if n == 0 {
            break;
        }
        removed += n;
        // Durable chunk by chunk: staged pages are held in memory until flushed.
        journal.flush()?;
    }
    if removed >= 10_000 {
        journal.compact()?;
    }
    if removed > 0 {
        tracing::info!(
            removed,
            ms = started.elapsed().as_millis() as u64,
            "finished jobs past [retention] removed from the journal"
        );
    }
    Ok(())
}

/// How often the free space is measured while inputs arrive (the rescheduler's tick measures
/// too).
const DISK_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

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
        let mut journal = Journal::open(&config.journal_path())?;
        prune_at_start(&mut journal, &config)?;
        let disk_min_free = config.disk_min_free.0;
        let mut book = JobBook::new(
            &config.node_name,
            Scheduler::new(node_capacity(&config)),
            config.defaults.max_attempts,
        );
        let runtimes = Runtimes::new(&config, container_shim)?;
        let mesh_functions = mesh::deployment::load(&config.state_dir)
            .map(|d| mesh::deployment::functions(&config.state_dir, &d))
            .unwrap_or_default();
        let catalog = Catalog::load(&config, &runtimes, book.admission(), mesh_functions);
        book.set_thresholds(catalog.spill_thresholds());
        let (msgs, rx) = mpsc::unbounded_channel();
        let (folder_tx, folder_rx) = mpsc::unbounded_channel();
        let watch = FolderWatch::start(&catalog.input_dirs(), folder_tx.clone())?;
        // After the watches are in place: what changes from now on is reported by them.
        let watched_since = std::time::SystemTime::now();
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
            filesystem_syncs: std::sync::atomic::AtomicU64::new(0),
            metrics: Arc::default(),
        });
        let subscriptions = watch::channel(catalog.mqtt_subscriptions()).0;
        let mut agent = Self {
            shared,
            book,
            recovered: None,
            catalog,
            rx,
            folder_rx,
            folder_tx: folder_tx.clone(),
            watch,
            runtimes,
            tasks: JoinSet::new(),
            load: watch::channel(LoadReport::default()).0,
            condition: watch::channel(Default::default()).0,
            heartbeat: spillway_plumbing::systemd::Heartbeat::default(),
            subscriptions,
            mqtt_rx: None,
            mqtt_unwanted: 0,
            mqtt_too_large: 0,
            after: Vec::new(),
            inbox_unsynced: false,
            stopping: false,
            disk: crate::disk::DiskGuard::new(disk_min_free),
            disk_checked: None,
            rescan_on_room: false,
            pruned_at: Instant::now(),
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
                &agent.shared.config.state_dir,
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
            let _ = folder_tx.send(FolderEvent::Backlog { dir, watched_since });
        }
        agent.publish_load();
        Ok(agent)
    }

    /// A handle for the mesh link (load, jobs, deployments).
    pub fn mesh_handle(&self) -> AgentHandle {
        AgentHandle {
            shared: self.shared.clone(),
            load: self.load.subscribe(),
            condition: self.condition.subscribe(),
        }
    }

    /// Publishes this node's load for the mesh link (only when it changed).
    fn publish_load(&mut self) {
        let load = self.book.load(book_now());
        let functions = load
            .functions
            .into_iter()
            .map(
                |(name, free_slots, queued, running, mean_run_ms)| FunctionLoad {
                    name,
                    free_slots,
                    queued,
                    running,
                    mean_run_ms,
                },
            )
            .collect();
        let report = LoadReport {
            queued: load.queued,
            running: load.running,
            oldest_queued_ms: load.oldest_queued_ms,
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
        let catalog = Catalog::load(&s.config, &self.runtimes, self.book.admission(), defs);
        for gone in self
            .catalog
            .functions
            .keys()
            .filter(|n| !catalog.functions.contains_key(*n))
        {
            tracing::info!(function = %gone, "function removed by the coordinator");
            self.book.admission().remove_function(gone);
        }
        self.book.set_thresholds(catalog.spill_thresholds());
        let old_dirs = self.catalog.input_dirs();
        match FolderWatch::start(&catalog.input_dirs(), self.folder_tx.clone()) {
            Ok(w) => self.watch = w,
            Err(e) => tracing::error!("cannot watch the new input folders: {e}"),
        }
        let watched_since = std::time::SystemTime::now();
        for dir in catalog
            .input_dirs()
            .into_iter()
            .filter(|d| !old_dirs.contains(d))
        {
            let _ = self
                .folder_tx
                .send(FolderEvent::Backlog { dir, watched_since });
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
                slots: self.book.slots(&f.def.name),
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
        self.book.capacity()
    }

    /// Beats while the engine loop runs (for the systemd watchdog).
    pub fn heartbeat(&self) -> spillway_plumbing::systemd::Heartbeat {
        self.heartbeat.clone()
    }

    /// Runs until `shutdown` resolves, then lets running jobs finish within the grace period.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        if let Some(plan) = self.recovered.take() {
            self.carry_out(plan, drive::Logs::Driver)?;
            self.settle()?;
        }
        tokio::pin!(shutdown);
        let mut rescheduler = tokio::time::interval(std::time::Duration::from_millis(500));
        rescheduler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // One input, then whatever else is waiting (up to `[journal] max_batch`), then one
            // durable commit for all of it before any of it is acted on.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(msg) = self.rx.recv() => self.handle(msg)?,
                _ = rescheduler.tick() => {
                    self.heartbeat.beat();
                    self.check_disk(true)?;
                    self.prune()?;
                    self.book.set_linked(self.shared.mesh_out().is_some());
                    let plan = self.book.tick(book_now());
                    self.carry_out(plan, drive::Logs::Driver)?;
                }
                Some(ev) = self.folder_rx.recv() => self.handle(Msg::Folder(ev))?,
                // A full disk leaves messages at the broker, unacknowledged.
                Some(m) = next_message(&mut self.mqtt_rx), if !self.disk.is_full() => self.on_message(m)?,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
            self.check_disk(false)?;
            self.take_waiting()?;
            self.settle()?;
            self.publish_load();
        }
        let grace = self.shared.config.defaults.shutdown_grace;
        tracing::info!(
            running = self.book.running(),
            "shutting down; waiting up to {}s for running jobs",
            grace.as_secs()
        );
        self.stopping = true;
        let drained = tokio::time::timeout(grace, self.drain()).await;
        if let Ok(result) = &drained
            && let Err(e) = result
        {
            tracing::error!("cannot record what ended while shutting down: {e}");
        }
        if drained.is_err() {
            tracing::warn!("jobs still running after the grace period run again at the next start");
            self.tasks.shutdown().await;
        }
        let ready = self.runtimes.oci.ready_networks();
        let _ = tokio::task::spawn_blocking(move || ready.release()).await;
        Ok(())
    }

    /// Waits for the running jobs and deliveries, recording (durably) each that ends, and what
    /// ended just before the stop: a job that finished is never run again at the next start.
    async fn drain(&mut self) -> Result<(), AgentError> {
        loop {
            tokio::select! {
                Some(msg) = self.rx.recv() => {
                    self.handle(msg)?;
                    self.settle()?;
                }
                joined = self.tasks.join_next() => {
                    if joined.is_none() {
                        while let Ok(msg) = self.rx.try_recv() {
                            self.handle(msg)?;
                        }
                        return self.settle();
                    }
                }
            }
        }
    }

    /// Handles inputs already waiting, without waiting for more, until `[journal] max_batch`
    /// inputs (the one the loop took included) share the next durable commit.
    fn take_waiting(&mut self) -> Result<(), AgentError> {
        for _ in 1..self.shared.config.journal.max_batch {
            if let Ok(msg) = self.rx.try_recv() {
                self.handle(msg)?;
            } else if let Ok(ev) = self.folder_rx.try_recv() {
                self.handle(Msg::Folder(ev))?;
            } else if let Some(m) = self
                .mqtt_rx
                .as_mut()
                .filter(|_| !self.disk.is_full())
                .and_then(|rx| rx.try_recv().ok())
            {
                self.on_message(m)?;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Removes finished jobs past `[retention]`, a bounded number each minute, with their logs.
    fn prune(&mut self) -> Result<(), AgentError> {
        if self.pruned_at.elapsed() < PRUNE_EVERY {
            return Ok(());
        }
        self.pruned_at = Instant::now();
        let removed = prune_some(&self.shared.journal, &self.shared.config, PRUNE_AT_ONCE)?;
        if removed > 0 {
            tracing::debug!(removed, "finished jobs past [retention] removed");
        }
        Ok(())
    }

    /// Measures the free space (at most every 200 ms unless `now`) and turns input on or off
    /// when the verdict turns. The coordinator hears of each turn, and of the free space when
    /// it moved by a tenth (or 64 MiB).
    fn check_disk(&mut self, now: bool) -> Result<(), AgentError> {
        if !now && self.disk_checked.is_some_and(|t| t.elapsed() < DISK_CHECK) {
            return Ok(());
        }
        self.disk_checked = Some(Instant::now());
        let config = &self.shared.config;
        let free =
            match crate::disk::free_bytes([config.state_dir.as_path(), config.data_root.as_path()])
            {
                Ok(free) => free,
                Err(e) => {
                    tracing::debug!("cannot measure the free space: {e}");
                    return Ok(());
                }
            };
        let turn = self.disk.observe(free);
        let told = *self.condition.borrow();
        if turn.is_some()
            || free.abs_diff(told.disk_free_bytes) > (told.disk_free_bytes / 10).max(64 << 20)
        {
            self.condition
                .send_replace(spillway_proto::wire::NodeCondition {
                    disk_full: self.disk.is_full(),
                    disk_free_bytes: free,
                });
        }
        match turn {
            Some(crate::disk::Turn::Full { free, min_free }) => {
                tracing::warn!(
                    free_mib = free >> 20,
                    min_free_mib = min_free >> 20,
                    "disk nearly full: {} MiB free under {} or {}, less than [disk] min_free ({} MiB); taking no new inputs until there is room (MQTT messages wait at the broker, new files are picked up later, placements go elsewhere); running jobs finish",
                    free >> 20,
                    config.state_dir.display(),
                    config.data_root.display(),
                    min_free >> 20
                );
                self.book.set_paused(true);
            }
            Some(crate::disk::Turn::Room { free }) => {
                tracing::info!(
                    free_mib = free >> 20,
                    "room on disk again ({} MiB free): taking inputs",
                    free >> 20
                );
                self.book.set_paused(false);
                let mut plan = crate::book::Plan::default();
                self.book.admit(book_now(), &mut plan);
                self.carry_out(plan, drive::Logs::Driver)?;
                if std::mem::take(&mut self.rescan_on_room) {
                    for dir in self.catalog.input_dirs() {
                        let _ = self.folder_tx.send(FolderEvent::Rescan(dir));
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<(), AgentError> {
        let now = book_now();
        if self.disk.is_full()
            && let Msg::Folder(FolderEvent::Ready(_) | FolderEvent::Found(_)) = &msg
        {
            // Not even hashed: the folders are scanned again once there is room.
            self.rescan_on_room = true;
            return Ok(());
        }
        match msg {
            Msg::Folder(FolderEvent::Ready(path)) => self.identify(path, true),
            Msg::Folder(FolderEvent::Found(path)) => self.identify(path, false),
            Msg::Folder(FolderEvent::Rescan(dir)) => self.scan(dir, None),
            Msg::Folder(FolderEvent::Backlog { dir, watched_since }) => {
                self.scan(dir, Some(watched_since))
            }
            Msg::Identified {
                record,
                learnt,
                live,
            } => self.accept(*record, learnt, live)?,
            Msg::RunEnded(id, how) => {
                let plan = self.book.run_ended(now, id, how);
                self.carry_out(plan, drive::Logs::Reporter)?;
            }
            Msg::Delivered(id, state) => {
                let plan = self.book.delivered(now, id, state);
                self.carry_out(plan, drive::Logs::Reporter)?;
            }
            Msg::Deploy(deployment, reply) => {
                let ack = self.apply_deployment(*deployment);
                let _ = reply.send(ack);
                let mut plan = crate::book::Plan::default();
                self.book.admit(now, &mut plan);
                self.carry_out(plan, drive::Logs::Driver)?;
            }
            Msg::Answer(id, answer, reply) => {
                self.book.set_linked(self.shared.mesh_out().is_some());
                let plan = self.book.answer(now, id, answer);
                let ack = plan.ack;
                self.carry_out(plan, drive::Logs::Driver)?;
                self.after.push(drive::After::Reply(reply, ack));
            }
            Msg::Host(record, guest, reply) => {
                let new = self.host(*record, guest)?;
                self.after.push(drive::After::Reply(reply, new));
            }
            Msg::GuestAcknowledged(id) => self.guest_acknowledged(id)?,
        }
        Ok(())
    }

    /// Reports the files of a folder as found, off the async workers.
    fn scan(&self, dir: PathBuf, before: Option<std::time::SystemTime>) {
        let tx = self.shared.msgs.clone();
        tokio::task::spawn_blocking(move || {
            for path in scan(&dir, before) {
                let _ = tx.send(Msg::Folder(FolderEvent::Found(path)));
            }
        });
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
                if let Some((record, learnt)) = identified {
                    let record = Box::new(record);
                    let _ = shared.msgs.send(Msg::Identified {
                        record,
                        learnt,
                        live,
                    });
                }
            });
        }
    }
}
