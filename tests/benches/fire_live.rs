//! The thesis' fire case, phase 2, replayed live and ten times faster: a coordinator, three fog
//! agents of 3 slots and an on-prem pool as one agent of 7 slots, all real processes over QUIC,
//! running a process function that takes the calibrated run time of the node it runs on. In
//! scenario 2 the coordinator also has a `lambda` replica: Lambda's Invoke API is cargo-lambda's
//! Runtime API emulator on loopback, and each invocation runs in the real runner
//! (`spillway-agent` as the function's `bootstrap`), which fetches the input through the
//! coordinator's presigned URL, runs the same script and uploads the output. The same trace
//! then goes through the simulator with the same shape (`spillway_sim::scenario::fire_on_agents`),
//! and the two are compared in thesis time.
//!
//! `cargo bench -p spillway-tests --bench fire_live [-- [--scenario 1|2] OUT_DIR]` (both
//! scenarios by default, about 4 minutes each; writes `fire-live-sN.{svg,png}` and
//! `fire-live-sN-sim.{svg,png}` to OUT_DIR, default the system's temp folder).

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spillway_sim::report::{Sample, plot_series};
use spillway_sim::scenario::{FireCase, fire_on_agents};
use support::{Coordinator, Node, files_under, wait_until};

/// Live time runs this many times faster than the thesis' time.
const SPEED: u64 = 10;
/// A live agent starting a process job, in thesis time (measured ~20 ms live).
const AGENT_START_MS: u64 = 200;
/// The run-time prior the live placement core starts from (1 s), in thesis time.
const PRIOR_MS: u64 = 1_000 * SPEED;

fn fdl(threshold_s: u64, replicas: &str) -> String {
    format!(
        "functions:
  oscar:
  - edge:
      name: fire-detection
      runtime: process
      script: fire.sh
      cpu: '1'
      memory: 16Mi
      timeout: 120
      rescheduler_threshold: {threshold_s}
      input:
      - storage_provider: minio.default
        path: frames/in
      output:
      - storage_provider: minio.default
        path: frames/out
{replicas}"
    )
}

/// Lambda instances the emulator keeps warm in scenario 2 (the simulator's busiest moment
/// there needs fewer).
const LAMBDA_INSTANCES: usize = 16;

/// Sleeps the run time of the node it runs on (told apart by its work folder's path: the
/// runner's on Lambda, the on-prem agent's, or a fog agent's) and writes when it started and
/// ended to `ledger`.
fn script(ledger: &str, fog_s: f64, onprem_s: f64, lambda_s: f64) -> String {
    format!(
        "#!/bin/sh\nset -eu\nname=$(basename \"$INPUT_FILE_PATH\")\n\
         case \"$PWD\" in *spillway-runner-*) t={lambda_s}; tier=lambda;; *spillway-onprem*) t={onprem_s}; tier=on-prem;; *) t={fog_s}; tier=fog;; esac\n\
         echo \"start $name $tier $(date +%s%N)\" >> {ledger}\nsleep $t\n\
         echo \"end $name $tier $(date +%s%N)\" >> {ledger}\n\
         echo ok > \"$TMP_OUTPUT_DIR/$name.out\"\n"
    )
}

fn epoch_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Run {
    tier: String,
    start_ns: u64,
    end_ns: u64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let scenarios: Vec<u32> = match args.iter().position(|a| a == "--scenario") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .into_iter()
            .collect(),
        None => vec![1, 2],
    };
    let out_dir: PathBuf = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--scenario"))
        .map_or_else(std::env::temp_dir, |(_, a)| PathBuf::from(a));
    support::build_release_binaries();
    for scenario in scenarios {
        replay(scenario == 2, &out_dir);
    }
}

/// The case each scenario replays: scenario 1 as the thesis ran it; scenario 2 at a 10 s
/// threshold with no Lambda budget (at the thesis' 30 s only 2 of 1028 images go to Lambda, too
/// few to compare).
fn case_of(lambda: bool) -> FireCase {
    if lambda {
        FireCase {
            threshold_ms: 10_000,
            spillway_budget_gb_s: None,
            ..FireCase::thesis(true)
        }
    } else {
        FireCase::thesis(false)
    }
}

