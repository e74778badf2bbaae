//! The `oci` runtime: the function's container image, run with youki's libcontainer.
//!
//! The image is found in the node's [`ImageStore`] or pulled on first use (at deploy time with
//! `image_prefetch: true`). Each job runs in its own container, supervised by a
//! `spillway-agent oci-run` process ([`shim`]) whose stdio is the job's captured stdout/stderr.
//! The spec ([`spec`]) comes from the FDL (`memory`, `cpu`, `script`, `network`) and the image
//! config (`Env`, `WorkingDir`, `User`, entrypoint). Leftovers of an agent that died mid-job
//! are collected when the next one starts ([`collect_garbage`]).

pub mod network;
pub mod ready;
pub mod shim;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use spillway_proto::FunctionDef;
use spillway_proto::fdl::NetworkMode;
use spillway_proto::quantity::Bytes;
use tokio::process::Command;

use super::process::{as_job_child, drain};
use super::{Executor, Exit, Outcome, PrepareError, RunFuture, Runtime, StagedJob};
use crate::capture::Captured;
use crate::image::store::{Lease, canonical_reference};
use crate::image::{ImageError, ImageRecord, ImageStore, Platform, pull};
use network::Networks;
use ready::ReadyNetworks;
use shim::{CONFIG_FILE, RESULT_FILE, ShimConfig, ShimResult};
use spillway_agent_config::registry::Registries;

/// Why an `image:` function cannot run on a 32-bit board.
pub const NO_CONTAINERS: &str = "containers need a 64-bit board: libcontainer 0.7 does not build for 32-bit ARM; run this function as `runtime: wasm`, or keep it on arm64 nodes with `node_selector`";

/// Settings of the `oci` runtime (`[oci]` and `[registries]` in the agent config).
#[derive(Debug, Clone)]
pub struct OciSettings {
    pub registries: Registries,
    pub platform: Platform,
    /// The binary to run as `oci-run` (this agent's own).
    pub shim: PathBuf,
    pub pids_limit: i64,
    pub tmp_size: u64,
    /// The image store's size limit; least-recently-used images nobody deploys go first.
    pub max_store_bytes: u64,
    /// Between the termination signal and SIGKILL.
    pub kill_grace: Duration,
    /// CPU of a function that does not say (the agent's `defaults.cpu`), in millicores.
    pub default_cpu: u64,
    /// How `network: outbound` containers are wired.
    pub network: spillway_agent_config::ContainerNetwork,
}

#[derive(Debug)]
pub struct OciRuntime {
    store: Arc<ImageStore>,
    settings: Arc<OciSettings>,
    /// libcontainer's state folder; one subfolder per live container.
    state_root: PathBuf,
    /// This agent's cgroup parent (`/spillway/<key>`): two agents on one host never collide.
    cgroup_parent: String,
    networks: Arc<ReadyNetworks>,
}

impl OciRuntime {
    /// Opens the image store and collects what a previous agent left behind (in `containers`
    /// and in `netns`, the namespaces of its containers' networks).
    pub fn new(
        images: &Path,
        containers: &Path,
        netns: &Path,
        settings: OciSettings,
    ) -> Result<Self, PrepareError> {
        let store = ImageStore::open(images).map_err(|e| PrepareError::Engine(e.to_string()))?;
        store.gc_blobs();
        std::fs::create_dir_all(containers)
            .map_err(|e| PrepareError::Engine(format!("{}: {e}", containers.display())))?;
        let key = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(containers.as_os_str().as_encoded_bytes())[..6])
        };
        let cgroup_parent = format!("/spillway/{key}");
        let collected = collect_garbage(containers, &cgroup_parent);
        if collected > 0 {
            tracing::warn!(
                collected,
                "removed containers left running by a previous agent"
            );
        }
        let networks =
            Networks::new(&settings.network, netns, &key).map_err(PrepareError::Engine)?;
        let released = networks.sweep();
        if released > 0 {
            tracing::warn!(
                released,
                "released container networks left by a previous agent"
            );
        }
        Ok(Self {
            store: Arc::new(store),
            settings: Arc::new(settings),
            state_root: containers.to_path_buf(),
            cgroup_parent,
            networks: Arc::new(ReadyNetworks::new(networks)),
        })
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// The container networks made ahead of jobs (released at stop).
    pub fn ready_networks(&self) -> Arc<ReadyNetworks> {
        self.networks.clone()
    }
}

