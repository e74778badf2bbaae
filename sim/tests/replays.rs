//! The simulator's promises: deterministic, nothing lost, Spillway never runs a job twice, and
//! OSCAR's non-atomic Rescheduler does when jobs start while it hands them over.

use spillway_placement::policy::{OscarPolicy, SpillwayPolicy};
use spillway_sim::{Report, Workload, run};

fn both(w: Workload) -> (Report, Report) {
    (
        run(&w.build("oscar"), &mut OscarPolicy::default()),
        run(&w.build("spillway"), &mut SpillwayPolicy::default()),
    )
}

const WORKLOADS: [Workload; 5] = [
    Workload::Fire { lambda: true },
    Workload::Fire { lambda: false },
    Workload::Burst { files: 1000 },
    Workload::Video { frames: 10 },
    Workload::Video { frames: 100 },
];

#[test]
fn every_job_finishes_under_both_policies_and_spillway_never_runs_one_twice() {
    for w in WORKLOADS {
        let (oscar, spillway) = both(w);
        for r in [&oscar, &spillway] {
            assert_eq!(r.lost_jobs, 0, "{}", r.table());
            assert_eq!(
                r.jobs_per_tier.values().sum::<u32>() as usize,
                r.jobs,
                "{}",
                r.table()
            );
            assert!(r.completion_mean_s >= r.lower_bound_mean_s, "{}", r.table());
        }
        assert_eq!(spillway.duplicate_runs, 0, "{}", spillway.table());
    }
}

#[test]
fn the_fire_case_has_the_thesis_job_counts() {
    let (oscar, spillway) = both(Workload::Fire { lambda: true });
    // 3 images every 30 s for 30 min, then every 5 s for 30 min.
    assert_eq!(oscar.jobs, 180 + 1080);
    assert_eq!(spillway.jobs, oscar.jobs);
    assert!(oscar.delegations.admission > 0, "{}", oscar.table());
}

#[test]
fn in_the_fire_case_spillway_halves_oscars_queue_time_at_no_more_lambda_cost() {
    for lambda in [false, true] {
        let (oscar, spillway) = both(Workload::Fire { lambda });
        let shown = format!("{}\n{}", spillway.table(), oscar.table());
        assert!(spillway.queue_mean_s <= 0.5 * oscar.queue_mean_s, "{shown}");
        assert!(spillway.lambda_usd <= oscar.lambda_usd, "{shown}");
        assert!(
            spillway.completion_mean_s <= oscar.completion_mean_s,
            "{shown}"
        );
    }
}

#[test]
fn oscars_rescheduler_runs_jobs_twice_when_they_start_during_the_hand_over() {
    let (oscar, spillway) = both(Workload::Burst { files: 1000 });
    assert!(oscar.delegations.rescheduler > 0, "{}", oscar.table());
    assert!(oscar.duplicate_runs > 0, "{}", oscar.table());
    assert!(
        spillway.queue_mean_s < oscar.queue_mean_s,
        "{}\n{}",
        spillway.table(),
        oscar.table()
    );
}

#[test]
fn replays_are_deterministic() {
    let w = Workload::Fire { lambda: true };
    let a = run(&w.build("spillway"), &mut SpillwayPolicy::default());
    let b = run(&w.build("spillway"), &mut SpillwayPolicy::default());
    assert_eq!(
        serde_json_like(&a),
        serde_json_like(&b),
        "two runs of one workload differ"
    );
}

fn serde_json_like(r: &Report) -> String {
    format!(
        "{:?} {:?} {} {} {} {}",
        r.jobs_per_tier,
        r.delegations.routes,
        r.queue_mean_s,
        r.completion_p95_s,
        r.lambda_gb_s,
        r.makespan_s
    )
}

#[test]
fn a_run_plots_queued_and_running_jobs_per_tier() {
    let r = run(
        &Workload::Video { frames: 10 }.build("oscar"),
        &mut OscarPolicy::default(),
    );
    let dir = std::env::temp_dir().join(format!("spillway-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("video.svg");
    r.plot(&path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("queued") && svg.contains("on-prem"));
    std::fs::remove_dir_all(dir).unwrap();
}
