//! The standalone agent as a user runs it: a real process, real inotify, real files.

mod support;

use std::time::{Duration, Instant};

use support::{Node, files_under, repo, wait_until};

/// Copies the quickstart (config, FDL, example functions) into a fresh node.
fn quickstart_node() -> Node {
    let node = Node::new("");
    for (from, to) in [
        (
            "configs/quickstart/functions.yaml",
            "configs/quickstart/functions.yaml",
        ),
        (
            "configs/examples/grayscale/grayscale.wasm",
            "configs/examples/grayscale/grayscale.wasm",
        ),
        (
            "configs/examples/archive/archive.sh",
            "configs/examples/archive/archive.sh",
        ),
    ] {
        node.write(to, std::fs::read(repo(from)).expect("quickstart file"));
    }
    let config =
        std::fs::read_to_string(repo("configs/quickstart/agent.toml")).expect("quickstart config");
    node.write("configs/quickstart/agent.toml", config);
    node
}

#[test]
fn quickstart_turns_a_dropped_image_into_results_through_a_two_step_workflow() {
    let mut node = quickstart_node();
    // Run it exactly as the README does: the quickstart config, paths relative to it.
    std::fs::rename(
        node.path("configs/quickstart/agent.toml"),
        node.path("agent.toml"),
    )
    .expect("move config");
    let text = std::fs::read_to_string(node.path("agent.toml")).expect("read");
    std::fs::write(
        node.path("agent.toml"),
        text.replace(
            "\"functions.yaml\"",
            "\"configs/quickstart/functions.yaml\"",
        ),
    )
    .expect("write");
    node.start();
    let banner = node.banner.join("\n");
    assert!(banner.contains("2 functions deployed"), "{banner}");
    assert!(
        banner.contains(&format!(
            "drop files into  {}",
            node.path("data/images/input").display()
        )),
        "{banner}"
    );

    let png = std::fs::read(repo("tests/fixtures/gradient.png")).expect("fixture");
    let dropped = Instant::now();
    node.write("data/images/input/gradient.png", &png);
    let gray = node.path("data/images/output/gradient-gray.png");
    assert!(
        wait_until(Duration::from_secs(10), || gray.exists()),
        "no result; log:\n{}",
        node.log()
    );
    let latency = dropped.elapsed();
    let archive = node.path("data/images/archive");
    // Count only delivered files: a `.part` is a delivery still being written.
    assert!(
        wait_until(Duration::from_secs(10), || files_under(&archive)
            .iter()
            .filter(|f| !f.ends_with(".part"))
            .count()
            == 4
            && !files_under(&archive).iter().any(|f| f.ends_with(".part"))),
        "archive step did not finish: {:?}",
        files_under(&archive)
    );
    assert_eq!(
        files_under(&archive),
        vec![
            "gradient-gray.png.gz",
            "gradient-gray.png.sha256",
            "gradient-thumb.png.gz",
            "gradient-thumb.png.sha256"
        ]
    );
    let sums = std::fs::read_to_string(archive.join("gradient-gray.png.sha256")).expect("sha file");
    assert!(sums.ends_with("  gradient-gray.png\n"), "{sums}");
    assert!(latency < Duration::from_secs(5), "result took {latency:?}");
    let jobs = node.jobs();
    assert_eq!(
        jobs.iter().filter(|j| j.contains("Succeeded")).count(),
        3,
        "{jobs:?}"
    );
    assert_eq!(node.stop().code(), Some(0), "clean shutdown on SIGTERM");
}

const SLOW_FDL: &str = r#"functions:
  oscar:
  - edge:
      name: slow
      runtime: process
      script: slow.sh
      cpu: '0.5'
      memory: 32Mi
      input:
      - storage_provider: minio.default
        path: frames/in
      output:
      - storage_provider: minio.default
        path: frames/out
      environment:
        Variables:
          LEDGER: LEDGER_PATH
"#;

const SLOW_SH: &str = "echo \"$JOB_ID\" >> \"$LEDGER\"\nsleep 0.4 &\nwait\nprintf 'processed %s' \"$(cat \"$INPUT_FILE_PATH\")\" > \"$TMP_OUTPUT_DIR/$FILE_NAME.out\"\n";

