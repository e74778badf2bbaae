//! The process and wasm runtimes against real scripts and real WASI modules, including the
//! ways functions go wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spillway_agent::runtime::process::ProcessRuntime;
use spillway_agent::runtime::wasm::WasmRuntime;
use spillway_agent::runtime::{Executor, Exit, Outcome, PrepareError, Runtime, StagedJob};
use spillway_agent_config::WasmSettings;
use spillway_proto::fdl;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn function(yaml_entry: &str, dir: &Path) -> spillway_proto::FunctionDef {
    let text = format!("functions:\n  oscar:\n  - edge:\n{yaml_entry}");
    let (doc, _) = fdl::parse_str("test.yaml", &text, dir)
        .into_result()
        .expect("valid test FDL");
    doc.functions.into_iter().next().expect("one function")
}

struct Job {
    _dir: tempfile::TempDir,
    job: StagedJob,
}

fn staged(input_name: &str, input: &[u8], timeout: Duration) -> Job {
    let dir = tempfile::tempdir().expect("tempdir");
    let (i, o, w) = (
        dir.path().join("in"),
        dir.path().join("out"),
        dir.path().join("work"),
    );
    for d in [&i, &o, &w] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(i.join(input_name), input).expect("write input");
    let job = StagedJob {
        job_id: "00112233445566778899aabbccddeeff".into(),
        function: "f".into(),
        input_dir: i,
        output_dir: o,
        work_dir: w,
        file_name: input_name.into(),
        event_json: "{\"Key\":\"b/in/x\"}".into(),
        variables: vec![("GREETING".into(), "hello".into())],
        timeout,
        memory_limit: 64 << 20,
        log_limit: 4096,
        pid_file: dir.path().join("job.pid"),
    };
    Job { _dir: dir, job }
}

async fn run(executor: &Arc<dyn Executor>, job: &Job) -> Outcome {
    executor.execute(job.job.clone()).await
}

fn failure(outcome: &Outcome) -> String {
    match &outcome.exit {
        Exit::Failure(reason) => reason.clone(),
        Exit::Success => panic!(
            "expected a failure; stdout: {} stderr: {}",
            outcome.stdout.render(),
            outcome.stderr.render()
        ),
    }
}

fn wasm_runtime(cache: &Path) -> WasmRuntime {
    WasmRuntime::new(&WasmSettings::default(), cache.to_owned()).expect("engine")
}

fn wat_module(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat).expect("valid WAT")).expect("write module");
    path
}

#[tokio::test]
async fn a_script_sees_the_staging_contract_and_its_outputs_land_in_the_output_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("s.sh"),
        "set -eu\ncp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/$FILE_NAME.copy\"\necho \"$GREETING $JOB_ID $EVENT\"\ntest \"$TMP_INPUT_DIR/$FILE_NAME\" = \"$INPUT_FILE_PATH\"\n",
    )
    .expect("script");
    let f = function("      name: f\n      script: s.sh\n", dir.path());
    let exec = ProcessRuntime::default().prepare(&f).expect("prepare");
    let job = staged("a.txt", b"data", Duration::from_secs(10));
    let outcome = run(&exec, &job).await;
    assert_eq!(outcome.exit, Exit::Success, "{}", outcome.stderr.render());
    assert_eq!(
        std::fs::read(job.job.output_dir.join("a.txt.copy")).expect("output"),
        b"data"
    );
    assert_eq!(
        outcome.stdout.render(),
        "hello 00112233445566778899aabbccddeeff {\"Key\":\"b/in/x\"}\n"
    );
}

