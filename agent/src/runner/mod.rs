//! Runner mode (`spillway-agent run-job`): the supervisor inside someone else's compute — a
//! Kubernetes Job's pod, a Lambda function, any container an endpoint starts. It gets an
//! [`Envelope`], fetches the input through the envelope's presigned URL (checking its SHA-256),
//! runs the function with the staging contract, uploads every output through the presigned
//! `upload` URL and reports the result through the `callback`. It needs no credential besides
//! those URLs, and no config file.
//!
//! [`lambda`] adds the Lambda Runtime API loop, so the same static binary is a Lambda
//! `bootstrap`.

pub mod lambda;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spillway_proto::envelope::{
    ENVELOPE_VERSION, Envelope, OutputRef, ReportedStatus, ResultReport, upload_url,
};

use crate::runtime::{Exit, StagedJob, process};
use crate::staging::Staging;

/// Time kept back before an executor's own deadline (Lambda's), to stop the function cleanly and
/// report that it was stopped, rather than being killed mid-report.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);

/// How much of the function's stdout/stderr is kept (and echoed to the runner's own).
const LOG_LIMIT: usize = 1 << 20;

/// How one job is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folder for the job's staging folders (removed afterwards).
    pub work_root: PathBuf,
    /// argv to run instead of the envelope's script (an image with its own program).
    pub command: Option<Vec<String>>,
    /// The longest the function may run.
    pub timeout: Duration,
    /// The executor's own deadline: a run that would pass it is stopped and reported
    /// [`ReportedStatus::Stopped`], so the coordinator may send the job elsewhere.
    pub deadline: Option<Instant>,
}

/// Runs the job the envelope describes and reports it; the report is also returned (a Lambda
/// `RequestResponse` answer carries it too).
pub async fn run(
    http: &reqwest_tls::Client,
    envelope: &Envelope,
    opts: &RunOptions,
) -> ResultReport {
    let report = match check(envelope) {
        Err(why) => ResultReport::finished(ReportedStatus::Failed, Some(why)),
        Ok(()) => {
            post_report(http, envelope, &ResultReport::running(), 1).await;
            // Under a folder of this process: another runner on the same host (the same job
            // on another replica that shares the machine, a test) never shares its folders.
            let root = opts
                .work_root
                .join(format!("spillway-runner-{}", std::process::id()));
            let staging = Staging::for_attempt(&root, envelope.job, envelope.attempt);
            let report = run_staged(http, envelope, opts, &staging).await;
            staging.remove();
            let _ = std::fs::remove_dir(&root);
            report
        }
    };
    tracing::info!(job = %envelope.job.short(), status = ?report.status, reason = report.reason.as_deref().unwrap_or(""), "job finished");
    post_report(http, envelope, &report, 4).await;
    report
}

