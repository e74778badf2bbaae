//! S3/MinIO bucket notifications and S3 storage providers against moto's S3 API (signatures
//! enforced), through a real coordinator and agent: `POST /events` with the JSON MinIO sends,
//! inputs downloaded from the bucket, outputs uploaded to it.

mod support;

use std::time::Duration;

use support::s3::Moto;
use support::{Coordinator, Node, wait_until};

fn post(c: &Coordinator, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = c.post(&c.api_token(), path, body);
    (status, body)
}

/// The notification of the first write of `bucket/key`.
fn minio_event(bucket: &str, key: &str) -> String {
    minio_event_written(bucket, key, "17A2B3C4D5E6F701")
}

/// What MinIO posts to a webhook when `key` is created in `bucket` (key URL-encoded).
fn minio_event_written(bucket: &str, key: &str, sequencer: &str) -> String {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    serde_json::json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": format!("{bucket}/{key}"),
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2026-11-22T10:00:00.000Z",
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                "object": {"key": encoded, "size": 11, "contentType": "text/plain", "sequencer": sequencer}
            }
        }]
    })
    .to_string()
}

struct Setup {
    moto: Moto,
    c: Coordinator,
    node: Node,
}

/// A coordinator with `config`, one node `edge-1`, and `fdl` (with the upper-casing `shout.sh`
/// beside it) applied and running `functions` there.
fn mesh_running(config: &str, fdl: &str, functions: &[&str]) -> (Coordinator, Node) {
    let c = Coordinator::with_config(config);
    let mut node = Node::new("node_name = \"edge-1\"\n");
    c.join(&node);
    node.start();
    let dir = c.dir.path();
    std::fs::write(
        dir.join("shout.sh"),
        "tr a-z A-Z < \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/$FILE_NAME\"\n",
    )
    .expect("script");
    std::fs::write(dir.join("functions.yaml"), fdl).expect("fdl");
    let (ok, _, err) = c.cli(&[
        "apply",
        "-f",
        dir.join("functions.yaml").to_str().expect("utf-8"),
    ]);
    assert!(ok, "apply: {err}");
    let deployed = wait_until(Duration::from_secs(20), || {
        functions.iter().all(|f| c.runs("edge-1", f))
    });
    assert!(deployed, "{}", node.log());
    (c, node)
}

/// moto with a `photos` bucket; a coordinator; one node; the `shout` function reading
/// `photos/in` and writing `photos/out` through a MinIO-style provider pointing at moto, and
/// `leaky`, whose output provider has a wrong secret.
fn setup() -> Setup {
    let moto = Moto::start();
    moto.python("client('s3').create_bucket(Bucket='photos')");
    let fdl = format!(
        "functions:\n  oscar:\n  - edge:\n      name: shout\n      runtime: process\n      script: shout.sh\n      cpu: '0.1'\n      memory: 16Mi\n      input:\n      - {{storage_provider: minio.lab, path: photos/in, suffix: [.txt]}}\n      output:\n      - {{storage_provider: minio.lab, path: photos/out}}\n  - edge:\n      name: leaky\n      runtime: process\n      script: shout.sh\n      cpu: '0.1'\n      memory: 16Mi\n      input:\n      - {{storage_provider: minio.default, path: texts/in}}\n      output:\n      - {{storage_provider: minio.wrong, path: photos/out}}\n  - edge:\n      name: upload\n      runtime: process\n      script: shout.sh\n      cpu: '0.1'\n      memory: 16Mi\n      input:\n      - {{storage_provider: minio.default, path: texts/up}}\n      output:\n      - {{storage_provider: minio.lab, path: photos/up}}\nstorage_providers:\n  minio:\n    lab: {{endpoint: \"{e}\", region: us-east-1, access_key: {ak}, secret_key: {sk}}}\n    wrong: {{endpoint: \"{e}\", region: us-east-1, access_key: {ak}, secret_key: not-the-secret}}\n",
        e = moto.endpoint(),
        ak = moto.access_key,
        sk = moto.secret_key
    );
    let (c, node) = mesh_running("", &fdl, &["shout", "leaky", "upload"]);
    Setup { moto, c, node }
}

