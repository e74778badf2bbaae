//! `spillway upgrade nodes | cancel` and `spillway get upgrades`: shipping agent binaries
//! through the coordinator, in batches, and watching them land.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use spillway_api::upgrades::{NodePhase, Release, Rollout, RolloutRequest, RolloutState};

use super::output::{Format, print, since};
use crate::client::Client;

/// `spillway upgrade nodes`: what to ship where, and how.
#[derive(Debug, clap::Args)]
pub struct Plan {
    /// Label selector: KEY=VALUE, KEY!=VALUE or KEY, comma-separated.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// An agent binary (static, for the architecture its ELF header names); one per
    /// architecture, uploaded as release --version.
    #[arg(long = "binary", value_name = "FILE")]
    pub binaries: Vec<PathBuf>,
    /// The release to roll out (uploaded now with --binary, or earlier).
    #[arg(long)]
    pub version: Option<String>,
    /// Nodes upgraded at once; the next batch starts when these are done.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// How long a new binary has to link again before the node rolls back by itself.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub ready_within: Duration,
    /// How long a node has from its order to be done before the rollout stops.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Follow the rollout to its end; fail when it stops.
    #[arg(long)]
    pub wait: bool,
}

/// Uploads the binaries (if any) as a release, starts its rollout and, with `--wait`, follows
/// it to the end: an error when it stops.
pub async fn nodes(client: &Client, plan: Plan) -> anyhow::Result<()> {
    let mut binaries = Vec::new();
    for path in &plan.binaries {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        binaries.push((path, bytes));
    }
    let version = match (&plan.version, binaries.first()) {
        (Some(v), _) => v.clone(),
        // Named by its bytes, so the same upload twice is the same release.
        (None, Some((_, bytes))) => format!("sha-{}", &hex::encode(Sha256::digest(bytes))[..12]),
        (None, None) => {
            anyhow::bail!("upgrade to what? --binary FILE (one per architecture) or --version V")
        }
    };
    for (path, bytes) in binaries {
        let size = bytes.len();
        let sha = hex::encode(Sha256::digest(&bytes));
        let release: Release = client
            .send_bytes(
                reqwest_tls::Method::PUT,
                &format!("/v1/releases/{}", crate::client::encode_path(&version)),
                bytes,
            )
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
        let arch = release
            .binaries
            .iter()
            .find(|b| b.sha256 == sha)
            .map_or("?", |b| b.arch.as_str());
        println!(
            "release {version}: {} for {arch} ({:.1} MiB, sha256 {}), signed by the mesh CA",
            path.display(),
            size as f64 / 1_048_576.0,
            &sha[..12]
        );
    }
    let request = RolloutRequest {
        version,
        selector: plan.selector,
        batch: plan.batch,
        ready_within_ms: plan.ready_within.as_millis().try_into().unwrap_or(u64::MAX),
        timeout_ms: plan.timeout.as_millis().try_into().unwrap_or(u64::MAX),
    };
    let rollout: Rollout = client.post("/v1/upgrades", &request).await?;
    println!(
        "rollout {} of {}: {} nodes, {} at a time (watch it with `spillway get upgrades {}`)",
        rollout.id,
        rollout.request.version,
        rollout.nodes.len(),
        rollout.request.batch,
        rollout.id
    );
    if plan.wait {
        follow(client, rollout.id).await?;
    }
    Ok(())
}

