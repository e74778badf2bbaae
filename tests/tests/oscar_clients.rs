//! OSCAR's own clients against Spillway: `oscar-python` (the OSCAR project's client, from PyPI)
//! manages services from an FDL file and from a dict, runs them synchronously and
//! asynchronously, lists their jobs, reads and deletes them, on a real coordinator and agent.
//! Also `GET /system/status` read as OSCAR's Go types read it (`StatusInfo`).

mod support;

use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use support::{Coordinator, Node, repo, wait_until};

fn mesh() -> (Coordinator, Node) {
    let c = Coordinator::new();
    let mut node = Node::new("node_name = \"edge-1\"\n");
    c.join(&node);
    node.start();
    let ready = wait_until(Duration::from_secs(20), || {
        c.json(&["get", "nodes"])
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["name"] == "edge-1" && n["health"] == "Ready")
    });
    assert!(ready, "the node never became Ready:\n{}", node.log());
    (c, node)
}

#[test]
fn oscar_python_manages_runs_and_lists_services_as_against_oscar() {
    let (c, node) = mesh();
    let work = tempfile::tempdir().expect("tempdir");
    let run = Command::new("python3")
        .arg(repo("tests/tests/support/oscar_client.py"))
        .arg(format!("http://127.0.0.1:{}", c.http_port))
        .arg(c.api_token())
        .arg(repo("tests/fixtures/oscar/shout.yaml"))
        .arg(work.path())
        .output()
        .expect("python3 with oscar-python (pip install oscar-python)");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "oscar-python failed:\n{stderr}\nagent:\n{}",
        node.log()
    );
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).expect("the script's JSON");
    assert_eq!(out["info"]["serverless_backend"]["name"], "spillway");
    assert!(
        out["config"]["minio_provider"].is_null()
            && out["config"]["spillway"]["minio_provider"]
                .as_str()
                .is_some_and(|m| m.contains("[oscar.minio_provider]")),
        "no store configured, and the answer says so: {}",
        out["config"]
    );
    assert_eq!(out["create_fdl"], 201);
    assert!(
        out["create_again"]
            .as_str()
            .is_some_and(|e| e.contains("already present")),
        "{}",
        out["create_again"]
    );
    assert_eq!(out["create_dict"], 201);
    assert_eq!(out["services"], serde_json::json!(["echo", "shout"]));
    assert_eq!(out["token_length"], 64, "OSCAR's service tokens");
    assert_eq!(out["variables"]["GREETING"], "hello");
    assert_eq!(
        out["secrets"],
        serde_json::json!({"API_KEY": ""}),
        "names only"
    );
    assert_eq!(out["update"], 204);
    // Synchronous: base64 in, the one output back decoded by the client; without an output,
    // what the script printed (from the updated script).
    assert_eq!(out["run_output"], "HELLO OSCAR");
    assert_eq!(
        out["run_stdout"], "said quietly\n\n",
        "printed, plus print's newline"
    );
    assert!(
        out["run_async"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s)),
        "{}",
        out["run_async"]
    );
    let jobs = out["jobs"].as_object().expect("jobs");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for job in jobs.values() {
        assert_eq!(job["status"], "Succeeded", "{job}");
        assert!(
            job["creation_time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    assert!(
        out["log"]
            .as_str()
            .is_some_and(|l| l.contains("hello from")),
        "{}",
        out["log"]
    );
    assert_eq!(out["remove_job"], 204);
    assert_eq!(out["jobs_after_remove"].as_array().map(Vec::len), Some(1));
    assert_eq!(out["remove_all_jobs"], 204);
    assert_eq!(out["jobs_after_remove_all"], serde_json::json!({}));
    assert_eq!(out["remove_service"], 204);
    assert_eq!(out["services_after"], serde_json::json!(["shout"]));
    // The service deleted through the OSCAR API is gone from the node too.
    let gone = wait_until(Duration::from_secs(20), || !c.runs("edge-1", "echo"));
    assert!(gone, "echo still deployed:\n{}", node.log());
}

/// What OSCAR's FaaS Supervisor (PyPI `faas-supervisor`, run here as OSCAR runs it in a
/// container: the body on stdin, the script in `SCRIPT`) answers for `script` and `body`.
fn supervisor_answer(script: &str, body: &str) -> String {
    use std::io::Write;
    let b64 = |s: &[u8]| {
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("stdin").write_all(s)?;
                c.wait_with_output()
            })
            .expect("base64");
        String::from_utf8(out.stdout).expect("ascii")
    };
    let mut child = Command::new("python3")
        .args(["-m", "faassupervisor.supervisor"])
        .env("SCRIPT", b64(script.as_bytes()))
        .env("FUNCTION_CONFIG", b64(b"log_level: CRITICAL\n"))
        .env("LOG_LEVEL", "CRITICAL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with faas-supervisor (pip install faas-supervisor)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("supervisor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("text")
}

