//! Offline lower bounds on mean completion time: what no policy could beat on a trace it knew
//! in advance.
//!
//! Both bounds work on a relaxation of the simulated system that only makes jobs faster, so
//! they are below the optimum of the real one:
//! - each tier's slots are pooled (the fog's agents are one 9-slot machine, and a job moves
//!   between them for free);
//! - every run takes its tier's shortest time (run time less the spread, and the quicker of the
//!   two policies' start-ups), and Lambda is always warm;
//! - Lambda may take as many jobs as the policy's own bill would pay for at that shortest time.
//!
//! In that model a tier's jobs are identical, so for a given set of jobs on a tier starting
//! them in order of arrival on the first free slot gives every k-th start its earliest possible
//! time (each start is at least its arrival and at least the start k places earlier plus a run).
//! [`exact_mean_s`] therefore finds the optimum by trying every assignment of jobs to tiers on
//! small traces; [`lp_mean_s`] (feature `bound`) solves a time-indexed linear relaxation of the
//! whole trace with a bundled interior-point solver (Clarabel, through `good_lp`).

use std::collections::BTreeMap;

use spillway_placement::Millis;

use crate::scenario::Scenario;

/// One tier of the relaxed model.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    /// Jobs at once; `None`: elastic.
    pub slots: Option<u32>,
    /// From the job's arrival to its input being there (0 on the tier where jobs arrive).
    pub transfer_ms: Millis,
    /// Start-up and run, the shortest either policy could get.
    pub busy_ms: Millis,
}

/// A trace and the tiers it may run on.
#[derive(Debug, Clone, PartialEq)]
pub struct Relaxed {
    pub arrivals: Vec<Millis>,
    pub tiers: Vec<Tier>,
}

/// Jobs at most this many for [`exact_mean_s`] (3^12 assignments).
pub const EXACT_MAX_JOBS: usize = 12;

/// The relaxation of `scenarios` (the same trace as each policy deploys it; one function).
pub fn relax(scenarios: &[&Scenario]) -> Relaxed {
    let mut tiers: BTreeMap<String, Tier> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut arrivals = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        let arrive_tier: Vec<&str> = sc
            .arrivals
            .iter()
            .filter_map(|a| sc.nodes.iter().find(|n| n.id == a.node))
            .map(|n| n.tier.as_str())
            .collect();
        if i == 0 {
            arrivals = sc.arrivals.iter().map(|a| a.at).collect();
        }
        let function = sc.arrivals.first().map(|a| a.function.clone());
        let input = function
            .as_ref()
            .and_then(|f| sc.functions.get(f))
            .map_or(0, |f| f.input_bytes);
        let mut slots_now: BTreeMap<String, Option<u32>> = BTreeMap::new();
        for n in &sc.nodes {
            let run = function
                .as_ref()
                .and_then(|f| n.run_ms.get(f))
                .copied()
                .unwrap_or(0);
            let fastest = run * u64::from(100 - n.spread_pct.min(100)) / 100;
            let transfer = if arrive_tier.contains(&n.tier.as_str()) {
                0
            } else {
                n.latency_ms + (input as f64 / n.bytes_per_ms.max(1e-9)) as Millis
            };
            let slots = slots_now.entry(n.tier.clone()).or_insert(Some(0));
            *slots = match (*slots, n.slots) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            let tier = tiers.entry(n.tier.clone()).or_insert_with(|| {
                order.push(n.tier.clone());
                Tier {
                    name: n.tier.clone(),
                    // Pooled over the tier's nodes below.
                    slots: n.slots.map(|_| 0),
                    transfer_ms: transfer,
                    busy_ms: n.start_ms + fastest,
                }
            });
            tier.transfer_ms = tier.transfer_ms.min(transfer);
            tier.busy_ms = tier.busy_ms.min(n.start_ms + fastest);
        }
        for (name, slots) in slots_now {
            if let Some(t) = tiers.get_mut(&name) {
                t.slots = match (t.slots, slots) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
        }
    }
    Relaxed {
        arrivals,
        tiers: order.iter().filter_map(|n| tiers.remove(n)).collect(),
    }
}

/// Sum of completion times (ms) of `arrivals` (sorted) on one tier, started in order on the
/// first free slot.
fn tier_sum(tier: &Tier, arrivals: &[Millis]) -> Millis {
    let Some(k) = tier.slots else {
        return arrivals.len() as Millis * (tier.transfer_ms + tier.busy_ms);
    };
    let k = k.max(1) as usize;
    let mut starts: Vec<Millis> = Vec::with_capacity(arrivals.len());
    let mut sum = 0;
    for (i, &a) in arrivals.iter().enumerate() {
        let ready = a + tier.transfer_ms;
        let start = if i >= k {
            ready.max(starts[i - k] + tier.busy_ms)
        } else {
            ready
        };
        starts.push(start);
        sum += start + tier.busy_ms - a;
    }
    sum
}

