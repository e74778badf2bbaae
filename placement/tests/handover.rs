//! The hand-over protocol under random interleavings of offers, answers, link cuts,
//! reconnections, lease losses, peer deaths and finished runs: a job never has two owners, never
//! lands on a node it visited, is delivered at most once, and — once the network heals — every
//! job is delivered exactly once and the coordinator forgets it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use spillway_placement::handover::{
    Effect, HandoverState, Holder, Ledger, OriginPhase, OriginStep, ToAgent, origin_step,
};

const ORIGIN: &str = "origin";
const PEERS: [&str; 3] = ["p1", "p2", "p3"];
const JOBS: u32 = 4;
const MAX_HOPS: u8 = 2;

/// A result is the name of the peer that produced it.
type Out = String;

#[derive(Debug, Clone)]
enum ToCoordinator {
    Offer(u32),
    GuestDone(u32, String),
    Ack(u32),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Offer(u32),
    /// The origin writes one decided offer to the wire (its input upload finished).
    OriginFlush,
    ToCoordinator,
    ToNode(usize),
    Cut(usize),
    Reconnect(usize),
    LeaseExpired(usize),
    PeerFinishes(usize),
    PeerDies(usize),
    OriginRuns(u32),
}

fn node(name: &str) -> Holder {
    Holder::node(name)
}

fn node_name(n: usize) -> &'static str {
    if n == 0 { ORIGIN } else { PEERS[(n - 1) % 3] }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..JOBS).prop_map(Op::Offer),
        4 => Just(Op::OriginFlush),
        6 => Just(Op::ToCoordinator),
        6 => (0..4usize).prop_map(Op::ToNode),
        1 => (0..4usize).prop_map(Op::Cut),
        2 => (0..4usize).prop_map(Op::Reconnect),
        1 => (1..4usize).prop_map(Op::LeaseExpired),
        3 => (1..4usize).prop_map(Op::PeerFinishes),
        1 => (1..4usize).prop_map(Op::PeerDies),
        1 => (0..JOBS).prop_map(Op::OriginRuns),
    ]
}

#[derive(Debug, Clone)]
struct OriginJob {
    phase: OriginPhase,
    returned: bool,
    delivered: u32,
}

#[derive(Debug, Default, Clone)]
struct Peer {
    dead: bool,
    /// Guest jobs: id → finished.
    guests: BTreeMap<u32, bool>,
}

struct World {
    ledger: Ledger<u32, Out>,
    origin: Vec<OriginJob>,
    peers: Vec<Peer>,
    up: [bool; 4],
    to_coordinator: VecDeque<(usize, ToCoordinator)>,
    to_node: [VecDeque<ToAgent<u32, Out>>; 4],
    /// Offers the origin decided but has not written yet (their inputs are uploading).
    outbox: VecDeque<u32>,
    /// Every placement ever sent: (job, peer, attempt).
    placements: Vec<(u32, String, u32)>,
}

fn index(node: &str) -> usize {
    if node == ORIGIN {
        0
    } else {
        1 + PEERS.iter().position(|p| *p == node).unwrap()
    }
}

impl World {
    fn new() -> Self {
        Self {
            ledger: Ledger::new(MAX_HOPS),
            origin: (0..JOBS)
                .map(|_| OriginJob {
                    phase: OriginPhase::Local,
                    returned: false,
                    delivered: 0,
                })
                .collect(),
            peers: vec![Peer::default(); 3],
            up: [true; 4],
            to_coordinator: VecDeque::new(),
            to_node: Default::default(),
            outbox: VecDeque::new(),
            placements: Vec::new(),
        }
    }

    /// The first live, connected peer not yet visited: the shell's choice.
    fn chooser(peers: &[Peer], up: &[bool; 4]) -> impl Fn(&[Holder]) -> Option<Holder> + use<> {
        let candidates: Vec<Holder> = PEERS
            .iter()
            .enumerate()
            .filter(|(i, _)| !peers[*i].dead && up[i + 1])
            .map(|(_, p)| node(p))
            .collect();
        move |visited: &[Holder]| candidates.iter().find(|c| !visited.contains(c)).cloned()
    }

    fn apply(&mut self, effects: Vec<Effect<u32, Out>>) {
        for e in effects {
            if let Effect::Send { to, msg } = e {
                let n = index(to.id());
                if let ToAgent::Place { id, attempt } = &msg {
                    self.placements.push((*id, to.id().to_owned(), *attempt));
                }
                if self.up[n] {
                    self.to_node[n].push_back(msg);
                }
            }
        }
    }

