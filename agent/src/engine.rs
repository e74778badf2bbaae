//! The agent's async shell: folder events in, journaled jobs, admission by the sans-IO
//! [`Scheduler`], runs on the function's executor, outputs delivered, logs written.
//!
//! One task owns the scheduler and receives every message; each run is its own task. The journal
//! is written before every step it records is acted on, so a `SIGKILL` anywhere loses nothing:
//! queued jobs stay queued, interrupted runs run again in fresh folders, and finished runs whose
//! outputs were not all delivered are delivered again (to the same names).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use spillway_proto::fdl::BucketPath;
use spillway_proto::quantity::{Bytes, Millicores};
use spillway_proto::{Event, FileEvent, JobId, ObjectKey};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use crate::capture::Captured;
use crate::catalog::{Catalog, Deployed, Runtimes};
use crate::config::AgentConfig;
use crate::journal::{JobRecord, JobState, Journal, JournalError, SeenFile, now_ms};
use crate::runtime::{Exit, StagedJob};
use crate::scheduler::{Demand, Scheduler};
use crate::staging::{Staging, deliver};
use crate::watch::{FolderEvent, FolderWatch, WatchError, scan};
use crate::{joblog, runtime};

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
}

enum Msg {
    Folder(FolderEvent),
    Identified(Box<JobRecord>, Option<(String, SeenFile)>),
    Done(JobId),
    Fatal(JournalError),
}

/// Shared by the engine loop and its run tasks.
struct Shared {
    config: AgentConfig,
    journal: Journal,
    catalog: Catalog,
    events: broadcast::Sender<JobEvent>,
    msgs: mpsc::UnboundedSender<Msg>,
}

