//! Placement benchmark: decisions per second of the core, then the fire-detection replay of the
//! OSCAR thesis under both policies side by side.
//!
//! `cargo bench -p spillway-sim --bench placement`

use std::time::Instant;

use spillway_placement::estimate::RunTimes;
use spillway_placement::model::Cost;
use spillway_placement::policy::{FunctionSpec, OscarPolicy, SpillwayPolicy};
use spillway_placement::{Job, Policy, Target, TargetKind};

fn decisions_per_second() {
    // An origin, 30 peers, 3 clusters and Lambda: a mid-sized mesh.
    let mut view = vec![Target {
        id: "origin".into(),
        kind: TargetKind::Origin,
        tier: 0,
        slots: Some(3),
        free_slots: 0,
        queued: 12,
        latency_ms: 0,
        bytes_per_ms: 1.0,
        start_ms: 200,
        cost: None,
    }];
    for i in 0..34u32 {
        let (kind, tier, slots) = match i {
            0..30 => (TargetKind::Peer, 0, Some(3)),
            30..33 => (TargetKind::Cluster, 1 + i - 30, Some(16)),
            _ => (TargetKind::Elastic, 4, None),
        };
        view.push(Target {
            id: format!("t{i}"),
            kind,
            tier,
            slots,
            free_slots: if i % 7 == 0 { 1 } else { 0 },
            queued: i % 5 + 1,
            latency_ms: 5 + u64::from(i),
            bytes_per_ms: 2500.0,
            start_ms: if kind == TargetKind::Elastic {
                5000
            } else {
                200
            },
            cost: (kind == TargetKind::Elastic).then_some(Cost {
                usd_per_gb_s: 0.0000166667,
                memory_gb: 1.0,
            }),
        });
    }
    let f = FunctionSpec {
        name: "fire".into(),
        max_local_wait_ms: 2000,
        rescheduler_threshold_ms: 30_000,
        cost_bound_usd: Some(0.001),
        elastic_budget_gb_s_per_hour: Some(1e12),
        max_hops: 3,
    };
    let mut times = RunTimes::default();
    times.set_prior("fire", 10_000);
    let mut job = Job {
        id: 0,
        function: "fire".into(),
        input_bytes: 150_000,
        origin: "origin".into(),
        hops: 0,
        visited: vec!["origin".into()],
        queued_at: 0,
    };
    for (name, policy) in [
        (
            "spillway",
            &mut SpillwayPolicy::default() as &mut dyn Policy,
        ),
        ("oscar", &mut OscarPolicy::default()),
    ] {
        let n = 300_000u64;
        let t = Instant::now();
        let mut delegated = 0u64;
        for i in 0..n {
            job.id = i;
            view[0].queued = (i % 20) as u32;
            if matches!(
                policy.on_arrival(&job, &f, &view, &times, i),
                spillway_placement::Decision::Delegate { .. }
            ) {
                delegated += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "placement decisions, {name:<8} policy, {} targets: {:>10.0} per second ({:.2} µs each; {delegated} of {n} delegated)",
            view.len(),
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
}

/// What `spillway sim fire` prints (the recorded fits, replayed), and scenario 1's runs too,
/// timed.
fn fire() {
    use spillway_sim::calibrate;
    use spillway_sim::compare;
    use spillway_sim::scenario::FireCase;
    let t = Instant::now();
    let summary = compare::fire_summary(&calibrate::fits(None), true);
    let case = FireCase::thesis(false);
    println!(
        "\n{}\n\n{}\n\n{}",
        case.run("oscar").table(),
        case.run("spillway").table(),
        summary.text
    );
    println!(
        "\ncalibration replays, fair comparison, {} curve points and small traces in {:.2} s \
         of real time",
        summary.curve.len(),
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    decisions_per_second();
    fire();
}
