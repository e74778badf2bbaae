//! The `oci` runtime against crun and runc, side by side in one run, on the same bundle: per
//! container overhead (create, start, run `/bin/true`, wait, delete) of `spillway-agent oci-run`
//! (the supervisor every container job goes through: private mount namespace, overlay root,
//! libcontainer) against `crun run` and `runc run` on the same config.json and root. Then a cold
//! pull + unpack of the test image from a loopback registry, and the warm start of a whole job
//! (file dropped → output written) with the `oci` runtime against the same script run by the
//! `process` runtime.
//!
//! `cargo bench -p spillway-tests --bench oci [-- RUNS]` (default 40 runs each), as root.
//!
//! crun 1.8 refuses this host's hybrid cgroups, so the bench re-runs itself in a private mount
//! namespace with the unified hierarchy unmounted; all three runtimes then see the same v1 host.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::oci::{ImageSpec, Registry, busybox_archive, busybox_layer, host_arch};
use support::{Node, bin, files_under};

const INSIDE: &str = "SPILLWAY_BENCH_PRIVATE_MOUNTS";

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(40);
    if std::env::var_os(INSIDE).is_none() {
        support::build_release_binaries();
        let me = std::env::current_exe().unwrap();
        let status = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"")
            .arg(me)
            .arg(runs.to_string())
            .env(INSIDE, "1")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    println!("machine: {} cores, {}", cores(), kernel());
    println!("crun: {}", first_line("crun", "--version"));
    println!("runc: {}", first_line("runc", "--version"));
    per_container(runs);
    cold_pull();
    warm_job(runs.min(20));
}

fn first_line(cmd: &str, arg: &str) -> String {
    let out = Command::new(cmd).arg(arg).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn per_container(runs: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    tar::Archive::new(&busybox_layer("bench")[..])
        .unpack(&root)
        .unwrap();
    for d in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // One config for all: runc's default spec, running /bin/true without a terminal.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    assert!(
        Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&plain)
            .status()
            .unwrap()
            .success()
    );
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["path"] = root.display().to_string().into();
    std::fs::write(
        plain.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    // Ours: the same spec, the same root as the overlay's lower layer.
    let ours = tmp.path().join("ours");
    std::fs::create_dir_all(ours.join("rootfs")).unwrap();
    spec["root"]["path"] = "rootfs".into();
    std::fs::write(ours.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let state = tmp.path().join("state");
    let shim = serde_json::json!({
        "id": "x", "state_root": state.join("spillway"), "lower": root,
        "upper": tmp.path().join("upper"), "work": tmp.path().join("work"),
        "cgroups_path": "/spillway-bench", "grace_secs": 2,
    });
    let agent = bin("spillway-agent");

    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut phases: Vec<Vec<(String, u64)>> = Vec::new();
    for i in 0..runs + 3 {
        let id = format!("bench-{i}");
        let mut config = shim.clone();
        config["id"] = id.clone().into();
        std::fs::write(
            ours.join("spillway.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(tmp.path().join("upper"));
        let _ = std::fs::remove_dir_all(tmp.path().join("work"));
        let command = |which: usize| -> Command {
            let mut c = match which {
                0 => {
                    let mut c = Command::new(&agent);
                    c.arg("oci-run").arg(&ours).env_clear();
                    c
                }
                1 => runtime("crun", &state, &plain, &id),
                _ => runtime("runc", &state, &plain, &id),
            };
            c.stdout(Stdio::null()).stderr(Stdio::null());
            c
        };
        // Rotate who goes first, so no runtime always gets the warmest caches.
        for k in 0..3 {
            let which = (i + k) % 3;
            let start = Instant::now();
            let status = command(which).status().unwrap();
            let took = start.elapsed();
            assert!(status.success(), "runtime {which} failed on run {i}");
            if i >= 3 {
                times[which].push(took);
                if which == 0 {
                    let result: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(ours.join("result.json")).unwrap())
                            .unwrap();
                    phases.push(serde_json::from_value(result["phases_us"].clone()).unwrap());
                }
            }
        }
    }
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ours.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["code"], 0, "{result}");
    let [ours_t, crun_t, runc_t] = times.map(|mut t| {
        t.sort();
        t
    });
    let median = |t: &[Duration]| t[t.len() / 2];
    let p90 = |t: &[Duration]| t[t.len() * 9 / 10];
    println!(
        "\nper container (/bin/true, create+start+wait+delete), {runs} runs each, interleaved:"
    );
    for (name, t) in [
        ("spillway oci-run", &ours_t),
        ("crun run", &crun_t),
        ("runc run", &runc_t),
    ] {
        println!(
            "  {name:<17} median {:>6.2} ms   p90 {:>6.2} ms",
            ms(median(t)),
            ms(p90(t))
        );
    }
    // Median time spent in each phase of oci-run (from its result.json).
    let names: Vec<String> = phases[0].iter().map(|(n, _)| n.clone()).collect();
    let mut line = String::from("  oci-run phases (median, ms):");
    let mut previous = 0u64;
    for (k, name) in names.iter().enumerate() {
        let mut ends: Vec<u64> = phases.iter().map(|p| p[k].1).collect();
        ends.sort();
        let end = ends[ends.len() / 2];
        line.push_str(&format!(
            " {name} +{:.2}",
            end.saturating_sub(previous) as f64 / 1000.0
        ));
        previous = end;
    }
    println!("{line} (the rest: exec and exit of the supervisor)");
    println!(
        "  ratio (median): oci-run / crun = {:.2}x, oci-run / runc = {:.2}x",
        ms(median(&ours_t)) / ms(median(&crun_t)),
        ms(median(&ours_t)) / ms(median(&runc_t))
    );
}

/// `crun|runc --root STATE/NAME run --bundle BUNDLE ID`.
fn runtime(name: &str, state: &Path, bundle: &Path, id: &str) -> Command {
    let mut c = Command::new(name);
    c.arg("--root")
        .arg(state.join(name))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id);
    c
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cold_pull() {
    let registry = Registry::start();
    let mut image = ImageSpec::busybox("linux", host_arch(), None);
    // A second, bigger layer (8 MiB of incompressible bytes) so the pull moves real data.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..8usize << 20)
        .map(|_| {
            // xorshift64: bytes gzip cannot shrink, so the pull moves the full 8 MiB.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    image.layers.push(support::oci::gzip(&support::oci::layer(
        &[("data/noise", 0o644, noise)],
        &[],
    )));
    registry.push("bench/busybox", &[image], None);
    let reference = format!("{}/bench/busybox:1", registry.host());
    let mut times = Vec::new();
    for _ in 0..5 {
        let node = Node::new("");
        let start = Instant::now();
        let (ok, out, err) = node.agent_cli(&["pull", &reference]);
        times.push(start.elapsed());
        assert!(ok, "{out}{err}");
    }
    times.sort();
    let size: u64 = files_under(&registry.dir.path().join("layout-bench-busybox/blobs"))
        .iter()
        .map(|f| {
            std::fs::metadata(
                registry
                    .dir
                    .path()
                    .join("layout-bench-busybox/blobs")
                    .join(f),
            )
            .map_or(0, |m| m.len())
        })
        .sum();
    println!(
        "\ncold pull + verify + unpack from a loopback registry ({:.1} MiB of blobs, 2 layers): median {:.0} ms over 5 fresh stores",
        size as f64 / 1048576.0,
        ms(times[2])
    );
}

