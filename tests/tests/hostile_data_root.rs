//! The data root is a boundary: inputs, deliveries and the coordinator's file requests (`spillway
//! put`, `get`, `get files`) never follow a symbolic link, in or out of the data root. An input
//! swapped for a link while its job was queued fails the job with the reason, and the function
//! never sees what the link points at.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{Coordinator, Node, files_under, wait_until};

const SLOW_FDL: &str = r#"
functions:
  oscar:
  - edge:
      name: copy
      runtime: process
      script: copy.sh
      cpu: '1'
      memory: 32Mi
      input:
      - storage_provider: minio.default
        path: inbox/in
      output:
      - storage_provider: minio.default
        path: inbox/out
      environment:
        Variables:
          MARKS: MARKS_DIR
"#;

/// A folder outside the node with a secret an attacker would like to read or overwrite.
fn outside() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the host's secret").unwrap();
    (dir, secret)
}

#[test]
fn an_input_swapped_for_a_symlink_while_queued_fails_its_job_and_nothing_outside_is_read() {
    let (_outside, secret) = outside();
    // One slot: the second file waits behind the first, long enough to be swapped.
    // The function marks on the host when it starts (the test's clock): run as root.
    let mut node = Node::new(
        "functions = [\"fn.yaml\"]\n[resources]\ncpu = 1\nmemory = \"1Gi\"\n[process]\nuser = \"root\"\n",
    );
    node.write(
        "fn.yaml",
        SLOW_FDL.replace("MARKS_DIR", &node.path("marks").display().to_string()),
    );
    node.write(
        "copy.sh",
        "touch \"$MARKS/$FILE_NAME\"\ncat \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/$FILE_NAME\"\nsleep 2\n",
    );
    std::fs::create_dir_all(node.path("marks")).unwrap();
    node.start();
    node.write("data/inbox/in/first.txt", "first");
    assert!(
        wait_until(Duration::from_secs(10), || node
            .path("marks/first.txt")
            .exists()),
        "{}",
        node.log()
    );
    // The second job queues behind the first (one slot, two seconds): its input is swapped for
    // a link to the host's secret before it starts.
    node.write("data/inbox/in/second.txt", "second");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!node.path("marks/second.txt").exists(), "not queued");
    let link = node.path("swap");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    std::fs::rename(&link, node.path("data/inbox/in/second.txt")).unwrap();
    let out = node.path("data/inbox/out");
    let failed_at_start = || {
        node.jobs()
            .into_iter()
            .filter(|j| j.contains("second.txt") && j.contains("Failed"))
            .map(|j| node.agent_cli(&["logs", &j[..12]]).1)
            .find(|log| log.contains("is gone or unreadable"))
    };
    assert!(
        wait_until(Duration::from_secs(20), || failed_at_start().is_some()),
        "{:?}\n{}",
        node.jobs(),
        node.log()
    );
    let log = failed_at_start().unwrap();
    assert!(log.contains("symbolic link"), "{log}");
    assert!(
        !node.path("marks/second.txt").exists(),
        "the function ran on the link"
    );
    for f in files_under(&out) {
        let text = std::fs::read_to_string(out.join(&f)).unwrap_or_default();
        assert!(!text.contains("secret"), "{f} holds the host's secret");
    }
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "the host's secret"
    );
}

#[test]
fn file_requests_through_a_symlink_are_refused_and_nothing_is_made_outside() {
    let (outside, secret) = outside();
    let c = Coordinator::new();
    let mut node = Node::new("node_name = \"pi-1\"\n");
    c.join(&node);
    node.start();
    assert!(
        wait_until(Duration::from_secs(20), || c
            .json(&["get", "nodes"])
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["health"] == "Ready"))),
        "{}",
        c.log()
    );
    std::fs::create_dir_all(node.path("data")).unwrap();
    std::os::unix::fs::symlink(outside.path(), node.path("data/escape")).unwrap();
    std::os::unix::fs::symlink(&secret, node.path("data/leak")).unwrap();
    let upload = node.path("upload.txt");
    std::fs::write(&upload, "overwrite").unwrap();
    let upload = upload.display().to_string();

    let (ok, _, err) = c.cli(&["put", &upload, "pi-1:escape/secret"]);
    assert!(!ok && err.contains("symbolic link"), "{err}");
    let (ok, _, err) = c.cli(&["put", &upload, "pi-1:escape/made/new.txt"]);
    assert!(!ok && err.contains("symbolic link"), "{err}");
    let (ok, out, err) = c.cli(&["get", "pi-1:escape/secret"]);
    assert!(
        !ok && !out.contains("secret") && err.contains("symbolic link"),
        "{out}{err}"
    );
    let (ok, out, err) = c.cli(&["get", "pi-1:leak"]);
    assert!(!ok && !out.contains("secret"), "{out}{err}");
    let (_, out, _) = c.cli(&["get", "files", "pi-1", "escape"]);
    assert!(!out.contains("secret"), "{out}");

    assert_eq!(files_under(outside.path()), vec!["secret"]);
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "the host's secret"
    );
    // An ordinary upload still works.
    let (ok, _, err) = c.cli(&["put", &upload, "pi-1:bucket/ok.txt"]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(node.path("data/bucket/ok.txt")).unwrap(),
        "overwrite"
    );
}
