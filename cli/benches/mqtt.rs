//! Trigger benchmarks: `cargo bench -p spillway-cli --bench mqtt [-- N]`.
//!
//! The same in-process agent (a no-op wasm function triggered by `bench/+/in`, QoS 1) behind
//! two brokers in one run, side by side: the coordinator's embedded rumqttd and Debian's
//! Mosquitto (a subprocess on loopback). A separate rumqttc client publishes.
//! - message published → function running and → job Succeeded, p50/p99 (one at a time);
//! - sustained rate: N messages published back to back, time until all N jobs have finished;
//! - a file burst: N files dropped into a watched folder at once, time until all N jobs have
//!   finished.
//!
//! Each sustained figure runs twice, side by side: with the journal's group commit (the
//! default `[journal] max_batch`) and with one durable commit per input (`max_batch = 1`), and
//! counts the agent's fsyncs (durable journal commits and inbox `syncfs` calls) per job.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use spillway_agent::{Agent, AgentConfig, JobEvent};

const NOOP_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"#;

fn main() {
    let burst: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);
    println!(
        "machine: {} cores, {}; state and data under {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        bench_dir().display()
    );
    let mosquitto = Mosquitto::start();
    let embedded =
        spillway_coordinator::server::broker::start("127.0.0.1:0".parse().expect("addr"))
            .expect("embedded broker");
    let brokers = [
        ("embedded rumqttd", embedded.port()),
        ("mosquitto 2.0", mosquitto.port),
    ];
    let mut results = Vec::new();
    for (name, port) in brokers {
        for max_batch in [DEFAULT_BATCH, 1] {
            println!("\n{name} (127.0.0.1:{port}), [journal] max_batch = {max_batch}:");
            results.push(run(port, burst, max_batch));
        }
    }
    let mut files = Vec::new();
    for max_batch in [DEFAULT_BATCH, 1] {
        println!("\nfile burst, [journal] max_batch = {max_batch}:");
        files.push(file_burst(burst, max_batch));
    }
    let (e, e1, m, m1) = (&results[0], &results[1], &results[2], &results[3]);
    println!("\nratios embedded / mosquitto (group commit):");
    println!(
        "  publish -> running p50 {:.2}, p99 {:.2}; sustained rate {:.2}",
        e.start_p50.as_secs_f64() / m.start_p50.as_secs_f64(),
        e.start_p99.as_secs_f64() / m.start_p99.as_secs_f64(),
        e.rate / m.rate
    );
    println!("ratios group commit / one commit per input:");
    println!(
        "  sustained MQTT rate: embedded {:.2}, mosquitto {:.2}; file burst rate {:.2}",
        e.rate / e1.rate,
        m.rate / m1.rate,
        files[0].rate / files[1].rate
    );
    println!(
        "  fsyncs per job: embedded {:.3} / {:.3}, mosquitto {:.3} / {:.3}, file burst {:.3} / {:.3}",
        e.fsyncs_per_job,
        e1.fsyncs_per_job,
        m.fsyncs_per_job,
        m1.fsyncs_per_job,
        files[0].fsyncs_per_job,
        files[1].fsyncs_per_job
    );
}

/// Where the agents' state and data go: `$SPILLWAY_BENCH_DIR`, else `/var/tmp` (a disk, not
/// a tmpfs: the journal's fsyncs must reach one).
fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("SPILLWAY_BENCH_DIR").map_or_else(|| "/var/tmp".into(), Into::into)
}

/// `[journal] max_batch` when the config does not set it.
const DEFAULT_BATCH: usize = 512;

struct Figures {
    start_p50: Duration,
    start_p99: Duration,
    rate: f64,
    fsyncs_per_job: f64,
}

struct Rate {
    rate: f64,
    fsyncs_per_job: f64,
}

