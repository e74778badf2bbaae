//! Spillway's policy: a job goes where it is predicted to finish first — expected wait on the
//! target + moving the input + start-up + run time (learned per function and target) — among
//! the targets that cost nothing per job (the origin's peers and the FDL's cluster and endpoint
//! replicas; the FDL's priority breaks ties) and billed ones (Lambda) in the first tier that
//! has options; a later billed target only when the choice would keep the job waiting past its
//! threshold; never to a target it has visited, within the hop limit, the cost bound and the
//! hourly budget.

use super::{FunctionSpec, Policy};
use crate::estimate::RunTimes;
use crate::model::{Decision, Job, Mechanism, Millis, Target, TargetKind};

#[derive(Debug, Clone, Default)]
pub struct SpillwayPolicy {
    /// What was committed on elastic targets in the last hour: (when, GB-s), for the budget.
    elastic: std::collections::VecDeque<(Millis, f64)>,
    /// Their sum.
    elastic_gb_s: f64,
}

/// GB-seconds a run of `job` on an elastic target `t` is expected to bill.
pub fn predicted_gb_s(job: &Job, t: &Target, times: &RunTimes) -> f64 {
    t.cost.map_or(0.0, |c| {
        (times.expect(&job.function, &t.id) + t.start_ms) as f64 / 1000.0 * c.memory_gb
    })
}

const HOUR_MS: Millis = 3_600_000;

/// Predicted milliseconds before a job arriving now would start on `t`: the jobs ahead of it
/// spread over the slots, each taking about `run`; 0 with a free slot and nobody waiting.
/// The agent predicts its own wait with this too, so both sides of an offer count alike.
pub fn predicted_wait(t: &Target, run: Millis) -> Millis {
    match t.slots {
        None => 0,
        Some(_) if t.free_slots > 0 && t.queued == 0 => 0,
        Some(slots) => {
            let ahead = (u64::from(t.queued) + 1).saturating_sub(u64::from(t.free_slots));
            ahead.div_ceil(u64::from(slots.max(1))).saturating_mul(run)
        }
    }
}

/// Predicted milliseconds from now until `job` would finish on `t`.
pub fn predicted_completion(job: &Job, t: &Target, times: &RunTimes) -> Millis {
    let run = times.expect(&job.function, &t.id);
    let wait = predicted_wait(t, run);
    let transfer = if t.kind == TargetKind::Origin {
        0
    } else {
        t.latency_ms
            .saturating_add((job.input_bytes as f64 / t.bytes_per_ms.max(1e-9)) as Millis)
    };
    // Saturating: targets' numbers come from members' reports.
    wait.saturating_add(transfer)
        .saturating_add(t.start_ms)
        .saturating_add(run)
}

/// What a run of `job` on `t` would cost (USD), for elastic targets.
pub fn predicted_cost(job: &Job, t: &Target, times: &RunTimes) -> f64 {
    t.cost.map_or(0.0, |c| {
        let secs = (times.expect(&job.function, &t.id) + t.start_ms) as f64 / 1000.0;
        secs * c.memory_gb * c.usd_per_gb_s
    })
}

impl SpillwayPolicy {
    /// The placement decision, the one every caller makes: the simulator when a job arrives and
    /// at each rescheduler tick, the live coordinator for an origin's offer, a lease that
    /// expired, a replica that failed, and a new job from the API or a bucket event. It returns
    /// the best target in the first tier that beats `stay` (the completion predicted where the
    /// job is; `Millis::MAX` when it must move or has no place yet), within the hop limit, the
    /// cost bound and the hourly GB-s budget, and records what it commits on an elastic target
    /// against that budget.
    pub fn place(
        &mut self,
        job: &Job,
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        stay: Millis,
        now: Millis,
    ) -> Option<String> {
        let choice = self.choose(job, f, view, times, stay, now)?;
        if let Some(t) = view.iter().find(|t| t.id == choice && t.is_elastic()) {
            let gb_s = predicted_gb_s(job, t, times);
            self.elastic.push_back((now, gb_s));
            self.elastic_gb_s += gb_s;
        }
        Some(choice)
    }

