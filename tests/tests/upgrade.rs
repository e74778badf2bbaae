//! Agent upgrades over the mesh, on agents in their own network namespace (a separate host) with
//! the coordinator on another. The agents run as a board's init would start them (no systemd),
//! so they restart under their own supervisor. Binaries are real: the agent itself with bytes
//! appended (another digest, same program), and `/bin/false` as a binary that cannot come up.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::netns::Hosts;
use support::{Coordinator, Node, bin, repo, wait_until};

/// The agent binary with `tag` appended: runs the same, has another SHA-256. Stripped when
/// binutils' `strip` is there (a debug build is 120 MB; release builds are under 20 MB).
fn agent_variant(dir: &Path, tag: &str) -> (PathBuf, String) {
    let stripped = dir.join("spillway-agent-stripped");
    if !stripped.exists() {
        let ok = std::process::Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(bin("spillway-agent"))
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            std::fs::copy(bin("spillway-agent"), &stripped).unwrap();
        }
    }
    let mut bytes = std::fs::read(&stripped).unwrap();
    bytes.extend_from_slice(format!("\nspillway test build {tag}\n").as_bytes());
    let path = dir.join(format!("spillway-agent-{tag}"));
    std::fs::write(&path, &bytes).unwrap();
    (path, hex::encode(Sha256::digest(&bytes)))
}

/// `spillway upgrade nodes --binary BINARY --version VERSION EXTRA…`.
fn upgrade(
    c: &Coordinator,
    binary: &Path,
    version: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec![
        "upgrade",
        "nodes",
        "--binary",
        binary.to_str().unwrap(),
        "--version",
        version,
    ];
    args.extend_from_slice(extra);
    c.cli(&args)
}

