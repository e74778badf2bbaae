//! The one placement decision, `SpillwayPolicy::place`, over random views and random sequences
//! of calls: it never chooses the origin, a visited target or one that does not beat staying,
//! never breaks the cost bound, never commits elastic targets past the hourly GB-s budget, and
//! prefers the first tier that has a target beating staying unless that tier keeps the job
//! waiting past its function's threshold.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use spillway_placement::estimate::RunTimes;
use spillway_placement::model::Cost;
use spillway_placement::policy::FunctionSpec;
use spillway_placement::policy::spillway::{
    SpillwayPolicy, predicted_completion, predicted_cost, predicted_gb_s,
};
use spillway_placement::{Job, Millis, Target, TargetKind};

const HOUR_MS: Millis = 3_600_000;

fn target() -> impl Strategy<Value = Target> {
    (
        0u32..6,
        prop_oneof![
            Just(TargetKind::Peer),
            Just(TargetKind::Cluster),
            Just(TargetKind::Elastic)
        ],
        0u32..3,
        1u32..4,
        0u32..4,
        0u32..6,
        0u64..2_000,
        0u64..3_000,
        1u32..4,
    )
        .prop_map(|(n, kind, tier, slots, free, queued, latency, start, gb)| {
            let elastic = kind == TargetKind::Elastic;
            Target {
                id: format!("t{n}"),
                kind,
                tier,
                slots: (!elastic).then_some(slots),
                free_slots: free.min(slots),
                queued,
                latency_ms: latency,
                bytes_per_ms: 1_000.0,
                start_ms: start,
                cost: elastic.then_some(Cost {
                    usd_per_gb_s: 0.000_016_666_7,
                    memory_gb: f64::from(gb),
                }),
            }
        })
}

/// One call: the view, what staying costs, the job's visited targets, and how far the clock
/// moves before it.
fn call() -> impl Strategy<Value = (Vec<Target>, Millis, Vec<u32>, Millis)> {
    (
        prop::collection::vec(target(), 0..6).prop_map(|mut v| {
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v.dedup_by(|a, b| a.id == b.id);
            v
        }),
        prop_oneof![Just(Millis::MAX), 0u64..20_000],
        prop::collection::vec(0u32..6, 0..3),
        0u64..1_200_000,
    )
}

proptest! {
    #[test]
    fn placements_keep_every_bound_and_prefer_the_first_tier_unless_a_free_target_finishes_sooner(
        calls in prop::collection::vec(call(), 1..40),
        max_local_wait in 0u64..10_000,
        bound in prop::option::of(0.000_01f64..0.01),
        budget in prop::option::of(1.0f64..40.0),
        hops in 0u8..4,
    ) {
        let f = FunctionSpec {
            name: "f".into(),
            max_local_wait_ms: max_local_wait,
            rescheduler_threshold_ms: max_local_wait,
            cost_bound_usd: bound,
            elastic_budget_gb_s_per_hour: budget,
            max_hops: 3,
        };
        let mut times = RunTimes::default();
        times.set_prior("f", 1_500);
        times.observe("f", "t1", 300);
        let mut policy = SpillwayPolicy::default();
        let mut now = 0;
        // What the test saw committed on elastic targets: (when, GB-s).
        let mut committed: Vec<(Millis, f64)> = Vec::new();
        for (view, stay, visited, step) in calls {
            now += step;
            let job = Job {
                id: 1,
                function: "f".into(),
                input_bytes: 10_000,
                origin: "t0".into(),
                hops,
                visited: visited.iter().map(|v| format!("t{v}")).collect(),
                queued_at: 0,
            };
            let spent: f64 = committed
                .iter()
                .filter(|(at, _)| now.saturating_sub(*at) < HOUR_MS)
                .map(|(_, g)| g)
                .sum();
            let Some(choice) = policy.place(&job, &f, &view, &times, stay, now) else {
                continue;
            };
            prop_assert!(hops < f.max_hops, "placed past the hop limit");
            let t = view.iter().find(|t| t.id == choice).unwrap();
            prop_assert!(t.id != job.origin && !job.visited.contains(&t.id));
            let done = predicted_completion(&job, t, &times);
            prop_assert!(done < stay, "{choice} does not beat staying");
            if let Some(bound) = bound {
                prop_assert!(predicted_cost(&job, t, &times) <= bound, "over the cost bound");
            }
            if t.is_elastic() {
                let gb_s = predicted_gb_s(&job, t, &times);
                if let Some(budget) = budget {
                    prop_assert!(spent + gb_s <= budget + 1e-9, "over the hourly budget");
                }
                committed.push((now, gb_s));
            }
            // Nothing in a lower tier than the choice beats staying within the bounds, unless
            // the choice is free and finishes the job no later (free targets compete on
            // completion across tiers), or starts it no later (the threshold's promise: a later
            // tier is taken because the first one keeps the job waiting too long).
            let start = done.saturating_sub(times.expect("f", &t.id));
            // A target the choice could have been: within the bounds, and beating staying.
            let option = |o: &Target| {
                o.id != job.origin
                    && !job.visited.contains(&o.id)
                    && bound.is_none_or(|b| predicted_cost(&job, o, &times) <= b)
                    && (!o.is_elastic()
                        || budget.is_none_or(|b| spent + predicted_gb_s(&job, o, &times) <= b))
                    && predicted_completion(&job, o, &times) < stay
            };
            let first_tier = view.iter().filter(|o| option(o)).map(|o| o.tier).min();
            for other in view.iter().filter(|o| o.tier < t.tier && option(o)) {
                let other_done = predicted_completion(&job, other, &times);
                let other_start = other_done.saturating_sub(times.expect("f", &other.id));
                let billed_elsewhere = other.is_elastic() && Some(other.tier) != first_tier;
                prop_assert!(
                    start <= other_start || billed_elsewhere || done <= other_done,
                    "{choice} (tier {}) chosen over {} (tier {})", t.tier, other.id, other.tier
                );
            }
        }
    }
}
