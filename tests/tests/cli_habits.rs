//! The CLI habits people bring from kubectl and oscar-cli, against a real coordinator and
//! agent: `get KIND NAME…`, `-l` selectors on nodes, functions and jobs, `-o wide` and
//! `-o name`, `describe -o json`, `version` with the server's, `apply FILE`, `-f DIR` and
//! `-f -`, and `invoke -i TEXT`.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Coordinator, Node, bin, repo, wait_until};

/// `upper` (the mesh fixture's script, copied beside it) with labels, for the shed only; and
/// `lower`, for the attic only.
const LABELLED: &str = "functions:
  oscar:
  - edge:
      name: upper
      runtime: process
      script: upper.sh
      timeout: 30
      labels: {team: vision, stage: prod}
      node_selector: {zone: shed}
      input: [{storage_provider: minio.default, path: texts/in}]
      output: [{storage_provider: minio.default, path: texts/out}]
";
const OTHER: &str = "functions:
  oscar:
  - edge:
      name: lower
      runtime: process
      command: ['/bin/sh', '-c', 'tr A-Z a-z < \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/$(basename \"$INPUT_FILE_PATH\")\"']
      timeout: 30
      labels: {team: audio}
      node_selector: {zone: attic}
      input: [{storage_provider: minio.default, path: lower/in}]
      output: [{storage_provider: minio.default, path: lower/out}]
";

fn ok(c: &Coordinator, args: &[&str]) -> String {
    let (ok, out, err) = c.cli(args);
    assert!(ok, "spillway {args:?} failed: {err}");
    out
}

fn refused(c: &Coordinator, args: &[&str]) -> String {
    let (ok, out, err) = c.cli(args);
    assert!(!ok, "spillway {args:?} succeeded: {out}");
    err
}

