//! A hostile function cannot leave its sandbox by the kernel's side doors: a static C probe
//! (`tests/fixtures/probes/sandbox_probe.c`, built here with gcc) runs in a container function
//! and tries to make namespaces (`clone` with namespace flags, `clone3`, `unshare`) and to use
//! the new mount API (`fsopen`, `open_tree`, `move_mount`, `fsmount`). Each is refused by the
//! seccomp profile; an ordinary fork still works.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::oci::{ImageSpec, busybox_layer, gzip, host_arch, image_archive, layer};
use support::{Node, repo, wait_until};

#[test]
fn a_function_cannot_make_namespaces_or_use_the_new_mount_api() {
    let tmp = tempfile::tempdir().unwrap();
    let probe = tmp.path().join("probe");
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&probe)
        .arg(repo("tests/fixtures/probes/sandbox_probe.c"))
        .status()
        .unwrap();
    assert!(built.success(), "gcc -static");
    let mut image = ImageSpec::busybox("linux", host_arch(), None);
    image.layers = vec![
        gzip(&busybox_layer(&format!("linux/{}", host_arch()))),
        gzip(&layer(
            &[("bin/probe", 0o755, std::fs::read(&probe).unwrap())],
            &[],
        )),
    ];
    let archive = image_archive(tmp.path(), "localhost/probe:1", image);

    let mut node = Node::new("functions = [\"fn.yaml\"]\n");
    let (ok, out, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok, "{out}{err}");
    node.write("probe.sh", "/bin/probe > \"$TMP_OUTPUT_DIR/probe.txt\"\n");
    node.write(
        "fn.yaml",
        "functions:\n  oscar:\n  - edge:\n      name: probe\n      image: localhost/probe:1\n      script: probe.sh\n      timeout: 30\n      input: [{storage_provider: minio, path: probe/in}]\n      output: [{storage_provider: minio, path: probe/out}]\n",
    );
    node.start();
    node.write("data/probe/in/go", "go");
    let report = node.path("data/probe/out/probe.txt");
    assert!(
        wait_until(Duration::from_secs(60), || report.exists()),
        "no report; jobs {:?}\n{}",
        node.jobs(),
        node.log()
    );
    let text = std::fs::read_to_string(&report).unwrap();
    for (attempt, expected) in [
        ("clone(CLONE_NEWUSER)", "EPERM"),
        ("clone(CLONE_NEWNS)", "EPERM"),
        ("clone(CLONE_NEWNET)", "EPERM"),
        ("clone3(CLONE_NEWUSER)", "ENOSYS"),
        ("unshare(CLONE_NEWUSER)", "EPERM"),
        ("fsopen", "EPERM"),
        ("open_tree", "EPERM"),
        ("move_mount", "EPERM"),
        ("fsmount", "EPERM"),
        ("clone(plain)", "ALLOWED"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{attempt} {expected}")),
            "{attempt} should be {expected}:\n{text}"
        );
    }
    node.stop();
}

