//! Hosts as network namespaces joined by a veth pair, for tests that cut links.

use std::process::Command;

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` command (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces, `c` (10.77.K.1) and `a` (10.77.K.2), on one veth link. Removed on drop.
pub struct Hosts {
    pub c: String,
    pub a: String,
    pub c_ip: String,
    a_if: String,
}

impl Hosts {
    pub fn new() -> Self {
        // Unique per test process and per test within it (tests run in parallel threads).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id() % 100_000 * 10 + n % 10;
        let k = id % 250 + 1;
        let (c, a) = (format!("spw{id}c"), format!("spw{id}a"));
        let (c_if, a_if) = (format!("spw{id}c0"), format!("spw{id}a0"));
        let hosts = Self {
            c: c.clone(),
            a: a.clone(),
            c_ip: format!("10.77.{k}.1"),
            a_if: a_if.clone(),
        };
        for ns in [&c, &a] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "link", "add", &c_if, "netns", &c, "type", "veth", "peer", "name", &a_if, "netns", &a,
        ]);
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("10.77.{k}.1/30"),
            "dev",
            &c_if,
        ]);
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("10.77.{k}.2/30"),
            "dev",
            &a_if,
        ]);
        ip(&["-n", &c, "link", "set", &c_if, "up"]);
        ip(&["-n", &a, "link", "set", &a_if, "up"]);
        hosts
    }

    /// Takes the link down (or brings it back up) on the agent's side.
    pub fn cut(&self, down: bool) {
        ip(&[
            "-n",
            &self.a,
            "link",
            "set",
            &self.a_if,
            if down { "down" } else { "up" },
        ]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.c, &self.a] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A folder served over plain HTTP (Python's http.server) on `ip:port` inside `netns`, as a
/// release mirror or an apt repository would be. Stopped on drop.
pub struct FolderServer(std::process::Child);

impl FolderServer {
    pub fn start(netns: &str, ip: &str, port: u16, folder: &std::path::Path) -> Self {
        let child = super::command_in(Some(netns), std::path::Path::new("python3"))
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                ip,
                "--directory",
            ])
            .arg(folder)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        Self(child)
    }
}

impl Drop for FolderServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
