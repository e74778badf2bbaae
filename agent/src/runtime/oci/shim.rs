//! The per-job container supervisor, `spillway-agent oci-run BUNDLE` (hidden). The agent starts
//! one for each container job, so libcontainer's fork-heavy work happens in a fresh
//! single-threaded process and never in the multi-threaded agent.
//!
//! In its own private mount namespace it mounts the job's root (an overlay of the image's
//! shared root and the job's scratch upper layer; if the kernel refuses overlayfs, the shared
//! root itself, read-only), creates and starts the container with the container's stdio being
//! its own (the agent's capture pipes), waits for it, forwards SIGTERM/SIGINT/SIGHUP to every
//! process of the container and SIGKILLs them after the grace period, reads the cgroup's OOM
//! counter, deletes the container (cgroups, state) and writes `result.json` for the agent. The
//! mounts vanish with the namespace; whatever a SIGKILLed shim leaves is collected by
//! [`super::collect_garbage`] at the next agent start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
#[cfg(target_pointer_width = "64")]
use {
    libcontainer::container::Container,
    libcontainer::container::builder::ContainerBuilder,
    libcontainer::syscall::syscall::SyscallType,
    nix::mount::{MsFlags, mount},
    nix::sched::{CloneFlags, unshare},
    nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction},
    nix::sys::wait::{WaitStatus, waitpid},
    std::sync::atomic::{AtomicI32, Ordering},
};

/// What the agent tells the shim, in `BUNDLE/spillway.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    /// libcontainer's state folder (one subfolder per container).
    pub state_root: PathBuf,
    /// The image's shared, unpacked root.
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The container's cgroup path (for the OOM counter).
    pub cgroups_path: String,
    pub grace_secs: u32,
}

/// What the shim tells the agent, in `BUNDLE/result.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimResult {
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub oom_killed: bool,
    /// The container never ran: why.
    pub error: Option<String>,
    /// The root was the shared image root (overlayfs refused), not an overlay.
    pub shared_root: bool,
    /// Microseconds since the shim started at the end of each phase: root mounted, container
    /// created, started, exited, deleted (where a slow start spends its time).
    #[serde(default)]
    pub phases_us: Vec<(String, u64)>,
}

pub const CONFIG_FILE: &str = "spillway.json";
pub const RESULT_FILE: &str = "result.json";

#[cfg(target_pointer_width = "64")]
static PENDING: AtomicI32 = AtomicI32::new(0);

#[cfg(target_pointer_width = "64")]
extern "C" fn note_signal(sig: nix::libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// Runs the container of `bundle`; returns the process exit code (the container's, or 128+signal).
pub fn run(bundle: &Path) -> i32 {
    let mut result = ShimResult::default();
    let code = match supervise(bundle, &mut result) {
        Ok(code) => code,
        Err(e) => {
            result.error = Some(e);
            125
        }
    };
    let json = serde_json::to_vec(&result).unwrap_or_default();
    if std::fs::write(bundle.join(RESULT_FILE), json).is_err() {
        return 125;
    }
    code
}

#[cfg(not(target_pointer_width = "64"))]
fn supervise(_bundle: &Path, _result: &mut ShimResult) -> Result<i32, String> {
    Err(super::NO_CONTAINERS.to_owned())
}

#[cfg(target_pointer_width = "64")]
fn supervise(bundle: &Path, result: &mut ShimResult) -> Result<i32, String> {
    let began = std::time::Instant::now();
    let lap = |result: &mut ShimResult, phase: &str| {
        let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        result.phases_us.push((phase.to_owned(), us));
    };
    let config: ShimConfig = std::fs::read(bundle.join(CONFIG_FILE))
        .map_err(|e| format!("cannot read {CONFIG_FILE}: {e}"))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("bad {CONFIG_FILE}: {e}")))?;
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("cannot make a private mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make mounts private: {e}"))?;
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)
        .map_err(|e| format!("cannot create {}: {e}", rootfs.display()))?;
    result.shared_root = !mount_root(&config, &rootfs)?;
    lap(result, "mounted");

    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGALRM,
    ] {
        // No SA_RESTART: the signal interrupts waitpid, which is when we act on it.
        let action = SigAction::new(
            SigHandler::Handler(note_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(|e| format!("cannot handle {sig}: {e}"))?;
    }

    let mut container = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.state_root)
        .map_err(|e| format!("container state folder: {e}"))?
        .validate_id()
        .map_err(|e| format!("container id: {e}"))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(false)
        .build()
        .map_err(|e| {
            remove_state(&config);
            format!(
                "cannot create the container: {}",
                crate::image::error_chain(&e)
            )
        })?;
    lap(result, "created");
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(format!(
            "cannot start the container: {}",
            crate::image::error_chain(&e)
        ));
    }
    let Some(pid) = container
        .pid()
        .map(|p| nix::unistd::Pid::from_raw(p.as_raw()))
    else {
        let _ = container.delete(true);
        return Err("the container started without a process".to_owned());
    };
    lap(result, "started");
    let mut escalated = false;
    let status = loop {
        match waitpid(pid, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break status,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => match PENDING.swap(0, Ordering::SeqCst) {
                0 => continue,
                sig if sig == Signal::SIGALRM as i32 => {
                    let _ = container.kill(container_signal(Signal::SIGKILL as i32), true);
                    escalated = true;
                }
                sig => {
                    let _ = container.kill(container_signal(sig), true);
                    if !escalated {
                        nix::unistd::alarm::set(config.grace_secs.max(1));
                    }
                }
            },
            Err(e) => {
                let _ = container.delete(true);
                return Err(format!("lost track of the container: {e}"));
            }
        }
    };
    nix::unistd::alarm::cancel();
    lap(result, "exited");
    result.oom_killed = oom_kills(&config.cgroups_path) > 0;
    if let Err(e) = container.delete(true) {
        result.error = Some(format!(
            "the job ran, but its container could not be removed: {}",
            crate::image::error_chain(&e)
        ));
    }
    lap(result, "deleted");
    Ok(match status {
        WaitStatus::Exited(_, code) => {
            result.code = Some(code);
            code
        }
        WaitStatus::Signaled(_, sig, _) => {
            result.signal = Some(sig.as_str().to_owned());
            128 + sig as i32
        }
        _ => 125,
    })
}

