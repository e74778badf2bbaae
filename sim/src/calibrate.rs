//! Fitting the fire case's unknowns to what the OSCAR thesis measured (ch. 5).
//!
//! The thesis counts, for phase 2, the jobs the fog cluster handed to the on-premises one and
//! those the on-premises cluster handed to Lambda, each split into the Resource Manager's share
//! (at admission) and the Rescheduler's, and it saw duplicates on the way to Lambda only. It
//! gives no run times and no Resource Manager interval. [`search`] replays OSCAR's policy on a
//! grid of those unknowns and keeps the point whose worst relative error is smallest, in two
//! stages: the fog's hand-overs depend only on the fog (its replica always accepts), so its run
//! time, the spread and the interval are fitted first; then the on-premises and Lambda run
//! times, on scenario 2's hand-overs to Lambda and its duplicates.

use std::fmt::Write;

use serde::Serialize;
use spillway_placement::Millis;

use crate::report::{Report, Route};
use crate::scenario::{FireCase, FireFit};

/// The fit [`search`] finds on [`Grid::standard`] at [`THESIS_THRESHOLD_MS`] (kept here so
/// every replay uses it without searching; a test checks the search still lands on it).
pub const CALIBRATED: FireFit = FireFit {
    fog_run_ms: 27_500,
    onprem_run_ms: 17_500,
    onprem_start_ms: 3_000,
    lambda_run_ms: 19_250,
    spread_pct: 5,
    resource_manager_interval_ms: 25_000,
    backoff_max_ms: 10_000,
};

/// The best fit at Fig. 5.4's `rescheduler_threshold: 15`.
pub const CALIBRATED_AT_15S: FireFit = FireFit {
    fog_run_ms: 26_000,
    onprem_run_ms: 16_500,
    onprem_start_ms: 3_000,
    lambda_run_ms: 16_500,
    spread_pct: 30,
    resource_manager_interval_ms: 12_500,
    backoff_max_ms: 10_000,
};

/// The threshold whose fit matches the thesis better: the text's 30 s default (Fig. 5.4's FDL
/// says 15 s; both are fitted and printed).
pub const THESIS_THRESHOLD_MS: Millis = 30_000;

/// The thesis' phase-2 hand-overs (ch. 5): scenario 1 fog → on-prem, scenario 2 fog → on-prem
/// and on-prem → Lambda, as (Resource Manager, Rescheduler).
pub const THESIS: Counts = Counts {
    s1_fog_onprem: Route {
        admission: 455,
        rescheduler: 22,
    },
    s2_fog_onprem: Route {
        admission: 510,
        rescheduler: 28,
    },
    s2_onprem_lambda: Route {
        admission: 76,
        rescheduler: 9,
    },
    // "Observed", uncounted; only Rescheduler hand-overs to Lambda can be duplicates, so 1–9.
    s2_duplicates: 0,
};

/// Duplicates the thesis allows in scenario 2: it saw some, all among the 9 Rescheduler
/// hand-overs to Lambda.
pub const THESIS_DUPLICATES: std::ops::RangeInclusive<u32> = 1..=9;

/// What OSCAR's policy did in both scenarios, in the thesis' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub s1_fog_onprem: Route,
    pub s2_fog_onprem: Route,
    pub s2_onprem_lambda: Route,
    pub s2_duplicates: u32,
}

impl Counts {
    fn of(s1: &Report, s2: &Report) -> Self {
        Self {
            s1_fog_onprem: s1.route("fog", "on-prem"),
            s2_fog_onprem: s2.route("fog", "on-prem"),
            s2_onprem_lambda: s2.route("on-prem", "lambda"),
            s2_duplicates: s2.duplicate_completions,
        }
    }
}

/// One count the fit is judged on.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: &'static str,
    pub thesis: u32,
    pub simulated: u32,
    /// See [`error`].
    pub error: f64,
}

/// The counts compared one by one: each route's total and its Rescheduler share (the Resource
/// Manager's is their difference).
pub fn checks(c: &Counts) -> Vec<Check> {
    let t = THESIS;
    let routes = [
        (
            "scenario 1, fog → on-prem",
            t.s1_fog_onprem,
            c.s1_fog_onprem,
        ),
        (
            "scenario 2, fog → on-prem",
            t.s2_fog_onprem,
            c.s2_fog_onprem,
        ),
        (
            "scenario 2, on-prem → Lambda",
            t.s2_onprem_lambda,
            c.s2_onprem_lambda,
        ),
    ];
    let check = |what, thesis, simulated| Check {
        what,
        thesis,
        simulated,
        error: error(thesis, simulated),
    };
    routes
        .into_iter()
        .flat_map(|(what, thesis, sim)| {
            [
                check(what, thesis.total(), sim.total()),
                check(
                    "  of which by the Rescheduler",
                    thesis.rescheduler,
                    sim.rescheduler,
                ),
            ]
        })
        .collect()
}

