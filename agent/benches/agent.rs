//! Agent benchmarks: `cargo bench -p spillway-agent --bench agent`.
//!
//! Prints, for BENCHMARKS.md:
//! - wasm instantiate+run of a no-op WASI module per job, on-demand vs pooling allocator;
//! - file event → wasm function running, through the whole agent (inotify, hashing, two
//!   journal commits with fsync, admission, staging), p50/p99;
//! - idle RSS of the release agent binary, and the binary's size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spillway_agent::runtime::StagedJob;
use spillway_agent::runtime::wasm::WasmRuntime;
use spillway_agent::{Agent, AgentConfig, JobEvent};
use spillway_agent_config::WasmSettings;
use spillway_proto::fdl;

const NOOP_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"#;

fn main() {
    let filter = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .unwrap_or_default();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
    if "instantiate".contains(&filter) || filter.is_empty() {
        bench_instantiate();
    }
    if "event".contains(&filter) || filter.is_empty() {
        bench_event_to_running();
    }
    if "footprint".contains(&filter) || filter.is_empty() {
        bench_footprint();
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "  {name:<44} n={:<6} mean={:>9.1?} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        samples.len(),
        mean,
        p50,
        p99,
        samples[samples.len() - 1]
    );
    p50
}

fn noop_function(dir: &Path) -> spillway_proto::FunctionDef {
    std::fs::write(
        dir.join("noop.wasm"),
        wat::parse_str(NOOP_WAT).expect("wat"),
    )
    .expect("write module");
    let text = "functions:\n  oscar:\n  - edge:\n      name: noop\n      module: noop.wasm\n";
    fdl::parse_str("bench.yaml", text, dir)
        .into_result()
        .expect("fdl")
        .0
        .functions
        .remove(0)
}

fn bench_instantiate() {
    println!(
        "\nwasm instantiate+run of a no-op WASI module, per job (WASI context with both staging preopens):"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let def = noop_function(dir.path());
    for d in ["in", "out", "work"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    let job = StagedJob {
        job_id: "0".repeat(32),
        function: "noop".into(),
        input_dir: dir.path().join("in"),
        output_dir: dir.path().join("out"),
        work_dir: dir.path().join("work"),
        file_name: "x".into(),
        event_json: "{}".into(),
        variables: vec![],
        timeout: Duration::from_secs(5),
        memory_limit: 64 << 20,
        log_limit: 4096,
        pid_file: dir.path().join("pid"),
    };
    let mut p50s = Vec::new();
    for pooling in [false, true] {
        let settings = WasmSettings {
            pooling,
            ..WasmSettings::default()
        };
        let rt = WasmRuntime::new(&settings, dir.path().join(format!("cache-{pooling}")))
            .expect("engine");
        let exec = rt.prepare_wasm(&def).expect("prepare");
        for _ in 0..2000 {
            exec.run_blocking(&job);
        }
        let samples: Vec<Duration> = (0..20_000)
            .map(|_| {
                let t = Instant::now();
                let outcome = exec.run_blocking(&job);
                let d = t.elapsed();
                assert_eq!(outcome.exit, spillway_agent::runtime::Exit::Success);
                d
            })
            .collect();
        p50s.push(report(
            if pooling {
                "pooling allocator"
            } else {
                "on-demand allocator (default)"
            },
            samples,
        ));
    }
    println!(
        "  ratio on-demand / pooling (p50): {:.2}",
        p50s[0].as_secs_f64() / p50s[1].as_secs_f64()
    );
}

fn bench_event_to_running() {
    println!(
        "\nfile event -> wasm function running, whole agent (inotify, sha256, one fsynced journal commit, staging copy),\n  interleaved with a bare 64-byte write+fsync on the same file system:"
    );
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .expect("tempdir");
    println!("  state and data on: {}", fs_of(dir.path()));
    noop_function(dir.path());
    std::fs::write(
        dir.path().join("fns.yaml"),
        "functions:\n  oscar:\n  - edge:\n      name: noop\n      module: noop.wasm\n      cpu: '0.1'\n      memory: 16Mi\n      input: [{storage_provider: minio, path: bench/in}]\n",
    )
    .expect("fdl");
    let config = AgentConfig::from_toml("node_name = \"bench\"\ndata_root = \"data\"\nstate_dir = \"state\"\nfunctions = [\"fns.yaml\"]\n", dir.path()).expect("config");
    let input = dir.path().join("data/bench/in");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Process functions only: no container job is started, so no shim is needed.
        let agent = Agent::start(
            config,
            std::path::Path::new("/nonexistent/no-container-shim"),
        )
        .expect("agent");
        let mut events = agent.subscribe();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(agent.run(async {
            let _ = stop_rx.await;
        }));
        let (mut to_start, mut to_finish, mut fsyncs) = (Vec::new(), Vec::new(), Vec::new());
        let probe = dir.path().join("fsync-probe");
        for i in 0..600u32 {
            let t0 = Instant::now();
            std::fs::write(input.join(format!("f{i}.bin")), i.to_le_bytes()).expect("write");
            let mut started = None;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                    Ok(Ok(JobEvent::Started { at, .. })) => started = Some(at),
                    Ok(Ok(JobEvent::Finished { .. })) => break,
                    Ok(Ok(JobEvent::Queued { .. })) => {}
                    other => panic!("no event: {other:?}"),
                }
            }
            if i >= 100 {
                to_start.push(started.expect("started") - t0);
                to_finish.push(t0.elapsed());
                let t = Instant::now();
                let mut f = std::fs::File::create(&probe).expect("probe");
                std::io::Write::write_all(&mut f, &[0u8; 64]).expect("write");
                f.sync_all().expect("fsync");
                fsyncs.push(t.elapsed());
            }
        }
        let start_p50 = report("file closed -> function running", to_start);
        report("file closed -> job Succeeded (journaled)", to_finish);
        let fsync_p50 = report("bare write+fsync (the disk's floor)", fsyncs);
        println!(
            "  ratio event->running / bare fsync (p50): {:.2}",
            start_p50.as_secs_f64() / fsync_p50.as_secs_f64()
        );
        let _ = stop_tx.send(());
        let _ = running.await;
    });
}

