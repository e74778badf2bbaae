//! The API over HTTPS, with curl and the CLI as clients: the mesh CA's certificate is what the
//! CLI pins from its client config, a client that does not trust it (or speaks plain HTTP to
//! it) gets nothing, an operator's own certificate works the same, and plain HTTP is refused
//! anywhere but loopback.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::{Coordinator, free_port};

/// `curl ARGS URL`: (exit code, stdout + stderr).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn client_toml(c: &Coordinator) -> String {
    std::fs::read_to_string(c.dir.path().join("state/client.toml")).unwrap()
}

fn token(c: &Coordinator) -> String {
    std::fs::read_to_string(c.dir.path().join("state/admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn the_api_speaks_https_with_the_mesh_ca_and_the_cli_pins_it() {
    let c = Coordinator::with_http("tls = \"mesh\"\n");
    // The CLI got here through HTTPS: Coordinator::start waits on `spillway get nodes`.
    let client = client_toml(&c);
    let url = format!("https://127.0.0.1:{}", c.http_port);
    assert!(
        client.contains(&format!("coordinator = \"{url}\"")),
        "{client}"
    );
    assert!(client.contains("-----BEGIN CERTIFICATE-----"), "{client}");
    let mode = std::fs::metadata(c.dir.path().join("state/client.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let ca = c.dir.path().join("ca.pem");
    let (ok, pem, err) = c.cli(&["mqtt", "ca"]);
    assert!(ok, "{err}");
    std::fs::write(&ca, pem).unwrap();
    let auth = format!("Authorization: Bearer {}", token(&c));
    let nodes = format!("{url}/v1/nodes");
    let (code, out) = curl(&["--cacert", ca.to_str().unwrap(), "-H", &auth, &nodes]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "[]");
    // localhost is in the certificate too.
    let by_name = format!("https://localhost:{}/v1/nodes", c.http_port);
    let (code, out) = curl(&["--cacert", ca.to_str().unwrap(), "-H", &auth, &by_name]);
    assert_eq!(code, 0, "{out}");

    // Without the CA, curl does not trust it (exit 60: certificate problem).
    let (code, out) = curl(&["-H", &auth, &nodes]);
    assert_eq!(code, 60, "{out}");
    // Plain HTTP to the TLS port gets no answer.
    let (code, out) = curl(&[
        "-H",
        &auth,
        &format!("http://127.0.0.1:{}/v1/nodes", c.http_port),
    ]);
    assert_ne!(code, 0, "plain HTTP was answered: {out}");
    assert!(!out.contains("[]"), "{out}");

    // A CLI whose config pins another CA refuses this coordinator, and says so.
    let other = Coordinator::with_http("tls = \"mesh\"\n");
    let wrong = c.dir.path().join("wrong-ca.toml");
    let pinned_elsewhere =
        client_toml(&other).replace(&format!("https://127.0.0.1:{}", other.http_port), &url);
    std::fs::write(&wrong, pinned_elsewhere).unwrap();
    let out = Command::new(support::bin("spillway"))
        .arg("--client-config")
        .arg(&wrong)
        .args(["get", "nodes"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach the coordinator"), "{err}");
    assert!(c.cli(&["get", "nodes"]).0, "the coordinator is still up");
}

#[test]
fn an_operators_own_certificate_serves_the_api() {
    // The operator's own small CA and a server certificate it signed for 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (path("ops-ca.pem"), path("api.pem"), path("api.key"));
    std::fs::write(path("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca_key = path("ops-ca.key");
    let csr = path("api.csr");
    let ext = path("ext");
    for args in [
        [
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-days",
                "1",
                "-subj",
                "/CN=ops-ca",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec[..],
            &["-subj", "/CN=api", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ] {
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = {
        // The coordinator's client config has no CA for an operator's certificate: the CLI
        // is pointed at it with ca_file, as an operator would.
        let port = free_port();
        let c_dir = tempfile::tempdir().unwrap();
        let config = c_dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\n[quic]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                free_port(),
                cert, key
            ),
        )
        .unwrap();
        let child = Command::new(support::bin("spillway"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("HOME", c_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (c_dir, child, port)
    };
    let (c_dir, mut child, port) = c;
    let client = c_dir.path().join("state/client.toml");
    let ready = support::wait_until(std::time::Duration::from_secs(30), || client.exists());
    assert!(ready, "the coordinator did not start");
    let text = std::fs::read_to_string(&client).unwrap();
    assert!(
        text.contains(&format!("https://127.0.0.1:{port}")),
        "{text}"
    );
    let with_ca = c_dir.path().join("client-with-ca.toml");
    std::fs::write(&with_ca, format!("{text}ca_file = \"{ca}\"\n")).unwrap();
    let served = support::wait_until(std::time::Duration::from_secs(20), || {
        Command::new(support::bin("spillway"))
            .arg("--client-config")
            .arg(&with_ca)
            .args(["get", "nodes"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "the CLI could not use the operator's certificate");
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let err = support::serve_refuses("[http]\nlisten = \"0.0.0.0:0\"\ntls = \"off\"\n");
    assert!(err.contains("plain HTTP is only for loopback"), "{err}");
}
