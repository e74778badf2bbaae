use proptest::prelude::*;
use spillway_api::upgrades::ReleaseBinary;

use super::*;

fn release(archs: &[&str]) -> Release {
    Release {
        version: "2.0.0".into(),
        binaries: archs
            .iter()
            .map(|a| ReleaseBinary {
                arch: (*a).into(),
                sha256: "00".repeat(32),
                size: 1,
                signature: String::new(),
                uploaded_at_ms: 0,
            })
            .collect(),
    }
}

fn node(name: &str, arch: &str, zone: &str) -> Candidate {
    Candidate {
        name: name.into(),
        arch: arch.into(),
        version: "1.0.0".into(),
        labels: [("zone".to_owned(), zone.to_owned())].into(),
    }
}

fn request(selector: Option<&str>, batch: u32) -> RolloutRequest {
    RolloutRequest {
        version: "2.0.0".into(),
        selector: selector.map(Into::into),
        batch,
        ready_within_ms: 60_000,
        timeout_ms: 600_000,
    }
}

fn fleet(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| node(&format!("pi-{i:02}"), "aarch64", "a"))
        .collect()
}

#[test]
fn a_selector_picks_the_nodes_and_a_missing_architecture_is_refused_by_name() {
    let nodes = [
        node("pi-1", "aarch64", "kitchen"),
        node("pi-2", "arm", "hall"),
    ];
    let r = plan(
        1,
        &request(Some("zone=kitchen"), 1),
        &release(&["aarch64"]),
        &nodes,
        5,
    )
    .expect("plan");
    assert_eq!(r.nodes.len(), 1);
    assert_eq!(
        (r.nodes[0].node.as_str(), r.nodes[0].phase),
        ("pi-1", NodePhase::Waiting)
    );
    let err = plan(1, &request(None, 1), &release(&["aarch64"]), &nodes, 5).expect_err("arm");
    assert!(
        err.contains("release 2.0.0 has no binary for arm (nodes pi-2)"),
        "{err}"
    );
    let err = plan(
        1,
        &request(Some("zone=roof"), 1),
        &release(&["aarch64"]),
        &nodes,
        5,
    )
    .expect_err("none");
    assert_eq!(err, "no node matches the selector `zone=roof`");
    let err = plan(
        1,
        &request(None, 0),
        &release(&["aarch64", "arm"]),
        &nodes,
        5,
    )
    .expect_err("0");
    assert!(err.contains("batch size"), "{err}");
}

#[test]
fn batches_go_one_after_another_and_the_rollout_succeeds_when_all_are_done() {
    let mut r = plan(1, &request(None, 2), &release(&["aarch64"]), &fleet(5), 0).expect("plan");
    let first = next_orders(&mut r, 1);
    assert_eq!(first, ["pi-00", "pi-01"]);
    assert!(next_orders(&mut r, 2).is_empty(), "the batch is in flight");
    assert!(on_report(&mut r, "pi-00", &UpgradeStatus::Restarting, 3));
    assert!(on_report(&mut r, "pi-00", &UpgradeStatus::Ready, 4));
    assert!(
        next_orders(&mut r, 5).is_empty(),
        "pi-01 is still in flight"
    );
    assert!(on_report(&mut r, "pi-01", &UpgradeStatus::Ready, 6));
    assert!(
        !on_report(&mut r, "pi-01", &UpgradeStatus::Ready, 7),
        "again at the next link"
    );
    assert!(
        !on_report(&mut r, "pi-04", &UpgradeStatus::Ready, 7),
        "not ordered yet"
    );
    assert_eq!(next_orders(&mut r, 8), ["pi-02", "pi-03"]);
    for n in ["pi-02", "pi-03"] {
        on_report(&mut r, n, &UpgradeStatus::Ready, 9);
    }
    assert_eq!(next_orders(&mut r, 10), ["pi-04"]);
    on_report(&mut r, "pi-04", &UpgradeStatus::Ready, 11);
    assert!(next_orders(&mut r, 12).is_empty());
    assert_eq!(
        (r.state.clone(), r.finished_at_ms),
        (RolloutState::Succeeded, Some(12))
    );
}

