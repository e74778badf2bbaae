//! The coordinator's shell around the sans-IO hand-over [`Ledger`]: it chooses peers from the
//! live view, persists every record before the messages that depend on it leave (through the
//! store's group-committing journal), routes messages to node sessions, expires the leases of
//! peers that stay away, and cleans up blobs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spillway_placement::handover::{Effect, Handover, HandoverState, Holder, Ledger, ToAgent};
use spillway_placement::{Job, Millis, Target, TargetKind};
use spillway_proto::load::NodeHealth;
use spillway_proto::wire::{CoordinatorFrame, GuestDone, Offer, Outcome, Placement};
use spillway_proto::{Event, JobId};
use tokio::sync::mpsc;

use super::State;
use super::metrics::inc;
use super::placing::{self, Placing};
use super::replicas;
use super::store::{HandoverRow, RowState};

/// What a peer needs besides the ledger's record.
#[derive(Debug, Clone)]
struct Payload {
    event: Event,
    input: [u8; 32],
    accepted_at_ms: u64,
}

/// What may only happen once the records queued with it are durable, with what it needs.
enum After {
    Frame(mpsc::UnboundedSender<CoordinatorFrame>, CoordinatorFrame),
    Replica(
        mpsc::UnboundedSender<replicas::driver::Placed>,
        replicas::driver::Placed,
    ),
    /// A blob no hand-over refers to any more (deleted only when the record saying so is safe,
    /// so a restart never restores a record whose blobs are gone, and only if nobody stored the
    /// same bytes again meanwhile: another job's identical output may be on its way).
    DropBlob(super::blobs::Blobs, [u8; 32]),
}

/// A blob stored this recently is not removed yet: its bytes may be another job's upload whose
/// offer or result is not recorded yet.
const BLOB_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

impl After {
    fn happen(self) {
        match self {
            After::Frame(tx, frame) => {
                let _ = tx.send(frame);
            }
            After::Replica(tx, placed) => {
                let _ = tx.send(placed);
            }
            After::DropBlob(blobs, d) => blobs.unused(d),
        }
    }
}

#[derive(Debug)]
struct Session {
    id: u64,
    tx: mpsc::UnboundedSender<CoordinatorFrame>,
}

#[derive(Debug)]
struct Inner {
    ledger: Ledger<JobId, Outcome>,
    payloads: HashMap<JobId, Payload>,
    sessions: HashMap<String, Session>,
    next_session: u64,
    /// When each node without a session went away (the coordinator's start for nodes not seen).
    away_since: HashMap<String, Instant>,
    /// Placements not yet visible in the peer's load reports: (peer, when).
    recent: Vec<(String, Instant)>,
    /// The placement core's budget window and run times.
    placing: Placing,
}

/// Every handed-over job and the sessions messages about them go to.
#[derive(Debug)]
pub struct Handovers {
    inner: Mutex<Inner>,
    started: Instant,
}