impl Runtime for OciRuntime {
    fn prepare(&self, function: &FunctionDef) -> Result<Arc<dyn Executor>, PrepareError> {
        let bad = |message: String| PrepareError::BadImage {
            function: function.name.clone(),
            message,
        };
        if cfg!(not(target_pointer_width = "64")) {
            return Err(bad(NO_CONTAINERS.to_owned()));
        }
        let image = function
            .image
            .as_deref()
            .ok_or_else(|| bad("`runtime: oci` needs `image`".to_owned()))?;
        let reference = canonical_reference(image).map_err(|e| bad(e.to_string()))?;
        if let Some(script) = &function.script
            && !script.is_file()
        {
            return Err(PrepareError::MissingFile {
                function: function.name.clone(),
                what: "script",
                path: script.clone(),
            });
        }
        let flag = |name: &str| {
            function
                .extra
                .get(name)
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        };
        let network = NetworkMode::of(&function.extra);
        if network == NetworkMode::Outbound {
            let missing = self.networks.networks().missing_plugins();
            if !missing.is_empty() {
                return Err(PrepareError::Network {
                    function: function.name.clone(),
                    message: self.networks.networks().missing_message(&missing),
                });
            }
            self.networks.refill();
        }
        let f = Arc::new(Function {
            name: function.name.clone(),
            reference,
            script: function.script.clone(),
            network,
            networks: self.networks.clone(),
            memory: function.memory.map(|m| m.0),
            cpu_millis: function.cpu.map_or(self.settings.default_cpu, |c| c.0),
            store: self.store.clone(),
            settings: self.settings.clone(),
            state_root: self.state_root.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            lease: Mutex::new(None),
            pulling: tokio::sync::Mutex::new(()),
        });
        if f.local_image().is_none()
            && flag("image_prefetch")
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let prefetch = f.clone();
            handle.spawn(async move {
                match prefetch.image().await {
                    Ok(r) => tracing::info!(image = %prefetch.reference, id = r.short_id(), "image prefetched"),
                    Err(e) => tracing::warn!(function = %prefetch.name, "image prefetch failed: {e}"),
                }
            });
        }
        Ok(Arc::new(OciExecutor(f)))
    }
}

#[derive(Debug)]
struct OciExecutor(Arc<Function>);

impl Executor for OciExecutor {
    fn execute(&self, job: StagedJob) -> RunFuture {
        let f = self.0.clone();
        Box::pin(async move { f.run(job).await })
    }
}

/// One deployed container function.
#[derive(Debug)]
struct Function {
    name: String,
    reference: String,
    script: Option<PathBuf>,
    network: NetworkMode,
    networks: Arc<ReadyNetworks>,
    memory: Option<u64>,
    cpu_millis: u64,
    store: Arc<ImageStore>,
    settings: Arc<OciSettings>,
    state_root: PathBuf,
    cgroup_parent: String,
    /// Keeps the image from eviction while the function is deployed.
    lease: Mutex<Option<Lease>>,
    /// Jobs arriving while the image is being pulled wait for that pull instead of starting one.
    pulling: tokio::sync::Mutex<()>,
}

static NEXT_CONTAINER: AtomicU64 = AtomicU64::new(1);

/// How the container's first process is started.
#[derive(Debug)]
struct Launch {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    uid: u32,
    gid: u32,
}

