//! Admission on one node, sans-IO: which queued jobs may start now.
//!
//! Each function asks for CPU and memory per job (its FDL `cpu`/`memory`) and may cap its own
//! concurrency (`max_concurrency`). The node has a fixed capacity. Jobs start oldest first; a job
//! held back only by its own function's cap does not block other functions, but a job that does
//! not fit the node's free resources blocks everything behind it, so big jobs never starve.

use std::collections::{HashMap, VecDeque};

use spillway_proto::JobId;
use spillway_proto::quantity::{Bytes, Millicores};

/// Resources: what a job asks for, or what a node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    pub cpu: Millicores,
    pub memory: Bytes,
}

impl Demand {
    fn fits_within(self, free: Demand) -> bool {
        self.cpu <= free.cpu && self.memory <= free.memory
    }

    fn plus(self, other: Demand) -> Demand {
        Demand {
            cpu: Millicores(self.cpu.0 + other.cpu.0),
            memory: Bytes(self.memory.0 + other.memory.0),
        }
    }

    fn minus(self, other: Demand) -> Demand {
        Demand {
            cpu: Millicores(self.cpu.0.saturating_sub(other.cpu.0)),
            memory: Bytes(self.memory.0.saturating_sub(other.memory.0)),
        }
    }
}

/// A function's per-job demand and concurrency cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionLimits {
    pub demand: Demand,
    pub max_concurrency: Option<u32>,
}

/// Why a function cannot run on this node at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum AdmissionError {
    /// function `{name}` asks for {asked} of memory per job but this node offers {offered}; lower `memory` or run it elsewhere
    MemoryTooLarge {
        name: String,
        asked: Bytes,
        offered: Bytes,
    },
    /// function `{name}` asks for {asked} CPU per job but this node offers {offered}; lower `cpu` or run it elsewhere
    CpuTooLarge {
        name: String,
        asked: Millicores,
        offered: Millicores,
    },
}

#[derive(Debug)]
pub struct Scheduler {
    capacity: Demand,
    used: Demand,
    functions: HashMap<String, (FunctionLimits, u32)>,
    queue: VecDeque<(JobId, String)>,
    /// Each running job with what it holds, so finishing frees exactly that even if its
    /// function was redeployed with other limits (or removed) meanwhile.
    running: HashMap<JobId, (String, Demand)>,
}

impl Scheduler {
    pub fn new(capacity: Demand) -> Self {
        Self {
            capacity,
            used: Demand::default(),
            functions: HashMap::new(),
            queue: VecDeque::new(),
            running: HashMap::new(),
        }
    }

    pub fn capacity(&self) -> Demand {
        self.capacity
    }

    /// Registers (or updates) a function; refuses one whose single job cannot fit this node.
    pub fn add_function(
        &mut self,
        name: &str,
        limits: FunctionLimits,
    ) -> Result<(), AdmissionError> {
        if limits.demand.memory > self.capacity.memory {
            return Err(AdmissionError::MemoryTooLarge {
                name: name.into(),
                asked: limits.demand.memory,
                offered: self.capacity.memory,
            });
        }
        if limits.demand.cpu > self.capacity.cpu {
            return Err(AdmissionError::CpuTooLarge {
                name: name.into(),
                asked: limits.demand.cpu,
                offered: self.capacity.cpu,
            });
        }
        let running = self.functions.get(name).map(|(_, r)| *r).unwrap_or(0);
        self.functions.insert(name.to_owned(), (limits, running));
        Ok(())
    }

    /// Forgets a function that will not be deployed after all.
    pub fn remove_function(&mut self, name: &str) {
        self.functions.remove(name);
    }

    /// How many jobs of this function can run at once on an idle node.
    pub fn slots(&self, name: &str) -> u32 {
        let Some((limits, _)) = self.functions.get(name) else {
            return 0;
        };
        let d = limits.demand;
        // A zero demand never limits.
        let by_cpu = self.capacity.cpu.0.checked_div(d.cpu.0).unwrap_or(u64::MAX);
        let by_mem = self
            .capacity
            .memory
            .0
            .checked_div(d.memory.0)
            .unwrap_or(u64::MAX);
        let by_resources = u32::try_from(by_cpu.min(by_mem)).unwrap_or(u32::MAX);
        limits
            .max_concurrency
            .map_or(by_resources, |m| m.min(by_resources))
    }

