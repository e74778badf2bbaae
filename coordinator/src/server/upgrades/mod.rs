//! Agent upgrades over the mesh: releases (agent binaries stored as blobs and signed with the
//! CA's key) and rollouts (`spillway upgrade nodes`), driven here and decided in [`rollout`].
//! Every change to a rollout is on disk before an order leaves; sessions send a node its order
//! when it is ordered (and again when it connects while the order stands), and pass its reports
//! back. Node timeouts run on the monotonic clock: a clock step on the coordinator fails no one.

pub mod api;
pub mod rollout;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use spillway_api::upgrades::{NodePhase, Release, ReleaseBinary, Rollout, RolloutRequest};
use spillway_proto::wire::{UpgradeOrder, UpgradeReport};
use tokio::sync::watch;

use super::store::{Store, StoreError};
use super::{State, now_ms};

/// Finished rollouts kept for `spillway get upgrades`.
const KEEP_ROLLOUTS: usize = 50;
/// How often timeouts and next batches are looked at.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Upgrades {
    inner: Mutex<Inner>,
    /// Bumped after every change that may mean an order for someone.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    releases: Vec<Release>,
    /// Running rollouts and the finished ones still shown, oldest first.
    rollouts: Vec<Rollout>,
    /// When each in-flight node (rollout id, node) was ordered, on this process's clock.
    ordered_at: HashMap<(u64, String), Instant>,
}

