//! The offline bounds: the exact optimum is a true optimum of the relaxed model (no policy run
//! beats it, and where nothing queues it is the no-queueing time), and the linear relaxation of
//! the whole trace is never above it.

use spillway_sim::bound::{Relaxed, Tier, exact_mean_s, relax};
use spillway_sim::compare;
use spillway_sim::scenario::{FireCase, small_fire};

fn two_slots_and_lambda(arrivals: Vec<u64>) -> Relaxed {
    Relaxed {
        arrivals,
        tiers: vec![
            Tier {
                name: "edge".into(),
                slots: Some(2),
                transfer_ms: 0,
                busy_ms: 10_000,
            },
            Tier {
                name: "lambda".into(),
                slots: None,
                transfer_ms: 100,
                busy_ms: 15_000,
            },
        ],
    }
}

#[test]
fn the_exact_optimum_queues_only_when_it_must() {
    // Two jobs on two slots: nothing waits.
    assert_eq!(
        exact_mean_s(&two_slots_and_lambda(vec![0, 0]), 0),
        Some(10.0)
    );
    // Four at once, no Lambda: two wait a whole run.
    assert_eq!(
        exact_mean_s(&two_slots_and_lambda(vec![0, 0, 0, 0]), 0),
        Some(15.0)
    );
    // With Lambda for two of them, 15.1 s beats waiting 10 s for a 10 s run.
    assert_eq!(
        exact_mean_s(&two_slots_and_lambda(vec![0, 0, 0, 0]), 2),
        Some(12.55)
    );
    // Too many jobs to try every assignment: no answer rather than a slow one.
    assert_eq!(exact_mean_s(&two_slots_and_lambda(vec![0; 13]), 0), None);
}

#[test]
fn no_policy_beats_the_exact_optimum_on_small_fire_traces() {
    let limits = compare::small_limits(FireCase::thesis(true), &[2, 3, 4]);
    assert_eq!(limits.len(), 6);
    for l in &limits {
        assert!(l.ratio() >= 1.0, "{}", compare::limits_table(&limits));
    }
    // Regression guard on BENCHMARKS.md: Spillway within 1.3× of the optimum on each (1.28 at
    // worst, the 1.25 target missed on 12 images).
    for l in limits.iter().filter(|l| l.policy == "spillway") {
        assert!(l.ratio() <= 1.3, "{}", compare::limits_table(&limits));
    }
}

#[test]
fn the_relaxation_takes_each_tiers_fastest_start_and_pools_its_slots() {
    let case = FireCase::thesis(true);
    let (oscar, spillway) = (
        small_fire(true, &case, 2, 5_250),
        small_fire(false, &case, 2, 5_250),
    );
    let r = relax(&[&oscar, &spillway]);
    let fog = r.tiers.iter().find(|t| t.name == "fog").expect("fog");
    // The agent's 0.2 s container start, not the Pi pod's 4 s; the run less the spread.
    let run = case.fit.fog_run_ms * u64::from(100 - case.fit.spread_pct) / 100;
    assert_eq!(fog.busy_ms, 200 + run);
    assert_eq!((fog.slots, fog.transfer_ms), (Some(3), 0));
    let lambda = r.tiers.iter().find(|t| t.name == "lambda").expect("lambda");
    assert_eq!(lambda.slots, None);
    assert_eq!(r.arrivals.len(), 6);
}

#[cfg(feature = "bound")]
#[test]
fn the_linear_relaxation_is_never_above_the_exact_optimum() {
    use spillway_sim::bound::lp_mean_s;
    for arrivals in [
        vec![0, 0, 0, 0],
        vec![0, 0, 0, 5_000, 5_000, 5_000, 10_000, 10_000],
    ] {
        for lambda_jobs in [0, 1, 3] {
            let r = two_slots_and_lambda(arrivals.clone());
            let exact = exact_mean_s(&r, lambda_jobs).expect("small");
            let lp = lp_mean_s(&r, lambda_jobs, 1_000, 200_000).expect("solved");
            assert!(lp <= exact + 1e-6, "{lp} > {exact}");
            assert!(lp >= 0.8 * exact, "a loose bound: {lp} against {exact}");
        }
    }
}
