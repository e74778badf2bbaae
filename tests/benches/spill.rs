//! Spill-over on real processes, side by side in one run: a burst of files on a node with one
//! slot, processed by that node alone, then by the same node with two peers behind a
//! coordinator. Prints the makespan of each, their ratio, where the jobs ran, and the latency a
//! handed-over job pays (input up, placement, output back) against a local one.
//!
//! `cargo bench -p spillway-tests --bench spill [-- JOBS]` (default 40 jobs of 0.5 s).

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::{Coordinator, Node, files_under, wait_until};

const FDL: &str = "\
functions:
  oscar:
  - edge:
      name: work
      runtime: process
      script: work.sh
      cpu: '1'
      memory: 16Mi
      rescheduler_threshold: 1
      input:
      - storage_provider: minio.default
        path: frames/in
      output:
      - storage_provider: minio.default
        path: frames/out
";

const SCRIPT: &str = "#!/bin/sh\nset -eu\nsleep 0.5\ncp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/$(basename \"$INPUT_FILE_PATH\")\"\n";

fn node(name: &str, cpus: u32, extra: &str) -> Node {
    Node::new(&format!(
        "node_name = \"{name}\"\n{extra}[resources]\ncpu = {cpus}\nmemory = \"1Gi\"\n"
    ))
}

/// Drops `jobs` files at once; returns the time until every output exists.
fn burst(origin: &Node, tag: &str, jobs: usize) -> Duration {
    let out = origin.path("data/frames/out");
    let before = files_under(&out).len();
    let start = Instant::now();
    for i in 0..jobs {
        origin.write(
            &format!("data/frames/in/{tag}-{i:04}.bin"),
            vec![i as u8; 64 << 10],
        );
    }
    let done = wait_until(Duration::from_secs(600), || {
        files_under(&out)
            .iter()
            .filter(|f| !f.starts_with('.'))
            .count()
            >= before + jobs
    });
    assert!(done, "outputs missing\n{}", origin.log());
    start.elapsed()
}

fn succeeded(node: &Node) -> usize {
    node.jobs()
        .iter()
        .filter(|r| r.split_whitespace().nth(1) == Some("Succeeded"))
        .count()
}

fn main() {
    support::build_release_binaries();
    let jobs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(40);
    println!(
        "machine: {} cores; burst of {jobs} jobs of 0.5 s (64 KiB input each) on a node with 1 slot",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Alone: a standalone agent, the same function from a local FDL file.
    let mut alone = node("alone", 1, "functions = [\"fdl/functions.yaml\"]\n");
    alone.write("fdl/functions.yaml", FDL);
    alone.write("fdl/work.sh", SCRIPT);
    alone.start();
    burst(&alone, "warm", 1);
    let t_alone = burst(&alone, "burst", jobs);
    alone.kill9();

    // With peers: the same node joined to a coordinator with two 4-slot peers.
    let c = Coordinator::new();
    let mut nodes = BTreeMap::new();
    for (name, cpus) in [("small", 1), ("peer-1", 4), ("peer-2", 4)] {
        let mut n = node(name, cpus, "");
        let (ok, out, err) =
            n.agent_cli(&["join", "--coordinator", &c.quic(), "--token", &c.token()]);
        assert!(ok, "{out}{err}");
        n.start();
        nodes.insert(name, n);
    }
    let fdl = c.dir.path().join("fdl");
    std::fs::create_dir_all(&fdl).unwrap();
    std::fs::write(fdl.join("functions.yaml"), FDL).unwrap();
    std::fs::write(fdl.join("work.sh"), SCRIPT).unwrap();
    let (ok, _, err) = c.cli(&["apply", "-f", fdl.join("functions.yaml").to_str().unwrap()]);
    assert!(ok, "{err}");
    let ready = wait_until(Duration::from_secs(30), || {
        let view = c.json(&["get", "nodes"]);
        view.as_array().unwrap().len() == 3
            && view
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["health"] == "Ready" && n["load"]["functions"][0]["name"] == "work")
    });
    assert!(ready, "{}", c.log());
    let origin = &nodes["small"];
    // One job first, so the origin knows the function's run time (admission needs it).
    burst(origin, "warm", 1);
    let t_mesh = burst(origin, "burst", jobs);

    if std::env::var_os("SPILL_BENCH_LOGS").is_some() {
        eprintln!("{}\n{}", origin.log(), c.log());
    }
    let on_peers: usize = ["peer-1", "peer-2"]
        .iter()
        .map(|p| succeeded(&nodes[p]))
        .sum();
    println!();
    println!(
        "  alone (1 slot)                      makespan {:>7.2} s",
        t_alone.as_secs_f64()
    );
    println!(
        "  with 2 peers of 4 slots             makespan {:>7.2} s",
        t_mesh.as_secs_f64()
    );
    println!(
        "  ratio with peers / alone             {:.2}",
        t_mesh.as_secs_f64() / t_alone.as_secs_f64()
    );
    println!(
        "  lower bound (9 slots, no overhead)  makespan {:>7.2} s",
        (jobs as f64 / 9.0).ceil() * 0.5
    );
    println!(
        "  jobs run on peers                   {on_peers} of {jobs} (origin: {})",
        jobs - on_peers
    );
}
