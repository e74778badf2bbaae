//! The placement policies as specifications: what Spillway's does and what OSCAR's does.

use proptest::prelude::*;
use spillway_placement::estimate::RunTimes;
use spillway_placement::model::Cost;
use spillway_placement::policy::spillway::predicted_completion;
use spillway_placement::policy::{FunctionSpec, OscarPolicy, SpillwayPolicy};
use spillway_placement::{Decision, Job, Mechanism, Policy, Target, TargetKind};

fn spec() -> FunctionSpec {
    FunctionSpec {
        name: "fire".into(),
        max_local_wait_ms: 2_000,
        rescheduler_threshold_ms: 30_000,
        cost_bound_usd: None,
        elastic_budget_gb_s_per_hour: None,
        max_hops: 3,
    }
}

fn target(
    id: &str,
    kind: TargetKind,
    tier: u32,
    slots: Option<u32>,
    free: u32,
    queued: u32,
) -> Target {
    Target {
        id: id.into(),
        kind,
        tier,
        slots,
        free_slots: free,
        queued,
        latency_ms: if kind == TargetKind::Origin { 0 } else { 20 },
        bytes_per_ms: 1_000.0,
        start_ms: if kind == TargetKind::Elastic {
            3_000
        } else {
            0
        },
        cost: (kind == TargetKind::Elastic).then_some(Cost {
            usd_per_gb_s: 0.0000166667,
            memory_gb: 1.0,
        }),
    }
}

fn job(id: u64, queued_at: u64) -> Job {
    Job {
        id,
        function: "fire".into(),
        input_bytes: 100_000,
        origin: "pi-1".into(),
        hops: 0,
        visited: vec!["pi-1".into()],
        queued_at,
    }
}

fn times() -> RunTimes {
    let mut t = RunTimes::default();
    t.set_prior("fire", 10_000);
    t
}

fn delegate(target: &str, mechanism: Mechanism) -> Decision {
    Decision::Delegate {
        target: target.into(),
        mechanism,
    }
}

#[test]
fn spillway_stays_when_a_slot_is_free() {
    let view = [
        target("pi-1", TargetKind::Origin, 0, Some(3), 1, 0),
        target("pi-2", TargetKind::Peer, 0, Some(3), 3, 0),
    ];
    let d = SpillwayPolicy::default().on_arrival(&job(1, 0), &spec(), &view, &times(), 0);
    assert_eq!(d, Decision::Stay);
}

#[test]
fn spillway_takes_the_earliest_finish_among_free_targets_whatever_their_tier() {
    let mut t = times();
    t.observe("fire", "onprem", 2_000);
    let view = [
        target("pi-1", TargetKind::Origin, 0, Some(3), 0, 4),
        target("pi-2", TargetKind::Peer, 0, Some(3), 1, 0),
        target("onprem", TargetKind::Cluster, 1, Some(7), 7, 0),
    ];
    let d = SpillwayPolicy::default().on_arrival(&job(1, 0), &spec(), &view, &t, 0);
    assert_eq!(d, delegate("onprem", Mechanism::Admission));
    // When they would finish alike, the tier order (the peer first) decides.
    let even = times();
    let d = SpillwayPolicy::default().on_arrival(&job(1, 0), &spec(), &view, &even, 0);
    assert_eq!(d, delegate("pi-2", Mechanism::Admission));
}

#[test]
fn spillway_goes_down_a_tier_only_when_the_tier_above_cannot_beat_staying() {
    let view = [
        target("pi-1", TargetKind::Origin, 0, Some(3), 0, 6),
        target("pi-2", TargetKind::Peer, 0, Some(3), 0, 9),
        target("onprem", TargetKind::Cluster, 1, Some(7), 2, 0),
        target("lambda", TargetKind::Elastic, 2, None, 0, 0),
    ];
    let d = SpillwayPolicy::default().on_arrival(&job(1, 0), &spec(), &view, &times(), 0);
    assert_eq!(d, delegate("onprem", Mechanism::Admission));
}

#[test]
fn spillway_starts_a_job_sooner_elsewhere_when_the_best_choice_would_make_it_wait_too_long() {
    // On-prem finishes first (10 s run after a 10 s queue) but the job would wait 10 s there,
    // over the 2 s threshold; Lambda starts it in 3 s and still beats staying.
    let view = [
        target("pi-1", TargetKind::Origin, 0, Some(1), 0, 20),
        target("onprem", TargetKind::Cluster, 1, Some(1), 0, 0),
        target("lambda", TargetKind::Elastic, 2, None, 0, 0),
    ];
    let d = SpillwayPolicy::default().on_arrival(&job(1, 0), &spec(), &view, &times(), 0);
    assert_eq!(d, delegate("lambda", Mechanism::Admission));
}

#[test]
fn spillway_spends_no_more_than_the_hourly_elastic_budget() {
    let view = [
        target("pi-1", TargetKind::Origin, 0, Some(1), 0, 20),
        target("onprem", TargetKind::Cluster, 1, Some(1), 0, 0),
        target("lambda", TargetKind::Elastic, 2, None, 0, 0),
    ];
    let mut f = spec();
    // Each Lambda run bills 13 GB-s (10 s run + 3 s start at 1 GB): room for two an hour.
    f.elastic_budget_gb_s_per_hour = Some(30.0);
    let mut policy = SpillwayPolicy::default();
    let picks: Vec<Decision> = (0..3)
        .map(|i| policy.on_arrival(&job(i, 0), &f, &view, &times(), i * 1000))
        .collect();
    assert_eq!(picks[0], delegate("lambda", Mechanism::Admission));
    assert_eq!(picks[1], delegate("lambda", Mechanism::Admission));
    assert_eq!(
        picks[2],
        delegate("onprem", Mechanism::Admission),
        "the budget is spent"
    );
    let later = policy.on_arrival(&job(9, 0), &f, &view, &times(), 3_700_000);
    assert_eq!(
        later,
        delegate("lambda", Mechanism::Admission),
        "an hour later it is there again"
    );
}

