//! Spill-over on real processes: a coordinator and agents joined over real QUIC, a node with a
//! single slot that cannot keep up, and peers that take its surplus. Every input must yield its
//! output exactly once, in the origin's output folder, whatever happens to peers and links.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::netns::Hosts;
use support::{Coordinator, Node, files_under, repo, wait_until};

const FDL: &str = "tests/fixtures/spill/functions.yaml";

/// An agent with `cpus` CPUs for functions, joined to `c`, running inside `netns` if given.
fn member(c: &Coordinator, name: &str, cpus: u32, netns: Option<&str>) -> Node {
    let mut node = Node::new(&format!(
        "node_name = \"{name}\"\n[resources]\ncpu = {cpus}\nmemory = \"1Gi\"\n"
    ));
    node.netns = netns.map(str::to_owned);
    c.join(&node);
    node.start();
    node
}

/// Applies the slow function and waits until every node runs it and reports its load.
fn deploy(c: &Coordinator, nodes: &[&str]) {
    let (ok, _, err) = c.cli(&["apply", "-f", repo(FDL).to_str().unwrap()]);
    assert!(ok, "apply failed: {err}");
    let ready = wait_until(Duration::from_secs(30), || {
        let view = c.json(&["get", "nodes"]);
        nodes.iter().all(|name| {
            view.as_array().unwrap().iter().any(|n| {
                n["name"] == *name
                    && n["health"] == "Ready"
                    && n["load"]["functions"][0]["name"] == "slow"
            })
        })
    });
    assert!(ready, "{}\n{}", c.json(&["get", "nodes"]), c.log());
}

/// The value of a Prometheus sample on the coordinator's `/metrics`.
/// (Inside the coordinator's network namespace when it has one: its API listens on that
/// namespace's loopback.)
fn metric(c: &Coordinator, name: &str) -> u64 {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{}; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        c.http_port
    );
    let out = support::command_in(c.netns.as_deref(), std::path::Path::new("bash"))
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Finished jobs per state in `spillway-agent jobs` of `node`.
fn finished(node: &Node) -> BTreeMap<String, usize> {
    let mut states = BTreeMap::new();
    for row in node.jobs() {
        let state = row.split_whitespace().nth(1).unwrap_or("?").to_owned();
        *states.entry(state).or_default() += 1;
    }
    states
}

/// Drops `n` frames into the origin's input folder; returns (name, expected output).
fn burst(origin: &Node, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let name = format!("frame-{i:03}.txt");
            let text = format!("frame {i} from the camera");
            origin.write(&format!("data/frames/in/{name}"), &text);
            (name, text.to_uppercase())
        })
        .collect()
}

/// Every input has its output in the origin's output folder, with the right content, and
/// nothing else is there; no peer has any output of its own.
fn assert_each_output_once(origin: &Node, peers: &[&Node], expected: &[(String, String)]) {
    let out = origin.path("data/frames/out");
    // Files being written have hidden names; only whole ones count.
    let visible = || -> Vec<String> {
        files_under(&out)
            .into_iter()
            .filter(|f| !f.starts_with('.'))
            .collect()
    };
    let all_there = wait_until(Duration::from_secs(90), || {
        visible().len() >= expected.len()
    });
    let logs: String = peers.iter().map(|p| p.log()).collect();
    assert!(
        all_there,
        "outputs missing: {:?}\norigin:\n{}\npeers:\n{logs}",
        files_under(&out),
        origin.log()
    );
    let names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(visible(), names, "exactly one output per input");
    assert!(
        wait_until(Duration::from_secs(10), || files_under(&out) == names),
        "half-written files stay behind: {:?}",
        files_under(&out)
    );
    for (name, text) in expected {
        assert_eq!(&std::fs::read_to_string(out.join(name)).unwrap(), text);
    }
    for peer in peers {
        assert!(
            files_under(&peer.path("data/frames/out")).is_empty(),
            "a peer delivered into its own folder"
        );
    }
    // The origin's journal agrees: every job succeeded once.
    let done = wait_until(Duration::from_secs(20), || {
        finished(origin).get("Succeeded") == Some(&expected.len())
    });
    assert!(done, "{:?}\n{}", origin.jobs(), origin.log());
}

