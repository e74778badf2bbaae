//! The coordinator's event feed against a real agent: `spillway get events`, `get jobs --watch`
//! and `get nodes --watch` following server-sent events as jobs run and a node is cordoned, a
//! stream resuming from `Last-Event-ID`, and the requests it refuses.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Coordinator, Node, bin, wait_until};

/// `spillway ARGS` running in the background, its standard output in a file; killed on drop.
struct Watching {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Watching {
    fn start(c: &Coordinator, args: &[&str]) -> Self {
        let out = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(bin("spillway"))
            .arg("--client-config")
            .arg(c.dir.path().join("state/client.toml"))
            .args(args)
            .stdout(out.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, out }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap_or_default()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` of the stream with `headers`, for `secs` seconds: the status and what it printed.
fn stream(c: &Coordinator, query: &str, headers: &[String], secs: u32) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-N", "--max-time", &secs.to_string()]);
    cmd.args(["-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!(
            "http://127.0.0.1:{}/v1/events/stream{query}",
            c.http_port
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn watches_follow_jobs_and_nodes_as_they_change_and_streams_resume_from_the_last_id() {
    let c = Coordinator::new();
    let mut node = Node::new("node_name = \"pi-watch\"\n");
    c.join(&node);
    node.start();
    support::apply_fdl(&c, &format!("functions:\n  oscar:\n{}", support::UPPER));
    assert!(wait_until(Duration::from_secs(30), || c.runs("pi-watch", "upper")));

    // `get jobs --watch` lists, then prints each change of a job as it happens.
    let jobs = Watching::start(&c, &["-o", "wide", "get", "jobs", "--watch"]);
    std::thread::sleep(Duration::from_millis(500));
    node.write("data/texts/in/a.txt", "hello");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let t = jobs.text();
            t.contains("Succeeded") && t.contains("upper") && t.contains("pi-watch")
        }),
        "{}",
        jobs.text()
    );
    assert!(
        !jobs.text().contains("Connected"),
        "node events in a job watch"
    );

    // `get nodes --watch` shows a cordon as it happens.
    let nodes = Watching::start(&c, &["get", "nodes", "--watch"]);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, _, err) = c.cli(&["cordon", "pi-watch"]);
    assert!(ok, "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || nodes
            .text()
            .contains("Cordoned")),
        "{}",
        nodes.text()
    );

    // `get events`: the node's join and connection, the job's phases, the cordon, in id order.
    let events = c.json(&["get", "events"]);
    let events = events.as_array().unwrap();
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    for wanted in ["Joined", "Connected", "Succeeded", "Cordoned"] {
        assert!(reasons.contains(&wanted), "{wanted} in {reasons:?}");
    }
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let succeeded = events.iter().find(|e| e["reason"] == "Succeeded").unwrap();
    assert_eq!(succeeded["kind"], "job");
    assert_eq!(succeeded["function"], "upper");
    assert_eq!(succeeded["node"], "pi-watch");

    // `describe` ends with the object's recent events.
    let described = c.json(&["describe", "node", "pi-watch"]);
    let reasons = |v: &serde_json::Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        reasons(&described).contains(&"Cordoned".to_owned()),
        "{described}"
    );
    let job = succeeded["name"].as_str().unwrap();
    let described = c.json(&["describe", "job", &job[..12]]);
    assert_eq!(
        reasons(&described).last().map(String::as_str),
        Some("Succeeded")
    );

    // A stream resumes after the id it names (as a reconnecting EventSource does), and sends
    // nothing older.
    let token = format!("Authorization: Bearer {}", c.api_token());
    let last = *ids.last().unwrap();
    let (status, resumed) = stream(
        &c,
        "",
        &[token.clone(), format!("Last-Event-ID: {}", last - 2)],
        2,
    );
    let sent: Vec<u64> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(status, 200);
    assert_eq!(sent, [last - 1, last], "{resumed}");

    // Refused: no token; an id that is not a number; a kind there is none of.
    let (status, body) = stream(&c, "", &[], 2);
    assert_eq!(status, 401);
    assert!(body.contains("missing or wrong API token"), "{body}");
    for query in ["?after=yesterday", "?after=-1", "?kind=pods"] {
        let (status, body) = stream(&c, query, std::slice::from_ref(&token), 2);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(!body.contains("id: "), "{body}");
    }
    let (ok, _, err) = c.cli(&["get", "functions", "--watch"]);
    assert!(
        !ok && err.contains("--watch follows nodes, jobs or events"),
        "{err}"
    );
    node.stop();
}
