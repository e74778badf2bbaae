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

use support::oci::{ImageSpec, busybox_layer, gzip, host_arch, layer, skopeo_copy, write_layout};
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
    let layout = tmp.path().join("layout");
    write_layout(&layout, "1", &[image]);
    let archive = tmp.path().join("probe.tar");
    skopeo_copy(
        &format!("oci:{}:1", layout.display()),
        &format!("oci-archive:{}:localhost/probe:1", archive.display()),
        &[],
    );

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