#[test]
fn a_burst_on_a_single_slot_node_spills_to_its_peers_and_every_output_lands_once_at_the_origin() {
    let c = Coordinator::new();
    let origin = member(&c, "small", 1, None);
    let peers = [member(&c, "big-1", 4, None), member(&c, "big-2", 4, None)];
    deploy(&c, &["small", "big-1", "big-2"]);

    let expected = burst(&origin, 12);
    assert_each_output_once(&origin, &[&peers[0], &peers[1]], &expected);

    // The peers did real work for the origin, and the coordinator let go of every job.
    let on_peers: usize = peers
        .iter()
        .map(|p| finished(p).get("Succeeded").copied().unwrap_or(0))
        .sum();
    assert!(
        on_peers >= 4,
        "only {on_peers} jobs ran on peers\n{}",
        origin.log()
    );
    assert!(metric(&c, "spillway_handovers_accepted_total") >= on_peers as u64);
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &c,
            "spillway_handovers_open"
        ) == 0),
        "the coordinator still holds jobs"
    );
    // Each hand-over was journaled as placed, finished and forgotten, in group commits.
    let accepted = metric(&c, "spillway_handovers_accepted_total");
    let records = metric(&c, "spillway_handover_records_total");
    let commits = metric(&c, "spillway_handover_commits_total");
    assert!(
        records >= 3 * accepted && (1..=records).contains(&commits),
        "{accepted} hand-overs, {records} records in {commits} commits"
    );
    assert!(
        wait_until(Duration::from_secs(10), || metric(&c, "spillway_blobs")
            == 0),
        "blobs left behind"
    );
    assert!(origin.log().contains("offering the job to the coordinator"));
    // `spillway get jobs` lists each job once, under its origin, with the peer it ran on.
    let listed = wait_until(Duration::from_secs(10), || {
        let jobs = c.json(&["get", "jobs", "--node", "small"]);
        let jobs = jobs.as_array().unwrap();
        jobs.len() == expected.len()
            && jobs.iter().all(|j| j["phase"] == "Succeeded")
            && jobs.iter().filter(|j| j["ran_on"].is_string()).count() == on_peers
    });
    assert!(listed, "{}", c.json(&["get", "jobs"]));
    let (ok, table, _) = c.cli(&["get", "jobs"]);
    assert!(ok && table.contains("small→big-"), "{table}");
}

#[test]
fn a_peer_killed_mid_job_loses_its_lease_and_the_job_completes_elsewhere_once() {
    let c = Coordinator::new();
    let origin = member(&c, "small", 1, None);
    let mut victim = member(&c, "doomed", 1, None);
    let survivor = member(&c, "survivor", 2, None);
    deploy(&c, &["small", "doomed", "survivor"]);

    let expected = burst(&origin, 5);
    // As soon as the doomed peer holds a job, it dies without a word.
    let guests = victim.path("state/guests");
    let holding = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(&guests).is_ok_and(|mut d| d.next().is_some())
    });
    assert!(holding, "no job was placed on the doomed peer\n{}", c.log());
    victim.kill9();

    assert_each_output_once(&origin, &[&survivor], &expected);
    assert!(
        metric(&c, "spillway_leases_expired_total") >= 1,
        "{}",
        c.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &c,
            "spillway_handovers_open"
        ) == 0),
        "the coordinator still holds jobs"
    );
}

#[test]
fn cutting_the_origins_link_mid_hand_over_leaves_each_job_existing_once() {
    // The origin is its own host behind a veth link; the coordinator and the peer share the
    // other host.
    let hosts = Hosts::new();
    let c = Coordinator::on(Some(&hosts.c), &hosts.c_ip);
    let origin = member(&c, "edge", 1, Some(&hosts.a));
    let peer = member(&c, "cloud", 4, Some(&hosts.c));
    deploy(&c, &["edge", "cloud"]);

    let expected = burst(&origin, 6);
    let offering = wait_until(Duration::from_secs(30), || {
        origin.log().contains("offering the job to the coordinator")
    });
    assert!(offering, "{}", origin.log());
    // Offers are in flight: cut the link now, keep it down past the coordinator's patience,
    // then bring it back.
    hosts.cut(true);
    std::thread::sleep(Duration::from_secs(8));
    hosts.cut(false);

    assert_each_output_once(&origin, &[&peer], &expected);
    assert!(
        wait_until(Duration::from_secs(20), || metric(
            &c,
            "spillway_handovers_open"
        ) == 0),
        "the coordinator still holds jobs\n{}\norigin:\n{}",
        c.log(),
        origin.log()
    );
}