fn boot(node: &Node) -> serde_json::Value {
    let text = std::fs::read_to_string(node.path("state/upgrade/boot.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn all_ready(c: &Coordinator, n: usize) -> bool {
    let nodes = c.json(&["get", "nodes"]);
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    nodes.len() == n && nodes.iter().all(|n| n["health"] == "Ready")
}

/// Drops a file into `node`'s input folder and waits for the function's output.
fn still_works(node: &Node, name: &str) {
    node.write(&format!("data/texts/in/{name}.txt"), name);
    let out = node.path(&format!("data/texts/out/{name}.txt"));
    assert!(
        wait_until(Duration::from_secs(30), || out.exists()),
        "no output after the upgrade:\n{}",
        node.log()
    );
    assert_eq!(std::fs::read_to_string(out).unwrap(), name.to_uppercase());
}

#[test]
fn a_fleet_upgrades_in_batches_and_a_broken_or_unlinked_binary_rolls_back_by_itself() {
    let hosts = Hosts::new();
    let c = Coordinator::on(Some(&hosts.c), &hosts.c_ip);
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let mut n = Node::new(&format!("node_name = \"edge-{i}\"\n"));
            n.netns = Some(hosts.a.clone());
            c.join(&n);
            n.start();
            n
        })
        .collect();
    let (ok, _, err) = c.cli(&[
        "apply",
        "-f",
        repo("tests/fixtures/mesh/functions.yaml").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        wait_until(Duration::from_secs(60), || all_ready(&c, 3)
            && (1..=3).all(|i| c.runs(&format!("edge-{i}"), "upper"))),
        "{}",
        c.log()
    );
    let builds = tempfile::tempdir().unwrap();

    // Refusals: nothing is stored or ordered, and every node keeps running what it ran.
    let junk = builds.path().join("not-an-agent.sh");
    std::fs::write(&junk, "#!/bin/sh\necho hello\n").unwrap();
    let (ok, _, err) = c.cli(&["upgrade", "nodes", "--binary", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("this is not an agent binary: no ELF magic number"),
        "{err}"
    );
    // An aarch64 ELF header: a fine binary, but not for these x86-64 nodes.
    let mut arm = vec![0u8; 64];
    arm[..6].copy_from_slice(b"\x7fELF\x02\x01");
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    let arm_path = builds.path().join("spillway-agent-aarch64");
    std::fs::write(&arm_path, &arm).unwrap();
    let (ok, out, err) = upgrade(&c, &arm_path, "arm-only", &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("release arm-only has no binary for x86_64 (nodes edge-1, edge-2, edge-3)"),
        "{err}"
    );
    assert!(
        nodes.iter().all(|n| boot(n).is_null()),
        "no node was touched"
    );

    // 1. Every node, two at a time, onto a new build.
    let (good, good_sha) = agent_variant(builds.path(), "good");
    let started = Instant::now();
    let (ok, out, err) = upgrade(
        &c,
        &good,
        "9.0.0-good",
        &[
            "--batch",
            "2",
            "--ready-within",
            "60s",
            "--timeout",
            "3m",
            "--wait",
        ],
    );
    let took = started.elapsed();
    let logs: String = nodes.iter().map(|n| n.log()).collect();
    assert!(ok, "{out}\n{err}\n{}\n{logs}", c.log());
    assert!(
        out.contains("rollout 1: all 3 nodes run 9.0.0-good"),
        "{out}"
    );
    println!("rollout of 3 agents in batches of 2: {took:.1?}");
    for n in &nodes {
        let b = boot(n);
        assert_eq!(b["current"]["sha256"], good_sha.as_str(), "{b}");
        assert!(
            b["previous"].is_null(),
            "the installed binary is the one to go back to: {b}"
        );
        assert!(b["trial"].is_null(), "{b}");
        assert!(
            n.log()
                .contains("upgrade done: this binary is the current one now"),
            "{}",
            n.log()
        );
    }
    let rollout = c.json(&["get", "upgrades", "1"]);
    assert_eq!(rollout["state"], "succeeded", "{rollout}");
    let phases: Vec<_> = rollout["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phase"].clone())
        .collect();
    assert!(phases.iter().all(|p| p == "done"), "{rollout}");
    assert!(
        wait_until(Duration::from_secs(30), || all_ready(&c, 3)),
        "{:?}",
        c.json(&["get", "nodes"])
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].clone(), n["health"].clone()))
            .collect::<Vec<_>>()
    );
    still_works(&nodes[0], "after-upgrade");

    // 2. A binary that cannot come up (it exits at once), one node at a time: the first node
    //    rolls back by itself, the rollout stops there, and nobody else is ordered.
    let broken = builds.path().join("false");
    std::fs::copy("/bin/false", &broken).unwrap();
    let (ok, out, err) = upgrade(
        &c,
        &broken,
        "9.1.0-broken",
        &["--ready-within", "30s", "--timeout", "2m", "--wait"],
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains("rollout 2 stopped: edge-1: the new binary stopped before it reported Ready"),
        "{out}\n{err}\n{}",
        nodes[0].log()
    );
    let rollout = c.json(&["get", "upgrades", "2"]);
    let phases: Vec<_> = rollout["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phase"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(phases, ["rolled_back", "waiting", "waiting"], "{rollout}");
    let b = boot(&nodes[0]);
    assert_eq!(
        b["current"]["sha256"],
        good_sha.as_str(),
        "back on the good build: {b}"
    );
    assert!(b["outcome"]["rolled_back"].as_str().is_some(), "{b}");
    assert!(
        wait_until(Duration::from_secs(30), || all_ready(&c, 3)),
        "{}",
        c.log()
    );
    still_works(&nodes[0], "after-rollback");

    // 3. A binary that starts but cannot link in time (the network goes while it restarts):
    //    it gives up at its deadline and the node goes back to the build it ran.
    let (good2, _) = agent_variant(builds.path(), "good2");
    let (ok, _, err) = c.cli(&["label", "node", "edge-2", "ring=canary"]);
    assert!(ok, "{err}");
    let (ok, out, err) = upgrade(
        &c,
        &good2,
        "9.2.0",
        &[
            "-l",
            "ring=canary",
            "--ready-within",
            "5s",
            "--timeout",
            "2m",
        ],
    );
    assert!(ok, "{out}{err}");
    let stored = wait_until(Duration::from_secs(60), || {
        nodes[1]
            .log()
            .contains("new binary stored; stopping to start it version=9.2.0")
    });
    assert!(stored, "{}", nodes[1].log());
    hosts.cut(true);
    let gave_up = wait_until(Duration::from_secs(60), || {
        nodes[1]
            .log()
            .contains("did not link to the coordinator within 5s")
    });
    assert!(gave_up, "{}", nodes[1].log());
    hosts.cut(false);
    let reported = wait_until(Duration::from_secs(90), || {
        c.json(&["get", "upgrades", "3"])["nodes"][0]["phase"] == "rolled_back"
    });
    assert!(
        reported,
        "{}\n{}",
        c.json(&["get", "upgrades", "3"]),
        nodes[1].log()
    );
    let b = boot(&nodes[1]);
    assert_eq!(b["current"]["sha256"], good_sha.as_str(), "{b}");
    assert!(
        wait_until(Duration::from_secs(60), || all_ready(&c, 3)),
        "{}",
        c.log()
    );
    still_works(&nodes[1], "after-deadline");

    // Releases past the five most recently uploaded go, with their binaries.
    let arm_blob = c
        .dir
        .path()
        .join("state/blobs")
        .join(hex::encode(Sha256::digest(&arm)));
    assert!(arm_blob.exists());
    for v in ["9.3.0", "9.4.0"] {
        let mut bytes = arm.clone();
        bytes.extend_from_slice(v.as_bytes());
        let path = builds.path().join(format!("arm-{v}"));
        std::fs::write(&path, bytes).unwrap();
        // Uploaded, then refused as a rollout (no x86-64 binary): the release stays.
        let (ok, _, _) = upgrade(&c, &path, v, &[]);
        assert!(!ok);
    }
    let releases = c.json(&["get", "releases"]);
    let versions: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["9.4.0", "9.3.0", "9.2.0", "9.1.0-broken", "9.0.0-good"]
    );
    assert!(!arm_blob.exists(), "the oldest release's binary is gone");

    // A stop reaches the agent through its supervisor, and it exits cleanly.
    let status = nodes[2].stop();
    assert!(status.success(), "{status:?}\n{}", nodes[2].log());
    for n in &mut nodes {
        n.kill9();
    }
}