impl Function {
    fn local_image(&self) -> Option<ImageRecord> {
        let found = self.store.find(&self.reference)?;
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if lease.is_none() {
            *lease = Some(self.store.lease(&found.id));
        }
        Some(found)
    }

    async fn image(&self) -> Result<ImageRecord, ImageError> {
        if let Some(found) = self.local_image() {
            return Ok(found);
        }
        let _one_pull = self.pulling.lock().await;
        if let Some(found) = self.local_image() {
            return Ok(found);
        }
        let record = pull::pull(
            &self.store,
            &self.reference,
            &self.settings.registries,
            &self.settings.platform,
            &mut pull::Quiet,
        )
        .await?;
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.store.lease(&record.id));
        for e in self.store.prune(self.settings.max_store_bytes) {
            tracing::info!(image = ?e.references, "evicted from the image store (least recently used)");
        }
        // Download and unpack buffers are freed by now but still held by the allocator.
        crate::release_unused_memory();
        Ok(record)
    }

    fn launch(
        &self,
        record: &ImageRecord,
        lower: &Path,
        job: &StagedJob,
    ) -> Result<Launch, String> {
        let args = if self.script.is_some() {
            if std::fs::symlink_metadata(lower.join("bin/sh")).is_err() {
                return Err(format!(
                    "image `{}` has no /bin/sh to run the FDL `script`; use an image with a shell, or drop `script` to run the image's own entrypoint",
                    self.reference
                ));
            }
            vec!["/bin/sh".to_owned(), spec::SCRIPT_PATH.to_owned()]
        } else {
            let args: Vec<String> = record
                .config
                .entrypoint
                .iter()
                .chain(&record.config.cmd)
                .cloned()
                .collect();
            if args.is_empty() {
                return Err(format!(
                    "image `{}` has no entrypoint or cmd and the function has no `script`; add a script to the FDL",
                    self.reference
                ));
            }
            args
        };
        let (uid, gid) = user::resolve(lower, record.config.user.as_deref())?;
        let mut env: Vec<(String, String)> = record
            .config
            .env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        for (k, v) in job.contract_env(spec::INPUT_DIR, spec::OUTPUT_DIR) {
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push((
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ));
        }
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push((
                "HOME".to_owned(),
                if uid == 0 { "/root" } else { "/tmp" }.to_owned(),
            ));
        }
        Ok(Launch {
            args,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: record
                .config
                .working_dir
                .clone()
                .unwrap_or_else(|| "/".to_owned()),
            uid,
            gid,
        })
    }

    async fn run(self: Arc<Self>, job: StagedJob) -> Outcome {
        let failed = |reason: String| Outcome {
            exit: Exit::Failure(reason),
            stdout: Captured::new(job.log_limit),
            stderr: Captured::new(job.log_limit),
        };
        let record = match self.image().await {
            Ok(r) => r,
            Err(e) => return failed(e.to_string()),
        };
        self.store.touch(&record);
        let lower = self.store.rootfs(&record);
        let launch = match self.launch(&record, &lower, &job) {
            Ok(l) => l,
            Err(reason) => return failed(reason),
        };
        let short = &job.job_id[..job.job_id.len().min(16)];
        let id = format!("{short}-{}", NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed));
        let bundle = job.work_dir.join("oci");
        let mut joined = None;
        let network = match self.network {
            NetworkMode::None => spec::Network::Isolated,
            NetworkMode::Host => spec::Network::Host,
            NetworkMode::Outbound => {
                let networks = self.networks.clone();
                match tokio::task::spawn_blocking(move || networks.take()).await {
                    Ok(Ok((netns_id, netns))) => {
                        joined = Some(netns_id);
                        spec::Network::Joined(netns)
                    }
                    Ok(Err(e)) => {
                        return failed(format!(
                            "cannot give the container its network: {e} (`network: none` in the FDL runs it without one)"
                        ));
                    }
                    Err(e) => return failed(format!("cannot give the container its network: {e}")),
                }
            }
        };
        let supervised = match self.write_bundle(&bundle, &id, &lower, &launch, &job, network) {
            Ok(()) => Ok(supervise(&self.settings, &bundle, &job).await),
            Err(reason) => Err(reason),
        };
        // The shim removes its container; if it was killed, this does. Its network goes after,
        // off the job's path (the next start releases it if the agent dies first).
        let (state_root, cleanup_id) = (self.state_root.clone(), id.clone());
        let _ =
            tokio::task::spawn_blocking(move || remove_container(&state_root, &cleanup_id)).await;
        if let Some(netns_id) = joined {
            let networks = self.networks.clone();
            drop(tokio::task::spawn_blocking(move || {
                networks.networks().detach(&netns_id)
            }));
        }
        let supervised = match supervised {
            Ok(s) => s,
            Err(reason) => return failed(reason),
        };
        let result: Option<ShimResult> = std::fs::read(bundle.join(RESULT_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(r) = &result {
            if r.shared_root {
                tracing::info!(
                    function = %self.name,
                    "overlayfs refused the job's root (a path with ',' or ':', or an overlay state folder); it ran on the shared image root, read-only"
                );
            }
            tracing::debug!(function = %self.name, phases = ?r.phases_us, "container supervisor timings (µs)");
        }
        let exit = self.describe(&job, supervised.timed_out, result, &supervised.stderr);
        Outcome {
            exit,
            stdout: supervised.stdout,
            stderr: supervised.stderr,
        }
    }

    fn write_bundle(
        &self,
        bundle: &Path,
        id: &str,
        lower: &Path,
        launch: &Launch,
        job: &StagedJob,
        network: spec::Network,
    ) -> Result<(), String> {
        let cgroups_path = format!("{}/{id}", self.cgroup_parent);
        let plan = spec::Plan {
            hostname: self.name.clone(),
            cgroups_path: cgroups_path.clone(),
            args: launch.args.clone(),
            env: launch.env.clone(),
            cwd: launch.cwd.clone(),
            uid: launch.uid,
            gid: launch.gid,
            input_dir: job.input_dir.clone(),
            output_dir: job.output_dir.clone(),
            scar_output: Some(job.scar_output_dir()),
            script: self.script.clone(),
            memory: self.memory.or(Some(job.memory_limit)).filter(|m| *m > 0),
            cpu_millis: Some(self.cpu_millis),
            pids: self.settings.pids_limit,
            resolv_conf: network::resolv_conf(matches!(network, spec::Network::Joined(_))),
            network,
            tmp_size: self.settings.tmp_size,
        };
        let spec =
            spec::build(&plan).map_err(|e| format!("cannot build the container spec: {e}"))?;
        std::fs::create_dir_all(bundle)
            .map_err(|e| format!("cannot create {}: {e}", bundle.display()))?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| format!("cannot write the container spec: {e}"))?;
        let shim = ShimConfig {
            id: id.to_owned(),
            state_root: self.state_root.clone(),
            lower: lower.to_path_buf(),
            upper: job.work_dir.join("oci-upper"),
            work: job.work_dir.join("oci-work"),
            cgroups_path: cgroups_path.clone(),
            grace_secs: self.settings.kill_grace.as_secs().max(1) as u32,
        };
        std::fs::write(
            bundle.join(CONFIG_FILE),
            serde_json::to_vec(&shim).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {CONFIG_FILE}: {e}"))?;
        if launch.uid != 0 {
            // The function's user must be able to write its outputs.
            nix::unistd::chown(
                &job.output_dir,
                Some(nix::unistd::Uid::from_raw(launch.uid)),
                Some(nix::unistd::Gid::from_raw(launch.gid)),
            )
            .map_err(|e| format!("cannot hand the output folder to uid {}: {e}", launch.uid))?;
        }
        Ok(())
    }

    fn describe(
        &self,
        job: &StagedJob,
        timed_out: bool,
        result: Option<ShimResult>,
        stderr: &Captured,
    ) -> Exit {
        let what = if self.script.is_some() {
            "the script"
        } else {
            "the container"
        };
        let reason = match result {
            _ if timed_out => format!(
                "timed out after {}s (raise `timeout` in the FDL if the job needs longer)",
                job.timeout.as_secs()
            ),
            None => "the container supervisor died without a result (see the agent log)".to_owned(),
            Some(ShimResult {
                error: Some(e),
                code: None,
                signal: None,
                ..
            }) => {
                format!("the container could not run: {e}")
            }
            Some(r) if r.oom_killed => {
                let limit = self.memory.unwrap_or(job.memory_limit);
                format!(
                    "out of memory (limit {}); raise `memory` in the FDL if the job needs more",
                    Bytes(limit)
                )
            }
            Some(ShimResult { code: Some(0), .. }) => return Exit::Success,
            Some(ShimResult {
                code: Some(127), ..
            }) => format!(
                "{what} exited with status 127: a command it runs is not in image `{}`",
                self.reference
            ),
            Some(ShimResult {
                code: Some(code), ..
            }) => format!("{what} exited with status {code}"),
            Some(ShimResult {
                signal: Some(sig), ..
            }) => format!("{what} was killed by {sig}"),
            Some(_) => format!("{what} ended abnormally"),
        };
        match stderr.last_line() {
            Some(line) if !timed_out => {
                Exit::Failure(format!("{reason}; last stderr line: {line}"))
            }
            _ => Exit::Failure(reason),
        }
    }
}