#[test]
fn get_describe_apply_invoke_and_version_work_as_kubectl_and_oscar_cli_users_expect() {
    let c = Coordinator::new();
    let mut shed = Node::new("node_name = \"pi-shed\"\n");
    let mut attic = Node::new("node_name = \"pi-attic\"\n");
    for node in [&mut shed, &mut attic] {
        c.join(node);
        node.start();
    }
    ok(&c, &["label", "node", "pi-shed", "zone=shed"]);
    ok(&c, &["label", "node", "pi-attic", "zone=attic"]);

    // apply: a folder of FDL files (the script beside them), then standard input.
    let dir = tempfile::tempdir().unwrap();
    let fdl = dir.path().join("fdl");
    std::fs::create_dir_all(&fdl).unwrap();
    std::fs::write(fdl.join("upper.yaml"), LABELLED).unwrap();
    std::fs::copy(repo("tests/fixtures/mesh/upper.sh"), fdl.join("upper.sh")).unwrap();
    std::fs::write(fdl.join("notes.txt"), "not FDL").unwrap();
    let out = ok(&c, &["apply", "-f", fdl.to_str().unwrap()]);
    assert_eq!(out.trim(), "function/upper created");
    let out = support::with_stdin(
        Command::new(bin("spillway"))
            .arg("--client-config")
            .arg(c.dir.path().join("state/client.toml"))
            .args(["apply", "-f", "-"])
            .env("HOME", c.dir.path()),
        OTHER.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "function/lower created"
    );
    // A positional file, as `kubectl apply FILE` users type it: unchanged, so nothing new.
    let out = ok(&c, &["apply", fdl.join("upper.yaml").to_str().unwrap()]);
    assert!(out.starts_with("function/upper "), "{out}");
    let err = refused(
        &c,
        &["apply", "-f", dir.path().join("empty").to_str().unwrap()],
    );
    assert!(err.contains("cannot read"), "{err}");
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let err = refused(
        &c,
        &["apply", "-f", dir.path().join("empty").to_str().unwrap()],
    );
    assert!(err.contains("holds no .yaml or .yml files"), "{err}");
    let err = refused(&c, &["apply"]);
    assert!(err.contains("which FDL files?"), "{err}");
    assert!(wait_until(Duration::from_secs(30), || {
        c.runs("pi-shed", "upper") && c.runs("pi-attic", "lower")
    }));

    // get KIND NAME…: only those, in the order asked; an unknown name is an error naming it.
    let out = ok(&c, &["-o", "name", "get", "nodes", "pi-shed", "pi-attic"]);
    assert_eq!(out, "pi-shed\npi-attic\n");
    // -o jsonpath=…, kubectl's templates: lists are `.items`, ranges repeat, strings are bare.
    let out = ok(
        &c,
        &[
            "-o",
            "jsonpath={.items[*].name}",
            "get",
            "nodes",
            "pi-shed",
            "pi-attic",
        ],
    );
    assert_eq!(out, "pi-shed pi-attic\n");
    let out = ok(
        &c,
        &[
            "-o",
            "jsonpath={range .items[*]}{.name}:{.labels.zone}{\"\\n\"}{end}",
            "get",
            "nodes",
        ],
    );
    assert_eq!(out, "pi-attic:attic\npi-shed:shed\n");
    let err = refused(&c, &["-o", "jsonpath={.items[", "get", "nodes"]);
    assert!(err.contains("a `{` without its `}`"), "{err}");
    // Dynamic completion: the shell's hook asks the binary, which asks the coordinator.
    let complete = |words: &[&str], config: &std::path::Path| {
        let out = Command::new(bin("spillway"))
            .args([&["--", "spillway"], words].concat())
            .env("COMPLETE", "fish")
            .env("SPILLWAY_CONFIG", config)
            .env_remove("SPILLWAY_CONTEXT")
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words: Vec<String> = text
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect();
        words.sort();
        words
    };
    let client_config = c.dir.path().join("state/client.toml");
    assert_eq!(
        complete(&["cordon", "pi-"], &client_config),
        ["pi-attic", "pi-shed"]
    );
    assert_eq!(complete(&["invoke", "lo"], &client_config), ["lower"]);
    assert_eq!(
        complete(&["describe", "function", "u"], &client_config),
        ["upper"]
    );
    // A coordinator that does not answer completes nothing, and quickly.
    let nowhere = dir.path().join("nowhere.toml");
    std::fs::write(&nowhere, "coordinator = \"http://127.0.0.1:9\"\n").unwrap();
    let asked = std::time::Instant::now();
    assert!(complete(&["cordon", "pi-"], &nowhere).is_empty());
    assert!(asked.elapsed() < Duration::from_secs(5));
    let err = refused(&c, &["-o", "yml", "get", "nodes"]);
    assert!(
        err.contains("use table, wide, name, json, yaml or jsonpath=TEMPLATE"),
        "{err}"
    );
    let err = refused(&c, &["get", "nodes", "pi-shed", "pi-gone", "pi-lost"]);
    assert!(err.contains("no node named pi-gone, pi-lost"), "{err}");
    let out = ok(&c, &["get", "function", "lower"]);
    assert!(out.contains("lower") && !out.contains("upper"), "{out}");

    // -l on nodes (their labels) and functions (the FDL's labels).
    let out = ok(&c, &["-o", "name", "get", "nodes", "-l", "zone=shed"]);
    assert_eq!(out, "pi-shed\n");
    let out = ok(&c, &["-o", "name", "get", "nodes", "-l", "zone!=shed"]);
    assert_eq!(out, "pi-attic\n");
    let out = ok(
        &c,
        &["-o", "name", "get", "functions", "-l", "team=vision,stage"],
    );
    assert_eq!(out, "upper\n");
    let err = refused(&c, &["get", "nodes", "-l", "zone shed"]);
    assert!(err.contains("is not a label key"), "{err}");
    let err = refused(&c, &["get", "releases", "-l", "zone=shed"]);
    assert!(err.contains("-l selects nodes, functions or jobs"), "{err}");

    // -o wide adds columns; the plain table stays narrow.
    let narrow = ok(&c, &["get", "nodes"]);
    let wide = ok(&c, &["-o", "wide", "get", "nodes"]);
    assert!(
        !narrow.contains("LABELS") && !narrow.contains("ADDRESS"),
        "{narrow}"
    );
    assert!(
        wide.contains("LABELS") && wide.contains("ADDRESS"),
        "{wide}"
    );
    assert!(wide.contains("zone=shed"), "{wide}");

    // invoke -i TEXT, as oscar-cli's `service run -i`; then jobs by their node's labels.
    let out = ok(&c, &["invoke", "upper", "-i", "hello habits", "--wait"]);
    assert!(out.contains("Succeeded"), "{out}");
    let out = ok(&c, &["get", "pi-shed:texts/out/input"]);
    assert_eq!(out, "HELLO HABITS");
    let out = ok(&c, &["invoke", "lower", "-i", "QUIET", "--wait"]);
    assert!(out.contains("Succeeded"), "{out}");
    let shed_jobs = c.json(&["get", "jobs", "-l", "zone=shed"]);
    let functions: Vec<&str> = shed_jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["function"].as_str().unwrap())
        .collect();
    assert_eq!(functions, ["upper"]);
    let id = shed_jobs[0]["id"].as_str().unwrap().to_owned();
    let out = ok(&c, &["-o", "wide", "get", "jobs", &id[..12]]);
    assert!(
        out.contains(&id) && out.contains("texts/out/input"),
        "{out}"
    );
    let err = refused(&c, &["invoke", "upper"]);
    assert!(err.contains("--file") || err.contains("--input"), "{err}");

    // describe honours -o.
    let described = ok(&c, &["-o", "json", "describe", "function", "upper"]);
    let described: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["labels"]["team"], "vision");
    let yaml = ok(&c, &["describe", "node", "pi-shed"]);
    assert!(yaml.contains("name: pi-shed"), "{yaml}");

    // version: this client's and the server's.
    let out = ok(&c, &["version"]);
    let v = env!("CARGO_PKG_VERSION");
    assert!(out.contains(&format!("client: spillway {v}")), "{out}");
    assert!(out.contains(&format!("server: spillway {v}")), "{out}");
    let both = c.json(&["version"]);
    assert_eq!(both["client"]["version"], v);
    assert_eq!(both["server"]["version"], v);
    // With no coordinator there, the client's version still prints, then why it failed.
    let unreachable = Command::new(bin("spillway"))
        .args(["--coordinator", "http://127.0.0.1:1", "version"])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&unreachable.stdout),
        String::from_utf8_lossy(&unreachable.stderr),
    );
    assert!(!unreachable.status.success(), "{out}");
    assert!(out.contains("client: spillway"), "{out}");
    assert!(err.contains("cannot reach the coordinator"), "{err}");
}

