//! The mesh as a user runs it: a `spillway serve` process, agents as separate processes that
//! join with tokens over real QUIC on loopback, and the `spillway` CLI in between.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{Coordinator, Node, repo, wait_until};

const FDL: &str = "tests/fixtures/mesh/functions.yaml";

/// A plain HTTP/1.0 GET on loopback (for the unauthenticated endpoints).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn member(c: &Coordinator, name: &str) -> Node {
    let mut node = Node::new(&format!(
        "node_name = \"{name}\"\n[labels]\nzone = \"{name}\"\n"
    ));
    c.join(&node);
    node.start();
    node
}

#[test]
fn three_agents_join_receive_their_functions_and_process_files_where_they_land() {
    let c = Coordinator::new();
    let nodes: Vec<Node> = ["pi-1", "pi-2", "pi-3"]
        .iter()
        .map(|n| member(&c, n))
        .collect();
    let (ok, out, err) = c.cli(&["apply", "-f", repo(FDL).to_str().unwrap()]);
    assert!(ok, "apply failed: {err}");
    assert!(out.contains("function/upper created"), "{out}");
    for n in ["pi-1", "pi-2", "pi-3"] {
        assert!(
            wait_until(Duration::from_secs(20), || c.runs(n, "upper")),
            "{n} never ran `upper`: {}\n{}",
            c.json(&["get", "nodes"]),
            c.log()
        );
    }
    // Live load arrives by datagram: the view has a report with the function's free slots.
    let reported = wait_until(Duration::from_secs(5), || {
        let view = c.json(&["get", "nodes"]);
        view.as_array().unwrap().iter().all(|n| {
            let slots = &n["load"]["functions"][0];
            slots["name"] == "upper" && slots["free_slots"].as_u64().unwrap_or(0) > 0
        })
    });
    assert!(reported, "{}", c.json(&["get", "nodes"]));
    // A file dropped on pi-2 is processed on pi-2, and the coordinator knows the job.
    nodes[1].write("data/texts/in/hello.txt", "hello mesh");
    let out_file = nodes[1].path("data/texts/out/hello.txt");
    assert!(
        wait_until(Duration::from_secs(20), || out_file.exists()),
        "{}",
        nodes[1].log()
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "HELLO MESH");
    assert!(!nodes[0].path("data/texts/out/hello.txt").exists());
    let job = wait_until(Duration::from_secs(10), || {
        let jobs = c.json(&["get", "jobs", "--node", "pi-2"]);
        jobs.as_array()
            .is_some_and(|j| j.iter().any(|j| j["phase"] == "Succeeded"))
    });
    assert!(job, "{}", c.json(&["get", "jobs"]));
    let jobs = c.json(&["get", "jobs", "--node", "pi-2"]);
    let id = jobs[0]["id"].as_str().unwrap_or_default().to_owned();
    let id = if id.is_empty() {
        jobs[0]["id"].to_string().trim_matches('"').to_owned()
    } else {
        id
    };
    // Its log comes from the node, through the coordinator.
    let (ok, log, err) = c.cli(&["logs", &id[..12]]);
    assert!(ok, "logs failed: {err}");
    assert!(log.contains("upper-cased hello.txt"), "{log}");
    // put/get move files in and out of a node's folders; invoke runs on a node that has it.
    let local = c.dir.path().join("note.txt");
    std::fs::write(&local, "from the cli").unwrap();
    let (ok, _, err) = c.cli(&["put", local.to_str().unwrap(), "pi-3:texts/in/note.txt"]);
    assert!(ok, "put failed: {err}");
    let out3 = nodes[2].path("data/texts/out/note.txt");
    assert!(
        wait_until(Duration::from_secs(20), || out3.exists()),
        "{}",
        nodes[2].log()
    );
    let (ok, got, err) = c.cli(&["get", "pi-3:texts/out/note.txt"]);
    assert!(ok, "get failed: {err}");
    assert_eq!(got, "FROM THE CLI");
    let input = c.dir.path().join("invoke.txt");
    std::fs::write(&input, "invoked").unwrap();
    let (ok, out, err) = c.cli(&[
        "invoke",
        "upper",
        "--file",
        input.to_str().unwrap(),
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert!(ok, "invoke failed: {out}{err}");
    assert!(
        out.contains("Succeeded") && out.contains("texts/out/invoke.txt"),
        "{out}"
    );
    // Deleting the function removes it from every node.
    let (ok, _, err) = c.cli(&["delete", "function", "upper"]);
    assert!(ok, "delete failed: {err}");
    assert!(wait_until(Duration::from_secs(20), || !c.runs("pi-1", "upper")));
    drop(nodes);
}

#[test]
fn an_agent_rebooted_while_the_coordinator_is_away_keeps_its_functions_and_works() {
    let mut c = Coordinator::new();
    let mut node = member(&c, "pi-1");
    let (ok, _, err) = c.cli(&["apply", "-f", repo(FDL).to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(wait_until(Duration::from_secs(20), || c.runs("pi-1", "upper")));
    c.kill9();
    node.kill9();
    node.start();
    assert!(
        node.banner.join("\n").contains("1 function deployed"),
        "{:?}",
        node.banner
    );
    node.write("data/texts/in/offline.txt", "still working");
    let out = node.path("data/texts/out/offline.txt");
    assert!(
        wait_until(Duration::from_secs(20), || out.exists()),
        "{}",
        node.log()
    );
    // The coordinator returns; the node links again on its own and reports the offline job.
    c.start();
    assert!(
        wait_until(Duration::from_secs(40), || c.health("pi-1").as_deref()
            == Some("Ready")),
        "{}\n{}",
        c.log(),
        node.log()
    );
    let synced = wait_until(Duration::from_secs(10), || {
        c.has_succeeded("texts/in/offline.txt")
    });
    assert!(synced, "{}", c.json(&["get", "jobs"]));
}

#[test]
fn a_node_that_stops_reporting_turns_suspect_then_down() {
    let c = Coordinator::new();
    let mut node = member(&c, "pi-1");
    assert!(wait_until(Duration::from_secs(20), || c
        .health("pi-1")
        .as_deref()
        == Some("Ready")));
    let pid = nix::unistd::Pid::from_raw(node.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    assert!(wait_until(Duration::from_secs(10), || c
        .health("pi-1")
        .as_deref()
        == Some("Suspect")));
    assert!(wait_until(Duration::from_secs(20), || c
        .health("pi-1")
        .as_deref()
        == Some("Down")));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        wait_until(Duration::from_secs(40), || c.health("pi-1").as_deref()
            == Some("Ready")),
        "{}",
        node.log()
    );
    node.kill9();
}

#[test]
fn bad_input_is_refused_with_a_message_and_changes_nothing() {
    let c = Coordinator::new();
    // An invalid FDL: the error names file:line:col, and nothing is stored.
    let (ok, _, err) = c.cli(&[
        "apply",
        "-f",
        repo("tests/fixtures/mesh/invalid.yaml").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("invalid.yaml:7:"), "{err}");
    assert_eq!(c.json(&["get", "functions"]), serde_json::json!([]));
    // A wrong API token.
    let (ok, _, err) = c.cli(&["--token", "nope", "get", "nodes"]);
    assert!(!ok && err.contains("wrong API token"), "{err}");
    // A reused token.
    let token = c.token();
    let mut a = Node::new("node_name = \"a\"\n");
    let (ok, _, err) = a.agent_cli(&["join", "--coordinator", &c.quic(), "--token", &token]);
    assert!(ok, "{err}");
    let b = Node::new("node_name = \"b\"\n");
    let (ok, _, err) = b.agent_cli(&["join", "--coordinator", &c.quic(), "--token", &token]);
    assert!(!ok && err.contains("already used"), "{err}");
    // Nothing listening there: a clear message, not a hang.
    let port = support::free_port();
    let (ok, _, err) = b.agent_cli(&[
        "join",
        "--coordinator",
        &format!("127.0.0.1:{port}"),
        "--token",
        &token,
    ]);
    assert!(!ok && err.contains("cannot reach the coordinator"), "{err}");
    // Unknown node, unknown job, not a NODE:PATH.
    for args in [
        &["describe", "node", "ghost"][..],
        &["logs", "0123456789ab"],
        &["get", "ghost:x/y"],
        &["delete", "function", "ghost"],
    ] {
        let (ok, _, err) = c.cli(args);
        assert!(!ok && !err.is_empty(), "{args:?} should fail");
    }
    a.start();
    assert!(wait_until(Duration::from_secs(20), || c
        .health("a")
        .as_deref()
        == Some("Ready")));
    // Paths that leave the data root are refused by the node.
    let local = c.dir.path().join("x.txt");
    std::fs::write(&local, "x").unwrap();
    let (ok, _, err) = c.cli(&["put", local.to_str().unwrap(), "a:../../etc/x"]);
    assert!(!ok && err.contains(".."), "{err}");
    let metrics = http_get(c.http_port, "/metrics");
    assert_eq!(
        support::sample(
            &metrics,
            "spillway_api_refused_total",
            &[("reason", "unauthorized")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        support::sample(&metrics, "spillway_joins_total", &[("outcome", "refused")]),
        Some(1.0),
        "{metrics}"
    );
}

#[test]
fn spillway_up_then_a_second_node_joined_with_a_token_both_process_the_quickstart() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http, mqtt) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let mut up = std::process::Command::new(support::bin("spillway"))
        .args(["up", "--dir"])
        .arg(dir.path().join("mesh"))
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--node", "local", "--quic", &format!("127.0.0.1:{quic}")])
        .args(["--http", &format!("127.0.0.1:{http}"), "-f"])
        .arg(repo("configs/quickstart/functions.yaml"))
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The CLI finds the coordinator through the client config `up` installed under $HOME.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(support::bin("spillway"))
            .args(args)
            .env("HOME", dir.path())
            .env_remove("SPILLWAY_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let ready = wait_until(Duration::from_secs(30), || {
        let (ok, out) = cli(&["get", "nodes"]);
        ok && out.contains("local") && out.contains("Ready") && out.contains(" 2 ")
    });
    assert!(ready, "{:?}", cli(&["get", "nodes"]));
    std::fs::copy(
        repo("tests/fixtures/gradient.png"),
        dir.path().join("mesh/data/images/input/gradient.png"),
    )
    .unwrap();
    let archived = dir
        .path()
        .join("mesh/data/images/archive/gradient-gray.png.gz");
    assert!(wait_until(Duration::from_secs(30), || archived.exists()));
    // A second node joins the all-in-one mesh with a token, gets the functions, works on its own
    // files, and both show Ready with live load.
    let (ok, token) = cli(&["token", "create", "--ttl", "5m"]);
    assert!(ok, "token create failed");
    let mut second = Node::new("node_name = \"second\"\n");
    let (ok, out, err) = second.agent_cli(&[
        "join",
        "--coordinator",
        &format!("127.0.0.1:{quic}"),
        "--token",
        token.trim(),
    ]);
    assert!(ok, "{out}{err}");
    second.start();
    let both = wait_until(Duration::from_secs(30), || {
        let (ok, out) = cli(&["-o", "json", "get", "nodes"]);
        let nodes: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        ok && nodes.as_array().is_some_and(|n| {
            n.len() == 2
                && n.iter().all(|n| {
                    n["health"] == "Ready"
                        && n["load"]["functions"]
                            .as_array()
                            .is_some_and(|f| f.len() == 2)
                })
        })
    });
    assert!(both, "{:?}\n{}", cli(&["get", "nodes"]), second.log());
    std::fs::copy(
        repo("tests/fixtures/gradient.png"),
        second.path("data/images/input/gradient.png"),
    )
    .unwrap();
    let there = second.path("data/images/archive/gradient-thumb.png.gz");
    assert!(
        wait_until(Duration::from_secs(30), || there.exists()),
        "{}",
        second.log()
    );
    let (ok, yaml) = cli(&["-o", "yaml", "get", "functions"]);
    assert!(ok && yaml.contains("name: grayscale"), "{yaml}");
    let (ok, completions) = cli(&["completions", "bash"]);
    assert!(ok && completions.contains("spillway"), "no completions");
    // MQTT needs no broker of one's own: `up` embeds one and gives the local agent its address.
    let (ok, out) = cli(&[
        "apply",
        "-f",
        repo("configs/examples/fire-alert/functions.yaml")
            .to_str()
            .unwrap(),
    ]);
    assert!(ok, "{out}");
    let alerts = support::mqtt::Subscriber::start(mqtt, "alerts/fire");
    let verdict = wait_until(Duration::from_secs(30), || {
        support::mqtt::publish(mqtt, "cameras/up/frames", &["70"]);
        std::thread::sleep(Duration::from_millis(300));
        alerts.lines().iter().any(|l| l == "alerts/fire up FIRE 70")
    });
    assert!(verdict, "{:?}", alerts.lines());
    let _ = up.kill();
    let _ = up.wait();
}