#[test]
fn a_minio_notification_runs_the_function_on_the_object_and_its_output_lands_in_the_bucket() {
    let Setup { moto, c, node } = setup();
    moto.put("photos", "in/hello world.txt", "hello world");
    let (status, body) = post(&c, "/events", &minio_event("photos", "in/hello world.txt"));
    assert_eq!(status, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(accepted["jobs"][0]["function"], "shout");
    assert_eq!(accepted["jobs"][0]["node"], "edge-1");
    let uploaded = wait_until(Duration::from_secs(30), || {
        moto.get("photos", "out/hello world.txt").as_deref() == Some("HELLO WORLD")
    });
    assert!(uploaded, "{}", node.log());
    // A synchronous run of a function whose only output is a bucket: nothing to answer with
    // but success.
    let (status, headers, body) = c.post(
        &c.api_token(),
        "/v1/functions/upload/run?name=note.txt",
        "quiet",
    );
    assert_eq!(status, 204, "{headers}{body}\n{}", node.log());
    assert_eq!(moto.get("photos", "up/note.txt").as_deref(), Some("QUIET"));
    // The same notification again (MinIO retries webhooks) is the same job: nothing new runs.
    let (status, again) = post(&c, "/events", &minio_event("photos", "in/hello world.txt"));
    assert_eq!(status, 202);
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["jobs"][0]["job"], accepted["jobs"][0]["job"]);
    // The same bytes uploaded again are a new write (a new sequencer): a new job, as in OSCAR.
    let (status, rewritten) = post(
        &c,
        "/events",
        &minio_event_written("photos", "in/hello world.txt", "17A2B3C4D5E6F702"),
    );
    assert_eq!(status, 202, "{rewritten}");
    let rewritten: serde_json::Value = serde_json::from_str(&rewritten).expect("json");
    let job = rewritten["jobs"][0]["job"].as_str().unwrap_or_default();
    assert_ne!(job, accepted["jobs"][0]["job"]);
    let done = c.job_succeeded(job, Duration::from_secs(30));
    assert!(done, "job {job} did not succeed:\n{}", node.log());

    // MinIO's webhook for an OSCAR service posts to /job/SERVICE: the object it names is the
    // input, fetched for that function only, not the notification taken as an input file.
    moto.put("photos", "in/via job.txt", "via job");
    let (status, body) = post(
        &c,
        "/job/shout",
        &minio_event_written("photos", "in/via job.txt", "17A2B3C4D5E6F703"),
    );
    assert_eq!(status, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(accepted["jobs"][0]["function"], "shout", "{body}");
    assert!(
        wait_until(Duration::from_secs(30), || moto
            .get("photos", "out/via job.txt")
            .as_deref()
            == Some("VIA JOB")),
        "{}",
        node.log()
    );
    // A function whose input is a folder on the nodes has no bucket to fetch from: said.
    let (status, body) = post(
        &c,
        "/job/upload",
        &minio_event_written("texts", "up/a.txt", "17A2B3C4D5E6F704"),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("function `upload` takes no objects from bucket `texts`")
            && body.contains("`minio.default` is a folder on the nodes"),
        "{body}"
    );
}

#[test]
fn bad_notifications_and_bad_credentials_are_refused_and_nothing_escapes_the_data_root() {
    let Setup { moto, c, node } = setup();
    let (status, body) = post(&c, "/events", "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not JSON"), "{body}");
    let (status, body) = post(&c, "/events", "{\"hello\": 1}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Records"), "{body}");
    let (status, body) = post(&c, "/events", &minio_event("nobody-uses", "in/a.txt"));
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no function takes objects from bucket `nobody-uses`"),
        "{body}"
    );
    for evil in ["in/../../../etc/passwd.txt", "/etc/passwd.txt"] {
        let (status, body) = post(&c, "/events", &minio_event("photos", evil));
        assert_eq!(status, 400, "{evil}: {body}");
        assert!(body.contains("refused"), "{body}");
    }
    assert!(!node.path("etc").exists() && !node.path("data/etc").exists());
    // An object the notification names but that is not in the bucket.
    let (status, body) = post(&c, "/events", &minio_event("photos", "in/missing.txt"));
    assert_eq!(status, 502, "{body}");
    // Wrong secret key: moto checks the signature; the job fails and says what to check.
    let (status, body) = post(&c, "/job/leaky?name=x.txt", "YWJj");
    assert_eq!(status, 202, "{body}");
    let failed = wait_until(Duration::from_secs(30), || {
        c.json(&["get", "jobs"])
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| {
                j["function"] == "leaky"
                    && j["phase"] == "Failed"
                    && j["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("check access_key and secret_key"))
            })
    });
    assert!(failed, "{:?}\n{}", c.json(&["get", "jobs"]), node.log());
    assert_eq!(moto.get("photos", "out/x.txt"), None);
    let metrics = c.metrics();
    for (outcome, n) in [("malformed", 2.0), ("unrouted", 1.0), ("refused", 3.0)] {
        assert_eq!(
            support::sample(
                &metrics,
                "spillway_bucket_events_total",
                &[("outcome", outcome)]
            ),
            Some(n),
            "{outcome} in:\n{metrics}"
        );
    }
}

/// With `[oscar.minio_provider]`, `minio.default` is the operator's store, as OSCAR's clients
/// are told: an OSCAR FDL written for it runs unchanged, its input fetched from the store when
/// the store's webhook posts to `/job/NAME`, and its output uploaded back there.
#[test]
fn with_a_default_store_an_oscar_fdl_reads_and_writes_minio_default_there() {
    let moto = Moto::start();
    moto.python("client('s3').create_bucket(Bucket='ingest')");
    let config = format!(
        "[oscar.minio_provider]\nendpoint = \"{}\"\naccess_key = \"{}\"\nsecret_key = \"{}\"\n",
        moto.endpoint(),
        moto.access_key,
        moto.secret_key
    );
    let (c, node) = mesh_running(
        &config,
        "functions:\n  oscar:\n  - edge:\n      name: oscarish\n      runtime: process\n      script: shout.sh\n      cpu: '0.1'\n      memory: 16Mi\n      input:\n      - {storage_provider: minio.default, path: ingest/in}\n      output:\n      - {storage_provider: minio.default, path: ingest/out}\n",
        &["oscarish"],
    );
    moto.put("ingest", "in/report.txt", "from the store");
    let (status, body) = post(
        &c,
        "/job/oscarish",
        &minio_event_written("ingest", "in/report.txt", "17A2B3C4D5E6F7A1"),
    );
    assert_eq!(status, 202, "{body}");
    assert!(
        wait_until(Duration::from_secs(30), || moto
            .get("ingest", "out/report.txt")
            .as_deref()
            == Some("FROM THE STORE")),
        "{}",
        node.log()
    );
    // Not also left in a folder on the node: minio.default is the store here.
    assert!(!node.path("data/ingest/out/report.txt").exists());
}
