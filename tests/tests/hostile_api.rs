//! The API's secrets stay with their owner: client configs holding the admin token are written
//! `0600` (also over an older world-readable file), and a coordinator whose admin token is empty
//! or short refuses to start, saying what to do.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::{Coordinator, bin, free_port};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn client_configs_with_the_admin_token_are_readable_by_their_owner_only() {
    let c = Coordinator::new();
    let state_copy = c.dir.path().join("state/client.toml");
    assert_eq!(mode(&state_copy), 0o600, "{}", state_copy.display());
    // The CLI's own config under $HOME (the test coordinator's HOME is its folder).
    let installed = c.dir.path().join(".config/spillway/config.toml");
    assert_eq!(mode(&installed), 0o600, "{}", installed.display());
    assert!(
        std::fs::read_to_string(&installed)
            .unwrap()
            .contains(&c.api_token())
    );
}

#[test]
fn an_older_world_readable_client_config_is_replaced_not_left_readable() {
    let mut c = Coordinator::new();
    let installed = c.dir.path().join(".config/spillway/config.toml");
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.kill9();
    c.start();
    assert_eq!(mode(&installed), 0o600);
    assert_eq!(mode(&c.dir.path().join("state/client.toml")), 0o600);
}

#[test]
fn an_empty_or_short_admin_token_refuses_to_start() {
    for weak in ["", "   \n", "hunter2"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/admin.token"), weak).unwrap();
        std::fs::write(
            dir.path().join("coordinator.toml"),
            format!(
                "state_dir = \"state\"\n[quic]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n",
                free_port(),
                free_port()
            ),
        )
        .unwrap();
        let out = Command::new(bin("spillway"))
            .args(["serve", "--config"])
            .arg(dir.path().join("coordinator.toml"))
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {weak:?}");
        assert!(
            err.contains("shorter than the 32 the API asks for") && err.contains("delete the file"),
            "{err}"
        );
        // Nothing was written for clients to use.
        assert!(!dir.path().join("state/client.toml").exists());
    }
}

/// A raw TCP connection to the API.
fn connect(c: &Coordinator) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", c.http_port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s
}

/// Whether the server hung up on `s` (reads end) within its read timeout.
fn hung_up(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn silent_and_trickling_clients_are_cut_off_and_connections_are_bounded() {
    use std::io::Write;
    let c = Coordinator::with_http("max_connections = 4");
    let started = std::time::Instant::now();
    let mut silent = connect(&c);
    let mut trickle = connect(&c);
    trickle
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Two more fill the limit; the fifth is dropped at once and counted.
    let _held = [connect(&c), connect(&c)];
    let mut fifth = connect(&c);
    assert!(
        hung_up(&mut fifth),
        "over the limit, a connection is dropped"
    );
    assert!(hung_up(&mut silent), "a silent client is cut off");
    assert!(hung_up(&mut trickle), "headers that never end are cut off");
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    // Once they are gone, the API serves again. The fifth was counted; a metrics request that
    // came while the cut-off connections were still closing may have been counted too.
    drop(_held);
    let refused = |text: &str| {
        support::sample(
            text,
            "spillway_api_refused_total",
            &[("reason", "connection_limit")],
        )
        .map(|n| n as u64)
    };
    let mut last = String::new();
    assert!(
        support::wait_until(std::time::Duration::from_secs(5), || {
            last = c.metrics();
            refused(&last).is_some_and(|n| n >= 1)
        }),
        "{last}"
    );
}

#[test]
fn oversized_bodies_are_refused_by_the_route_and_the_coordinator_stays_up() {
    let c = Coordinator::new();
    let token = c.api_token();
    let big = format!(
        "{{\"ttl_secs\": 60, \"description\": \"{}\"}}",
        "x".repeat(200_000)
    );
    let (status, _, body) = c.post_json(&token, "/v1/tokens", &big);
    assert_eq!(status, 413, "{body}");
    let (ok, _, _) = c.cli(&["get", "nodes"]);
    assert!(ok);
}

#[test]
fn a_deeply_nested_or_overflowing_fdl_is_refused_and_the_coordinator_stays_up() {
    let c = Coordinator::new();
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.yaml");
    std::fs::write(&deep, format!("functions:\n{}1\n", "- ".repeat(500_000))).unwrap();
    // The CLI checks first: it says why, and does not crash.
    let out = Command::new(bin("spillway"))
        .arg("validate")
        .arg(&deep)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nests deeper than 64 levels"), "{err}");
    // Sent straight to the API, past the CLI's check: refused, and the coordinator lives on.
    let body = serde_json::json!({
        "file": "deep.yaml",
        "text": std::fs::read_to_string(&deep).unwrap(),
    })
    .to_string();
    let (status, _, answer) = c.post_json(&c.api_token(), "/v1/apply", &body);
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("nests deeper than 64 levels"), "{answer}");
    let huge = dir.path().join("huge.yaml");
    std::fs::write(
        &huge,
        "functions:\n  oscar:\n  - edge:\n      name: f\n      command: 'true'\n      timeout: 18446744073709551615\n      input: [{storage_provider: minio, path: a/in}]\n",
    )
    .unwrap();
    let (ok, _, err) = c.cli(&["apply", "-f", huge.to_str().unwrap()]);
    assert!(!ok && err.contains("at most 604800 seconds"), "{err}");
    let (ok, out, _) = c.cli(&["get", "functions"]);
    assert!(ok && !out.contains(" f "), "{out}");
}

