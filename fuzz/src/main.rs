//! `spillway-fuzz`: feeds Spillway's parsers millions of mutated real inputs on stable Rust (no
//! nightly, no instrumentation): wire frames, load reports, join requests, the FDL reader, the
//! image-layer unpacker, image archives, S3 notifications and OSCAR's wrapped event. A panic is
//! caught, its input kept in `--out`, and the run fails. A stack overflow or an abort ends the
//! process itself, which fails the run just as loudly.
//!
//!   cargo run --profile fuzz -p spillway-fuzz -- --runs 10000000 --target fdl
//!   cargo run -p spillway-fuzz -- --runs 2000        # every target, a short pass (CI)

mod mutate;
mod rng;
mod tarball;
mod targets;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Fuzz Spillway's parsers with mutated real inputs")]
struct Args {
    /// Targets to run (all when none is given).
    #[arg(long = "target", value_parser = targets::NAMES)]
    targets: Vec<String>,
    /// Inputs per target.
    #[arg(long, default_value_t = 100_000)]
    runs: u64,
    /// Seed of the generator: the same seed replays the same inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where inputs that panicked are kept.
    #[arg(long, default_value = "fuzz-crashes")]
    out: PathBuf,
    /// Scratch space for targets that touch files (a tmpfs is fastest).
    #[arg(long, default_value = "/dev/shm")]
    scratch: PathBuf,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(crashes) => {
            eprintln!("spillway-fuzz: {crashes} inputs panicked; they are in the --out folder");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("spillway-fuzz: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<u64> {
    let names: Vec<String> = if args.targets.is_empty() {
        targets::NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        args.targets.clone()
    };
    let scratch = tempfile::Builder::new()
        .prefix("spillway-fuzz")
        .tempdir_in(&args.scratch)
        .or_else(|_| tempfile::tempdir())?;
    // A caught panic is reported by the loop; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    println!(
        "{:<12} {:>12} {:>10} {:>10} {:>8} {:>12}",
        "target", "runs", "accepted", "refused", "crashes", "runs/s"
    );
    let mut crashes = 0;
    for name in &names {
        let mut target = targets::target(name, scratch.path())?;
        let mut rng = rng::Rng::new(args.seed ^ fnv(name));
        let (mut accepted, mut refused, mut crashed) = (0u64, 0u64, 0u64);
        let started = Instant::now();
        for i in 0..args.runs {
            let input = match target.generate {
                Some(generate) if rng.chance(4) => generate(&mut rng),
                _ => {
                    let seed = rng.pick(&target.seeds).clone();
                    if i < target.seeds.len() as u64 {
                        seed
                    } else {
                        mutate::mutate(&mut rng, &seed, &target.seeds, &target.dictionary)
                    }
                }
            };
            let run = &mut target.run;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&input))) {
                Ok(true) => accepted += 1,
                Ok(false) => refused += 1,
                Err(_) => {
                    crashed += 1;
                    std::fs::create_dir_all(&args.out)?;
                    let path = args.out.join(format!("{name}-{i}.bin"));
                    std::fs::write(&path, &input)?;
                }
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        println!(
            "{:<12} {:>12} {:>10} {:>10} {:>8} {:>12.0}",
            target.name,
            args.runs,
            accepted,
            refused,
            crashed,
            args.runs as f64 / secs
        );
        crashes += crashed;
    }
    Ok(crashes)
}

/// A stable per-target offset of the seed.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
