//! What the benchmarks that run real processes share: release binaries, a `spillway serve` on
//! loopback, plain HTTP to its API, and a process's CPU time and RSS.

// A benchmark harness: a failure is a panic with the reason.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// The release binaries, built if missing.
pub fn release_bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "spillway-cli",
                "-p",
                "spillway-agent",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "release build failed");
    }
    path
}

pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map_or(out.clone(), |(_, b)| b.to_owned())
}

pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub quic: u16,
    pub http: u16,
    pub token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_coordinator() -> Server {
    start_coordinator_with("")
}

/// A coordinator whose config ends with `extra` (sections of their own).
pub fn start_coordinator_with(extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http_port) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("c.toml"),
        format!(
            "state_dir = \"state\"\n[quic]\nlisten = \"127.0.0.1:{quic}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\ntls = \"off\"\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(release_bin("spillway"))
        .args(["serve", "--config"])
        .arg(dir.path().join("c.toml"))
        .env("HOME", dir.path())
        .env("SPILLWAY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let token_file = dir.path().join("state/admin.token");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(token_file.exists() && std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok()) {
        assert!(Instant::now() < deadline, "coordinator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_owned();
    Server {
        child,
        dir,
        quic,
        http: http_port,
        token,
    }
}

pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `q` quantile of histogram `name` over what it observed between two scrapes, linearly
/// interpolated within the bucket it falls in (as Prometheus's `histogram_quantile`).
#[allow(dead_code)]
pub fn histogram_quantile(q: f64, before: &str, after: &str, name: &str) -> Option<f64> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.split(' ').next()?.parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, n)| {
            let was = b0.iter().find(|(l, _)| l == le).map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, cumulative) in delta {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = cumulative - below;
            return Some(lower + (le - lower) * ((rank - below) / inside.max(f64::MIN_POSITIVE)));
        }
        (lower, below) = (le, cumulative);
    }
    None
}

pub fn tokens(server: &Server, count: usize) -> Vec<String> {
    let body = format!("{{\"ttl_secs\":3600,\"description\":\"bench\",\"count\":{count}}}");
    let created: serde_json::Value = serde_json::from_str(&http(
        server.http,
        "POST",
        "/v1/tokens",
        &server.token,
        &body,
    ))
    .unwrap();
    let mut out = vec![created["token"].as_str().unwrap().to_owned()];
    out.extend(
        created["more"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t.as_str().unwrap().to_owned()),
    );
    out
}

/// A real agent, joined to a coordinator and running (as a board's init starts it).
pub struct Agent {
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM: the supervisor passes it on and its child stops cleanly.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

pub fn start_agent(server: &Server, name: &str, token: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!("node_name = \"{name}\"\ndata_root = \"d\"\nstate_dir = \"s\"\n"),
    )
    .unwrap();
    join_agent(server, &cfg, token);
    Agent {
        child: run_agent(&cfg),
        _dir: dir,
    }
}

/// `spillway-agent join` with `token`, for the agent of config `cfg`.
pub fn join_agent(server: &Server, cfg: &Path, token: &str) {
    let quic = format!("127.0.0.1:{}", server.quic);
    let ok = Command::new(release_bin("spillway-agent"))
        .arg("--config")
        .arg(cfg)
        .args(["join", "--coordinator", &quic, "--token", token])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "join failed");
}

/// `spillway-agent run` of config `cfg`, logging warnings only.
pub fn run_agent(cfg: &Path) -> Child {
    Command::new(release_bin("spillway-agent"))
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .env("SPILLWAY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}