fn fs_of(path: &Path) -> String {
    let out = std::process::Command::new("df")
        .arg("--output=fstype,source")
        .arg(path)
        .output();
    out.ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" on ")
        })
        .unwrap_or_default()
}

fn bench_footprint() {
    println!(
        "\nagent footprint (release profile: opt-level s, LTO, 1 codegen unit, panic=abort, stripped):"
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for (arch, path) in [
        (
            "x86_64",
            target.join("x86_64-unknown-linux-gnu/release/spillway-agent"),
        ),
        (
            "aarch64",
            target.join("aarch64-unknown-linux-gnu/release/spillway-agent"),
        ),
        (
            "armv7",
            target.join("armv7-unknown-linux-gnueabihf/release/spillway-agent"),
        ),
    ] {
        match std::fs::metadata(&path) {
            Ok(m) => println!(
                "  binary size {arch:<8} {:>6.2} MiB  ({})",
                m.len() as f64 / (1 << 20) as f64,
                path.display()
            ),
            Err(_) => println!("  binary size {arch:<8}   (not built: {})", path.display()),
        }
    }
    let bin = target.join("x86_64-unknown-linux-gnu/release/spillway-agent");
    if !bin.exists() {
        println!("  idle RSS: build it first with `cross/build.sh x86_64-unknown-linux-gnu`");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "data_root = \"data\"\nstate_dir = \"state\"\nfunctions = [\"{}\"]\n",
            repo.join("configs/quickstart/functions.yaml").display()
        ),
    )
    .expect("config");
    for label in [
        "first start (compiles grayscale.wasm)",
        "restart (module from cache)",
    ] {
        let mut child = std::process::Command::new(&bin)
            .args([
                "--config",
                &dir.path().join("agent.toml").display().to_string(),
                "run",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn agent");
        std::thread::sleep(Duration::from_secs(4));
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l[name.len()..].trim().to_owned())
                .unwrap_or_default()
        };
        println!(
            "  idle RSS x86_64 static, quickstart, {label:<38} VmRSS {:>9}  anonymous {:>9}  peak {:>9}",
            field("VmRSS:"),
            field("RssAnon:"),
            field("VmHWM:")
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