#[test]
fn a_cordoned_node_takes_no_new_jobs_until_it_is_uncordoned() {
    let c = Coordinator::new();
    let mut node = Node::new("node_name = \"pi-shed\"\n");
    c.join(&node);
    node.start();
    let fdl = repo("tests/fixtures/mesh/functions.yaml");
    ok(&c, &["apply", fdl.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(30), || c.runs("pi-shed", "upper")));

    let out = ok(&c, &["cordon", "pi-shed"]);
    assert!(out.contains("node/pi-shed cordoned"), "{out}");
    let out = ok(&c, &["get", "nodes"]);
    assert!(out.contains("Ready,SchedulingDisabled"), "{out}");
    assert_eq!(c.node_view("pi-shed")["cordoned"], true);
    // Nothing else runs `upper`: the invocation is refused, saying why.
    let err = refused(&c, &["invoke", "upper", "-i", "during maintenance"]);
    assert!(err.contains("cordoned nodes take no new jobs"), "{err}");
    // Its own folders still run there: maintenance does not drop local data.
    node.write("data/texts/in/local.txt", "local work");
    assert!(
        wait_until(Duration::from_secs(20), || node
            .path("data/texts/out/local.txt")
            .exists()),
        "{}",
        node.log()
    );
    let err = refused(&c, &["cordon", "pi-gone"]);
    assert!(err.contains("no node named `pi-gone`"), "{err}");

    let out = ok(&c, &["uncordon", "pi-shed"]);
    assert!(out.contains("node/pi-shed uncordoned"), "{out}");
    let out = ok(&c, &["invoke", "upper", "-i", "back in service", "--wait"]);
    assert!(out.contains("Succeeded"), "{out}");
    // An operator token may cordon; an invoker's may not.
    let (ok_, token, err) = c.cli(&[
        "api-token",
        "create",
        "--scope",
        "invoker",
        "--function",
        "upper",
    ]);
    assert!(ok_, "{err}");
    let err = refused(&c, &["--token", token.trim(), "cordon", "pi-shed"]);
    assert!(
        err.contains("does not allow PUT /v1/nodes/pi-shed/cordon"),
        "{err}"
    );
    assert_eq!(c.node_view("pi-shed")["cordoned"], false);
}

