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
fn metric(c: &Coordinator, name: &str, labels: &[(&str, &str)]) -> u64 {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{}; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        c.http_port
    );
    let out = support::command_in(c.netns.as_deref(), std::path::Path::new("bash"))
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    support::count(&text, name, labels)
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

/// Drops one frame named `stem` into the origin's input folder; returns (name, expected
/// output).
fn burst_named(origin: &Node, stem: &str) -> (String, String) {
    let name = format!("{stem}.txt");
    let text = format!("{stem} from the camera");
    origin.write(&format!("data/frames/in/{name}"), &text);
    (name, text.to_uppercase())
}

/// Drops `n` frames into the origin's input folder; returns (name, expected output).
fn burst(origin: &Node, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| burst_named(origin, &format!("frame-{i:03}")))
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
    assert!(metric(&c, "spillway_handovers_total", &[("outcome", "accepted")]) >= on_peers as u64);
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &c,
            "spillway_handovers_open",
            &[]
        ) == 0),
        "the coordinator still holds jobs"
    );
    // Each hand-over was journaled as placed, finished and forgotten, in group commits.
    let accepted = metric(&c, "spillway_handovers_total", &[("outcome", "accepted")]);
    let records = metric(&c, "spillway_handover_records_total", &[]);
    let commits = metric(&c, "spillway_handover_commits_total", &[]);
    assert!(
        records >= 3 * accepted && (1..=records).contains(&commits),
        "{accepted} hand-overs, {records} records in {commits} commits"
    );
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &c,
            "spillway_blobs",
            &[]
        ) == 0),
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
        metric(&c, "spillway_leases_expired_total", &[]) >= 1,
        "{}",
        c.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &c,
            "spillway_handovers_open",
            &[]
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
            "spillway_handovers_open",
            &[]
        ) == 0),
        "the coordinator still holds jobs\n{}\norigin:\n{}",
        c.log(),
        origin.log()
    );
}

/// The trace of the next test as the simulator replays it: three nodes of one slot that see each
/// other as peers, `slow` taking 2 s with the live defaults the placement core starts from (a
/// 1 s run-time prior, peers 1 ms and 10 MB/s apart, the FDL's 1 s threshold as the longest
/// local wait, 3 hops), and `jobs` arrivals on `small`, `gap_ms` apart.
fn simulated_trace(jobs: usize, gap_ms: u64) -> spillway_sim::report::Report {
    use spillway_placement::TargetKind;
    use spillway_placement::policy::{FunctionSpec, SpillwayPolicy};
    use spillway_sim::scenario::{Answer, Arrival, FunctionSim, NodeSpec, Scenario};
    let names = ["small", "big-1", "big-2"];
    let nodes = names
        .iter()
        .map(|name| NodeSpec {
            id: (*name).into(),
            tier: (*name).into(),
            slots: Some(1),
            start_ms: 0,
            cold_start_ms: 0,
            keep_warm_ms: 0,
            run_ms: [("slow".to_owned(), 2_000)].into(),
            latency_ms: 1,
            bytes_per_ms: 10_000.0,
            cost: None,
            decides: true,
            sees: names
                .iter()
                .filter(|n| *n != name)
                .map(|n| ((*n).to_owned(), TargetKind::Peer, 0))
                .collect(),
            spread_pct: 0,
            answer: Answer::Accepted { after_ms: 0 },
            backoff_max_ms: 0,
            admit_ms: 0,
            clues: None,
        })
        .collect();
    let function = FunctionSim {
        spec: FunctionSpec {
            name: "slow".into(),
            max_local_wait_ms: 1_000,
            rescheduler_threshold_ms: 1_000,
            cost_bound_usd: None,
            elastic_budget_gb_s_per_hour: None,
            max_hops: 3,
        },
        input_bytes: 24,
        prior_ms: 1_000,
        then: None,
    };
    let scenario = Scenario {
        name: "trace".into(),
        nodes,
        functions: [("slow".to_owned(), function)].into(),
        arrivals: (0..jobs as u64)
            .map(|i| Arrival {
                at: i * gap_ms,
                node: "small".into(),
                function: "slow".into(),
            })
            .collect(),
        tiers: names.iter().map(|n| (*n).to_owned()).collect(),
    };
    spillway_sim::run(&scenario, &mut SpillwayPolicy::default())
}

#[test]
fn the_live_coordinator_places_a_trace_as_the_simulator_does() {
    const JOBS: usize = 6;
    // Arrivals 300 ms apart: each decision sees the placements before it in the peers' reports.
    // (Closer together, a report a peer sends after a placement left but before the job reached
    // its queue shows a slot as free that is not: the live view's known imprecision, which the
    // simulator's view does not have.) All decisions fall within the first job's 2 s run, so
    // both sides decide on the same run-time estimates.
    const GAP: Duration = Duration::from_millis(300);
    let sim = simulated_trace(JOBS, GAP.as_millis() as u64);
    let c = Coordinator::new();
    let origin = member(&c, "small", 1, None);
    let peers = [member(&c, "big-1", 1, None), member(&c, "big-2", 1, None)];
    deploy(&c, &["small", "big-1", "big-2"]);
    let expected: Vec<(String, String)> = (0..JOBS)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(GAP);
            }
            burst_named(&origin, &format!("trace-{i}"))
        })
        .collect();
    assert_each_output_once(&origin, &[&peers[0], &peers[1]], &expected);

    // Where each job ran, as the coordinator lists them (its peer, or its origin), in the
    // order the jobs arrived, and the same for the simulated run.
    let jobs = c.json(&["get", "jobs", "--node", "small"]);
    let ran_on = |file: &str| -> String {
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["input"].as_str().is_some_and(|i| i.ends_with(file)))
            .unwrap_or_else(|| panic!("no job for {file} in {jobs}"));
        job["ran_on"].as_str().unwrap_or("small").to_owned()
    };
    let live: Vec<String> = expected.iter().map(|(name, _)| ran_on(name)).collect();
    let simulated: Vec<String> = sim.ran_on.values().cloned().collect();
    let log = c.log();
    let handed = |reason: &str| {
        log.lines()
            .filter(|l| l.contains("job handed over") && l.contains(&format!("reason={reason}")))
            .count() as u32
    };
    eprintln!(
        "where each job ran: live {live:?}, simulated {simulated:?}; hand-overs by admission and rescheduler: live {} and {}, simulated {} and {}",
        handed("Admission"),
        handed("Rescheduler"),
        sim.delegations.admission,
        sim.delegations.rescheduler
    );
    assert_eq!(
        live, simulated,
        "where each job ran, live vs simulated\n{log}"
    );
    assert_eq!(
        (handed("Admission"), handed("Rescheduler")),
        (sim.delegations.admission, sim.delegations.rescheduler),
        "hand-overs by mechanism, live vs simulated\n{log}"
    );
    // Not a trivial agreement: the trace makes the origin keep some and both peers take some.
    let nodes: std::collections::BTreeSet<&String> = simulated.iter().collect();
    assert_eq!(nodes.len(), 3, "{simulated:?}");
}
