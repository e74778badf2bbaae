//! Test harness: real `spillway-agent` processes on temporary nodes.

#![allow(dead_code)]

pub mod board;
pub mod containers;
pub mod kube;
pub mod lambda;
pub mod mqtt;
pub mod netns;
pub mod oci;
pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A workspace binary, built on demand when this crate's tests run on their own.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe.parent().and_then(Path::parent).expect("target dir");
    let path = target.join(name);
    if !path.exists() {
        build_binaries(&[]);
    }
    path
}

/// Builds the release binaries of this tree, for benchmarks (an older build would measure
/// older code); `bin` then finds them next to the bench executable.
pub fn build_release_binaries() {
    build_binaries(&["--release"]);
}

/// `cargo build [extra] -p spillway-agent -p spillway-cli` in this tree.
fn build_binaries(extra: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .arg("build")
        .args(extra)
        .args(["-p", "spillway-agent", "-p", "spillway-cli"])
        .current_dir(repo(""))
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the binaries failed ({extra:?})");
}

/// Runs `cmd`, fails the test with its stderr unless it succeeds, and returns its stdout.
pub fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary node: its config, data root and state dir.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub banner: Vec<String>,
    /// The network namespace the agent runs in (a separate host), if any.
    pub netns: Option<String>,
    /// Extra environment of the agent process.
    pub env: Vec<(String, String)>,
    /// Its output lines, until the banner ends (in a mutex: a node is shared across threads).
    lines: Option<std::sync::Mutex<mpsc::Receiver<String>>>,
}

