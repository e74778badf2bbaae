//! What the live coordinator tells the placement core: a function's bounds
//! ([`function_spec`]) and its replicas as targets ([`replica_targets`]), next to the peers the
//! hand-over shell builds from load reports. The decision itself is
//! [`SpillwayPolicy::place`], the one the simulator measures; [`Placing`] keeps what it needs
//! between calls (the hourly GB-s budget's window and the run times learned).

use std::time::Instant;

use spillway_placement::estimate::RunTimes;
use spillway_placement::model::Cost;
use spillway_placement::policy::{DEFAULT_RESCHEDULER_THRESHOLD_MS, FunctionSpec, SpillwayPolicy};
use spillway_placement::{Job, Millis, Target, TargetKind};
use spillway_proto::FunctionDef;
use spillway_proto::fdl::ReplicaTarget;

use crate::config::PlacementSettings;

use super::replicas::{by_priority, replica_id};

/// Reaching a replica from the mesh: one-way latency and bandwidth (20 Mbit/s), as the
/// simulator assumes for the on-premises cluster.
const REPLICA_LATENCY_MS: Millis = 20;
const REPLICA_BYTES_PER_MS: f64 = 2_500.0;

/// Lambda's memory when the function names none (the thesis' Lambda runs at 1 GB).
const DEFAULT_LAMBDA_MEMORY_GB: f64 = 1.0;

/// The placement core's state in a live coordinator.
#[derive(Debug)]
pub struct Placing {
    policy: SpillwayPolicy,
    pub times: RunTimes,
    started: Instant,
}

impl Default for Placing {
    fn default() -> Self {
        Self {
            policy: SpillwayPolicy::default(),
            times: RunTimes::default(),
            started: Instant::now(),
        }
    }
}

impl Placing {
    /// The one decision ([`SpillwayPolicy::place`]) on the coordinator's monotonic clock.
    pub fn place(
        &mut self,
        job: &Job,
        f: &FunctionSpec,
        view: &[Target],
        stay: Millis,
    ) -> Option<String> {
        let now = millis(self.started.elapsed());
        self.policy.place(job, f, view, &self.times, stay, now)
    }
}

/// The bounds of `function` (its FDL definition, if the store still has it) as the placement
/// core reads them. A job may wait locally up to its function's rescheduler threshold (the
/// agent offers it past that); money comes from `[placement]`.
pub fn function_spec(
    function: &str,
    def: Option<&FunctionDef>,
    settings: &PlacementSettings,
    max_hops: u8,
) -> FunctionSpec {
    let threshold_ms = def
        .and_then(|d| d.rescheduler_threshold)
        .map_or(DEFAULT_RESCHEDULER_THRESHOLD_MS, |s| s.saturating_mul(1000));
    FunctionSpec {
        name: function.to_owned(),
        max_local_wait_ms: threshold_ms,
        rescheduler_threshold_ms: threshold_ms,
        cost_bound_usd: settings.cost_bound_usd,
        elastic_budget_gb_s_per_hour: settings.elastic_budget_gb_s_per_hour,
        max_hops,
    }
}

/// The replicas of `def` as targets, in tiers after the mesh's (tier 1 is the highest
/// priority). Lambda is elastic and billed; clusters and endpoints have the slots `[placement]`
/// assumes, less the jobs `in_flight(id)` says are placed there.
pub fn replica_targets(
    def: &FunctionDef,
    settings: &PlacementSettings,
    in_flight: impl Fn(&str) -> u32,
) -> Vec<Target> {
    by_priority(def)
        .into_iter()
        .enumerate()
        .map(|(rank, r)| {
            let id = replica_id(&r.target);
            let busy = in_flight(&id);
            let tier = u32::try_from(rank).unwrap_or(u32::MAX).saturating_add(1);
            match &r.target {
                ReplicaTarget::Lambda { .. } => Target {
                    id,
                    kind: TargetKind::Elastic,
                    tier,
                    slots: None,
                    free_slots: 0,
                    queued: 0,
                    latency_ms: REPLICA_LATENCY_MS,
                    bytes_per_ms: REPLICA_BYTES_PER_MS,
                    start_ms: millis(settings.lambda_start),
                    cost: Some(Cost {
                        usd_per_gb_s: settings.lambda_usd_per_gb_s,
                        memory_gb: def.memory.map_or(DEFAULT_LAMBDA_MEMORY_GB, |m| {
                            m.0 as f64 / (1u64 << 30) as f64
                        }),
                    }),
                },
                _ => Target {
                    id,
                    kind: TargetKind::Cluster,
                    tier,
                    slots: Some(settings.replica_slots),
                    free_slots: settings.replica_slots.saturating_sub(busy),
                    queued: busy.saturating_sub(settings.replica_slots),
                    latency_ms: REPLICA_LATENCY_MS,
                    bytes_per_ms: REPLICA_BYTES_PER_MS,
                    start_ms: millis(settings.cluster_start),
                    cost: None,
                },
            }
        })
        .collect()
}

fn millis(d: std::time::Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def_of(extra: &str) -> FunctionDef {
        let yaml = format!(
            "functions:\n  oscar:\n  - edge:\n      name: f\n      runtime: process\n      script: f.sh\n{extra}"
        );
        let (mut doc, _) =
            spillway_proto::fdl::parse_str("t.yaml", &yaml, std::path::Path::new(""))
                .into_result()
                .expect("valid FDL");
        doc.functions.remove(0)
    }

    #[test]
    fn replicas_come_in_tiers_after_the_mesh_by_priority_with_their_slots_in_use() {
        let def = def_of(
            "      replicas:\n      - {type: endpoint, url: 'http://b', priority: 5}\n      - {type: endpoint, url: 'http://a', priority: 1}\n",
        );
        let targets = replica_targets(&def, &PlacementSettings::default(), |id| {
            u32::from(id == "endpoint:http://a") * 10
        });
        assert_eq!(targets[0].id, "endpoint:http://a");
        assert_eq!(targets[0].tier, 1);
        assert_eq!((targets[0].free_slots, targets[0].queued), (0, 2));
        assert_eq!(targets[1].id, "endpoint:http://b");
        assert_eq!(targets[1].tier, 2);
        assert_eq!((targets[1].free_slots, targets[1].queued), (8, 0));
    }

    #[test]
    fn a_function_without_a_threshold_waits_as_long_as_oscar_lets_it() {
        let spec = function_spec("f", Some(&def_of("")), &PlacementSettings::default(), 3);
        assert_eq!(spec.max_local_wait_ms, 30_000);
        assert_eq!(spec.rescheduler_threshold_ms, 30_000);
        assert_eq!(spec.max_hops, 3);
        let spec = function_spec(
            "f",
            Some(&def_of("      rescheduler_threshold: 5\n")),
            &PlacementSettings::default(),
            3,
        );
        assert_eq!(spec.max_local_wait_ms, 5_000);
        let gone = function_spec("f", None, &PlacementSettings::default(), 3);
        assert_eq!(
            gone.max_local_wait_ms, 30_000,
            "a deleted function's jobs still move"
        );
    }
}