impl Upgrades {
    /// The releases and rollouts in the store; nodes in flight get their whole timeout again.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let (releases, rollouts) = (store.releases()?, store.rollouts()?);
        let now = Instant::now();
        let ordered_at = rollouts
            .iter()
            .flat_map(|r| {
                r.nodes
                    .iter()
                    .filter(|n| n.phase.in_flight())
                    .map(move |n| ((r.id, n.node.clone()), now))
            })
            .collect();
        Ok(Self {
            inner: Mutex::new(Inner {
                releases,
                rollouts,
                ordered_at,
            }),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The digests of every release binary (kept in the blob store whatever their age).
    pub fn blobs(&self) -> Vec<[u8; 32]> {
        digests(&self.lock().releases).into_iter().collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn releases(&self) -> Vec<Release> {
        self.lock().releases.clone()
    }

    pub fn rollouts(&self) -> Vec<Rollout> {
        self.lock().rollouts.clone()
    }

    /// Adds an uploaded binary (already a blob) to release `version`, replacing the one for
    /// its architecture; signed before it is recorded.
    pub fn add_binary(
        &self,
        state: &State,
        version: &str,
        upload: &Upload,
    ) -> Result<Release, String> {
        check_version(version)?;
        state.blobs.pin(upload.sha256);
        let message =
            UpgradeOrder::signed_message(version, upload.arch, &upload.sha256, upload.size);
        let signature = state.ca.sign(&message).map_err(|e| e.to_string())?;
        let binary = ReleaseBinary {
            arch: upload.arch.to_owned(),
            sha256: hex::encode(upload.sha256),
            size: upload.size,
            signature: hex::encode(signature),
            uploaded_at_ms: now_ms(),
        };
        let mut inner = self.lock();
        let before = digests(&inner.releases);
        let mut release = inner
            .releases
            .iter()
            .find(|r| r.version == version)
            .cloned()
            .unwrap_or_else(|| Release {
                version: version.to_owned(),
                binaries: Vec::new(),
            });
        release.binaries.retain(|b| b.arch != upload.arch);
        release.binaries.push(binary);
        release.binaries.sort_by(|a, b| a.arch.cmp(&b.arch));
        state
            .store
            .put_release(&release)
            .map_err(|e| e.to_string())?;
        inner.releases.retain(|r| r.version != version);
        inner.releases.push(release.clone());
        // Older releases go (with their binaries), but never one a running rollout ships.
        let running: Vec<&str> = inner
            .rollouts
            .iter()
            .filter(|r| r.is_running())
            .map(|r| r.request.version.as_str())
            .collect();
        let forget = releases_to_forget(&inner.releases, &running, KEEP_RELEASES);
        if !forget.is_empty() {
            state
                .store
                .remove_releases(&forget)
                .map_err(|e| e.to_string())?;
            inner.releases.retain(|r| !forget.contains(&r.version));
            tracing::info!(?forget, "older agent releases removed");
        }
        let kept = digests(&inner.releases);
        for gone in before.difference(&kept) {
            state.blobs.unpin(gone);
            state.blobs.remove(gone);
        }
        Ok(release)
    }

    /// Starts a rollout (one at a time), recorded before its first order leaves.
    pub fn start(&self, state: &State, request: &RolloutRequest) -> Result<Rollout, Refusal> {
        let nodes: Vec<rollout::Candidate> = state
            .store
            .nodes()
            .map_err(|e| Refusal::Failed(e.to_string()))?
            .into_iter()
            .map(|n| rollout::Candidate {
                name: n.name,
                arch: n.arch,
                version: n.agent_version,
                labels: n.labels,
            })
            .collect();
        let mut inner = self.lock();
        if let Some(running) = inner.rollouts.iter().find(|r| r.is_running()) {
            return Err(Refusal::Busy(format!(
                "rollout {} of {} is running: wait for it, or cancel it with `spillway upgrade cancel {}`",
                running.id, running.request.version, running.id
            )));
        }
        let release = inner
            .releases
            .iter()
            .find(|r| r.version == request.version)
            .ok_or_else(|| {
                Refusal::Invalid(format!(
                    "no release {}: upload its binaries with `spillway upgrade nodes --version {} --binary FILE`",
                    request.version, request.version
                ))
            })?;
        let id = inner.rollouts.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let mut new =
            rollout::plan(id, request, release, &nodes, now_ms()).map_err(Refusal::Invalid)?;
        let ordered = rollout::next_orders(&mut new, now_ms());
        state
            .store
            .put_rollout(&new)
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        let now = Instant::now();
        for node in ordered {
            inner.ordered_at.insert((id, node), now);
        }
        inner.rollouts.push(new.clone());
        let _ = state.store.prune_rollouts(KEEP_ROLLOUTS);
        let excess = inner.rollouts.len().saturating_sub(KEEP_ROLLOUTS + 1);
        inner.rollouts.drain(..excess);
        drop(inner);
        self.changed.send_modify(|v| *v += 1);
        tracing::info!(rollout = id, version = %new.request.version, nodes = new.nodes.len(), batch = new.request.batch, "rollout started");
        Ok(new)
    }

    /// Stops ordering nodes in rollout `id`.
    pub fn cancel(&self, state: &State, id: u64) -> Result<Rollout, Refusal> {
        self.change(state, id, |r| rollout::cancel(r, now_ms()))?
            .ok_or_else(|| Refusal::Invalid(format!("no rollout {id}")))
    }

    /// The order for `node`, while it stands (its node is ordered in a running rollout).
    pub fn order_for(&self, node: &str) -> Option<UpgradeOrder> {
        let inner = self.lock();
        let r = inner.rollouts.iter().find(|r| r.is_running())?;
        let n = r
            .nodes
            .iter()
            .find(|n| n.node == node && n.phase == NodePhase::Ordered)?;
        let release = inner
            .releases
            .iter()
            .find(|rel| rel.version == r.request.version)?;
        let binary = release.binaries.iter().find(|b| b.arch == n.arch)?;
        Some(UpgradeOrder {
            rollout: r.id,
            version: r.request.version.clone(),
            arch: binary.arch.clone(),
            sha256: digest(&binary.sha256)?,
            size: binary.size,
            signature: hex::decode(&binary.signature).ok()?,
            ready_within_ms: r.request.ready_within_ms,
        })
    }

    /// A node's report on an order.
    pub fn report(&self, state: &State, node: &str, report: &UpgradeReport) {
        let changed = self.change(state, report.rollout, |r| {
            let matches = r.nodes.iter().any(|n| n.node == node);
            matches && rollout::on_report(r, node, &report.status, now_ms())
        });
        if let Ok(Some(r)) = changed
            && let Some(n) = r.nodes.iter().find(|n| n.node == node)
        {
            tracing::info!(rollout = r.id, node, phase = ?n.phase, detail = %n.detail, "upgrade report");
        }
    }

    /// A node that cannot take orders at all (too old an agent): it failed.
    pub fn cannot_order(&self, state: &State, node: &str, rollout: u64, reason: &str) {
        let status = spillway_proto::wire::UpgradeStatus::Refused {
            reason: reason.to_owned(),
        };
        let _ = self.change(state, rollout, |r| {
            rollout::on_report(r, node, &status, now_ms())
        });
    }

    /// Timeouts, and the next batch of every running rollout.
    pub fn tick(&self, state: &State) {
        let (timed_out, running): (Vec<(u64, String)>, Vec<u64>) = {
            let inner = self.lock();
            let ordered_at = &inner.ordered_at;
            let mut late = Vec::new();
            for r in &inner.rollouts {
                let timeout = Duration::from_millis(r.request.timeout_ms);
                for n in r.nodes.iter().filter(|n| n.phase.in_flight()) {
                    let key = (r.id, n.node.clone());
                    if ordered_at
                        .get(&key)
                        .is_some_and(|at| at.elapsed() >= timeout)
                    {
                        late.push(key);
                    }
                }
            }
            let running = inner
                .rollouts
                .iter()
                .filter(|r| r.is_running())
                .map(|r| r.id)
                .collect();
            (late, running)
        };
        for (id, node) in timed_out {
            let _ = self.change(state, id, |r| rollout::on_timeout(r, &node, now_ms()));
        }
        for id in running {
            let _ = self.change(state, id, |r| {
                let before = r.state.clone();
                !rollout::next_orders(r, now_ms()).is_empty() || r.state != before
            });
        }
    }

    /// Applies `f` to rollout `id`; when it changed something, records it before anyone acts
    /// on it, starts the clocks of newly ordered nodes and wakes the sessions.
    fn change(
        &self,
        state: &State,
        id: u64,
        f: impl FnOnce(&mut Rollout) -> bool,
    ) -> Result<Option<Rollout>, Refusal> {
        let mut inner = self.lock();
        let Some(index) = inner.rollouts.iter().position(|r| r.id == id) else {
            return Ok(None);
        };
        let mut r = inner.rollouts[index].clone();
        if !f(&mut r) {
            return Ok(Some(r));
        }
        state
            .store
            .put_rollout(&r)
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        let now = Instant::now();
        for n in &r.nodes {
            let key = (r.id, n.node.clone());
            if n.phase == NodePhase::Ordered {
                inner.ordered_at.entry(key).or_insert(now);
            } else if !n.phase.in_flight() {
                inner.ordered_at.remove(&key);
            }
        }
        inner.rollouts[index] = r.clone();
        drop(inner);
        self.changed.send_modify(|v| *v += 1);
        Ok(Some(r))
    }
}

/// An agent binary stored in the blob store by an upload.
#[derive(Debug)]
pub struct Upload {
    pub sha256: [u8; 32],
    pub size: u64,
    pub arch: &'static str,
}

/// Why a rollout was not started or changed.
#[derive(Debug)]
pub enum Refusal {
    Invalid(String),
    Busy(String),
    Failed(String),
}

/// Drives timeouts and batches until the coordinator stops.
pub async fn drive(state: std::sync::Arc<State>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.upgrades.tick(&state);
    }
}

/// Releases kept besides those a running rollout ships: the most recently uploaded.
pub const KEEP_RELEASES: usize = 5;

/// The versions to forget: all but the `keep` most recently uploaded, never one in `running`.
pub fn releases_to_forget(releases: &[Release], running: &[&str], keep: usize) -> Vec<String> {
    let mut newest_first: Vec<(u64, &str)> = releases
        .iter()
        .map(|r| {
            let at = r
                .binaries
                .iter()
                .map(|b| b.uploaded_at_ms)
                .max()
                .unwrap_or(0);
            (at, r.version.as_str())
        })
        .collect();
    newest_first.sort_by(|a, b| b.cmp(a));
    newest_first
        .into_iter()
        .skip(keep)
        .filter(|(_, v)| !running.contains(v))
        .map(|(_, v)| v.to_owned())
        .collect()
}

/// Every binary's digest in `releases`.
fn digests(releases: &[Release]) -> std::collections::HashSet<[u8; 32]> {
    releases
        .iter()
        .flat_map(|r| &r.binaries)
        .filter_map(|b| digest(&b.sha256))
        .collect()
}

fn digest(hex_text: &str) -> Option<[u8; 32]> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut d).ok().map(|()| d)
}

/// A release version: 1 to 64 of letters, digits and `.-+_`, starting with a letter or digit.
pub fn check_version(version: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&version.len())
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c));
    ok.then_some(()).ok_or_else(|| {
        format!("`{version}` is not a release version: 1 to 64 letters, digits and `.-+_`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: &str, at_ms: u64) -> Release {
        Release {
            version: version.into(),
            binaries: vec![ReleaseBinary {
                arch: "aarch64".into(),
                sha256: format!("{at_ms:064x}"),
                size: 1,
                signature: String::new(),
                uploaded_at_ms: at_ms,
            }],
        }
    }

    #[test]
    fn older_releases_go_but_never_one_a_running_rollout_ships() {
        let releases: Vec<Release> = (1..=7).map(|n| release(&format!("1.{n}"), n)).collect();
        let mut gone = releases_to_forget(&releases, &[], 5);
        gone.sort();
        assert_eq!(gone, ["1.1", "1.2"]);
        assert_eq!(releases_to_forget(&releases, &["1.1"], 5), ["1.2"]);
        assert!(releases_to_forget(&releases[..5], &[], 5).is_empty());
    }
}
