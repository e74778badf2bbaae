//! Spillway's policy: a job goes where it is predicted to finish first — expected wait on the
//! target + moving the input + start-up + run time (learned per function and target) — with
//! targets tried tier by tier (the origin and its peers first, then the FDL's replicas in
//! priority order), never to a target it has visited, within the hop limit and the cost bound.

use super::{FunctionSpec, Policy};
use crate::estimate::RunTimes;
use crate::model::{Decision, Job, Mechanism, Millis, Target, TargetKind};

#[derive(Debug, Clone, Default)]
pub struct SpillwayPolicy;

/// Predicted milliseconds from now until `job` would finish on `t`.
pub fn predicted_completion(job: &Job, t: &Target, times: &RunTimes) -> Millis {
    let run = times.expect(&job.function, &t.id);
    let wait = match t.slots {
        None => 0,
        Some(_) if t.free_slots > 0 && t.queued == 0 => 0,
        Some(slots) => {
            // Jobs ahead of this one, spread over the slots, each taking about `run`.
            let ahead = u64::from(t.queued + 1).saturating_sub(u64::from(t.free_slots));
            ahead.div_ceil(u64::from(slots.max(1))) * run
        }
    };
    let transfer = if t.kind == TargetKind::Origin {
        0
    } else {
        t.latency_ms + (job.input_bytes as f64 / t.bytes_per_ms.max(1e-9)) as Millis
    };
    wait + transfer + t.start_ms + run
}

/// What a run of `job` on `t` would cost (USD), for elastic targets.
pub fn predicted_cost(job: &Job, t: &Target, times: &RunTimes) -> f64 {
    t.cost.map_or(0.0, |c| {
        let secs = (times.expect(&job.function, &t.id) + t.start_ms) as f64 / 1000.0;
        secs * c.memory_gb * c.usd_per_gb_s
    })
}

impl SpillwayPolicy {
    /// The best target in the first tier that beats staying, if any.
    fn best_elsewhere(
        &self,
        job: &Job,
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        stay: Millis,
    ) -> Option<String> {
        if job.hops >= f.max_hops {
            return None;
        }
        let eligible = |t: &&Target| {
            t.kind != TargetKind::Origin
                && t.id != job.origin
                && !job.visited.contains(&t.id)
                && f.cost_bound_usd
                    .is_none_or(|bound| predicted_cost(job, t, times) <= bound)
        };
        let mut tiers: Vec<u32> = view.iter().filter(eligible).map(|t| t.tier).collect();
        tiers.sort_unstable();
        tiers.dedup();
        for tier in tiers {
            let best = view
                .iter()
                .filter(eligible)
                .filter(|t| t.tier == tier)
                .map(|t| (predicted_completion(job, t, times), t))
                .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
            if let Some((when, t)) = best
                && when < stay
            {
                return Some(t.id.clone());
            }
        }
        None
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

    fn on_arrival(
        &mut self,
        job: &Job,
        f: &FunctionSpec,
        view: &[Target],
        times: &RunTimes,
        _now: Millis,
    ) -> Decision {
        let Some(origin) = view.iter().find(|t| t.kind == TargetKind::Origin) else {
            return Decision::Stay;
        };
        if origin.free_slots > origin.queued {
            return Decision::Stay;
        }
        let stay = predicted_completion(job, origin, times);
        let wait = stay.saturating_sub(times.expect(&job.function, &origin.id) + origin.start_ms);
        if wait <= f.max_local_wait_ms {
            return Decision::Stay;
        }
        match self.best_elsewhere(job, f, view, times, stay) {
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
        // Each job moved frees a place in the queue for the ones behind it.
        let mut origin = origin.clone();
        let mut view = view.to_vec();
        for job in queued {
            if now.saturating_sub(job.queued_at) < f.rescheduler_threshold_ms {
                continue;
            }
            let stay = predicted_completion(job, &origin, times);
            if let Some(target) = self.best_elsewhere(job, f, &view, times, stay) {
                if let Some(t) = view.iter_mut().find(|t| t.id == target) {
                    if t.free_slots > 0 {
                        t.free_slots -= 1;
                    } else {
                        t.queued += 1;
                    }
                }
                origin.queued = origin.queued.saturating_sub(1);
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