/// Mounts the overlay; `Ok(false)` when overlayfs is refused and the shared root is bound
/// instead (the spec makes the root read-only either way).
#[cfg(target_pointer_width = "64")]
fn mount_root(config: &ShimConfig, rootfs: &Path) -> Result<bool, String> {
    for dir in [&config.upper, &config.work] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        config.lower.display(),
        config.upper.display(),
        config.work.display()
    );
    if mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .is_ok()
    {
        return Ok(true);
    }
    mount(
        Some(&config.lower),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot mount the image root {}: {e}",
            config.lower.display()
        )
    })?;
    Ok(false)
}

/// libcontainer's signal type (it links its own `nix`).
#[cfg(target_pointer_width = "64")]
fn container_signal(sig: i32) -> libcontainer::signal::Signal {
    libcontainer::signal::Signal::try_from(sig)
        .or_else(|_| libcontainer::signal::Signal::try_from(Signal::SIGTERM as i32))
        .unwrap_or_else(|_| unreachable!("SIGTERM is a signal"))
}

#[cfg(target_pointer_width = "64")]
fn remove_state(config: &ShimConfig) {
    if let Ok(mut c) = Container::load(config.state_root.join(&config.id)) {
        let _ = c.delete(true);
    }
}

/// The cgroup's OOM-kill count: cgroup v1's `memory.oom_control`, or v2's `memory.events`.
#[cfg_attr(not(target_pointer_width = "64"), allow(dead_code))]
pub fn oom_kills(cgroups_path: &str) -> u64 {
    oom_kills_under(Path::new("/sys/fs/cgroup"), cgroups_path)
}

#[cfg_attr(not(target_pointer_width = "64"), allow(dead_code))]
fn oom_kills_under(mount: &Path, cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let candidates = [
        mount.join("memory").join(rel).join("memory.oom_control"),
        mount.join(rel).join("memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn oom_kills_are_read_from_cgroup_v1_and_v2_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let v1 = dir.path().join("memory/spillway/a/job");
        std::fs::create_dir_all(&v1).expect("v1");
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("v1");
        assert_eq!(super::oom_kills_under(dir.path(), "/spillway/a/job"), 2);
        // A pure cgroup v2 host (Raspberry Pi OS): memory.events in the unified tree.
        let v2 = dir.path().join("spillway/b/job");
        std::fs::create_dir_all(&v2).expect("v2");
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("v2");
        assert_eq!(super::oom_kills_under(dir.path(), "/spillway/b/job"), 1);
        assert_eq!(super::oom_kills_under(dir.path(), "/spillway/none"), 0);
    }
}
