//! The one-owner hand-over protocol, sans-IO.
//!
//! A job the origin agent cannot run soon enough is *offered* to the coordinator. From then on
//! exactly one party owns it:
//!
//! - the origin, while its journal says `Queued` or `Running` (it may run it);
//! - nobody runs it while the origin says `Offered` (the answer is in doubt) — the origin only
//!   leaves `Offered` on an answer from the coordinator, never on its own;
//! - the coordinator, once its [`Ledger`] holds the job `Placed` or `Finished`. It grants one
//!   *lease* at a time to a peer agent, and re-places the job (same id, one more hop) when the
//!   lease holder is lost. It hands the job back to the origin (`Returning`) when the hop limit
//!   is reached or no peer can take it.
//!
//! Every answer is idempotent on the job id, so a lost message is repaired by sending again:
//! the origin re-offers every `Offered` job after reconnecting and the coordinator answers from
//! its ledger; the coordinator re-sends placements, deliveries and returns when a node
//! reconnects; a second result for a job is acknowledged and dropped.
//!
//! The shell (the coordinator's QUIC sessions, the agent's engine) persists every
//! [`Effect::Persist`] before it sends the messages that follow it.

use std::collections::BTreeMap;

/// Who a job is on, or is sent to: an agent of the mesh, or a replica outside it. Origins are
/// always nodes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Holder {
    /// An agent, by its node name.
    Node(String),
    /// A replica, by its id (`endpoint:URL`, `oscar:CLUSTER/SERVICE`, `lambda:…`).
    Replica(String),
}

impl Holder {
    pub fn node(name: &str) -> Self {
        Holder::Node(name.to_owned())
    }

    /// The node name or the replica id.
    pub fn id(&self) -> &str {
        match self {
            Holder::Node(id) | Holder::Replica(id) => id,
        }
    }

    pub fn is_replica(&self) -> bool {
        matches!(self, Holder::Replica(_))
    }