/// A `process` function runs as `nobody` in a private `/tmp`: it cannot read the agent's state
/// (the node's key, the journal), write its own input or the host's files, or see another
/// job's temporary files, and its outputs still come back. `[process] user = "root"` is the
/// node's explicit way back, and the agent's log says which it is.
#[test]
fn a_process_function_runs_unprivileged_and_cannot_reach_the_agents_state() {
    let script = r#"
out="$TMP_OUTPUT_DIR/report.txt"
echo "uid $(id -u) file $(basename "$INPUT_FILE_PATH")" > "$out"
for f in "$SPY_STATE/identity/node.key.der" "$SPY_STATE/journal.redb" /etc/shadow; do
  if cat "$f" > /dev/null 2>&1; then echo "read $f" >> "$out"; else echo "denied $f" >> "$out"; fi
done
if echo x >> "$INPUT_FILE_PATH" 2>/dev/null; then echo "input writable" >> "$out"; else echo "input read-only" >> "$out"; fi
if touch "$SPY_STATE/../written-by-job" 2>/dev/null; then echo "host writable" >> "$out"; else echo "host read-only" >> "$out"; fi
echo "tmp $(ls -A /tmp | tr '\n' ' ')" >> "$out"
echo "request $REQUEST_ID" >> "$out"
echo "marker" > /tmp/left-by-job
# SCAR's name for the output folder (in the private /tmp only: root runs on the host's).
if [ -d "/tmp/$REQUEST_ID/output" ]; then
  echo "via SCAR's folder" > "/tmp/$REQUEST_ID/output/scar.txt"
fi
"#;
    let fdl = "functions:\n  oscar:\n  - edge:\n      name: spy\n      runtime: process\n      script: spy.sh\n      input: [{storage_provider: minio, path: spy/in}]\n      output: [{storage_provider: minio, path: spy/out}]\n";
    let mut node = Node::new("functions = [\"fn.yaml\"]\n");
    node.write("spy.sh", script);
    node.write("fn.yaml", fdl);
    // The script learns where the agent's state is, as an attacker would guess it.
    let state = node.path("state");
    node.write("spy.sh", format!("SPY_STATE={}\n{script}", state.display()));
    node.start();
    assert!(
        node.log().contains("process functions run as user nobody"),
        "{}",
        node.log()
    );
    node.write("data/spy/in/a", "a");
    let report = node.path("data/spy/out/report.txt");
    assert!(
        wait_until(Duration::from_secs(30), || report.exists()),
        "no report; jobs {:?}\n{}",
        node.jobs(),
        node.log()
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("uid 65534"), "{text}");
    for secret in ["identity/node.key.der", "journal.redb", "/etc/shadow"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("denied") && l.ends_with(secret)),
            "{secret} was readable:\n{text}"
        );
    }
    assert!(text.contains("input read-only"), "{text}");
    assert!(text.contains("host read-only"), "{text}");
    assert!(!node.path("written-by-job").exists());
    assert_eq!(
        std::fs::read_to_string(node.path("data/spy/in/a")).unwrap(),
        "a"
    );
    // A second job's /tmp holds its own folders only, not the first job's marker.
    node.write("data/spy/in/b", "b");
    let second = node.path("data/spy/out/report.txt");
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(&second)
            .is_ok_and(|t| t.contains("file b"))),
        "{}",
        node.log()
    );
    let text = std::fs::read_to_string(&second).unwrap();
    let request = text
        .lines()
        .find_map(|l| l.strip_prefix("request "))
        .unwrap_or_else(|| panic!("{text}"));
    // Its own folders only: Spillway's, and SCAR's `/tmp/$REQUEST_ID` (the output again).
    let own = format!("tmp {request} spillway ");
    assert!(text.lines().any(|l| l == own), "{text}");
    assert!(!text.contains("left-by-job"), "{text}");
    assert_eq!(
        std::fs::read_to_string(node.path("data/spy/out/scar.txt")).unwrap(),
        "via SCAR's folder\n"
    );
    assert!(node.stop().success());

    // The node's explicit choice: root, as before, and the log says so.
    let mut root = Node::new("functions = [\"fn.yaml\"]\n[process]\nuser = \"root\"\n");
    root.write(
        "spy.sh",
        format!("SPY_STATE={}\n{script}", root.path("state").display()),
    );
    root.write("fn.yaml", fdl);
    root.start();
    root.write("data/spy/in/a", "a");
    let report = root.path("data/spy/out/report.txt");
    assert!(
        wait_until(Duration::from_secs(30), || report.exists()),
        "{}",
        root.log()
    );
    assert!(std::fs::read_to_string(&report).unwrap().contains("uid 0"));
    assert!(!root.path("data/spy/out/scar.txt").exists());
    assert!(
        root.log()
            .contains("process functions run as the agent's own user")
    );
}