pub struct Agent {
    shared: Arc<Shared>,
    scheduler: Scheduler,
    rx: mpsc::UnboundedReceiver<Msg>,
    folder_rx: mpsc::UnboundedReceiver<FolderEvent>,
    _watch: FolderWatch,
    _runtimes: Runtimes,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.shared.config.node_name)
            .finish_non_exhaustive()
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
    /// Opens the journal, deploys the functions, recovers unfinished jobs and starts watching.
    /// Nothing runs until [`Agent::run`].
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
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
        let runtimes = Runtimes::new(&config)?;
        let catalog = Catalog::load(&config, &runtimes, &mut scheduler);
        let (msgs, rx) = mpsc::unbounded_channel();
        let (folder_tx, folder_rx) = mpsc::unbounded_channel();
        let watch = FolderWatch::start(&catalog.input_dirs(), folder_tx.clone())?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            config,
            journal,
            catalog,
            events,
            msgs,
        });
        let mut agent = Self {
            shared,
            scheduler,
            rx,
            folder_rx,
            _watch: watch,
            _runtimes: runtimes,
            tasks: JoinSet::new(),
        };
        agent.recover()?;
        // Files that arrived while the agent was down.
        for dir in agent.shared.catalog.input_dirs() {
            let _ = folder_tx.send(FolderEvent::Rescan(dir));
        }
        Ok(agent)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    pub fn node_name(&self) -> &str {
        &self.shared.config.node_name
    }

    pub fn functions(&self) -> Vec<FunctionSummary> {
        let data_root = &self.shared.config.data_root;
        self.shared
            .catalog
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
            })
            .collect()
    }

    pub fn refused(&self) -> &[crate::catalog::Refused] {
        &self.shared.catalog.refused
    }

    pub fn capacity(&self) -> Demand {
        self.scheduler.capacity()
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
                JobState::Ran { staging, outputs } => {
                    keep_staging.push(staging.clone());
                    let (shared, staging, outputs) = (s.clone(), staging.clone(), outputs.clone());
                    self.tasks.spawn(async move {
                        finish_delivery(&shared, record, &staging, &outputs).await
                    });
                }
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
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(msg) = self.rx.recv() => self.handle(msg)?,
                Some(ev) = self.folder_rx.recv() => self.handle(Msg::Folder(ev))?,
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
            Msg::Folder(FolderEvent::Ready(path)) => self.identify(path),
            Msg::Folder(FolderEvent::Rescan(dir)) => {
                let tx = self.shared.msgs.clone();
                tokio::task::spawn_blocking(move || {
                    for path in scan(&dir) {
                        let _ = tx.send(Msg::Folder(FolderEvent::Ready(path)));
                    }
                });
            }
            Msg::Identified(record, seen) => self.accept(*record, seen)?,
            Msg::Done(id) => {
                self.scheduler.finish(id);
                self.admit()?;
            }
            Msg::Fatal(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Hashes a new file off the async workers and reports the job it makes, per function.
    fn identify(&self, path: PathBuf) {
        for (function, bucket, rel) in self.shared.catalog.triggered_by(&path) {
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
                    let _ = shared.msgs.send(Msg::Identified(Box::new(record), seen));
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
    ) -> Result<(), AgentError> {
        let s = self.shared.clone();
        if s.journal.get(record.id)?.is_some() {
            return Ok(()); // the same event seen again: the same job
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
        let started = (record.state == JobState::Running).then_some(record);
        self.launch(admitted, started)
    }

    /// Starts admitted jobs, journaling `Running` before each one starts (`journaled` already is).
    fn launch(
        &mut self,
        admitted: Vec<(JobId, String)>,
        mut journaled: Option<JobRecord>,
    ) -> Result<(), AgentError> {
        for (id, function) in admitted {
            let s = self.shared.clone();
            let Some(deployed) = s.catalog.functions.get(&function).cloned() else {
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

fn fail(r: &mut JobRecord, reason: String) {
    r.state = JobState::Failed { reason };
    r.finished_at_ms = Some(now_ms());
}

/// The job a file makes for a function, or `None` when the file vanished before it was read.
fn identify_file(
    s: &Shared,
    function: &Deployed,
    bucket: &BucketPath,
    rel: &Path,
    path: &Path,
) -> Option<(JobRecord, Option<(String, SeenFile)>)> {
    let name = &function.def.name;
    let key = match ObjectKey::from_relative_path(rel) {
        Ok(rel_key) => match &bucket.folder {
            Some(folder) => ObjectKey::parse(&format!("{folder}/{rel_key}")),
            None => Ok(rel_key),
        },
        Err(e) => Err(e),
    };
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    // A symbolic link may point anywhere; only files inside the data root are inputs.
    let escapes = std::fs::canonicalize(path)
        .ok()
        .zip(std::fs::canonicalize(&s.config.data_root).ok())
        .is_none_or(|(real, root)| !real.starts_with(root));
    let key = match key {
        Ok(_) if escapes => Err(format!(
            "input file refused: {} resolves outside the data root (a symbolic link?); copy the file in instead",
            rel.display()
        )),
        Ok(key) => Ok(key),
        Err(e) => Err(format!("input file name refused: {e}")),
    };
    let key = match key {
        Ok(key) => key,
        Err(reason) => {
            // Record the refusal as a failed job so the user can find it in `jobs`/`logs`.
            let shown: String = rel
                .to_string_lossy()
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            let shown = match &bucket.folder {
                Some(folder) => format!("{folder}/{shown}"),
                None => shown,
            };
            let placeholder = ObjectKey::parse(&shown.replace("..", "_"))
                .or_else(|_| ObjectKey::parse("invalid-name"))
                .ok()?;
            let digest: [u8; 32] = Sha256::digest(rel.as_os_str().as_encoded_bytes()).into();
            let event = Event::File(FileEvent {
                bucket: bucket.bucket.clone(),
                key: placeholder,
                size: meta.len(),
                mtime_ns,
                sha256: digest,
            });
            let mut record =
                JobRecord::new(event.job_id(&s.config.node_name, name), name.clone(), event);
            fail(&mut record, reason);
            return Some((record, None));
        }
    };
    let file_key = format!("{name}\0{}/{key}", bucket.bucket);
    let cached = s
        .journal
        .seen_file(&file_key)
        .ok()
        .flatten()
        .filter(|f| f.size == meta.len() && f.mtime_ns == mtime_ns);
    let sha256 = match cached {
        Some(seen) => seen.sha256,
        None => sha256_file(path)?,
    };
    let seen = SeenFile {
        size: meta.len(),
        mtime_ns,
        sha256,
    };
    let event = Event::File(FileEvent {
        bucket: bucket.bucket.clone(),
        key,
        size: meta.len(),
        mtime_ns,
        sha256,
    });
    let record = JobRecord::new(event.job_id(&s.config.node_name, name), name.clone(), event);
    Some((record, Some((file_key, seen))))
}

fn sha256_file(path: &Path) -> Option<[u8; 32]> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => return None,
        }
    }
    Some(hasher.finalize().into())
}

/// One run attempt: stage, execute, journal the result, deliver, log.
async fn run_job(s: &Arc<Shared>, f: &Deployed, record: JobRecord) -> Result<(), JournalError> {
    let Event::File(event) = &record.event;
    let config = &s.config;
    let staging = Staging::for_attempt(&config.staging_dir(), record.id, record.attempt);
    let input = event.key.under(&config.data_root.join(&event.bucket));
    let file_name = event.key.file_name().to_owned();
    let prepared = {
        let (staging, input, name) = (staging.clone(), input.clone(), file_name.clone());
        tokio::task::spawn_blocking(move || staging.prepare(&input, &name)).await
    };
    if let Err(reason) = prepared
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return conclude(s, record, JobState::Failed { reason }, &staging.root, None);
    }
    let job = StagedJob {
        job_id: record.id.to_string(),
        function: f.def.name.clone(),
        input_dir: staging.input_dir.clone(),
        output_dir: staging.output_dir.clone(),
        work_dir: staging.work_dir.clone(),
        file_name,
        event_json: record
            .event
            .to_json(&config.node_name, &rfc3339_now())
            .to_string(),
        variables: f
            .def
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timeout: f.def.timeout.unwrap_or(config.defaults.timeout),
        memory_limit: f.limits.demand.memory.0,
        log_limit: config.logs.max_bytes_per_stream,
        pid_file: config.run_dir().join(format!("{}.pid", record.id)),
    };
    let _ = s.events.send(JobEvent::Started {
        id: record.id,
        function: f.def.name.clone(),
        at: Instant::now(),
    });
    let outcome = f.executor.execute(job).await;
    let streams = Some((&outcome.stdout, &outcome.stderr));
    let keys = match outcome.exit {
        Exit::Failure(reason) => {
            return conclude(
                s,
                record,
                JobState::Failed { reason },
                &staging.root,
                streams,
            );
        }
        Exit::Success => match staging.collect_outputs() {
            Ok(keys) => keys,
            Err(e) => {
                return conclude(
                    s,
                    record,
                    JobState::Failed {
                        reason: e.to_string(),
                    },
                    &staging.root,
                    streams,
                );
            }
        },
    };
    let outputs: Vec<String> = keys.iter().map(ToString::to_string).collect();
    let ran = s.journal.update(record.id, |r| {
        r.state = JobState::Ran {
            staging: staging.root.clone(),
            outputs,
        }
    })?;
    // The streams are only in memory: keep them with the job before delivery can be interrupted.
    joblog::write(
        &config.logs_dir(),
        &ran,
        streams.map(|(o, _)| o),
        streams.map(|(_, e)| e),
    );
    let state = deliver_outputs(s, &f.def.output, record.id, &staging.output_dir, &keys).await;
    conclude(s, ran, state, &staging.root, None)
}

/// Copies a job's outputs to the function's outputs; the state the job ends in.
async fn deliver_outputs(
    s: &Arc<Shared>,
    outputs: &[spillway_proto::fdl::StorageRef],
    id: JobId,
    output_dir: &Path,
    keys: &[ObjectKey],
) -> JobState {
    let (dir, keys, root, outputs) = (
        output_dir.to_owned(),
        keys.to_vec(),
        s.config.data_root.clone(),
        outputs.to_vec(),
    );
    match tokio::task::spawn_blocking(move || deliver(&dir, &keys, &outputs, &root, id)).await {
        Ok(Ok(paths)) => JobState::Succeeded { outputs: paths },
        Ok(Err(e)) => JobState::Failed {
            reason: e.to_string(),
        },
        Err(e) => JobState::Failed {
            reason: format!("delivery panicked: {e}"),
        },
    }
}

/// Completes the delivery of a job found in `Ran` at start-up.
async fn finish_delivery(
    s: &Arc<Shared>,
    record: JobRecord,
    staging_root: &Path,
    outputs: &[String],
) {
    let keys: Vec<ObjectKey> = outputs
        .iter()
        .filter_map(|k| ObjectKey::parse(k).ok())
        .collect();
    let function_outputs = s
        .catalog
        .functions
        .get(&record.function)
        .map(|f| f.def.output.clone())
        .unwrap_or_default();
    tracing::info!(job = %record.id.short(), "delivering the outputs of a job that finished before the restart");
    let state = deliver_outputs(
        s,
        &function_outputs,
        record.id,
        &staging_root.join("output"),
        &keys,
    )
    .await;
    if let Err(e) = conclude(s, record, state, staging_root, None) {
        let _ = s.msgs.send(Msg::Fatal(e));
    }
}

/// Records a job's final state. The log is written first: if the agent dies in between, the
/// journal still says the job is unfinished, so it runs (or delivers) again and rewrites it.
fn conclude(
    s: &Shared,
    mut record: JobRecord,
    state: JobState,
    staging_root: &Path,
    streams: Option<(&Captured, &Captured)>,
) -> Result<(), JournalError> {
    record.state = state;
    record.finished_at_ms = Some(now_ms());
    joblog::write(
        &s.config.logs_dir(),
        &record,
        streams.map(|(o, _)| o),
        streams.map(|(_, e)| e),
    );
    s.journal.update(record.id, |r| {
        r.state = record.state.clone();
        r.finished_at_ms = record.finished_at_ms;
    })?;
    match &record.state {
        JobState::Failed { reason } => {
            tracing::warn!(job = %record.id.short(), function = %record.function, "failed: {reason}")
        }
        JobState::Succeeded { outputs } => {
            tracing::info!(job = %record.id.short(), function = %record.function, outputs = outputs.len(), "succeeded")
        }
        _ => {}
    }
    let _ = std::fs::remove_dir_all(staging_root);
    let _ = s.events.send(JobEvent::Finished {
        id: record.id,
        function: record.function.clone(),
        state: record.state,
    });
    Ok(())
}

fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_times_are_rfc3339() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