/// A node with the slow function, whose runs write their job ids to the returned ledger on
/// the host (a trusted setup: its jobs run as root).
fn slow_node() -> (Node, std::path::PathBuf) {
    let node = Node::new(
        "functions = [\"slow.yaml\"]\n[resources]\ncpu = 2\nmemory = \"1Gi\"\n[process]\nuser = \"root\"\n",
    );
    let ledger = node.path("ledger.txt");
    node.write(
        "slow.yaml",
        SLOW_FDL.replace("LEDGER_PATH", &ledger.display().to_string()),
    );
    node.write("slow.sh", SLOW_SH);
    (node, ledger)
}

/// The job ids in the ledger, one per run, sorted.
fn ledger_ids(ledger: &std::path::Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_graceful_stop_while_jobs_run_records_what_ends_and_nothing_runs_twice() {
    let (mut node, ledger) = slow_node();
    node.start();
    for i in 0..12 {
        node.write(&format!("data/frames/in/f{i:02}.txt"), format!("frame {i}"));
    }
    let out = node.path("data/frames/out");
    // Stop (SIGTERM) once the first are done: others are running, and end in the grace period.
    assert!(
        wait_until(Duration::from_secs(20), || !files_under(&out).is_empty()),
        "nothing ran; log:\n{}",
        node.log()
    );
    assert!(node.stop().success());
    assert!(
        files_under(&out).len() < 12,
        "the stop came too late to test anything"
    );
    node.start();
    assert!(
        wait_until(Duration::from_secs(60), || files_under(&out).len() == 12
            && node.jobs().len() == 12),
        "only {:?}; log:\n{}",
        files_under(&out),
        node.log()
    );
    let ids = ledger_ids(&ledger);
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "a job ran twice; log:\n{}", node.log());
    assert_eq!(ids.len(), 12);
    assert!(node.stop().success());
}

#[test]
fn sigkill_with_jobs_queued_and_running_loses_nothing_and_duplicates_nothing() {
    // The jobs write a ledger on the host to prove each ran once.
    let (mut node, ledger) = slow_node();
    node.start();
    assert!(
        node.banner
            .iter()
            .any(|l| l.contains("slow (process, 4 at a time)")),
        "{:?}",
        node.banner
    );
    for i in 0..16 {
        node.write(&format!("data/frames/in/f{i:02}.txt"), format!("frame {i}"));
    }
    let out = node.path("data/frames/out");
    // Kill once the first jobs are done: 4 run at a time, so others are running or queued.
    assert!(
        wait_until(Duration::from_secs(20), || !files_under(&out).is_empty()),
        "nothing ran; log:\n{}",
        node.log()
    );
    node.kill9();
    let before_restart = files_under(&out).len();
    assert!(
        before_restart < 16,
        "the kill came too late to test anything ({before_restart} done)"
    );
    // Files that arrive while the agent is down are picked up by the start-up rescan.
    for i in 16..20 {
        node.write(&format!("data/frames/in/f{i:02}.txt"), format!("frame {i}"));
    }
    node.start();
    assert!(
        wait_until(Duration::from_secs(60), || files_under(&out).len() == 20),
        "only {:?}; log:\n{}",
        files_under(&out),
        node.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || node.jobs().len() == 20),
        "{:?}",
        node.jobs()
    );

    let expected: Vec<String> = (0..20).map(|i| format!("f{i:02}.txt.out")).collect();
    assert_eq!(
        files_under(&out),
        expected,
        "exactly one output per input, no temporary files"
    );
    for i in 0..20 {
        let content =
            std::fs::read_to_string(out.join(format!("f{i:02}.txt.out"))).expect("output");
        assert_eq!(content, format!("processed frame {i}"));
    }
    let jobs = node.jobs();
    assert!(jobs.iter().all(|j| j.contains("Succeeded")), "{jobs:#?}");
    let runs = ledger_ids(&ledger);
    let distinct: std::collections::BTreeSet<&String> = runs.iter().collect();
    assert_eq!(distinct.len(), 20, "every job ran");
    assert!(
        runs.len() - 20 <= 4,
        "only runs interrupted by the kill (at most 4 slots) ran again: {} runs",
        runs.len()
    );

    // A third start finds the same files and the same job ids: nothing runs again.
    node.stop();
    node.start();
    std::thread::sleep(Duration::from_millis(1500));
    let after = ledger_ids(&ledger).len();
    assert_eq!(after, runs.len(), "a restart re-ran finished jobs");
    assert!(
        orphans_of(&ledger).is_empty(),
        "processes of killed runs are still alive: {:?}",
        orphans_of(&ledger)
    );
}

