//! `spillway-agent`: parse arguments, load the config, run the agent until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spillway_agent::mesh::{self, Membership};
use spillway_agent::{Agent, AgentConfig, install, joblog, upgrade};
use spillway_plumbing::systemd as service;

mod image_cmd;

/// Exit code for an unusable configuration (EX_USAGE), as service managers expect.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "spillway-agent",
    version,
    about = "Spillway edge agent: runs functions where data appears"
)]
struct Cli {
    /// Agent configuration file (TOML).
    #[arg(
        long,
        short,
        global = true,
        env = "SPILLWAY_AGENT_CONFIG",
        default_value = "/etc/spillway/agent.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: watch the input folders and run the configured functions.
    Run,
    /// Print the log of a finished job (stdout, stderr, outcome). A unique prefix of the id is enough.
    Logs {
        /// Job id, or its first digits.
        job: String,
    },
    /// List finished jobs (newest last).
    Jobs,
    /// Join a coordinator's mesh with a one-time token (from `spillway token create`).
    ///
    /// Makes this node's key (it never leaves the node), gets it certified by the coordinator's
    /// CA, and saves the identity in the state folder. `run` then keeps the link up.
    Join {
        /// The coordinator's QUIC address, HOST:PORT (port 7443 by default).
        #[arg(long)]
        coordinator: String,
        /// The join token.
        #[arg(long, env = "SPILLWAY_JOIN_TOKEN")]
        token: String,
    },
    /// Install this agent as a systemd service: the binary in /usr/local/bin, a hardened
    /// `Type=notify` unit with a watchdog, and a config in /etc/spillway (the `--config` file if
    /// it exists, else a starter one; an existing config is never overwritten).
    Install {
        /// Install under this root instead of `/` (an image being prepared, a package).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Then reload systemd and enable and start the service (only with `--root /`).
        #[arg(long)]
        now: bool,
    },
    /// Pull a container image into this node's image store (the variant for this node's
    /// platform), so `oci` functions start without waiting for it.
    Pull {
        /// Image reference, e.g. `ghcr.io/grycap/fire-detection:latest`.
        image: String,
        /// Another platform than this node's, e.g. `linux/arm64` (to prepare a store for a board).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Import an image from an `oci-archive` or `docker save` tarball (offline devices).
    Load {
        /// The tarball (plain or gzipped).
        file: PathBuf,
        /// Name the image (needed when the archive does not name it).
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        platform: Option<String>,
    },
    /// List the images in this node's image store.
    Images,
    /// Run one job delegated to this compute (a Kubernetes Job's pod, a Lambda function, any
    /// container): fetch its input through the envelope's presigned URL, run the function with
    /// the staging contract, upload its outputs and report the result. Needs no config file.
    ///
    /// The envelope comes from `--envelope FILE` (`-` for stdin) or `SPILLWAY_ENVELOPE`; with
    /// neither and `AWS_LAMBDA_RUNTIME_API` set, it serves Lambda invocations (as it does when
    /// started under the name `bootstrap`).
    RunJob {
        /// The envelope (JSON): a file, or `-` for stdin.
        #[arg(long)]
        envelope: Option<PathBuf>,
        /// Folder for the job's staging folders.
        #[arg(long, env = "SPILLWAY_WORK_DIR", default_value = "/tmp")]
        work_dir: PathBuf,
        /// The longest the function may run.
        #[arg(long, env = "SPILLWAY_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Run this program instead of the envelope's script (the image's own program).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Copy this static binary to DEST (mode 0755). A Kubernetes Job's init container does
    /// this from the agent image into the pod's shared `emptyDir`, so the function's own
    /// image, whatever it holds, can start `run-job`. Needs no config file.
    InstallRunner {
        /// Where the copy goes, e.g. `/spillway/spillway-agent`.
        dest: PathBuf,
    },
    /// Runs one container job (started by the agent itself, one per container).
    #[command(hide = true, name = "oci-run")]
    OciRun { bundle: PathBuf },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    if started_as_lambda_bootstrap() {
        spillway_plumbing::logging::init(false);
        return run_job(
            None,
            PathBuf::from("/tmp"),
            std::time::Duration::from_secs(900),
            vec![],
        );
    }
    let cli = Cli::parse();
    if let Command::OciRun { bundle } = &cli.command {
        // The container's stdout/stderr are this process's: nothing else may write there.
        let code = spillway_agent::runtime::oci::shim::run(bundle);
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    spillway_plumbing::logging::init(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if let Command::RunJob {
        envelope,
        work_dir,
        timeout,
        command,
    } = cli.command
    {
        return run_job(envelope, work_dir, timeout, command);
    }
    if let Command::InstallRunner { dest } = &cli.command {
        return match spillway_agent::runner::install_self(dest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spillway-agent: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Install { root, now } = &cli.command {
        return install(root, &cli.config, *now);
    }
    let config = match AgentConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spillway-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if matches!(cli.command, Command::Run) {
        // Before anything else: the binary an upgrade stored may be the one to run.
        if let upgrade::launch::Start::Exit(code) = upgrade::launch::at_start(&config.state_dir) {
            return ExitCode::from(code);
        }
    }
    if matches!(cli.command, Command::Run | Command::Pull { .. }) {
        spillway_agent::image::pull::ensure_trust_store(&config.state_dir);
    }
    let result = match cli.command {
        Command::Run => match run(config, &cli.config) {
            Ok(Stopped::ForUpgrade) => return ExitCode::from(upgrade::launch::restart()),
            Ok(Stopped::Done) => Ok(()),
            Err(e) => Err(e),
        },
        Command::Join { coordinator, token } => join(&config, &coordinator, &token),
        Command::Logs { job } => joblog::read(&config.logs_dir(), &job)
            .map(|text| print!("{text}"))
            .map_err(Into::into),
        Command::Jobs => joblog::list(&config.logs_dir())
            .map(|rows| rows.iter().for_each(|r| println!("{r}")))
            .map_err(Into::into),
        Command::Pull { image, platform } => image_cmd::pull(&config, &image, platform.as_deref()),
        Command::Load {
            file,
            tag,
            platform,
        } => image_cmd::load(&config, &file, tag.as_deref(), platform.as_deref()),
        Command::Images => image_cmd::list(&config),
        Command::Install { .. }
        | Command::InstallRunner { .. }
        | Command::OciRun { .. }
        | Command::RunJob { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "spillway-agent: {}",
                spillway_plumbing::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// A Lambda custom runtime starts `bootstrap` with no arguments.
fn started_as_lambda_bootstrap() -> bool {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("bootstrap"))
        && std::env::args_os().len() == 1
        && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Exit codes of `run-job`: the function failed; it was stopped at the executor's time limit.
const EXIT_JOB_FAILED: u8 = 1;
const EXIT_JOB_STOPPED: u8 = 75;

fn run_job(
    envelope: Option<PathBuf>,
    work_root: PathBuf,
    timeout: std::time::Duration,
    command: Vec<String>,
) -> ExitCode {
    use spillway_agent::runner;
    use spillway_proto::envelope::ReportedStatus;
    let opts = runner::RunOptions {
        work_root,
        command: (!command.is_empty()).then_some(command),
        timeout,
        deadline: None,
    };
    let text = match &envelope {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| Some(text))
        }
        Some(path) => std::fs::read_to_string(path).map(Some),
        None => Ok(std::env::var("SPILLWAY_ENVELOPE").ok()),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spillway-agent run-job: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match text {
        Ok(Some(text)) => text,
        Ok(None) => {
            let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
                eprintln!(
                    "spillway-agent run-job: no envelope: give --envelope FILE, or set SPILLWAY_ENVELOPE (or AWS_LAMBDA_RUNTIME_API inside Lambda)"
                );
                return ExitCode::from(EXIT_CONFIG);
            };
            return match rt.block_on(runner::lambda::serve(&api, opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("spillway-agent run-job: {why}");
                    ExitCode::FAILURE
                }
            };
        }
        Err(e) => {
            eprintln!("spillway-agent run-job: cannot read the envelope: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let envelope: spillway_proto::envelope::Envelope = match serde_json::from_str(&text) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "spillway-agent run-job: the envelope is not a Spillway envelope ({e}); the coordinator writes it when it delegates a job"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let http = match runner::http_client() {
        Ok(h) => h,
        Err(why) => {
            eprintln!("spillway-agent run-job: {why}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(runner::run(&http, &envelope, &opts));
    match report.status {
        ReportedStatus::Succeeded => ExitCode::SUCCESS,
        ReportedStatus::Stopped => ExitCode::from(EXIT_JOB_STOPPED),
        ReportedStatus::Failed | ReportedStatus::Running => {
            if let Some(why) = &report.reason {
                eprintln!("spillway-agent run-job: {why}");
            }
            ExitCode::from(EXIT_JOB_FAILED)
        }
    }
}

/// Why `run` returned.
enum Stopped {
    Done,
    /// An upgrade stored a new binary: start again on it.
    ForUpgrade,
}

fn run(config: AgentConfig, config_path: &std::path::Path) -> anyhow::Result<Stopped> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Two workers are plenty for moving bytes; functions run in their own processes/threads.
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let state_dir = config.state_dir.clone();
        let join_settings = config.join.clone();
        // Before start-up work: a SIGTERM while modules compile or the MQTT session is taken
        // over stops the agent cleanly instead of killing it.
        let stop = spillway_plumbing::shutdown_signal();
        // This binary is its own container shim (`spillway-agent oci-run`).
        let shim = std::env::current_exe().context("cannot find this program's own binary")?;
        // Before anything is opened: a listener that cannot be had stops the start cleanly.
        let scrapes = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen for metrics scrapes on {addr} ([metrics] listen)")
                })?;
                println!("Metrics: http://{}/metrics", listener.local_addr().unwrap_or(addr));
                Some(listener)
            }
        };
        let agent = Agent::start(config, &shim).context("the agent could not start")?;
        // Compiling wasm modules at start-up leaves freed heap behind.
        spillway_agent::release_unused_memory();
        print_banner(&agent, config_path);
        service::ready(&format!(
            "{} functions deployed",
            agent.functions().len()
        ));
        // The engine beats every half second; ten missed beats mean it is wedged.
        let watchdog = service::spawn_watchdog(agent.heartbeat(), std::time::Duration::from_secs(5));
        let (stop_link, link_stopped) = tokio::sync::oneshot::channel::<()>();
        let restart = upgrade::RestartRequest::default();
        let restart_for_link = Some(restart.clone());
        let (handle, capacity) = (agent.mesh_handle(), agent.capacity());
        let scrapes = scrapes.map(|listener| {
            let (handle, metrics) = (handle.clone(), handle.metrics());
            tokio::spawn(spillway_plumbing::metrics::serve(
                listener,
                std::sync::Arc::new(move || metrics.render(&handle)),
            ))
        });
        let node = agent.node_name().to_owned();
        let link = match (Membership::load(&state_dir), join_settings) {
            (Some(membership), _) => {
                println!("Mesh: linking to the coordinator at {}", membership.coordinator);
                Some(tokio::spawn(mesh::session::run(membership, handle, capacity, restart_for_link, async {
                    let _ = link_stopped.await;
                })))
            }
            (None, Some(join)) => {
                println!(
                    "Mesh: joining the coordinator at {} (token in {})",
                    join.coordinator,
                    join.token_file.display()
                );
                Some(tokio::spawn(async move {
                    let mut stopped = std::pin::pin!(link_stopped);
                    let joined = tokio::select! {
                        m = mesh::join_at_start(&state_dir, &node, &join) => m,
                        _ = &mut stopped => None,
                    };
                    if let Some(membership) = joined {
                        mesh::session::run(membership, handle, capacity, restart_for_link, async {
                            let _ = stopped.await;
                        })
                        .await;
                    }
                }))
            }
            (None, None) => {
                println!("Mesh: not joined; running standalone (join with `spillway-agent join --coordinator HOST:PORT --token T`)");
                None
            }
        };
        let result = agent
            .run(async {
                tokio::select! {
                    () = stop => {}
                    () = restart.wait() => tracing::info!("stopping to start the new binary"),
                }
                service::stopping();
            })
            .await
            .context("the agent stopped");
        if let Some(w) = watchdog {
            w.abort();
        }
        if let Some(scrapes) = scrapes {
            scrapes.abort();
        }
        let _ = stop_link.send(());
        if let Some(link) = link {
            let _ = link.await;
        }
        result.map(|()| {
            if restart.requested() {
                Stopped::ForUpgrade
            } else {
                Stopped::Done
            }
        })
    });
    // A wasm run past the grace period must not hold the exit: its job runs again at next start.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn install(root: &std::path::Path, config: &std::path::Path, now: bool) -> ExitCode {
    let result = (|| -> anyhow::Result<()> {
        let me = std::env::current_exe().context("cannot find this program's own binary")?;
        let done = install::install(root, &me, Some(config))?;
        for path in &done.written {
            println!("wrote {}", path.display());
        }
        if let Some(kept) = &done.kept {
            println!("kept the existing {}", kept.display());
        }
        if now && root == std::path::Path::new("/") {
            for args in [
                &["daemon-reload"][..],
                &["enable", "--now", "spillway-agent"][..],
            ] {
                let status = std::process::Command::new("systemctl")
                    .args(args)
                    .status()
                    .context("cannot run systemctl (is this a systemd system?)")?;
                anyhow::ensure!(status.success(), "systemctl {} failed", args.join(" "));
            }
            println!("spillway-agent is running: systemctl status spillway-agent");
        } else {
            println!(
                "next: edit /{}, join a mesh if you want one (spillway-agent join …), then: systemctl daemon-reload && systemctl enable --now spillway-agent",
                install::CONFIG
            );
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "spillway-agent: {}",
                spillway_plumbing::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

fn join(config: &AgentConfig, coordinator: &str, token: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(mesh::join(
        &config.state_dir,
        &config.node_name,
        coordinator,
        token,
    ))?;
    println!(
        "node `{}` joined the mesh of {coordinator}; start (or restart) the agent to link: spillway-agent run",
        config.node_name
    );
    Ok(())
}

fn print_banner(agent: &Agent, config_path: &std::path::Path) {
    let cap = agent.capacity();
    let functions = agent.functions();
    println!(
        "spillway-agent {} on node `{}`: {} function{} deployed, capacity {} CPU / {} memory",
        env!("CARGO_PKG_VERSION"),
        agent.node_name(),
        functions.len(),
        if functions.len() == 1 { "" } else { "s" },
        cap.cpu,
        cap.memory
    );
    for f in &functions {
        let list = |dirs: &[PathBuf]| {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("  {} ({}, {} at a time)", f.name, f.runtime, f.slots);
        if !f.inputs.is_empty() {
            println!("    drop files into  {}", list(&f.inputs));
        }
        if !f.outputs.is_empty() {
            println!("    results appear in {}", list(&f.outputs));
        }
        if !f.topics_in.is_empty() {
            println!("    MQTT messages on {}", f.topics_in.join(", "));
        }
        if !f.topics_out.is_empty() {
            println!("    results published on {}", f.topics_out.join(", "));
        }
    }
    for r in agent.refused() {
        println!("  NOT DEPLOYED {}: {}", r.name, r.reason);
    }
    println!(
        "Job logs: spillway-agent --config {} jobs | logs JOB",
        config_path.display()
    );
}

/// glibc gives each thread that allocates its own malloc arena; on a 1 GB board the agent's few
/// threads share two instead, which keeps idle memory down at no measurable cost here.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}