fn replay(lambda: bool, out_dir: &std::path::Path) {
    let n = if lambda { 2 } else { 1 };
    let case = case_of(lambda);
    let fit = case.fit;
    let sim_scenario = fire_on_agents(&case, AGENT_START_MS, PRIOR_MS);
    let fog_s = fit.fog_run_ms as f64 / 1000.0 / SPEED as f64;
    let onprem_s = (fit.onprem_start_ms + fit.onprem_run_ms) as f64 / 1000.0 / SPEED as f64;
    let lambda_s = fit.lambda_run_ms as f64 / 1000.0 / SPEED as f64;
    println!(
        "\nmachine: {} cores; fire case, scenario {n}, phase 2: {} images over 30 thesis minutes, \
         {SPEED}x faster: fog runs {fog_s:.3} s, on-prem {onprem_s:.3} s{}, threshold {} s, \
         reports every {} ms",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sim_scenario.arrivals.len(),
        if lambda {
            format!(", Lambda {lambda_s:.3} s ({LAMBDA_INSTANCES} warm instances)")
        } else {
            String::new()
        },
        case.threshold_ms / 1000 / SPEED,
        1000 / SPEED
    );

    let emulator =
        lambda.then(|| support::lambda::LambdaEmulator::start("spillway", LAMBDA_INSTANCES));
    let aws = emulator.as_ref().map_or(String::new(), |e| {
        format!(
            "[placement]\nlambda_start = \"{}ms\"\n[replicas]\ntimeout = \"30s\"\n[aws]\nendpoint_url = \"{}\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"emulator-does-not-check\"\n",
            // The simulator's start on a warm instance, in live time.
            AGENT_START_MS / SPEED,
            e.endpoint()
        )
    });
    let c = Coordinator::with_config(&format!("report_interval = \"{}ms\"\n{aws}", 1000 / SPEED));
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (name, prefix, cpus) in [
        ("pi-1", "spillway-fog-", 3),
        ("pi-2", "spillway-fog-", 3),
        ("pi-3", "spillway-fog-", 3),
        ("on-prem", "spillway-onprem-", 7),
    ] {
        let mut n = Node::new_named(
            prefix,
            // Run as root, unjailed: the function writes the ledger in the coordinator's
            // folder, and tells the nodes apart by its work folder (a trusted set-up).
            &format!(
                "node_name = \"{name}\"\n[resources]\ncpu = {cpus}\nmemory = \"8Gi\"\n\
                 [process]\nuser = \"root\"\n"
            ),
        );
        c.join(&n);
        n.start();
        nodes.insert(name.to_owned(), n);
    }
    let ledger = c.dir.path().join("ledger.txt");
    let fdl_dir = c.dir.path().join("fdl");
    std::fs::create_dir_all(&fdl_dir).unwrap();
    std::fs::write(
        fdl_dir.join("functions.yaml"),
        fdl(
            case.threshold_ms / 1000 / SPEED,
            if lambda {
                "      replicas:\n      - {type: lambda, function_name: spillway, priority: 0}\n"
            } else {
                ""
            },
        ),
    )
    .unwrap();
    std::fs::write(
        fdl_dir.join("fire.sh"),
        script(ledger.to_str().unwrap(), fog_s, onprem_s, lambda_s),
    )
    .unwrap();
    let (ok, _, err) = c.cli(&[
        "apply",
        "-f",
        fdl_dir.join("functions.yaml").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let ready = wait_until(Duration::from_secs(60), || {
        let view = c.json(&["get", "nodes"]);
        view.as_array().unwrap().len() == 4
            && view.as_array().unwrap().iter().all(|n| {
                n["health"] == "Ready" && n["load"]["functions"][0]["name"] == "fire-detection"
            })
    });
    assert!(ready, "{}", c.log());

    // The trace, in live time.
    let began = Instant::now();
    let mut arrived: BTreeMap<String, u64> = BTreeMap::new();
    let mut origin_of: BTreeMap<String, String> = BTreeMap::new();
    for (i, a) in sim_scenario.arrivals.iter().enumerate() {
        let due = Duration::from_millis(a.at / SPEED);
        if let Some(wait) = due.checked_sub(began.elapsed()) {
            std::thread::sleep(wait);
        }
        let name = format!("img-{i:05}.txt");
        arrived.insert(name.clone(), epoch_ns());
        origin_of.insert(name.clone(), a.node.clone());
        nodes[&a.node].write(&format!("data/frames/in/{name}"), format!("image {i}"));
    }
    let total = arrived.len();
    let done = wait_until(Duration::from_secs(300), || {
        ["pi-1", "pi-2", "pi-3"]
            .iter()
            .map(|n| {
                files_under(&nodes[*n].path("data/frames/out"))
                    .iter()
                    .filter(|f| f.ends_with(".out"))
                    .count()
            })
            .sum::<usize>()
            >= total
    });
    let wall = began.elapsed();
    assert!(done, "outputs missing after {wall:?}\n{}", c.log());

    // What ran where and when, from the functions' own ledger.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    let mut twice = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [what, name, tier, at] = f[..] else {
            continue;
        };
        let at: u64 = at.parse().unwrap_or(0);
        match what {
            "start" => {
                if runs
                    .insert(
                        name.to_owned(),
                        Run {
                            tier: tier.to_owned(),
                            start_ns: at,
                            end_ns: 0,
                        },
                    )
                    .is_some()
                {
                    twice += 1;
                }
            }
            _ => {
                if let Some(r) = runs.get_mut(name) {
                    r.end_ns = at;
                }
            }
        }
    }
    let thesis_s = |ns: u64| ns as f64 / 1e9 * SPEED as f64;
    let mut queue = Vec::new();
    let mut completion = Vec::new();
    let mut per_tier: BTreeMap<String, u32> = BTreeMap::new();
    for (name, at) in &arrived {
        let Some(r) = runs.get(name) else { continue };
        queue.push(thesis_s(r.start_ns.saturating_sub(*at)));
        completion.push(thesis_s(r.end_ns.saturating_sub(*at)));
        *per_tier.entry(r.tier.clone()).or_default() += 1;
    }

    // The simulator on the same trace and shape.
    let sim = spillway_sim::run(&sim_scenario, case.policy("spillway").as_mut());

    let live_q = mean(&queue);
    let live_c = mean(&completion);
    let row = |what: &str, live: f64, sim: f64| {
        let off = (live - sim).abs() / sim.max(1e-9);
        println!(
            "  {what:<28} live {live:>8.2}   simulated {sim:>8.2}   live/sim {:>5.2}  {}",
            live / sim.max(1e-9),
            if off <= 0.15 {
                "within 15%"
            } else {
                "NOT within 15%"
            }
        );
    };
    println!(
        "\nlive replay: {total} jobs in {:.1} s of wall time, {} ran, {twice} started twice",
        wall.as_secs_f64(),
        runs.len()
    );
    println!("thesis-time figures (live × {SPEED}):");
    row("mean queue time, s", live_q, sim.queue_mean_s);
    row("mean completion time, s", live_c, sim.completion_mean_s);
    if lambda {
        // What Lambda would bill at 1 GB: the runs' own durations, in thesis time.
        let gb_s: f64 = runs
            .values()
            .filter(|r| r.tier == "lambda")
            .map(|r| thesis_s(r.end_ns.saturating_sub(r.start_ns)))
            .sum();
        row("Lambda GB-s (1 GB)", gb_s, sim.lambda_gb_s);
    }
    let tiers: Vec<String> = sim_scenario.tiers.clone();
    for tier in &tiers {
        row(
            &format!("jobs run on {tier}"),
            f64::from(per_tier.get(tier).copied().unwrap_or(0)),
            f64::from(sim.jobs_per_tier.get(tier).copied().unwrap_or(0)),
        );
    }

    // Queued and running per tier over time, live (sampled every thesis second) and simulated.
    let start_ns = arrived.values().min().copied().unwrap_or(0);
    let end_ns = runs.values().map(|r| r.end_ns).max().unwrap_or(start_ns);
    let step_ns = 1_000_000_000 / SPEED;
    let mut series = Vec::new();
    let mut t = start_ns;
    while t <= end_ns {
        let mut by: BTreeMap<String, Sample> = BTreeMap::new();
        for (name, at) in &arrived {
            let run = runs.get(name);
            let tier = run.map_or("fog", |r| r.tier.as_str());
            let s = by.entry(tier.to_owned()).or_default();
            match run {
                Some(r) if r.start_ns <= t && t < r.end_ns => s.running += 1,
                Some(r) if *at <= t && t < r.start_ns => s.queued += 1,
                None if *at <= t => s.queued += 1,
                _ => {}
            }
        }
        series.push(((t - start_ns) / 1_000_000 * SPEED, by));
        t += step_ns;
    }
    for ext in ["svg", "png"] {
        let live = out_dir.join(format!("fire-live-s{n}.{ext}"));
        let simulated = out_dir.join(format!("fire-live-s{n}-sim.{ext}"));
        plot_series(
            &live,
            &format!("live, Spillway (fire, scenario {n}, phase 2)"),
            &tiers,
            &series,
        )
        .unwrap();
        sim.plot(&simulated).unwrap();
        println!("plots: {} and {}", live.display(), simulated.display());
    }
    if std::env::var_os("FIRE_LIVE_LOGS").is_some() {
        eprintln!("{}", c.log());
    }
}