fn check(envelope: &Envelope) -> Result<(), String> {
    if envelope.spillway != ENVELOPE_VERSION {
        return Err(format!(
            "the envelope is version {}, this runner reads version {ENVELOPE_VERSION}: use a runner image of the coordinator's release",
            envelope.spillway
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if now > envelope.expires_at {
        return Err(format!(
            "the envelope's URLs expired {}s ago (the job waited too long to start; raise `replicas.url_ttl` in the coordinator's config)",
            now - envelope.expires_at
        ));
    }
    Ok(())
}

async fn run_staged(
    http: &reqwest_tls::Client,
    envelope: &Envelope,
    opts: &RunOptions,
    staging: &Staging,
) -> ResultReport {
    let failed = |why: String| ResultReport::finished(ReportedStatus::Failed, Some(why));
    for dir in [&staging.input_dir, &staging.output_dir, &staging.work_dir] {
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            return failed(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let name = &envelope.input.name;
    if name.is_empty() || name.contains('/') || name == ".." || name == "." {
        return failed(format!("the input's name `{name}` is not a file name"));
    }
    if let Err(why) = fetch_input(http, envelope, &staging.input_dir.join(name)).await {
        return failed(why);
    }
    let argv = match (&opts.command, &envelope.script) {
        (Some(command), _) if !command.is_empty() => command.clone(),
        (_, Some(script)) => {
            let path = staging.root.join("script.sh");
            if let Err(e) = tokio::fs::write(&path, script).await {
                return failed(format!(
                    "cannot write the script to {}: {e}",
                    path.display()
                ));
            }
            vec!["/bin/sh".to_owned(), path.display().to_string()]
        }
        _ => {
            return failed(format!(
                "function `{}` has no script in the envelope and the runner was given no command: give the function a `script`, or run `spillway-agent run-job -- PROGRAM ARGS…`",
                envelope.function
            ));
        }
    };
    if let Err(report) = execute(envelope, opts, staging, argv).await {
        return report;
    }
    match upload_outputs(http, envelope, staging).await {
        Ok(outputs) => ResultReport {
            status: ReportedStatus::Succeeded,
            reason: None,
            outputs,
        },
        Err(why) => failed(why),
    }
}

/// Runs `argv` on the staged input within the time allowed; the report when it did not succeed.
async fn execute(
    envelope: &Envelope,
    opts: &RunOptions,
    staging: &Staging,
    argv: Vec<String>,
) -> Result<(), ResultReport> {
    let (timeout, by_deadline) = time_allowed(opts, Instant::now());
    if timeout.is_zero() {
        return Err(ResultReport::finished(
            ReportedStatus::Stopped,
            Some("no time left before the executor's deadline to start the job".into()),
        ));
    }
    let job = StagedJob {
        job_id: envelope.job.to_string(),
        function: envelope.function.clone(),
        input_dir: staging.input_dir.clone(),
        output_dir: staging.output_dir.clone(),
        work_dir: staging.work_dir.clone(),
        file_name: envelope.input.name.clone(),
        event_json: serde_json::to_string(&envelope.event).unwrap_or_default(),
        variables: variables_of(envelope),
        timeout,
        memory_limit: 0,
        log_limit: LOG_LIMIT,
        pid_file: staging.root.join("pid"),
    };
    let started = Instant::now();
    let outcome = process::run_argv(argv, job).await;
    // The function's own output goes where the executor collects logs (kubectl logs, CloudWatch).
    print!("{}", outcome.stdout.render());
    eprint!("{}", outcome.stderr.render());
    match outcome.exit {
        Exit::Success => Ok(()),
        Exit::Failure(why) if by_deadline && started.elapsed() >= timeout => {
            Err(ResultReport::finished(
                ReportedStatus::Stopped,
                Some(format!(
                    "stopped after {}s, at the executor's own time limit: {why}",
                    started.elapsed().as_secs()
                )),
            ))
        }
        Exit::Failure(why) => Err(ResultReport::finished(ReportedStatus::Failed, Some(why))),
    }
}

/// The time the function gets, and whether the executor's deadline (rather than the timeout)
/// sets it.
fn time_allowed(opts: &RunOptions, now: Instant) -> (Duration, bool) {
    match opts.deadline {
        Some(deadline) => {
            let left = deadline
                .saturating_duration_since(now)
                .saturating_sub(DEADLINE_MARGIN);
            if left < opts.timeout {
                (left, true)
            } else {
                (opts.timeout, false)
            }
        }
        None => (opts.timeout, false),
    }
}

async fn fetch_input(
    http: &reqwest_tls::Client,
    envelope: &Envelope,
    path: &Path,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let input = &envelope.input;
    let fail = |e: &dyn std::fmt::Display| format!("cannot fetch the input `{}`: {e}", input.name);
    let mut response = http
        .get(&input.url)
        .send()
        .await
        .map_err(|e| fail(&spillway_plumbing::error_chain(&e)))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(fail(&format!("HTTP {status}: {}", body.trim())));
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| fail(&format!("{}: {e}", path.display())))?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(&spillway_plumbing::error_chain(&e)))?
    {
        hash.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| fail(&format!("{}: {e}", path.display())))?;
    }
    file.flush().await.map_err(|e| fail(&e))?;
    let digest = hex::encode(hash.finalize());
    if digest != input.sha256 || size != input.size {
        return Err(fail(&format!(
            "got {size} bytes with SHA-256 {digest}, expected {} bytes with {}: the copy was damaged on the way",
            input.size, input.sha256
        )));
    }
    Ok(())
}

async fn upload_outputs(
    http: &reqwest_tls::Client,
    envelope: &Envelope,
    staging: &Staging,
) -> Result<Vec<OutputRef>, String> {
    let keys = staging.collect_outputs().map_err(|e| e.to_string())?;
    let Some(template) = &envelope.upload else {
        if !keys.is_empty() {
            tracing::warn!(
                count = keys.len(),
                "the envelope has no upload URL: the function's output files are not delivered"
            );
        }
        return Ok(Vec::new());
    };
    let mut outputs = Vec::with_capacity(keys.len());
    for key in keys {
        let path = staging.output_dir.join(key.as_str());
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("cannot read output {}: {e}", path.display()))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        let url = upload_url(template, key.as_str());
        let response = http.put(&url).body(bytes).send().await.map_err(|e| {
            format!(
                "cannot upload output `{key}`: {}",
                spillway_plumbing::error_chain(&e)
            )
        })?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!(
                "the coordinator refused output `{key}`: HTTP {status}: {}",
                body.trim()
            ));
        }
        outputs.push(OutputRef {
            name: key.to_string(),
            sha256,
            size,
        });
    }
    Ok(outputs)
}

