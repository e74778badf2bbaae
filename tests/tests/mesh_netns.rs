//! Two hosts as network namespaces joined by a veth pair: the coordinator on one, an agent on
//! the other. The link between them is cut and restored while the agent works.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::netns::Hosts;
use support::{Coordinator, Node, repo, wait_until};

#[test]
fn an_agent_cut_off_from_its_coordinator_keeps_working_and_the_view_recovers() {
    let hosts = Hosts::new();
    let c = Coordinator::on(Some(&hosts.c), &hosts.c_ip);
    let mut node = Node::new("node_name = \"edge-1\"\n");
    node.netns = Some(hosts.a.clone());
    let (ok, out, err) =
        node.agent_cli(&["join", "--coordinator", &c.quic(), "--token", &c.token()]);
    assert!(ok, "join across the veth link failed: {out}{err}");
    node.start();
    let (ok, _, err) = c.cli(&[
        "apply",
        "-f",
        repo("tests/fixtures/mesh/functions.yaml").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let ready = wait_until(Duration::from_secs(30), || {
        let nodes = c.json(&["get", "nodes"]);
        nodes[0]["health"] == "Ready" && nodes[0]["running"][0] == "upper"
    });
    assert!(ready, "{}\n{}", c.log(), node.log());

    hosts.cut(true);
    // Work arrives while the link is down: processed locally, as if nothing happened.
    node.write("data/texts/in/during-cut.txt", "cut off");
    let out = node.path("data/texts/out/during-cut.txt");
    assert!(
        wait_until(Duration::from_secs(20), || out.exists()),
        "{}",
        node.log()
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "CUT OFF");
    // The coordinator notices the silence.
    assert!(
        wait_until(Duration::from_secs(20), || c.health("edge-1").as_deref()
            == Some("Down")),
        "{}",
        c.json(&["get", "nodes"])
    );

    hosts.cut(false);
    assert!(
        wait_until(Duration::from_secs(40), || c.health("edge-1").as_deref()
            == Some("Ready")),
        "{}\n{}",
        c.log(),
        node.log()
    );
    // What happened while cut reaches the coordinator once the link is back.
    let synced = wait_until(Duration::from_secs(10), || {
        c.has_succeeded("texts/in/during-cut.txt")
    });
    assert!(synced, "{}", c.json(&["get", "jobs"]));
    let nodes = c.json(&["get", "nodes"]);
    assert!(nodes[0]["load"]["seq"].as_u64().unwrap() > 0, "{nodes}");
}
