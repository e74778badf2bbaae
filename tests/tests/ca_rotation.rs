//! The mesh CA is replaced online, as `spillway admin ca --help` describes: rotated (a new CA,
//! cross-signed by the old one, signs from then on), rolled out (every connected node takes the
//! new CA and renews under it at once), and the old one retired. Nothing that was there is lost
//! on the way: nodes, old client configs and old tokens keep working until the retirement, and
//! what the retirement cuts off says what to do.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Coordinator, Node, free_port, wait_until};

fn ready(c: &Coordinator, name: &str, within: Duration) -> bool {
    wait_until(within, || c.health(name).as_deref() == Some("Ready"))
}

/// Where `node` stands in the rotation, from `spillway admin ca status`.
fn moved(c: &Coordinator, node: &str) -> bool {
    let status = c.json(&["admin", "ca", "status"]);
    status["nodes"].as_array().into_iter().flatten().any(|n| {
        n["node"] == node && n["certified_by_signing"] == true && n["trusts_signing"] == true
    })
}

/// `spillway` with the client config `config`: (success, stdout, stderr).
fn cli_with(c: &Coordinator, config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(support::bin("spillway"))
        .arg("--client-config")
        .arg(config)
        .args(args)
        .env("HOME", c.dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl's exit code for the API's node list, trusting only the CAs in `pem`.
fn curl_with(c: &Coordinator, pem: &std::path::Path) -> i32 {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "--cacert"])
        .arg(pem)
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", c.api_token()))
        .arg(format!("https://127.0.0.1:{}/v1/nodes", c.http_port))
        .output()
        .unwrap();
    out.status.code().unwrap_or(-1)
}

/// The coordinator's `/metrics`, over HTTPS with the CAs it trusts now.
fn metrics_of(c: &Coordinator) -> String {
    let (ok, pem, err) = c.cli(&["mqtt", "ca"]);
    assert!(ok, "{err}");
    let file = c.dir.path().join("now-ca.pem");
    std::fs::write(&file, pem).unwrap();
    support::output(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&file)
            .arg(format!("https://127.0.0.1:{}/metrics", c.http_port)),
    )
}

