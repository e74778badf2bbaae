//! An emulated Raspberry Pi boots a card prepared by `spillway flash`, joins the mesh and runs a
//! container function on its arm64 kernel. See `support/board.rs` for what is emulated and what
//! is real (the OS on the card is busybox with a `systemctl` test double).
//!
//! Ignored by a plain `cargo test`: it needs a static aarch64 agent and the board's kernel.
//! `scripts/test.sh` provides both and runs it:
//!   SPILLWAY_AARCH64_AGENT=… cargo test -p spillway-tests --test pi_boot -- --ignored

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::board::{self, NODE, Testbed};

#[test]
#[ignore = "boots qemu-system-aarch64 with an aarch64 agent: scripts/test.sh runs it"]
fn a_flashed_card_boots_joins_the_mesh_and_runs_a_container_on_arm64() {
    let bed = Testbed::new(&board::aarch64_agent());
    let (c, card) = (&bed.coordinator, &bed.card);
    let (ok, out, err) = bed.flash();
    assert!(ok, "flash failed: {out}{err}");
    assert!(out.contains("prepared for aarch64"), "{out}");
    // Checked with mtools, independently of the fatfs crate that wrote it.
    let cmdline = board::mtype(card, "cmdline.txt").expect("cmdline.txt");
    assert!(
        cmdline.contains("root=PARTUUID=5e1f0a11-02")
            && cmdline.contains("systemd.run=/boot/firmware/spillway-firstrun.sh"),
        "{cmdline}"
    );
    let ours = [
        "spillway-agent",
        "spillway-agent.toml",
        "spillway-join-token",
        "spillway-firstrun.sh",
    ];
    let files = board::mdir(card, "");
    assert!(
        ours.iter().all(|f| files.iter().any(|n| n == f)),
        "{files:?}"
    );

    let mut pi = bed.boot();
    let to_ready = bed.wait_ready(&mut pi, Duration::from_secs(300));
    assert!(
        to_ready.is_some(),
        "the board never became Ready:\n{}\n{}",
        pi.console(),
        c.log()
    );
    println!(
        "power-on → Ready in `spillway get nodes`: {:.1?}",
        to_ready.unwrap_or_default()
    );
    let console = pi.console();
    assert!(
        console.contains("board: first-boot script succeeded")
            && console.contains("spillway firstrun: host name pi-emu"),
        "{console}"
    );
    let nodes = c.json(&["get", "nodes"]);
    let node = &nodes[0];
    // The label the operator gave the card's token; the agent's own config only proposes.
    assert_eq!(node["labels"]["board"], "emulated", "{node}");
    assert_eq!(node["proposed_labels"]["board"], "emulated", "{node}");
    assert_eq!(node["arch"], "aarch64", "{node}");

    // A container function, deployed by the coordinator and pulled by the board.
    bed.deploy_checksum();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (ok, out, took) = bed.invoke("frame.bin", &bytes);
    assert!(ok, "the job did not succeed: {out}\n{}", pi.console());
    println!("first job (pull + container) on the board: {took:.1?}");
    let (ok, result, err) = c.cli(&["get", &format!("{NODE}:checksum/out/frame.bin.txt")]);
    assert!(ok, "get failed: {err}");
    let lines: Vec<&str> = result.lines().collect();
    assert_eq!(lines.first(), Some(&"aarch64"), "{result}");
    assert_eq!(
        lines.get(1).copied(),
        Some(hex::encode(Sha256::digest(&bytes)).as_str())
    );
    // Pure cgroup v2 (one `0::` line, its own cgroup namespace) with the FDL's memory limit,
    // seccomp and no_new_privs on: libcontainer's v2 manager on an arm64 kernel.
    assert_eq!(lines.get(2).copied(), Some("0::/"), "{result}");
    assert!(result.contains("memory.max 67108864\n"), "{result}");
    assert!(
        result.contains("Seccomp:\t2") && result.contains("NoNewPrivs:\t1"),
        "{result}"
    );

    assert!(
        support::wait_until(Duration::from_secs(30), || pi.agent_rss_kib().is_some()),
        "no memory report from the board:\n{}",
        pi.console()
    );
    println!(
        "agent VmRSS on the board: {} KiB",
        pi.agent_rss_kib().unwrap_or(0)
    );

    upgrades_over_the_mesh(&bed, &mut pi);

    // After first boot the card no longer runs the script and no longer holds the token.
    pi.power_off();
    let cmdline = board::mtype(card, "cmdline.txt").expect("cmdline.txt");
    assert!(!cmdline.contains("systemd.run"), "{cmdline}");
    assert!(cmdline.contains("root=PARTUUID=5e1f0a11-02"), "{cmdline}");
    let files = board::mdir(card, "");
    assert!(
        ours.iter().all(|f| !files.iter().any(|n| n == f)),
        "{files:?}"
    );
}