/// A zip's entries (name → bytes), when `answer` is one in base64.
fn zip_entries(answer: &str) -> Option<std::collections::BTreeMap<String, Vec<u8>>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = dir.path().join("a.zip");
    let decoded = Command::new("base64")
        .args(["-d"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(answer.trim().as_bytes())?;
            c.wait_with_output()
        })
        .ok()?;
    if !decoded.stdout.starts_with(b"PK") {
        return None;
    }
    std::fs::write(&zip, &decoded.stdout).ok()?;
    let listing = Command::new("python3")
        .args(["-c", "import json,sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); print(json.dumps({n: z.read(n).hex() for n in z.namelist()}))"])
        .arg(&zip)
        .output()
        .ok()?;
    let entries: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&listing.stdout).ok()?;
    Some(
        entries
            .into_iter()
            .map(|(k, v)| (k, hex::decode(v).expect("hex")))
            .collect(),
    )
}

#[test]
fn run_answers_what_the_faas_supervisor_answers_for_the_same_script_and_input() {
    let (c, node) = mesh();
    let admin = format!("oscar:{}", c.api_token());
    let scripts = [
        (
            "one",
            "echo printed\ntr '[:lower:]' '[:upper:]' < \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/out.txt\"\n",
        ),
        ("none", "echo \"said $(cat \"$INPUT_FILE_PATH\")\"\n"),
        (
            "two",
            "cp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/a.txt\"\nmkdir -p \"$TMP_OUTPUT_DIR/d\"\necho b > \"$TMP_OUTPUT_DIR/d/b.txt\"\n",
        ),
    ];
    let body = "aGVsbG8gc3VwZXJ2aXNvcg=="; // "hello supervisor"
    for (name, script) in scripts {
        let service = serde_json::json!({
            "name": name,
            "runtime": "process",
            "cpu": "0.1",
            "script": script,
            "input": [{"storage_provider": "minio.default", "path": format!("{name}/in")}],
            "output": [{"storage_provider": "minio.default", "path": format!("{name}/out")}],
        });
        let (status, text) = call(
            &c,
            &admin,
            "POST",
            "/system/services",
            Some(&service.to_string()),
        );
        assert_eq!(status, 201, "{text}");
        let expected = supervisor_answer(script, body);
        let mut ours = (0, String::new());
        let ran = wait_until(Duration::from_secs(30), || {
            ours = call(&c, &admin, "POST", &format!("/run/{name}"), Some(body));
            ours.0 == 200
        });
        assert!(ran, "{name}: {ours:?}\n{}", node.log());
        match (zip_entries(&expected), zip_entries(&ours.1)) {
            // Zips differ in their timestamps: their entries must not.
            (Some(theirs), Some(mine)) => assert_eq!(mine, theirs, "{name}"),
            _ => assert_eq!(ours.1, expected, "{name}"),
        }
    }
}