/// Whether OpenSSL verifies the MQTT broker's TLS listener with only the CAs in `pem`.
fn broker_verifies(port: u16, pem: &std::path::Path) -> bool {
    Command::new("openssl")
        .args(["s_client", "-brief", "-verify_return_error", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(pem)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn the_mesh_ca_rotates_and_retires_online_and_every_node_that_was_there_moves_with_it() {
    let mqtts = free_port();
    let mut c = Coordinator::configured(
        None,
        "127.0.0.1",
        &format!("[mqtt]\ntls_listen = \"127.0.0.1:{mqtts}\"\n"),
        "tls = \"mesh\"\n",
    );
    let mut pi1 = Node::new("node_name = \"pi-1\"\n");
    let mut away = Node::new("node_name = \"pi-2\"\n");
    c.join(&pi1);
    c.join(&away);
    pi1.start();
    away.start();
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", pi1.log());
    assert!(ready(&c, "pi-2", Duration::from_secs(20)), "{}", away.log());
    // A board put in a drawer for the whole rotation.
    away.stop();

    // What people keep from before: a client config, the CA file, a join token.
    let old_client = c.dir.path().join("old-client.toml");
    std::fs::copy(c.dir.path().join("state/client.toml"), &old_client).unwrap();
    let (ok, old_ca, err) = c.cli(&["mqtt", "ca"]);
    assert!(ok, "{err}");
    let old_pem = c.dir.path().join("old-ca.pem");
    std::fs::write(&old_pem, &old_ca).unwrap();
    let old_token = c.token();

    // Rotate: the new CA signs; both are trusted; the connected node moves at once.
    let (ok, out, err) = c.cli(&["admin", "ca", "rotate"]);
    assert!(ok, "{err}");
    assert!(out.contains("retiring") && out.contains("signing"), "{out}");
    assert!(err.contains("updated the trusted CAs"), "{err}");
    assert!(
        wait_until(Duration::from_secs(30), || moved(&c, "pi-1")),
        "{}\n{}",
        pi1.log(),
        c.log()
    );
    assert!(pi1.log().contains("the mesh CAs changed"), "{}", pi1.log());
    assert!(pi1.log().contains("certificate renewed"), "{}", pi1.log());
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", pi1.log());
    assert!(!moved(&c, "pi-2"));
    // Operators' alerts see it too.
    let metrics = metrics_of(&c);
    assert!(metrics.contains("spillway_ca_rotating 1"), "{metrics}");
    assert!(
        metrics.contains("spillway_node_on_old_ca{node=\"pi-2\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spillway_node_on_old_ca{node=\"pi-1\"} 0"),
        "{metrics}"
    );

    // Until the retirement, everything from before still works: through the cross certificate
    // for clients that know only the old CA (the CLI's WebPKI, curl's and mosquitto's OpenSSL).
    let (ok, _, err) = cli_with(&c, &old_client, &["get", "nodes"]);
    assert!(ok, "an old client config: {err}");
    assert_eq!(curl_with(&c, &old_pem), 0, "curl with the old CA");
    assert!(
        broker_verifies(mqtts, &old_pem),
        "the broker with the old CA"
    );
    let mut pi3 = Node::new("node_name = \"pi-3\"\n");
    let (ok, out, err) =
        pi3.agent_cli(&["join", "--coordinator", &c.quic(), "--token", &old_token]);
    assert!(ok, "a token made before the rotation: {out}{err}");
    pi3.start();
    assert!(ready(&c, "pi-3", Duration::from_secs(20)), "{}", pi3.log());
    assert!(
        moved(&c, "pi-3"),
        "a node that joins during a rotation starts on the new CA"
    );

    // The rotation is durable: a coordinator restart keeps both CAs and the nodes' progress.
    c.kill9();
    c.start();
    let status = c.json(&["admin", "ca", "status"]);
    assert!(!status["retiring"].is_null(), "{status}");
    assert!(ready(&c, "pi-1", Duration::from_secs(30)), "{}", pi1.log());

    // Retiring is refused while a node depends on the old CA, and says which and why.
    let (ok, _, err) = c.cli(&["admin", "ca", "retire"]);
    assert!(!ok);
    assert!(
        err.contains("pi-2") && err.contains("not connected since the rotation"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(!err.contains("pi-1 ("), "pi-1 has moved: {err}");
    let status = c.json(&["admin", "ca", "status"]);
    assert!(!status["retiring"].is_null(), "nothing changed: {status}");

    // The operator retires anyway.
    let (ok, out, err) = c.cli(&["admin", "ca", "retire", "--force"]);
    assert!(ok, "{err}");
    assert!(!out.contains("retiring"), "{out}");
    let (_, new_ca, _) = c.cli(&["mqtt", "ca"]);
    let new_pem = c.dir.path().join("new-ca.pem");
    std::fs::write(&new_pem, &new_ca).unwrap();
    assert_eq!(new_ca.matches("BEGIN CERTIFICATE").count(), 1);

    // The CLI that retired updated its own config; old ones and the old CA file are refused.
    let (ok, _, err) = c.cli(&["get", "nodes"]);
    assert!(ok, "the updated client config: {err}");
    let (ok, _, err) = cli_with(&c, &old_client, &["get", "nodes"]);
    assert!(!ok);
    assert!(err.contains("cannot reach the coordinator"), "{err}");
    assert_eq!(curl_with(&c, &old_pem), 60, "curl: certificate problem");
    assert_eq!(curl_with(&c, &new_pem), 0);
    assert!(!broker_verifies(mqtts, &old_pem));
    assert!(broker_verifies(mqtts, &new_pem));

    // Nodes that moved link again with the new CA alone, restarts included.
    pi1.stop();
    pi1.start();
    assert!(ready(&c, "pi-1", Duration::from_secs(20)), "{}", pi1.log());
    assert!(ready(&c, "pi-3", Duration::from_secs(20)), "{}", pi3.log());

    // The board that was away comes back: it cannot link, and says what to do.
    away.start();
    assert!(
        wait_until(Duration::from_secs(20), || away
            .log()
            .contains("join again")),
        "{}",
        away.log()
    );
    assert!(away.log().contains("UnknownIssuer"), "{}", away.log());
    assert_ne!(c.health("pi-2").as_deref(), Some("Ready"));
    // What the operator does: a token for it, and a join.
    away.stop();
    c.join_again(&away, "pi-2");
    away.start();
    assert!(ready(&c, "pi-2", Duration::from_secs(20)), "{}", away.log());

    // And the retirement survives a restart.
    c.kill9();
    c.start();
    assert!(c.json(&["admin", "ca", "status"])["retiring"].is_null());
    assert!(metrics_of(&c).contains("spillway_ca_rotating 0"));
    assert!(ready(&c, "pi-1", Duration::from_secs(30)), "{}", pi1.log());
    for n in [&mut pi1, &mut pi3, &mut away] {
        n.stop();
    }
}