/// The board's agent is upgraded over the mesh to a new arm64 build (the same program with
/// bytes appended: another digest), then ordered onto a binary that cannot run (the first 4 MiB
/// of the agent: a valid arm64 ELF header, its code cut off). The board has no systemd (its
/// `systemctl` test double starts the unit's command), so the agent restarts under its own
/// supervisor, and goes back to the good build by itself.
fn upgrades_over_the_mesh(bed: &Testbed, pi: &mut board::Board) {
    let c = &bed.coordinator;
    let builds = tempfile::tempdir().unwrap();
    let mut good = std::fs::read(board::aarch64_agent()).unwrap();
    good.extend_from_slice(b"\nspillway test build arm64-good\n");
    let good_path = builds.path().join("spillway-agent-arm64-good");
    std::fs::write(&good_path, &good).unwrap();
    let started = std::time::Instant::now();
    let (ok, out, err) = c.cli(&[
        "upgrade",
        "nodes",
        "--binary",
        good_path.to_str().unwrap(),
        "--version",
        "9.0.0-arm64",
        "--ready-within",
        "3m",
        "--timeout",
        "10m",
        "--wait",
    ]);
    assert!(ok, "{out}\n{err}\n{}\n{}", pi.console(), c.log());
    println!(
        "upgrade of the board's agent ({:.1} MiB) over the mesh, order to Ready: {:.1?}",
        good.len() as f64 / 1_048_576.0,
        started.elapsed()
    );
    let console = pi.console();
    assert!(
        console.contains("upgrade done: this binary is the current one now"),
        "{console}"
    );
    let nodes = c.json(&["get", "nodes"]);
    assert_eq!(nodes[0]["health"], "Ready", "{nodes}");

    let broken = &good[..4 << 20];
    let broken_path = builds.path().join("spillway-agent-arm64-cut");
    std::fs::write(&broken_path, broken).unwrap();
    let (ok, out, err) = c.cli(&[
        "upgrade",
        "nodes",
        "--binary",
        broken_path.to_str().unwrap(),
        "--version",
        "9.1.0-cut",
        "--ready-within",
        "1m",
        "--timeout",
        "10m",
        "--wait",
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("rollout 2 stopped: {NODE}: the new binary")),
        "{out}\n{err}\n{}",
        pi.console()
    );
    let rollout = c.json(&["get", "upgrades", "2"]);
    assert_eq!(rollout["nodes"][0]["phase"], "rolled_back", "{rollout}");
    assert!(
        support::wait_until(
            Duration::from_secs(60),
            || c.json(&["get", "nodes"])[0]["health"] == "Ready"
        ),
        "{}",
        pi.console()
    );
    // Back on the good build, it still runs containers.
    let bytes = b"after the rollback".to_vec();
    let (ok, out, _) = bed.invoke("after-rollback.bin", &bytes);
    assert!(ok, "no job after the rollback: {out}\n{}", pi.console());
}
