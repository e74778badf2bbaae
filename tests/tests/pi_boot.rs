//! An emulated Raspberry Pi boots a card prepared by `spillway flash`, joins the mesh and runs a
//! container function on its arm64 kernel. See `support/board.rs` for what is emulated and what
//! is real (the OS on the card is busybox with a `systemctl` test double).
//!
//! Ignored by a plain `cargo test`: it needs a static aarch64 agent and the board's kernel.
//! `scripts/test.sh` provides both and runs it:
//!   SPILLWAY_AARCH64_AGENT=… cargo test -p spillway-tests --test pi_boot -- --ignored

mod support;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::board::{self, Board, HOST_FROM_BOARD};
use support::oci::{ImageSpec, Registry, busybox_layer_of, gzip};
use support::{Coordinator, wait_until};

const NODE: &str = "pi-emu";

/// An arm64 busybox image in a loopback registry (the board pulls it through 10.0.2.2).
fn arm64_image(registry: &Registry) -> String {
    let busybox = std::fs::read(board::assets().join("busybox")).expect("arm64 busybox");
    let mut image = ImageSpec::busybox("linux", "arm64", None);
    image.layers = vec![gzip(&busybox_layer_of(busybox, "linux/arm64"))];
    registry.push("board/checksum", &[image], None);
    format!("{HOST_FROM_BOARD}:{}/board/checksum:1", registry.port)
}

#[test]
#[ignore = "boots qemu-system-aarch64 with an aarch64 agent: scripts/test.sh runs it"]
fn a_flashed_card_boots_joins_the_mesh_and_runs_a_container_on_arm64() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let bins = w.join("bins/aarch64-unknown-linux-gnu");
    std::fs::create_dir_all(&bins).expect("bins");
    std::fs::copy(board::aarch64_agent(), bins.join("spillway-agent")).expect("agent");
    let card = w.join("card.img");
    board::blank_card(&card, 160);

    let c = Coordinator::new();
    let registry = Registry::start();
    let image = arm64_image(&registry);
    std::fs::write(
        w.join("extra.toml"),
        format!(
            "[registries.\"{HOST_FROM_BOARD}:{}\"]\ninsecure = true\n[labels]\nboard = \"emulated\"\n",
            registry.port
        ),
    )
    .expect("extra");
    let (ok, out, err) = c.cli(&[
        "flash",
        "--image",
        card.to_str().unwrap(),
        "--coordinator",
        &format!("{HOST_FROM_BOARD}:{}", c.quic_port),
        "--new-token",
        "--hostname",
        NODE,
        "--binaries",
        w.join("bins").to_str().unwrap(),
        "--agent-config",
        w.join("extra.toml").to_str().unwrap(),
    ]);
    assert!(ok, "flash failed: {out}{err}");
    assert!(out.contains("prepared for aarch64"), "{out}");
    // Checked with mtools, independently of the fatfs crate that wrote it.
    let cmdline = board::mtype(&card, "cmdline.txt").expect("cmdline.txt");
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
    let files = board::mdir(&card, "");
    assert!(
        ours.iter().all(|f| files.iter().any(|n| n == f)),
        "{files:?}"
    );

    let mut pi = Board::boot(&card, &w.join("console.log"));
    let ready = wait_until(Duration::from_secs(300), || {
        c.health(NODE).as_deref() == Some("Ready") || !pi.running()
    });
    let to_ready = pi.powered_on.elapsed();
    assert!(
        ready && c.health(NODE).as_deref() == Some("Ready"),
        "the board never became Ready:\n{}\n{}",
        pi.console(),
        c.log()
    );
    println!("power-on → Ready in `spillway get nodes`: {to_ready:.1?}");
    let console = pi.console();
    assert!(
        console.contains("board: first-boot script succeeded")
            && console.contains("spillway firstrun: host name pi-emu"),
        "{console}"
    );
    let nodes = c.json(&["get", "nodes"]);
    let node = &nodes[0];
    assert_eq!(node["labels"]["board"], "emulated", "{node}");
    assert_eq!(node["arch"], "aarch64", "{node}");

    // A container function, deployed by the coordinator and pulled by the board.
    let fdl = w.join("functions.yaml");
    std::fs::write(
        &fdl,
        format!(
            "functions:\n  oscar:\n  - edge:\n      name: checksum\n      image: {image}\n      script: checksum.sh\n      memory: 64Mi\n      timeout: 120\n      input: [{{storage_provider: minio.default, path: checksum/in}}]\n      output: [{{storage_provider: minio.default, path: checksum/out}}]\n"
        ),
    )
    .expect("fdl");
    std::fs::write(
        w.join("checksum.sh"),
        "#!/bin/sh\nset -e\nname=$(basename \"$INPUT_FILE_PATH\")\n{ uname -m; sha256sum \"$INPUT_FILE_PATH\" | cut -d' ' -f1; cat /proc/self/cgroup; echo \"memory.max $(cat /sys/fs/cgroup/memory.max 2>&1)\"; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; } > \"$TMP_OUTPUT_DIR/$name.txt\"\n",
    )
    .expect("script");
    let (ok, _, err) = c.cli(&["apply", "-f", fdl.to_str().unwrap()]);
    assert!(ok, "apply failed: {err}");
    let input = w.join("frame.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&input, &bytes).expect("input");
    let started = Instant::now();
    let (ok, out, err) = c.cli(&[
        "invoke",
        "checksum",
        "--file",
        input.to_str().unwrap(),
        "--node",
        NODE,
        "--wait",
        "--timeout",
        "240s",
    ]);
    assert!(
        ok && out.contains("Succeeded"),
        "the job did not succeed: {out}{err}\n{}",
        pi.console()
    );
    println!(
        "first job (pull + container) on the board: {:.1?}",
        started.elapsed()
    );
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
        wait_until(Duration::from_secs(30), || pi.agent_rss_kib().is_some()),
        "no memory report from the board:\n{}",
        pi.console()
    );
    println!(
        "agent VmRSS on the board: {} KiB",
        pi.agent_rss_kib().unwrap_or(0)
    );

    // After first boot the card no longer runs the script and no longer holds the token.
    pi.power_off();
    let cmdline = board::mtype(&card, "cmdline.txt").expect("cmdline.txt");
    assert!(!cmdline.contains("systemd.run"), "{cmdline}");
    assert!(cmdline.contains("root=PARTUUID=5e1f0a11-02"), "{cmdline}");
    let files = board::mdir(&card, "");
    assert!(
        ours.iter().all(|f| !files.iter().any(|n| n == f)),
        "{files:?}"
    );
}