/// |simulated − thesis| / thesis, where one job off counts as none: a count of 9 has no
/// neighbour within 10 %, so the tolerance is ±10 % or ±1 job, whichever is larger.
pub fn error(thesis: u32, simulated: u32) -> f64 {
    let off = thesis.abs_diff(simulated);
    if off <= 1 {
        0.0
    } else {
        f64::from(off) / f64::from(thesis.max(1))
    }
}

/// The worst relative error of the checks, plus 1 when the duplicates fall outside what the
/// thesis allows.
pub fn score(c: &Counts) -> f64 {
    let worst = checks(c).iter().map(|k| k.error).fold(0.0, f64::max);
    worst
        + if THESIS_DUPLICATES.contains(&c.s2_duplicates) {
            0.0
        } else {
            1.0
        }
}

/// Replays OSCAR's policy on both scenarios with `fit` and `threshold_ms`.
pub fn observe(fit: FireFit, threshold_ms: Millis) -> Counts {
    let case = |lambda| FireCase {
        lambda,
        fit,
        threshold_ms,
        spillway_budget_gb_s: None,
        oscar_resource_manager_ms: None,
        trace: crate::scenario::Trace::Thesis,
    };
    Counts::of(&case(false).run("oscar"), &case(true).run("oscar"))
}

/// The values tried for each unknown.
#[derive(Debug, Clone)]
pub struct Grid {
    pub fog_run_ms: Vec<Millis>,
    pub spread_pct: Vec<u32>,
    pub resource_manager_interval_ms: Vec<Millis>,
    pub onprem_run_ms: Vec<Millis>,
    pub onprem_start_ms: Vec<Millis>,
    /// Lambda's run time as a multiple of the on-prem one, in percent (the thesis ranks Lambda
    /// between the two clusters; points where it is not below the fog are skipped).
    pub lambda_vs_onprem_pct: Vec<u64>,
}

impl Grid {
    /// Fog 12–40 s and on-prem 12–24 s in 0.5 s steps, on-prem pod start 1–3 s, Lambda (its
    /// run 1–1.5× the on-prem one, below the fog's), spread 0–40 % in 5 % steps, Resource
    /// Manager every 5–30 s.
    pub fn standard() -> Self {
        Self {
            fog_run_ms: (24..=80).map(|h| h * 500).collect(),
            spread_pct: (0..=8).map(|f| f * 5).collect(),
            resource_manager_interval_ms: vec![
                5_000, 7_500, 10_000, 12_500, 15_000, 17_500, 20_000, 25_000, 30_000,
            ],
            onprem_run_ms: (24..=48).map(|h| h * 500).collect(),
            onprem_start_ms: vec![1_000, 2_000, 3_000],
            lambda_vs_onprem_pct: vec![100, 110, 120, 130, 140, 150],
        }
    }

    pub fn describe(&self) -> String {
        let secs = |v: &[Millis]| v.iter().map(|m| *m as f64 / 1000.0).collect::<Vec<_>>();
        let span = |v: &[Millis]| {
            format!(
                "{}–{} s ({} values)",
                v.first().copied().unwrap_or(0) as f64 / 1000.0,
                v.last().copied().unwrap_or(0) as f64 / 1000.0,
                v.len()
            )
        };
        format!(
            "fog run {}, spread {:?} %, Resource Manager interval {:?} s; then, for the {} best, \
             on-prem run {}, on-prem pod start {:?} s, Lambda run {:?} % of on-prem's (below \
             the fog's)",
            span(&self.fog_run_ms),
            self.spread_pct,
            secs(&self.resource_manager_interval_ms),
            FOG_CANDIDATES,
            span(&self.onprem_run_ms),
            secs(&self.onprem_start_ms),
            self.lambda_vs_onprem_pct,
        )
    }
}

/// What [`search`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Fitted {
    pub threshold_ms: Millis,
    pub fit: FireFit,
    pub counts: Counts,
    pub score: f64,
    /// Replays run (each a simulated two hours of one scenario).
    pub replays: usize,
}