/// `curl -X METHOD` with basic auth `user:password` → (status, body).
fn call(
    c: &Coordinator,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-u", auth, "-X", method, "-w", "\n%{http_code}"]);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{}{path}", c.http_port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn bad_services_are_refused_in_oscars_words_and_change_nothing() {
    let c = Coordinator::new();
    let admin = format!("oscar:{}", c.api_token());
    let good = r#"{"name": "f", "runtime": "process", "cpu": "0.1", "script": "true", "input": [{"storage_provider": "minio.default", "path": "f/in"}]}"#;
    assert_eq!(
        call(&c, &admin, "POST", "/system/services", Some(good)).0,
        201
    );
    let before = call(&c, &admin, "GET", "/system/services/f", None).1;
    let refused = [
        ("not JSON", "{name: f", "the body is not JSON"),
        ("a list", "[]", "expected a JSON object"),
        (
            "no name",
            r#"{"image": "alpine"}"#,
            "'Name' failed on the 'required' tag",
        ),
        (
            "a bad cpu",
            r#"{"name": "g", "cpu": "lots", "script": "true"}"#,
            "cpu",
        ),
        (
            "the same name",
            good,
            "A service with the provided name already exists",
        ),
    ];
    for (what, body, says) in refused {
        let (status, text) = call(&c, &admin, "POST", "/system/services", Some(body));
        assert_eq!(status, 400, "{what}: {text}");
        assert!(
            text.starts_with("The service specification is not valid: ") || what == "the same name",
            "{what}: {text}"
        );
        assert!(text.contains(says), "{what}: {text}");
    }
    let missing = r#"{"name": "nosuch", "runtime": "process", "script": "true"}"#;
    assert_eq!(
        call(&c, &admin, "PUT", "/system/services", Some(missing)).0,
        404
    );
    assert_eq!(
        call(&c, &admin, "DELETE", "/system/services/nosuch", None).0,
        404
    );
    assert_eq!(
        call(&c, &admin, "DELETE", "/system/logs/f/nosuch", None).0,
        404
    );
    // Who may not: a wrong password, and a token that may only run functions.
    let (status, _) = call(&c, "oscar:wrong", "POST", "/system/services", Some(good));
    assert_eq!(status, 401);
    let (ok, invoker, err) = c.cli(&[
        "api-token",
        "create",
        "--scope",
        "invoker",
        "--function",
        "f",
    ]);
    assert!(ok, "{err}");
    let invoker = format!("oscar:{}", invoker.trim());
    let (status, text) = call(&c, &invoker, "DELETE", "/system/services/f", None);
    assert_eq!(status, 403, "{text}");
    // Nothing changed: the one service, as it was.
    let (_, list) = call(&c, &admin, "GET", "/system/services", None);
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&list)
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(
        call(&c, &admin, "GET", "/system/services/f", None).1,
        before
    );
}

/// OSCAR's `types.StatusInfo` as its Go code decodes it: whole numbers (int64) where it has
/// them, so a float fails the decode as it fails OSCAR's. Unknown fields are ignored, as Go's
/// decoder ignores them.
#[derive(Debug, Deserialize)]
struct StatusInfo {
    cluster: ClusterInfo,
    oscar: OscarInfo,
    minio: MinioInfo,
}

#[derive(Debug, Deserialize)]
struct ClusterInfo {
    nodes_count: i64,
    metrics: ClusterMetrics,
    nodes: Vec<NodeDetail>,
}

#[derive(Debug, Deserialize)]
struct ClusterMetrics {
    cpu: CpuMetrics,
    memory: MemoryMetrics,
    gpu: GpuMetrics,
}

#[derive(Debug, Deserialize)]
struct CpuMetrics {
    total_free_cores: i64,
    max_free_on_node_cores: i64,
    total_schedulable_cores: i64,
    total_schedulable_on_node_cores: i64,
}

#[derive(Debug, Deserialize)]
struct MemoryMetrics {
    total_free_bytes: i64,
    max_free_on_node_bytes: i64,
    total_schedulable_bytes: i64,
    max_schedulable_on_node_bytes: i64,
}

#[derive(Debug, Deserialize)]
struct GpuMetrics {
    total_gpu: i64,
}

#[derive(Debug, Deserialize)]
struct NodeDetail {
    name: String,
    cpu: NodeResource,
    memory: NodeResource,
    gpu: i64,
    is_interlink: bool,
    status: String,
}