    fn send_up(&mut self, from: usize, msg: ToCoordinator) {
        if self.up[from] {
            self.to_coordinator.push_back((from, msg));
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Offer(j) => {
                let job = &mut self.origin[j as usize];
                if self.up[0] && job.phase == OriginPhase::Local && !job.returned {
                    job.phase = OriginPhase::Offered;
                    self.outbox.push_back(j);
                }
            }
            Op::OriginFlush => {
                // The answer may have arrived meanwhile: an offer leaves only while its job still
                // waits for one (the check the link makes as it writes the frame).
                if let Some(j) = self.outbox.pop_front() {
                    let phase = self.origin[j as usize].phase;
                    if matches!(phase, OriginPhase::Offered | OriginPhase::Handed) {
                        self.send_up(0, ToCoordinator::Offer(j));
                    }
                }
            }
            Op::ToCoordinator => {
                let Some((from, msg)) = self.to_coordinator.pop_front() else {
                    return;
                };
                let name = node_name(from);
                let effects = match msg {
                    ToCoordinator::Offer(j) => {
                        let choose = Self::chooser(&self.peers, &self.up);
                        self.ledger.offer(j, name, "f", choose)
                    }
                    ToCoordinator::GuestDone(j, out) => self.ledger.guest_done(j, &node(name), out),
                    ToCoordinator::Ack(j) => self.ledger.origin_ack(j, name),
                };
                self.apply(effects);
            }
            Op::ToNode(n) => {
                let Some(msg) = self.to_node[n].pop_front() else {
                    return;
                };
                if n == 0 {
                    self.origin_receives(msg);
                } else {
                    self.peer_receives(n, msg);
                }
            }
            Op::Cut(n) => {
                self.up[n] = false;
                if n == 0 {
                    self.outbox.clear();
                }
                self.to_node[n].clear();
                self.to_coordinator.retain(|(from, _)| *from != n);
            }
            Op::Reconnect(n) => {
                // A reconnection is a new connection: the old one's frames are gone (the
                // coordinator drops frames from a session that is no longer the node's current one).
                if self.up[n] || (n > 0 && self.peers[n - 1].dead) {
                    return;
                }
                self.up[n] = true;
                let effects = self.ledger.connected(node_name(n));
                self.apply(effects);
                if n == 0 {
                    for j in 0..JOBS {
                        let phase = self.origin[j as usize].phase;
                        if matches!(phase, OriginPhase::Offered | OriginPhase::Handed) {
                            self.outbox.push_back(j);
                        }
                    }
                } else {
                    let finished: Vec<u32> = self.peers[n - 1]
                        .guests
                        .iter()
                        .filter(|(_, done)| **done)
                        .map(|(j, _)| *j)
                        .collect();
                    for j in finished {
                        self.send_up(n, ToCoordinator::GuestDone(j, node_name(n).into()));
                    }
                }
            }
            Op::LeaseExpired(n) => {
                // The shell only expires the leases of a peer that has been away long enough.
                if !self.up[n] {
                    self.lose_peer(n);
                }
            }
            Op::PeerFinishes(n) => {
                let peer = &mut self.peers[n - 1];
                if peer.dead {
                    return;
                }
                if let Some((j, done)) = peer.guests.iter_mut().find(|(_, d)| !**d) {
                    *done = true;
                    let j = *j;
                    self.send_up(n, ToCoordinator::GuestDone(j, node_name(n).into()));
                }
            }
            Op::PeerDies(n) => {
                self.peers[n - 1].dead = true;
                self.step(Op::Cut(n));
                self.lose_peer(n);
            }
            Op::OriginRuns(j) => {
                let job = &mut self.origin[j as usize];
                if job.phase == OriginPhase::Local {
                    job.phase = OriginPhase::Done;
                    job.delivered += 1;
                }
            }
        }
    }

    fn lose_peer(&mut self, n: usize) {
        let candidates = Self::chooser(&self.peers, &self.up);
        let effects = self
            .ledger
            .peer_lost(&node(node_name(n)), |_, visited| candidates(visited));
        self.apply(effects);
    }

    fn origin_receives(&mut self, msg: ToAgent<u32, Out>) {
        let j = match &msg {
            ToAgent::Accepted(j)
            | ToAgent::Declined(j, _)
            | ToAgent::Deliver(j, _)
            | ToAgent::Return(j, _)
            | ToAgent::GuestAck(j)
            | ToAgent::Place { id: j, .. } => *j,
        };
        let job = &mut self.origin[j as usize];
        let acknowledge = match origin_step(job.phase, &msg) {
            OriginStep::Become(phase) => {
                job.phase = phase;
                match &msg {
                    ToAgent::Deliver(..) => {
                        job.delivered += 1;
                        true
                    }
                    ToAgent::Return(..) => {
                        job.returned = true;
                        true
                    }
                    _ => false,
                }
            }
            OriginStep::Ack => true,
            OriginStep::Ignore => false,
        };
        if acknowledge {
            self.send_up(0, ToCoordinator::Ack(j));
        }
    }

    fn peer_receives(&mut self, n: usize, msg: ToAgent<u32, Out>) {
        let peer = &mut self.peers[n - 1];
        match msg {
            ToAgent::Place { id, .. } => {
                peer.guests.entry(id).or_insert(false);
            }
            ToAgent::GuestAck(id) => {
                peer.guests.remove(&id);
            }
            other => panic!("a peer got an origin's message: {other:?}"),
        }
    }

