//! Node certificates renew over the mesh before they expire, so a fleet left alone outlives its
//! first certificates; lifetimes are seconds here (`[certificates]` in the coordinator's config).

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Coordinator, Node, wait_until};

fn ready(c: &Coordinator, name: &str, within: Duration) -> bool {
    wait_until(within, || c.health(name).as_deref() == Some("Ready"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn an_agent_renews_its_certificate_before_expiry_and_outlives_its_first_one() {
    let c = Coordinator::with_config(
        "[certificates]\nnode_lifetime = \"20s\"\nrenew_before = \"15s\"\n",
    );
    let mut node = Node::new("node_name = \"pi-1\"\n");
    c.join(&node);
    node.start();
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", node.log());
    let first_expiry = c.node_view("pi-1")["cert_expires_at_ms"].as_u64().unwrap();
    assert!(first_expiry > now_ms() && first_expiry <= now_ms() + 21_000);

    // Past the first certificate's end, with a margin: the node is never taken for dead.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        assert_ne!(c.health("pi-1").as_deref(), Some("Down"), "{}", node.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(first_expiry < now_ms());
    let v = c.node_view("pi-1");
    assert!(v["certificate_renewals"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["cert_expires_at_ms"].as_u64().unwrap() > now_ms(), "{v}");
    assert!(ready(&c, "pi-1", Duration::from_secs(10)), "{}", node.log());
    assert!(node.log().contains("certificate renewed"), "{}", node.log());

    // Restarted, it connects with the renewed certificate it stored (the first one is long
    // expired).
    assert!(node.path("state/identity/renewed.pair").exists());
    node.stop();
    node.start();
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", node.log());

    // Operators see it coming: the expiry in the table, the API and the metrics.
    let (ok, table, err) = c.cli(&["get", "nodes"]);
    assert!(ok && table.contains("CERT LEFT"), "{table}{err}");
    let metrics = c.metrics();
    assert!(
        metrics.contains("spillway_node_certificate_expiry_seconds{node=\"pi-1\"}"),
        "{metrics}"
    );
    assert!(
        support::sample(
            &metrics,
            "spillway_certificate_renewals_total",
            &[("outcome", "renewed")]
        )
        .is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    node.stop();
}

#[test]
fn the_certificate_a_node_renewed_away_from_is_no_longer_a_member() {
    // Renewal comes due 5 s after joining; the old certificate would stay valid for 40 s.
    let c = Coordinator::with_config(
        "[certificates]\nnode_lifetime = \"40s\"\nrenew_before = \"35s\"\n",
    );
    let mut node = Node::new("node_name = \"pi-1\"\n");
    c.join(&node);
    // The identity it joined with, kept aside.
    let joined_with = node.path("state/identity");
    let copy = Node::new("node_name = \"pi-1\"\n");
    std::fs::create_dir_all(copy.path("state/identity")).unwrap();
    for f in ["node.der", "node.key.der", "ca.der", "coordinator"] {
        std::fs::copy(joined_with.join(f), copy.path("state/identity").join(f)).unwrap();
    }
    node.start();
    assert!(
        wait_until(
            Duration::from_secs(30),
            || c.node_view("pi-1")["certificate_renewals"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        ),
        "{}",
        node.log()
    );
    // Connected again with the new certificate: the old one is retired.
    assert!(
        wait_until(Duration::from_secs(20), || c
            .log()
            .contains("previous one is retired")),
        "{}",
        c.log()
    );
    let mut copy = copy;
    copy.start();
    assert!(
        wait_until(Duration::from_secs(20), || copy
            .log()
            .contains("not a member of the mesh")),
        "{}",
        copy.log()
    );
    copy.stop();
    // The renewed node itself is unaffected.
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", node.log());
    node.stop();
}

/// A member of a coordinator with `certificates` settings, stopped until two seconds past its
/// certificate's end (a board in a drawer), then started again.
fn back_after_its_certificate_ended(certificates: &str) -> (Coordinator, Node) {
    let c = Coordinator::with_config(&format!("[certificates]\n{certificates}"));
    let mut node = Node::new("node_name = \"pi-1\"\n");
    c.join(&node);
    node.start();
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", node.log());
    node.stop();
    let ended = c.node_view("pi-1")["cert_expires_at_ms"].as_u64().unwrap();
    while now_ms() < ended + 2_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    node.start();
    (c, node)
}

/// A node away past its certificate's end: renewed when it comes back within the coordinator's
/// `renew_expired`, and nothing else happens on that connection.
#[test]
fn a_node_back_after_its_certificate_ended_is_renewed_within_the_operators_window() {
    let (c, mut node) = back_after_its_certificate_ended(
        "node_lifetime = \"12s\"\nrenew_before = \"3s\"\nrenew_expired = \"1h\"\n",
    );
    assert!(
        ready(&c, "pi-1", Duration::from_secs(30)),
        "{}\n{}",
        node.log(),
        c.log()
    );
    let v = c.node_view("pi-1");
    assert!(v["cert_expires_at_ms"].as_u64().unwrap() > now_ms(), "{v}");
    assert!(
        c.log().contains("renewing it before anything else"),
        "{}",
        c.log()
    );
    assert!(node.log().contains("certificate renewed"), "{}", node.log());
    node.stop();
}

#[test]
fn a_node_back_later_than_the_window_is_told_to_join_again_and_does_nothing() {
    let (c, mut node) = back_after_its_certificate_ended(
        "node_lifetime = \"10s\"\nrenew_before = \"2s\"\nrenew_expired = \"0s\"\n",
    );
    assert!(
        wait_until(Duration::from_secs(20), || node
            .log()
            .contains("spillway token create --node pi-1")),
        "{}",
        node.log()
    );
    assert!(
        node.log().contains("certificates.renew_expired"),
        "{}",
        node.log()
    );
    assert_ne!(c.health("pi-1").as_deref(), Some("Ready"));
    assert_eq!(
        c.node_view("pi-1")["certificate_renewals"]
            .as_u64()
            .unwrap(),
        0,
        "not renewed"
    );
    // What the operator does: a token for that node, and a join.
    node.stop();
    c.join_again(&node, "pi-1");
    node.start();
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", node.log());
    node.stop();
}
