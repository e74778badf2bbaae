//! The simulator's promises: deterministic, nothing lost, Spillway never runs a job twice, and
//! OSCAR's non-atomic Rescheduler does when jobs start while it hands them over.

use spillway_placement::policy::OscarPolicy;
use spillway_sim::calibrate::{self, Grid, THESIS_DUPLICATES};
use spillway_sim::compare;
use spillway_sim::scenario::FireCase;
use spillway_sim::{Report, Workload, run};

fn both(w: Workload) -> (Report, Report) {
    (w.run("oscar"), w.run("spillway"))
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
    // 180 images in phase 1, then the 1005 (scenario 1) and 1028 (scenario 2) that arrived.
    for (lambda, jobs) in [(false, 180 + 1005), (true, 180 + 1028)] {
        let (oscar, spillway) = both(Workload::Fire { lambda });
        assert_eq!(oscar.jobs, jobs);
        assert_eq!(spillway.jobs, oscar.jobs);
        assert!(oscar.delegations.admission > 0, "{}", oscar.table());
    }
}

#[test]
fn the_recorded_calibration_reproduces_the_thesis_counts() {
    let fitted = calibrate::recorded(calibrate::THESIS_THRESHOLD_MS);
    let shown = calibrate::explain(&fitted, &Grid::standard());
    // ±10 % (or one job) everywhere but scenario 1's fog hand-overs, 10.9 % off: the thesis'
    // two runs differ more than 2.3 % more images explain (see BENCHMARKS.md).
    for check in calibrate::checks(&fitted.counts) {
        assert!(check.error <= 0.11, "{shown}");
    }
    assert!(
        THESIS_DUPLICATES.contains(&fitted.counts.s2_duplicates),
        "{shown}"
    );
    // The text's 30 s threshold fits better than Fig. 5.4's 15 s.
    let at_15 = calibrate::recorded_at_15s();
    assert!(fitted.score < at_15.score, "{shown}");
}

#[test]
fn the_search_lands_on_the_recorded_calibration() {
    let c = calibrate::CALIBRATED;
    let around = |v: u64, step: u64| vec![v - step, v, v + step];
    let grid = Grid {
        fog_run_ms: around(c.fog_run_ms, 500),
        spread_pct: vec![c.spread_pct],
        resource_manager_interval_ms: vec![c.resource_manager_interval_ms],
        onprem_run_ms: around(c.onprem_run_ms, 500),
        onprem_start_ms: vec![c.onprem_start_ms],
        lambda_vs_onprem_pct: vec![110],
    };
    let found = calibrate::search(&grid, calibrate::THESIS_THRESHOLD_MS, 2);
    let recorded = calibrate::recorded(calibrate::THESIS_THRESHOLD_MS);
    assert_eq!(found.score, recorded.score, "{found:?}");
}

#[test]
fn the_fair_comparison_keeps_its_measured_ratios() {
    // Regression guard on the figures in BENCHMARKS.md (deterministic replays).
    let rows = compare::fair(FireCase::thesis(true));
    let ratio = |setup: &str| {
        rows.iter()
            .find(|r| r.setup == setup)
            .map(|r| r.queue_ratio())
            .unwrap_or(f64::NAN)
    };
    let shown = compare::table(&rows);
    assert!(ratio("scenario 1, as the thesis ran it") <= 0.2, "{shown}");
    assert!(ratio("scenario 2, as the thesis ran it") <= 0.2, "{shown}");
    for name in ["scenario 1", "scenario 2"] {
        let setup = format!("{name}, OSCAR's Resource Manager every 1 s");
        assert!(ratio(&setup) <= 0.5, "{setup}\n{shown}");
        for t in [15, 5, 2] {
            let setup = format!("{name}, both at threshold {t} s, Resource Manager every 1 s");
            // The one miss: scenario 1 at 2 s (0.61, see BENCHMARKS.md).
            let bound = if (name, t) == ("scenario 1", 2) {
                0.65
            } else {
                0.5
            };
            assert!(ratio(&setup) <= bound, "{setup}\n{shown}");
        }
    }
    for r in &rows {
        assert!(r.spillway.lambda_gb_s <= r.oscar.lambda_gb_s, "{shown}");
        assert_eq!(r.spillway.duplicates, 0, "{shown}");
        assert_eq!(r.spillway.lost + r.oscar.lost, 0, "{shown}");
    }
}

#[test]
fn spillways_queue_time_falls_as_its_lambda_budget_grows() {
    let curve = compare::curve(compare::curve_case());
    let first = curve.first().expect("points");
    let last = curve.last().expect("points");
    assert_eq!(first.spent_gb_s, 0.0, "{curve:?}");
    assert!(last.queue_mean_s <= first.queue_mean_s, "{curve:?}");
    assert!(
        curve
            .windows(2)
            .all(|w| w[1].spent_gb_s + 1.0 >= w[0].spent_gb_s),
        "a larger budget never spends less: {curve:?}"
    );
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
    let a = w.run("spillway");
    let b = w.run("spillway");
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

    // The same plot as a PNG: a real image of the canvas' size, with more than the white
    // background drawn on it (lines and text in the embedded font).
    let png_path = dir.join("video.png");
    r.plot(&png_path).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1100, 360 * 3));
    let inked = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    assert!(inked > 10_000, "only {inked} pixels drawn");

    // Any other extension is refused before anything is written.
    let jpg = dir.join("video.jpg");
    let err = r.plot(&jpg).unwrap_err();
    assert!(err.contains("must end in .svg or .png"), "{err}");
    assert!(!jpg.exists());
    std::fs::remove_dir_all(dir).unwrap();
}
