//! The binaries as systemd services: the notify protocol spoken to a real datagram socket the
//! test owns (as systemd's would be), the watchdog petted while the work loop runs, and the
//! installed unit checked by `systemd-analyze verify`.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Node, bin, repo};

/// A notify socket like systemd's, and everything said on it.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    heard: Vec<String>,
}

impl NotifySocket {
    fn new(dir: &std::path::Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            path,
            heard: Vec::new(),
        }
    }

    /// Listens until a message contains `what`, for at most `timeout`.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = text.lines().any(|l| l == what);
                self.heard.push(text);
                if found {
                    return true;
                }
            }
        }
        false
    }

    fn count(&self, what: &str) -> usize {
        self.heard
            .iter()
            .filter(|m| m.lines().any(|l| l == what))
            .count()
    }
}

/// Starts `program ARGS` as systemd would with `WatchdogSec=0.4s`: `WATCHDOG_PID` is the
/// program's own pid (the shell execs it).
fn spawn_as_service(program: &std::path::Path, args: &[&str], notify: &NotifySocket) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$@\"")
        .arg("sh")
        .arg(program)
        .args(args)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .env("SPILLWAY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    child.wait().unwrap()
}

#[test]
fn the_agent_says_when_it_is_ready_pets_the_watchdog_and_says_when_it_stops() {
    let node = Node::new("node_name = \"svc\"\n");
    let mut notify = NotifySocket::new(node.dir.path());
    let config = node.path("agent.toml");
    let mut agent = spawn_as_service(
        &bin("spillway-agent"),
        &["--config", config.to_str().unwrap(), "run"],
        &notify,
    );
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(30)),
        "{:?}",
        notify.heard
    );
    // 0.4 s watchdog: petted every 0.2 s while the engine goes round.
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(3)));
    std::thread::sleep(Duration::from_secs(1));
    notify.wait_for("never", Duration::from_millis(300));
    assert!(notify.count("WATCHDOG=1") >= 3, "{:?}", notify.heard);
    let status = sigterm(&mut agent);
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(5)));
    assert!(status.success(), "{status}");
}

#[test]
fn the_coordinator_says_when_it_is_ready_and_pets_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (support::free_port(), support::free_port());
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[quic]\nlisten = \"127.0.0.1:{quic}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n"
        ),
    )
    .unwrap();
    let mut notify = NotifySocket::new(dir.path());
    let mut coordinator = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$@\"")
        .arg("sh")
        .arg(bin("spillway"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(30)),
        "{:?}",
        notify.heard
    );
    assert!(notify.wait_for("WATCHDOG=1", Duration::from_secs(3)));
    sigterm(&mut coordinator);
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(5)));
}

#[test]
fn install_puts_binary_unit_and_config_in_place_and_systemd_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mine = dir.path().join("mine.toml");
    std::fs::write(&mine, "node_name = \"pi-kitchen\"\ndata_root = \"/var/lib/spillway/data\"\nstate_dir = \"/var/lib/spillway/state\"\n").unwrap();
    let out = Command::new(bin("spillway-agent"))
        .args(["--config", mine.to_str().unwrap(), "install", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = root.join("usr/local/bin/spillway-agent");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("spillway-agent "));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/spillway/agent.toml")).unwrap(),
        std::fs::read_to_string(&mine).unwrap(),
        "the --config file is what gets installed"
    );
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/spillway-agent.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(repo("configs/systemd/spillway-agent.service")).unwrap()
    );
    // systemd's own checker, on the unit pointed at the binary just installed.
    for (name, text) in [
        (
            "spillway-agent.service",
            unit.replace(
                "ExecStart=spillway-agent",
                &format!("ExecStart={}", installed.display()),
            ),
        ),
        (
            "spillway-coordinator.service",
            std::fs::read_to_string(repo("configs/systemd/spillway-coordinator.service"))
                .unwrap()
                .replace(
                    "ExecStart=spillway",
                    &format!("ExecStart={}", bin("spillway").display()),
                ),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let verify = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd)");
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    // Installing again keeps the config someone may have edited.
    std::fs::write(
        root.join("etc/spillway/agent.toml"),
        "node_name = \"edited\"\n",
    )
    .unwrap();
    let again = Command::new(bin("spillway-agent"))
        .args(["install", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept the existing"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/spillway/agent.toml")).unwrap(),
        "node_name = \"edited\"\n"
    );
}

/// The value of `key=` in a unit file's text (its last setting, as systemd reads it).
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_owned()
}

/// A hardened unit may write only where it says; the config shipped with it (or installed by
/// `spillway-agent install`) must keep its state there, or the service dies at its first write.
#[test]
fn the_shipped_configs_keep_their_state_where_the_shipped_units_may_write() {
    let unit =
        std::fs::read_to_string(repo("configs/systemd/spillway-coordinator.service")).unwrap();
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo("configs/coordinator.toml")).unwrap())
            .unwrap();
    let state_dir = config["state_dir"].as_str().unwrap();
    // DynamicUser: the user exists only while the service runs, and owns only its StateDirectory.
    assert_eq!(unit_setting(&unit, "DynamicUser"), "yes");
    assert_eq!(
        state_dir,
        format!("/var/lib/{}", unit_setting(&unit, "StateDirectory")),
        "configs/coordinator.toml's state_dir is not the unit's StateDirectory"
    );
    assert!(unit_setting(&unit, "ExecStart").contains("--config /etc/spillway/coordinator.toml"));

    let unit = std::fs::read_to_string(repo("configs/systemd/spillway-agent.service")).unwrap();
    let writable: Vec<String> = unit_setting(&unit, "ReadWritePaths")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    support::output(
        Command::new(bin("spillway-agent"))
            .args(["install", "--root"])
            .arg(dir.path()),
    );
    let installed: toml::Table = toml::from_str(
        &std::fs::read_to_string(dir.path().join("etc/spillway/agent.toml")).unwrap(),
    )
    .unwrap();
    for key in ["data_root", "state_dir"] {
        let path = std::path::Path::new(installed[key].as_str().unwrap());
        assert!(
            writable.iter().any(|w| path.starts_with(w)),
            "the installed agent.toml's {key} ({}) is outside the unit's ReadWritePaths {writable:?}",
            path.display()
        );
    }
}
