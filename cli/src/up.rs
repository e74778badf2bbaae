//! `spillway up`: a coordinator and a local agent in one process, on embedded defaults, for a
//! first try and for single-box deployments. The agent joins over real QUIC on loopback, exactly
//! as a remote one would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use spillway_agent::mesh;
use spillway_agent::{Agent, AgentConfig};
use spillway_link::membership::Membership;

use crate::client::{Installed, install_client_config};
use crate::contexts::UP_CONTEXT;
use spillway_coordinator::config::CoordinatorConfig;
use spillway_coordinator::server::Coordinator;

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub quic: SocketAddr,
    pub http: SocketAddr,
    pub mqtt: MqttChoice,
    pub node: Option<String>,
    pub apply: Vec<PathBuf>,
}

/// The MQTT broker of `spillway up`: embedded (at this address), or someone else's.
#[derive(Debug, Clone)]
pub enum MqttChoice {
    Embedded(SocketAddr),
    External(String),
}

fn agent_config(
    dir: &Path,
    node: Option<&str>,
    broker: &str,
    mesh_identity: bool,
) -> anyhow::Result<AgentConfig> {
    let mut text = String::new();
    if let Some(n) = node {
        text.push_str(&format!("node_name = \"{n}\"\n"));
    }
    text.push_str(&format!(
        "data_root = \"{}\"\nstate_dir = \"{}\"\n[mqtt]\nbroker = \"{broker}\"\nmesh_identity = {mesh_identity}\n",
        dir.join("data").display(),
        dir.join("agent").display()
    ));
    AgentConfig::from_toml(&text, dir).map_err(|e| anyhow::anyhow!("agent settings: {e}"))
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

pub async fn up(
    opts: UpOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = CoordinatorConfig {
        state_dir: opts.dir.join("coordinator"),
        quic_listen: opts.quic,
        http_listen: opts.http,
        // The first try on one box asks for plain HTTP, on loopback only; elsewhere HTTPS.
        http_tls: if opts.http.ip().is_loopback() {
            spillway_coordinator::config::HttpTls::Off
        } else {
            spillway_coordinator::config::HttpTls::Mesh { names: Vec::new() }
        },
        mqtt_listen: match &opts.mqtt {
            MqttChoice::Embedded(addr) => Some(*addr),
            MqttChoice::External(_) => None,
        },
        mqtt: match &opts.mqtt {
            // A first try on one box: anonymous clients on loopback (the only place they may
            // be), the local agent with its mesh identity on a loopback TLS port of its own.
            MqttChoice::Embedded(addr) => spillway_coordinator::config::MqttSettings {
                allow_anonymous: addr.ip().is_loopback(),
                tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                ..Default::default()
            },
            MqttChoice::External(_) => Default::default(),
        },
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::start(config)
        .await
        .context("the coordinator could not start")?;
    let client_text = coordinator.client_config();
    let client_file = opts.dir.join("client.toml");
    crate::client::write_private(&client_file, &client_text)
        .with_context(|| format!("cannot write {}", client_file.display()))?;
    let installed = install_client_config(&client_text, Some(UP_CONTEXT));
    let quic = coordinator.quic_addr();
    let loopback = SocketAddr::from(([127, 0, 0, 1], quic.port()));
    let (broker, agent_broker) = match (&opts.mqtt, coordinator.state.mqtts_addr) {
        (MqttChoice::External(url), _) => (url.clone(), url.clone()),
        (MqttChoice::Embedded(addr), Some(tls)) => (
            format!(
                "mqtt://{}",
                loopback_if_unspecified(coordinator.state.mqtt_addr.unwrap_or(*addr))
            ),
            format!("mqtts://127.0.0.1:{}", tls.port()),
        ),
        (MqttChoice::Embedded(addr), None) => (format!("mqtt://{addr}"), format!("mqtt://{addr}")),
    };
    let mesh_identity = matches!(opts.mqtt, MqttChoice::Embedded(_));
    let agent_config = agent_config(
        &opts.dir,
        opts.node.as_deref(),
        &agent_broker,
        mesh_identity,
    )?;
    let state = coordinator.state.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let coordinator_task = tokio::spawn({
        let mut rx = stop_rx.clone();
        coordinator.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    });
    if Membership::load(&agent_config.state_dir).is_none() {
        // Its own agent: what its config proposes is what the operator of `up` asked for.
        let grant = spillway_api::tokens::TokenGrant {
            node: None,
            labels: Some(agent_config.labels.clone()),
            cluster_id: agent_config.cluster_id.clone(),
        };
        let (mut tokens, _) = state
            .create_tokens(1, 60, "spillway up: local agent", &grant)
            .map_err(|e| anyhow::anyhow!(e))?;
        let token = tokens.pop().unwrap_or_default();
        mesh::join(
            &agent_config.state_dir,
            &agent_config.node_name,
            &loopback.to_string(),
            &token,
        )
        .await
        .context("the local agent could not join")?;
    }
    for file in &opts.apply {
        apply_local(&state, file)?;
    }
    let membership = Membership::load(&agent_config.state_dir)
        .context("the local agent has no identity after joining")?;
    // `spillway` is the local agent's container shim (its hidden `oci-run`).
    let shim = std::env::current_exe().context("cannot find this program's own binary")?;
    let agent =
        Agent::start(agent_config.clone(), &shim).context("the local agent could not start")?;
    let (handle, capacity) = (agent.mesh_handle(), agent.capacity());
    let link = tokio::spawn({
        let mut rx = stop_rx.clone();
        mesh::session::run(membership, handle, capacity, None, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    });
    println!(
        "spillway up: coordinator on quic://{quic} (agents) and {} (CLI); local agent `{}` with data in {}",
        state.api_url(),
        agent_config.node_name,
        agent_config.data_root.display()
    );
    match installed {
        Some(Installed::Wrote(p)) => println!(
            "CLI configured in {}: try `spillway get nodes`",
            p.display()
        ),
        Some(Installed::AddedContext { path, previous }) => println!(
            "CLI: added the context `{UP_CONTEXT}` to your {} and made it current; back to yours: spillway config use-context {previous}",
            path.display()
        ),
        Some(Installed::LeftAlone(path, why)) => println!(
            "CLI: export SPILLWAY_CONFIG={} (your {} was left as it is: {why})",
            client_file.display(),
            path.display()
        ),
        None => println!("CLI: export SPILLWAY_CONFIG={}", client_file.display()),
    }
    println!("MQTT: {broker} (functions' `triggers: [{{mqtt: …}}]` and MQTT outputs)");
    if mesh_identity {
        if state.config.mqtt.allow_anonymous {
            println!(
                "MQTT is open to anyone on this machine (loopback, for a first try); for other machines: spillway mqtt user add NAME --publish 'TOPIC' --subscribe 'TOPIC'"
            );
        } else {
            println!(
                "MQTT clients need credentials: spillway mqtt user add NAME --publish 'TOPIC' --subscribe 'TOPIC'"
            );
        }
    }
    println!(
        "Add a node: spillway token create, then on it: spillway-agent join --coordinator HOST:{} --token T",
        quic.port()
    );
    let result = agent.run(shutdown).await.context("the local agent stopped");
    let _ = stop_tx.send(true);
    let _ = link.await;
    let _ = coordinator_task.await;
    result
}

/// Applies an FDL file inside the coordinator's own process (`spillway up --apply`).
pub fn apply_local(state: &spillway_coordinator::server::State, path: &Path) -> anyhow::Result<()> {
    let req = crate::commands::apply_request(path)?;
    // As `spillway apply` does: checked against the coordinator's config, deployed if changed.
    let outcome = state.apply_functions(&req)?;
    for (name, verdict) in outcome.functions {
        println!("function/{name} {verdict}");
    }
    Ok(())
}
