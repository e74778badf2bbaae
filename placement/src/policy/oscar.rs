//! OSCAR's behaviour, as chapter 5 of the OSCAR thesis describes it (the baseline Spillway is
//! measured against, not a default):
//!
//! - **Resource Manager**: the free resources of the cluster are refreshed every
//!   `RESOURCE_MANAGER_INTERVAL` (15 s here; the thesis gives no value) and kept in memory. A job
//!   that arrives while that stale snapshot says the cluster is full is delegated to the first
//!   replica in priority order (0 first); otherwise it is queued locally, however many jobs
//!   arrived since the snapshot.
//! - **Rescheduler**: every `RESCHEDULER_INTERVAL` (15 s) the jobs pending for longer than
//!   `RESCHEDULER_THRESHOLD` (30 s by default) are delegated to the replicas in priority order,
//!   and the local copy is deleted only once the replica accepted: a job that starts meanwhile
//!   runs twice (the thesis observed such duplicates between the on-premises cluster and Lambda).
//! - No hop limit and no visited list, no run-time model, no cost bound.

use super::{FunctionSpec, Policy};
use crate::estimate::RunTimes;
use crate::model::{Decision, Job, Mechanism, Millis, Target, TargetKind};

#[derive(Debug, Clone)]
pub struct OscarPolicy {
    pub resource_manager_interval_ms: Millis,
    pub rescheduler_interval_ms: Millis,
}

impl Default for OscarPolicy {
    fn default() -> Self {
        Self {
            resource_manager_interval_ms: 15_000,
            rescheduler_interval_ms: 15_000,
        }
    }
}

impl OscarPolicy {
    /// The first replica by priority (OSCAR's delegation tries them in order and stops at the
    /// first that answers; replicas always accept an asynchronous job).
    fn first_replica(view: &[Target]) -> Option<String> {
        view.iter()
            .filter(|t| matches!(t.kind, TargetKind::Cluster | TargetKind::Elastic))
            .min_by(|a, b| a.tier.cmp(&b.tier).then_with(|| a.id.cmp(&b.id)))
            .map(|t| t.id.clone())
    }
}

impl Policy for OscarPolicy {
    fn name(&self) -> &'static str {
        "oscar"
    }

    fn view_refresh_ms(&self) -> Millis {
        self.resource_manager_interval_ms
    }

    fn knows_own_load(&self) -> bool {
        false
    }

    fn counts_own_placements(&self) -> bool {
        false
    }

    fn tick_ms(&self) -> Millis {
        self.rescheduler_interval_ms
    }

    fn atomic_handover(&self) -> bool {
        false
    }

    fn guests_stay(&self) -> bool {
        false
    }

    fn on_arrival(
        &mut self,
        _job: &Job,
        _f: &FunctionSpec,
        view: &[Target],
        _times: &RunTimes,
        _now: Millis,
    ) -> Decision {
        let full = view
            .iter()
            .find(|t| t.kind == TargetKind::Origin)
            .is_some_and(|o| o.free_slots == 0);
        match (full, Self::first_replica(view)) {
            (true, Some(target)) => Decision::Delegate {
                target,
                mechanism: Mechanism::Admission,
            },
            _ => Decision::Stay,
        }
    }

    fn on_tick(
        &mut self,
        queued: &[Job],
        f: &FunctionSpec,
        view: &[Target],
        _times: &RunTimes,
        now: Millis,
    ) -> Vec<(u64, Decision)> {
        let Some(target) = Self::first_replica(view) else {
            return Vec::new();
        };
        queued
            .iter()
            .filter(|j| now.saturating_sub(j.queued_at) > f.rescheduler_threshold_ms)
            .map(|j| {
                (
                    j.id,
                    Decision::Delegate {
                        target: target.clone(),
                        mechanism: Mechanism::Rescheduler,
                    },
                )
            })
            .collect()
    }
}