/// Plays systemd for one agent as the shipped unit sets it up (`Type=notify`,
/// `Restart=on-failure`, `RestartPreventExitStatus=64`): a notify socket, and a restart whenever
/// the service exits with a failure. Test double: no systemd runs here.
struct ServiceManager {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    restarts: Vec<Option<i32>>,
}

impl ServiceManager {
    fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self {
            socket,
            path,
            restarts: Vec::new(),
        }
    }

    /// Every notification since the last call.
    fn notifications(&self) -> String {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            all.push('\n');
        }
        all
    }

    /// Restarts the service if it exited with a failure (not 64); whether it did.
    fn restart_if_failed(&mut self, node: &mut Node) -> bool {
        let Some(child) = node.child.as_mut() else {
            return false;
        };
        let Ok(Some(status)) = child.try_wait() else {
            return false;
        };
        node.child = None;
        self.restarts.push(status.code());
        if status.success() || status.code() == Some(64) {
            return false;
        }
        node.spawn();
        true
    }

    /// Runs the service until `done` holds (restarting it as systemd would) or `within` passes.
    fn run_until(
        &mut self,
        node: &mut Node,
        within: Duration,
        mut done: impl FnMut() -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.restart_if_failed(node);
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

fn exe_of(node: &Node) -> String {
    let pid = node.child.as_ref().unwrap().id();
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn under_systemd_the_restarted_service_execs_the_new_binary_and_a_broken_one_rolls_back() {
    let c = Coordinator::new();
    let builds = tempfile::tempdir().unwrap();
    let mut systemd = ServiceManager::new(builds.path());
    let mut node = Node::new("node_name = \"unit-1\"\n");
    node.env
        .push(("NOTIFY_SOCKET".into(), systemd.path.display().to_string()));
    c.join(&node);
    node.start();
    assert!(
        wait_until(Duration::from_secs(30), || all_ready(&c, 1)),
        "{}",
        c.log()
    );
    assert!(systemd.notifications().contains("READY=1"));

    let (good, good_sha) = agent_variant(builds.path(), "unit");
    let (ok, out, err) = upgrade(&c, &good, "9.0.0-unit", &["--ready-within", "60s"]);
    assert!(ok, "{out}{err}");
    let done = systemd.run_until(&mut node, Duration::from_secs(120), || {
        c.json(&["get", "upgrades", "1"])["state"] == "succeeded"
    });
    assert!(
        done,
        "{}\n{}",
        c.json(&["get", "upgrades", "1"]),
        node.log()
    );
    // The agent asked for the restart with exit status 75 (not a crash); the installed binary
    // that systemd started replaced itself with the stored one: same process, so systemd's
    // notify socket and watchdog still see their main process.
    assert_eq!(systemd.restarts, [Some(75)]);
    assert!(
        exe_of(&node).ends_with(&format!("upgrade/slots/{good_sha}")),
        "{}",
        exe_of(&node)
    );
    assert!(
        systemd.notifications().contains("READY=1"),
        "the new binary reports ready to systemd"
    );

    // A binary that exits at once: systemd restarts the unit, and the installed binary, seeing
    // the trial was started once already, goes back to the good build by itself.
    let broken = builds.path().join("false");
    std::fs::copy("/bin/false", &broken).unwrap();
    let (ok, out, err) = upgrade(&c, &broken, "9.1.0-broken", &["--ready-within", "30s"]);
    assert!(ok, "{out}{err}");
    let stopped = systemd.run_until(&mut node, Duration::from_secs(120), || {
        c.json(&["get", "upgrades", "2"])["nodes"][0]["phase"] == "rolled_back"
    });
    assert!(
        stopped,
        "{}\n{}",
        c.json(&["get", "upgrades", "2"]),
        node.log()
    );
    assert_eq!(
        systemd.restarts,
        [Some(75), Some(75), Some(1)],
        "75 to upgrade, 1 from /bin/false"
    );
    assert!(
        exe_of(&node).ends_with(&format!("upgrade/slots/{good_sha}")),
        "{}",
        exe_of(&node)
    );
    assert!(
        wait_until(Duration::from_secs(30), || all_ready(&c, 1)),
        "{}",
        c.log()
    );
    node.kill9();
}