    /// Whether this is the node called `name`.
    pub fn is_node(&self, name: &str) -> bool {
        matches!(self, Holder::Node(n) if n == name)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// Coordinator → agent messages of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent<Id, Out> {
    /// To the origin: the coordinator owns the job now.
    Accepted(Id),
    /// To the origin: keep it (nothing recorded on the coordinator).
    Declined(Id, String),
    /// To a peer: run this job (lease `attempt`).
    Place { id: Id, attempt: u32 },
    /// To the origin: the job's result, to deliver into its outputs.
    Deliver(Id, Out),
    /// To the origin: the job is yours again; run it locally and never offer it again.
    Return(Id, String),
    /// To a peer: its result was recorded (or was not needed); forget the job.
    GuestAck(Id),
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<Id, Out> {
    /// Write the ledger's record of this job durably (or delete it, when it is gone).
    Persist(Id),
    Send {
        to: Holder,
        msg: ToAgent<Id, Out>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverState<Out> {
    /// A peer or a replica holds the lease.
    Placed { peer: Holder },
    /// A peer finished; the result waits for the origin's acknowledgement.
    Finished(Out),
    /// Handed back; waits for the origin's acknowledgement.
    Returning(String),
}

/// The coordinator's record of one handed-over job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover<Out> {
    pub origin: String,
    pub function: String,
    /// Placements so far (the origin's offer is not one).
    pub hops: u8,
    /// Where the job has been, the origin first: never placed on one of them again.
    pub visited: Vec<Holder>,
    pub attempt: u32,
    pub state: HandoverState<Out>,
}

/// Every job the coordinator owns or still has to answer for.
#[derive(Debug, Clone)]
pub struct Ledger<Id, Out> {
    jobs: BTreeMap<Id, Handover<Out>>,
    max_hops: u8,
}

/// The hop limit when the configuration does not say.
pub const DEFAULT_MAX_HOPS: u8 = 3;

impl<Id: Copy + Ord, Out: Clone> Ledger<Id, Out> {
    pub fn new(max_hops: u8) -> Self {
        Self {
            jobs: BTreeMap::new(),
            max_hops: max_hops.max(1),
        }
    }

    /// Rebuilds the ledger from persisted records (after a coordinator restart).
    pub fn restore(max_hops: u8, records: impl IntoIterator<Item = (Id, Handover<Out>)>) -> Self {
        let mut ledger = Self::new(max_hops);
        ledger.jobs.extend(records);
        ledger
    }

    pub fn get(&self, id: &Id) -> Option<&Handover<Out>> {
        self.jobs.get(id)
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Handover<Out>)> {
        self.jobs.iter()
    }

    /// Leases held by `peer` now, to count against its free slots.
    pub fn leases_of(&self, peer: &Holder) -> usize {
        self.jobs
            .values()
            .filter(|h| matches!(&h.state, HandoverState::Placed { peer: p } if p == peer))
            .count()
    }

    /// The origin offers a job. `choose` picks a peer among those not in the visited list it is
    /// given (`None`: nobody can take it now).
    pub fn offer(
        &mut self,
        id: Id,
        origin: &str,
        function: &str,
        choose: impl FnOnce(&[Holder]) -> Option<Holder>,
    ) -> Vec<Effect<Id, Out>> {
        let from = Holder::node(origin);
        if self.jobs.contains_key(&id) {
            // Already ours: the first answer was lost.
            return vec![send(&from, ToAgent::Accepted(id))];
        }
        let visited = vec![from.clone()];
        let Some(peer) = choose(&visited).filter(|p| !visited.contains(p)) else {
            return vec![send(
                &from,
                ToAgent::Declined(
                    id,
                    "no peer or replica is predicted to finish it sooner than here".into(),
                ),
            )];
        };
        self.jobs.insert(
            id,
            Handover {
                origin: origin.to_owned(),
                function: function.to_owned(),
                hops: 1,
                visited: vec![from.clone(), peer.clone()],
                attempt: 1,
                state: HandoverState::Placed { peer: peer.clone() },
            },
        );
        vec![
            Effect::Persist(id),
            send(&from, ToAgent::Accepted(id)),
            send(&peer, ToAgent::Place { id, attempt: 1 }),
        ]
    }

    /// `peer` lost its leases (dead, or away longer than the grace period): each of its jobs goes
    /// to another peer, or back to its origin.
    pub fn peer_lost(
        &mut self,
        peer: &Holder,
        mut choose: impl FnMut(&Id, &[Holder]) -> Option<Holder>,
    ) -> Vec<Effect<Id, Out>> {
        let mut effects = Vec::new();
        let max_hops = self.max_hops;
        for (id, h) in self.jobs.iter_mut() {
            if !matches!(&h.state, HandoverState::Placed { peer: p } if p == peer) {
                continue;
            }
            let next = if h.hops >= max_hops {
                None
            } else {
                choose(id, &h.visited).filter(|p| !h.visited.contains(p))
            };
            let reason = if h.hops >= max_hops {
                format!("hop limit ({max_hops}) reached after `{peer}` was lost")
            } else {
                format!("`{peer}` was lost and no other peer can take it")
            };
            effects.extend(move_on(*id, h, next, reason));
        }
        effects
    }

    /// The holder of one job's lease has lost it for certain — a replica refused the job, or was
    /// shown never to have run it — so the job goes to the next target `choose` offers (never one
    /// it has been on), or back to its origin. Anything else (another holder, a finished job) is
    /// ignored: a late failure must not move a job that is running elsewhere.
    pub fn placement_lost(
        &mut self,
        id: Id,
        holder: &Holder,
        why: &str,
        choose: impl FnOnce(&[Holder]) -> Option<Holder>,
    ) -> Vec<Effect<Id, Out>> {
        let max_hops = self.max_hops;
        let Some(h) = self.jobs.get_mut(&id) else {
            return vec![];
        };
        if !matches!(&h.state, HandoverState::Placed { peer } if peer == holder) {
            return vec![];
        }
        let next = if h.hops >= max_hops {
            None
        } else {
            choose(&h.visited).filter(|p| !h.visited.contains(p))
        };
        let reason = if h.hops >= max_hops {
            format!("hop limit ({max_hops}) reached: {why}")
        } else {
            format!("{why}, and no other target can take it")
        };
        move_on(id, h, next, reason).to_vec()
    }

    /// A peer reports the result of a job. The first result wins; later ones (an old lease
    /// holder that came back) are acknowledged and dropped.
    pub fn guest_done(&mut self, id: Id, peer: &Holder, result: Out) -> Vec<Effect<Id, Out>> {
        let ack = send(peer, ToAgent::GuestAck(id));
        let Some(h) = self.jobs.get_mut(&id) else {
            return vec![ack];
        };
        if !matches!(h.state, HandoverState::Placed { .. }) || !h.visited.iter().any(|v| v == peer)
        {
            return vec![ack];
        }
        h.state = HandoverState::Finished(result.clone());
        let origin = Holder::node(&h.origin);
        vec![
            Effect::Persist(id),
            send(&origin, ToAgent::Deliver(id, result)),
            ack,
        ]
    }

    /// The origin has journaled a delivery or a return: the coordinator is done with the job.
    pub fn origin_ack(&mut self, id: Id, origin: &str) -> Vec<Effect<Id, Out>> {
        let answered = self.jobs.get(&id).is_some_and(|h| {
            h.origin == origin && !matches!(h.state, HandoverState::Placed { .. })
        });
        if answered {
            self.jobs.remove(&id);
            vec![Effect::Persist(id)]
        } else {
            vec![]
        }
    }

    /// A node (re)connected: repeat what it may have missed.
    pub fn connected(&self, node: &str) -> Vec<Effect<Id, Out>> {
        let mut effects = Vec::new();
        let to = Holder::node(node);
        for (id, h) in &self.jobs {
            match &h.state {
                HandoverState::Placed { peer } if *peer == to => effects.push(send(
                    &to,
                    ToAgent::Place {
                        id: *id,
                        attempt: h.attempt,
                    },
                )),
                HandoverState::Finished(out) if h.origin == node => {
                    effects.push(send(&to, ToAgent::Deliver(*id, out.clone())));
                }
                HandoverState::Returning(reason) if h.origin == node => {
                    effects.push(send(&to, ToAgent::Return(*id, reason.clone())));
                }
                _ => {}
            }
        }
        effects
    }
}

/// A job whose lease holder lost it goes to `next` (one more hop, a new lease), or, without
/// one, back to its origin with `reason`.
fn move_on<Id: Copy, Out>(
    id: Id,
    h: &mut Handover<Out>,
    next: Option<Holder>,
    reason: String,
) -> [Effect<Id, Out>; 2] {
    match next {
        Some(next) => {
            h.hops += 1;
            h.attempt += 1;
            h.visited.push(next.clone());
            h.state = HandoverState::Placed { peer: next.clone() };
            [
                Effect::Persist(id),
                send(
                    &next,
                    ToAgent::Place {
                        id,
                        attempt: h.attempt,
                    },
                ),
            ]
        }
        None => {
            h.state = HandoverState::Returning(reason.clone());
            [
                Effect::Persist(id),
                send(&Holder::node(&h.origin), ToAgent::Return(id, reason)),
            ]
        }
    }
}

fn send<Id, Out>(to: &Holder, msg: ToAgent<Id, Out>) -> Effect<Id, Out> {
    Effect::Send {
        to: to.clone(),
        msg,
    }
}

/// Where a job is on its origin, as far as the hand-over is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginPhase {
    /// Queued or running here: the origin owns it.
    Local,
    Offered,
    Handed,
    /// Finished (here or elsewhere), delivered.
    Done,
}

/// What the origin does with a coordinator message about one of its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginStep {
    /// Journal the new phase (then acknowledge, for deliveries and returns).
    Become(OriginPhase),
    /// Nothing to journal; acknowledge again (the first acknowledgement was lost).
    Ack,
    Ignore,
}

/// The origin's side of the protocol. A delivery or a return also answers an offer whose
/// acceptance was lost.
pub fn origin_step<Id, Out>(phase: OriginPhase, msg: &ToAgent<Id, Out>) -> OriginStep {
    use OriginPhase::*;
    match (phase, msg) {
        (Offered, ToAgent::Accepted(_)) => OriginStep::Become(Handed),
        (Offered, ToAgent::Declined(..)) => OriginStep::Become(Local),
        (Offered | Handed, ToAgent::Deliver(..)) => OriginStep::Become(Done),
        (Offered | Handed, ToAgent::Return(..)) => OriginStep::Become(Local),
        (Done, ToAgent::Deliver(..)) | (Local | Done, ToAgent::Return(..)) => OriginStep::Ack,
        _ => OriginStep::Ignore,
    }
}
