//! The `process` runtime: the FDL `script` run by `/bin/sh` (as OSCAR runs it in a container),
//! or a `command`, directly on the host, as an unprivileged user in a private `/tmp` unless the
//! node says `[process] user = "root"` ([`super::job_user`]). OCI isolates far more.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use spillway_proto::FunctionDef;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::job_user::{INSIDE, Jail, JobUser};
use super::{Executor, Exit, Outcome, PrepareError, RunFuture, Runtime, StagedJob};
use crate::capture::Captured;

/// How long a timed-out job gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct ProcessRuntime {
    /// Who jobs run as (`None`: the agent's own user).
    user: Option<JobUser>,
}

impl ProcessRuntime {
    /// Resolves `[process] user` and says in the log who jobs will run as.
    pub fn new(setting: &str) -> Result<Self, PrepareError> {
        let user = JobUser::resolve(setting).map_err(PrepareError::Engine)?;
        match &user {
            Some(u) => tracing::info!(
                "process functions run as user {} (uid {}, gid {}) with a private /tmp; [process] user = \"root\" in agent.toml runs them as root",
                u.name,
                u.uid,
                u.gid
            ),
            None => tracing::warn!(
                "process functions run as the agent's own user (uid {}): [process] user = \"root\" in agent.toml, or the agent is not root",
                nix::unistd::geteuid()
            ),
        }
        Ok(Self { user })
    }
}

#[derive(Debug)]
struct ProcessExecutor {
    argv: Vec<String>,
    /// The script on the host, bound into a jailed job's private `/tmp`.
    script: Option<PathBuf>,
    user: Option<JobUser>,
}

impl Runtime for ProcessRuntime {
    fn prepare(&self, function: &FunctionDef) -> Result<Arc<dyn Executor>, PrepareError> {
        let argv = match (&function.command, &function.script) {
            (Some(command), _) => command.clone(),
            (None, Some(script)) => {
                if !script.is_file() {
                    return Err(PrepareError::MissingFile {
                        function: function.name.clone(),
                        what: "script",
                        path: script.clone(),
                    });
                }
                let shown = match self.user {
                    Some(_) => format!("{INSIDE}/script"),
                    None => script.display().to_string(),
                };
                vec!["/bin/sh".to_owned(), shown]
            }
            (None, None) => {
                return Err(PrepareError::MissingFile {
                    function: function.name.clone(),
                    what: "script",
                    path: PathBuf::from("(none)"),
                });
            }
        };
        Ok(Arc::new(ProcessExecutor {
            argv,
            script: function
                .command
                .is_none()
                .then(|| function.script.clone())
                .flatten(),
            user: self.user.clone(),
        }))
    }
}

impl Executor for ProcessExecutor {
    fn execute(&self, job: StagedJob) -> RunFuture {
        let argv = self.argv.clone();
        let jail = self.user.clone().map(|u| (u, self.script.clone()));
        Box::pin(run(argv, job, jail))
    }
}

/// Runs `argv` as one staged job (the runner uses it inside someone else's compute, where the
/// script comes with the job rather than with a deployment).
pub fn run_argv(argv: Vec<String>, job: StagedJob) -> RunFuture {
    Box::pin(run(argv, job, None))
}