/// The agent's fsyncs (durable journal commits and inbox syncs) from `before` to now, per job.
fn fsyncs_per_job(
    handle: &spillway_agent::AgentHandle,
    before: spillway_agent::DiskSyncs,
    jobs: usize,
) -> f64 {
    let after = handle.disk_syncs();
    let fsyncs = after.total() - before.total();
    let staged = after.journal.staged_commits - before.journal.staged_commits;
    println!(
        "  fsyncs: {fsyncs} ({} journal commits covering {staged} staged ones, {} inbox syncs) for {jobs} jobs",
        after.journal.durable_commits - before.journal.durable_commits,
        after.filesystem - before.filesystem
    );
    fsyncs as f64 / jobs as f64
}

/// A folder under [`bench_dir`] with the no-op module, a function triggered by `trigger` (an
/// FDL line) and the config of an agent `name` with `[journal] max_batch` and `extra`.
fn noop_agent(
    name: &str,
    trigger: &str,
    max_batch: usize,
    extra: &str,
) -> (tempfile::TempDir, AgentConfig) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    std::fs::write(
        dir.path().join("noop.wasm"),
        wat::parse_str(NOOP_WAT).expect("wat"),
    )
    .expect("module");
    std::fs::write(
        dir.path().join("fns.yaml"),
        format!("functions:\n  oscar:\n  - edge:\n      name: noop\n      module: noop.wasm\n      cpu: '0.1'\n      memory: 16Mi\n      {trigger}\n"),
    )
    .expect("fdl");
    let config = AgentConfig::from_toml(
        &format!(
            "node_name = \"{name}\"\ndata_root = \"data\"\nstate_dir = \"state\"\nfunctions = [\"fns.yaml\"]\n[journal]\nmax_batch = {max_batch}\n{extra}"
        ),
        dir.path(),
    )
    .expect("config");
    (dir, config)
}

fn run(port: u16, burst: usize, max_batch: usize) -> Figures {
    let (_dir, config) = noop_agent(
        &format!("bench-{port}"),
        "triggers: [{mqtt: {topic: bench/+/in, qos: 1}}]",
        max_batch,
        &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\n"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Process functions only: no container job is started, so no shim is needed.
        let agent = Agent::start(config, std::path::Path::new("/nonexistent/no-container-shim"))
            .expect("agent");
        let mut events = agent.subscribe();
        let handle = agent.mesh_handle();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(agent.run(async {
            let _ = stop_rx.await;
        }));
        let mut options = MqttOptions::new(format!("bench-publisher-{port}"), "127.0.0.1", port);
        options.set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        tokio::spawn(async move {
            // Bounded: the loop ends when the client is dropped (requests channel closed).
            while eventloop.poll().await.is_ok() {}
        });
        // The agent subscribes once connected: probe until a message makes a job.
        let mut probes = 0u32;
        loop {
            probes += 1;
            assert!(probes < 200, "the agent never received a message");
            client
                .publish("bench/probe/in", QoS::AtLeastOnce, false, probes.to_le_bytes().to_vec())
                .await
                .expect("publish");
            if let Ok(Ok(JobEvent::Queued { .. })) =
                tokio::time::timeout(Duration::from_millis(100), events.recv()).await
            {
                break;
            }
        }
        drain(&mut events, Duration::from_millis(500)).await;

        let (mut to_start, mut to_finish) = (Vec::new(), Vec::new());
        for i in 0..400u32 {
            let t0 = Instant::now();
            client
                .publish("bench/cam/in", QoS::AtLeastOnce, false, format!("one-{i}").into_bytes())
                .await
                .expect("publish");
            let mut started = None;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                    Ok(Ok(JobEvent::Started { at, .. })) => started = Some(at),
                    Ok(Ok(JobEvent::Finished { .. })) => break,
                    Ok(Ok(JobEvent::Queued { .. })) => {}
                    other => panic!("no job event: {other:?}"),
                }
            }
            if i >= 50 {
                to_start.push(started.expect("started") - t0);
                to_finish.push(t0.elapsed());
            }
        }
        let (start_p50, start_p99) = report("published -> function running", to_start);
        report("published -> job Succeeded (journaled)", to_finish);

        let syncs = handle.disk_syncs();
        let t0 = Instant::now();
        let publisher = client.clone();
        tokio::spawn(async move {
            for i in 0..burst {
                let _ = publisher
                    .publish("bench/burst/in", QoS::AtLeastOnce, false, format!("b-{i}").into_bytes())
                    .await;
            }
        });
        all_finished(&mut events, burst, Duration::from_secs(30), "burst").await;
        let elapsed = t0.elapsed();
        let rate = burst as f64 / elapsed.as_secs_f64();
        println!(
            "  sustained: {burst} messages published back to back -> {burst} jobs finished in {:.2?}: {rate:.0} msg/s",
            elapsed
        );
        let fsyncs_per_job = fsyncs_per_job(&handle, syncs, burst);
        let _ = stop_tx.send(());
        let _ = running.await;
        Figures {
            start_p50,
            start_p99,
            rate,
            fsyncs_per_job,
        }
    })
}