/// Prints each node's changes until the rollout is over and nothing is in flight.
async fn follow(client: &Client, id: u64) -> anyhow::Result<()> {
    let mut seen: Vec<(String, NodePhase)> = Vec::new();
    loop {
        let all: Vec<Rollout> = client.get("/v1/upgrades").await?;
        let r = all
            .into_iter()
            .find(|r| r.id == id)
            .with_context(|| format!("rollout {id} is gone"))?;
        for n in &r.nodes {
            if !seen
                .iter()
                .any(|(name, p)| *name == n.node && *p == n.phase)
            {
                seen.retain(|(name, _)| *name != n.node);
                seen.push((n.node.clone(), n.phase));
                if n.phase != NodePhase::Waiting {
                    let detail = if n.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", n.detail)
                    };
                    println!("{}: {}{detail}", n.node, phase_name(n.phase));
                }
            }
        }
        if !r.is_running() && !r.nodes.iter().any(|n| n.phase.in_flight()) {
            return match r.state {
                RolloutState::Succeeded => {
                    println!(
                        "rollout {id}: all {} nodes run {}",
                        r.nodes.len(),
                        r.request.version
                    );
                    Ok(())
                }
                RolloutState::Stopped { reason } => {
                    anyhow::bail!("rollout {id} stopped: {reason}")
                }
                RolloutState::Cancelled => anyhow::bail!("rollout {id} was cancelled"),
                RolloutState::Running => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn cancel(client: &Client, id: u64) -> anyhow::Result<()> {
    let r: Rollout = client
        .post(&format!("/v1/upgrades/{id}/cancel"), &serde_json::json!({}))
        .await?;
    println!(
        "rollout {id} cancelled: {} nodes in flight finish, {} are not ordered",
        r.nodes.iter().filter(|n| n.phase.in_flight()).count(),
        r.count(NodePhase::Waiting)
    );
    Ok(())
}

fn phase_name(p: NodePhase) -> &'static str {
    match p {
        NodePhase::Waiting => "Waiting",
        NodePhase::Ordered => "Ordered",
        NodePhase::Restarting => "Restarting",
        NodePhase::Done => "Done",
        NodePhase::Failed => "Failed",
        NodePhase::RolledBack => "RolledBack",
    }
}

fn state_name(s: &RolloutState) -> &'static str {
    match s {
        RolloutState::Running => "Running",
        RolloutState::Succeeded => "Succeeded",
        RolloutState::Stopped { .. } => "Stopped",
        RolloutState::Cancelled => "Cancelled",
    }
}

/// `spillway get upgrades [ID]`: every rollout, or one rollout's nodes.
pub async fn get(client: &Client, format: Format, id: Option<&str>) -> anyhow::Result<()> {
    let all: Vec<Rollout> = client.get("/v1/upgrades").await?;
    if let Some(id) = id {
        let id: u64 = id
            .parse()
            .context("a rollout id is a number (see `spillway get upgrades`)")?;
        let r = all
            .into_iter()
            .find(|r| r.id == id)
            .with_context(|| format!("no rollout {id}"))?;
        return print(
            format,
            &r,
            &["NODE", "ARCH", "FROM", "PHASE", "SINCE", "DETAIL"],
            || {
                r.nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.node.clone(),
                            n.arch.clone(),
                            n.from_version.clone(),
                            phase_name(n.phase).into(),
                            since(n.since_ms),
                            n.detail.clone(),
                        ]
                    })
                    .collect()
            },
        );
    }
    print(
        format,
        &all,
        &[
            "ID",
            "VERSION",
            "STATE",
            "NODES",
            "DONE",
            "IN FLIGHT",
            "FAILED",
            "WAITING",
            "AGE",
        ],
        || {
            all.iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.request.version.clone(),
                        state_name(&r.state).into(),
                        r.nodes.len().to_string(),
                        r.count(NodePhase::Done).to_string(),
                        r.nodes
                            .iter()
                            .filter(|n| n.phase.in_flight())
                            .count()
                            .to_string(),
                        r.nodes
                            .iter()
                            .filter(|n| n.phase.failed())
                            .count()
                            .to_string(),
                        r.count(NodePhase::Waiting).to_string(),
                        since(r.created_at_ms),
                    ]
                })
                .collect()
        },
    )
}

/// `spillway get releases`: the agent releases the coordinator keeps (the five most recently
/// uploaded, and any a running rollout ships).
pub async fn get_releases(client: &Client, format: Format) -> anyhow::Result<()> {
    let mut all: Vec<Release> = client.get("/v1/releases").await?;
    let uploaded = |r: &Release| {
        r.binaries
            .iter()
            .map(|b| b.uploaded_at_ms)
            .max()
            .unwrap_or(0)
    };
    all.sort_by_key(|r| std::cmp::Reverse(uploaded(r)));
    print(format, &all, &["VERSION", "BINARIES", "UPLOADED"], || {
        all.iter()
            .map(|r| {
                let binaries: Vec<String> = r
                    .binaries
                    .iter()
                    .map(|b| {
                        format!(
                            "{} {:.1} MiB {}",
                            b.arch,
                            b.size as f64 / 1_048_576.0,
                            &b.sha256[..12.min(b.sha256.len())]
                        )
                    })
                    .collect();
                vec![r.version.clone(), binaries.join(", "), since(uploaded(r))]
            })
            .collect()
    })
}