/// Processes still carrying this test's ledger path in their environment.
fn orphans_of(ledger: &std::path::Path) -> Vec<i32> {
    let marker = format!("LEDGER={}", ledger.display());
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    env.split(|b| *b == 0).any(|v| v == marker.as_bytes())
                })
                .collect()
        })
        .unwrap_or_default()
}

const BAD_FDL: &str = r#"functions:
  oscar:
  - edge:
      name: good
      command: ["/bin/sh", "-c", "cp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/\""]
      input: [{storage_provider: minio, path: inbox/good}]
      output: [{storage_provider: minio, path: outbox/good}]
  - edge:
      name: fails
      command: "echo 'cannot find model weights' >&2; exit 3"
      input: [{storage_provider: minio, path: inbox/fails}]
  - edge:
      name: huge
      command: "true"
      memory: 64Gi
      input: [{storage_provider: minio, path: inbox/huge}]
  - edge:
      name: container
      image: "ghcr.io/grycap/Fire Detection"
      script: missing.sh
  - edge:
      name: noscript
      runtime: process
      script: missing.sh
  - edge:
      name: selfloop
      command: "true"
      input: [{storage_provider: minio, path: loop/in}]
      output: [{storage_provider: minio, path: loop/in/again}]
"#;

#[test]
fn bad_inputs_fail_visibly_and_the_agent_keeps_working() {
    let mut node = Node::new(
        "functions = [\"bad.yaml\", \"broken.yaml\"]\n[resources]\ncpu = 2\nmemory = \"2Gi\"\n",
    );
    node.write("bad.yaml", BAD_FDL);
    node.write(
        "broken.yaml",
        "functions:\n  oscar:\n  - edge: {name: x, runtime: docker}\n",
    );
    node.start();
    let banner = node.banner.join("\n");
    for expected in [
        "NOT DEPLOYED huge: function `huge` asks for 64Gi of memory per job but this node offers 2Gi",
        "NOT DEPLOYED container: function `container`: `ghcr.io/grycap/Fire Detection` is not an image reference",
        "NOT DEPLOYED noscript: function `noscript`: script",
        "broken.yaml has errors",
        "NOT DEPLOYED selfloop: output `loop/in/again` is inside its own input folder",
    ] {
        assert!(
            banner.contains(expected),
            "missing {expected:?} in\n{banner}"
        );
    }
    assert!(
        node.log().contains(
            "broken.yaml:3:30: functions.oscar[0].edge.runtime: error: unknown runtime `docker`"
        ),
        "{}",
        node.log()
    );

    node.write("data/inbox/good/bad\nname.txt", "x");
    node.write("data/inbox/fails/a.txt", "x");
    let link = node.path("link.txt");
    std::os::unix::fs::symlink("/etc/hostname", &link).expect("symlink");
    std::fs::rename(&link, node.path("data/inbox/good/link.txt")).expect("move the link in");
    node.write("data/inbox/good/fine.txt", "fine");
    let outbox = node.path("data/outbox/good");
    assert!(
        wait_until(Duration::from_secs(10), || files_under(&outbox)
            == vec!["fine.txt"]),
        "{:?}\n{}",
        files_under(&outbox),
        node.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || node.jobs().len() == 4),
        "{:?}",
        node.jobs()
    );
    let jobs = node.jobs();
    let id_of = |needle: &str| {
        jobs.iter()
            .find(|j| j.contains(needle))
            .map(|j| j[..12].to_owned())
            .unwrap_or_else(|| panic!("no job for {needle}: {jobs:?}"))
    };

    let (_, log, _) = node.agent_cli(&["logs", &id_of("fails")]);
    assert!(log.contains("state:    Failed"), "{log}");
    assert!(log.contains("reason:   `echo 'cannot find model weights' >&2; exit 3` exited with status 3; last stderr line: cannot find model weights"), "{log}");
    let (_, log, _) = node.agent_cli(&["logs", &id_of("bad?name")]);
    assert!(log.contains("input file name refused: the name \"bad\\nname.txt\" contains the control character U+000A"), "{log}");

    let (_, log, _) = node.agent_cli(&["logs", &id_of("link.txt")]);
    assert!(
        log.contains("link.txt is or leads through a symbolic link, which inputs may not be"),
        "{log}"
    );

    let (ok, _, err) = node.agent_cli(&["logs", "ffffffffffff"]);
    assert!(
        !ok && err.contains("no log for job `ffffffffffff`"),
        "{err}"
    );

    // Nothing was written outside the data root and the state dir.
    let top: std::collections::BTreeSet<String> = files_under(node.dir.path())
        .into_iter()
        .map(|p| p.split('/').next().unwrap_or("").to_owned())
        .collect();
    let allowed = [
        "agent.log",
        "agent.toml",
        "bad.yaml",
        "broken.yaml",
        "data",
        "state",
    ];
    assert!(
        top.iter().all(|t| allowed.contains(&t.as_str())),
        "unexpected files: {top:?}"
    );
    assert!(
        node.child
            .as_mut()
            .expect("running")
            .try_wait()
            .expect("status")
            .is_none(),
        "the agent must keep running"
    );
}