const JOB_SH: &str = "sha256sum \"$INPUT_FILE_PATH\" > \"$TMP_OUTPUT_DIR/$FILE_NAME.sha256\"\n";

fn warm_job(jobs: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = busybox_archive(tmp.path(), "localhost/busybox:1");
    let fdl = "functions:\n  oscar:\n  - edge:\n      name: c\n      image: localhost/busybox:1\n      script: job.sh\n      input: [{storage_provider: minio.default, path: c/in}]\n      output: [{storage_provider: minio.default, path: c/out}]\n  - edge:\n      name: n\n      image: localhost/busybox:1\n      script: job.sh\n      network: none\n      input: [{storage_provider: minio.default, path: n/in}]\n      output: [{storage_provider: minio.default, path: n/out}]\n  - edge:\n      name: p\n      runtime: process\n      script: job.sh\n      input: [{storage_provider: minio.default, path: p/in}]\n      output: [{storage_provider: minio.default, path: p/out}]\n";
    let mut node = Node::new("functions = [\"fn.yaml\"]\n");
    node.write("fn.yaml", fdl);
    node.write("job.sh", JOB_SH);
    let (ok, _, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok, "{err}");
    node.start();
    let mut times: [Vec<Duration>; 3] = Default::default();
    for i in 0..jobs + 2 {
        for (k, f) in ["c", "n", "p"].iter().enumerate() {
            let out = node.path(&format!("data/{f}/out/j{i}.sha256"));
            let start = Instant::now();
            node.write(&format!("data/{f}/in/j{i}"), format!("job {i}"));
            // Polled every millisecond (support::wait_until's 20 ms would quantise the figure).
            while !out.exists() {
                assert!(start.elapsed() < Duration::from_secs(30), "{}", node.log());
                std::thread::sleep(Duration::from_millis(1));
            }
            if i >= 2 {
                times[k].push(start.elapsed());
            }
        }
    }
    node.stop();
    let [c, n, p] = times.map(|mut t| {
        t.sort();
        t
    });
    println!("\nwarm job, file dropped -> output written, {jobs} jobs each, alternating:");
    println!(
        "  oci runtime (cached image, own network: CNI bridge + NAT)  median {:>6.1} ms",
        ms(c[c.len() / 2])
    );
    println!(
        "  oci runtime (cached image, network: none)                  median {:>6.1} ms",
        ms(n[n.len() / 2])
    );
    println!(
        "  process runtime (same sh)                                  median {:>6.1} ms",
        ms(p[p.len() / 2])
    );
    println!(
        "  ratio oci / process = {:.2}x, oci network none / process = {:.2}x; the network costs {:.1} ms a job",
        ms(c[c.len() / 2]) / ms(p[p.len() / 2]),
        ms(n[n.len() / 2]) / ms(p[p.len() / 2]),
        ms(c[c.len() / 2]) - ms(n[n.len() / 2])
    );
}