/// The exact optimum of the relaxed model's mean completion (s), with at most `elastic_jobs`
/// on elastic tiers, by trying every assignment; `None` above [`EXACT_MAX_JOBS`] jobs.
pub fn exact_mean_s(r: &Relaxed, elastic_jobs: usize) -> Option<f64> {
    let n = r.arrivals.len();
    if n == 0 || n > EXACT_MAX_JOBS || r.tiers.is_empty() {
        return None;
    }
    let mut arrivals = r.arrivals.clone();
    arrivals.sort_unstable();
    let t = r.tiers.len();
    let mut choice = vec![0usize; n];
    let mut best = Millis::MAX;
    let mut per_tier: Vec<Vec<Millis>> = vec![Vec::with_capacity(n); t];
    loop {
        for v in &mut per_tier {
            v.clear();
        }
        for (j, &c) in choice.iter().enumerate() {
            per_tier[c].push(arrivals[j]);
        }
        let elastic: usize = r
            .tiers
            .iter()
            .zip(&per_tier)
            .filter(|(tier, _)| tier.slots.is_none())
            .map(|(_, v)| v.len())
            .sum();
        if elastic <= elastic_jobs {
            let sum: Millis = r
                .tiers
                .iter()
                .zip(&per_tier)
                .map(|(tier, v)| tier_sum(tier, v))
                .sum();
            best = best.min(sum);
        }
        // Next assignment, in base t.
        let mut i = 0;
        loop {
            if i == n {
                return Some(best as f64 / n as f64 / 1000.0);
            }
            choice[i] += 1;
            if choice[i] < t {
                break;
            }
            choice[i] = 0;
            i += 1;
        }
    }
}

/// Jobs an elastic tier could have run on `gb_s` at its shortest time and `memory_gb`.
pub fn elastic_jobs_for(r: &Relaxed, gb_s: f64, memory_gb: f64) -> usize {
    r.tiers.iter().find(|t| t.slots.is_none()).map_or(0, |t| {
        let per_job = t.busy_ms as f64 / 1000.0 * memory_gb;
        if per_job <= 0.0 {
            usize::MAX
        } else {
            (gb_s / per_job + 1e-9).floor() as usize
        }
    })
}

/// A lower bound on the mean completion (s) of the whole trace: the time-indexed linear
/// relaxation with starts in `bucket_ms` buckets (a start counts from its bucket's beginning,
/// and any `floor(busy / bucket)` consecutive buckets start at most the tier's slots), with at
/// most `elastic_jobs` on elastic tiers. A start may be at most `horizon_ms` after arrival; the
/// solution is checked not to need the last bucket.
#[cfg(feature = "bound")]
pub fn lp_mean_s(
    r: &Relaxed,
    elastic_jobs: usize,
    bucket_ms: Millis,
    horizon_ms: Millis,
) -> Result<f64, String> {
    use good_lp::{Expression, ProblemVariables, Solution, SolverModel, Variable, variable};
    let dt = bucket_ms.max(1);
    // Jobs arriving together are interchangeable: one set of variables per arrival time.
    let mut groups: BTreeMap<Millis, f64> = BTreeMap::new();
    for &a in &r.arrivals {
        *groups.entry(a).or_default() += 1.0;
    }
    let n_jobs = r.arrivals.len() as f64;
    if n_jobs == 0.0 {
        return Ok(0.0);
    }
    let last = groups.keys().next_back().copied().unwrap_or(0) + horizon_ms;
    let buckets = (last / dt + 2) as usize;
    let mut vars = ProblemVariables::new();
    let mut objective = Expression::from(0.0);
    let mut elastic = Expression::from(0.0);
    let mut rows: Vec<(Expression, f64)> = Vec::new();
    let mut per_bucket: Vec<Vec<Expression>> = r
        .tiers
        .iter()
        .map(|_| vec![Expression::from(0.0); buckets])
        .collect();
    let mut at_horizon: Vec<Variable> = Vec::new();
    for (&at, &n) in &groups {
        let mut row = Expression::from(0.0);
        for (ti, tier) in r.tiers.iter().enumerate() {
            let ready = at + tier.transfer_ms;
            if tier.slots.is_none() {
                // Elastic: starting at once is never worse.
                let y = vars.add(variable().min(0.0).max(n));
                objective += y * ((ready + tier.busy_ms - at) as f64 / 1000.0);
                elastic += y;
                row += y;
                continue;
            }
            let first = ready / dt;
            let end = (at + horizon_ms) / dt;
            for b in first..=end {
                let x = vars.add(variable().min(0.0).max(n));
                let start = (b * dt).max(ready);
                objective += x * ((start + tier.busy_ms - at) as f64 / 1000.0);
                row += x;
                per_bucket[ti][b as usize] += x;
                if b == end {
                    at_horizon.push(x);
                }
            }
        }
        rows.push((row, n));
    }
    // Slots as windows over prefix sums: any `w` consecutive buckets start at most `k`.
    let mut windows: Vec<good_lp::Constraint> = Vec::new();
    for (ti, tier) in r.tiers.iter().enumerate() {
        let Some(k) = tier.slots else { continue };
        let w = (tier.busy_ms / dt).max(1) as usize;
        let prefix: Vec<Variable> = (0..buckets)
            .map(|_| vars.add(variable().min(0.0)))
            .collect();
        for b in 0..buckets {
            let before = if b == 0 {
                Expression::from(0.0)
            } else {
                Expression::from(prefix[b - 1])
            };
            windows.push((prefix[b] - before - per_bucket[ti][b].clone()).eq(0.0));
            let back = if b >= w {
                Expression::from(prefix[b - w])
            } else {
                Expression::from(0.0)
            };
            windows.push((prefix[b] - back).leq(f64::from(k)));
        }
    }
    let mut model = vars.minimise(objective.clone()).using(good_lp::clarabel);
    for (row, n) in rows {
        model = model.with(row.eq(n));
    }
    model = model.with(elastic.leq(elastic_jobs as f64));
    for c in windows {
        model = model.with(c);
    }
    let solution = model.solve().map_err(|e| e.to_string())?;
    let used_horizon: f64 = at_horizon.iter().map(|x| solution.value(*x)).sum();
    if used_horizon > 1e-3 {
        return Err(format!(
            "the relaxation needs starts {} s after arrival; raise the horizon",
            horizon_ms / 1000
        ));
    }
    Ok(solution.eval(&objective) / n_jobs)
}