#[test]
fn the_first_rollback_stops_the_rollout_and_nothing_more_is_ordered() {
    let mut r = plan(1, &request(None, 2), &release(&["aarch64"]), &fleet(4), 0).expect("plan");
    next_orders(&mut r, 1);
    let back = UpgradeStatus::RolledBack {
        reason: "the new binary stopped before it reported Ready".into(),
    };
    assert!(on_report(&mut r, "pi-00", &back, 2));
    let RolloutState::Stopped { reason } = &r.state else {
        panic!("{:?}", r.state)
    };
    assert_eq!(
        reason,
        "pi-00: the new binary stopped before it reported Ready"
    );
    // The other node of the batch still finishes and is shown; no new batch starts.
    assert!(on_report(&mut r, "pi-01", &UpgradeStatus::Ready, 3));
    assert!(next_orders(&mut r, 4).is_empty());
    assert_eq!(r.count(NodePhase::Waiting), 2);
    assert_eq!(r.count(NodePhase::RolledBack), 1);
}

#[test]
fn a_node_silent_past_the_timeout_fails_with_where_it_stuck() {
    let mut r = plan(1, &request(None, 1), &release(&["aarch64"]), &fleet(2), 0).expect("plan");
    next_orders(&mut r, 1);
    assert!(!on_timeout(&mut r, "pi-01", 2), "not ordered");
    assert!(on_timeout(&mut r, "pi-00", 600_001));
    assert!(
        r.nodes[0]
            .detail
            .contains("did not store the binary within 10m"),
        "{}",
        r.nodes[0].detail
    );
    assert!(matches!(r.state, RolloutState::Stopped { .. }));
    assert!(
        !on_report(&mut r, "pi-00", &UpgradeStatus::Ready, 600_002),
        "failed is final"
    );
}

#[test]
fn a_cancelled_rollout_orders_nothing_more() {
    let mut r = plan(1, &request(None, 1), &release(&["aarch64"]), &fleet(3), 0).expect("plan");
    next_orders(&mut r, 1);
    assert!(cancel(&mut r, 2));
    assert!(!cancel(&mut r, 3));
    on_report(&mut r, "pi-00", &UpgradeStatus::Ready, 4);
    assert!(next_orders(&mut r, 5).is_empty());
    assert_eq!(r.state, RolloutState::Cancelled);
}

proptest! {
    /// Whatever the nodes report and in whatever order: never more than a batch in flight, a
    /// batch starts only when none is in flight, nothing is ordered after a failure, and a
    /// rollout succeeds only with every node done.
    #[test]
    fn batches_and_stops_hold_under_any_reports(
        n in 1usize..12,
        batch in 1u32..5,
        events in proptest::collection::vec((0usize..12, 0u8..6), 0..80),
    ) {
        let mut r = plan(1, &request(None, batch), &release(&["aarch64"]), &fleet(n), 0).expect("plan");
        let mut failed = false;
        for (t, (i, what)) in events.into_iter().enumerate() {
            let now = t as u64 + 1;
            let in_flight_before = r.nodes.iter().filter(|x| x.phase.in_flight()).count();
            let ordered = next_orders(&mut r, now);
            prop_assert!(ordered.is_empty() || in_flight_before == 0);
            prop_assert!(ordered.len() <= batch as usize);
            prop_assert!(!failed || ordered.is_empty(), "ordered after a failure");
            let name = format!("pi-{:02}", i % n);
            let status = match what {
                0 | 1 => UpgradeStatus::Ready,
                2 => UpgradeStatus::Restarting,
                3 => UpgradeStatus::RolledBack { reason: "x".into() },
                4 => UpgradeStatus::Refused { reason: "y".into() },
                _ => { on_timeout(&mut r, &name, now); failed |= r.nodes.iter().any(|x| x.phase.failed()); continue; }
            };
            on_report(&mut r, &name, &status, now);
            failed |= r.nodes.iter().any(|x| x.phase.failed());
            prop_assert!(r.nodes.iter().filter(|x| x.phase.in_flight()).count() <= batch as usize);
            if failed {
                prop_assert!(!r.is_running());
            }
        }
        if r.state == RolloutState::Succeeded {
            prop_assert!(r.nodes.iter().all(|x| x.phase == NodePhase::Done));
        }
    }
}