#[test]
fn a_presigned_upload_with_a_bad_signature_is_refused_before_its_body_is_read() {
    let c = Coordinator::new();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("big");
    std::fs::write(&body, vec![7u8; 32 << 20]).unwrap();
    let url = format!(
        "http://127.0.0.1:{}/v1/outputs/0123456789abcdef0123456789abcdef/1/out.bin?expires=9999999999&signature=00",
        c.http_port
    );
    let out = Command::new("curl")
        .args(["-sS", "-X", "PUT", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n%{http_code} %{size_upload}", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let (status, uploaded) = last.split_once(' ').unwrap();
    assert_eq!(status, "403", "{text}");
    let uploaded: u64 = uploaded.trim().parse().unwrap();
    assert!(
        uploaded < 1 << 20,
        "{uploaded} bytes of the body were sent: {text}"
    );
}

#[test]
fn credentials_in_an_fdl_never_come_back_through_the_api_and_the_state_is_private() {
    let c = Coordinator::new();
    let dir = tempfile::tempdir().unwrap();
    let fdl = dir.path().join("secret.yaml");
    std::fs::write(
        &fdl,
        r#"
functions:
  oscar:
  - edge:
      name: keeper
      command: 'true'
      input: [{storage_provider: s3.store, path: b/in}]
      replicas:
      - {type: endpoint, url: 'https://x.invalid', headers: {Authorization: 'Bearer hunter2'}}
      environment:
        Variables: {MODE: fast}
        secrets: {API_KEY: hunter2}
storage_providers:
  s3:
    store: {access_key: AKIAEXAMPLE, secret_key: hunter2, region: eu-west-1, endpoint: 'http://127.0.0.1:1'}
"#,
    )
    .unwrap();
    let (ok, _, err) = c.cli(&["apply", "-f", fdl.to_str().unwrap()]);
    assert!(ok, "{err}");
    for args in [
        &["-o", "json", "get", "functions"][..],
        &["describe", "function", "keeper"],
        &["-o", "yaml", "get", "functions"],
    ] {
        let (ok, out, err) = c.cli(args);
        assert!(ok, "{err}");
        assert!(
            !out.contains("hunter2"),
            "{args:?} shows a credential:\n{out}"
        );
        assert!(out.contains("AKIAEXAMPLE") && out.contains("***"), "{out}");
    }
    let oscar = Command::new("curl")
        .args([
            "-sS",
            "-H",
            &format!("Authorization: Bearer {}", c.api_token()),
        ])
        .arg(format!("http://127.0.0.1:{}/system/services", c.http_port))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&oscar.stdout);
    assert!(
        body.contains("keeper") && !body.contains("hunter2"),
        "{body}"
    );
    assert!(!c.log().contains("hunter2"), "the log shows a credential");
    assert_eq!(mode(&c.dir.path().join("state")), 0o700);
    assert_eq!(mode(&c.dir.path().join("state/coordinator.redb")), 0o600);
    assert_eq!(mode(&c.dir.path().join("state/ca/ca.key")), 0o600);
}

/// `curl -X METHOD` with a bearer token and a JSON body: the status.
fn status(c: &Coordinator, method: &str, token: &str, path: &str, body: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("http://127.0.0.1:{}{path}", c.http_port))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn api_token(c: &Coordinator, args: &[&str]) -> String {
    let mut all = vec!["api-token", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = c.cli(&all);
    assert!(ok, "{err}");
    out.trim().to_owned()
}

#[test]
fn scoped_tokens_reach_only_their_routes_and_revoked_ones_nothing() {
    let c = Coordinator::new();
    let operator = api_token(&c, &["--scope", "operator", "--description", "ci"]);
    let invoker = api_token(&c, &["--scope", "invoker", "--function", "detect"]);
    let webhook = api_token(&c, &["--scope", "webhook"]);
    let token_req = r#"{"ttl_secs": 60}"#;
    let labels = r#"{"set": {"a": "b"}}"#;
    let event = r#"{"Records": []}"#;
    let apply = r#"{"file": "x.yaml", "text": "functions: {}"}"#;
    for (who, token, method, path, body, expected) in [
        // Node identity and API tokens are the admin's.
        ("operator", &operator, "POST", "/v1/tokens", token_req, 403),
        (
            "operator",
            &operator,
            "PUT",
            "/v1/nodes/pi-1/labels",
            labels,
            403,
        ),
        (
            "operator",
            &operator,
            "POST",
            "/v1/api-tokens",
            r#"{"scope":"operator"}"#,
            403,
        ),
        ("operator", &operator, "GET", "/v1/nodes", "", 200),
        ("operator", &operator, "POST", "/v1/apply", apply, 422),
        // An invoker runs its functions only, and reads nothing else.
        ("invoker", &invoker, "POST", "/job/other", "x", 403),
        ("invoker", &invoker, "GET", "/v1/nodes", "", 403),
        ("invoker", &invoker, "POST", "/v1/apply", apply, 403),
        ("invoker", &invoker, "POST", "/job/detect", "x", 404),
        // A webhook delivers notifications, nothing else.
        ("webhook", &webhook, "POST", "/events", event, 202),
        ("webhook", &webhook, "GET", "/v1/functions", "", 403),
        ("webhook", &webhook, "POST", "/v1/apply", apply, 403),
        (
            "nobody",
            &"spwa_0123456789abcdef0123456789abcdef".to_owned(),
            "GET",
            "/v1/nodes",
            "",
            401,
        ),
    ] {
        assert_eq!(
            status(&c, method, token, path, body),
            expected,
            "{who}: {method} {path}"
        );
    }
    // OSCAR clients use an operator token as the basic-auth password, never the admin token.
    let oscar = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u"])
        .arg(format!("oscar:{operator}"))
        .arg(format!("http://127.0.0.1:{}/system/services", c.http_port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&oscar.stdout), "200");
    // Revoked: nothing.
    let listed = c.json(&["api-token", "list"]);
    let id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scope"] == "operator")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, _, err) = c.cli(&["api-token", "revoke", &id]);
    assert!(ok, "{err}");
    assert_eq!(status(&c, "GET", &operator, "/v1/nodes", ""), 401);
    let metrics = c.metrics();
    assert_eq!(
        support::sample(
            &metrics,
            "spillway_api_refused_total",
            &[("reason", "forbidden")]
        ),
        Some(8.0),
        "{metrics}"
    );
}
