//! The seeds' other workloads against what the papers report, the elastic cluster and the
//! serial front end they need, and the loads beyond the seeds.

use std::collections::BTreeMap;

use spillway_placement::policy::OscarPolicy;
use spillway_sim::compare;
use spillway_sim::scenario::{Answer, Arrival, Clues, FunctionSim, NodeSpec, Scenario, Trace};
use spillway_sim::seeds::{self, SCAR_CALIBRATED, VIDEO_CALIBRATED, VIDEO_RUNS};
use spillway_sim::{Report, run};

#[test]
fn the_video_fit_reproduces_the_10_and_1000_frame_times_and_misses_the_100() {
    let r = seeds::run_video("oscar", VIDEO_CALIBRATED);
    assert_eq!(r.jobs, 3 + 10 + 100 + 1000, "{}", r.table());
    assert_eq!(r.lost_jobs, 0);
    let errors = seeds::video_errors(&seeds::video_times(&r));
    assert!(errors[0].abs() <= 0.10, "10 frames: {errors:?}");
    assert!(errors[2].abs() <= 0.10, "1000 frames: {errors:?}");
    // Recorded as missed in BENCHMARKS.md: no point of the model reaches 19 minutes.
    assert!(errors[1] < -0.5, "100 frames: {errors:?}");
}

#[test]
fn spillway_runs_the_video_workflow_on_the_same_cluster_without_losing_or_repeating_a_frame() {
    let oscar = seeds::video_times(&seeds::run_video("oscar", VIDEO_CALIBRATED));
    let r = seeds::run_video("spillway", VIDEO_CALIBRATED);
    assert_eq!((r.lost_jobs, r.duplicate_runs), (0, 0), "{}", r.table());
    let spillway = seeds::video_times(&r);
    for i in 0..VIDEO_RUNS.len() {
        // Figures in BENCHMARKS.md: within 10% of OSCAR's on the same nodes.
        assert!(
            spillway[i] as f64 <= oscar[i] as f64 * 1.10,
            "{spillway:?} against {oscar:?}"
        );
    }
}

#[test]
fn scars_1000_images_take_two_minutes_and_52800_gb_s_within_10_percent() {
    let r = seeds::run_scar("scar", SCAR_CALIBRATED);
    assert_eq!((r.jobs, r.lost_jobs), (1000, 0));
    let wall = r.makespan_s * 1000.0;
    let reported = seeds::SCAR_REPORTED_WALL_MS as f64;
    assert!((wall - reported).abs() / reported <= 0.10, "{}", r.table());
    let gb_s = (r.lambda_gb_s - seeds::SCAR_REPORTED_GB_S).abs() / seeds::SCAR_REPORTED_GB_S;
    assert!(gb_s <= 0.10, "{}", r.table());
    let spillway = seeds::run_scar("spillway", SCAR_CALIBRATED);
    assert_eq!(spillway.lost_jobs, 0);
    assert!(spillway.lambda_gb_s < r.lambda_gb_s, "{}", spillway.table());
    assert!(spillway.jobs_per_tier["pi"] > 0, "{}", spillway.table());
}

/// One function `f` of `run_ms` on one node `cluster` with `clues`, and `arrivals` (at, count,
/// function).
fn cluster_of(clues: Option<Clues>, admit_ms: u64, arrivals: &[(u64, u32, &str)]) -> Report {
    let mut functions = BTreeMap::new();
    let mut run_ms = BTreeMap::new();
    for (_, _, f) in arrivals {
        run_ms.insert((*f).to_owned(), 60_000);
        functions.insert(
            (*f).to_owned(),
            FunctionSim {
                spec: spillway_placement::policy::FunctionSpec {
                    name: (*f).into(),
                    max_local_wait_ms: 30_000,
                    rescheduler_threshold_ms: 30_000,
                    cost_bound_usd: None,
                    elastic_budget_gb_s_per_hour: None,
                    max_hops: 3,
                },
                input_bytes: 1,
                prior_ms: 60_000,
                then: None,
            },
        );
    }
    let node = NodeSpec {
        id: "cluster".into(),
        tier: "cluster".into(),
        slots: Some(30),
        start_ms: 0,
        cold_start_ms: 0,
        keep_warm_ms: 0,
        run_ms,
        latency_ms: 0,
        bytes_per_ms: 1.0,
        cost: None,
        decides: false,
        sees: Vec::new(),
        spread_pct: 0,
        answer: Answer::Accepted { after_ms: 0 },
        backoff_max_ms: 0,
        admit_ms,
        clues,
    };
    let arrivals = arrivals
        .iter()
        .flat_map(|(at, n, f)| {
            (0..*n).map(move |_| Arrival {
                at: *at,
                node: "cluster".into(),
                function: (*f).into(),
            })
        })
        .collect();
    let sc = Scenario {
        name: "cluster".into(),
        nodes: vec![node],
        functions,
        arrivals,
        tiers: vec!["cluster".into()],
    };
    run(&sc, &mut OscarPolicy::default())
}