struct Supervised {
    stdout: Captured,
    stderr: Captured,
    timed_out: bool,
}

/// Sends the shim SIGTERM if the run is abandoned (agent shutdown): it stops the container
/// and removes it; a SIGKILL would leave both behind until the next start.
struct TermOnDrop(Option<Pid>);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(pid, Signal::SIGTERM);
        }
    }
}

async fn supervise(settings: &OciSettings, bundle: &Path, job: &StagedJob) -> Supervised {
    let mut stdout = Captured::new(job.log_limit);
    let mut stderr = Captured::new(job.log_limit);
    let mut cmd = Command::new(&settings.shim);
    cmd.arg("oci-run").arg(bundle).env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    // A shim outliving a dead agent would run a job nobody waits for; the next agent collects
    // the container it leaves.
    as_job_child(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            stderr.push(
                format!(
                    "cannot start the container supervisor {}: {e}\n",
                    settings.shim.display()
                )
                .as_bytes(),
            );
            return Supervised {
                stdout,
                stderr,
                timed_out: false,
            };
        }
    };
    let mut guard = TermOnDrop(child.id().map(|p| Pid::from_raw(p as i32)));
    let (mut out_pipe, mut err_pipe) = (child.stdout.take(), child.stderr.take());
    let waited = tokio::time::timeout(job.timeout, async {
        let (status, _, _) = tokio::join!(
            child.wait(),
            drain(out_pipe.as_mut(), &mut stdout),
            drain(err_pipe.as_mut(), &mut stderr)
        );
        status
    })
    .await;
    let timed_out = waited.is_err();
    if timed_out && let Some(pid) = guard.0 {
        let _ = kill(pid, Signal::SIGTERM);
        let patience = settings.kill_grace + Duration::from_secs(10);
        if tokio::time::timeout(patience, child.wait()).await.is_err() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    guard.0 = None;
    Supervised {
        stdout,
        stderr,
        timed_out,
    }
}

