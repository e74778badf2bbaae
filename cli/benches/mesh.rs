//! Mesh benchmark: a real `spillway serve` process (release build) under N simulated agents
//! from the in-tree load generator, each on its own mutual-TLS QUIC connection sending a load
//! report every second. Prints coordinator CPU, reports applied per second and the staleness of
//! the view (p50/p99, from the coordinator's own /metrics), for each N; then a real agent's RSS
//! while linked next to the same agent standalone.
//!
//! `cargo bench -p spillway-cli --bench mesh` (SPILLWAY_BENCH_AGENTS=1000,5000 to choose).
//! The load generator shares the machine with the coordinator; its CPU is printed too.

// A benchmark harness: a failure is a panic with the reason.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spillway_cli::loadgen::{FleetStats, enroll, run_fleet};
use support::{
    cpu_seconds, histogram_quantile, http, join_agent, metric, rss_kib, run_agent,
    start_coordinator, tokens,
};

mod support;

const WARMUP: Duration = Duration::from_secs(5);
const MEASURE: Duration = Duration::from_secs(10);

fn fleet_round(rt: &tokio::runtime::Runtime, agents: usize) {
    let server = start_coordinator();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.quic));
    let t0 = Instant::now();
    let members = rt
        .block_on(enroll(addr, tokens(&server, agents), 32))
        .unwrap();
    let enroll_secs = t0.elapsed().as_secs_f64();

    let stats = Arc::new(FleetStats::default());
    let ramp = 1000;
    let connect_time = Duration::from_secs_f64(agents as f64 / f64::from(ramp));
    let until = Instant::now() + connect_time + WARMUP + MEASURE + Duration::from_secs(2);
    let fleet = {
        let stats = stats.clone();
        rt.spawn(run_fleet(
            addr,
            members,
            16,
            Duration::from_secs(1),
            ramp,
            until,
            stats,
        ))
    };
    std::thread::sleep(connect_time + WARMUP);
    let connected = stats.connected.load(Ordering::Relaxed);
    let m0 = http(server.http, "GET", "/metrics", "", "");
    let me = std::process::id();
    let (c0, g0, t) = (
        cpu_seconds(server.child.id()),
        cpu_seconds(me),
        Instant::now(),
    );
    std::thread::sleep(MEASURE);
    let (c1, g1, secs) = (
        cpu_seconds(server.child.id()),
        cpu_seconds(me),
        t.elapsed().as_secs_f64(),
    );
    let m1 = http(server.http, "GET", "/metrics", "", "");
    let applied_series = "spillway_load_reports_total{outcome=\"applied\"}";
    let applied =
        metric(&m1, applied_series).unwrap_or(0.0) - metric(&m0, applied_series).unwrap_or(0.0);
    // Over the measured interval only, as Prometheus's histogram_quantile would estimate it.
    let staleness = "spillway_view_staleness_seconds";
    let p50 = histogram_quantile(0.5, &m0, &m1, staleness).unwrap_or(f64::NAN);
    let p99 = histogram_quantile(0.99, &m0, &m1, staleness).unwrap_or(f64::NAN);
    let ready = metric(&m1, "spillway_nodes{health=\"Ready\"}").unwrap_or(0.0);
    let rss = rss_kib(server.child.id()) as f64 / 1024.0;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "{agents:>6} agents | enroll {enroll_secs:>5.1} s | connected {connected:>6} | Ready {ready:>6} | reports applied/s {:>7.0} | coordinator CPU {:>5.1}% of one core = {:>4.1}% of the machine, RSS {rss:.0} MiB | staleness p50 {:>4.0} ms, p99 {:>4.0} ms | loadgen CPU {:>5.1}% of one core | failed {}",
        applied / secs,
        (c1 - c0) / secs * 100.0,
        (c1 - c0) / secs * 100.0 / cores,
        p50 * 1000.0,
        p99 * 1000.0,
        (g1 - g0) / secs * 100.0,
        stats.failed.load(Ordering::Relaxed),
    );
    if let Ok(Some(e)) = stats.first_error.lock().map(|e| e.clone()) {
        println!("        first failure: {e}");
    }
    let _ = rt.block_on(fleet);
}

/// RSS of a real release agent after 10 s idle, standalone and then linked to a coordinator.
fn agent_rss() {
    let server = start_coordinator();
    let measure = |join: bool| -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("a.toml");
        std::fs::write(
            &cfg,
            "node_name = \"rss\"\ndata_root = \"d\"\nstate_dir = \"s\"\n",
        )
        .unwrap();
        if join {
            join_agent(&server, &cfg, &tokens(&server, 1).remove(0));
        }
        let mut child = run_agent(&cfg);
        std::thread::sleep(Duration::from_secs(10));
        let rss = rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        rss
    };
    let (alone, linked) = (measure(false), measure(true));
    println!(
        "agent RSS after 10 s idle (release, x86_64): standalone {:.1} MiB, linked to a coordinator {:.1} MiB ({:.2}x)",
        alone as f64 / 1024.0,
        linked as f64 / 1024.0,
        linked as f64 / alone.max(1) as f64
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let counts: Vec<usize> = std::env::var("SPILLWAY_BENCH_AGENTS")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "mesh benchmark: {} cores, one report per agent per second, measured over {} s after {} s of warm-up",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    for n in counts {
        fleet_round(&rt, n);
    }
    agent_rss();
}