/// `burst` files written into the watched folder at once (each whole, by rename), until every
/// job has finished.
fn file_burst(burst: usize, max_batch: usize) -> Rate {
    let (dir, config) = noop_agent(
        "bench-files",
        "input: [{storage_provider: minio, path: bench/in}]",
        max_batch,
        "",
    );
    let input = dir.path().join("data/bench/in");
    let staged = dir.path().join("data/bench/.staged");
    std::fs::create_dir_all(&staged).expect("staging folder");
    for i in 0..burst {
        std::fs::write(staged.join(format!("f{i:06}")), format!("file-{i}")).expect("file");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let agent = Agent::start(config, std::path::Path::new("/nonexistent/no-container-shim"))
            .expect("agent");
        let mut events = agent.subscribe();
        let handle = agent.mesh_handle();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(agent.run(async {
            let _ = stop_rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let syncs = handle.disk_syncs();
        let t0 = Instant::now();
        let (from, to) = (staged.clone(), input.clone());
        tokio::task::spawn_blocking(move || {
            for i in 0..burst {
                let name = format!("f{i:06}");
                std::fs::rename(from.join(&name), to.join(&name)).expect("rename");
            }
        });
        all_finished(&mut events, burst, Duration::from_secs(60), "file burst").await;
        let elapsed = t0.elapsed();
        let rate = burst as f64 / elapsed.as_secs_f64();
        println!(
            "  {burst} files dropped at once -> {burst} jobs finished in {elapsed:.2?}: {rate:.0} files/s"
        );
        let fsyncs_per_job = fsyncs_per_job(&handle, syncs, burst);
        let _ = stop_tx.send(());
        let _ = running.await;
        Rate {
            rate,
            fsyncs_per_job,
        }
    })
}

/// Waits for `jobs` jobs to finish, none of them further than `quiet` apart.
async fn all_finished(
    events: &mut tokio::sync::broadcast::Receiver<JobEvent>,
    jobs: usize,
    quiet: Duration,
    what: &str,
) {
    let mut finished = 0;
    while finished < jobs {
        match tokio::time::timeout(quiet, events.recv()).await {
            Ok(Ok(JobEvent::Finished { .. })) => finished += 1,
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                panic!("fell {n} events behind; the figures would be wrong")
            }
            other => panic!("{what} stalled after {finished} jobs: {other:?}"),
        }
    }
}

async fn drain(events: &mut tokio::sync::broadcast::Receiver<JobEvent>, quiet: Duration) {
    while let Ok(Ok(_)) = tokio::time::timeout(quiet, events.recv()).await {}
}

fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    println!(
        "  {name:<42} n={:<5} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        samples.len(),
        p50,
        p99,
        samples[samples.len() - 1]
    );
    (p50, p99)
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

/// Debian's Mosquitto on a free loopback port, stopped when dropped.
struct Mosquitto {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"),
        )
        .expect("conf");
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
