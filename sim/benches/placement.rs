//! Placement benchmark: decisions per second of the core, then the fire-detection replay of the
//! OSCAR thesis under both policies side by side.
//!
//! `cargo bench -p spillway-sim --bench placement`

use std::time::Instant;

use spillway_placement::estimate::RunTimes;
use spillway_placement::model::Cost;
use spillway_placement::policy::{FunctionSpec, OscarPolicy, SpillwayPolicy};
use spillway_placement::{Job, Policy, Target, TargetKind};
use spillway_sim::{Workload, run};

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

fn fire_replay(lambda: bool) {
    let w = Workload::Fire { lambda };
    let t = Instant::now();
    let oscar = run(&w.build("oscar"), &mut OscarPolicy::default());
    let spillway = run(&w.build("spillway"), &mut SpillwayPolicy::default());
    let secs = t.elapsed().as_secs_f64();
    println!("\n{}\n\n{}\n", oscar.table(), spillway.table());
    println!(
        "{} replay (two simulated hours per policy) in {secs:.2} s of real time\n\
         mean queue time spillway/oscar = {:.1}/{:.1} s = {:.3} (target <= 0.5)\n\
         mean completion spillway/oscar = {:.1}/{:.1} s = {:.3}\n\
         Lambda cost spillway/oscar = ${:.4}/${:.4}\n\
         duplicates spillway {} / oscar {}; lost spillway {} / oscar {}",
        w.name(),
        spillway.queue_mean_s,
        oscar.queue_mean_s,
        spillway.queue_mean_s / oscar.queue_mean_s.max(1e-9),
        spillway.completion_mean_s,
        oscar.completion_mean_s,
        spillway.completion_mean_s / oscar.completion_mean_s.max(1e-9),
        spillway.lambda_usd,
        oscar.lambda_usd,
        spillway.duplicate_runs,
        oscar.duplicate_runs,
        spillway.lost_jobs,
        oscar.lost_jobs
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    decisions_per_second();
    println!(
        "\nassumptions (the thesis gives no numbers for these): {}",
        spillway_sim::scenario::FIRE_ASSUMPTIONS
    );
    fire_replay(false);
    fire_replay(true);
}
