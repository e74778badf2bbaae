//! Upgrade rollout benchmark: `cargo bench -p spillway-cli --bench upgrade`
//! (SPILLWAY_BENCH_AGENTS=4,8 to choose the fleet sizes).
//!
//! A real `spillway serve` and N real agents (release builds), each joined with its own token
//! and started as a board's init would (no systemd: they restart under their own supervisor).
//! For each N, two rollouts of a new build (the agent with bytes appended: another digest) run
//! side by side: one node at a time (`--batch 1`) and all at once (`--batch N`). Printed: the
//! time from `spillway upgrade nodes` to the last node Ready, each node's order-to-Done spread,
//! the bytes shipped, and the supervisors' and agents' RSS afterwards.

// A benchmark harness: a failure is a panic with the reason.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Agent, Server, http, release_bin, rss_kib, start_agent, start_coordinator, tokens};

mod support;

fn ready(server: &Server) -> usize {
    let nodes: serde_json::Value =
        serde_json::from_str(&http(server.http, "GET", "/v1/nodes", &server.token, ""))
            .unwrap_or_default();
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["health"] == "Ready")
        .count()
}

/// The release agent with `tag` appended (another digest, the same program).
fn variant(dir: &Path, tag: &str) -> (std::path::PathBuf, u64) {
    let mut bytes = std::fs::read(release_bin("spillway-agent")).unwrap();
    bytes.extend_from_slice(format!("\nspillway bench build {tag}\n").as_bytes());
    let path = dir.join(format!("agent-{tag}"));
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes.len() as u64)
}

/// One rollout with `spillway upgrade nodes --wait`: wall time, and each node's Done time
/// after the rollout's creation (ms).
fn rollout(
    server: &Server,
    client: &Path,
    binary: &Path,
    version: &str,
    batch: usize,
) -> (Duration, Vec<u64>) {
    let t = Instant::now();
    let out = Command::new(release_bin("spillway"))
        .arg("--client-config")
        .arg(client)
        .args(["upgrade", "nodes", "--binary"])
        .arg(binary)
        .args([
            "--version",
            version,
            "--batch",
            &batch.to_string(),
            "--wait",
        ])
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "rollout failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value =
        serde_json::from_str(&http(server.http, "GET", "/v1/upgrades", &server.token, "")).unwrap();
    let r = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == version)
        .unwrap();
    let created = r["created_at_ms"].as_u64().unwrap();
    let mut done: Vec<u64> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["since_ms"].as_u64().unwrap().saturating_sub(created))
        .collect();
    done.sort_unstable();
    (took, done)
}

/// Memory a process holds alone (private pages, KiB): what it adds to the node.
fn private_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Private_"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// RSS of each agent's supervisor (and the private part of it) and of the agent under it (KiB).
fn memory(agents: &[Agent]) -> (u64, u64, u64) {
    let (mut sup, mut private, mut child) = (0, 0, 0);
    for a in agents {
        let pid = a.child.id();
        sup += rss_kib(pid);
        private += private_kib(pid);
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            child += rss_kib(c);
        }
    }
    let n = agents.len().max(1) as u64;
    (sup / n, private / n, child / n)
}

fn round(n: usize) {
    let server = start_coordinator();
    let client = server.dir.path().join("client.toml");
    std::fs::write(
        &client,
        format!(
            "coordinator = \"http://127.0.0.1:{}\"\ntoken = \"{}\"\n",
            server.http, server.token
        ),
    )
    .unwrap();
    let agents: Vec<Agent> = tokens(&server, n)
        .iter()
        .enumerate()
        .map(|(i, t)| start_agent(&server, &format!("bench-{i:03}"), t))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready(&server) < n {
        assert!(Instant::now() < deadline, "the fleet did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let builds = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (label, batch) in [("one at a time", 1), ("all at once", n)] {
        let (binary, size) = variant(builds.path(), &format!("{n}-{batch}"));
        let (took, done) = rollout(
            &server,
            &client,
            &binary,
            &format!("bench-{n}-{batch}"),
            batch,
        );
        let per_node = took.as_secs_f64() / n as f64;
        println!(
            "{n:>3} agents, {label:<13} (--batch {batch:>3}): {:>6.2} s to the last Ready ({per_node:.2} s per node); Done after {} ms (first) .. {} ms (last); {:.1} MiB shipped",
            took.as_secs_f64(),
            done.first().unwrap_or(&0),
            done.last().unwrap_or(&0),
            (size * n as u64) as f64 / 1_048_576.0
        );
        results.push(took.as_secs_f64());
    }
    println!(
        "{n:>3} agents: one at a time / all at once = {:.2}",
        results[0] / results[1].max(1e-9)
    );
    let (sup, private, child) = memory(&agents);
    println!(
        "{n:>3} agents after the upgrades: supervisor RSS {:.1} MiB ({:.1} MiB of it private), agent RSS {:.1} MiB (per node)",
        sup as f64 / 1024.0,
        private as f64 / 1024.0,
        child as f64 / 1024.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let counts: Vec<usize> = std::env::var("SPILLWAY_BENCH_AGENTS")
        .unwrap_or_else(|_| "4,8".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let size = std::fs::metadata(release_bin("spillway-agent")).map_or(0, |m| m.len());
    println!(
        "upgrade rollout benchmark: {} cores, release agent {:.1} MiB, agents and coordinator on loopback",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        size as f64 / 1_048_576.0
    );
    for n in counts {
        round(n);
    }
}
