//! The event loop: arrivals, placement decisions, starts, finishes, rescheduler ticks and view
//! refreshes, in simulated milliseconds. Deterministic: ties are broken by insertion order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use spillway_placement::estimate::RunTimes;
use spillway_placement::{Decision, Job, Mechanism, Millis, Policy, Target, TargetKind};

use crate::report::{Report, Sample};
use crate::scenario::{Answer, NodeSpec, Scenario};

/// Nothing in these workloads should take longer; a job not done by then is lost.
const HORIZON_AFTER_LAST_ARRIVAL_MS: Millis = 6 * 3_600_000;

#[derive(Debug, Clone)]
enum Ev {
    Arrive {
        job: u64,
        node: usize,
    },
    Finish {
        job: u64,
        node: usize,
        run_ms: Millis,
        billed_ms: Millis,
    },
    Tick {
        node: usize,
    },
    Refresh,
    Delete {
        job: u64,
        node: usize,
    },
    /// A pending pod's back-off ended while a slot was free.
    Retry {
        node: usize,
    },
    /// CLUES looks at an elastic cluster.
    Clues {
        node: usize,
    },
    /// A worker node powered on by CLUES is ready.
    NodeUp {
        node: usize,
    },
    Sample,
}

#[derive(Debug, Clone)]
struct JobRt {
    job: Job,
    origin: usize,
    arrived_at: Millis,
    first_start: Option<Millis>,
    first_finish: Option<(Millis, usize)>,
    runs: u32,
    /// Failed scheduling attempts where it waits (Kubernetes backs a pending pod off).
    attempts: u32,
    /// When it may be tried again.
    eligible_at: Millis,
    /// The node whose front end has taken it in (see `NodeSpec::admit_ms`).
    admitted_on: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct NodeRt {
    running: u32,
    queue: VecDeque<u64>,
    /// When each warm elastic instance became idle.
    warm: Vec<Millis>,
    /// When its front end is free to take the next job in.
    admit_free_at: Millis,
    /// CLUES: worker nodes up, when each booting one will be ready, and since when each idle
    /// one has been idle (most recent last).
    up: u32,
    booting: Vec<Millis>,
    idle_since: Vec<Millis>,
}

/// What the refreshed view last saw of a node.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    free: u32,
    queued: u32,
    warm: bool,
}

struct Sim<'a> {
    sc: &'a Scenario,
    policy: &'a mut dyn Policy,
    now: Millis,
    seq: u64,
    heap: BinaryHeap<Reverse<(Millis, u64)>>,
    events: HashMap<u64, Ev>,
    jobs: BTreeMap<u64, JobRt>,
    nodes: Vec<NodeRt>,
    seen: Vec<Seen>,
    index: HashMap<String, usize>,
    times: RunTimes,
    report: Report,
    /// Jobs not finished yet (chained jobs are created before their parent counts as done).
    outstanding: usize,
    next_job: u64,
    /// The pending `Finish` event of each run in progress, by (job, node): a deleted job's run
    /// is stopped by dropping it.
    runs: HashMap<(u64, usize), u64>,
    /// The `Retry` event pending for each node, if any.
    retry_at: Vec<Option<Millis>>,
}