    /// Queues a job. Jobs of unknown functions are the caller's bug; they are never admitted.
    pub fn enqueue(&mut self, id: JobId, function: &str) {
        if !self.running.contains_key(&id) && !self.queue.iter().any(|(q, _)| *q == id) {
            self.queue.push_back((id, function.to_owned()));
        }
    }

    /// Queues a job ahead of every other (one that comes back keeps its turn).
    pub fn enqueue_front(&mut self, id: JobId, function: &str) {
        if !self.running.contains_key(&id) && !self.queue.iter().any(|(q, _)| *q == id) {
            self.queue.push_front((id, function.to_owned()));
        }
    }

    /// Takes a queued (not started) job out of the queue; `false` if it is not queued.
    pub fn withdraw(&mut self, id: JobId) -> bool {
        match self.queue.iter().position(|(q, _)| *q == id) {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// The function of a queued job.
    pub fn queued_of_any(&self, id: JobId) -> Option<&str> {
        self.queue
            .iter()
            .find(|(q, _)| *q == id)
            .map(|(_, f)| f.as_str())
    }

    /// Queued jobs of `function`, oldest first, with how many jobs are ahead of each.
    pub fn queued_of<'a>(&'a self, function: &'a str) -> impl Iterator<Item = (usize, JobId)> + 'a {
        self.queue
            .iter()
            .filter(move |(_, f)| f == function)
            .enumerate()
            .map(|(ahead, (id, _))| (ahead, *id))
    }

    /// Starts as many queued jobs as fit, oldest first; returns them in start order.
    pub fn admit(&mut self) -> Vec<(JobId, String)> {
        let mut started = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let (_, function) = &self.queue[i];
            let Some((limits, running)) = self.functions.get(function) else {
                i += 1;
                continue;
            };
            if limits.max_concurrency.is_some_and(|m| *running >= m) {
                i += 1;
                continue;
            }
            if !limits.demand.fits_within(self.capacity.minus(self.used)) {
                break;
            }
            let demand = limits.demand;
            let Some((id, function)) = self.queue.remove(i) else {
                break;
            };
            if let Some((_, running)) = self.functions.get_mut(&function) {
                *running += 1;
            }
            self.used = self.used.plus(demand);
            self.running.insert(id, (function.clone(), demand));
            started.push((id, function));
        }
        started
    }

    /// A running job ended (any outcome); its resources are free again.
    pub fn finish(&mut self, id: JobId) {
        let Some((function, demand)) = self.running.remove(&id) else {
            return;
        };
        self.used = self.used.minus(demand);
        if let Some((_, running)) = self.functions.get_mut(&function) {
            *running = running.saturating_sub(1);
        }
    }

    /// The job waiting longest, if any.
    pub fn oldest_queued(&self) -> Option<JobId> {
        self.queue.front().map(|(id, _)| *id)
    }

    /// Per function: (name, jobs that could start now, queued, running), in name order.
    pub fn function_loads(&self) -> Vec<(String, u32, u32, u32)> {
        let free = self.capacity.minus(self.used);
        let mut out: Vec<(String, u32, u32, u32)> = self
            .functions
            .iter()
            .map(|(name, (limits, running))| {
                let d = limits.demand;
                let by_cpu = free.cpu.0.checked_div(d.cpu.0).unwrap_or(u64::MAX);
                let by_mem = free.memory.0.checked_div(d.memory.0).unwrap_or(u64::MAX);
                let mut fit = u32::try_from(by_cpu.min(by_mem)).unwrap_or(u32::MAX);
                if let Some(m) = limits.max_concurrency {
                    fit = fit.min(m.saturating_sub(*running));
                }
                let queued = self.queue.iter().filter(|(_, f)| f == name).count() as u32;
                (name.clone(), fit.min(1 << 16), queued, *running)
            })
            .collect();
        out.sort();
        out
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> JobId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&n.to_le_bytes());
        JobId::from_bytes(b)
    }

    fn limits(cpu: u64, mem_mib: u64, max: Option<u32>) -> FunctionLimits {
        FunctionLimits {
            demand: Demand {
                cpu: Millicores(cpu),
                memory: Bytes(mem_mib << 20),
            },
            max_concurrency: max,
        }
    }

    fn node(cores: u64, mem_mib: u64) -> Scheduler {
        Scheduler::new(Demand {
            cpu: Millicores(cores * 1000),
            memory: Bytes(mem_mib << 20),
        })
    }

