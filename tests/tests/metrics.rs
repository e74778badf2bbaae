//! Prometheus scrapes a real agent and a real coordinator, each on its own metrics listener:
//! jobs by function and outcome, histograms of run time, waits and staleness, per node and per
//! function gauges. The expositions are parsed by Prometheus's own Python parser, scraped by a
//! real Prometheus server (Debian's), and every query of the Grafana dashboard in `configs/`
//! runs on that server against what was scraped.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Coordinator, Node, free_port, repo, wait_until};

/// `upper`, and `fails`, which always exits 3.
fn fdl() -> String {
    format!(
        "functions:
  oscar:
{}  - edge:
      name: fails
      runtime: process
      command: ['/bin/sh', '-c', 'echo no >&2; exit 3']
      timeout: 30
      input: [{{storage_provider: minio.default, path: boom/in}}]
      output: [{{storage_provider: minio.default, path: boom/out}}]
",
        support::UPPER
    )
}

fn get(port: u16, path: &str) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        std::fs::read_to_string(headers)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        body.to_owned(),
    )
}

fn scrape(port: u16) -> String {
    let (status, headers, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        headers.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    body
}

/// Every sample of an exposition, as Prometheus's own OpenMetrics parser reads it:
/// `(name, labels, value)`. A malformed exposition fails the test with the parser's message.
fn parse(text: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let out = support::with_stdin(
        Command::new("python3").args(["-c", PARSER]),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert!(!samples.is_empty());
    samples
}

/// The sum of the parsed samples named `name` that carry `labels`.
fn value(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// A Prometheus server scraping the given targets every second, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(jobs: &[(&str, u16)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, port) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/test.sh installs it)");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// An instant query: `Err` with Prometheus's error for a query it refuses.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--get", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .unwrap();
        let answer: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        if answer["status"] != "success" {
            return Err(answer.to_string());
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_an_agent_and_the_coordinator_with_labelled_metrics() {
    let (coordinator_port, agent_port) = (free_port(), free_port());
    let c = Coordinator::with_config(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{coordinator_port}\"\n"
    ));
    let mut node = Node::new(&format!(
        "node_name = \"pi-1\"\n[metrics]\nlisten = \"127.0.0.1:{agent_port}\"\n"
    ));
    c.join(&node);
    node.start();
    support::apply_fdl(&c, &fdl());
    assert!(
        wait_until(Duration::from_secs(30), || c.runs("pi-1", "upper")
            && c.runs("pi-1", "fails")),
        "{}",
        node.log()
    );
    node.write("data/texts/in/a.txt", "hello");
    node.write("data/boom/in/b.txt", "x");

    // The agent's own listener: one job of each outcome, timed.
    let finished = |outcome: &str, function: &str| {
        support::sample(
            &scrape(agent_port),
            "spillway_agent_jobs_total",
            &[("function", function), ("outcome", outcome)],
        ) == Some(1.0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || finished("succeeded", "upper")
            && finished("failed", "fails")),
        "{}\n{}",
        scrape(agent_port),
        node.log()
    );
    let agent = parse(&scrape(agent_port));
    let upper = [("function", "upper")];
    for histogram in [
        "spillway_agent_job_duration_seconds_count",
        "spillway_agent_job_queue_wait_seconds_count",
        "spillway_agent_job_event_to_start_seconds_count",
    ] {
        assert_eq!(value(&agent, histogram, &upper), Some(1.0), "{histogram}");
    }
    assert_eq!(value(&agent, "spillway_agent_link_up", &[]), Some(1.0));
    assert_eq!(
        value(&agent, "spillway_agent_function_free_slots", &upper).map(|v| v > 0.0),
        Some(true)
    );
    assert_eq!(
        value(&agent, "spillway_build_info", &[("component", "agent")]),
        Some(1.0)
    );
    assert!(
        value(
            &agent,
            "spillway_agent_durable_syncs_total",
            &[("kind", "journal")]
        )
        .is_some_and(|n| n >= 2.0)
    );

    // The coordinator's listener: the same jobs from the agents' reports, and the view.
    assert!(
        wait_until(Duration::from_secs(20), || support::sample(
            &scrape(coordinator_port),
            "spillway_job_duration_seconds_count",
            &upper
        ) == Some(1.0)),
        "{}",
        scrape(coordinator_port)
    );
    let coordinator = parse(&scrape(coordinator_port));
    let pi1_upper = [("node", "pi-1"), ("function", "upper")];
    assert_eq!(
        value(
            &coordinator,
            "spillway_job_queue_wait_seconds_count",
            &upper
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&coordinator, "spillway_nodes", &[("health", "Ready")]),
        Some(1.0)
    );
    assert!(value(&coordinator, "spillway_function_free_slots", &pi1_upper).is_some());
    assert_eq!(
        value(
            &coordinator,
            "spillway_joins_total",
            &[("outcome", "accepted")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &coordinator,
            "spillway_joins_total",
            &[("outcome", "refused")]
        ),
        Some(0.0)
    );
    assert!(
        value(&coordinator, "spillway_view_staleness_seconds_count", &[]).is_some_and(|n| n >= 1.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        value(
            &coordinator,
            "spillway_node_certificate_expiry_seconds",
            &[("node", "pi-1")]
        )
        .is_some_and(|t| t > now)
    );
    assert_eq!(
        value(
            &coordinator,
            "spillway_build_info",
            &[("component", "coordinator")]
        ),
        Some(1.0)
    );
    // The API's /metrics is the same exposition.
    parse(&c.metrics());

    // A real Prometheus scrapes both, and can answer by label.
    let prometheus = Prometheus::start(&[
        ("spillway-coordinator", coordinator_port),
        ("spillway-agents", agent_port),
    ]);
    let up = || {
        prometheus
            .query("up == 1")
            .map(|r| r.len() == 2)
            .unwrap_or(false)
            && prometheus
                .query("spillway_agent_jobs_total")
                .is_ok_and(|r| r.len() == 2)
    };
    assert!(
        wait_until(Duration::from_secs(60), up),
        "{:?}\n{}",
        prometheus.query("up"),
        prometheus.log()
    );
    let failed = prometheus
        .query("sum by (function) (spillway_agent_jobs_total{outcome=\"failed\"})")
        .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["metric"]["function"], "fails");
    assert_eq!(failed[0]["value"][1], "1");

    // Every query of the Grafana dashboard runs, and names only metrics the code exports.
    let exported = exported_names(&[&scrape(agent_port), &scrape(coordinator_port)]);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("configs/grafana/spillway.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 15);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$node", ".*")
                .replace("$function", ".*");
            if let Err(e) = prometheus.query(&promql) {
                panic!("{}: {expr} is refused: {e}", panel["title"]);
            }
            for name in metric_names(expr) {
                assert!(
                    exported.contains(&name),
                    "{}: {name} is not exported by the agent or the coordinator",
                    panel["title"]
                );
            }
        }
    }
    node.stop();
}

/// The series names the expositions declare, with or without samples yet (a labelled family
/// starts empty): a counter's `_total`, a histogram's `_bucket`, `_count` and `_sum`.
fn exported_names(expositions: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in expositions.iter().flat_map(|t| t.lines()) {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = declared.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// The `spillway_…` series names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("spillway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn a_metrics_listener_serves_get_metrics_and_refuses_everything_else() {
    let port = free_port();
    let c = Coordinator::with_config(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let token = c.api_token();
    // No API behind it, with or without a token.
    let (status, _, body) = get(port, "/v1/nodes");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("serves GET /metrics only"), "{body}");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .arg(format!("http://127.0.0.1:{port}/v1/nodes/pi-1"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    // Nothing was changed, and the listener and the API still serve.
    let (ok, nodes, err) = c.cli(&["get", "nodes", "-o", "json"]);
    assert!(ok && nodes.trim() == "[]", "{nodes}{err}");
    parse(&scrape(port));
}

#[test]
fn an_agent_opens_no_metrics_port_unless_asked_and_says_why_it_cannot() {
    // Not asked: no listener, and the banner says nothing of one.
    let mut quiet = Node::new("node_name = \"pi-quiet\"\n");
    quiet.start();
    assert!(!quiet.log().contains("Metrics:"), "{}", quiet.log());
    quiet.stop();

    // Asked for an address that is taken: the agent does not start, and says which setting.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let node = Node::new(&format!(
        "node_name = \"pi-busy\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let (ok, out, err) = node.agent_cli(&["run"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!(
            "cannot listen for metrics scrapes on 127.0.0.1:{port} ([metrics] listen)"
        )),
        "{err}"
    );
    assert!(
        !node.path("state/journal.redb").exists(),
        "it opened its journal"
    );
    drop(taken);

    // Not an address: refused as a configuration error naming the setting.
    let node = Node::new("node_name = \"pi-typo\"\n[metrics]\nlisten = \"localhost\"\n");
    let (ok, out, err) = node.agent_cli(&["run"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("metrics.listen = \"localhost\": not an IP address and port"),
        "{err}"
    );
    assert!(!node.path("state/journal.redb").exists());
}