/// Runs `scenario` under `policy` to completion.
pub fn run(scenario: &Scenario, policy: &mut dyn Policy) -> Report {
    let mut times = RunTimes::default();
    for (name, f) in &scenario.functions {
        times.set_prior(name, f.prior_ms);
    }
    let index = scenario
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), i))
        .collect();
    let mut sim = Sim {
        sc: scenario,
        report: Report::new(&scenario.name, policy.name(), &scenario.tiers),
        policy,
        now: 0,
        seq: 0,
        heap: BinaryHeap::new(),
        events: HashMap::new(),
        jobs: BTreeMap::new(),
        nodes: vec![NodeRt::default(); scenario.nodes.len()],
        seen: vec![Seen::default(); scenario.nodes.len()],
        index,
        times,
        outstanding: 0,
        next_job: 0,
        runs: HashMap::new(),
        retry_at: vec![None; scenario.nodes.len()],
    };
    sim.refresh();
    for a in &scenario.arrivals {
        let node = sim.index[&a.node];
        let id = sim.new_job(&a.function, node, a.at);
        sim.push(a.at, Ev::Arrive { job: id, node });
    }
    for (i, n) in scenario.nodes.iter().enumerate() {
        if n.decides {
            let tick = sim.policy.tick_ms();
            sim.push(tick, Ev::Tick { node: i });
        }
    }
    for (i, n) in scenario.nodes.iter().enumerate() {
        if let Some(c) = n.clues {
            sim.nodes[i].up = c.min_nodes;
            sim.push(c.period_ms, Ev::Clues { node: i });
        }
    }
    let refresh = sim.policy.view_refresh_ms();
    sim.push(refresh, Ev::Refresh);
    sim.push(0, Ev::Sample);
    let horizon =
        scenario.arrivals.iter().map(|a| a.at).max().unwrap_or(0) + HORIZON_AFTER_LAST_ARRIVAL_MS;
    while let Some(Reverse((at, seq))) = sim.heap.pop() {
        if at > horizon {
            break;
        }
        sim.now = at;
        let Some(ev) = sim.events.remove(&seq) else {
            continue;
        };
        sim.handle(ev);
        // Done when every job finished and no duplicate run is still going (it is billed too).
        let busy = |s: &u64| {
            matches!(
                sim.events.get(s),
                Some(Ev::Arrive { .. } | Ev::Finish { .. })
            )
        };
        if sim.done() && !sim.heap.iter().any(|Reverse((_, s))| busy(s)) {
            break;
        }
    }
    sim.finish()
}

