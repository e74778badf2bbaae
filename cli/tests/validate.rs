//! `spillway validate` as scripts use it: diagnostics on stderr, exit 0 or 1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn spillway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn validate_accepts_the_three_thesis_figures() {
    let out = spillway()
        .arg("validate")
        .args(
            [
                "fig2.2-av-workflow.yaml",
                "fig3.2-mask-detector.yaml",
                "fig5.4-fire-detection.yaml",
            ]
            .map(|f| repo("configs/examples/thesis").join(f)),
        )
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(": valid (").count(), 3, "{stdout}");
}

#[test]
fn validate_exits_1_and_points_at_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "functions:\n  oscar:\n  - fog:\n      name: fire\n      image: x\n      memory: 1 gigabyte\n").expect("write");
    let out = spillway()
        .arg("validate")
        .arg(&bad)
        .arg(repo("configs/quickstart/functions.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}:6:15: functions.oscar[0].fog.memory: error: cannot read memory",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("functions.yaml: valid (2 functions: grayscale, archive; 0 warnings)")
    );
}