/// `program`, run inside `netns` when one is given.
pub fn command_in(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Node {
    /// A node whose `agent.toml` is `config` plus the standard paths.
    pub fn new(config: &str) -> Self {
        Self::new_named("spillway-node", config)
    }

    /// Like `new`, in a folder whose name starts with `prefix` (odd characters included).
    pub fn new_named(prefix: &str, config: &str) -> Self {
        Self::bare(
            prefix,
            &format!("data_root = \"data\"\nstate_dir = \"state\"\n{config}"),
        )
    }

    /// A node whose `agent.toml` is `config` as it is (it names its own paths).
    pub fn bare(prefix: &str, config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("agent.toml"), config).expect("write config");
        Self {
            dir,
            child: None,
            banner: Vec::new(),
            netns: None,
            env: Vec::new(),
            lines: None,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    /// Starts the agent and waits for its start-up banner to end.
    pub fn start(&mut self) {
        self.spawn();
        let rx = self
            .lines
            .take()
            .expect("spawned")
            .into_inner()
            .expect("lines");
        self.banner.clear();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "agent did not start; its log:\n{}",
                        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
                    )
                });
            let done = line.starts_with("Job logs:");
            self.banner.push(line);
            if done {
                break;
            }
        }
    }

    /// Starts the agent without waiting for anything (it may not be the agent that runs).
    pub fn spawn(&mut self) {
        let mut child = command_in(self.netns.as_deref(), &bin("spillway-agent"))
            .arg("--config")
            .arg(self.path("agent.toml"))
            .arg("run")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SPILLWAY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.path("agent.log");
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log");
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.lines = Some(std::sync::Mutex::new(rx));
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running agent");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        c.wait().expect("wait")
    }

    pub fn agent_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = command_in(self.netns.as_deref(), &bin("spillway-agent"))
            .arg("--config")
            .arg(self.path("agent.toml"))
            .args(args)
            .output()
            .expect("run cli");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `spillway-agent jobs`, one row per finished job.
    pub fn jobs(&self) -> Vec<String> {
        let (ok, out, err) = self.agent_cli(&["jobs"]);
        assert!(ok, "jobs failed: {err}");
        out.lines().map(str::to_owned).collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A free loopback port for both TCP and UDP (bound, then released: good enough for tests).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `spillway serve` with `config` (a coordinator.toml in a fresh folder) must refuse to start
/// and create no state: returns what it said.
pub fn serve_refuses(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("coordinator.toml");
    std::fs::write(&path, format!("state_dir = \"state\"\n{config}")).expect("config");
    let out = Command::new(bin("spillway"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("HOME", dir.path())
        .output()
        .expect("spillway serve");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "it started: {err}");
    assert!(
        !dir.path().join("state").exists(),
        "it made its state: {err}"
    );
    err
}

/// A real `spillway serve` process with its own state folder and ports.
pub struct Coordinator {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub quic_ip: String,
    pub quic_port: u16,
    pub http_port: u16,
    pub netns: Option<String>,
}

impl Coordinator {
    pub fn new() -> Self {
        Self::on(None, "127.0.0.1")
    }

    /// A coordinator inside `netns` (if given), taking agents on `quic_ip`.
    pub fn on(netns: Option<&str>, quic_ip: &str) -> Self {
        Self::configured(netns, quic_ip, "", "")
    }

    /// A coordinator on loopback whose config also has `extra` (top-level keys, then sections).
    pub fn with_config(extra: &str) -> Self {
        Self::configured(None, "127.0.0.1", extra, "")
    }

    /// A coordinator on loopback with `http` lines added to its `[http]` section.
    pub fn with_http(http: &str) -> Self {
        Self::configured(None, "127.0.0.1", "", http)
    }

    /// A coordinator in `netns` (if given) on `quic_ip`, with `extra` (top-level keys, then
    /// sections) and `http` (lines of `[http]`) in its config.
    pub fn configured(netns: Option<&str>, quic_ip: &str, extra: &str, http: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (quic_port, http_port) = (free_port(), free_port());
        // Plain HTTP on loopback, asked for (curl, webhooks and replicas' runners speak to it);
        // tests of HTTPS say `tls` themselves.
        let plain = if http.contains("tls") || http.contains("cert_file") {
            ""
        } else {
            "tls = \"off\"\n"
        };
        let text = format!(
            "state_dir = \"state\"\n{extra}\n[quic]\nlisten = \"{quic_ip}:{quic_port}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n{plain}{http}\n"
        );
        std::fs::write(dir.path().join("coordinator.toml"), text).expect("write config");
        let mut c = Self {
            dir,
            child: None,
            quic_ip: quic_ip.to_owned(),
            quic_port,
            http_port,
            netns: netns.map(str::to_owned),
        };
        c.start();
        c
    }

    pub fn quic(&self) -> String {
        format!("{}:{}", self.quic_ip, self.quic_port)
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("coordinator.log"))
            .expect("log");
        let child = command_in(self.netns.as_deref(), &bin("spillway"))
            .args(["serve", "--config"])
            .arg(self.dir.path().join("coordinator.toml"))
            .env("HOME", self.dir.path())
            .env("SPILLWAY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn coordinator");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(30), || {
            self.dir.path().join("state/client.toml").exists() && self.cli(&["get", "nodes"]).0
        });
        assert!(ready, "coordinator did not start:\n{}", self.log());
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("coordinator.log")).unwrap_or_default()
    }

    /// `spillway ARGS` against this coordinator: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = command_in(self.netns.as_deref(), &bin("spillway"))
            .arg("--client-config")
            .arg(self.dir.path().join("state/client.toml"))
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .expect("run spillway");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `spillway -o json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.cli(&all);
        assert!(ok, "spillway {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Waits up to `within` for job `id` (its full id) to have succeeded; whether it did.
    pub fn job_succeeded(&self, id: &str, within: Duration) -> bool {
        wait_until(within, || {
            self.json(&["get", "jobs"])
                .as_array()
                .into_iter()
                .flatten()
                .any(|j| j["id"] == id && j["phase"] == "Succeeded")
        })
    }

    /// Joins `node` with a fresh one-time token (the agent is not started).
    pub fn join(&self, node: &Node) {
        let (ok, out, err) = node.agent_cli(&[
            "join",
            "--coordinator",
            &self.quic(),
            "--token",
            &self.token(),
        ]);
        assert!(ok, "join failed: {out}{err}");
    }

    /// Joins `node` again under `name`, as an operator does for a node the mesh no longer
    /// takes: a token made for that name (`token create --node`), then `spillway-agent join`.
    pub fn join_again(&self, node: &Node, name: &str) {
        let (ok, token, err) = self.cli(&["token", "create", "--node", name]);
        assert!(ok, "token create --node {name}: {err}");
        let (ok, out, err) = node.agent_cli(&[
            "join",
            "--coordinator",
            &self.quic(),
            "--token",
            token.trim(),
        ]);
        assert!(ok, "join again: {out}{err}");
    }

    /// Whether `node` is Ready and runs `function`, as `get nodes` shows it.
    pub fn runs(&self, node: &str, function: &str) -> bool {
        let nodes = self.json(&["get", "nodes"]);
        nodes.as_array().into_iter().flatten().any(|n| {
            n["name"] == node
                && n["health"] == "Ready"
                && n["running"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|f| f == function))
        })
    }

    /// The API token, from the client config the coordinator wrote.
    pub fn api_token(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("state/client.toml"))
            .expect("client.toml");
        text.lines()
            .find_map(|l| l.strip_prefix("token = \""))
            .and_then(|t| t.strip_suffix('"'))
            .expect("token in client.toml")
            .to_owned()
    }

    /// `curl -X POST` of `body` to the API at `path` with `token` → (status, headers, body).
    pub fn post(&self, token: &str, path: &str, body: &str) -> (u16, String, String) {
        self.post_with(token, path, body, &[])
    }

    /// `post` of a JSON body.
    pub fn post_json(&self, token: &str, path: &str, body: &str) -> (u16, String, String) {
        self.post_with(token, path, body, &["-H", "Content-Type: application/json"])
    }

    fn post_with(
        &self,
        token: &str,
        path: &str,
        body: &str,
        extra: &[&str],
    ) -> (u16, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let headers = dir.path().join("headers");
        let mut curl = Command::new("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                "--data-binary",
                "@-",
                "-w",
                "\n%{http_code}",
                "-D",
            ])
            .arg(&headers)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(extra)
            .arg(format!("http://127.0.0.1:{}{path}", self.http_port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl (Debian package `curl`) must be installed");
        // Written from a thread: a server that answers before reading may leave it unread.
        let mut stdin = curl.stdin.take().expect("stdin");
        let body = body.to_owned();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(body.as_bytes());
        });
        let out = curl.wait_with_output().expect("curl");
        let _ = writer.join();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').expect("status line");
        (
            status.trim().parse().expect("status"),
            std::fs::read_to_string(headers)
                .unwrap_or_default()
                .to_ascii_lowercase(),
            body.to_owned(),
        )
    }

    /// `GET /metrics` (no token needed).
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args([
                "-sS",
                &format!("http://127.0.0.1:{}/metrics", self.http_port),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sum of the samples of `name` on `/metrics` that carry every label in `labels`
    /// (`None`: no such sample). See [`sample`].
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(&self.metrics(), name, labels)
    }

    pub fn token(&self) -> String {
        let (ok, out, err) = self.cli(&["token", "create", "--ttl", "10m"]);
        assert!(ok, "token create failed: {err}");
        out.trim().to_owned()
    }

    /// Whether `get jobs` lists the job for `input` (bucket/key) as Succeeded.
    pub fn has_succeeded(&self, input: &str) -> bool {
        let jobs = self.json(&["get", "jobs"]);
        jobs.as_array().is_some_and(|j| {
            j.iter()
                .any(|j| j["input"] == input && j["phase"] == "Succeeded")
        })
    }

    /// `node` as `get nodes -o json` shows it (`Null` when it is not listed).
    pub fn node_view(&self, node: &str) -> serde_json::Value {
        let nodes = self.json(&["get", "nodes"]);
        nodes
            .as_array()
            .and_then(|all| all.iter().find(|n| n["name"] == node))
            .cloned()
            .unwrap_or_default()
    }

    /// The health of `node` as `get nodes` shows it.
    pub fn health(&self, node: &str) -> Option<String> {
        self.node_view(node)["health"].as_str().map(str::to_owned)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The sum of the samples of `name` in an exposition that carry every label in `labels`, or
/// `None` when none does: `sample(text, "spillway_joins_total", &[("outcome", "refused")])`.
/// A quick reader for assertions; the metrics test parses whole expositions with Prometheus's
/// own parser.
#[allow(dead_code)]
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series_labels, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.rsplit_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let series: Vec<&str> = series_labels.split(',').collect();
        if wanted.iter().all(|w| series.contains(&w.as_str())) {
            let v: f64 = value.split(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Like [`sample`], for counters and gauges of whole numbers whose family may have no series
/// yet (a labelled family starts empty): 0 then, but a panic if the exposition does not declare
/// the family at all (a renamed metric must fail the test, not read as 0).
#[allow(dead_code)]
pub fn count(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let family = name.strip_suffix("_total").unwrap_or(name);
    assert!(
        text.contains(&format!("# TYPE {family} ")),
        "no {family} in the exposition:\n{text}"
    );
    sample(text, name, labels).map_or(0, |v| v as u64)
}

/// The FDL entry of `upper` (the mesh fixture's script): `texts/in` to `texts/out`. Tests put it
/// under `functions:\n  oscar:\n` with their own entries, and apply it with [`apply_fdl`].
#[allow(dead_code)]
pub const UPPER: &str = "  - edge:
      name: upper
      runtime: process
      script: upper.sh
      timeout: 30
      input: [{storage_provider: minio.default, path: texts/in}]
      output: [{storage_provider: minio.default, path: texts/out}]
";

/// Applies `fdl` (with the mesh fixture's `upper.sh` beside it) through the CLI.
#[allow(dead_code)]
pub fn apply_fdl(c: &Coordinator, fdl: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("functions.yaml"), fdl).expect("write FDL");
    std::fs::copy(
        repo("tests/fixtures/mesh/upper.sh"),
        dir.path().join("upper.sh"),
    )
    .expect("copy upper.sh");
    let path = dir.path().join("functions.yaml");
    let (ok, _, err) = c.cli(&["apply", path.to_str().expect("path")]);
    assert!(ok, "spillway apply: {err}");
}

/// Runs `cmd` with `input` on its standard input; its output, read whole.
#[allow(dead_code)]
pub fn with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}