/// Removes one container and its cgroups, whatever state it is in.
fn remove_container(state_root: &Path, id: &str) {
    let dir = state_root.join(id);
    if !dir.exists() {
        return;
    }
    #[cfg(target_pointer_width = "64")]
    if let Ok(mut c) = libcontainer::container::Container::load(dir.clone()) {
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills and removes every container in `state_root` and every cgroup under this agent's
/// `cgroup_parent`: what an agent (or a shim) that was killed mid-job left. Returns how many
/// containers it found.
///
/// Killed processes whose parent died with the old agent are reaped by PID 1, which may take a
/// moment (a second or two on some inits); until then their cgroups cannot be removed. Those are
/// retried in the background for two minutes rather than holding up the start.
pub fn collect_garbage(state_root: &Path, cgroup_parent: &str) -> usize {
    let mut found = 0;
    for entry in std::fs::read_dir(state_root)
        .into_iter()
        .flatten()
        .flatten()
    {
        found += 1;
        remove_container(state_root, &entry.file_name().to_string_lossy());
    }
    let mut pending: Vec<PathBuf> = cgroup_hierarchies()
        .iter()
        .map(|base| base.join(cgroup_parent.trim_start_matches('/')))
        .flat_map(|parent| std::fs::read_dir(parent).into_iter().flatten().flatten())
        .map(|child| child.path())
        .filter(|path| path.is_dir())
        .collect();
    pending.retain(|cgroup| !kill_and_remove(cgroup));
    if !pending.is_empty() {
        let _ = std::thread::Builder::new()
            .name("cgroup-gc".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                while !pending.is_empty() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(250));
                    pending.retain(|cgroup| !kill_and_remove(cgroup));
                }
                for cgroup in &pending {
                    tracing::warn!(cgroup = %cgroup.display(), "cannot remove a cgroup left by a previous agent; remove it by hand (rmdir) once its processes are gone");
                }
            });
    }
    found
}