/// A node's `cpu` (`capacity_cores`, `usage_cores`, `request_cores`: millicores) or `memory`
/// (`…_bytes`). OSCAR leaves zero quantities out (`omitempty`): missing is 0.
#[derive(Debug, Deserialize)]
struct NodeResource(std::collections::BTreeMap<String, i64>);

impl NodeResource {
    fn get(&self, key: &str) -> i64 {
        self.0.get(key).copied().unwrap_or(0)
    }
}

#[derive(Debug, Deserialize)]
struct OscarInfo {
    deployment_name: String,
    ready: bool,
    jobs_count: i64,
    pods: PodInfo,
    oidc: OidcInfo,
}

#[derive(Debug, Deserialize)]
struct PodInfo {
    total: i64,
}

#[derive(Debug, Deserialize)]
struct OidcInfo {
    enabled: bool,
}

#[derive(Debug, Deserialize)]
struct MinioInfo {
    buckets_count: i64,
}

#[test]
fn status_decodes_as_oscars_status_info_and_drives_its_load_based_choice() {
    let (c, _node) = mesh();
    let basic = format!("oscar:{}", c.api_token());
    let out = Command::new("curl")
        .args(["-sS", "-u", &basic])
        .arg(format!("http://127.0.0.1:{}/system/status", c.http_port))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let status: StatusInfo = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(status.cluster.nodes_count, 1);
    let node = &status.cluster.nodes[0];
    assert_eq!(
        (node.name.as_str(), node.status.as_str()),
        ("edge-1", "Ready")
    );
    assert!(!node.is_interlink && node.gpu == 0);
    let capacity = node.cpu.get("capacity_cores");
    assert!(capacity >= 1000, "millicores: {body}");
    assert!(node.memory.get("capacity_bytes") > 1 << 20, "bytes: {body}");
    assert!(node.cpu.get("usage_cores") <= capacity);
    let metrics = &status.cluster.metrics;
    assert!(metrics.cpu.total_free_cores <= capacity);
    assert!(metrics.cpu.max_free_on_node_cores <= metrics.cpu.total_free_cores);
    assert_eq!(
        metrics.cpu.total_schedulable_cores, capacity,
        "nothing runs"
    );
    assert_eq!(metrics.cpu.total_schedulable_on_node_cores, capacity);
    assert!(metrics.memory.total_free_bytes > 0);
    assert!(metrics.memory.max_free_on_node_bytes <= metrics.memory.total_free_bytes);
    assert!(metrics.memory.total_schedulable_bytes >= metrics.memory.max_schedulable_on_node_bytes);
    assert_eq!(metrics.gpu.total_gpu, 0);
    assert!(status.oscar.ready && !status.oscar.oidc.enabled);
    assert!(!status.oscar.deployment_name.is_empty());
    assert!(status.oscar.jobs_count >= 0 && status.oscar.pods.total >= 0);
    assert_eq!(status.minio.buckets_count, 0);
    // OSCAR's load-based delegation: a 0.5-CPU, 16 MiB job fits some node, and the priority
    // 100 − round(100·√(cpu free share · memory free share)) is a valid one (< 101).
    let fits = status.cluster.nodes.iter().any(|n| {
        n.cpu.get("capacity_cores") - n.cpu.get("request_cores") >= 500
            && n.memory.get("capacity_bytes") - n.memory.get("request_bytes") >= 16 << 20
    });
    assert!(fits, "{body}");
    let cpu_total: i64 = status
        .cluster
        .nodes
        .iter()
        .map(|n| n.cpu.get("capacity_cores"))
        .sum();
    let mem_total: i64 = status
        .cluster
        .nodes
        .iter()
        .map(|n| n.memory.get("capacity_bytes"))
        .sum();
    let share = (metrics.cpu.total_free_cores as f64 / cpu_total as f64)
        * (metrics.memory.total_free_bytes as f64 / mem_total as f64);
    let priority = 100 - (100.0 * share.sqrt()).round() as i64;
    assert!((0..101).contains(&priority), "{priority}: {body}");
}
