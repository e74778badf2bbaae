//! `SPILLWAY_LOG_FORMAT=json`: both binaries log one JSON object per line, with each event's
//! fields as keys, so a log pipeline finds a job by its id (which is also the trace id of the
//! `traceparent` its delegations carry, see `replicas_e2e`).

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Coordinator, Node, bin, free_port, wait_until};

/// Every line of `log` as JSON; a line that is not fails the test.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}\n{log}"))
        })
        .collect()
}

#[test]
fn json_logs_carry_each_events_fields_as_keys_on_the_agent_and_the_coordinator() {
    let c = Coordinator::new();
    let mut node = Node::new("node_name = \"pi-json\"\n");
    node.env.push(("SPILLWAY_LOG_FORMAT".into(), "json".into()));
    c.join(&node);
    node.start();
    support::apply_fdl(&c, &format!("functions:\n  oscar:\n{}", support::UPPER));
    assert!(wait_until(Duration::from_secs(30), || c.runs("pi-json", "upper")));
    node.write("data/texts/in/a.txt", "hello");
    let succeeded = |log: &str| {
        json_lines(log)
            .into_iter()
            .find(|l| l["message"] == "succeeded")
    };
    assert!(
        wait_until(Duration::from_secs(30), || succeeded(&node.log()).is_some()),
        "{}",
        node.log()
    );
    let line = succeeded(&node.log()).unwrap();
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["function"], "upper", "{line}");
    let job = line["job"].as_str().unwrap();
    let listed = c.json(&["get", "jobs"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"].as_str().unwrap().starts_with(job)),
        "{job} not in {listed}"
    );
    assert!(
        line["target"]
            .as_str()
            .unwrap()
            .starts_with("spillway_agent")
    );
    assert!(line["timestamp"].is_string());
    node.stop();

    // The coordinator's: a join is logged as one object, the node a key of it.
    let state = tempfile::tempdir().unwrap();
    let (quic, http) = (free_port(), free_port());
    std::fs::write(
        state.path().join("c.toml"),
        format!(
            "state_dir = \"s\"\n[quic]\nlisten = \"127.0.0.1:{quic}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\ntls = \"off\"\n"
        ),
    )
    .unwrap();
    let log = state.path().join("log");
    let mut serve = Command::new(bin("spillway"))
        .args(["serve", "--config"])
        .arg(state.path().join("c.toml"))
        .env("HOME", state.path())
        .env("SPILLWAY_LOG", "info")
        .env("SPILLWAY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || state
        .path()
        .join("s/client.toml")
        .exists()));
    let out = Command::new(bin("spillway"))
        .arg("--client-config")
        .arg(state.path().join("s/client.toml"))
        .args(["token", "create"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let newcomer = Node::new("node_name = \"pi-newcomer\"\n");
    let (ok, _, err) = newcomer.agent_cli(&[
        "join",
        "--coordinator",
        &format!("127.0.0.1:{quic}"),
        "--token",
        &token,
    ]);
    assert!(ok, "{err}");
    let joined = wait_until(Duration::from_secs(10), || {
        json_lines(&std::fs::read_to_string(&log).unwrap_or_default())
            .iter()
            .any(|l| {
                l["message"] == "node joined the mesh"
                    && l["node"] == "pi-newcomer"
                    && l["level"] == "INFO"
                    && l["target"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("spillway_coordinator"))
            })
    });
    let _ = serve.kill();
    let _ = serve.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(joined, "{text}");
    json_lines(&text);
}