/// SIGKILLs what is in a cgroup and removes it; whether it is gone.
fn kill_and_remove(cgroup: &Path) -> bool {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    std::fs::remove_dir(cgroup).is_ok() || !cgroup.exists()
}

/// Every mounted cgroup hierarchy: the v1 controllers, the unified one of a hybrid host, or
/// the single v2 tree.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, typ) = (f.next()?, f.next()?, f.next()?);
            (typ == "cgroup" || typ == "cgroup2").then(|| PathBuf::from(dir))
        })
        .collect()
}

mod user {
    //! The image's `User` (`name`, `uid`, `uid:gid`, `name:group`) as numbers, read from the
    //! image's own /etc/passwd and /etc/group.

    use std::path::Path;

    pub fn resolve(root: &Path, user: Option<&str>) -> Result<(u32, u32), String> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok((0, 0));
        };
        let (who, group) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
        let entry = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && (f[0] == who || f[2] == who));
        let uid = match who.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entry
                .as_ref()
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("the image's user `{who}` is not in its /etc/passwd; set `User` to a number or add the user"))?,
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => std::fs::read_to_string(root.join("etc/group"))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| format!("the image's group `{g}` is not in its /etc/group"))?,
            },
            None => entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
        };
        Ok((uid, gid))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn users_resolve_by_name_number_and_group() {
            let root = tempfile::tempdir().expect("tmp");
            std::fs::create_dir(root.path().join("etc")).expect("etc");
            std::fs::write(
                root.path().join("etc/passwd"),
                "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
            )
            .expect("passwd");
            std::fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n")
                .expect("group");
            assert_eq!(super::resolve(root.path(), None), Ok((0, 0)));
            assert_eq!(super::resolve(root.path(), Some("app")), Ok((1000, 1001)));
            assert_eq!(super::resolve(root.path(), Some("1000")), Ok((1000, 1001)));
            assert_eq!(super::resolve(root.path(), Some("4242")), Ok((4242, 0)));
            assert_eq!(
                super::resolve(root.path(), Some("app:staff")),
                Ok((1000, 50))
            );
            assert!(
                super::resolve(root.path(), Some("ghost"))
                    .unwrap_err()
                    .contains("not in its /etc/passwd")
            );
        }
    }
}
