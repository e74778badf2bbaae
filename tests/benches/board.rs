//! Edge delivery figures on the emulated board of `tests/tests/support/board.rs`
//! (qemu-system-aarch64 -M virt, cortex-a72 × 4, 2 GB, Debian's arm64 kernel, TCG on this
//! machine's x86 cores — far slower than a real Pi 4 for compute, so treat times as upper bounds):
//! - from power-on: network up, agent started (first-boot script done), `Ready` in
//!   `spillway get nodes`; the agent's own share (Ready − started) side by side with the total;
//! - the first job (cold pull of the arm64 image + container) and warm jobs on the board;
//! - the agent's idle RSS as the board's kernel counts it (30 s after its last job);
//! - the sizes of the release binaries per architecture that `cross/build.sh` left behind.
//!
//! `cargo bench -p spillway-tests --bench board [-- BOOTS]` (default 3 boots), as root, after
//! `tests/pi/assets.sh` and `cross/build.sh aarch64-unknown-linux-gnu` (or with
//! `SPILLWAY_AARCH64_AGENT` naming another static aarch64 agent).

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::board::Testbed;

fn main() {
    let boots: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    support::build_release_binaries();
    let target = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "/var/cache/spillway/target".into()),
    );
    let agent = std::env::var("SPILLWAY_AARCH64_AGENT").map_or_else(
        |_| target.join("aarch64-unknown-linux-gnu/release/spillway-agent"),
        PathBuf::from,
    );
    assert!(
        agent.is_file(),
        "no aarch64 agent at {}: run cross/build.sh aarch64-unknown-linux-gnu",
        agent.display()
    );
    println!("release binaries (stripped, static):");
    for triple in [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "armv7-unknown-linux-gnueabihf",
    ] {
        for bin in ["spillway-agent", "spillway"] {
            let path = target.join(triple).join("release").join(bin);
            match std::fs::metadata(&path) {
                Ok(m) => println!(
                    "  {triple:<30} {bin:<15} {:>6.2} MiB",
                    m.len() as f64 / 1048576.0
                ),
                Err(_) => {
                    println!("  {triple:<30} {bin:<15}   (not built: cross/build.sh {triple})")
                }
            }
        }
    }
    println!(
        "board agent: {} ({:.2} MiB)\n",
        agent.display(),
        std::fs::metadata(&agent).map_or(0, |m| m.len()) as f64 / 1048576.0
    );
    println!(
        "{:>4} {:>9} {:>9} {:>9} {:>12} {:>10} {:>10} {:>10}",
        "boot", "net up", "started", "Ready", "agent share", "1st job", "warm job", "idle RSS"
    );
    let mut rows = Vec::new();
    for boot in 1..=boots {
        let bed = Testbed::new(&agent);
        let (ok, out, err) = bed.flash();
        assert!(ok, "flash failed: {out}{err}");
        let mut pi = bed.boot();
        let ready = bed
            .wait_ready(&mut pi, Duration::from_secs(300))
            .unwrap_or_else(|| panic!("not Ready:\n{}", pi.console()))
            .as_secs_f64();
        let net = pi.console_time("board: network up").unwrap_or(f64::NAN);
        let started = pi.console_time("board: up").unwrap_or(f64::NAN);
        bed.deploy_checksum();
        let input = vec![7u8; 200_000];
        let (ok, out, first) = bed.invoke("cold.bin", &input);
        assert!(ok, "first job failed: {out}");
        let mut warm: Vec<f64> = (0..5)
            .map(|i| {
                let (ok, out, took) = bed.invoke(&format!("warm-{i}.bin"), &input);
                assert!(ok, "warm job failed: {out}");
                took.as_secs_f64()
            })
            .collect();
        warm.sort_by(f64::total_cmp);
        std::thread::sleep(Duration::from_secs(30));
        let rss = pi.agent_rss_kib().unwrap_or(0);
        let share = (ready - started) / ready;
        println!(
            "{boot:>4} {net:>8.1}s {started:>8.1}s {ready:>8.1}s {:>11.0}% {:>9.2}s {:>9.2}s {:>7.1} MiB",
            share * 100.0,
            first.as_secs_f64(),
            warm[warm.len() / 2],
            rss as f64 / 1024.0
        );
        rows.push((
            ready,
            started,
            first.as_secs_f64(),
            warm[warm.len() / 2],
            rss,
        ));
        pi.power_off();
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\nmedian of {boots}: power-on → Ready {:.1} s (agent start → Ready {:.1} s), first job {:.2} s, warm job {:.2} s, idle agent RSS {:.1} MiB",
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.0 - r.1).collect()),
        median(rows.iter().map(|r| r.2).collect()),
        median(rows.iter().map(|r| r.3).collect()),
        median(rows.iter().map(|r| r.4 as f64).collect()) / 1024.0
    );
}