/// Finds the fit for `threshold_ms` on `grid`, with `threads` workers. The fog's hand-overs
/// are fitted first, on both scenarios; then the on-premises and Lambda run times on scenario
/// 2. Ties go to the earlier grid point, so the result does not depend on `threads`.
pub fn search(grid: &Grid, threshold_ms: Millis, threads: usize) -> Fitted {
    let mut fog_points = Vec::new();
    for &rm in &grid.resource_manager_interval_ms {
        for &spread in &grid.spread_pct {
            for &fog in &grid.fog_run_ms {
                fog_points.push(FireFit {
                    fog_run_ms: fog,
                    spread_pct: spread,
                    resource_manager_interval_ms: rm,
                    ..CALIBRATED
                });
            }
        }
    }
    // Stage 1: the fog's routes only (the other checks are not the fog's to meet).
    let fog_score = |fit: &FireFit| {
        let c = observe(*fit, threshold_ms);
        checks(&c)
            .iter()
            .take(4)
            .map(|k| k.error)
            .fold(0.0, f64::max)
    };
    let scored = on_threads(&fog_points, threads, fog_score);
    let mut order: Vec<usize> = (0..fog_points.len()).collect();
    order.sort_by(|a, b| scored[*a].total_cmp(&scored[*b]).then(a.cmp(b)));
    // Stage 2 on each of the best fog fits: the on-prem cluster's load depends on them.
    let mut rest = Vec::new();
    for &i in order.iter().take(FOG_CANDIDATES) {
        for &onprem in &grid.onprem_run_ms {
            for &start in &grid.onprem_start_ms {
                for &pct in &grid.lambda_vs_onprem_pct {
                    let lambda = onprem * pct / 100;
                    if lambda >= fog_points[i].fog_run_ms {
                        continue;
                    }
                    rest.push(FireFit {
                        onprem_run_ms: onprem,
                        onprem_start_ms: start,
                        lambda_run_ms: lambda,
                        ..fog_points[i]
                    });
                }
            }
        }
    }
    let all = on_threads(&rest, threads, |fit| score(&observe(*fit, threshold_ms)));
    let (i, score) = all
        .iter()
        .copied()
        .enumerate()
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let fit = rest.get(i).copied().unwrap_or(CALIBRATED);
    Fitted {
        threshold_ms,
        fit,
        counts: observe(fit, threshold_ms),
        score,
        replays: 2 * fog_points.len() + 2 * rest.len() + 2,
    }
}

/// The recorded fit at `threshold_ms`, replayed (no search).
pub fn recorded(threshold_ms: Millis) -> Fitted {
    fitted(CALIBRATED, threshold_ms)
}

/// The fits at the text's 30 s and Fig. 5.4's 15 s thresholds: searched on `search_threads`
/// workers, or the recorded ones replayed.
pub fn fits(search_threads: Option<usize>) -> Vec<Fitted> {
    match search_threads {
        Some(threads) => [THESIS_THRESHOLD_MS, 15_000]
            .into_iter()
            .map(|t| search(&Grid::standard(), t, threads))
            .collect(),
        None => vec![recorded(THESIS_THRESHOLD_MS), recorded_at_15s()],
    }
}

/// The fit [`search`] finds at Fig. 5.4's 15 s threshold, replayed.
pub fn recorded_at_15s() -> Fitted {
    fitted(CALIBRATED_AT_15S, 15_000)
}

fn fitted(fit: FireFit, threshold_ms: Millis) -> Fitted {
    let counts = observe(fit, threshold_ms);
    Fitted {
        threshold_ms,
        fit,
        counts,
        score: score(&counts),
        replays: 2,
    }
}

/// The fog fits carried into the second stage.
const FOG_CANDIDATES: usize = 40;

/// `f` of every item, computed on `threads` workers (at most 16), in the items' order: the
/// grid searches of the fire and seed fits.
pub(crate) fn on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, 16);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                s.spawn(move || part.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The fit next to the thesis, check by check, and how it was found.
pub fn explain(fitted: &Fitted, grid: &Grid) -> String {
    let mut out = String::new();
    let f = fitted.fit;
    let _ = writeln!(
        out,
        "fit at rescheduler_threshold {} s: fog run {:.1} s, on-prem run {:.1} s (pod start \
         {:.1} s), Lambda run {:.1} s, each ± {} %, Resource Manager every {} s (worst error \
         {:.1} %{})",
        fitted.threshold_ms / 1000,
        f.fog_run_ms as f64 / 1000.0,
        f.onprem_run_ms as f64 / 1000.0,
        f.onprem_start_ms as f64 / 1000.0,
        f.lambda_run_ms as f64 / 1000.0,
        f.spread_pct,
        f.resource_manager_interval_ms as f64 / 1000.0,
        100.0 * fitted.score.min(1.0),
        if THESIS_DUPLICATES.contains(&fitted.counts.s2_duplicates) {
            ""
        } else {
            "; duplicates outside the thesis' range"
        }
    );
    let _ = writeln!(
        out,
        "  found by {} over {}; the point whose worst error against the counts below is \
         smallest (error: |simulated − thesis| / thesis, one job off counting as none)",
        if fitted.replays > 2 {
            format!("{} replays of OSCAR's policy", fitted.replays)
        } else {
            "`spillway sim fire --fit` (the recorded result, replayed here)".to_owned()
        },
        grid.describe()
    );
    let _ = writeln!(
        out,
        "  {:<32} {:>7} {:>10} {:>7}",
        "phase 2", "thesis", "simulated", "error"
    );
    for k in checks(&fitted.counts) {
        let _ = writeln!(
            out,
            "  {:<32} {:>7} {:>10} {:>6.1}%",
            k.what,
            k.thesis,
            k.simulated,
            100.0 * k.error
        );
    }
    let _ = write!(
        out,
        "  {:<32} {:>7} {:>10}",
        "scenario 2, jobs finished twice", "1–9", fitted.counts.s2_duplicates
    );
    out
}