#[tokio::test]
async fn a_failing_script_reports_its_status_and_last_stderr_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("s.sh"),
        "echo working\necho 'model file missing' >&2\nexit 3\n",
    )
    .expect("script");
    let f = function("      name: f\n      script: s.sh\n", dir.path());
    let exec = ProcessRuntime::default().prepare(&f).expect("prepare");
    let outcome = run(&exec, &staged("a", b"", Duration::from_secs(10))).await;
    let reason = failure(&outcome);
    assert!(reason.contains("exited with status 3"), "{reason}");
    assert!(
        reason.ends_with("last stderr line: model file missing"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_script_that_runs_too_long_is_killed_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("s.sh"),
        "sleep 300 &\necho $! > \"$TMP_OUTPUT_DIR/child\"\nsleep 300\n",
    )
    .expect("script");
    let f = function("      name: f\n      script: s.sh\n", dir.path());
    let exec = ProcessRuntime::default().prepare(&f).expect("prepare");
    let job = staged("a", b"", Duration::from_secs(1));
    let started = std::time::Instant::now();
    let outcome = run(&exec, &job).await;
    assert!(
        failure(&outcome).starts_with("timed out after 1s"),
        "{}",
        failure(&outcome)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let child: i32 = std::fs::read_to_string(job.job.output_dir.join("child"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    std::thread::sleep(Duration::from_millis(200));
    let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "background child still alive: {state}"
    );
}

#[tokio::test]
async fn a_missing_script_or_module_is_refused_at_deploy_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = function("      name: f\n      script: nope.sh\n", dir.path());
    let err = ProcessRuntime::default().prepare(&f).expect_err("missing");
    assert!(matches!(err, PrepareError::MissingFile { .. }));
    assert!(err.to_string().contains("nope.sh not found"), "{err}");
    let f = function("      name: f\n      module: nope.wasm\n", dir.path());
    let err = wasm_runtime(dir.path()).prepare(&f).expect_err("missing");
    assert!(err.to_string().contains("module"), "{err}");
}

#[tokio::test]
async fn the_grayscale_example_converts_a_real_image() {
    let cache = tempfile::tempdir().expect("tempdir");
    let f = function(
        "      name: grayscale\n      module: grayscale.wasm\n",
        &repo("configs/examples/grayscale"),
    );
    let exec = wasm_runtime(cache.path()).prepare(&f).expect("prepare");
    let png = std::fs::read(repo("tests/fixtures/gradient.png")).expect("fixture");
    let job = staged("gradient.png", &png, Duration::from_secs(30));
    let outcome = run(&exec, &job).await;
    assert_eq!(outcome.exit, Exit::Success, "{}", outcome.stderr.render());
    let gray = std::fs::read(job.job.output_dir.join("gradient-gray.png")).expect("gray output");
    assert_eq!(&gray[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(gray[25], 0, "colour type 0: grayscale");
    assert!(job.job.output_dir.join("gradient-thumb.png").is_file());
    assert!(
        outcome.stdout.render().contains("96x64 (3 channels)"),
        "{}",
        outcome.stdout.render()
    );
    // The module was compiled once and its native code cached for the next start.
    assert_eq!(std::fs::read_dir(cache.path()).expect("cache").count(), 1);
    wasm_runtime(cache.path())
        .prepare(&f)
        .expect("prepare from cache");
}

#[tokio::test]
async fn a_wasm_function_cannot_write_into_its_input_folder() {
    let cache = tempfile::tempdir().expect("tempdir");
    let f = function(
        "      name: grayscale\n      module: grayscale.wasm\n",
        &repo("configs/examples/grayscale"),
    );
    let exec = wasm_runtime(cache.path()).prepare(&f).expect("prepare");
    let mut job = staged("not-an-image.png", b"plain text", Duration::from_secs(30));
    // Point the output at the (read-only) input folder: the module must fail to write.
    job.job.output_dir = job.job.input_dir.clone();
    let outcome = run(&exec, &job).await;
    let reason = failure(&outcome);
    assert!(reason.contains("exited with status 2"), "{reason}");
    assert!(
        outcome
            .stderr
            .render()
            .contains("cannot decode not-an-image.png"),
        "{}",
        outcome.stderr.render()
    );
}

const WASI_EXIT: &str = r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#;

#[tokio::test]
async fn a_trapping_module_fails_with_the_trap_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    wat_module(
        dir.path(),
        "trap.wasm",
        "(module (memory (export \"memory\") 1) (func (export \"_start\") unreachable))",
    );
    let f = function("      name: f\n      module: trap.wasm\n", dir.path());
    let exec = wasm_runtime(dir.path()).prepare(&f).expect("prepare");
    let reason = failure(&run(&exec, &staged("a", b"", Duration::from_secs(5))).await);
    assert!(
        reason.contains("trapped") && reason.contains("unreachable"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_module_that_loops_forever_is_stopped_at_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    wat_module(
        dir.path(),
        "loop.wasm",
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop (br 0))))",
    );
    let f = function("      name: f\n      module: loop.wasm\n", dir.path());
    let exec = wasm_runtime(dir.path()).prepare(&f).expect("prepare");
    let started = std::time::Instant::now();
    let reason = failure(&run(&exec, &staged("a", b"", Duration::from_secs(1))).await);
    assert!(reason.starts_with("timed out after 1s"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_module_that_grows_past_its_memory_cap_is_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Grows by 2048 pages (128 MiB) against a 64 MiB cap.
    wat_module(
        dir.path(),
        "greedy.wasm",
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (drop (memory.grow (i32.const 2048)))))",
    );
    let f = function("      name: f\n      module: greedy.wasm\n", dir.path());
    let exec = wasm_runtime(dir.path()).prepare(&f).expect("prepare");
    let reason = failure(&run(&exec, &staged("a", b"", Duration::from_secs(5))).await);
    assert!(
        reason.contains("exceeded its memory limit of 64 MiB"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_module_exit_status_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wat = format!(
        "(module {WASI_EXIT} (memory (export \"memory\") 1) (func (export \"_start\") (call $exit (i32.const 7))))"
    );
    wat_module(dir.path(), "exit.wasm", &wat);
    let f = function("      name: f\n      module: exit.wasm\n", dir.path());
    let exec = wasm_runtime(dir.path()).prepare(&f).expect("prepare");
    let reason = failure(&run(&exec, &staged("a", b"", Duration::from_secs(5))).await);
    assert_eq!(reason, "module exited with status 7");
    let wat = format!(
        "(module {WASI_EXIT} (memory (export \"memory\") 1) (func (export \"_start\") (call $exit (i32.const 0))))"
    );
    wat_module(dir.path(), "ok.wasm", &wat);
    let f = function("      name: f\n      module: ok.wasm\n", dir.path());
    let exec = wasm_runtime(dir.path()).prepare(&f).expect("prepare");
    assert_eq!(
        run(&exec, &staged("a", b"", Duration::from_secs(5)))
            .await
            .exit,
        Exit::Success
    );
}

#[tokio::test]
async fn modules_that_are_not_wasi_commands_are_refused_at_deploy_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("junk.wasm"), b"this is not wasm").expect("write");
    let f = function("      name: f\n      module: junk.wasm\n", dir.path());
    let err = wasm_runtime(dir.path()).prepare(&f).expect_err("junk");
    assert!(
        err.to_string().contains("cannot compile WASI module"),
        "{err}"
    );
    wat_module(dir.path(), "lib.wasm", "(module (func (export \"add\")))");
    let f = function("      name: f\n      module: lib.wasm\n", dir.path());
    let err = wasm_runtime(dir.path()).prepare(&f).expect_err("no _start");
    assert!(err.to_string().contains("no `_start` export"), "{err}");
    wat_module(
        dir.path(),
        "net.wasm",
        "(module (import \"env\" \"socket\" (func)) (func (export \"_start\")))",
    );
    let f = function("      name: f\n      module: net.wasm\n", dir.path());
    let err = wasm_runtime(dir.path())
        .prepare(&f)
        .expect_err("unknown import");
    assert!(
        err.to_string().contains("only WASI preview 1 imports"),
        "{err}"
    );
}

#[tokio::test]
async fn a_chatty_module_succeeds_and_keeps_the_start_and_end_of_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Writes the 8 bytes at offset 0 ("chatter\n") 2000 times to stdout: 16000 bytes.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "chatter\n")
      (func (export "_start") (local $i i32)
        (i32.store (i32.const 16) (i32.const 0))
        (i32.store (i32.const 20) (i32.const 8))
        (loop $l
          (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 2000))))))"#;
    wat_module(dir.path(), "chatty.wasm", wat);
    let f = function("      name: f\n      module: chatty.wasm\n", dir.path());
    let exec = wasm_runtime(dir.path()).prepare(&f).expect("prepare");
    let outcome = run(&exec, &staged("a", b"", Duration::from_secs(5))).await;
    assert_eq!(outcome.exit, Exit::Success, "{}", outcome.stderr.render());
    assert_eq!(outcome.stdout.total(), 16_000);
    let text = outcome.stdout.render();
    assert!(
        text.starts_with("chatter\n") && text.ends_with("chatter\n"),
        "{text}"
    );
    assert!(
        text.contains("bytes not kept"),
        "the 4096-byte limit applies: {} bytes kept",
        text.len()
    );
}