#[test]
fn contexts_point_one_client_at_several_coordinators_and_up_adds_its_own_without_overwriting() {
    let home_c = Coordinator::new();
    let lab = Coordinator::with_config("name = \"lab\"\n");
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".config/spillway/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let mine = format!(
        "# my own, by hand\ncoordinator = \"http://127.0.0.1:{}\"\ntoken = \"{}\"\n",
        home_c.http_port,
        home_c.api_token()
    );
    std::fs::write(&config, &mine).unwrap();
    let spillway = |args: &[&str]| {
        let out = Command::new(bin("spillway"))
            .args(args)
            .env("HOME", home.path())
            .env_remove("SPILLWAY_CONFIG")
            .env_remove("SPILLWAY_CONTEXT")
            .env_remove("SPILLWAY_COORDINATOR")
            .env_remove("SPILLWAY_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let server = |args: &[&str]| {
        let (ok, out, err) = spillway(&[args, &["-o", "json", "version"]].concat());
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["server"]["name"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(server(&[]), "coordinator");

    // A second coordinator as a named context; the flat keys stay the context `default`.
    // The token from a file, kept out of the shell's history.
    let lab_token = home.path().join("lab-token");
    std::fs::write(&lab_token, format!("{}\n", lab.api_token())).unwrap();
    let (ok, out, err) = spillway(&[
        "config",
        "set-context",
        "lab",
        "--server",
        &format!("http://127.0.0.1:{}", lab.http_port),
        "--api-token-file",
        lab_token.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("Context \"lab\" created"), "{out}{err}");
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("--api-token")
    );
    let (ok, out, _) = spillway(&["-o", "name", "config", "get-contexts"]);
    assert!(ok);
    assert_eq!(out, "default\nlab\n");
    assert_eq!(server(&["--context", "lab"]), "lab");
    assert_eq!(server(&[]), "coordinator");
    let (ok, out, err) = spillway(&["config", "use-context", "lab"]);
    assert!(ok && out.contains("Switched to context \"lab\""), "{err}");
    assert_eq!(server(&[]), "lab");
    assert_eq!(spillway(&["config", "current-context"]).1, "lab\n");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# my own, by hand\n"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Refused, with the names there are; the file is untouched.
    let (ok, _, err) = spillway(&["config", "use-context", "nope"]);
    assert!(
        !ok && err.contains("no context named `nope` (there are: default, lab)"),
        "{err}"
    );
    let (ok, _, err) = spillway(&["--context", "nope", "get", "nodes"]);
    assert!(!ok && err.contains("no context named `nope`"), "{err}");
    let (ok, _, err) = spillway(&["config", "set-context", "a b", "--server", "http://x"]);
    assert!(!ok && err.contains("use 1 to 64 letters"), "{err}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    // Deleting the current context goes back to the file's own keys.
    let (ok, _, err) = spillway(&["config", "delete-context", "lab"]);
    assert!(ok, "{err}");
    assert_eq!(server(&[]), "coordinator");

    // `spillway up` adds its coordinator as a context of this user-written file, makes it
    // current and says so; the user's keys and comment stay.
    let (quic, http, mqtt) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let up_log = home.path().join("up.log");
    let mut up = Command::new(bin("spillway"))
        .args(["up", "--dir"])
        .arg(home.path().join("mesh"))
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--node", "local", "--quic", &format!("127.0.0.1:{quic}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .env("HOME", home.path())
        .env_remove("SPILLWAY_CONFIG")
        .stdout(std::fs::File::create(&up_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let said = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&up_log)
            .unwrap_or_default()
            .contains("added the context `spillway-up` to your")
    });
    let log = std::fs::read_to_string(&up_log).unwrap_or_default();
    let ready = said
        && wait_until(Duration::from_secs(30), || {
            let (ok, out, _) = spillway(&["get", "nodes"]);
            ok && out.contains("local") && out.contains("Ready")
        });
    let _ = up.kill();
    let _ = up.wait();
    assert!(said && ready, "{log}");
    assert!(
        log.contains("back to yours: spillway config use-context default"),
        "{log}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# my own, by hand\n"), "{text}");
    assert_eq!(spillway(&["config", "current-context"]).1, "spillway-up\n");
    let (ok, _, err) = spillway(&["config", "use-context", "default"]);
    assert!(ok, "{err}");
    assert_eq!(server(&[]), "coordinator");
}