    fn check_one_owner(&self) {
        for (j, job) in self.origin.iter().enumerate() {
            let coordinator_owns = self.ledger.get(&(j as u32)).is_some_and(|h| {
                matches!(
                    h.state,
                    HandoverState::Placed { .. } | HandoverState::Finished(_)
                )
            });
            assert!(
                !(job.phase == OriginPhase::Local && coordinator_owns),
                "job {j} has two owners: the origin runs it and the coordinator holds it ({:?})",
                self.ledger.get(&(j as u32))
            );
            assert!(
                job.delivered <= 1,
                "job {j} delivered {} times",
                job.delivered
            );
        }
        // Placements are repeated after reconnections, but a peer never gets a second lease.
        let mut leases = BTreeMap::new();
        for (j, peer, attempt) in &self.placements {
            assert_ne!(peer, ORIGIN, "job {j} placed on its origin");
            let first = leases.entry((*j, peer.clone())).or_insert(*attempt);
            assert_eq!(first, attempt, "job {j} placed on {peer} twice");
        }
        for (_, h) in self.ledger.iter() {
            assert!(h.hops <= MAX_HOPS, "hop limit exceeded: {h:?}");
        }
    }

    /// Heal every link and let everything run out.
    fn settle(&mut self) {
        for n in 0..4 {
            self.step(Op::Reconnect(n));
        }
        for _ in 0..200 {
            while !self.outbox.is_empty() {
                self.step(Op::OriginFlush);
            }
            for n in 0..4 {
                while !self.to_node[n].is_empty() {
                    self.step(Op::ToNode(n));
                }
            }
            while !self.to_coordinator.is_empty() {
                self.step(Op::ToCoordinator);
            }
            for n in 1..4 {
                self.step(Op::PeerFinishes(n));
            }
            for j in 0..JOBS {
                self.step(Op::OriginRuns(j));
            }
            self.check_one_owner();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_interleaving_gives_a_job_two_owners_or_two_deliveries(ops in prop::collection::vec(op(), 0..120)) {
        let mut world = World::new();
        for op in ops {
            world.step(op);
            world.check_one_owner();
        }
        world.settle();
        for (j, job) in world.origin.iter().enumerate() {
            prop_assert_eq!(job.phase, OriginPhase::Done, "job {} never finished", j);
            prop_assert_eq!(job.delivered, 1, "job {} delivered {} times", j, job.delivered);
        }
        prop_assert!(world.ledger.is_empty(), "the coordinator still holds jobs: {:?}", world.ledger.iter().collect::<Vec<_>>());
    }
}

#[test]
fn a_lost_acceptance_is_repaired_by_offering_again() {
    let mut ledger: Ledger<u32, Out> = Ledger::new(3);
    let first = ledger.offer(7, ORIGIN, "f", |_| Some(node("p1")));
    assert!(first.contains(&Effect::Send {
        to: node("p1"),
        msg: ToAgent::Place { id: 7, attempt: 1 }
    }));
    let again = ledger.offer(7, ORIGIN, "f", |_| Some(node("p2")));
    assert_eq!(
        again,
        vec![Effect::Send {
            to: node(ORIGIN),
            msg: ToAgent::Accepted(7)
        }],
        "a repeated offer is answered, not placed twice"
    );
}

#[test]
fn a_job_comes_home_when_its_hops_run_out() {
    let mut ledger: Ledger<u32, Out> = Ledger::new(2);
    ledger.offer(1, ORIGIN, "f", |_| Some(node("p1")));
    ledger.peer_lost(&node("p1"), |_, _| Some(node("p2")));
    let effects = ledger.peer_lost(&node("p2"), |_, _| Some(node("p3")));
    assert!(
        matches!(&effects[..], [Effect::Persist(1), Effect::Send { to, msg: ToAgent::Return(1, reason) }] if to.is_node(ORIGIN) && reason.contains("hop limit")),
        "{effects:?}"
    );
}

#[test]
fn the_first_result_wins_and_late_ones_are_only_acknowledged() {
    let mut ledger: Ledger<u32, Out> = Ledger::new(3);
    ledger.offer(1, ORIGIN, "f", |_| Some(node("p1")));
    ledger.peer_lost(&node("p1"), |_, _| Some(node("p2")));
    let first = ledger.guest_done(1, &node("p1"), "from p1".into());
    assert!(first.contains(&Effect::Send {
        to: node(ORIGIN),
        msg: ToAgent::Deliver(1, "from p1".into())
    }));
    let late = ledger.guest_done(1, &node("p2"), "from p2".into());
    assert_eq!(
        late,
        vec![Effect::Send {
            to: node("p2"),
            msg: ToAgent::GuestAck(1)
        }]
    );
}