async fn run(
    argv: Vec<String>,
    job: StagedJob,
    jail: Option<(JobUser, Option<PathBuf>)>,
) -> Outcome {
    let mut stdout = Captured::new(job.log_limit);
    let mut stderr = Captured::new(job.log_limit);
    let Some((program, args)) = argv.split_first() else {
        return Outcome {
            exit: Exit::Failure("the function has an empty command".to_owned()),
            stdout,
            stderr,
        };
    };
    let (input_dir, output_dir) = match &jail {
        Some(_) => (format!("{INSIDE}/input"), format!("{INSIDE}/output")),
        None => (
            job.input_dir.display().to_string(),
            job.output_dir.display().to_string(),
        ),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(passthrough_env())
        .envs(job.contract_env(&input_dir, &output_dir))
        .current_dir(&job.work_dir)
        .kill_on_drop(true);
    as_job_child(&mut cmd);
    if let Some((user, script)) = &jail {
        let jail = match Jail::new(user, &job, script.as_deref()) {
            Ok(j) => j,
            Err(e) => {
                return Outcome {
                    exit: Exit::Failure(format!(
                        "cannot hand the job's folders to user {}: {e}",
                        user.name
                    )),
                    stdout,
                    stderr,
                };
            }
        };
        // SAFETY: `enter` only makes system calls (unshare, mount, mkdir, open, set*id,
        // chdir, prctl) on data prepared before the fork: async-signal-safe.
        unsafe {
            cmd.pre_exec(move || jail.enter());
        }
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let reason = format!("cannot start `{program}`: {e}");
            return Outcome {
                exit: Exit::Failure(reason),
                stdout,
                stderr,
            };
        }
    };
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    if let Some(pgid) = pgid {
        // Best effort: only used to reap a run orphaned by an agent crash.
        let _ = std::fs::write(&job.pid_file, format!("{pgid} {}", job.job_id));
    }
    let (mut out_pipe, mut err_pipe) = (child.stdout.take(), child.stderr.take());
    let reading = async {
        tokio::join!(
            drain(out_pipe.as_mut(), &mut stdout),
            drain(err_pipe.as_mut(), &mut stderr)
        );
    };
    let waited = tokio::time::timeout(job.timeout, async {
        let (status, ()) = tokio::join!(child.wait(), reading);
        status
    })
    .await;
    let exit = match waited {
        Ok(Ok(status)) if status.success() => Exit::Success,
        Ok(Ok(status)) => Exit::Failure(describe_status(&argv, status)),
        Ok(Err(e)) => Exit::Failure(format!("lost track of the process: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGTERM);
                if tokio::time::timeout(KILL_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait().await;
                }
            }
            Exit::Failure(format!(
                "timed out after {}s (raise `timeout` in the FDL if the job needs longer)",
                job.timeout.as_secs()
            ))
        }
    };
    // Background processes a script left behind belong to the job; the job is over.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(&job.pid_file);
    let exit = match exit {
        Exit::Failure(reason) => match stderr.last_line() {
            Some(line) => Exit::Failure(format!("{reason}; last stderr line: {line}")),
            None => Exit::Failure(reason),
        },
        ok => ok,
    };
    Outcome {
        exit,
        stdout,
        stderr,
    }
}

/// Sets up the process that runs a job (a script, or the container supervisor): no stdin,
/// stdout and stderr into the capture pipes, its own process group so a timeout or shutdown
/// reaches its children too, and SIGKILL if the agent dies (even by SIGKILL). Jobs are spawned
/// from a runtime worker thread, which lives as long as the agent, so the parent-death signal
/// means the agent.
pub(super) fn as_job_child(cmd: &mut Command) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Reads a child's pipe into its bounded log until the child closes it.
pub(super) async fn drain<R: AsyncRead + Unpin>(pipe: Option<&mut R>, sink: &mut Captured) {
    let Some(pipe) = pipe else { return };
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        sink.push(&buf[..n]);
    }
}

fn describe_status(argv: &[String], status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let what = argv.last().map(String::as_str).unwrap_or("command");
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("`{what}` exited with status {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("unknown signal");
            format!("`{what}` was killed by {name}")
        }
        _ => format!("`{what}` ended abnormally"),
    }
}

/// Variables of the agent's environment a script reasonably expects.
fn passthrough_env() -> Vec<(String, String)> {
    ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .chain(
            std::env::var("PATH")
                .is_err()
                .then(|| ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())),
        )
        .collect()
}

/// Kills what is left of a run recorded in `pid_file` by an agent that died.
///
/// The script itself died with the agent (parent-death signal), but its children may live on in
/// its process group. A process is only killed if it is in that group *and* carries the job's
/// `JOB_ID` in its environment, so a reused process-group id never hits a stranger.
pub fn reap_orphan(pid_file: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let mut parts = text.split_whitespace();
    if let (Some(Ok(pgid)), Some(job_id)) = (parts.next().map(str::parse::<i32>), parts.next()) {
        let marker = format!("JOB_ID={job_id}");
        for pid in processes_in_group(pgid) {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
            {
                tracing::warn!(
                    pid,
                    job = job_id,
                    "killing a process left running by a previous agent"
                );
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

fn processes_in_group(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command name: state, ppid, pgrp, …
            let pgrp = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(2)?.parse::<i32>().ok());
            pgrp == Some(pgid)
        })
        .collect()
}
