//! The README's five-minute tour, run as a reader would run it, so it cannot rot: every `sh`
//! block of its "Five-minute tour" section, in order, in a fresh folder that holds this
//! repository's `configs/` and `tests/`, with the `spillway` under test first on `PATH` and a
//! home of its own. The block that starts `spillway up` is the reader's first terminal: it runs
//! in the background until the tour ends. Every other block must succeed, and each of its
//! `# → TEXT` comments is a claim: TEXT must be in what the block printed.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{bin, repo, wait_until};

/// The `sh` blocks of the README's section `heading`, in order.
fn blocks(readme: &str, heading: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("the README has no section {heading}"));
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                found.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed block in {heading}");
    found
}

/// The `# → TEXT` claims of a block.
fn claims(block: &str) -> Vec<&str> {
    block
        .lines()
        .filter_map(|l| l.split_once("# → ").map(|(_, claim)| claim.trim()))
        .collect()
}

struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        // Ctrl-C, as the reader stops it.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        if !wait_until(Duration::from_secs(20), || {
            self.0.try_wait().is_ok_and(|s| s.is_some())
        }) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn every_block_of_the_readmes_tour_runs_and_prints_what_it_claims() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let tour = blocks(&readme, "Five-minute tour");
    assert!(tour.len() >= 3, "the tour has {} blocks", tour.len());

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("spillway");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    for shared in ["configs", "tests"] {
        std::os::unix::fs::symlink(repo(shared), work.join(shared)).unwrap();
    }
    let bins = bin("spillway").parent().unwrap().to_owned();
    assert!(bin("spillway-agent").exists());
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shell = |script: &str| {
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", script])
            .current_dir(&work)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", &home)
            .env("LANG", "C.UTF-8");
        cmd
    };

    let mut first_terminal = None;
    for (n, block) in tour.iter().enumerate() {
        if block.trim_start().starts_with("spillway up") {
            let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
            first_terminal = Some(Background(
                shell(&format!("exec {}", block.trim()))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            ));
            let up_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap();
            // The reader's second terminal opens once the node is Ready and runs what was
            // applied (a second or so).
            let ready = wait_until(Duration::from_secs(60), || {
                let deployed = shell("spillway -o json get functions").output().ok();
                shell("spillway get nodes | grep -q Ready")
                    .output()
                    .is_ok_and(|o| o.status.success())
                    && deployed.is_some_and(|o| {
                        serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|fs| {
                            fs.as_array().is_some_and(|fs| {
                                !fs.is_empty()
                                    && fs.iter().all(|f| {
                                        f["nodes"].as_array().is_some_and(|n| !n.is_empty())
                                    })
                            })
                        })
                    })
            });
            assert!(
                ready,
                "block {n} (`spillway up`) did not become ready:\n{}",
                up_log()
            );
            continue;
        }
        assert!(
            first_terminal.is_some(),
            "block {n} runs before any `spillway up` block:\n{block}"
        );
        let out = shell(&format!(
            "timeout 120 bash -euo pipefail -c {}",
            shell_quote(block)
        ))
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "tour block {n} failed:\n{block}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- spillway up\n{}",
            std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
        );
        for claim in claims(block) {
            assert!(
                stdout.contains(claim),
                "tour block {n} claims `{claim}`, but printed:\n{stdout}\n{stderr}"
            );
        }
    }
    // What the tour downloads is the grayscale function's PNG.
    let gray = std::fs::read(work.join("gray.png")).unwrap();
    assert!(gray.starts_with(b"\x89PNG"), "gray.png is not a PNG");
    drop(first_terminal);
    assert!(Path::new(&work.join("spillway-data")).is_dir());
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