const FLAKY_FDL: &str = r#"functions:
  oscar:
  - edge:
      name: needs-model
      script: run.sh
      input: [{storage_provider: minio, path: in/frames}]
      output: [{storage_provider: minio, path: out/frames}]
      environment: {Variables: {MODEL: MODEL_PATH}}
"#;

#[test]
fn every_new_write_of_an_input_runs_once_identical_or_not_and_restarts_rerun_nothing() {
    // The function looks for a model file on the host, as a trusted setup would (root).
    let mut node = Node::new("functions = [\"f.yaml\"]\n[process]\nuser = \"root\"\n");
    let model = node.path("model.bin");
    node.write(
        "f.yaml",
        FLAKY_FDL.replace("MODEL_PATH", &model.display().to_string()),
    );
    node.write("run.sh", "[ -e \"$MODEL\" ] || { echo 'model missing' >&2; exit 3; }\ncp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/\"\n");
    node.start();
    node.write("data/in/frames/a.txt", "frame");
    let failed = |n: &Node| n.jobs().iter().any(|j| j.contains("Failed"));
    assert!(
        wait_until(Duration::from_secs(10), || failed(&node)),
        "{:?}\n{}",
        node.jobs(),
        node.log()
    );

    // A restart rescans the folder and finds the same file: the failure stands.
    node.stop();
    node.write("model.bin", "weights");
    node.start();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        failed(&node) && !node.path("data/out/frames/a.txt").exists(),
        "a restart must not retry: {:?}",
        node.jobs()
    );

    // Writing the input again, byte for byte, is a new upload: a new job runs it (as every
    // upload does in OSCAR); the failed one stays as it was.
    node.write("data/in/frames/a.txt", "frame");
    let out = node.path("data/out/frames/a.txt");
    assert!(
        wait_until(Duration::from_secs(10), || out.exists()),
        "{:?}\n{}",
        node.jobs(),
        node.log()
    );
    let states = |n: &Node| {
        let mut states: Vec<String> = n
            .jobs()
            .iter()
            .filter_map(|j| j.split_whitespace().nth(1).map(str::to_owned))
            .collect();
        states.sort();
        states
    };
    assert!(
        wait_until(Duration::from_secs(5), || states(&node)
            == ["Failed", "Succeeded"]),
        "{:?}",
        node.jobs()
    );
    // Once more after it succeeded, identical again: one more job, not a remembered result.
    std::fs::remove_file(&out).expect("rm output");
    node.write("data/in/frames/a.txt", "frame");
    assert!(
        wait_until(Duration::from_secs(10), || states(&node)
            == ["Failed", "Succeeded", "Succeeded"]),
        "{:?}\n{}",
        node.jobs(),
        node.log()
    );
    assert!(out.exists(), "the third write ran and delivered");
    // A restart rescans the same file, the same write: nothing runs again.
    node.stop();
    node.start();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        states(&node),
        ["Failed", "Succeeded", "Succeeded"],
        "{:?}",
        node.jobs()
    );
}

