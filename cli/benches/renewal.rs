//! Certificate renewal traffic: `cargo bench -p spillway-cli --bench renewal`.
//!
//! Two real coordinators and one real agent each (release builds, loopback), side by side for
//! the same window: one renews node certificates every ~15 s (`node_lifetime = "40s"`,
//! `renew_before = "30s"`), the other never does within the window (defaults). The bytes on
//! each coordinator's QUIC port (counted by iptables rules on `lo`, removed afterwards) differ
//! by what renewals cost: the request and the new certificate on the control stream, and the
//! new connection the agent makes with it (a full mutual-TLS handshake, Hello, Welcome and the
//! resync). Printed per renewal, and for a fleet at the default lifetime.

// A benchmark harness: a failure is a panic with the reason.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Server, http, metric, start_agent, start_coordinator_with, tokens};

mod support;

const WINDOW: Duration = Duration::from_secs(90);

/// iptables rules counting the UDP bytes to and from one port on loopback.
struct Counter {
    port: u16,
}

impl Counter {
    fn rule(&self, dir: &str) -> Vec<String> {
        let flag = if dir == "in" { "--dport" } else { "--sport" };
        [
            "INPUT",
            "-i",
            "lo",
            "-p",
            "udp",
            flag,
            &self.port.to_string(),
            "-m",
            "comment",
            "--comment",
            &format!("spillway-bench-{}-{dir}", self.port),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn new(port: u16) -> Self {
        let c = Self { port };
        for dir in ["in", "out"] {
            let ok = Command::new("iptables")
                .arg("-I")
                .args(c.rule(dir))
                .status()
                .unwrap()
                .success();
            assert!(ok, "iptables (run as root)");
        }
        c
    }

    /// Bytes counted so far, both directions.
    fn bytes(&self) -> u64 {
        let out = Command::new("iptables")
            .args(["-L", "INPUT", "-v", "-x", "-n"])
            .output()
            .unwrap();
        let tag = format!("spillway-bench-{}-", self.port);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&tag))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        for dir in ["in", "out"] {
            let _ = Command::new("iptables")
                .arg("-D")
                .args(self.rule(dir))
                .status();
        }
    }
}

fn renewals(server: &Server) -> f64 {
    metric(
        &http(server.http, "GET", "/metrics", "", ""),
        "spillway_certificate_renewals_total{outcome=\"renewed\"}",
    )
    .unwrap_or(0.0)
}

fn ready(server: &Server) -> bool {
    let nodes: serde_json::Value =
        serde_json::from_str(&http(server.http, "GET", "/v1/nodes", &server.token, ""))
            .unwrap_or_default();
    nodes[0]["health"] == "Ready"
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let renewing =
        start_coordinator_with("[certificates]\nnode_lifetime = \"40s\"\nrenew_before = \"30s\"\n");
    let steady = start_coordinator_with("");
    let counters = [Counter::new(renewing.quic), Counter::new(steady.quic)];
    let _agents = [
        start_agent(&renewing, "renewing", &tokens(&renewing, 1)[0]),
        start_agent(&steady, "steady", &tokens(&steady, 1)[0]),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(ready(&renewing) && ready(&steady)) {
        assert!(Instant::now() < deadline, "the agents did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (b0, r0) = (counters.each_ref().map(Counter::bytes), renewals(&renewing));
    std::thread::sleep(WINDOW);
    let (b1, r1) = (counters.each_ref().map(Counter::bytes), renewals(&renewing));
    let (with, without) = (b1[0] - b0[0], b1[1] - b0[1]);
    let count = r1 - r0;
    assert!(count > 0.0, "no renewal in the window");
    let per = (with as f64 - without as f64) / count;
    println!(
        "certificate renewal traffic over {} s, one agent each, side by side:",
        WINDOW.as_secs()
    );
    println!(
        "  renewing every ~15 s: {with} bytes, {count} renewals; not renewing: {without} bytes (load reports, keep-alives); ratio {:.2}",
        with as f64 / without.max(1) as f64
    );
    println!("  one renewal costs {per:.0} bytes (request, certificate, reconnection)");
    // At the default lifetime (365 d, renewed 30 d before): one renewal per node per 335 days.
    let per_node_day = per / 335.0;
    println!(
        "  at the default lifetime: {per_node_day:.1} bytes per node per day; a fleet of 10,000 nodes {:.1} MiB per day, {:.0} renewals per day",
        per_node_day * 10_000.0 / 1_048_576.0,
        10_000.0 / 335.0
    );
}
