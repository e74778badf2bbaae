//! Replicas outside the mesh on real processes: a coordinator, a one-slot agent that cannot keep
//! up and no peers, so its surplus goes up to the function's replicas in priority order.
//! Endpoints are real HTTP servers (`support/endpoint.py`) that fail in the ways the network
//! does (503, no answer, reset); the OSCAR replica is a second Spillway coordinator serving
//! OSCAR's API, with its own agent. Every job must run exactly once: on the origin or on one
//! replica, never on two.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Coordinator, Node, files_under, free_port, repo, wait_until};

const SLOW_SH: &str = "tests/fixtures/spill/slow.sh";

/// A running `endpoint.py` and the file it records to.
struct Endpoint {
    child: Child,
    port: u16,
    record: tempfile::NamedTempFile,
}

impl Endpoint {
    fn start(mode: &str) -> Self {
        let port = free_port();
        let record = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("python3")
            .arg(repo("tests/tests/support/endpoint.py"))
            .args([mode, &port.to_string()])
            .arg(record.path())
            .env("SPILLWAY_AGENT", support::bin("spillway-agent"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // It prints once it listens.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening");
        Self {
            child,
            port,
            record,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/jobs", self.port)
    }

    /// Recorded lines whose first word is `what`, as (job, rest).
    fn seen(&self, what: &str) -> Vec<(String, String)> {
        std::fs::read_to_string(self.record.path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                (parts.next()? == what).then(|| {
                    (
                        parts.next().unwrap_or("").to_owned(),
                        parts.next().unwrap_or("").to_owned(),
                    )
                })
            })
            .collect()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slow function of the spill-over tests, with `replicas` (YAML lines) and `extra` top-level
/// FDL, written with its script into a folder; returns the FDL's path.
fn slow_fdl(dir: &std::path::Path, replicas: &str, extra: &str) -> String {
    std::fs::copy(repo(SLOW_SH), dir.join("slow.sh")).unwrap();
    let text = format!(
        "functions:\n  oscar:\n  - edge:\n      name: slow\n      runtime: process\n      script: slow.sh\n      cpu: '1'\n      memory: 16Mi\n      timeout: 60\n      rescheduler_threshold: 1\n      input:\n      - {{storage_provider: minio.default, path: frames/in}}\n      output:\n      - {{storage_provider: minio.default, path: frames/out}}\n      replicas:\n{replicas}{extra}"
    );
    let path = dir.join("functions.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A coordinator whose replica requests time out after 1 s, one one-CPU agent `origin` joined
/// to it, and the FDL at `fdl` applied and running there.
fn origin_with(fdl: &str) -> (Coordinator, Node) {
    origin_under("max_hops = 6\n[replicas]\ntimeout = \"1s\"\n", fdl)
}

/// A coordinator with `config`, one one-CPU agent `origin` joined to it, and the FDL at `fdl`
/// applied and running there.
fn origin_under(config: &str, fdl: &str) -> (Coordinator, Node) {
    let c = Coordinator::with_config(config);
    let node = Node::new("node_name = \"origin\"\n[resources]\ncpu = 1\nmemory = \"1Gi\"\n");
    c.join(&node);
    let mut node = node;
    node.start();
    let (ok, _, err) = c.cli(&["apply", "-f", fdl]);
    assert!(ok, "apply failed: {err}");
    assert!(
        wait_until(Duration::from_secs(30), || c.runs("origin", "slow")),
        "{}",
        c.log()
    );
    (c, node)
}

/// Drops `n` frames into the origin's input folder; returns their names.
fn burst(origin: &Node, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("frame-{i:03}.txt");
            origin.write(
                &format!("data/frames/in/{name}"),
                format!("frame {i} from the camera"),
            );
            name
        })
        .collect()
}

/// Waits until the origin's journal has every job finished; returns the count per state.
fn all_finished(origin: &Node, c: &Coordinator, n: usize) -> BTreeMap<String, usize> {
    let states = || {
        let mut states = BTreeMap::new();
        for row in origin.jobs() {
            let state = row.split_whitespace().nth(1).unwrap_or("?").to_owned();
            *states.entry(state).or_insert(0usize) += 1;
        }
        states
    };
    let done = wait_until(Duration::from_secs(120), || {
        let s = states();
        s.get("Succeeded").copied().unwrap_or(0) + s.get("Failed").copied().unwrap_or(0) == n
    });
    assert!(
        done,
        "{:?}\norigin:\n{}\ncoordinator:\n{}",
        origin.jobs(),
        origin.log(),
        c.log()
    );
    states()
}

/// Drops `n` frames on the origin and waits until every job succeeded; returns their names.
fn all_succeed(origin: &Node, c: &Coordinator, n: usize) -> Vec<String> {
    let inputs = burst(origin, n);
    let states = all_finished(origin, c, inputs.len());
    assert_eq!(
        states.get("Succeeded"),
        Some(&inputs.len()),
        "{states:?}\n{}",
        c.log()
    );
    inputs
}

/// Replica attempts with this outcome (`succeeded`, `fell_through`, `reconciled`, …), of every
/// kind.
fn replica_attempts(c: &Coordinator, outcome: &str) -> u64 {
    support::count(
        &c.metrics(),
        "spillway_replica_attempts_total",
        &[("outcome", outcome)],
    )
}

/// Output files the origin wrote itself (jobs it ran).
fn local_outputs(origin: &Node) -> Vec<String> {
    files_under(&origin.path("data/frames/out"))
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .collect()
}

/// Every input's upper-cased copy reaches the origin's output folder, whoever ran it (a
/// replica's output comes back through the presigned upload and the mesh).
fn assert_every_output_at_origin(origin: &Node, inputs: &[String]) {
    let wrote = wait_until(Duration::from_secs(20), || {
        local_outputs(origin).len() == inputs.len()
    });
    assert!(
        wrote,
        "outputs {:?} of {inputs:?}\n{}",
        local_outputs(origin),
        origin.log()
    );
    for name in inputs {
        let text =
            std::fs::read_to_string(origin.path(&format!("data/frames/out/{name}"))).unwrap();
        assert!(text.starts_with("FRAME "), "{name}: {text:?}");
    }
}

/// The input's name in a `ran JOB NAME CONTENT` record's rest.
fn input_of(rest: &str) -> String {
    rest.split(' ').next().unwrap().to_owned()
}

/// Every input ran exactly once: on the origin (its output) or on the replica that ran it.
fn assert_each_ran_once(inputs: &[String], local: &[String], remote: &[String]) {
    let mut all: Vec<String> = local.iter().chain(remote).cloned().collect();
    all.sort();
    assert_eq!(all, inputs, "local {local:?} + remote {remote:?}");
}

#[test]
fn surplus_falls_through_refusing_silent_and_resetting_endpoints_to_the_next_by_priority() {
    let refusing = Endpoint::start("fail");
    let silent = Endpoint::start("hang");
    let resetting = Endpoint::start("reset");
    let working = Endpoint::start("ok");
    let dir = tempfile::tempdir().unwrap();
    // Written out of order: priority decides, not position.
    let replicas = format!(
        "      - {{type: endpoint, url: '{}', priority: 3}}\n      - {{type: endpoint, url: '{}', priority: 0, headers: {{X-Api-Key: secret-key}}}}\n      - {{type: endpoint, url: '{}', priority: 2}}\n      - {{type: endpoint, url: '{}', priority: 1}}\n",
        working.url(),
        refusing.url(),
        resetting.url(),
        silent.url()
    );
    let fdl = slow_fdl(dir.path(), &replicas, "");
    let (c, origin) = origin_with(&fdl);

    let inputs = all_succeed(&origin, &c, 4);

    let ran: Vec<(String, String)> = working.seen("ran");
    let delegated = ran.len();
    assert!(delegated >= 1, "nothing spilled:\n{}", c.log());
    let remote: Vec<String> = ran.iter().map(|(_, rest)| input_of(rest)).collect();
    assert_each_ran_once(&inputs, &local_outputs(&origin), &remote);
    // The working endpoint fetched each input through its presigned URL and got the bytes.
    for (_, rest) in &ran {
        assert!(rest.contains("FROM THE CAMERA"), "{rest}");
    }
    // Each delegated job was tried on every replica above the working one, in priority order,
    // and only the working one ran it.
    let jobs = |seen: Vec<(String, String)>| {
        let mut j: Vec<String> = seen.into_iter().map(|(j, _)| j).collect();
        j.sort();
        j
    };
    let mut ran_jobs = jobs(ran.clone());
    ran_jobs.dedup();
    assert_eq!(ran_jobs.len(), delegated, "a job ran twice on the endpoint");
    assert_eq!(jobs(refusing.seen("refused")), ran_jobs);
    assert_eq!(jobs(silent.seen("received")), ran_jobs);
    assert_eq!(jobs(resetting.seen("received")), ran_jobs);
    assert!(refusing.seen("bad-idempotency-key").is_empty());
    // Each job carries its id as the trace id of a W3C traceparent to every replica it was
    // tried on, with a parent id of each attempt's own: one trace across the tiers.
    for endpoint in [&refusing, &silent, &resetting, &working] {
        assert!(
            endpoint.seen("bad-traceparent").is_empty(),
            "{:?}",
            endpoint.seen("bad-traceparent")
        );
    }
    for job in &ran_jobs {
        let parents: std::collections::BTreeSet<String> =
            [&refusing, &silent, &resetting, &working]
                .iter()
                .flat_map(|e| e.seen("traceparent"))
                .filter(|(j, _)| j == job)
                .map(|(_, parent)| parent)
                .collect();
        assert_eq!(parents.len(), 4, "{job}: {parents:?}");
    }
    assert_eq!(replica_attempts(&c, "fell_through"), 3 * delegated as u64);
    assert_eq!(replica_attempts(&c, "succeeded"), delegated as u64);
    // The replica's header value is a credential: never in the log.
    assert!(!c.log().contains("secret-key"));
    // Where each delegated job ran is on record.
    let rows = c.json(&["get", "jobs"]);
    let on_endpoint = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ran_on"] == format!("endpoint:{}", working.url()))
        .count();
    assert_eq!(on_endpoint, delegated, "{rows}");
}

#[test]
fn a_lost_answer_from_an_endpoint_that_ran_the_job_is_reconciled_not_sent_elsewhere() {
    let ran_then_reset = Endpoint::start("run-then-reset");
    let next = Endpoint::start("ok");
    let dir = tempfile::tempdir().unwrap();
    let replicas = format!(
        "      - {{type: endpoint, url: '{}', priority: 0}}\n      - {{type: endpoint, url: '{}', priority: 1}}\n",
        ran_then_reset.url(),
        next.url()
    );
    let fdl = slow_fdl(dir.path(), &replicas, "");
    let (c, origin) = origin_with(&fdl);

    let inputs = all_succeed(&origin, &c, 3);
    let ran = ran_then_reset.seen("ran");
    assert!(!ran.is_empty(), "nothing spilled:\n{}", c.log());
    let remote: Vec<String> = ran.iter().map(|(_, rest)| input_of(rest)).collect();
    assert_each_ran_once(&inputs, &local_outputs(&origin), &remote);
    assert!(
        next.seen("ran").is_empty(),
        "a job whose answer was lost ran again on the next replica"
    );
    assert_eq!(replica_attempts(&c, "fell_through"), 0);
    assert!(replica_attempts(&c, "reconciled") >= ran.len() as u64);
}

#[test]
fn the_runner_behind_an_endpoint_runs_the_script_and_its_outputs_reach_the_origin() {
    let runner = Endpoint::start("runner");
    let dir = tempfile::tempdir().unwrap();
    let replicas = format!(
        "      - {{type: endpoint, url: '{}', priority: 0}}\n",
        runner.url()
    );
    let fdl = slow_fdl(dir.path(), &replicas, "");
    let (c, origin) = origin_with(&fdl);

    let inputs = all_succeed(&origin, &c, 4);
    let started = runner.seen("started");
    assert!(!started.is_empty(), "nothing spilled:\n{}", c.log());
    assert_every_output_at_origin(&origin, &inputs);
    assert_eq!(replica_attempts(&c, "succeeded"), started.len() as u64);
}

/// `curl` with basic auth or a bearer token: (status, body).
fn curl(auth: &[&str], method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
        .args(auth);
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

/// The remote "cluster" of the OSCAR tests: a coordinator with one roomy agent `worker` running
/// the OSCAR service `remote` (upper-cases `delegated/in` into `delegated/out`).
fn remote_cluster() -> (Coordinator, Node, tempfile::TempDir) {
    let remote = Coordinator::new();
    let worker = Node::new("node_name = \"worker\"\n[resources]\ncpu = 4\nmemory = \"1Gi\"\n");
    remote.join(&worker);
    let mut worker = worker;
    worker.start();
    let rdir = tempfile::tempdir().unwrap();
    std::fs::write(
        rdir.path().join("remote.sh"),
        "#!/bin/sh\nset -eu\nname=$(basename \"$INPUT_FILE_PATH\")\ntr 'a-z' 'A-Z' < \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/$name\"\n",
    )
    .unwrap();
    std::fs::write(
        rdir.path().join("remote.yaml"),
        "functions:\n  oscar:\n  - remote-cluster:\n      name: remote\n      runtime: process\n      script: remote.sh\n      input:\n      - {storage_provider: minio.default, path: delegated/in}\n      output:\n      - {storage_provider: minio.default, path: delegated/out}\n",
    )
    .unwrap();
    let (ok, _, err) = remote.cli(&[
        "apply",
        "-f",
        rdir.path().join("remote.yaml").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(wait_until(Duration::from_secs(30), || remote.runs("worker", "remote")));
    (remote, worker, rdir)
}

/// The outputs the remote cluster's worker wrote for delegated frames.
fn remote_outputs(worker: &Node) -> Vec<String> {
    files_under(&worker.path("data/delegated/out"))
        .into_iter()
        .filter(|f| f.starts_with("frame-"))
        .collect()
}

#[test]
fn surplus_delegates_to_another_coordinator_through_the_oscar_api_and_runs_there_once() {
    let (remote, worker, _rdir) = remote_cluster();
    let base = format!("http://127.0.0.1:{}", remote.http_port);
    let admin = remote.api_token();
    let basic = format!("oscar:{admin}");

    // OSCAR's API as oscar-cli and OSCAR's delegation use it.
    let (status, body) = curl(
        &["-u", &basic],
        "GET",
        &format!("{base}/system/services/remote"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let service: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(service["name"], "remote");
    assert!(service["script"].as_str().unwrap().contains("tr 'a-z'"));
    let token = service["token"].as_str().unwrap().to_owned();
    let (status, _) = curl(
        &["-u", "oscar:wrong"],
        "GET",
        &format!("{base}/system/services"),
        None,
    );
    assert_eq!(status, 401);
    let (status, body) = curl(
        &["-u", &basic],
        "GET",
        &format!("{base}/system/status"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["cluster"]["nodes_count"],
        1
    );
    // The service token invokes its own service only.
    let bearer = format!("Authorization: Bearer {token}");
    let (status, body) = curl(
        &["-H", &bearer],
        "POST",
        &format!("{base}/job/remote?name=direct.txt"),
        // "direct call", base64-encoded as OSCAR's clients send it.
        Some("ZGlyZWN0IGNhbGw="),
    );
    assert_eq!(status, 202, "{body}");
    let (status, _) = curl(
        &["-H", &bearer],
        "GET",
        &format!("{base}/system/services"),
        None,
    );
    assert_eq!(status, 401);
    assert!(wait_until(Duration::from_secs(30), || {
        worker.path("data/delegated/out/direct.txt").exists()
    }));

    // The origin's coordinator delegates its surplus to `remote` as an OSCAR replica, with the
    // cluster's credentials in the FDL as OSCAR users write them.
    let dir = tempfile::tempdir().unwrap();
    let clusters = format!(
        "clusters:\n  remote-cluster:\n    endpoint: '{base}'\n    auth_user: oscar\n    auth_password: '{admin}'\n    ssl_verify: true\n"
    );
    let fdl = slow_fdl(
        dir.path(),
        "      - {type: oscar, cluster_id: remote-cluster, service_name: remote, priority: 0}\n",
        &clusters,
    );
    let (c, origin) = origin_with(&fdl);
    let inputs = all_succeed(&origin, &c, 4);

    let remote_outputs = remote_outputs(&worker);
    assert!(
        !remote_outputs.is_empty(),
        "nothing delegated:\n{}",
        c.log()
    );
    assert_each_ran_once(&inputs, &local_outputs(&origin), &remote_outputs);
    for f in &remote_outputs {
        let text =
            std::fs::read_to_string(worker.path(&format!("data/delegated/out/{f}"))).unwrap();
        assert!(text.contains("FROM THE CAMERA"), "{text}");
    }
    // The remote lists the delegated jobs under the names the origin's coordinator gave them.
    let (status, body) = curl(
        &["-u", &basic],
        "GET",
        &format!("{base}/system/logs/remote"),
        None,
    );
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let delegated: Vec<&String> = listed["jobs"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("spillway-"))
        .collect();
    assert_eq!(delegated.len(), remote_outputs.len(), "{listed}");
    assert_eq!(
        replica_attempts(&c, "succeeded"),
        remote_outputs.len() as u64
    );
    // A password written in the FDL stays out of the logs.
    assert!(!c.log().contains(&admin));
}

/// A coordinator whose replica requests time out after 2 s, with `config` added to its
/// configuration, and an origin running the slow function with `replicas` (written into `dir`).
fn origin_configured(dir: &std::path::Path, replicas: &str, config: &str) -> (Coordinator, Node) {
    let fdl = slow_fdl(dir, replicas, "");
    origin_under(
        &format!("max_hops = 6\n[replicas]\ntimeout = \"2s\"\n{config}"),
        &fdl,
    )
}

/// A coordinator whose `[aws]` points at `endpoint` with these keys, and an origin running the
/// slow function with `replicas`.
fn origin_with_aws(dir: &std::path::Path, replicas: &str, aws: &str) -> (Coordinator, Node) {
    origin_configured(dir, replicas, &format!("[aws]\n{aws}"))
}

/// The slow function with moto's Lambda function `fire` (invoked with moto's access key and
/// `secret`) first and an `ok` endpoint next; the endpoint, the FDL's folder, the coordinator and
/// the origin.
fn lambda_before_endpoint(
    moto: &support::s3::Moto,
    secret: &str,
) -> (Endpoint, tempfile::TempDir, Coordinator, Node) {
    let next = Endpoint::start("ok");
    let dir = tempfile::tempdir().unwrap();
    let replicas = format!(
        "      - {{type: lambda, function_name: fire, priority: 0}}\n      - {{type: endpoint, url: '{}', priority: 1}}\n",
        next.url()
    );
    let aws = format!(
        "endpoint_url = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{secret}\"\n",
        moto.endpoint(),
        moto.access_key
    );
    let (c, origin) = origin_with_aws(dir.path(), &replicas, &aws);
    (next, dir, c, origin)
}

/// Lambda's `Invoke` API is moto's (signatures checked); its answers are queued by the test.
#[test]
fn a_lambda_that_stops_jobs_at_its_time_limit_spills_them_to_the_next_replica_lambda_batch_style() {
    let moto = support::s3::Moto::start();
    moto.lambda_function("fire");
    let stopped =
        r#"{"status":"stopped","reason":"stopped after 3s, at the executor's own time limit"}"#;
    moto.queue_lambda_results(&vec![stopped.to_owned(); 30]);
    let (next, _dir, c, origin) = lambda_before_endpoint(&moto, &moto.secret_key);

    let inputs = all_succeed(&origin, &c, 4);
    let ran = next.seen("ran");
    assert!(!ran.is_empty(), "nothing spilled:\n{}", c.log());
    let remote: Vec<String> = ran.iter().map(|(_, rest)| input_of(rest)).collect();
    assert_each_ran_once(&inputs, &local_outputs(&origin), &remote);
    // Each went to Lambda first (signed correctly: a refusal would say so) and moved on.
    assert!(
        c.log().contains("stopped the job unfinished"),
        "{}",
        c.log()
    );
    assert!(!c.log().contains("SignatureDoesNotMatch"), "{}", c.log());
    // The first jobs go to Lambda (the first tier) and fall through; once the endpoint has
    // been measured faster than Lambda is assumed to be, the placement core may send later
    // ones straight there.
    assert_fell_through_for_some(&c, ran.len());
}

#[test]
fn a_lambda_invoke_with_a_wrong_secret_is_refused_by_signature_and_falls_through() {
    let moto = support::s3::Moto::start();
    moto.lambda_function("fire");
    let (next, _dir, c, origin) = lambda_before_endpoint(&moto, "not-the-secret");

    all_succeed(&origin, &c, 3);
    let ran = next.seen("ran");
    assert!(!ran.is_empty(), "nothing spilled:\n{}", c.log());
    assert!(c.log().contains("SignatureDoesNotMatch"), "{}", c.log());
    assert_eq!(replica_attempts(&c, "succeeded"), ran.len() as u64);
}

#[test]
fn the_runner_as_a_lambda_bootstrap_runs_invoked_jobs_and_their_outputs_reach_the_origin() {
    let lambda = support::lambda::LambdaEmulator::start("spillway", 1);
    let dir = tempfile::tempdir().unwrap();
    let replicas = "      - {type: lambda, function_name: spillway, priority: 0}\n";
    let aws = format!(
        "endpoint_url = \"{}\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"emulator-does-not-check\"\n",
        lambda.endpoint()
    );
    let (c, origin) = origin_with_aws(dir.path(), replicas, &aws);

    let inputs = all_succeed(&origin, &c, 4);
    let on_lambda = replica_attempts(&c, "succeeded");
    assert!(on_lambda > 0, "nothing spilled:\n{}", c.log());
    assert_every_output_at_origin(&origin, &inputs);
}

/// `[kubernetes.edge]` for the emulator: a namespace, service account, pull secret, node
/// selector and TTL to see in every Job, and the built agent as the runner the init container
/// copies (the kubelet stand-in runs commands on this machine).
fn kube_cluster(kube: &support::kube::KubeEmulator) -> String {
    format!(
        "[kubernetes.edge]\nkubeconfig = \"{}\"\nnamespace = \"spillway-jobs\"\nservice_account = \"spillway-runner\"\nimage_pull_secrets = [\"regcred\"]\nnode_selector = {{ \"kubernetes.io/arch\" = \"arm64\" }}\nttl_seconds_after_finished = 120\nrunner_image = \"registry.local/spillway-agent:test\"\nrunner_path = \"{}\"\n",
        kube.kubeconfig().display(),
        support::bin("spillway-agent").display()
    )
}

/// The Job every kubernetes replica makes: named from the job id, never retried by
/// Kubernetes, the runner copied in by an init container and run by the function's image with
/// the envelope, resources from the FDL, and the cluster's settings.
fn assert_job_manifest(job: &serde_json::Value, runner: &str) {
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("spillway-") && name.len() == "spillway-".len() + 32,
        "{name}"
    );
    assert_eq!(job["metadata"]["namespace"], "spillway-jobs");
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["ttlSecondsAfterFinished"], 120);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], "spillway-runner");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/arch"], "arm64");
    let init = &pod["initContainers"][0];
    assert_eq!(init["image"], "registry.local/spillway-agent:test");
    assert_eq!(
        init["command"],
        serde_json::json!([runner, "install-runner", "/spillway/spillway-agent"])
    );
    let function = &pod["containers"][0];
    assert_eq!(function["image"], "docker.io/library/debian:bookworm-slim");
    assert_eq!(function["command"][0], "/spillway/spillway-agent");
    assert_eq!(function["command"][1], "run-job");
    assert_eq!(function["resources"]["limits"]["cpu"], "1000m");
    assert_eq!(function["resources"]["limits"]["memory"], "16777216");
    assert_eq!(function["env"][0]["name"], "SPILLWAY_ENVELOPE");
    let envelope: serde_json::Value =
        serde_json::from_str(function["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        format!("spillway-{}", envelope["job"].as_str().unwrap()),
        name
    );
}

#[test]
fn surplus_runs_as_kubernetes_jobs_whose_runner_brings_the_outputs_back() {
    let mut kube = support::kube::KubeEmulator::start(None);
    kube.run_kubelet("spillway-jobs");
    let dir = tempfile::tempdir().unwrap();
    let replicas = "      - {type: kubernetes, cluster_id: edge, image: 'docker.io/library/debian:bookworm-slim', priority: 0}\n";
    // The function's variables and secrets go wherever it runs: on the node, and in the Jobs
    // (variables in the envelope, secrets through a Secret the Job takes as `envFrom`).
    let fdl = slow_fdl(dir.path(), replicas, "");
    let text = std::fs::read_to_string(&fdl).unwrap().replace(
        "      replicas:\n",
        "      environment:\n        variables: {GREETING: hello}\n        secrets: {TOKEN: s3cr3t}\n      replicas:\n",
    );
    std::fs::write(&fdl, text).unwrap();
    let script = std::fs::read_to_string(dir.path().join("slow.sh")).unwrap();
    std::fs::write(
        dir.path().join("slow.sh"),
        format!("{script}echo \"$GREETING $TOKEN\" >> \"$TMP_OUTPUT_DIR/$name\"\n"),
    )
    .unwrap();
    let (c, origin) = origin_under(
        &format!(
            "max_hops = 6\n[replicas]\ntimeout = \"2s\"\n{}",
            kube_cluster(&kube)
        ),
        &fdl,
    );

    let inputs = all_succeed(&origin, &c, 4);
    assert_every_output_at_origin(&origin, &inputs);
    for input in &inputs {
        let out = std::fs::read_to_string(origin.path(&format!("data/frames/out/{input}")))
            .unwrap_or_default();
        assert!(out.ends_with("hello s3cr3t\n"), "{input}: {out:?}");
    }
    let secrets = kube.secrets("spillway-jobs");
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let secret_name = secrets[0]["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(secret_name.starts_with("spillway-slow-"), "{secret_name}");
    assert_eq!(
        secrets[0]["metadata"]["labels"]["spillway.io/function"],
        "slow"
    );
    assert_eq!(secrets[0]["immutable"], true);
    let jobs = kube.jobs();
    assert!(!jobs.is_empty(), "nothing spilled:\n{}", c.log());
    let runner = support::bin("spillway-agent").display().to_string();
    let mut names: Vec<&str> = Vec::new();
    for (job, code) in &jobs {
        assert_eq!(*code, 0, "{job}");
        assert_job_manifest(job, &runner);
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["envFrom"][0]["secretRef"]["name"], secret_name);
        assert!(
            !job.to_string().contains("s3cr3t"),
            "a secret's value in a Job: {job}"
        );
        names.push(job["metadata"]["name"].as_str().unwrap());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), jobs.len(), "a job ran twice");
    assert_eq!(replica_attempts(&c, "succeeded"), jobs.len() as u64);
    // The kubeconfig's token is a credential: never in the log.
    assert!(!c.log().contains("emulator-token"));
}

#[test]
fn an_unreachable_kubernetes_api_passes_the_surplus_to_the_next_replica() {
    // A kubeconfig naming a port where no API server listens any more.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let kube = support::kube::KubeEmulator::start(None);
    std::fs::copy(kube.kubeconfig(), &kubeconfig).unwrap();
    drop(kube);
    let next = Endpoint::start("ok");
    let replicas = format!(
        "      - {{type: kubernetes, cluster_id: gone, image: 'busybox', priority: 0}}\n      - {{type: endpoint, url: '{}', priority: 1}}\n",
        next.url()
    );
    let config = format!(
        "[kubernetes.gone]\nkubeconfig = \"{}\"\nrunner_image = \"registry.local/spillway-agent:test\"\n",
        kubeconfig.display()
    );
    let (c, origin) = origin_configured(dir.path(), &replicas, &config);

    all_succeed(&origin, &c, 3);
    let ran = next.seen("ran");
    assert!(!ran.is_empty(), "nothing spilled:\n{}", c.log());
    // The first job tries Kubernetes (the first tier) and falls through; later ones may go
    // straight to the endpoint once it is measured faster than Kubernetes is assumed to be.
    assert_fell_through_for_some(&c, ran.len());
}

#[test]
fn a_job_whose_pod_fails_before_its_runner_reports_fails_with_the_jobs_reason_and_runs_nowhere_else()
 {
    let mut kube = support::kube::KubeEmulator::start(None);
    kube.run_kubelet("spillway-jobs");
    let next = Endpoint::start("ok");
    let dir = tempfile::tempdir().unwrap();
    let replicas = format!(
        "      - {{type: kubernetes, cluster_id: edge, image: 'busybox', priority: 0}}\n      - {{type: endpoint, url: '{}', priority: 1}}\n",
        next.url()
    );
    // The runner image does not hold the runner where the config says: the init container fails.
    let config = kube_cluster(&kube).replace(
        &support::bin("spillway-agent").display().to_string(),
        "/nonexistent/spillway-agent",
    );
    let (c, origin) = origin_configured(dir.path(), &replicas, &config);

    let inputs = burst(&origin, 3);
    let states = all_finished(&origin, &c, inputs.len());
    let jobs = kube.jobs();
    assert!(!jobs.is_empty(), "nothing spilled:\n{}", c.log());
    assert_eq!(states.get("Failed"), Some(&jobs.len()), "{states:?}");
    assert!(
        c.log().contains("InitContainerFailed"),
        "the Job's reason is not in the log:\n{}",
        c.log()
    );
    // The function may have started there: the job is not sent on.
    assert!(next.seen("ran").is_empty());
    assert_eq!(replica_attempts(&c, "fell_through"), 0);
}

/// The issue's whole continuum in one FDL: a Kubernetes cluster with room for one Job (a
/// `count/jobs.batch` quota), a Lambda function too short for the job (it stops every run at
/// its time limit, lambda-batch style), an endpoint with room for one job, and an OSCAR
/// cluster. The surplus goes down that list in priority order; each job runs exactly once.
#[test]
fn surplus_goes_down_kubernetes_lambda_endpoint_and_oscar_replicas_in_priority_order() {
    let mut kube = support::kube::KubeEmulator::start(Some(1));
    kube.run_kubelet("spillway-jobs");
    let moto = support::s3::Moto::start();
    moto.lambda_function("fire");
    let stopped = r#"{"status":"stopped","reason":"stopped at the Lambda's time limit"}"#;
    moto.queue_lambda_results(&vec![stopped.to_owned(); 30]);
    let endpoint = Endpoint::start("runner-once");
    let (remote, worker, _rdir) = remote_cluster();

    let dir = tempfile::tempdir().unwrap();
    // Written out of order: priority decides.
    let replicas = format!(
        "      - {{type: oscar, cluster_id: remote-cluster, service_name: remote, priority: 3}}\n      - {{type: lambda, function_name: fire, priority: 1}}\n      - {{type: kubernetes, cluster_id: edge, image: 'docker.io/library/debian:bookworm-slim', priority: 0}}\n      - {{type: endpoint, url: '{}', priority: 2}}\n",
        endpoint.url()
    );
    let clusters = format!(
        "clusters:\n  remote-cluster:\n    endpoint: 'http://127.0.0.1:{}'\n    auth_user: oscar\n    auth_password: '{}'\n",
        remote.http_port,
        remote.api_token()
    );
    let fdl = slow_fdl(dir.path(), &replicas, &clusters);
    let config = format!(
        "max_hops = 8\n[replicas]\ntimeout = \"2s\"\n[aws]\nendpoint_url = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{}",
        moto.endpoint(),
        moto.access_key,
        moto.secret_key,
        kube_cluster(&kube)
    );
    let (c, origin) = origin_under(&config, &fdl);

    let inputs = all_succeed(&origin, &c, 6);
    let on_kube = kube.jobs().len();
    let on_endpoint = endpoint.seen("started").len();
    let on_oscar = remote_outputs(&worker);
    let delegated = on_kube + on_endpoint + on_oscar.len();
    assert!(
        delegated >= 3,
        "only {delegated} jobs spilled, too few to reach the OSCAR tier:\n{}",
        c.log()
    );
    // Kubernetes and the endpoint took one each; Lambda stopped every run; OSCAR took the rest.
    assert_eq!((on_kube, on_endpoint), (1, 1), "{}", c.log());
    assert_eq!(on_oscar.len(), delegated - 2);
    // The Kubernetes Job's and the endpoint runner's outputs came back to the origin; OSCAR's
    // stay in the remote cluster's storage, as OSCAR's delegation has it.
    let mut came_back = local_outputs(&origin);
    came_back.retain(|f| !on_oscar.contains(f));
    assert_each_ran_once(&inputs, &came_back, &on_oscar);
    // Every job past Kubernetes went down the list in order: refused by the quota, stopped by
    // Lambda, refused by the full endpoint (all but the one it ran), taken by OSCAR.
    assert_eq!(
        replica_attempts(&c, "fell_through"),
        (3 * delegated - 4) as u64,
        "{}",
        c.log()
    );
    assert!(c.log().contains("exceeded quota"), "{}", c.log());
    let rows = c.json(&["get", "jobs"]);
    let ran_on = |prefix: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["ran_on"].as_str().is_some_and(|s| s.starts_with(prefix)))
            .count()
    };
    assert_eq!(ran_on("kubernetes:edge"), 1, "{rows}");
    assert_eq!(ran_on("endpoint:"), 1, "{rows}");
    assert_eq!(
        ran_on("oscar:remote-cluster/remote"),
        on_oscar.len(),
        "{rows}"
    );
    assert_eq!(ran_on("lambda:"), 0, "{rows}");
}

/// At least one job fell through from the first replica to the endpoint, and no more than the
/// `on_endpoint` jobs that ran there: once the endpoint is measured faster than the first
/// replica is assumed to be, the placement core may send later jobs straight to it.
fn assert_fell_through_for_some(c: &Coordinator, on_endpoint: usize) {
    let fallthroughs = replica_attempts(c, "fell_through");
    assert!(
        (1..=on_endpoint as u64).contains(&fallthroughs),
        "{fallthroughs} fall-throughs for {on_endpoint} jobs on the endpoint\n{}",
        c.log()
    );
}