impl Sim<'_> {
    fn push(&mut self, at: Millis, ev: Ev) -> u64 {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.heap.push(Reverse((at, self.seq)));
        self.seq
    }

    fn done(&self) -> bool {
        self.outstanding == 0
    }

    fn spec(&self, node: usize) -> &NodeSpec {
        &self.sc.nodes[node]
    }

    fn new_job(&mut self, function: &str, origin: usize, at: Millis) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        let f = &self.sc.functions[function];
        self.jobs.insert(
            id,
            JobRt {
                job: Job {
                    id,
                    function: function.into(),
                    input_bytes: f.input_bytes,
                    origin: self.sc.nodes[origin].id.clone(),
                    hops: 0,
                    visited: vec![self.sc.nodes[origin].id.clone()],
                    queued_at: at,
                },
                origin,
                arrived_at: at,
                first_start: None,
                first_finish: None,
                runs: 0,
                attempts: 0,
                eligible_at: at,
                admitted_on: None,
            },
        );
        self.outstanding += 1;
        id
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive { job, node } => self.arrive(job, node),
            Ev::Finish {
                job,
                node,
                run_ms,
                billed_ms,
            } => self.finish_run(job, node, run_ms, billed_ms),
            Ev::Tick { node } => {
                // A rescheduler pass with slow hand-overs ends when its last one does; the next
                // pass starts an interval after that (OSCAR's loop sleeps between passes).
                let busy = self.tick(node);
                if !self.done() {
                    let next = self.now + busy + self.policy.tick_ms();
                    self.push(next, Ev::Tick { node });
                }
            }
            Ev::Refresh => {
                self.refresh();
                if !self.done() {
                    let next = self.now + self.policy.view_refresh_ms();
                    self.push(next, Ev::Refresh);
                }
            }
            Ev::Delete { job, node } => {
                // Gone from the queue if it had not started. If it had, deleting its Kubernetes
                // Job kills the pod: the run stops, its slot frees, and it still counts as run
                // twice (it started on two targets).
                self.nodes[node].queue.retain(|j| *j != job);
                if let Some(seq) = self.runs.remove(&(job, node)) {
                    self.events.remove(&seq);
                    self.nodes[node].running -= 1;
                    self.report.killed();
                    self.try_start(node);
                }
            }
            Ev::Clues { node } => {
                self.clues(node);
                if !self.done() {
                    let period = self.spec(node).clues.map_or(1_000, |c| c.period_ms);
                    self.push(self.now + period, Ev::Clues { node });
                }
            }
            Ev::NodeUp { node } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if let Some(i) = n.booting.iter().position(|t| *t == now) {
                    n.booting.swap_remove(i);
                    n.up += 1;
                }
                self.try_start(node);
            }
            Ev::Retry { node } => {
                if self.retry_at[node] == Some(self.now) {
                    self.retry_at[node] = None;
                }
                self.try_start(node);
            }
            Ev::Sample => {
                self.sample();
                if !self.done() {
                    self.push(self.now + 1000, Ev::Sample);
                }
            }
        }
    }

    /// The job slots node `i` has now: its slots, or those of the worker nodes up (`None`:
    /// elastic without limit).
    fn capacity(&self, i: usize) -> Option<u32> {
        let spec = &self.sc.nodes[i];
        match spec.clues {
            Some(c) => Some(self.nodes[i].up * c.slots_per_node),
            None => spec.slots,
        }
    }

    /// What an elastic cluster with no worker node up adds before a job can start there: a
    /// node's boot (its status says it has no nodes; a caller weighs that as Lambda's cold
    /// start).
    fn boot_ms(&self, i: usize) -> Millis {
        match self.sc.nodes[i].clues {
            Some(c) if self.nodes[i].up == 0 => c.boot_ms,
            _ => 0,
        }
    }

    /// One CLUES pass: power on nodes for the jobs that pend (one per `slots_per_node` of them,
    /// counting those already booting), and off those idle long enough, down to the minimum.
    fn clues(&mut self, node: usize) {
        let Some(c) = self.spec(node).clues else {
            return;
        };
        let now = self.now;
        let free = self
            .capacity(node)
            .unwrap_or(0)
            .saturating_sub(self.nodes[node].running);
        let n = &mut self.nodes[node];
        let pending = (n.queue.len() as u32).saturating_sub(free);
        let wanted = pending
            .div_ceil(c.slots_per_node.max(1))
            .saturating_sub(n.booting.len() as u32)
            .min(c.max_nodes.saturating_sub(n.up + n.booting.len() as u32));
        let after = n.booting.iter().copied().max().unwrap_or(0);
        let mut ready = Vec::new();
        for k in 0..wanted {
            let at = (now + c.boot_ms + Millis::from(k) * c.stagger_ms).max(after + c.stagger_ms);
            n.booting.push(at);
            ready.push(at);
        }
        // A node is idle when no job runs on it: kube-scheduler spreads pods over nodes, so
        // nodes idle are those beyond one per running job.
        let idle = n.up.saturating_sub(n.running) as usize;
        n.idle_since.truncate(idle);
        while n.idle_since.len() < idle {
            n.idle_since.push(now);
        }
        while n.up > c.min_nodes
            && n.idle_since
                .first()
                .is_some_and(|t| now.saturating_sub(*t) >= c.idle_off_ms)
        {
            n.idle_since.remove(0);
            n.up -= 1;
        }
        for at in ready {
            self.push(at, Ev::NodeUp { node });
        }
    }

    /// What node `i` looks like at this moment.
    fn seen_now(&self, i: usize) -> Seen {
        let n = &self.nodes[i];
        let spec = &self.sc.nodes[i];
        Seen {
            free: self.capacity(i).map_or(0, |s| s.saturating_sub(n.running)),
            queued: n.queue.len() as u32,
            warm: n
                .warm
                .iter()
                .any(|t| self.now.saturating_sub(*t) < spec.keep_warm_ms),
        }
    }

    fn refresh(&mut self) {
        for i in 0..self.nodes.len() {
            self.seen[i] = self.seen_now(i);
        }
    }

    fn target(&self, of: usize, kind: TargetKind, tier: u32, live: bool) -> Target {
        let spec = self.spec(of);
        let Seen { free, queued, warm } = if live {
            self.seen_now(of)
        } else {
            self.seen[of]
        };
        Target {
            id: spec.id.clone(),
            kind,
            tier,
            slots: self.capacity(of),
            free_slots: free,
            queued,
            latency_ms: spec.latency_ms,
            bytes_per_ms: spec.bytes_per_ms,
            start_ms: spec.start_ms
                + if spec.slots.is_none() && !warm {
                    spec.cold_start_ms
                } else {
                    0
                }
                + self.boot_ms(of),
            cost: spec.cost,
        }
    }

    /// The targets as `node`'s policy sees them.
    fn view(&self, node: usize) -> Vec<Target> {
        let mut view = vec![self.target(node, TargetKind::Origin, 0, self.policy.knows_own_load())];
        for (id, kind, tier) in &self.spec(node).sees {
            view.push(self.target(self.index[id], *kind, *tier, false));
        }
        view
    }

    fn transfer_ms(&self, job: u64, to: usize) -> Millis {
        let spec = self.spec(to);
        spec.latency_ms
            + (self.jobs[&job].job.input_bytes as f64 / spec.bytes_per_ms.max(1e-9)) as Millis
    }

    fn send(&mut self, job: u64, from: usize, to_id: &str, mechanism: Mechanism) {
        let to = self.index[to_id];
        let at = self.now + self.transfer_ms(job, to);
        if let Some(j) = self.jobs.get_mut(&job) {
            j.job.hops += 1;
            j.job.visited.push(to_id.to_owned());
        }
        self.report.delegated(
            mechanism,
            &self.sc.nodes[from].tier,
            &self.sc.nodes[to].tier,
        );
        if self.policy.counts_own_placements() {
            let seen = &mut self.seen[to];
            if seen.free > 0 {
                seen.free -= 1;
            } else {
                seen.queued += 1;
            }
        }
        self.push(at, Ev::Arrive { job, node: to });
    }

    fn arrive(&mut self, job: u64, node: usize) {
        let admit_ms = self.spec(node).admit_ms;
        if admit_ms > 0 && self.jobs[&job].admitted_on != Some(node) {
            let at = self.now.max(self.nodes[node].admit_free_at) + admit_ms;
            self.nodes[node].admit_free_at = at;
            if let Some(j) = self.jobs.get_mut(&job) {
                j.admitted_on = Some(node);
            }
            self.push(at, Ev::Arrive { job, node });
            return;
        }
        // A job placed here for another node is decided about again only where guests do not
        // simply stay (as a live Spillway agent hosts them).
        let own = self.jobs[&job].origin == node;
        if self.spec(node).decides && (own || !self.policy.guests_stay()) {
            let rt = &self.jobs[&job];
            let f = &self.sc.functions[&rt.job.function].spec;
            let view = self.view(node);
            let mut asked = rt.job.clone();
            asked.origin = self.sc.nodes[node].id.clone();
            let decision = self
                .policy
                .on_arrival(&asked, f, &view, &self.times, self.now);
            if let Decision::Delegate { target, mechanism } = decision {
                self.send(job, node, &target, mechanism);
                return;
            }
        }
        if let Some(j) = self.jobs.get_mut(&job) {
            j.job.queued_at = self.now;
            j.attempts = 0;
            j.eligible_at = self.now;
        }
        self.nodes[node].queue.push_back(job);
        self.try_start(node);
    }

    fn try_start(&mut self, node: usize) {
        let spec = self.sc.nodes[node].clone();
        loop {
            if self
                .capacity(node)
                .is_some_and(|s| self.nodes[node].running >= s)
            {
                self.back_off(node);
                return;
            }
            let Some(job) = self.next_pending(node) else {
                return;
            };
            let function = self.jobs[&job].job.function.clone();
            let runs_before = self.jobs[&job].runs;
            let run_ms = run_time(&spec, &function, job, runs_before);
            let mut start = spec.start_ms;
            if spec.slots.is_none() {
                let now = self.now;
                let warm = self.nodes[node]
                    .warm
                    .iter()
                    .position(|t| now.saturating_sub(*t) < spec.keep_warm_ms);
                match warm {
                    Some(i) => {
                        self.nodes[node].warm.swap_remove(i);
                    }
                    None => start += spec.cold_start_ms,
                }
            }
            self.nodes[node].running += 1;
            let now = self.now;
            if let Some(j) = self.jobs.get_mut(&job) {
                j.runs += 1;
                // Queue time ends when the function runs: pod scheduling and container start
                // count as waiting (Kubernetes reports them as Pending).
                j.first_start.get_or_insert(now + start);
                if j.runs > 1 {
                    self.report.duplicate();
                }
            }
            let billed = run_ms + start.saturating_sub(spec.start_ms);
            let seq = self.push(
                now + start + run_ms,
                Ev::Finish {
                    job,
                    node,
                    run_ms,
                    billed_ms: billed,
                },
            );
            self.runs.insert((job, node), seq);
        }
    }

    /// The job to start next: the oldest, or under Kubernetes' back-off the oldest whose
    /// back-off has ended (a `Retry` is set for the earliest end when none has).
    fn next_pending(&mut self, node: usize) -> Option<u64> {
        if self.spec(node).backoff_max_ms == 0 {
            return self.nodes[node].queue.pop_front();
        }
        let now = self.now;
        let jobs = &self.jobs;
        let queue = &mut self.nodes[node].queue;
        if let Some(i) = queue.iter().position(|j| jobs[j].eligible_at <= now) {
            return queue.remove(i);
        }
        let next = queue.iter().map(|j| jobs[j].eligible_at).min()?;
        if self.retry_at[node].is_none_or(|at| next < at) {
            self.retry_at[node] = Some(next);
            self.push(next, Ev::Retry { node });
        }
        None
    }

    /// The cluster is full: every pending pod tried now fails and backs off (1 s, doubling, up
    /// to the node's maximum), as kube-scheduler does; a long-pending pod is then tried rarely
    /// and loses free slots to newer ones, which is how jobs come to pend past the threshold.
    fn back_off(&mut self, node: usize) {
        let max = self.spec(node).backoff_max_ms;
        if max == 0 {
            return;
        }
        let now = self.now;
        for id in &self.nodes[node].queue {
            if let Some(j) = self.jobs.get_mut(id)
                && j.eligible_at <= now
            {
                j.attempts += 1;
                let backoff = 1_000u64
                    .checked_shl(j.attempts.saturating_sub(1).min(20))
                    .unwrap_or(max);
                j.eligible_at = now + backoff.min(max);
            }
        }
    }

    fn finish_run(&mut self, job: u64, node: usize, run_ms: Millis, billed_ms: Millis) {
        self.runs.remove(&(job, node));
        let spec = self.sc.nodes[node].clone();
        self.nodes[node].running -= 1;
        if spec.slots.is_none() {
            self.nodes[node].warm.push(self.now);
        }
        if let Some(c) = spec.cost {
            self.report
                .bill(billed_ms as f64 / 1000.0 * c.memory_gb, c.usd_per_gb_s);
        }
        let function = self.jobs[&job].job.function.clone();
        self.times.observe(&function, &spec.id, run_ms);
        if self.jobs[&job].first_finish.is_some() {
            self.report.finished_again();
        } else {
            let now = self.now;
            let (origin, arrived, started) = {
                let j = self.jobs.get_mut(&job).expect("known job");
                j.first_finish = Some((now, node));
                (j.origin, j.arrived_at, j.first_start.unwrap_or(now))
            };
            self.outstanding -= 1;
            self.report.ran_on.insert(job, spec.id.clone());
            let lower = self.lower_bound(&function, origin);
            self.report.completed(
                &function,
                now,
                &spec.tier,
                started - arrived,
                now - arrived,
                lower,
            );
            if let Some((next, fan)) = self.sc.functions[&function].then.clone() {
                let back = if node == origin { 0 } else { spec.latency_ms };
                for _ in 0..fan {
                    let id = self.new_job(&next, origin, now + back);
                    self.push(
                        now + back,
                        Ev::Arrive {
                            job: id,
                            node: origin,
                        },
                    );
                }
            }
        }
        self.try_start(node);
    }

    /// One rescheduler pass; returns how long its hand-overs keep it busy.
    fn tick(&mut self, node: usize) -> Millis {
        let guests_stay = self.policy.guests_stay();
        let queued: Vec<Job> = self.nodes[node]
            .queue
            .iter()
            .filter(|id| !guests_stay || self.jobs[*id].origin == node)
            .map(|id| self.jobs[id].job.clone())
            .collect();
        let Some(first) = queued.first() else {
            return 0;
        };
        let f = self.sc.functions[&first.function].spec.clone();
        let view = self.view(node);
        let moves = self
            .policy
            .on_tick(&queued, &f, &view, &self.times, self.now);
        let atomic = self.policy.atomic_handover();
        // OSCAR's Rescheduler calls the replicas one job at a time and deletes the local copy
        // only once the call answered; a call that times out leaves the local copy queued.
        let mut busy: Millis = 0;
        for (job, decision) in moves {
            let Decision::Delegate { target, mechanism } = decision else {
                continue;
            };
            if atomic {
                self.nodes[node].queue.retain(|j| *j != job);
            } else {
                let (call, answered) = self.call_ms(job, self.index[&target]);
                busy += call;
                if answered {
                    self.push(self.now + busy, Ev::Delete { job, node });
                }
            }
            self.send(job, node, &target, mechanism);
        }
        busy
    }

    /// How long a delegation call to `to` keeps the caller waiting, and whether it answered
    /// before the caller's timeout.
    fn call_ms(&self, job: u64, to: usize) -> (Millis, bool) {
        let spec = self.spec(to);
        match spec.answer {
            Answer::Accepted { after_ms } => (after_ms, true),
            Answer::WhenDone { timeout_ms } => {
                let function = &self.jobs[&job].job.function;
                let done = self.transfer_ms(job, to)
                    + spec.start_ms
                    + if self.seen_now(to).warm {
                        0
                    } else {
                        spec.cold_start_ms
                    }
                    + base_run_ms(spec, function);
                (done.min(timeout_ms), done <= timeout_ms)
            }
        }
    }

    /// No queueing anywhere: the fastest target's transfer + start + run.
    fn lower_bound(&self, function: &str, origin: usize) -> Millis {
        self.sc
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let run = *n.run_ms.get(function)?;
                let transfer = if i == origin {
                    0
                } else {
                    n.latency_ms
                        + (self.sc.functions[function].input_bytes as f64 / n.bytes_per_ms)
                            as Millis
                };
                Some(transfer + n.start_ms + run)
            })
            .min()
            .unwrap_or(0)
    }

    fn sample(&mut self) {
        let mut by_tier: BTreeMap<String, Sample> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let s = by_tier.entry(self.sc.nodes[i].tier.clone()).or_default();
            s.queued += n.queue.len() as u32;
            s.running += n.running;
        }
        self.report.sample(self.now, by_tier);
    }

    fn finish(mut self) -> Report {
        let lost = self
            .jobs
            .values()
            .filter(|j| j.first_finish.is_none())
            .count();
        self.report.close(self.jobs.len(), lost, self.now);
        self.report
    }
}

/// The node's time for the function before any spread (1 s if the scenario gives none).
fn base_run_ms(spec: &NodeSpec, function: &str) -> Millis {
    spec.run_ms.get(function).copied().unwrap_or(1000)
}

/// A run's duration: the node's time for the function, spread by `spread_pct` either way by a
/// hash of the job and the attempt (deterministic: the same job runs as long in every replay).
fn run_time(spec: &NodeSpec, function: &str, job: u64, attempt: u32) -> Millis {
    let base = base_run_ms(spec, function);
    if spec.spread_pct == 0 {
        return base;
    }
    let mut z = job
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // u in [-1, 1]
    let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let factor = 1.0 + f64::from(spec.spread_pct) / 100.0 * u;
    (base as f64 * factor).round().max(1.0) as Millis
}