/// Posts a report to the envelope's callback, trying up to `tries` times; a report that
/// cannot be delivered is logged (the coordinator then reconciles by other means).
async fn post_report(
    http: &reqwest_tls::Client,
    envelope: &Envelope,
    report: &ResultReport,
    tries: u32,
) {
    let mut delay = Duration::from_millis(200);
    for n in 1..=tries {
        let why = match http.post(&envelope.callback).json(report).send().await {
            Ok(r) if r.status().is_success() => return,
            // Refused for good (an attempt the coordinator moved on from: 409): no retry.
            Ok(r) if r.status().is_client_error() => {
                tracing::warn!(job = %envelope.job.short(), "the coordinator refused the {:?} report: HTTP {}", report.status, r.status());
                return;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => spillway_plumbing::error_chain(&e),
        };
        if n == tries {
            tracing::warn!(job = %envelope.job.short(), "cannot report {:?} to the coordinator: {why}", report.status);
            return;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// Copies the running binary to `dest` with mode 0755, through a temporary name so a half
/// copy is never started (`install-runner`, a Kubernetes Job's init container).
pub fn install_self(dest: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let me =
        std::env::current_exe().map_err(|e| format!("cannot find this program's own file: {e}"))?;
    let partial = dest.with_extension("partial");
    let copy = || -> std::io::Result<()> {
        std::fs::copy(&me, &partial)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&partial, dest)
    };
    copy().map_err(|e| {
        format!(
            "cannot copy {} to {}: {e} (is the folder mounted and writable?)",
            me.display(),
            dest.display()
        )
    })
}

/// An HTTP client for the runner (ring as rustls' provider, as everywhere here).
pub fn http_client() -> Result<reqwest_tls::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest_tls::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))
}

/// The function's environment where the runner runs it: the executor's own (a Job's `env` and
/// Secret, a Lambda's configuration), then the FDL's `environment.variables` from the envelope
/// over it, as the nodes set them.
fn variables_of(envelope: &Envelope) -> Vec<(String, String)> {
    let mut variables: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != "SPILLWAY_ENVELOPE" && !envelope.variables.contains_key(k))
        .collect();
    variables.extend(
        envelope
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    variables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fdls_variables_are_set_over_the_executors_environment() {
        let envelope = super::lambda::tests::envelope();
        let vars = variables_of(&envelope);
        let greeting: Vec<&(String, String)> =
            vars.iter().filter(|(k, _)| k == "GREETING").collect();
        assert_eq!(
            greeting,
            [&("GREETING".to_owned(), "from the FDL".to_owned())],
            "once, the FDL's value"
        );
        assert!(vars.iter().all(|(k, _)| k != "SPILLWAY_ENVELOPE"));
        assert!(
            vars.iter().any(|(k, _)| k == "PATH"),
            "the executor's own stay"
        );
    }

    #[test]
    fn the_deadline_shortens_the_timeout_and_keeps_a_margin() {
        let now = Instant::now();
        let mut opts = RunOptions {
            work_root: PathBuf::from("/tmp"),
            command: None,
            timeout: Duration::from_secs(60),
            deadline: None,
        };
        assert_eq!(time_allowed(&opts, now), (Duration::from_secs(60), false));
        opts.deadline = Some(now + Duration::from_secs(10));
        assert_eq!(
            time_allowed(&opts, now),
            (Duration::from_secs(10) - DEADLINE_MARGIN, true)
        );
        opts.deadline = Some(now + Duration::from_secs(600));
        assert_eq!(time_allowed(&opts, now), (Duration::from_secs(60), false));
        opts.deadline = Some(now);
        assert_eq!(time_allowed(&opts, now), (Duration::ZERO, true));
    }

    fn staged(dir: &Path, script: &str) -> (Envelope, Staging, Vec<String>) {
        let envelope = super::lambda::tests::envelope();
        let staging = Staging::for_attempt(dir, envelope.job, 1);
        for d in [&staging.input_dir, &staging.output_dir, &staging.work_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(staging.input_dir.join(&envelope.input.name), "x").unwrap();
        let path = dir.join("s.sh");
        std::fs::write(&path, script).unwrap();
        (
            envelope,
            staging,
            vec!["/bin/sh".into(), path.display().to_string()],
        )
    }

    #[tokio::test]
    async fn a_run_that_would_pass_the_executors_deadline_is_stopped_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (envelope, staging, argv) = staged(dir.path(), "sleep 30\n");
        let opts = RunOptions {
            work_root: dir.path().to_owned(),
            command: None,
            timeout: Duration::from_secs(60),
            deadline: Some(Instant::now() + DEADLINE_MARGIN + Duration::from_secs(1)),
        };
        let started = Instant::now();
        let report = execute(&envelope, &opts, &staging, argv).await.unwrap_err();
        assert_eq!(report.status, ReportedStatus::Stopped, "{report:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_failing_script_is_a_failure_with_its_reason_and_a_timeout_without_deadline_too() {
        let dir = tempfile::tempdir().unwrap();
        let (envelope, staging, argv) = staged(dir.path(), "echo broken >&2; exit 3\n");
        let mut opts = RunOptions {
            work_root: dir.path().to_owned(),
            command: None,
            timeout: Duration::from_secs(60),
            deadline: None,
        };
        let report = execute(&envelope, &opts, &staging, argv).await.unwrap_err();
        assert_eq!(report.status, ReportedStatus::Failed);
        assert!(report.reason.unwrap().contains("broken"));
        let (envelope, staging, argv) = staged(dir.path(), "sleep 30\n");
        opts.timeout = Duration::from_secs(1);
        let report = execute(&envelope, &opts, &staging, argv).await.unwrap_err();
        assert_eq!(report.status, ReportedStatus::Failed, "{report:?}");
    }
}