const TEN_NODES: Clues = Clues {
    slots_per_node: 3,
    min_nodes: 1,
    max_nodes: 10,
    boot_ms: 180_000,
    idle_off_ms: 300_000,
    period_ms: 10_000,
    stagger_ms: 0,
};

#[test]
fn clues_powers_nodes_on_for_pending_jobs_and_they_join_after_booting() {
    // 30 one-minute jobs on one node of 3 slots: alone it needs 10 rounds (600 s). CLUES sees 27
    // pending at 10 s and powers on 9 nodes, ready at 190 s; by then the first node finished 3
    // rounds, and the 21 left start at once.
    let grown = cluster_of(Some(TEN_NODES), 0, &[(0, 30, "a")]);
    assert_eq!(grown.last_finish_ms["a"], 250_000, "{}", grown.table());
    let fixed = cluster_of(
        Some(Clues {
            max_nodes: 1,
            ..TEN_NODES
        }),
        0,
        &[(0, 30, "a")],
    );
    assert_eq!(fixed.last_finish_ms["a"], 600_000, "{}", fixed.table());
}

#[test]
fn clues_powers_idle_nodes_off_after_five_minutes_down_to_the_minimum() {
    // After the burst, 9 nodes idle from 250 s. Six jobs at 500 s find them up (one round); six
    // at 1200 s find only the always-on node (two rounds).
    let r = cluster_of(
        Some(TEN_NODES),
        0,
        &[(0, 30, "a"), (500_000, 6, "b"), (1_200_000, 6, "c")],
    );
    assert_eq!(r.last_finish_ms["b"] - 500_000, 60_000, "{}", r.table());
    assert_eq!(r.last_finish_ms["c"] - 1_200_000, 120_000, "{}", r.table());
}

#[test]
fn a_serial_front_end_takes_jobs_in_one_at_a_time() {
    // 30 slots, 30 jobs: at once they end at 60 s; taken in 2 s apart, the last starts at 60 s.
    let at_once = cluster_of(None, 0, &[(0, 30, "a")]);
    assert_eq!(at_once.last_finish_ms["a"], 60_000);
    let serial = cluster_of(None, 2_000, &[(0, 30, "a")]);
    assert_eq!(serial.last_finish_ms["a"], 120_000, "{}", serial.table());
}

#[test]
fn the_traces_beyond_the_seeds_have_the_counts_they_promise() {
    let edge = [("a", 3), ("b", 3), ("c", 3)];
    let bursts = Trace::Bursts {
        hours: 2,
        every_min: 10,
        burst: 150,
    }
    .arrivals(&edge, 0);
    // 3 every 30 s for 2 h, and 11 bursts (10, 20, ..., 110 min) of 150.
    assert_eq!(bursts.len(), 3 * 240 + 11 * 150);
    assert!(bursts.windows(2).all(|w| w[0].at <= w[1].at));
    let day = Trace::Diurnal {
        hours: 24,
        peak_per_min: 36,
    }
    .arrivals(&edge, 0);
    // The raised cosine averages half its peak: 18 a minute over 1440 minutes.
    assert!((25_900..=25_920).contains(&day.len()), "{}", day.len());
    let per_hour = |h: u64| day.iter().filter(|a| a.at / 3_600_000 == h).count();
    assert!(
        per_hour(0) < 50 && per_hour(12) > 2_000,
        "{} {}",
        per_hour(0),
        per_hour(12)
    );
}

#[test]
fn beyond_the_seeds_spillway_queues_less_at_no_more_spend_and_never_twice() {
    let rows = compare::beyond();
    let shown = compare::table(&rows);
    for r in &rows {
        assert!(r.spillway.lambda_gb_s <= r.oscar.lambda_gb_s, "{shown}");
        assert_eq!(r.spillway.duplicates, 0, "{shown}");
        assert_eq!(r.spillway.lost + r.oscar.lost, 0, "{shown}");
        // Figures in BENCHMARKS.md: bursts 0.60 (missing the fire case's 0.5), a day 0.14.
        assert!(r.queue_ratio() <= 0.65, "{shown}");
    }
}
