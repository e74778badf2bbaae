//! Real MQTT parts for tests: a Mosquitto broker on a loopback port, and Mosquitto's own
//! command-line clients to publish and subscribe (so the agent is checked against other
//! software's idea of MQTT, not its own).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{free_port, wait_until};

/// A `mosquitto` process with persistence, listening on 127.0.0.1 only. It stays root (`user
/// root`): as root it would otherwise switch to the `mosquitto` user, which cannot write the
/// test's temporary folder.
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with(
            tempfile::tempdir().expect("tempdir"),
            "allow_anonymous true\n",
        )
    }

    /// TLS with a test CA (`ca.crt` in `dir`, server certificate for 127.0.0.1) and one user,
    /// `edge` with password `secret`; anonymous clients are refused.
    pub fn start_secured() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let sh = |script: &str| {
            let out = Command::new("sh")
                .args(["-ec", script])
                .current_dir(d)
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj /CN=spillway-test-ca -days 1 2>/dev/null",
        );
        sh(
            "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null",
        );
        sh(
            "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile san.ext 2>/dev/null",
        );
        sh("mosquitto_passwd -b -c passwd edge secret 2>/dev/null");
        let extra = format!(
            "allow_anonymous false\npassword_file {0}/passwd\ncafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\n",
            d.display()
        );
        Self::start_with(dir, &extra)
    }

    fn start_with(dir: tempfile::TempDir, listener_settings: &str) -> Self {
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nper_listener_settings false\nlistener {port} 127.0.0.1\n{listener_settings}persistence true\npersistence_location {}/\nlog_dest file {}/mosquitto.log\nlog_type all\nmax_queued_messages 10000\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package `mosquitto`) must be installed");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "mosquitto did not start:\n{}",
            read(&dir.path().join("mosquitto.log"))
        );
        Self { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        read(&self.dir.path().join("mosquitto.log"))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Publishes each of `payloads` as one QoS 1 message on `topic` (`mosquitto_pub -l`).
pub fn publish(port: u16, topic: &str, payloads: &[&str]) {
    publish_as(port, &[], topic, payloads);
}

/// `publish` with more `mosquitto_pub` options (TLS, credentials).
pub fn publish_as(port: u16, options: &[&str], topic: &str, payloads: &[&str]) {
    let mut lines = Vec::new();
    for p in payloads {
        writeln!(lines, "{p}").expect("in memory");
    }
    mosquitto_pub(port, topic, &[options, &["-l"]].concat(), &lines);
}

/// Publishes one message whose payload is the content of `file` (`mosquitto_pub -f`).
pub fn publish_file(port: u16, topic: &str, file: &Path) {
    mosquitto_pub(
        port,
        topic,
        &["-f", file.to_str().expect("utf-8 path")],
        &[],
    );
}

/// Runs `mosquitto_pub` (QoS 1, on loopback) with `options`, feeding it `stdin`.
fn mosquitto_pub(port: u16, topic: &str, options: &[&str], stdin: &[u8]) {
    let port = port.to_string();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic])
        .args(options)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package `mosquitto-clients`) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write to mosquitto_pub");
    let out = child.wait_with_output().expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `mosquitto_sub` collecting `topic payload` lines.
pub struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    subscribed: Arc<Mutex<bool>>,
}

impl Subscriber {
    /// Subscribes and returns once the broker has acknowledged the subscription.
    pub fn start(port: u16, topic: &str) -> Self {
        Self::start_as(port, &[], topic)
    }

    /// `start` with more `mosquitto_sub` options (TLS, credentials, client id).
    pub fn start_as(port: u16, options: &[&str], topic: &str) -> Self {
        // `-d` prints the client's protocol steps ("Client … received SUBACK", "Subscribed …")
        // on stdout next to the messages: how the test knows the subscription is in place.
        // Line-buffered: into a pipe, mosquitto_sub would hold its output until it exits.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-d",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-v",
                "-t",
                topic,
            ])
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package `mosquitto-clients`) must be installed");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(false));
        let stdout = child.stdout.take().expect("stdout");
        let (sink, flag) = (lines.clone(), subscribed.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Subscribed (mid") {
                    *flag.lock().expect("flag") = true;
                } else if !line.starts_with("Client ") && !line.is_empty() {
                    sink.lock().expect("lines").push(line);
                }
            }
        });
        let sub = Self {
            child,
            lines,
            subscribed,
        };
        let ok = wait_until(Duration::from_secs(10), || {
            *sub.subscribed.lock().expect("flag")
        });
        assert!(ok, "mosquitto_sub did not subscribe to {topic}");
        sub
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The lines once there are `count` of them (or what came within `timeout`).
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<String> {
        wait_until(timeout, || self.lines().len() >= count);
        self.lines()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
