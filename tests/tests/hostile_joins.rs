//! Joins cannot steal an identity or choose what a node receives, over real QUIC: a plain token
//! admits only a new name, a taken name needs a token made for it, revoked tokens admit nobody,
//! labels (which select functions and their secrets) are the operator's, and a flood of join
//! attempts is cut.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{Coordinator, Node, wait_until};

fn ready(c: &Coordinator, name: &str) -> bool {
    c.json(&["get", "nodes"]).as_array().is_some_and(|n| {
        n.iter()
            .any(|n| n["name"] == name && n["health"] == "Ready")
    })
}

fn join(c: &Coordinator, node: &Node, token: &str) -> (bool, String) {
    let (ok, out, err) = node.agent_cli(&["join", "--coordinator", &c.quic(), "--token", token]);
    (ok, format!("{out}{err}"))
}

fn token(c: &Coordinator, args: &[&str]) -> String {
    let mut all = vec!["token", "create", "--ttl", "10m"];
    all.extend_from_slice(args);
    let (ok, out, err) = c.cli(&all);
    assert!(ok, "token create: {err}");
    out.trim().to_owned()
}

#[test]
fn a_fresh_token_cannot_take_over_a_members_name() {
    let c = Coordinator::new();
    let mut real = Node::new("node_name = \"pi-1\"\n");
    c.join(&real);
    real.start();
    assert!(
        wait_until(Duration::from_secs(20), || ready(&c, "pi-1")),
        "{}",
        c.log()
    );
    let before = std::fs::read(real.path("state/identity/node.der")).unwrap();

    let thief = Node::new("node_name = \"pi-1\"\n");
    let (ok, out) = join(&c, &thief, &token(&c, &[]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("node `pi-1` is already a member of this mesh")
            && out.contains("spillway token create --node pi-1"),
        "{out}"
    );
    // A token made for another node does not do either.
    let (ok, out) = join(&c, &thief, &token(&c, &["--node", "pi-2"]));
    assert!(!ok && out.contains("made for node `pi-2`"), "{out}");
    // The real node is untouched and still connected with its own certificate.
    assert!(!thief.path("state/identity/node.der").exists());
    std::thread::sleep(Duration::from_secs(1));
    assert!(ready(&c, "pi-1"), "{}", c.log());
    assert_eq!(
        std::fs::read(real.path("state/identity/node.der")).unwrap(),
        before
    );

    // The operator's way to join it again (new card, lost key): a token made for the name.
    let replacement = Node::new("node_name = \"pi-1\"\n");
    let (ok, out) = join(&c, &replacement, &token(&c, &["--node", "pi-1"]));
    assert!(ok, "{out}");
    // The old certificate is no longer a member.
    assert!(
        wait_until(Duration::from_secs(20), || real
            .log()
            .contains("not a member of the mesh")),
        "{}",
        real.log()
    );
}

#[test]
fn a_revoked_token_admits_nobody() {
    let c = Coordinator::new();
    let t = token(&c, &[]);
    let listed = c.json(&["token", "list"]);
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = c.cli(&["token", "revoke", &id]);
    assert!(ok, "{err}");
    let node = Node::new("node_name = \"pi-9\"\n");
    let (ok, out) = join(&c, &node, &t);
    assert!(!ok && out.contains("revoked"), "{out}");
    assert!(c.json(&["get", "nodes"]).as_array().unwrap().is_empty());
    let (_, out, _) = c.cli(&["token", "list"]);
    assert!(out.contains("revoked"), "{out}");
}

#[test]
fn labels_come_from_the_token_and_the_operator_not_from_the_agent() {
    let c = Coordinator::new();
    // The agent proposes gpu=yes and a cluster; its token grants zone=shed only.
    let mut node =
        Node::new("node_name = \"pi-1\"\ncluster_id = \"edge\"\n[labels]\ngpu = \"yes\"\n");
    let (ok, out) = join(&c, &node, &token(&c, &["--label", "zone=shed"]));
    assert!(ok, "{out}");
    node.start();
    assert!(
        wait_until(Duration::from_secs(20), || ready(&c, "pi-1")),
        "{}",
        c.log()
    );
    let view = c.node_view("pi-1");
    assert_eq!(
        view["labels"],
        serde_json::json!({"zone": "shed"}),
        "{view}"
    );
    assert_eq!(
        view["proposed_labels"],
        serde_json::json!({"gpu": "yes"}),
        "{view}"
    );
    assert_eq!(view["proposed_cluster_id"], "edge", "{view}");
    assert!(view["cluster_id"].is_null(), "{view}");

    // A function for GPU nodes does not reach a node that only says it has one.
    let dir = tempfile::tempdir().unwrap();
    let fdl = dir.path().join("gpu.yaml");
    std::fs::write(
        &fdl,
        "functions:\n  oscar:\n  - edge:\n      name: infer\n      runtime: process\n      command: 'true'\n      node_selector: {gpu: 'yes'}\n      input: [{storage_provider: minio, path: frames/in}]\n",
    )
    .unwrap();
    let (ok, _, err) = c.cli(&["apply", "-f", fdl.to_str().unwrap()]);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!c.runs("pi-1", "infer"), "{}", c.node_view("pi-1"));

    // The operator adopts what the agent proposed: now it is deployed.
    let (ok, out, err) = c.cli(&["label", "node", "pi-1", "--adopt-proposed", "zone=shed"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("gpu=yes") && out.contains("zone=shed") && out.contains("edge"),
        "{out}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || c.runs("pi-1", "infer")),
        "{}",
        c.node_view("pi-1")
    );
    // And takes a label away again.
    let (ok, _, err) = c.cli(&["label", "node", "pi-1", "gpu-"]);
    assert!(ok, "{err}");
    assert!(
        wait_until(Duration::from_secs(20), || !c.runs("pi-1", "infer")),
        "{}",
        c.node_view("pi-1")
    );
}

#[test]
fn a_flood_of_join_attempts_is_cut_before_any_signature() {
    let c = Coordinator::new();
    let node = Node::new("node_name = \"pi-1\"\n");
    // Well-formed tokens of this mesh that do not exist: each attempt is a full QUIC handshake.
    let fake = {
        let real = token(&c, &[]);
        let (prefix, rest) = real.split_once('.').unwrap();
        let (_, pin) = rest.split_once('.').unwrap();
        format!("{prefix}.{}.{pin}", "0".repeat(32))
    };
    // Thirty at once from one address: twenty get an answer, the rest are cut.
    let outcomes: Vec<(bool, String)> = std::thread::scope(|s| {
        let attempts: Vec<_> = (0..30)
            .map(|_| s.spawn(|| join(&c, &node, &fake)))
            .collect();
        attempts.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let mut limited = 0;
    for (ok, out) in &outcomes {
        assert!(!ok, "{out}");
        if out.contains("too many join attempts") {
            limited += 1;
        } else {
            assert!(out.contains("unknown join token"), "{out}");
        }
    }
    assert!(limited >= 5, "{limited} of 30 attempts were limited");
    let metrics = c.metrics();
    assert_eq!(
        support::sample(&metrics, "spillway_joins_total", &[("outcome", "refused")]),
        Some(30.0),
        "{metrics}"
    );
}
