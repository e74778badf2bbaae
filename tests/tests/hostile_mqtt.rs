//! The embedded MQTT broker knows who is talking, with Mosquitto's own clients as the
//! strangers, the wrong passwords, the over-reaching users and the session hijackers: nobody
//! without credentials gets in, users reach only their topics, a client id never reaches
//! another principal's session, retained messages and payloads are bounded, removed users lose
//! their subscriptions, and a node's certificate reaches only its own functions' topics. The
//! agent's work goes on through all of it.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::mqtt::Subscriber;
use support::{Coordinator, Node, free_port, repo, wait_until};

const FIRE_FDL: &str = "configs/examples/fire-alert/functions.yaml";

/// Runs a Mosquitto client for at most 10 s; (exit status success, stdout + stderr).
fn mosquitto(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("10")
        .arg(program)
        .args(["-h", "127.0.0.1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (Debian package mosquitto-clients): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A client with `options` gets its subscription to `#` denied, and its publish to `topic`
/// (beyond its grants) refused.
fn reading_everything_and_publishing_to_is_refused(options: &[&str], topic: &str, payload: &str) {
    let (_, out) = mosquitto(
        "mosquitto_sub",
        &[options, &["-t", "#", "-C", "1", "-W", "3"]].concat(),
    );
    assert!(out.contains("denied"), "{options:?} read everything: {out}");
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        &[options, &["-q", "1", "-t", topic, "-m", payload]].concat(),
    );
    assert!(!ok, "{options:?} published to {topic}: {out}");
}

/// Publishes `reading` from camera `cam` with `camera`'s options and waits for its verdict.
fn reading_gets_its_verdict(
    camera: &[&str],
    alerts: &Subscriber,
    cam: &str,
    reading: &str,
) -> bool {
    let topic = format!("cameras/{cam}/frames");
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        &[camera, &["-q", "1", "-t", &topic, "-m", reading]].concat(),
    );
    assert!(ok, "{out}");
    let verdict = format!("alerts/fire {cam} FIRE {reading}");
    wait_until(Duration::from_secs(30), || {
        alerts.lines().contains(&verdict)
    })
}

/// Publishes `reading` from camera `cam1` every half second until its verdict reaches `alerts`
/// (the agent's subscription may not be in place yet), for at most `within`.
fn published_until_verdict(
    camera: &[&str],
    alerts: &Subscriber,
    reading: &str,
    within: Duration,
) -> bool {
    let verdict = format!("alerts/fire cam1 FIRE {reading}");
    wait_until(within, || {
        mosquitto(
            "mosquitto_pub",
            &[
                camera,
                &["-q", "1", "-t", "cameras/cam1/frames", "-m", reading],
            ]
            .concat(),
        );
        std::thread::sleep(Duration::from_millis(500));
        alerts.lines().contains(&verdict)
    })
}

/// A coordinator with a plain and a TLS MQTT listener, an agent proving itself there with its
/// mesh certificate and running the fire-alert function, and the passwords of a camera (may
/// publish frames) and of ops (may read alerts).
struct Edge {
    c: Coordinator,
    node: Node,
    plain: u16,
    tls: u16,
    camera: String,
    ops: String,
}

/// [`Edge`] with `before` (sections) and `mqtt` (lines of `[mqtt]`) in the coordinator's config.
fn edge_with_mesh_identity(before: &str, mqtt: &str) -> Edge {
    let (plain, tls) = (free_port(), free_port());
    let c = Coordinator::with_config(&format!(
        "{before}[mqtt]\nlisten = \"127.0.0.1:{plain}\"\ntls_listen = \"127.0.0.1:{tls}\"\n{mqtt}"
    ));
    let mut node = Node::new(&format!(
        "node_name = \"edge-1\"\n[mqtt]\nbroker = \"mqtts://127.0.0.1:{tls}\"\nmesh_identity = true\n"
    ));
    c.join(&node);
    node.start();
    let (ok, _, err) = c.cli(&["apply", "-f", repo(FIRE_FDL).to_str().unwrap()]);
    assert!(ok, "apply: {err}");
    let camera = add_user(&c, "camera", &["--publish", "cameras/+/frames"]);
    let ops = add_user(&c, "ops", &["--subscribe", "alerts/#"]);
    Edge {
        c,
        node,
        plain,
        tls,
        camera,
        ops,
    }
}

fn add_user(c: &Coordinator, name: &str, grants: &[&str]) -> String {
    let mut args = vec!["mqtt", "user", "add", name];
    args.extend_from_slice(grants);
    let (ok, out, err) = c.cli(&args);
    assert!(ok, "mqtt user add: {err}");
    out.trim().to_owned()
}

/// Converts the agent's DER identity to the PEM files mosquitto's clients read.
fn pem_identity(node: &Node) -> (String, String, String) {
    let id = node.path("state/identity");
    let convert = |kind: &str, from: &str, to: &str| {
        let out = Command::new("openssl")
            .args([kind, "-inform", "der", "-in"])
            .arg(id.join(from))
            .arg("-out")
            .arg(node.path(to))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        node.path(to).to_str().unwrap().to_owned()
    };
    (
        convert("x509", "ca.der", "ca.pem"),
        convert("x509", "node.der", "cert.pem"),
        convert("pkey", "node.key.der", "key.pem"),
    )
}

#[test]
fn strangers_wrong_passwords_hijackers_and_over_reaching_clients_are_refused_and_work_goes_on() {
    let Edge {
        c,
        node,
        plain,
        tls,
        camera,
        ops,
    } = edge_with_mesh_identity("", "max_retained = 2\nmax_payload = \"4Ki\"\n");
    let status = add_user(&c, "status", &["--publish", "status/#"]);
    let port = plain.to_string();
    let as_camera = ["-p", &port, "-u", "camera", "-P", &camera];

    // Strangers and wrong passwords do not get in.
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        &["-p", &port, "-t", "cameras/x/frames", "-m", "1"],
    );
    assert!(!ok && out.contains("not authorised"), "{out}");
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        &[
            "-p",
            &port,
            "-u",
            "camera",
            "-P",
            "guess",
            "-t",
            "cameras/x/frames",
            "-m",
            "1",
        ],
    );
    assert!(!ok && out.contains("bad user name or password"), "{out}");

    // The path that is granted works: a camera's frame becomes a verdict ops can read.
    let alerts = Subscriber::start_as(plain, &["-u", "ops", "-P", &ops], "alerts/fire");
    assert!(
        published_until_verdict(&as_camera, &alerts, "77", Duration::from_secs(40)),
        "{:?}\n{}\n{}",
        alerts.lines(),
        node.log(),
        c.log()
    );

    // Beyond its grants: the camera may not read anything, nor forge a verdict.
    reading_everything_and_publishing_to_is_refused(&as_camera, "alerts/fire", "forged FIRE 99");
    // Nor may ops widen its subscription past what it was given.
    let (_, out) = mosquitto(
        "mosquitto_sub",
        &[
            "-p",
            &port,
            "-u",
            "ops",
            "-P",
            &ops,
            "-t",
            "cameras/#",
            "-C",
            "1",
            "-W",
            "3",
        ],
    );
    assert!(out.contains("denied"), "{out}");

    // A hijacker reusing the agent's client id with a persistent session reaches only its
    // own session: the agent keeps its subscription and its messages.
    let hijacker = Subscriber::start_as(
        plain,
        &["-u", "ops", "-P", &ops, "-i", "spillway-edge-1", "-c"],
        "alerts/#",
    );
    assert!(
        reading_gets_its_verdict(&as_camera, &alerts, "cam2", "88"),
        "the agent lost its session to a hijacker: {:?}\n{}",
        alerts.lines(),
        node.log()
    );
    assert!(
        !hijacker.lines().iter().any(|l| l.starts_with("cameras/")),
        "the hijacker got the agent's messages: {:?}",
        hijacker.lines()
    );
    drop(hijacker);

    // Bounded: payloads over max_payload, retained messages past the quota.
    let big = node.path("big.bin");
    std::fs::write(&big, vec![b'9'; 8192]).unwrap();
    let (ok, _) = mosquitto(
        "mosquitto_pub",
        &[
            &as_camera[..],
            &[
                "-q",
                "1",
                "-t",
                "cameras/cam3/frames",
                "-f",
                big.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(!ok, "an 8 KiB message passed a 4 KiB limit");
    let as_status = ["-p", &port, "-u", "status", "-P", &status];
    for topic in ["status/a", "status/b"] {
        let (ok, out) = mosquitto(
            "mosquitto_pub",
            &[&as_status[..], &["-q", "1", "-r", "-t", topic, "-m", "up"]].concat(),
        );
        assert!(ok, "{topic}: {out}");
    }
    let (ok, _) = mosquitto(
        "mosquitto_pub",
        &[
            &as_status[..],
            &["-q", "1", "-r", "-t", "status/c", "-m", "up"],
        ]
        .concat(),
    );
    assert!(!ok, "a third retained topic passed a quota of two");

    // A node's certificate reaches its own functions' topics and nothing else.
    let (ca, cert, key) = pem_identity(&node);
    let tls_port = tls.to_string();
    let as_node = [
        "-p", &tls_port, "--cafile", &ca, "--cert", &cert, "--key", &key,
    ];
    reading_everything_and_publishing_to_is_refused(&as_node, "cameras/cam9/frames", "1");
    // And the TLS listener does not take a stranger's certificate either.
    let stranger = node.path("stranger");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=edge-1",
            "-keyout",
        ])
        .arg(stranger.with_extension("key"))
        .arg("-out")
        .arg(stranger.with_extension("pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out) = mosquitto(
        "mosquitto_pub",
        &[
            "-p",
            &tls_port,
            "--cafile",
            &ca,
            "--cert",
            stranger.with_extension("pem").to_str().unwrap(),
            "--key",
            stranger.with_extension("key").to_str().unwrap(),
            "-t",
            "alerts/fire",
            "-m",
            "x",
        ],
    );
    assert!(!ok, "a self-made certificate was accepted: {out}");

    // A removed user loses its connection and its subscription.
    let (ok, _, err) = c.cli(&["mqtt", "user", "remove", "ops"]);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_secs(3));
    let ops2 = add_user(&c, "ops2", &["--subscribe", "alerts/fire"]);
    let after = Subscriber::start_as(plain, &["-u", "ops2", "-P", &ops2], "alerts/fire");
    assert!(
        reading_gets_its_verdict(&as_camera, &after, "cam4", "90"),
        "the agent stopped working: {}",
        node.log()
    );
    assert!(
        !alerts.lines().iter().any(|l| l.contains("cam4")),
        "a removed user still reads: {:?}",
        alerts.lines()
    );
    assert!(
        !alerts
            .lines()
            .iter()
            .chain(after.lines().iter())
            .any(|l| l.contains("forged")),
        "a forged verdict went out"
    );

    // Every refusal is counted where the operator looks.
    let metrics = c.metrics();
    for reason in [
        "anonymous",
        "bad_login",
        "subscribe_denied",
        "publish_denied",
        "too_large",
        "retained_quota",
    ] {
        assert!(
            metrics.contains(&format!(
                "spillway_mqtt_refused_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted:\n{metrics}"
        );
    }
    assert!(c.cli(&["get", "nodes"]).0, "the coordinator is still up");
}

#[test]
fn anonymous_mqtt_is_refused_on_a_listener_others_can_reach() {
    let err = support::serve_refuses("[mqtt]\nlisten = \"0.0.0.0:0\"\nallow_anonymous = true\n");
    assert!(
        err.contains("allow_anonymous is only for loopback") && err.contains("mqtt user add"),
        "{err}"
    );
}

/// The broker's process, a child of the coordinator.
fn broker_pid(c: &Coordinator) -> Option<u32> {
    let parent = c.child.as_ref()?.id().to_string();
    let out = Command::new("pgrep")
        .args(["-P", &parent, "-f", "mqtt-broker"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A retained message published anonymously comes back to an anonymous subscriber.
fn round_trip(port: u16, payload: &str) -> bool {
    let port = port.to_string();
    let (ok, _) = mosquitto(
        "mosquitto_pub",
        &["-p", &port, "-q", "1", "-r", "-t", "probe/x", "-m", payload],
    );
    let (_, out) = mosquitto(
        "mosquitto_sub",
        &["-p", &port, "-t", "probe/x", "-C", "1", "-W", "5"],
    );
    ok && out.trim() == payload
}

#[test]
fn a_broker_fault_takes_only_the_broker_which_comes_back() {
    let plain = free_port();
    let c = Coordinator::with_config(&format!(
        "[mqtt]\nlisten = \"127.0.0.1:{plain}\"\nallow_anonymous = true\n"
    ));
    assert!(round_trip(plain, "before"));
    let first = broker_pid(&c).expect("the broker runs in a process of its own");
    assert_ne!(Some(first), c.child.as_ref().map(|ch| ch.id()));
    // A fault in the broker (here: SIGKILL) ...
    let killed = Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // ... leaves the coordinator serving ...
    assert!(
        c.cli(&["get", "nodes"]).0,
        "the coordinator went down with its broker"
    );
    // ... and the broker comes back, with the gateway in front of it again.
    assert!(
        wait_until(Duration::from_secs(20), || broker_pid(&c)
            .is_some_and(|p| p != first)),
        "{}",
        c.log()
    );
    assert!(
        wait_until(Duration::from_secs(20), || round_trip(plain, "after")),
        "{}",
        c.log()
    );
    assert!(
        c.log().contains("the MQTT broker process stopped"),
        "{}",
        c.log()
    );
}

#[test]
fn an_agents_mqtt_triggers_outlive_its_certificate_renewal_and_a_broker_restart() {
    // Renewal comes due seconds after joining; the coordinator then accepts only the new
    // certificate, on QUIC and on its MQTT gateway alike.
    let Edge {
        mut c,
        mut node,
        plain,
        camera,
        ops,
        ..
    } = edge_with_mesh_identity(
        "[certificates]\nnode_lifetime = \"40s\"\nrenew_before = \"35s\"\n",
        "",
    );
    assert!(
        wait_until(Duration::from_secs(40), || c
            .log()
            .contains("previous one is retired")),
        "{}",
        c.log()
    );
    // The broker goes away and comes back: the agent's MQTT client connects again, with a new
    // handshake, which only the renewed certificate passes.
    c.kill9();
    c.start();
    let port = plain.to_string();
    let as_camera = ["-p", port.as_str(), "-u", "camera", "-P", camera.as_str()];
    let alerts = Subscriber::start_as(plain, &["-u", "ops", "-P", &ops], "alerts/fire");
    assert!(
        published_until_verdict(&as_camera, &alerts, "88", Duration::from_secs(60)),
        "{:?}\n{}\n{}",
        alerts.lines(),
        node.log(),
        c.log()
    );
    node.stop();
}
