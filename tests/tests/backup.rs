//! A coordinator's state backed up while it runs, lost with its disk, and restored: its agents
//! carry on against the restored coordinator without joining again.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::{Coordinator, Node, repo, wait_until};

const FDL: &str = "tests/fixtures/mesh/functions.yaml";
const PASSPHRASE: &str = "correct horse battery staple";

/// `age -d FILE` with `passphrase` typed at the terminal it asks on.
fn age_decrypt(file: &Path, passphrase: &str) -> Vec<u8> {
    let out = file.with_extension("tar");
    let script = r#"
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp("age", ["age", "-d", "-o", sys.argv[1], sys.argv[2]])
time.sleep(0.5)
os.write(fd, (sys.argv[3] + "\n").encode())
try:
    while os.read(fd, 1024):
        pass
except OSError:
    pass
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&out)
        .arg(file)
        .arg(passphrase)
        .status()
        .expect("python3 (apt-get install python3 age)");
    assert!(status.success(), "age -d failed");
    std::fs::read(out).unwrap()
}

/// `spillway admin restore BACKUP --state-dir STATE --passphrase-file PASS EXTRA…`.
fn restore(
    c: &Coordinator,
    backup: &Path,
    state: &Path,
    pass: &Path,
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec![
        "admin",
        "restore",
        backup.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    c.cli(&args)
}

fn invoke(c: &Coordinator, text: &str) -> (bool, String) {
    let input = c.dir.path().join(format!("{text}.txt"));
    std::fs::write(&input, text).unwrap();
    let (ok, out, err) = c.cli(&[
        "invoke",
        "upper",
        "--file",
        input.to_str().unwrap(),
        "--wait",
        "--timeout",
        "30s",
    ]);
    (ok && out.contains("Succeeded"), format!("{out}{err}"))
}

#[test]
fn a_coordinator_restored_from_an_online_backup_keeps_its_agents_without_rejoining() {
    let mut c = Coordinator::new();
    let mut node = Node::new("node_name = \"pi-1\"\n");
    c.join(&node);
    node.start();
    let (ok, _, err) = c.cli(&["apply", "-f", repo(FDL).to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(wait_until(Duration::from_secs(20), || c.runs("pi-1", "upper")));
    let (ran, out) = invoke(&c, "before");
    assert!(ran, "{out}");
    let joined = c.node_view("pi-1")["joined_at_ms"].clone();

    // Taken while the coordinator serves.
    let pass = c.dir.path().join("backup.pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let backup = c.dir.path().join("coordinator.age");
    let (ok, out, err) = c.cli(&[
        "admin",
        "backup",
        backup.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("read back and checked"), "{out}{err}");
    let sealed = std::fs::read(&backup).unwrap();
    assert!(
        sealed.starts_with(b"age-encryption.org/v1\n"),
        "an age file"
    );
    let ca_key = std::fs::read(c.dir.path().join("state/ca/ca.key")).unwrap();
    assert!(
        !sealed
            .windows(ca_key.len().min(64))
            .any(|w| ca_key.starts_with(w)),
        "the CA's key is encrypted"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the backup is its owner's only");

    // An operator opens it with the age tool (Debian's `age`, which reads the passphrase from a
    // terminal): a tar of the state with a manifest.
    let opened = age_decrypt(&backup, PASSPHRASE);
    assert!(
        opened.windows(ca_key.len()).any(|w| w == ca_key.as_slice())
            && opened.windows(20).any(|w| w == b"spillway-backup.json"),
        "age -d opens it"
    );

    // A scoped token cannot take one: it holds the CA's key.
    let (ok, operator, err) = c.cli(&["api-token", "create", "--scope", "operator"]);
    assert!(ok, "{err}");
    let (status, _, body) = c.post_json(
        operator.trim(),
        "/v1/admin/backup",
        &format!("{{\"passphrase\": \"{PASSPHRASE}\"}}"),
    );
    assert_eq!(status, 403, "{body}");

    // The coordinator's disk dies.
    c.kill9();
    let state = c.dir.path().join("state");
    std::fs::remove_dir_all(&state).unwrap();

    // A wrong passphrase restores nothing.
    let wrong = c.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not the right passphrase\n").unwrap();
    let (ok, _, err) = restore(&c, &backup, &state, &wrong, &[]);
    assert!(!ok && err.contains("a wrong passphrase"), "{err}");
    assert!(!state.exists(), "nothing restored");

    let (ok, out, err) = restore(&c, &backup, &state, &pass, &[]);
    assert!(ok && out.contains("restored coordinator"), "{out}{err}");
    c.start();

    // The agent reconnects with the certificate it has, and works.
    assert!(
        wait_until(Duration::from_secs(60), || c.health("pi-1").as_deref()
            == Some("Ready")),
        "{}\n{}",
        c.log(),
        node.log()
    );
    let (ran, out) = invoke(&c, "after");
    assert!(ran, "{out}\n{}", node.log());
    assert_eq!(
        c.node_view("pi-1")["joined_at_ms"],
        joined,
        "the same membership"
    );
    assert!(
        c.json(&["get", "jobs"]).to_string().contains("before.txt"),
        "the job from before the loss is remembered"
    );

    // Never under a running coordinator, even forced.
    let (ok, _, err) = restore(&c, &backup, &state, &pass, &["--force"]);
    assert!(!ok && err.contains("a coordinator is running on"), "{err}");
    assert!(
        c.cli(&["get", "nodes"]).0,
        "the running coordinator is untouched"
    );
    node.stop();
}