    fn choose(
        &mut self,
        job: &Job,
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        stay: Millis,
        now: Millis,
    ) -> Option<String> {
        if job.hops >= f.max_hops {
            return None;
        }
        while let Some((at, gb_s)) = self.elastic.front().copied() {
            if now.saturating_sub(at) < HOUR_MS {
                break;
            }
            self.elastic.pop_front();
            self.elastic_gb_s -= gb_s;
        }
        let spent = self.elastic_gb_s;
        let eligible = |t: &&Target| {
            t.kind != TargetKind::Origin
                && t.id != job.origin
                && !job.visited.contains(&t.id)
                && f.cost_bound_usd
                    .is_none_or(|bound| predicted_cost(job, t, times) <= bound)
                && (!t.is_elastic()
                    || f.elastic_budget_gb_s_per_hour
                        .is_none_or(|budget| spent + predicted_gb_s(job, t, times) <= budget))
        };
        // Every eligible target that beats staying, with its predicted completion and start.
        let options: Vec<(u32, Millis, Millis, &Target)> = view
            .iter()
            .filter(eligible)
            .filter_map(|t| {
                let done = predicted_completion(job, t, times);
                let start = done.saturating_sub(times.expect(&job.function, &t.id));
                (done < stay).then_some((t.tier, done, start, t))
            })
            .collect();
        // The earliest completion among the targets that cost nothing per job (peers and
        // clusters, whatever their tier: a busy Pi peer is no better a place to wait than a
        // fast cluster, as the calibrated fire case shows) and the billed ones of the first
        // tier that has options; ties to the earlier tier.
        let first_tier = options.iter().map(|o| o.0).min()?;
        let (_, _, chosen_start, chosen) = options
            .iter()
            .filter(|o| !o.3.is_elastic() || o.0 == first_tier)
            .min_by(|a, b| {
                (a.1, a.0)
                    .cmp(&(b.1, b.0))
                    .then_with(|| a.3.id.cmp(&b.3.id))
            })?;
        // The function's threshold is a promise about waiting: if even that choice makes the job
        // wait longer, a target in any tier (within the cost bound and budget) that starts it
        // sooner, and still beats staying, is taken instead.
        if *chosen_start <= f.max_local_wait_ms {
            return Some(chosen.id.clone());
        }
        let sooner = options.iter().min_by(|a, b| {
            (a.2, a.1)
                .cmp(&(b.2, b.1))
                .then_with(|| a.3.id.cmp(&b.3.id))
        })?;
        Some(
            if sooner.2 < *chosen_start {
                sooner.3
            } else {
                chosen
            }
            .id
            .clone(),
        )
    }
}

impl Policy for SpillwayPolicy {
    fn name(&self) -> &'static str {
        "spillway"
    }

    fn view_refresh_ms(&self) -> Millis {
        1000
    }

    fn knows_own_load(&self) -> bool {
        true
    }

    fn counts_own_placements(&self) -> bool {
        true
    }

    fn tick_ms(&self) -> Millis {
        1000
    }

    fn atomic_handover(&self) -> bool {
        true
    }

    fn guests_stay(&self) -> bool {
        true
    }

    fn on_arrival(
        &mut self,
        job: &Job,
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        now: Millis,
    ) -> Decision {
        let Some(origin) = view.iter().find(|t| t.kind == TargetKind::Origin) else {
            return Decision::Stay;
        };
        if origin.free_slots > origin.queued {
            return Decision::Stay;
        }
        // It cannot start at once: it goes wherever it is predicted to finish sooner, as OSCAR's
        // Resource Manager sends a job on when its cluster is full (the live agent offers it).
        // The threshold is the rescheduler's, and bounds how long the chosen target may keep
        // it waiting.
        let stay = predicted_completion(job, origin, times);
        match self.place(job, f, view, times, stay, now) {
            Some(target) => Decision::Delegate {
                target,
                mechanism: Mechanism::Admission,
            },
            None => Decision::Stay,
        }
    }

    fn on_tick(
        &mut self,
        queued: &[Job],
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        now: Millis,
    ) -> Vec<(u64, Decision)> {
        let Some(origin) = view.iter().find(|t| t.kind == TargetKind::Origin) else {
            return Vec::new();
        };
        let mut moves = Vec::new();
        let mut view = view.to_vec();
        // Each job's stay counts the jobs still ahead of it, as the agent predicts its own wait
        // when it offers one: the jobs moved before it no longer wait ahead.
        let mut moved = 0u32;
        for (position, job) in queued.iter().enumerate() {
            if now.saturating_sub(job.queued_at) < f.rescheduler_threshold_ms {
                continue;
            }
            let ahead = u32::try_from(position)
                .unwrap_or(u32::MAX)
                .saturating_sub(moved);
            let here = Target {
                queued: ahead,
                free_slots: 0,
                ..origin.clone()
            };
            let stay = predicted_completion(job, &here, times);
            if let Some(target) = self.place(job, f, &view, times, stay, now) {
                if let Some(t) = view.iter_mut().find(|t| t.id == target) {
                    if t.free_slots > 0 {
                        t.free_slots -= 1;
                    } else {
                        t.queued += 1;
                    }
                }
                moved += 1;
                moves.push((
                    job.id,
                    Decision::Delegate {
                        target,
                        mechanism: Mechanism::Rescheduler,
                    },
                ));
            }
        }
        moves
    }
}