    #[test]
    fn slots_follow_cpu_memory_and_max_concurrency() {
        let mut s = node(4, 4096);
        s.add_function("fire", limits(1000, 1024, None))
            .expect("fits");
        s.add_function("tiny", limits(100, 64, Some(3)))
            .expect("fits");
        assert_eq!(s.slots("fire"), 4);
        assert_eq!(s.slots("tiny"), 3);
    }

    #[test]
    fn a_function_bigger_than_the_node_is_refused_with_advice() {
        let mut s = node(2, 1024);
        let err = s
            .add_function("huge", limits(500, 64 * 1024, None))
            .expect_err("too big");
        assert_eq!(
            err.to_string(),
            "function `huge` asks for 64Gi of memory per job but this node offers 1Gi; lower `memory` or run it elsewhere"
        );
    }

    #[test]
    fn a_capped_function_does_not_block_others_but_a_big_job_does() {
        let mut s = node(2, 4096);
        s.add_function("capped", limits(100, 10, Some(1)))
            .expect("fits");
        s.add_function("big", limits(2000, 10, None)).expect("fits");
        s.add_function("small", limits(100, 10, None))
            .expect("fits");
        s.enqueue(id(1), "capped");
        s.enqueue(id(2), "capped");
        s.enqueue(id(3), "small");
        let started: Vec<_> = s.admit().into_iter().map(|(j, _)| j).collect();
        assert_eq!(
            started,
            vec![id(1), id(3)],
            "second capped job waits, small one goes"
        );
        s.enqueue(id(4), "big");
        s.enqueue(id(5), "small");
        assert!(
            s.admit().is_empty(),
            "big does not fit yet and small must not overtake it"
        );
        s.finish(id(1));
        s.finish(id(3));
        let started: Vec<_> = s.admit().into_iter().map(|(j, _)| j).collect();
        assert_eq!(
            started,
            vec![id(2)],
            "the older capped job starts; big needs both cores and holds small 5 behind it"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(u8),
        FinishOldest,
        Admit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Enqueue),
            Just(Op::FinishOldest),
            Just(Op::Admit)
        ]
    }

    proptest! {
        /// Whatever happens, the node is never over-committed, no function exceeds its cap, no job
        /// starts twice, and when work stops arriving every queued job eventually runs.
        #[test]
        fn admission_never_overcommits_and_runs_every_job_once(ops in proptest::collection::vec(op(), 1..200)) {
            let mut s = node(2, 1024);
            let fns = [("a", limits(500, 256, Some(2))), ("b", limits(1000, 512, None)), ("c", limits(250, 64, Some(1)))];
            for (name, l) in fns { s.add_function(name, l).expect("fits"); }
            let mut next = 0u32;
            let mut running: Vec<(JobId, String)> = Vec::new();
            let mut started = std::collections::HashSet::new();
            let check = |s: &Scheduler, running: &Vec<(JobId, String)>| {
                let used = running.iter().fold(Demand::default(), |acc, (_, f)| acc.plus(fns.iter().find(|x| x.0 == f).map(|x| x.1.demand).unwrap_or_default()));
                assert!(used.fits_within(s.capacity()), "over-committed: {used:?}");
                for (name, l) in fns {
                    let n = running.iter().filter(|(_, f)| f == name).count() as u32;
                    assert!(l.max_concurrency.is_none_or(|m| n <= m), "{name} runs {n}");
                }
            };
            let mut admit = |s: &mut Scheduler, running: &mut Vec<(JobId, String)>| {
                for (j, f) in s.admit() {
                    assert!(started.insert(j), "job started twice");
                    running.push((j, f));
                }
            };
            for o in ops {
                match o {
                    Op::Enqueue(f) => { s.enqueue(id(next), fns[f as usize].0); next += 1; }
                    Op::FinishOldest => if !running.is_empty() { let (j, _) = running.remove(0); s.finish(j); },
                    Op::Admit => admit(&mut s, &mut running),
                }
                check(&s, &running);
            }
            // Drain: finishing jobs must eventually start everything still queued.
            for _ in 0..10_000 {
                admit(&mut s, &mut running);
                check(&s, &running);
                if running.is_empty() { break; }
                let (j, _) = running.remove(0);
                s.finish(j);
            }
            prop_assert_eq!(s.queued(), 0);
            prop_assert_eq!(started.len() as u32, next);
        }
    }
}
