//! The journal after years: `cargo bench -p spillway-agent --bench journal [-- N]`.
//!
//! Builds a journal of N finished jobs (default 1,000,000) and 100 unfinished ones, then
//! measures, side by side on it:
//! - what a restart reads: every record decoded and filtered (before the indexes) against the
//!   unfinished jobs through their index;
//! - what a reconnection's resync reads: every record sorted (before) against the unfinished
//!   jobs and the last 1000 finished through the index by time;
//! - a whole agent starting on that journal: with `[retention]` keeping everything, and with
//!   the default (100,000 jobs), which prunes and compacts at start, then starting again.
//!
//! Times are wall clock; RSS is the process's `VmRSS` growth across each step (the results
//! held), so the figures are comparable with each other, not with an agent alone.

use std::time::{Duration, Instant};

use spillway_agent::journal::{Change, JobRecord, JobState, Journal};
use spillway_agent::{Agent, AgentConfig};
use spillway_proto::{Event, FileEvent, ObjectKey};

fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "machine: {} cores; journal of {n} finished jobs and 100 unfinished",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let path = dir.path().join("journal.redb");
    let built = Instant::now();
    let now = now_ms();
    {
        let j = Journal::open(&path).expect("open");
        let mut chunk = Vec::with_capacity(20_000);
        for i in 0..n {
            // Finished over the last ten days, oldest first.
            chunk.push(Change::Put(finished(
                i,
                now - 864_000_000 + u64::from(i) * 864_000_000 / u64::from(n.max(1)),
            )));
            if chunk.len() == 20_000 {
                j.stage(&chunk).expect("stage");
                j.flush().expect("flush");
                chunk.clear();
            }
        }
        chunk.extend((0..100).map(|i| Change::Put(job(n + i))));
        j.stage(&chunk).expect("stage");
        j.flush().expect("flush");
    }
    println!(
        "  built in {:.1?}: {} MiB on disk",
        built.elapsed(),
        size_mib(&path)
    );
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).expect("copy");

    let j = Journal::open(&path).expect("open");
    let (new_restart, new_rss, held) = measure(|| j.unfinished().expect("unfinished").len());
    let (old_restart, old_rss, _) = measure(|| {
        let mut all = j.all().expect("all");
        all.retain(|r| !r.state.is_final());
        all.len()
    });
    assert_eq!(held, 100);
    println!(
        "restart reads the unfinished jobs: index {new_restart:.1?} (+{new_rss} MiB RSS), every record {old_restart:.1?} (+{old_rss} MiB): {:.0}x",
        old_restart.as_secs_f64() / new_restart.as_secs_f64()
    );
    let (new_resync, new_rss, _) = measure(|| {
        let mut r = j.unfinished().expect("unfinished");
        r.extend(j.recently_finished(1_000).expect("recent"));
        r.len()
    });
    let (old_resync, old_rss, _) = measure(|| {
        let mut all = j.all().expect("all");
        all.sort_by_key(|r| std::cmp::Reverse(r.queued_at_ms));
        all.truncate(1_000);
        all.len()
    });
    println!(
        "resync reads the recent jobs: index {new_resync:.1?} (+{new_rss} MiB RSS), every record {old_resync:.1?} (+{old_rss} MiB): {:.0}x",
        old_resync.as_secs_f64() / new_resync.as_secs_f64()
    );
    drop(j);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let agent_on = |journal: &std::path::Path, retention: &str| {
        let state = dir.path().join(format!(
            "state-{}",
            journal.file_stem().and_then(|s| s.to_str()).unwrap_or("x")
        ));
        std::fs::create_dir_all(&state).expect("state");
        let target = state.join("journal.redb");
        if !target.exists() {
            std::fs::rename(journal, &target).expect("move journal");
        }
        let config = AgentConfig::from_toml(
            &format!(
                "node_name = \"bench\"\ndata_root = \"data\"\nstate_dir = \"{}\"\n{retention}",
                state.display()
            ),
            dir.path(),
        )
        .expect("config");
        let _guard = rt.enter();
        let (took, rss, _) = measure(|| {
            Agent::start(
                config,
                std::path::Path::new("/nonexistent/no-container-shim"),
            )
            .map(drop)
            .expect("agent");
        });
        (took, rss, size_mib(&target))
    };
    let (took, rss, size) = agent_on(&copy, "[retention]\nkeep_finished_jobs = 10000000\n");
    println!("agent start, {n} finished kept: {took:.1?} (+{rss} MiB RSS), journal {size} MiB");
    let (took, rss, size) = agent_on(&path, "");
    println!(
        "agent start, default [retention] (100000 jobs): {took:.1?} (+{rss} MiB RSS) pruning and compacting, journal {size} MiB after"
    );
    let (took, rss, size) = agent_on(&path, "");
    println!(
        "agent start again on the pruned journal: {took:.1?} (+{rss} MiB RSS), journal {size} MiB"
    );
}

fn measure<T>(f: impl FnOnce() -> T) -> (Duration, u64, T) {
    let before = rss_mib();
    let started = Instant::now();
    let out = f();
    (started.elapsed(), rss_mib().saturating_sub(before), out)
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn size_mib(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len() >> 20)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn job(n: u32) -> JobRecord {
    let event = Event::File(FileEvent {
        bucket: "images".into(),
        key: ObjectKey::parse(&format!("in/frame-{n:07}.jpg")).expect("key"),
        size: 150_000,
        mtime_ns: 0,
        sha256: [7; 32],
    });
    JobRecord::new(event.job_id("bench", "detect"), "detect".into(), event)
}

fn finished(n: u32, at_ms: u64) -> JobRecord {
    let mut r = job(n);
    r.queued_at_ms = at_ms - 2_000;
    r.started_at_ms = Some(at_ms - 1_000);
    r.finished_at_ms = Some(at_ms);
    r.attempt = 1;
    r.state = JobState::Succeeded {
        outputs: vec![format!("images/out/frame-{n:07}.json")],
    };
    r
}