impl Handovers {
    /// Rebuilds the ledger from the store (after a restart, leases whose peer does not come back
    /// within the grace period are placed again).
    pub fn restore(max_hops: u8, rows: Vec<HandoverRow>) -> Self {
        let mut payloads = HashMap::new();
        let records = rows.into_iter().map(|row| {
            payloads.insert(
                row.id,
                Payload {
                    event: row.event,
                    input: row.input,
                    accepted_at_ms: row.accepted_at_ms,
                },
            );
            let state = match row.state {
                RowState::Placed { peer } => HandoverState::Placed {
                    peer: replicas::holder_of_row(&peer),
                },
                RowState::Finished(o) => HandoverState::Finished(o),
                RowState::Returning(r) => HandoverState::Returning(r),
            };
            (
                row.id,
                Handover {
                    origin: row.origin,
                    function: row.function,
                    hops: row.hops,
                    visited: row
                        .visited
                        .iter()
                        .map(|v| replicas::holder_of_row(v))
                        .collect(),
                    attempt: row.attempt,
                    state,
                },
            )
        });
        let ledger = Ledger::restore(max_hops, records.collect::<Vec<_>>());
        Self {
            inner: Mutex::new(Inner {
                ledger,
                payloads,
                sessions: HashMap::new(),
                next_session: 1,
                away_since: HashMap::new(),
                recent: Vec::new(),
                placing: Placing::default(),
            }),
            started: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs the coordinator answers for now.
    pub fn len(&self) -> usize {
        self.lock().ledger.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// Open hand-overs by tier, for `/metrics`: `peer`, a replica's kind (`kubernetes`,
    /// `lambda`, …), or `origin` for results and returns waiting for their origin.
    pub fn handovers_by_tier(&self) -> std::collections::BTreeMap<String, u64> {
        let inner = self.handovers.lock();
        let mut tiers = std::collections::BTreeMap::new();
        for (_, h) in inner.ledger.iter() {
            let tier = match &h.state {
                HandoverState::Placed {
                    peer: Holder::Node(_),
                } => "peer",
                HandoverState::Placed {
                    peer: Holder::Replica(id),
                } => super::replicas::kind_of(id).unwrap_or("replica"),
                HandoverState::Finished(_) | HandoverState::Returning(_) => "origin",
            };
            *tiers.entry(tier.to_owned()).or_default() += 1;
        }
        tiers
    }

    /// A node's session starts: messages for it go to `tx` from now on, and whatever it may have
    /// missed is sent again. Returns the session id frames from it must carry.
    pub fn handover_session(&self, node: &str, tx: mpsc::UnboundedSender<CoordinatorFrame>) -> u64 {
        let mut inner = self.handovers.lock();
        let id = inner.next_session;
        inner.next_session += 1;
        inner.sessions.insert(node.to_owned(), Session { id, tx });
        inner.away_since.remove(node);
        let effects = inner.ledger.connected(node);
        self.carry_out(&mut inner, effects, &[]);
        id
    }

    /// A node's session ended; its leases run out after the grace period unless it returns.
    pub fn handover_session_ended(&self, node: &str, session: u64) {
        let mut inner = self.handovers.lock();
        if inner.sessions.get(node).is_some_and(|s| s.id == session) {
            inner.sessions.remove(node);
            inner.away_since.insert(node.to_owned(), Instant::now());
        }
    }

    /// The origin offers a job. Only the node's current session may: frames still in flight on a
    /// connection that was replaced are dropped, as the protocol assumes.
    pub fn offer(&self, node: &str, session: u64, offer: Offer) {
        let mut inner = self.handovers.lock();
        if !is_current(&inner, node, session) {
            return;
        }
        // The origin's own prediction (it knows its queue exactly): a target must beat it. An
        // agent that has no run time to predict with sends 0 and takes any place.
        let stay = if offer.run_ms > 0 {
            offer.local_wait_ms.saturating_add(offer.run_ms)
        } else {
            Millis::MAX
        };
        let job = Job {
            id: 0,
            function: offer.function.clone(),
            input_bytes: offer.input_bytes,
            origin: node.to_owned(),
            hops: 0,
            visited: vec![node.to_owned()],
            queued_at: 0,
        };
        let choice = self.place(&mut inner, &job, stay, false);
        let to = choice.as_ref().map(Holder::to_string).unwrap_or_default();
        let effects = inner
            .ledger
            .offer(offer.id, node, &offer.function, |visited| {
                choice.filter(|p| !visited.contains(p))
            });
        if effects.iter().any(|e| matches!(e, Effect::Persist(_))) {
            inner.payloads.insert(
                offer.id,
                Payload {
                    event: offer.event,
                    input: offer.input,
                    accepted_at_ms: super::now_ms(),
                },
            );
            inc(&self.metrics.handovers_accepted);
            let why = format!("{:?}", offer.reason);
            tracing::info!(job = %offer.id.short(), origin = node, to = %to, function = %offer.function, reason = %why, stay_ms = stay, "job handed over");
        } else if effects.iter().any(|e| {
            matches!(
                e,
                Effect::Send {
                    msg: ToAgent::Declined(..),
                    ..
                }
            )
        }) {
            inc(&self.metrics.handovers_declined);
            tracing::debug!(job = %offer.id.short(), origin = node, stay, "offer declined: no target beats the origin's prediction");
            self.carry_out(&mut inner, effects, &[offer.input]);
            return;
        }
        self.carry_out(&mut inner, effects, &[]);
    }

    pub fn guest_done(&self, node: &str, session: u64, done: GuestDone) {
        let mut inner = self.handovers.lock();
        if !is_current(&inner, node, session) {
            return;
        }
        let outputs: Vec<[u8; 32]> = match &done.outcome {
            Outcome::Succeeded { outputs } => outputs.iter().map(|(_, d)| *d).collect(),
            Outcome::Failed { .. } => vec![],
        };
        let effects = inner
            .ledger
            .guest_done(done.id, &Holder::node(node), done.outcome);
        let recorded = effects.iter().any(|e| matches!(e, Effect::Persist(_)));
        // A late result (another peer's came first): its outputs are not needed.
        let unused = if recorded { &[][..] } else { &outputs };
        self.carry_out(&mut inner, effects, unused);
    }

    pub fn handover_ack(&self, node: &str, session: u64, id: JobId) {
        let mut inner = self.handovers.lock();
        if !is_current(&inner, node, session) {
            return;
        }
        let mut blobs: Vec<[u8; 32]> = inner
            .payloads
            .get(&id)
            .map(|p| p.input)
            .into_iter()
            .collect();
        if let Some(HandoverState::Finished(Outcome::Succeeded { outputs })) =
            inner.ledger.get(&id).map(|h| &h.state)
        {
            blobs.extend(outputs.iter().map(|(_, d)| *d));
        }
        let effects = inner.ledger.origin_ack(id, node);
        if inner.ledger.get(&id).is_some() {
            blobs.clear();
        }
        self.carry_out(&mut inner, effects, &blobs);
    }

    /// Places again the jobs of peers away longer than the grace period. Called periodically.
    pub fn expire_leases(&self) {
        let grace = self.config.lease_grace;
        let mut inner = self.handovers.lock();
        // Each lease holder once, however many jobs it holds.
        // Replicas hold no session: their attempts report for themselves.
        let holders: std::collections::BTreeSet<String> = inner
            .ledger
            .iter()
            .filter_map(|(_, h)| match &h.state {
                HandoverState::Placed {
                    peer: Holder::Node(name),
                } => Some(name.clone()),
                _ => None,
            })
            .collect();
        for name in holders {
            if inner.sessions.contains_key(&name) {
                continue;
            }
            let peer = Holder::Node(name);
            let away = inner
                .away_since
                .get(peer.id())
                .map_or(self.handovers.started.elapsed(), Instant::elapsed);
            if away < grace {
                continue;
            }
            tracing::warn!(peer = %peer, "peer away for {}s: placing its jobs again", away.as_secs());
            let jobs: Vec<(JobId, Job)> = inner
                .ledger
                .iter()
                .filter(
                    |(_, h)| matches!(&h.state, HandoverState::Placed { peer: p } if *p == peer),
                )
                .map(|(id, h)| (*id, ledger_job(h)))
                .collect();
            // Each choice counts the ones before it as placements the view does not show yet;
            // the marks go again before the placements are sent, which count them for real.
            let marks = inner.recent.len();
            let mut choices: HashMap<JobId, Option<Holder>> = HashMap::new();
            for (id, job) in jobs {
                let choice = self.place(&mut inner, &job, Millis::MAX, false);
                if let Some(p) = &choice {
                    inner.recent.push((p.id().to_owned(), Instant::now()));
                }
                choices.insert(id, choice);
            }
            inner.recent.truncate(marks);
            inc(&self.metrics.leases_expired);
            let effects = inner
                .ledger
                .peer_lost(&peer, |id, _| choices.get(id).cloned().flatten());
            self.carry_out(&mut inner, effects, &[]);
        }
    }

    /// Where a job goes: the placement core's one decision
    /// ([`spillway_placement::policy::SpillwayPolicy::place`]) over the function's peers and, unless
    /// `peers_only`, its replicas. `stay` is the completion predicted where the job is
    /// (`Millis::MAX`: it must move, or has no place yet).
    fn place(
        &self,
        inner: &mut Inner,
        job: &Job,
        stay: Millis,
        peers_only: bool,
    ) -> Option<Holder> {
        // A function deleted meanwhile keeps its jobs moving among the peers that still run it.
        let def = self
            .store
            .function(&job.function)
            .ok()
            .flatten()
            .map(|r| r.def);
        let settings = &self.config.placement;
        let max_hops = self.config.max_hops;
        let spec = placing::function_spec(&job.function, def.as_ref(), settings, max_hops);
        let mut view = self.peer_targets(inner, &job.function, &job.visited);
        if let Some(def) = def.as_ref().filter(|_| !peers_only) {
            let ledger = &inner.ledger;
            view.extend(placing::replica_targets(def, settings, |id| {
                in_flight(ledger, &Holder::Replica(id.to_owned()))
            }));
        }
        let chosen = inner.placing.place(job, &spec, &view, stay)?;
        // The target's kind says what holds the lease: the view was built from peers and
        // replicas apart.
        let target = view.iter().find(|t| t.id == chosen)?;
        Some(match target.kind {
            TargetKind::Peer | TargetKind::Origin => Holder::Node(chosen),
            TargetKind::Cluster | TargetKind::Elastic => Holder::Replica(chosen),
        })
    }

    /// The node a new job of `function` starts on (`/job`, `/run`, bucket events): the
    /// placement core's choice among the Ready nodes that run it. It counts at once as a job the
    /// node's reports do not show yet.
    pub fn place_new_job(&self, function: &str, input_bytes: u64) -> Option<String> {
        let mut inner = self.handovers.lock();
        let job = Job {
            id: 0,
            function: function.to_owned(),
            input_bytes,
            origin: String::new(),
            hops: 0,
            visited: vec![],
            queued_at: 0,
        };
        let Holder::Node(node) = self.place(&mut inner, &job, Millis::MAX, true)? else {
            return None;
        };
        inner.recent.push((node.clone(), Instant::now()));
        Some(node)
    }

    /// The connected, Ready peers that run `function`, not in `exclude`, as the placement core's
    /// targets: their load as last reported, less the placements those reports do not show yet,
    /// and the run time each reports (a peer measures its own).
    fn peer_targets(&self, inner: &mut Inner, function: &str, exclude: &[String]) -> Vec<Target> {
        let nodes = self.store.nodes().unwrap_or_default();
        let mut targets = Vec::new();
        for live in self.view.snapshot() {
            if exclude.contains(&live.name)
                || live.health != NodeHealth::Ready
                || !inner.sessions.contains_key(&live.name)
            {
                continue;
            }
            // Deployed there, and not cordoned for maintenance.
            let deployed = nodes.iter().any(|n| {
                n.name == live.name && !n.cordoned && n.running.iter().any(|f| f == function)
            });
            if !deployed {
                continue;
            }
            // Deployed since its last report: counted as one slot, busy, until it reports.
            let load = live
                .report
                .as_ref()
                .and_then(|r| r.functions.iter().find(|f| f.name == function))
                .cloned()
                .unwrap_or_default();
            let since_report = live.silent_for.unwrap_or(Duration::ZERO);
            let unseen = inner
                .recent
                .iter()
                .filter(|(p, at)| *p == live.name && at.elapsed() <= since_report)
                .count() as u32;
            // Numbers from a member's report: saturating, so a hostile report cannot wrap its
            // queue to look short.
            let free = load.free_slots.saturating_sub(unseen);
            let queued = load
                .queued
                .saturating_add(unseen.saturating_sub(load.free_slots));
            if load.mean_run_ms > 0 {
                inner
                    .placing
                    .times
                    .record(function, &live.name, u64::from(load.mean_run_ms));
            }
            targets.push(Target {
                id: live.name.clone(),
                kind: TargetKind::Peer,
                tier: 0,
                slots: Some(load.free_slots.saturating_add(load.running).max(1)),
                free_slots: free,
                queued,
                latency_ms: PEER_LATENCY_MS,
                bytes_per_ms: PEER_BYTES_PER_MS,
                start_ms: 0,
                cost: None,
            });
        }
        targets
    }

    /// What a replica attempt needs of a job: function, origin, hops, event and input — while
    /// `replica` holds its lease `attempt`.
    pub fn replica_job(
        &self,
        id: JobId,
        replica: &str,
        attempt: u32,
    ) -> Option<(String, String, u8, Event, [u8; 32])> {
        let inner = self.handovers.lock();
        let h = inner.ledger.get(&id)?;
        let p = inner.payloads.get(&id)?;
        holds_lease(h, &Holder::Replica(replica.to_owned()), attempt).then(|| {
            (
                h.function.clone(),
                h.origin.clone(),
                h.hops,
                p.event.clone(),
                p.input,
            )
        })
    }

    /// Whether some replica holds lease `attempt` of the job (its executor may upload outputs).
    pub fn replica_lease_is(&self, id: JobId, attempt: u32) -> bool {
        let inner = self.handovers.lock();
        inner.ledger.get(&id).is_some_and(|h| match &h.state {
            HandoverState::Placed { peer } => peer.is_replica() && holds_lease(h, peer, attempt),
            _ => false,
        })
    }

    /// Whether `replica` still holds lease `attempt` of the job.
    pub fn replica_holds(&self, id: JobId, replica: &str, attempt: u32) -> bool {
        let inner = self.handovers.lock();
        inner
            .ledger
            .get(&id)
            .is_some_and(|h| holds_lease(h, &Holder::Replica(replica.to_owned()), attempt))
    }

    /// Jobs whose lease a replica holds (to resume after a restart).
    pub fn replica_leases(&self) -> Vec<(JobId, String, u32)> {
        let inner = self.handovers.lock();
        inner
            .ledger
            .iter()
            .filter_map(|(id, h)| match &h.state {
                HandoverState::Placed {
                    peer: Holder::Replica(replica),
                } => Some((*id, replica.clone(), h.attempt)),
                _ => None,
            })
            .collect()
    }

    /// A replica finished the job (or it failed there): recorded and delivered to the origin
    /// like a peer's result; the job's row says where it ran.
    pub fn replica_done(&self, id: JobId, replica: &str, outcome: Outcome) {
        let mut inner = self.handovers.lock();
        // From the coordinator taking the job to the replica's answer: what placing there took.
        if let (Some(h), Some(p)) = (inner.ledger.get(&id), inner.payloads.get(&id)) {
            let took = super::now_ms().saturating_sub(p.accepted_at_ms);
            let function = h.function.clone();
            inner.placing.times.observe(&function, replica, took);
        }
        let holder = Holder::Replica(replica.to_owned());
        let effects = inner.ledger.guest_done(id, &holder, outcome);
        self.carry_out(&mut inner, effects, &[]);
        drop(inner);
        self.delegations.callbacks.forget(id);
        if let Ok(Some(mut row)) = self.store.job_row(&id.to_string()) {
            row.ran_on = Some(replica.to_owned());
            row.updated_at_ms = super::now_ms();
            if let Err(e) = self.store.put_jobs(&[row]) {
                tracing::error!(job = %id.short(), "cannot record where a job ran: {e}");
            }
        }
    }

    /// A replica certainly does not run the job: the next peer or replica gets it, or its origin.
    pub fn replica_lost(&self, id: JobId, replica: &str, attempt: u32, why: &str) {
        let mut inner = self.handovers.lock();
        let Some(h) = inner.ledger.get(&id) else {
            return;
        };
        if h.attempt != attempt {
            return;
        }
        let job = ledger_job(h);
        let choice = self.place(&mut inner, &job, Millis::MAX, false);
        let holder = Holder::Replica(replica.to_owned());
        let effects = inner.ledger.placement_lost(id, &holder, why, |_| choice);
        self.carry_out(&mut inner, effects, &[]);
    }

    /// Queues the records the effects ask for and, behind them, the messages and the deletion
    /// of the blobs among `unused` that nothing refers to any more: those happen once the
    /// records are durable, in the order queued. If the records cannot be written, nothing
    /// queued with them happens: nothing is promised that the disk does not hold.
    fn carry_out(
        &self,
        inner: &mut Inner,
        effects: Vec<Effect<JobId, Outcome>>,
        unused: &[[u8; 32]],
    ) {
        let now = Instant::now();
        inner
            .recent
            .retain(|(_, at)| now.duration_since(*at) < Duration::from_secs(10));
        let mut records = Vec::new();
        let mut after = Vec::new();
        for effect in effects {
            match effect {
                Effect::Persist(id) => {
                    let row = row(inner, id);
                    if row.is_none() {
                        inner.payloads.remove(&id);
                    }
                    records.push((id.to_string(), row));
                }
                Effect::Send {
                    to: Holder::Replica(to),
                    msg,
                } => {
                    // Replicas get placements through the delegation driver; nothing else is
                    // sent to them (a result's acknowledgement has no one to go to).
                    if let ToAgent::Place { id, attempt } = msg {
                        after.push(After::Replica(
                            self.delegations.placer(),
                            replicas::driver::Placed {
                                id,
                                replica: to,
                                attempt,
                                resume: false,
                            },
                        ));
                    }
                }
                Effect::Send {
                    to: Holder::Node(to),
                    msg,
                } => {
                    if let ToAgent::Place { .. } = &msg {
                        inner.recent.push((to.clone(), now));
                    }
                    let Some(frame) = frame(inner, msg) else {
                        continue;
                    };
                    if let Some(s) = inner.sessions.get(&to) {
                        after.push(After::Frame(s.tx.clone(), frame));
                    }
                }
            }
        }
        after.extend(
            unused
                .iter()
                .filter(|d| !blob_in_use(inner, d))
                .map(|d| After::DropBlob(self.blobs.clone(), *d)),
        );
        if records.is_empty() && after.is_empty() {
            return;
        }
        // A failed write is logged by the journal, with the jobs; what depends on it stays back.
        let then = move |written: Result<(), super::store::StoreError>| {
            if written.is_ok() {
                after.into_iter().for_each(After::happen);
            }
        };
        self.store.queue_handovers(records, Box::new(then));
    }

    /// Whether member `node` may read blob `d`: the input of a job placed on it, or an output of
    /// a job it is the origin of (being delivered). Anything else is another node's data.
    pub fn member_may_read(&self, node: &str, d: &[u8; 32]) -> bool {
        let inner = self.handovers.lock();
        inner.ledger.iter().any(|(id, h)| {
            let input = inner.payloads.get(id).is_some_and(|p| p.input == *d);
            let placed_here =
                matches!(&h.state, HandoverState::Placed { peer } if peer.is_node(node));
            let output = matches!(&h.state, HandoverState::Finished(Outcome::Succeeded { outputs })
                if outputs.iter().any(|(_, o)| o == d));
            (input && placed_here) || (output && h.origin == node)
        })
    }

    /// Whether `node` ran (or runs) job `id` for another node: it may report on it.
    pub fn was_placed_on(&self, id: JobId, node: &str) -> bool {
        let inner = self.handovers.lock();
        inner
            .ledger
            .get(&id)
            .is_some_and(|h| h.origin != node && h.visited.iter().any(|v| v.is_node(node)))
    }

    /// Removes the blobs hand-overs stopped referring to, once nobody stored them for a while
    /// (identical bytes are one blob). Returns how many went.
    pub fn remove_unused_blobs(&self) -> usize {
        let inner = self.handovers.lock();
        self.blobs
            .remove_idle(BLOB_IDLE, |d| blob_in_use(&inner, d))
    }

    /// Deletes blobs older than `age` that no hand-over refers to (uploads whose offer or result
    /// never arrived). Returns how many went.
    pub fn sweep_blobs(&self, age: Duration) -> usize {
        let inner = self.handovers.lock();
        self.blobs.sweep(age, |d| blob_in_use(&inner, d))
    }
}

/// Whether a hand-over still needs this blob (an input, or an output not yet delivered).
fn blob_in_use(inner: &Inner, d: &[u8; 32]) -> bool {
    inner.payloads.values().any(|p| p.input == *d)
        || inner.ledger.iter().any(|(_, h)| match &h.state {
            HandoverState::Finished(Outcome::Succeeded { outputs }) => {
                outputs.iter().any(|(_, o)| o == d)
            }
            _ => false,
        })
}

/// Whether `holder` holds lease `attempt` of the hand-over.
/// Peers of a mesh are near each other: 1 ms and 10 MB/s assumed for moving an input.
const PEER_LATENCY_MS: Millis = 1;
const PEER_BYTES_PER_MS: f64 = 10_000.0;

/// A ledger record as the placement core's job. Its input's size is not kept with it.
fn ledger_job(h: &Handover<Outcome>) -> Job {
    Job {
        id: 0,
        function: h.function.clone(),
        input_bytes: 0,
        origin: h.origin.clone(),
        hops: h.hops,
        visited: h.visited.iter().map(|v| v.id().to_owned()).collect(),
        queued_at: 0,
    }
}

/// Jobs placed on `holder` and not finished there.
fn in_flight(ledger: &Ledger<JobId, Outcome>, holder: &Holder) -> u32 {
    let n = ledger
        .iter()
        .filter(|(_, h)| matches!(&h.state, HandoverState::Placed { peer } if peer == holder))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn holds_lease(h: &Handover<Outcome>, holder: &Holder, attempt: u32) -> bool {
    h.attempt == attempt && matches!(&h.state, HandoverState::Placed { peer } if peer == holder)
}

fn is_current(inner: &Inner, node: &str, session: u64) -> bool {
    inner.sessions.get(node).is_some_and(|s| s.id == session)
}

fn row(inner: &Inner, id: JobId) -> Option<HandoverRow> {
    let h = inner.ledger.get(&id)?;
    let p = inner.payloads.get(&id)?;
    Some(HandoverRow {
        id,
        origin: h.origin.clone(),
        function: h.function.clone(),
        hops: h.hops,
        visited: h.visited.iter().map(Holder::to_string).collect(),
        attempt: h.attempt,
        state: match &h.state {
            HandoverState::Placed { peer } => RowState::Placed {
                peer: peer.to_string(),
            },
            HandoverState::Finished(o) => RowState::Finished(o.clone()),
            HandoverState::Returning(r) => RowState::Returning(r.clone()),
        },
        event: p.event.clone(),
        input: p.input,
        accepted_at_ms: p.accepted_at_ms,
    })
}

fn frame(inner: &Inner, msg: ToAgent<JobId, Outcome>) -> Option<CoordinatorFrame> {
    Some(match msg {
        ToAgent::Accepted(id) => CoordinatorFrame::Accepted(id),
        ToAgent::Declined(id, reason) => CoordinatorFrame::Declined { id, reason },
        ToAgent::Place { id, attempt } => {
            let h = inner.ledger.get(&id)?;
            let p = inner.payloads.get(&id)?;
            CoordinatorFrame::Place(Placement {
                id,
                origin: h.origin.clone(),
                function: h.function.clone(),
                event: p.event.clone(),
                input: p.input,
                attempt,
                hops: h.hops,
                visited: h.visited.iter().map(Holder::to_string).collect(),
            })
        }
        ToAgent::Deliver(id, outcome) => CoordinatorFrame::Deliver { id, outcome },
        ToAgent::Return(id, reason) => CoordinatorFrame::Return { id, reason },
        ToAgent::GuestAck(id) => CoordinatorFrame::GuestAck(id),
    })
}