#[test]
fn spillway_respects_the_cost_bound_and_the_hop_limit() {
    let view = [
        target("pi-1", TargetKind::Origin, 0, Some(1), 0, 20),
        target("lambda", TargetKind::Elastic, 2, None, 0, 0),
    ];
    let mut f = spec();
    f.cost_bound_usd = Some(0.00001);
    let d = SpillwayPolicy::default().on_arrival(&job(1, 0), &f, &view, &times(), 0);
    assert_eq!(
        d,
        Decision::Stay,
        "a 13 s Lambda run at 1 GB costs more than the bound"
    );
    let mut j = job(1, 0);
    j.hops = 3;
    let d = SpillwayPolicy::default().on_arrival(&j, &spec(), &view, &times(), 0);
    assert_eq!(d, Decision::Stay);
}

#[test]
fn spillway_rescheduler_moves_only_jobs_past_the_threshold_and_spreads_them() {
    let view = [
        target("pi-1", TargetKind::Origin, 0, Some(1), 0, 5),
        target("pi-2", TargetKind::Peer, 0, Some(2), 1, 0),
        target("pi-3", TargetKind::Peer, 0, Some(2), 1, 0),
    ];
    let queued: Vec<Job> = (0..5).map(|i| job(i, i * 10_000)).collect();
    let moves = SpillwayPolicy::default().on_tick(&queued, &spec(), &view, &times(), 45_000);
    // Jobs queued at 0 and 10 s have waited ≥ 30 s; each takes a different free peer.
    let targets: Vec<_> = moves
        .iter()
        .map(|(id, d)| match d {
            Decision::Delegate { target, mechanism } => {
                assert_eq!(*mechanism, Mechanism::Rescheduler);
                (*id, target.clone())
            }
            Decision::Stay => panic!("tick returns only moves"),
        })
        .collect();
    assert_eq!(targets, [(0, "pi-2".to_string()), (1, "pi-3".to_string())]);
}

#[test]
fn oscar_delegates_when_its_stale_snapshot_says_full_and_only_then() {
    let mut p = OscarPolicy::default();
    let full = [
        target("fog", TargetKind::Origin, 0, Some(9), 0, 0),
        target("lambda", TargetKind::Elastic, 1, None, 0, 0),
        target("onprem", TargetKind::Cluster, 0, Some(7), 0, 30),
    ];
    // The replica's own load is not looked at: priority order alone.
    assert_eq!(
        p.on_arrival(&job(1, 0), &spec(), &full, &times(), 0),
        delegate("onprem", Mechanism::Admission)
    );
    let mut free = full.clone();
    free[0].free_slots = 1;
    free[0].queued = 50;
    assert_eq!(
        p.on_arrival(&job(1, 0), &spec(), &free, &times(), 0),
        Decision::Stay
    );
}

#[test]
fn oscar_rescheduler_delegates_every_job_pending_past_the_threshold() {
    let mut p = OscarPolicy::default();
    let view = [
        target("fog", TargetKind::Origin, 0, Some(9), 0, 3),
        target("onprem", TargetKind::Cluster, 0, Some(7), 0, 0),
    ];
    let queued = [job(1, 0), job(2, 20_000), job(3, 40_000)];
    let moves = p.on_tick(&queued, &spec(), &view, &times(), 45_000);
    assert_eq!(moves.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1]);
    assert!(!p.atomic_handover());
}

fn arb_target(i: usize) -> impl Strategy<Value = Target> {
    (
        0u32..3,
        prop::option::of(1u32..8),
        0u32..8,
        0u32..40,
        0u64..200,
        0u64..5_000,
        prop::bool::ANY,
    )
        .prop_map(
            move |(tier, slots, free, queued, latency, start, elastic)| {
                let kind = if elastic {
                    TargetKind::Elastic
                } else if tier == 0 {
                    TargetKind::Peer
                } else {
                    TargetKind::Cluster
                };
                Target {
                    id: format!("t{i}"),
                    kind,
                    tier,
                    slots: if elastic { None } else { slots.or(Some(1)) },
                    free_slots: free.min(slots.unwrap_or(8)),
                    queued,
                    latency_ms: latency,
                    bytes_per_ms: 500.0,
                    start_ms: start,
                    cost: None,
                }
            },
        )
}

proptest! {
    #[test]
    fn spillway_never_picks_a_visited_target_and_only_moves_to_a_better_prediction(
        others in (0usize..12).prop_flat_map(|n| (0..n).map(arb_target).collect::<Vec<_>>()),
        origin_free in 0u32..3, origin_queued in 0u32..50,
        visited in prop::collection::vec(0usize..12, 0..4),
        hops in 0u8..5,
    ) {
        let mut view = vec![target("pi-1", TargetKind::Origin, 0, Some(2), origin_free.min(2), origin_queued)];
        view.extend(others);
        let mut j = job(1, 0);
        j.hops = hops;
        j.visited.extend(visited.iter().map(|i| format!("t{i}")));
        let t = times();
        let d = SpillwayPolicy::default().on_arrival(&j, &spec(), &view, &t, 0);
        if let Decision::Delegate { target, .. } = d {
            prop_assert!(!j.visited.contains(&target));
            prop_assert!(hops < spec().max_hops);
            let chosen = view.iter().find(|v| v.id == target).unwrap();
            prop_assert!(predicted_completion(&j, chosen, &t) < predicted_completion(&j, &view[0], &t));
        }
    }
}
