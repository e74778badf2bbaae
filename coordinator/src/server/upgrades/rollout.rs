//! A rollout's decisions, without I/O: which nodes it covers, which to order next (in batches,
//! the next one only when the last is done), and what each report or timeout does to it (the
//! first failure stops it). The caller persists the rollout after every change, before it acts.

use std::collections::BTreeMap;

use spillway_api::selector::Selector;
use spillway_api::upgrades::{
    NodePhase, NodeUpgrade, Release, Rollout, RolloutRequest, RolloutState,
};
use spillway_proto::wire::UpgradeStatus;

/// A node a rollout may cover, as the store knows it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub arch: String,
    pub version: String,
    pub labels: BTreeMap<String, String>,
}

/// The largest batch and node count, and the bounds on the deadlines a request may ask for.
pub const MAX_BATCH: u32 = 10_000;
pub const READY_WITHIN_MS: std::ops::RangeInclusive<u64> = 5_000..=3_600_000;
pub const MAX_TIMEOUT_MS: u64 = 24 * 3_600_000;

/// A new rollout of `release` over the nodes `request` selects; refused (with what to do)
/// when it would cover no node or a node whose architecture the release lacks.
pub fn plan(
    id: u64,
    request: &RolloutRequest,
    release: &Release,
    nodes: &[Candidate],
    now_ms: u64,
) -> Result<Rollout, String> {
    if request.batch == 0 || request.batch > MAX_BATCH {
        return Err(format!("the batch size must be 1 to {MAX_BATCH}"));
    }
    if !READY_WITHIN_MS.contains(&request.ready_within_ms) {
        return Err("--ready-within must be between 5s and 1h".into());
    }
    if request.timeout_ms <= request.ready_within_ms || request.timeout_ms > MAX_TIMEOUT_MS {
        return Err("--timeout must be longer than --ready-within and at most 24h".into());
    }
    let selector: Selector = request.selector.as_deref().unwrap_or("").parse()?;
    let mut chosen: Vec<&Candidate> = nodes
        .iter()
        .filter(|n| selector.matches(&n.labels))
        .collect();
    if chosen.is_empty() {
        return Err(match &request.selector {
            Some(s) => format!("no node matches the selector `{s}`"),
            None => "the mesh has no nodes".into(),
        });
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lacking: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in &chosen {
        if !release.binaries.iter().any(|b| b.arch == n.arch) {
            lacking.entry(n.arch.as_str()).or_default().push(&n.name);
        }
    }
    if let Some((arch, names)) = lacking.iter().next() {
        let arch = if arch.is_empty() {
            "an unknown architecture"
        } else {
            arch
        };
        return Err(format!(
            "release {} has no binary for {arch} (nodes {}): upload one with `spillway upgrade nodes --version {} --binary FILE`, or leave those nodes out with -l",
            release.version,
            names.join(", "),
            release.version
        ));
    }
    Ok(Rollout {
        id,
        request: request.clone(),
        created_at_ms: now_ms,
        finished_at_ms: None,
        state: RolloutState::Running,
        nodes: chosen
            .into_iter()
            .map(|n| NodeUpgrade {
                node: n.name.clone(),
                arch: n.arch.clone(),
                from_version: n.version.clone(),
                phase: NodePhase::Waiting,
                since_ms: now_ms,
                detail: String::new(),
            })
            .collect(),
    })
}

/// Orders the next batch when nothing is in flight; finishes the rollout when every node is
/// done. The nodes newly ordered.
pub fn next_orders(r: &mut Rollout, now_ms: u64) -> Vec<String> {
    if !r.is_running() || r.nodes.iter().any(|n| n.phase.in_flight()) {
        return Vec::new();
    }
    if r.nodes.iter().all(|n| n.phase == NodePhase::Done) {
        r.state = RolloutState::Succeeded;
        r.finished_at_ms = Some(now_ms);
        return Vec::new();
    }
    let batch = usize::try_from(r.request.batch).unwrap_or(usize::MAX);
    let mut ordered = Vec::new();
    for n in r
        .nodes
        .iter_mut()
        .filter(|n| n.phase == NodePhase::Waiting)
        .take(batch)
    {
        n.phase = NodePhase::Ordered;
        n.since_ms = now_ms;
        ordered.push(n.node.clone());
    }
    ordered
}

/// A node's report on this rollout's order; whether anything changed. Reports on nodes not
/// ordered, or already finished, change nothing (a report is sent again at every link).
pub fn on_report(r: &mut Rollout, node: &str, status: &UpgradeStatus, now_ms: u64) -> bool {
    let Some(n) = r.nodes.iter_mut().find(|n| n.node == node) else {
        return false;
    };
    if !n.phase.in_flight() {
        return false;
    }
    let (phase, detail) = match status {
        UpgradeStatus::Restarting if n.phase == NodePhase::Restarting => return false,
        UpgradeStatus::Restarting => (NodePhase::Restarting, String::new()),
        UpgradeStatus::Ready => (NodePhase::Done, String::new()),
        UpgradeStatus::RolledBack { reason } => (NodePhase::RolledBack, reason.clone()),
        UpgradeStatus::Refused { reason } => (NodePhase::Failed, reason.clone()),
    };
    n.phase = phase;
    n.since_ms = now_ms;
    n.detail = detail;
    if phase.failed() {
        let reason = format!("{node}: {}", n.detail);
        stop(r, reason, now_ms);
    }
    true
}

/// A node ordered `timeout_ms` ago is not done: it failed, and the rollout stops.
pub fn on_timeout(r: &mut Rollout, node: &str, now_ms: u64) -> bool {
    let timeout =
        humantime::format_duration(std::time::Duration::from_millis(r.request.timeout_ms));
    let Some(n) = r
        .nodes
        .iter_mut()
        .find(|n| n.node == node && n.phase.in_flight())
    else {
        return false;
    };
    n.detail = match n.phase {
        NodePhase::Ordered => {
            format!("it did not store the binary within {timeout} (offline, or too slow a link)")
        }
        _ => format!("it did not report Ready within {timeout} of its order"),
    };
    n.phase = NodePhase::Failed;
    n.since_ms = now_ms;
    let reason = format!("{node}: {}", n.detail);
    stop(r, reason, now_ms);
    true
}

/// Stops ordering: nodes already ordered finish (and are still reported); none is added.
pub fn cancel(r: &mut Rollout, now_ms: u64) -> bool {
    if !r.is_running() {
        return false;
    }
    r.state = RolloutState::Cancelled;
    r.finished_at_ms = Some(now_ms);
    true
}

fn stop(r: &mut Rollout, reason: String, now_ms: u64) {
    if r.is_running() {
        r.state = RolloutState::Stopped { reason };
        r.finished_at_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests;
