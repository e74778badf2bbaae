//! HTTP invocation of functions through the coordinator, with a real HTTP client (curl):
//! `POST /v1/functions/{function}/run` answers with the output's bytes, `POST /run/{function}`
//! the same in OSCAR's contract (base64 both ways), `POST /job/{function}` with the job id.

mod support;

use std::time::Duration;

use support::{Coordinator, Node, repo, wait_until};

const FDL: &str = "tests/fixtures/mesh/functions.yaml";

fn curl(c: &Coordinator, token: &str, path: &str, body: &str) -> (u16, String, String) {
    c.post(token, path, body)
}

fn ready_mesh() -> (Coordinator, Node) {
    let c = Coordinator::new();
    let mut node = Node::new("node_name = \"edge-1\"\n");
    c.join(&node);
    node.start();
    let (ok, _, err) = c.cli(&["apply", "-f", repo(FDL).to_str().expect("utf-8")]);
    assert!(ok, "apply failed: {err}");
    let deployed = wait_until(Duration::from_secs(20), || c.runs("edge-1", "upper"));
    assert!(deployed, "upper never deployed:\n{}", node.log());
    (c, node)
}

#[test]
fn run_answers_with_the_output_and_job_with_the_job_id() {
    let (c, node) = ready_mesh();
    let token = c.api_token();
    let (status, headers, body) = curl(
        &c,
        &token,
        "/v1/functions/upper/run?name=greeting.txt",
        "hello edge",
    );
    assert_eq!(status, 200, "{headers}{body}\n{}", node.log());
    assert_eq!(body, "HELLO EDGE");
    assert!(headers.contains("x-spillway-job:"), "{headers}");
    assert!(
        headers.contains("x-spillway-outputs: texts/out/greeting.txt"),
        "{headers}"
    );
    // OSCAR's contract: base64 in ("hello oscar"), the one output in base64 out.
    let (status, headers, body) = curl(&c, &token, "/run/upper?name=o.txt", "aGVsbG8gb3NjYXI=");
    assert_eq!(status, 200, "{headers}{body}\n{}", node.log());
    assert_eq!(body, "SEVMTE8gT1NDQVI=\n", "base64 of HELLO OSCAR");
    let (status, _, body) = curl(&c, &token, "/run/upper", "not base64!");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("/v1/functions/{name}/run"), "{body}");

    // "queued work", base64-encoded as OSCAR's clients send it.
    let (status, _, body) = curl(&c, &token, "/job/upper", "cXVldWVkIHdvcms=");
    assert_eq!(status, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).expect("json");
    let job = accepted["job"].as_str().expect("job id").to_owned();
    assert_eq!(accepted["node"], "edge-1");
    let done = c.job_succeeded(&job, Duration::from_secs(20));
    assert!(done, "job {job} did not succeed:\n{}", node.log());
    // OSCAR's route: every call is a new job, as in OSCAR.
    let (_, _, again) = curl(&c, &token, "/job/upper", "cXVldWVkIHdvcms=");
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_ne!(again["job"], job.as_str());
    // The raw route too: every call writes `raw.txt` anew, and every write is a new job, the
    // same bytes included (the node says which write it was; the id is the one it runs).
    let raw = |c: &Coordinator| {
        let (status, _, body) = curl(
            c,
            &token,
            "/v1/functions/upper/invoke?file=raw.txt",
            "raw work",
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")["job"].clone()
    };
    let (first, second) = (raw(&c), raw(&c));
    assert_ne!(first, second);
    for job in [&first, &second] {
        let id = job.as_str().unwrap_or_default();
        let done = c.job_succeeded(id, Duration::from_secs(20));
        assert!(done, "job {job} did not succeed:\n{}", node.log());
    }
}

#[test]
fn bad_requests_are_refused_with_what_to_do() {
    let (c, node) = ready_mesh();
    let token = c.api_token();
    let (status, _, body) = curl(&c, "wrong-token", "/run/upper", "x");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing or wrong API token"), "{body}");
    let (status, _, body) = curl(&c, &token, "/run/nosuch", "x");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("spillway get functions"), "{body}");
    let (status, _, body) = curl(&c, &token, "/job/upper?name=../escape", "eA==");
    assert_eq!(status, 400, "{body}");
    // A failing function: the reason comes back, not a hang.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("fails.yaml"),
        "functions:\n  oscar:\n  - edge:\n      name: fails\n      runtime: process\n      script: fails.sh\n      cpu: '0.1'\n      memory: 16Mi\n      input:\n      - {storage_provider: minio.default, path: broken/in}\n",
    )
    .expect("fdl");
    std::fs::write(
        dir.path().join("fails.sh"),
        "echo 'no model loaded' >&2\nexit 3\n",
    )
    .expect("script");
    let (ok, _, err) = c.cli(&[
        "apply",
        "-f",
        dir.path().join("fails.yaml").to_str().expect("utf-8"),
    ]);
    assert!(ok, "{err}");
    let mut answer = (0, String::new());
    let deployed = wait_until(Duration::from_secs(20), || {
        let (status, _, body) = curl(&c, &token, "/run/fails?timeout=20", "eA==");
        answer = (status, body);
        answer.0 != 503 && answer.0 != 404
    });
    assert!(deployed, "{answer:?}\n{}", node.log());
    assert_eq!(answer.0, 500, "{}", answer.1);
    assert!(
        answer.1.contains("`fails` failed") && answer.1.contains("status 3"),
        "{}",
        answer.1
    );
    let metrics = c.metrics();
    assert!(
        support::sample(
            &metrics,
            "spillway_api_refused_total",
            &[("reason", "unauthorized")]
        )
        .is_some_and(|n| n > 0.0),
        "{metrics}"
    );
}