#[test]
fn a_config_named_without_a_folder_resolves_against_the_current_one() {
    let node = Node::new("");
    let out = std::process::Command::new(support::bin("spillway-agent"))
        .args(["--config", "agent.toml", "jobs"])
        .current_dir(node.dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_config_exits_64_with_the_reason() {
    let node = Node::new("datarot = 1\n");
    let out = std::process::Command::new(support::bin("spillway-agent"))
        .arg("--config")
        .arg(node.path("agent.toml"))
        .arg("run")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid config file") && err.contains("datarot"),
        "{err}"
    );
}

#[test]
fn a_wasm_module_finds_its_output_folder_where_scar_put_it() {
    let mut node = Node::new("functions = [\"f.yaml\"]\n");
    let module = node.path("scar_output.wasm");
    let built = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&module)
        .arg(repo("tests/fixtures/probes/scar_output.c"))
        .status()
        .expect("clang (Debian's, with wasi-libc)");
    assert!(built.success(), "clang --target=wasm32-wasi");
    node.write(
        "f.yaml",
        "functions:\n  oscar:\n  - edge:\n      name: ported\n      runtime: wasm\n      module: scar_output.wasm\n      input: [{storage_provider: minio, path: ported/in}]\n      output: [{storage_provider: minio, path: ported/out}]\n",
    );
    node.start();
    node.write("data/ported/in/a.txt", "a");
    let out = node.path("data/ported/out/scar.txt");
    assert!(
        wait_until(Duration::from_secs(30), || out.exists()),
        "{:?}\n{}",
        node.jobs(),
        node.log()
    );
    assert_eq!(
        std::fs::read_to_string(out).expect("output"),
        "via SCAR's folder\n"
    );
    node.stop();
}

#[test]
fn the_journal_keeps_only_its_retention_and_a_removed_jobs_input_never_runs_again() {
    let mut node = Node::new("functions = [\"copy.yaml\"]\n[retention]\nkeep_finished_jobs = 5\n");
    node.write(
        "copy.yaml",
        "functions:\n  oscar:\n  - edge:\n      name: copy\n      runtime: process\n      script: copy.sh\n      cpu: '0.1'\n      memory: 16Mi\n      input:\n      - storage_provider: minio.default\n        path: files/in\n      output:\n      - storage_provider: minio.default\n        path: files/out\n",
    );
    node.write("copy.sh", "cp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/\"\n");
    node.start();
    for i in 0..12 {
        node.write(&format!("data/files/in/f{i:02}.txt"), format!("{i}"));
    }
    let out = node.path("data/files/out");
    // Outputs land before their job is recorded finished (and its log written): wait for both.
    assert!(
        wait_until(Duration::from_secs(30), || files_under(&out).len() == 12
            && node.jobs().len() == 12),
        "{}",
        node.log()
    );
    assert!(node.stop().success());
    let before = node.jobs().len();
    // A restart removes what is past the retention (here: all but the last 5 finished).
    node.start();
    std::thread::sleep(Duration::from_secs(2));
    assert!(node.stop().success());
    assert!(
        node.log()
            .contains("finished jobs past [retention] removed"),
        "{}",
        node.log()
    );
    assert_eq!(before - node.jobs().len(), 7, "{:?}", node.jobs());
    // Their inputs are still in the folder, seen again at every start: none runs again.
    assert_eq!(files_under(&out).len(), 12);
    assert_eq!(
        node.log().matches("succeeded").count(),
        12,
        "{}",
        node.log()
    );
}
