//! Starting the binary the boot record names. Under systemd the installed binary replaces
//! itself with it (`execve`: same process, so `Type=notify` and the watchdog keep working) and
//! systemd restarts the service when it exits with [`EXIT_RESTART`]. Anywhere else (a board's
//! own init, a terminal, a container) the agent becomes its own supervisor once it has stored
//! binaries: a small parent process that starts the agent as its child, starts it again on
//! [`EXIT_RESTART`] or when a trial binary stops, and passes stop signals on.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{Boot, EXIT_RESTART, Run, SLOT_ENV, SUPERVISED_ENV};

/// What the process that was started should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// Run the agent here.
    Here,
    /// The supervisor ran the agent and it stopped for good with this status.
    Exit(u8),
}

/// Whether systemd started this process (it reads our readiness on this socket).
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Whether a launcher started this process (as a stored binary, or as the supervisor's child).
pub fn launched() -> bool {
    super::running_slot().is_some() || std::env::var_os(SUPERVISED_ENV).is_some()
}

/// Called first by `spillway-agent run`: starts the binary the boot record names.
pub fn at_start(state_dir: &Path) -> Start {
    if launched() {
        return Start::Here;
    }
    let boot = match super::load(state_dir) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}; running the installed binary");
            return Start::Here;
        }
    };
    if boot.current.is_none() && boot.trial.is_none() {
        return Start::Here;
    }
    if under_systemd() {
        exec_chosen(state_dir, boot);
        return Start::Here;
    }
    let Ok(installed) = std::env::current_exe() else {
        return Start::Here;
    };
    Start::Exit(supervise(state_dir, &installed))
}

/// After the agent stopped because an upgrade asked for a restart: how this process ends.
/// Under systemd or a supervisor, by exiting with [`EXIT_RESTART`]. Otherwise it becomes the
/// supervisor itself (same process, so whoever started it still holds its pid).
pub fn restart() -> u8 {
    if under_systemd() || launched() {
        return EXIT_RESTART;
    }
    match std::env::current_exe() {
        Ok(me) => {
            let args: Vec<OsString> = std::env::args_os().skip(1).collect();
            let err = exec(&me, &args, None);
            tracing::error!("cannot start again as the supervisor of the new binary: {err}");
            EXIT_RESTART
        }
        Err(e) => {
            tracing::error!("cannot find this program's own binary to start again: {e}");
            EXIT_RESTART
        }
    }
}

/// Replaces this process with the chosen stored binary; returns (running the installed one)
/// only when there is none to run or it cannot be started, rolled back and recorded.
fn exec_chosen(state_dir: &Path, mut boot: Boot) {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Each round either starts a binary or forgets one: at most a trial and a current.
    for _ in 0..3 {
        let run = boot.choose();
        if let Err(e) = super::save(state_dir, &boot) {
            tracing::error!("{e}; running the installed binary");
            return;
        }
        let slot = match run {
            Run::Installed => return,
            Run::Current(slot) | Run::Trial(slot) => slot,
        };
        let path = super::slot_path(state_dir, &slot.sha256);
        let err = exec(&path, &args, Some(&slot.sha256));
        forget_unstartable(&mut boot, &slot.sha256, &path, &err.to_string());
    }
}

/// A stored binary that cannot be started: a trial is rolled back, a current one is dropped
/// for the installed binary.
fn forget_unstartable(boot: &mut Boot, sha256: &str, path: &Path, why: &str) {
    tracing::error!("cannot start {}: {why}", path.display());
    if boot.on_trial(sha256).is_some() {
        boot.roll_back(format!("the new binary cannot be started: {why}"));
    } else if boot.current.as_ref().is_some_and(|c| c.sha256 == sha256) {
        boot.current = boot.previous.take();
    }
}

/// `execve` of `path` with `args` and this environment (plus the slot variable); returns only
/// on failure.
fn exec(path: &Path, args: &[OsString], slot: Option<&str>) -> nix::Error {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| nix::Error::EINVAL);
    let build = || -> Result<(CString, Vec<CString>, Vec<CString>), nix::Error> {
        let program = cstr(path.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for a in args {
            argv.push(cstr(a.as_bytes())?);
        }
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k != SLOT_ENV {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                env.push(cstr(&kv)?);
            }
        }
        if let Some(sha) = slot {
            env.push(cstr(format!("{SLOT_ENV}={sha}").as_bytes())?);
        }
        Ok((program, argv, env))
    };
    match build() {
        Ok((program, argv, env)) => match nix::unistd::execve(&program, &argv, &env) {
            Err(e) => e,
            Ok(never) => match never {},
        },
        Err(e) => e,
    }
}

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(sig: nix::libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// Restarts in a row (not counting trials) after which the supervisor gives up.
const MAX_RESTARTS: u32 = 20;

/// Runs the agent as a child until it stops for good; its exit status.
pub fn supervise(state_dir: &Path, installed: &Path) -> u8 {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // No SA_RESTART: the signal interrupts waitpid, which is when it is passed on.
        let action = SigAction::new(
            SigHandler::Handler(note_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            tracing::warn!("cannot pass {sig} on to the agent: {e}");
        }
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut restarts = 0;
    loop {
        let mut boot = super::load(state_dir).unwrap_or_else(|e| {
            tracing::error!("{e}; running the installed binary");
            Boot::default()
        });
        let run = boot.choose();
        if let Err(e) = super::save(state_dir, &boot) {
            tracing::error!("{e}");
        }
        let (path, slot): (PathBuf, Option<String>) = match &run {
            Run::Installed => (installed.to_owned(), None),
            Run::Current(s) | Run::Trial(s) => (
                super::slot_path(state_dir, &s.sha256),
                Some(s.sha256.clone()),
            ),
        };
        let mut cmd = std::process::Command::new(&path);
        cmd.args(&args)
            .env(SUPERVISED_ENV, "1")
            .env_remove(SLOT_ENV);
        if let Some(sha) = &slot {
            cmd.env(SLOT_ENV, sha);
        }
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is a single system call, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                match &slot {
                    Some(sha) => forget_unstartable(&mut boot, sha, &path, &e.to_string()),
                    None => {
                        eprintln!("spillway-agent: cannot start {}: {e}", path.display());
                        return 1;
                    }
                }
                if let Err(e) = super::save(state_dir, &boot) {
                    tracing::error!("{e}");
                    return 1;
                }
                continue;
            }
        };
        let (status, stopped) = wait(Pid::from_raw(child.id() as i32));
        if stopped {
            return status;
        }
        let trial_stopped = matches!(run, Run::Trial(_));
        if status == EXIT_RESTART || trial_stopped {
            tracing::info!(status, "starting the agent again");
            continue;
        }
        restarts += 1;
        if restarts > MAX_RESTARTS || status == 0 || status == 64 {
            return status;
        }
        tracing::warn!(status, "the agent stopped; starting it again in 2 s");
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Waits for the child; passes stop signals on. Its status (128 + signal when killed), and
/// whether it stopped because it was told to.
fn wait(pid: Pid) -> (u8, bool) {
    let mut told = false;
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return (u8::try_from(code).unwrap_or(1), told),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return (128u8.saturating_add(sig as u8), told);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                let sig = PENDING.swap(0, Ordering::SeqCst);
                if let Ok(sig) = Signal::try_from(sig) {
                    told = true;
                    let _ = kill(pid, sig);
                }
            }
            Err(_) => return (1, told),
        }
    }
}
