//! `spillway`: the command-line interface of a Spillway mesh, and its coordinator server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::engine::ArgValueCompleter;
use spillway_cli::client::Client;
use spillway_cli::commands::output::Format;
use spillway_cli::commands::{self as cli, membership};
#[cfg(feature = "up")]
use spillway_cli::up;
#[cfg(feature = "serve")]
use spillway_coordinator::config::CoordinatorConfig;

/// Exit code for an unusable configuration (EX_USAGE).
#[cfg(feature = "serve")]
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "spillway",
    version,
    about = "Drive a Spillway edge-to-cloud serverless mesh",
    after_help = "Start here: `spillway up` runs a coordinator and a local agent; `spillway get nodes` shows the mesh."
)]
struct Cli {
    /// Coordinator API URL (default: from the client config, else http://127.0.0.1:7480).
    #[arg(long, global = true, env = "SPILLWAY_COORDINATOR")]
    coordinator: Option<String>,
    /// API token (default: from the client config).
    #[arg(long, global = true, env = "SPILLWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Client config file (default: $SPILLWAY_CONFIG, else ~/.config/spillway/config.toml).
    #[arg(long = "client-config", global = true)]
    client_config: Option<PathBuf>,
    /// The client config's context to use (default: its current-context).
    #[arg(long, global = true, env = "SPILLWAY_CONTEXT")]
    context: Option<String>,
    /// Output format: table, wide, name, json, yaml, or jsonpath=TEMPLATE (kubectl's:
    /// '{.items[*].name}', '{range .items[*]}{.name}{"\n"}{end}').
    #[arg(short, long, global = true, value_parser = Format::parse, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one container job of the local agent of `spillway up` (started by it, per container).
    #[cfg(feature = "up")]
    #[command(hide = true, name = "oci-run")]
    OciRun { bundle: PathBuf },
    /// Runs the embedded MQTT broker (started and watched by the coordinator: a broker fault
    /// stays in this process).
    #[cfg(feature = "serve")]
    #[command(hide = true, name = "mqtt-broker")]
    MqttBroker,
    /// Run a coordinator and a local agent in one process, on embedded defaults.
    #[cfg(feature = "up")]
    Up {
        /// Where both keep their state and the agent its data folders.
        #[arg(long, default_value = "./spillway-data")]
        dir: PathBuf,
        /// QUIC address for agents.
        #[arg(long, default_value = "0.0.0.0:7443")]
        quic: std::net::SocketAddr,
        /// HTTP address for the CLI.
        #[arg(long, default_value = "127.0.0.1:7480")]
        http: std::net::SocketAddr,
        /// Address of the embedded MQTT broker (MQTT triggers and outputs).
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt: std::net::SocketAddr,
        /// Use this MQTT broker (mqtt://HOST:PORT) instead of embedding one.
        #[arg(long, value_name = "URL")]
        mqtt_broker: Option<String>,
        /// The local agent's node name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// FDL files to apply at start.
        #[arg(long = "apply", short = 'f')]
        apply: Vec<PathBuf>,
    },
    /// Run the coordinator server.
    #[cfg(feature = "serve")]
    Serve {
        /// Coordinator configuration file (TOML).
        #[arg(long, short, default_value = "/etc/spillway/coordinator.toml")]
        config: PathBuf,
    },
    /// Store the functions of FDL files and deploy them to their nodes.
    ///
    /// spillway apply FILE… | -f FILE | -f DIR (its .yaml/.yml files) | -f - (standard input)
    Apply {
        #[arg(short = 'f', long = "file")]
        files: Vec<PathBuf>,
        /// FDL files, as with -f.
        #[arg(value_name = "FILE")]
        more: Vec<PathBuf>,
    },
    /// Delete functions (by FDL file or name) or nodes.
    Delete {
        /// FDL files whose functions to delete.
        #[arg(short = 'f', long = "file")]
        files: Vec<PathBuf>,
        /// `function NAME...` or `node NAME...`.
        args: Vec<String>,
    },
    /// List nodes, functions, jobs or a node's files; or download NODE:PATH.
    ///
    /// spillway get nodes | functions | jobs [NAME…] [-l SELECTOR] [--node N] [--function F] [--watch]
    /// spillway get events [--watch]
    /// spillway get upgrades [ID] | releases | files NODE [PREFIX]
    /// spillway get NODE:bucket/key [DEST]
    Get {
        what: String,
        /// Names (nodes, functions), job ids or their prefixes; or what the kind takes.
        #[arg(add = ArgValueCompleter::new(cli::complete::names))]
        args: Vec<String>,
        #[arg(long, add = ArgValueCompleter::new(cli::complete::nodes))]
        node: Option<String>,
        #[arg(long, add = ArgValueCompleter::new(cli::complete::functions))]
        function: Option<String>,
        /// Label selector, KEY=VALUE, KEY!=VALUE or KEY, comma-separated: nodes by their
        /// labels, functions by theirs (the FDL's `labels`), jobs by their node's.
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
        /// Most recent jobs to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// After listing nodes, jobs or events, print each change as it happens (until
        /// interrupted).
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Upload a file into a node's data folders: spillway put FILE NODE:bucket/key
    Put { file: PathBuf, dest: String },
    /// Show everything about one node, function or job.
    Describe {
        kind: String,
        #[arg(add = ArgValueCompleter::new(cli::complete::names))]
        name: String,
    },
    /// This client's version and the coordinator's.
    Version,
    /// The client config's contexts: several coordinators in one file.
    ///
    /// spillway config get-contexts | current-context | use-context NAME
    /// spillway config set-context NAME [--server URL] [--api-token T] [--ca-file F]
    /// spillway config delete-context NAME
    Config {
        #[command(subcommand)]
        command: cli::config::ConfigCommand,
    },
    /// Take nodes out of placement for maintenance: no new job is placed on them (spilled jobs,
    /// invocations, OSCAR runs, bucket events); their running and queued jobs carry on.
    Cordon {
        #[arg(add = ArgValueCompleter::new(cli::complete::nodes))]
        nodes: Vec<String>,
    },
    /// Put cordoned nodes back into placement.
    Uncordon {
        #[arg(add = ArgValueCompleter::new(cli::complete::nodes))]
        nodes: Vec<String>,
    },
    /// Print a job's log (stdout, stderr, outcome).
    Logs {
        #[arg(add = ArgValueCompleter::new(cli::complete::jobs))]
        job: String,
    },
    /// Live per-node load.
    Top {
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
    /// Run a function on the mesh with a file (or text) as its input; prints the job id.
    ///
    /// spillway invoke FUNCTION --file F | -i TEXT [--wait]
    Invoke {
        #[arg(add = ArgValueCompleter::new(cli::complete::functions))]
        function: String,
        /// The input file.
        #[arg(long, required_unless_present = "input", conflicts_with = "input")]
        file: Option<PathBuf>,
        /// The input as text on the command line (as oscar-cli's `-i`); the job's input file
        /// is named `input`.
        #[arg(short = 'i', long)]
        input: Option<String>,
        /// Run it on this node (default: the least busy node that runs it).
        #[arg(long)]
        node: Option<String>,
        /// Wait for the job and print its outputs.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Prepare a Raspberry Pi SD card (image or card) to join this mesh at first boot.
    ///
    /// Writes onto the card's FAT boot partition (no mounting): the agent for the OS's
    /// architecture, its config, a join token and a first-boot step (cloud-init's user-data, or
    /// systemd.run on cmdline.txt) that installs the agent as a systemd service.
    ///
    /// spillway flash --image raspios.img --coordinator 192.168.1.10:7443 --new-token --hostname pi-shed
    ///
    /// Here --coordinator is the QUIC address HOST:PORT the board joins (the API for
    /// --new-token comes from the client config or $SPILLWAY_COORDINATOR), and the card's token
    /// is --join-token: --token stays the API token, which never goes onto a card.
    Flash {
        /// A card image (e.g. raspios-bookworm-arm64-lite.img, decompressed). With --device,
        /// it is first copied onto the card.
        #[arg(long)]
        image: Option<PathBuf>,
        /// The card itself, e.g. /dev/sdb or /dev/mmcblk0 (whole disk; refused when mounted).
        #[arg(long)]
        device: Option<PathBuf>,
        /// Join token for the card (from `spillway token create`).
        #[arg(long, env = "SPILLWAY_JOIN_TOKEN", conflicts_with = "new_token")]
        join_token: Option<String>,
        /// Create a fresh join token through the coordinator's API.
        #[arg(long)]
        new_token: bool,
        /// Lifetime of a --new-token (the card must boot within it).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        token_ttl: Duration,
        /// A label of the board, granted by its --new-token (KEY=VALUE, repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE", requires = "new_token")]
        labels: Vec<String>,
        /// The board's cluster id, granted by its --new-token.
        #[arg(long, requires = "new_token")]
        cluster_id: Option<String>,
        /// Host name of the board (also its node name).
        #[arg(long)]
        hostname: Option<String>,
        /// Wifi network (SSID) to join; the password comes from --wifi-password-file or
        /// $SPILLWAY_WIFI_PASSWORD.
        #[arg(long, requires = "wifi_country")]
        wifi: Option<String>,
        #[arg(long)]
        wifi_password_file: Option<PathBuf>,
        /// Two-letter country code of the wifi radio, e.g. GB.
        #[arg(long)]
        wifi_country: Option<String>,
        /// aarch64 or armv7 (default: read from the boot partition).
        #[arg(long)]
        arch: Option<String>,
        /// Folder with the boards' agents: TRIPLE/spillway-agent, or a cargo target folder
        /// after cross/build.sh.
        #[arg(
            long,
            env = "SPILLWAY_BINARIES",
            default_value = "/var/cache/spillway/target"
        )]
        binaries: PathBuf,
        /// Agent config (TOML) to start from; flash adds node_name, state paths and [join].
        #[arg(long)]
        agent_config: Option<PathBuf>,
        /// Do not ask before writing to a --device.
        #[arg(long)]
        yes: bool,
    },
    /// The coordinator's state: encrypted backups, and their restore.
    #[cfg(feature = "serve")]
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Join tokens for new nodes.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Scoped API tokens: operator (apply, delete, read), invoker (run named functions),
    /// webhook (bucket notifications on /events). The admin token stays in client.toml.
    ApiToken {
        #[command(subcommand)]
        command: ApiTokenCommand,
    },
    /// The embedded MQTT broker: users for people and devices, and its CA.
    Mqtt {
        #[command(subcommand)]
        command: MqttCommand,
    },
    /// Upgrade agents over the mesh: the coordinator signs the binaries and orders each node in
    /// batches; a node keeps its previous binary and goes back to it by itself when the new one
    /// does not link again in time. The rollout stops at the first failure.
    ///
    /// spillway upgrade nodes -l zone=kitchen --binary spillway-agent-aarch64 --binary spillway-agent-armv7 --version 0.2.0 --wait
    Upgrade {
        #[command(subcommand)]
        command: UpgradeCommand,
    },
    /// The operator's labels and cluster ids of nodes.
    Label {
        #[command(subcommand)]
        command: LabelCommand,
    },
    /// Check FDL files (OSCAR/SCAR Functions Definition Language, plus Spillway's fields).
    ///
    /// Prints every problem as FILE:LINE:COL: field.path: severity: message on stderr.
    /// Exits 0 when every file is valid (warnings allowed), 1 when any has an error.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print static shell completions (bash, zsh, fish, elvish, powershell). For completions
    /// that also know node, function and job names: `source <(COMPLETE=bash spillway)`.
    Completions { shell: clap_complete::Shell },
    /// Replay a workload in the placement simulator (simulated time, seconds of real time).
    ///
    /// Workloads: fire (the OSCAR thesis' fire detection, ch. 5: fog, on-prem, Lambda),
    /// burst (1000 files at once on one node of five), video (1 video → --frames frames);
    /// seeds (the OSCAR paper's video workflow on its elastic cluster and SCAR's 1000 images on
    /// Lambda, next to the times the papers report); beyond (bursts and a diurnal day on the
    /// fire case's calibrated tiers, both policies).
    Sim {
        #[arg(value_parser = ["fire", "burst", "video", "seeds", "beyond"])]
        workload: String,
        #[arg(long, default_value = "spillway", value_parser = ["spillway", "oscar"])]
        policy: String,
        /// fire: leave Lambda out (the thesis' scenario 1).
        #[arg(long)]
        no_lambda: bool,
        /// video: frames per video.
        #[arg(long, default_value_t = 100)]
        frames: u32,
        /// burst: files at once.
        #[arg(long, default_value_t = 1000)]
        files: u32,
        /// Write queued/running jobs per tier over time to this file, SVG or PNG by its
        /// extension (fire and seeds: Spillway's run there, OSCAR's next to it as
        /// NAME-oscar.svg|png; fire: also the cost/queue curve as NAME-curve.svg|png).
        #[arg(long)]
        plot: Option<PathBuf>,
        /// fire, seeds: search for the calibration again (about a minute each on 2 cores)
        /// instead of printing the recorded one.
        #[arg(long)]
        fit: bool,
    },
}

#[cfg(feature = "serve")]
#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Back up the running coordinator's state: its CA, nodes, tokens, functions, jobs, the
    /// hand-over ledger and its blobs, in one consistent cut, encrypted under a passphrase (an
    /// age file: `age -d` opens it too). The file is read back and checked before it is kept.
    ///
    /// spillway admin backup coordinator-2026-12-07.age --passphrase-file /root/backup.pass
    Backup {
        /// Where to write the backup.
        file: PathBuf,
        /// A file whose first line is the passphrase (12 characters or more); else
        /// $SPILLWAY_BACKUP_PASSPHRASE.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Restore a backup into a coordinator's state folder, with the coordinator stopped.
    /// Nothing changes unless the whole backup decrypts and checks out. Agents keep their
    /// certificates and reconnect to the restored coordinator without joining again.
    Restore {
        backup: PathBuf,
        /// The state folder (default: state_dir of --config).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The coordinator config naming the state folder.
        #[arg(long, short, default_value = "/etc/spillway/coordinator.toml")]
        config: PathBuf,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Move what the folder holds aside first (it is kept, never deleted).
        #[arg(long)]
        force: bool,
    },
    /// The mesh CA: which CAs are trusted, and replacing the CA with a new one, online.
    ///
    /// The procedure: `rotate` (a new CA, cross-signed by the old one, signs from then on; both
    /// are trusted); wait until `status` shows no node left on the old CA (connected nodes take
    /// the new CA and renew within seconds, others when they connect); then `retire`.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[cfg(feature = "serve")]
#[derive(Debug, Subcommand)]
enum CaCommand {
    /// The trusted CAs and, during a rotation, the nodes still on the old one.
    Status,
    /// Start a rotation: make a new CA, cross-signed by the current one, that signs from now
    /// on. This CLI's client config is updated to trust both.
    Rotate,
    /// End a rotation: stop trusting the old CA. Refused while nodes still depend on it,
    /// naming them.
    Retire {
        /// Retire even though some nodes still depend on the old CA: they are cut off and must
        /// join again.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UpgradeCommand {
    /// Ship an agent release to the selected nodes (every node by default).
    Nodes(cli::upgrade::Plan),
    /// Stop ordering nodes in a rollout (nodes already ordered finish).
    Cancel { id: u64 },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a one-time join token. It admits a new node name only, unless --node names the
    /// node it is for (the way to join a node again: new SD card, lost key). Labels and cluster
    /// id decide which functions the node receives: the agent's own config only proposes them.
    Create {
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value = "")]
        description: String,
        /// The one node name this token admits (required to join again under a taken name).
        #[arg(long)]
        node: Option<String>,
        /// A label of the node that joins with it (KEY=VALUE, repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The cluster id of the node that joins with it.
        #[arg(long)]
        cluster_id: Option<String>,
    },
    /// List tokens with their ids (secrets are never shown again).
    List,
    /// Revoke unused tokens whose id starts with ID (at least 6 hex digits).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum MqttCommand {
    /// Logins of people and devices on the embedded broker (agents use their mesh identity).
    User {
        #[command(subcommand)]
        command: MqttUserCommand,
    },
    /// Print the mesh CA (PEM): MQTT clients' --cafile for the broker's TLS listener.
    Ca,
}

#[derive(Debug, Subcommand)]
enum MqttUserCommand {
    /// Add (or replace) a user; its password is printed once.
    Add {
        name: String,
        /// A topic filter the user may publish to (repeatable; `+` and `#` allowed).
        #[arg(long = "publish", value_name = "FILTER")]
        publish: Vec<String>,
        /// A topic filter the user may subscribe to (repeatable; only filters it covers).
        #[arg(long = "subscribe", value_name = "FILTER")]
        subscribe: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List users and their filters.
    List,
    /// Remove a user: its connections are closed and its subscriptions taken back.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
enum ApiTokenCommand {
    /// Create a scoped API token (printed once).
    Create {
        /// operator, invoker or webhook.
        #[arg(long)]
        scope: String,
        /// A function an invoker token may run (repeatable).
        #[arg(long = "function")]
        functions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List API tokens with their ids and scopes.
    List,
    /// Revoke API tokens whose id starts with ID (at least 6 hex digits).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum LabelCommand {
    /// Set (KEY=VALUE) or remove (KEY-) a node's labels, or its cluster id.
    Node {
        #[arg(add = ArgValueCompleter::new(cli::complete::nodes))]
        name: String,
        #[arg(value_name = "KEY=VALUE|KEY-")]
        changes: Vec<String>,
        #[arg(long, conflicts_with = "no_cluster_id")]
        cluster_id: Option<String>,
        /// Remove the node's cluster id.
        #[arg(long)]
        no_cluster_id: bool,
        /// Start from what the agent's own config proposes (shown by `describe node`).
        #[arg(long)]
        adopt_proposed: bool,
    },
}

fn main() -> ExitCode {
    restore_sigpipe();
    // `COMPLETE=bash spillway` prints the shell's hook; the hook calls back here with the words
    // typed, and this answers with candidates (names from the coordinator) and exits.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = Cli::parse();
    #[cfg(feature = "up")]
    if let Command::OciRun { bundle } = &cli.command {
        // The container's stdout/stderr are this process's: nothing else may write there.
        let code = spillway_agent::runtime::oci::shim::run(bundle);
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    spillway_plumbing::logging::init(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    #[cfg(feature = "serve")]
    if let Command::MqttBroker = &cli.command {
        return match spillway_coordinator::server::mqtt::process::child_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spillway mqtt-broker: {e}");
                ExitCode::from(1)
            }
        };
    }
    match cli.command {
        Command::Validate { files } => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            return match spillway_cli::validate::validate_files(&files, &mut out, &mut err) {
                Ok(summary) if summary.invalid == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("spillway: cannot write the report: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "spillway",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Sim {
            workload,
            policy,
            no_lambda,
            frames,
            files,
            plot,
            fit,
        } => {
            let plot = plot.as_deref();
            if workload == "seeds" {
                return finish(simulate_seeds(fit, plot));
            }
            if workload == "beyond" {
                println!(
                    "{}",
                    spillway_sim::compare::table(&spillway_sim::compare::beyond())
                );
                return ExitCode::SUCCESS;
            }
            if workload == "fire" && cli.output.is_table() {
                return finish(simulate_fire(!no_lambda, fit, plot));
            }
            return finish(simulate(
                &workload, &policy, !no_lambda, frames, files, plot, cli.output,
            ));
        }
        _ => {}
    }
    #[cfg(feature = "serve")]
    if let Command::Serve { config } = &cli.command {
        // Settings from the environment (SPILLWAY_HTTP_LISTEN, …) over the file: containers.
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        match CoordinatorConfig::load_with_env(config, vars) {
            Ok(c) => return finish(runtime().and_then(|rt| rt.block_on(serve(c)))),
            Err(e) => {
                eprintln!("spillway: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    finish(runtime().and_then(|rt| rt.block_on(client_command(cli))))
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spillway: {}", spillway_plumbing::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(feature = "serve")]
async fn serve(config: CoordinatorConfig) -> anyhow::Result<()> {
    use spillway_cli::client::{install_client_config, write_private};
    let coordinator = spillway_coordinator::server::Coordinator::start(config).await?;
    let text = coordinator.client_config();
    let file = coordinator.state.config.state_dir.join("client.toml");
    write_private(&file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    // A user's own config is left alone here (`spillway up` adds a context to it instead).
    let installed = match install_client_config(&text, None) {
        Some(spillway_cli::client::Installed::Wrote(p)) => format!(" and {}", p.display()),
        _ => String::new(),
    };
    println!(
        "spillway coordinator: agents on quic://{}, CLI on {}; client config in {}{}",
        coordinator.quic_addr(),
        coordinator.state.api_url(),
        file.display(),
        installed
    );
    use spillway_plumbing::systemd as service;
    let stop = spillway_plumbing::shutdown_signal();
    service::ready(&format!("agents on quic://{}", coordinator.quic_addr()));
    let watchdog = service::spawn_watchdog(
        coordinator.state.heartbeat.clone(),
        std::time::Duration::from_secs(5),
    );
    coordinator
        .run(async {
            stop.await;
            service::stopping();
        })
        .await;
    if let Some(w) = watchdog {
        w.abort();
    }
    Ok(())
}

async fn client_command(cli: Cli) -> anyhow::Result<()> {
    let format = cli.output;
    let client = || {
        Client::resolve(
            cli.coordinator.clone(),
            cli.token.clone(),
            cli.client_config.clone(),
            cli.context.clone(),
        )
    };
    match cli.command {
        #[cfg(feature = "up")]
        Command::Up {
            dir,
            quic,
            http,
            mqtt,
            mqtt_broker,
            node,
            apply,
        } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let dir = std::fs::canonicalize(&dir)?;
            up::up(
                up::UpOptions {
                    dir,
                    quic,
                    http,
                    mqtt: match mqtt_broker {
                        Some(url) => up::MqttChoice::External(url),
                        None => up::MqttChoice::Embedded(mqtt),
                    },
                    node,
                    apply,
                },
                spillway_plumbing::shutdown_signal(),
            )
            .await
        }
        Command::Config { command } => cli::config::run(command, cli.client_config.clone(), format),
        Command::Apply { mut files, more } => {
            files.extend(more);
            cli::apply(&client()?, &files).await
        }
        Command::Delete { files, args } => {
            let c = client()?;
            let mut names = Vec::new();
            for f in &files {
                names.extend(cli::function_names(f)?);
            }
            match args.split_first() {
                Some((kind, rest)) if kind.starts_with("function") => {
                    names.extend(rest.iter().cloned())
                }
                Some((kind, rest)) if kind.starts_with("node") => {
                    for n in rest {
                        cli::delete_node(&c, n).await?;
                    }
                }
                Some((other, _)) => anyhow::bail!(
                    "cannot delete `{other}`: use `delete -f FILE`, `delete function NAME` or `delete node NAME`"
                ),
                None if files.is_empty() => anyhow::bail!(
                    "nothing to delete: use `delete -f FILE`, `delete function NAME` or `delete node NAME`"
                ),
                None => {}
            }
            cli::delete_functions(&c, &names).await
        }
        Command::Get {
            what,
            args,
            node,
            function,
            selector,
            limit,
            watch,
        } => {
            let c = client()?;
            if watch
                && !matches!(
                    what.as_str(),
                    "nodes" | "node" | "no" | "jobs" | "job" | "events" | "event" | "ev"
                )
            {
                anyhow::bail!("--watch follows nodes, jobs or events, not {what}");
            }
            // Where the feed is now, before listing: nothing between the list and the watch is lost.
            let kind = match what.as_str() {
                "nodes" | "node" | "no" => Some(spillway_api::events::FeedKind::Node),
                "jobs" | "job" => Some(spillway_api::events::FeedKind::Job),
                _ => None,
            };
            let from = if watch {
                c.get::<Vec<spillway_api::events::FeedEvent>>("/v1/events")
                    .await?
                    .last()
                    .map_or(0, |e| e.id)
            } else {
                0
            };
            let selector = selector
                .map(|s| s.parse::<spillway_api::selector::Selector>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("-l: {e}"))?;
            let listed = |kind: &str| -> anyhow::Result<()> {
                if selector.is_some() && !matches!(kind, "nodes" | "functions" | "jobs") {
                    anyhow::bail!("-l selects nodes, functions or jobs, not {kind}");
                }
                Ok(())
            };
            let listed_now = match what.as_str() {
                "events" | "event" | "ev" => {
                    listed("events")?;
                    let last = cli::watch::list(&c, format, None).await?;
                    if watch {
                        return cli::watch::follow(&c, format, None, last).await;
                    }
                    Ok(())
                }
                "nodes" | "node" | "no" => {
                    cli::get_nodes(&c, format, &args, selector.as_ref()).await
                }
                "functions" | "function" | "fn" => {
                    cli::get_functions(&c, format, &args, selector.as_ref()).await
                }
                "upgrades" | "upgrade" => {
                    listed("upgrades")?;
                    cli::upgrade::get(&c, format, args.first().map(String::as_str)).await
                }
                "releases" | "release" => {
                    listed("releases")?;
                    cli::upgrade::get_releases(&c, format).await
                }
                "jobs" | "job" => {
                    let filter = cli::JobFilter {
                        node: node.as_deref(),
                        function: function.as_deref(),
                        selector: selector.as_ref(),
                        limit,
                    };
                    cli::get_jobs(&c, format, &args, filter).await
                }
                "files" => {
                    listed("files")?;
                    let n = args
                        .first()
                        .context("which node? spillway get files NODE [PREFIX]")?;
                    cli::get_files(&c, format, n, args.get(1).map_or("", String::as_str)).await
                }
                spec if spec.contains(':') => {
                    listed("a download")?;
                    cli::download(&c, spec, args.first().map(std::path::Path::new)).await
                }
                other => anyhow::bail!(
                    "cannot get `{other}`: use nodes, functions, jobs, events, upgrades [ID], releases, files NODE, or NODE:PATH to download"
                ),
            };
            listed_now?;
            if watch {
                cli::watch::follow(&c, format, kind, from).await?;
            }
            Ok(())
        }
        Command::Put { file, dest } => cli::upload(&client()?, &file, &dest).await,
        Command::Describe { kind, name } => cli::describe(&client()?, &kind, &name, format).await,
        Command::Version => cli::version(&client()?, format).await,
        Command::Cordon { nodes } => cli::cordon(&client()?, &nodes, true).await,
        Command::Uncordon { nodes } => cli::cordon(&client()?, &nodes, false).await,
        Command::Logs { job } => cli::logs(&client()?, &job).await,
        Command::Top { interval, once } => cli::top(&client()?, interval, once).await,
        Command::Flash {
            image,
            device,
            join_token,
            new_token,
            token_ttl,
            labels,
            cluster_id,
            hostname,
            wifi,
            wifi_password_file,
            wifi_country,
            arch,
            binaries,
            agent_config,
            yes,
        } => {
            let wifi = match wifi {
                None => None,
                Some(ssid) => {
                    let password = match wifi_password_file {
                        Some(f) => std::fs::read_to_string(&f)
                            .with_context(|| format!("cannot read {}", f.display()))?
                            .trim_end_matches(['\n', '\r'])
                            .to_owned(),
                        None => std::env::var("SPILLWAY_WIFI_PASSWORD").map_err(|_| {
                            anyhow::anyhow!("--wifi needs a password: --wifi-password-file FILE or $SPILLWAY_WIFI_PASSWORD")
                        })?,
                    };
                    Some(spillway_cli::flash::Wifi {
                        ssid,
                        password,
                        country: wifi_country.unwrap_or_default(),
                    })
                }
            };
            if join_token.is_none() && !new_token {
                anyhow::bail!(
                    "the card needs a join token: --join-token T (from `spillway token create`) or --new-token"
                );
            }
            // For flash, --coordinator is where the board joins (QUIC); the API is found as usual.
            let coordinator = match cli.coordinator.clone() {
                Some(addr) if !addr.contains("://") => addr,
                _ => anyhow::bail!(
                    "spillway flash needs --coordinator HOST:PORT: the coordinator's QUIC address as the board will reach it (port 7443 by default)"
                ),
            };
            let api = || {
                let url = std::env::var("SPILLWAY_COORDINATOR")
                    .ok()
                    .filter(|u| u.contains("://"));
                Client::resolve(
                    url,
                    cli.token.clone(),
                    cli.client_config.clone(),
                    cli.context.clone(),
                )
                .map_err(Into::into)
            };
            let agent_config = match agent_config {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let arch = arch
                .map(|a| spillway_cli::flash::Arch::parse(&a))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--arch: {e}"))?;
            spillway_cli::commands::flash::run(
                api,
                spillway_cli::commands::flash::FlashArgs {
                    image,
                    device,
                    new_token: new_token.then_some(token_ttl),
                    labels,
                    cluster_id,
                    yes,
                    options: spillway_cli::flash::FlashOptions {
                        coordinator,
                        token: join_token.unwrap_or_default(),
                        hostname,
                        wifi,
                        binaries,
                        arch,
                        agent_config,
                    },
                },
            )
            .await
        }
        Command::Invoke {
            function,
            file,
            input,
            node,
            wait,
            timeout,
        } => {
            let input = match (file, input) {
                (Some(path), _) => cli::Input::File(path),
                (None, Some(text)) => cli::Input::Text(text),
                (None, None) => anyhow::bail!("give the input: --file F or -i TEXT"),
            };
            cli::invoke(
                &client()?,
                &function,
                input,
                node.as_deref(),
                wait.then_some(timeout),
                format,
            )
            .await
        }
        #[cfg(feature = "serve")]
        Command::Admin { command } => match command {
            AdminCommand::Backup {
                file,
                passphrase_file,
            } => cli::admin::backup(&client()?, &file, passphrase_file.as_deref()).await,
            AdminCommand::Restore {
                backup,
                state_dir,
                config,
                passphrase_file,
                force,
            } => {
                let state_dir = match state_dir {
                    Some(d) => d,
                    None => {
                        CoordinatorConfig::load(&config)
                            .map_err(|e| {
                                anyhow::anyhow!("{e} (or name the folder: --state-dir DIR)")
                            })?
                            .state_dir
                    }
                };
                tokio::task::spawn_blocking(move || {
                    cli::admin::restore(&backup, &state_dir, passphrase_file.as_deref(), force)
                })
                .await?
            }
            AdminCommand::Ca { command } => match command {
                CaCommand::Status => cli::ca::status(&client()?, format).await,
                CaCommand::Rotate => cli::ca::rotate(&client()?, format).await,
                CaCommand::Retire { force } => cli::ca::retire(&client()?, force, format).await,
            },
        },
        Command::Token { command } => match command {
            TokenCommand::Create {
                ttl,
                description,
                node,
                labels,
                cluster_id,
            } => {
                let new = membership::NewToken {
                    ttl,
                    description,
                    node,
                    labels,
                    cluster_id,
                };
                membership::create_token(&client()?, new, format).await
            }
            TokenCommand::List => membership::list_tokens(&client()?, format).await,
            TokenCommand::Revoke { id } => membership::revoke_token(&client()?, &id).await,
        },
        Command::ApiToken { command } => match command {
            ApiTokenCommand::Create {
                scope,
                functions,
                description,
            } => {
                membership::create_api_token(&client()?, scope, functions, description, format)
                    .await
            }
            ApiTokenCommand::List => membership::list_api_tokens(&client()?, format).await,
            ApiTokenCommand::Revoke { id } => membership::revoke_api_token(&client()?, &id).await,
        },
        Command::Mqtt { command } => match command {
            MqttCommand::User { command } => match command {
                MqttUserCommand::Add {
                    name,
                    publish,
                    subscribe,
                    description,
                } => {
                    let req = spillway_api::MqttUserRequest {
                        name,
                        publish,
                        subscribe,
                        description,
                    };
                    membership::add_mqtt_user(&client()?, req, format).await
                }
                MqttUserCommand::List => membership::list_mqtt_users(&client()?, format).await,
                MqttUserCommand::Remove { name } => {
                    membership::remove_mqtt_user(&client()?, &name).await
                }
            },
            MqttCommand::Ca => {
                let pem = client()?.get_bytes("/v1/mqtt/ca").await?;
                print!("{}", String::from_utf8_lossy(&pem));
                Ok(())
            }
        },
        Command::Upgrade { command } => match command {
            UpgradeCommand::Nodes(plan) => cli::upgrade::nodes(&client()?, plan).await,
            UpgradeCommand::Cancel { id } => cli::upgrade::cancel(&client()?, id).await,
        },
        Command::Label {
            command:
                LabelCommand::Node {
                    name,
                    changes,
                    cluster_id,
                    no_cluster_id,
                    adopt_proposed,
                },
        } => {
            membership::label_node(
                &client()?,
                &name,
                &changes,
                cluster_id,
                no_cluster_id,
                adopt_proposed,
                format,
            )
            .await
        }
        #[cfg(feature = "serve")]
        Command::Serve { .. } | Command::MqttBroker => Ok(()),
        #[cfg(feature = "up")]
        Command::OciRun { .. } => Ok(()),
        Command::Validate { .. } | Command::Completions { .. } | Command::Sim { .. } => Ok(()),
    }
}

fn simulate(
    workload: &str,
    policy: &str,
    lambda: bool,
    frames: u32,
    files: u32,
    plot: Option<&std::path::Path>,
    format: Format,
) -> anyhow::Result<()> {
    use spillway_sim::Workload;
    let w = match workload {
        "fire" => Workload::Fire { lambda },
        "burst" => Workload::Burst { files },
        _ => Workload::Video { frames },
    };
    let report = w.run(policy);
    match format {
        Format::Table | Format::Wide | Format::Name => println!("{}", report.table()),
        Format::Json | Format::Yaml | Format::JsonPath => {
            format.print_data(&report)?;
        }
    }
    if let Some(path) = plot {
        report
            .plot(path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

/// `spillway sim fire`: the calibration against the thesis (recorded, or searched again with
/// `--fit`), both policies on the thesis' set-up, the fair comparison and the cost curve.
fn simulate_fire(lambda: bool, fit: bool, plot: Option<&std::path::Path>) -> anyhow::Result<()> {
    use spillway_sim::{calibrate, compare};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fits = calibrate::fits(fit.then_some(threads));
    let summary = compare::fire_summary(&fits, lambda);
    println!("{}", summary.text);
    if let Some(path) = plot {
        let oscar_path = spillway_sim::canvas::beside(path, "-oscar");
        let curve_path = spillway_sim::canvas::beside(path, "-curve");
        let written = [
            (path, summary.spillway.plot(path)),
            (oscar_path.as_path(), summary.oscar.plot(&oscar_path)),
            (
                curve_path.as_path(),
                compare::plot_curve(&summary.curve, &summary.curve_oscar, &curve_path),
            ),
        ];
        for (at, result) in written {
            result.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", at.display()))?;
        }
        eprintln!(
            "plots written to {} (Spillway), {} (OSCAR) and {} (the cost/queue curve)",
            path.display(),
            oscar_path.display(),
            curve_path.display()
        );
    }
    Ok(())
}

/// `spillway sim seeds`: the seeds' other workloads next to what they reported, with the
/// recorded fit or (`--fit`) one searched again.
fn simulate_seeds(fit: bool, plot: Option<&std::path::Path>) -> anyhow::Result<()> {
    use spillway_sim::seeds;
    let mut video = seeds::VIDEO_CALIBRATED;
    if fit {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let found = seeds::search_video(threads);
        println!(
            "video fit searched again over {} points: {:?}, worst 10/1000-frame error {:.1}%; the \
             100-frame workload takes at most {:.1} min anywhere on the grid (paper: 19 min)",
            found.tried,
            found.fit,
            found.score * 100.0,
            found.longest_100_ms as f64 / 6e4
        );
        video = found.fit;
    }
    print!("{}", seeds::summary(video));
    if let Some(path) = plot {
        // The video timeline under each policy: the cluster's nodes filling and emptying.
        let oscar_path = spillway_sim::canvas::beside(path, "-oscar");
        for (at, policy) in [(path, "spillway"), (oscar_path.as_path(), "oscar")] {
            seeds::run_video(policy, video)
                .plot(at)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", at.display()))?;
        }
        eprintln!(
            "plots written to {} (Spillway) and {} (OSCAR)",
            path.display(),
            oscar_path.display()
        );
    }
    Ok(())
}

/// `spillway get nodes | head` should end quietly, as other Unix tools do, not panic.
fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is always valid.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
