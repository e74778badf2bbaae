//! The fire case compared fairly: both policies with the same threshold, OSCAR also offered
//! Spillway's one extra advantage (a fresh view) in its own terms, and Spillway held to no more
//! Lambda spend than OSCAR's; then Spillway's whole cost/queue curve.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use spillway_placement::Millis;

use crate::report::Report;
use crate::scenario::{FireCase, Trace};

/// Spillway's agents report load every second; offered to OSCAR in its own terms, that is a
/// `RESOURCE_MANAGER_INTERVAL` of 1 s.
pub const SPILLWAY_REPORT_MS: Millis = 1_000;

/// One side of a comparison row.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub policy: String,
    pub queue_mean_s: f64,
    pub queue_p95_s: f64,
    pub completion_mean_s: f64,
    pub completion_p95_s: f64,
    pub lambda_gb_s: f64,
    pub lambda_usd: f64,
    pub duplicates: u32,
    pub lost: usize,
    /// Spillway's hourly Lambda budget (GB-s) in this run; `None` for OSCAR or unbounded.
    pub budget_gb_s: Option<f64>,
}

/// A report's figures as one side of a row.
pub fn side(r: &Report) -> Side {
    Side::of(r, None)
}

impl Side {
    fn of(r: &Report, budget: Option<f64>) -> Self {
        Self {
            policy: r.policy.clone(),
            queue_mean_s: r.queue_mean_s,
            queue_p95_s: r.queue_p95_s,
            completion_mean_s: r.completion_mean_s,
            completion_p95_s: r.completion_p95_s,
            lambda_gb_s: r.lambda_gb_s,
            lambda_usd: r.lambda_usd,
            duplicates: r.duplicate_runs,
            lost: r.lost_jobs,
            budget_gb_s: budget,
        }
    }
}

/// Spillway against OSCAR on one set-up.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub setup: String,
    pub threshold_ms: Millis,
    pub oscar: Side,
    pub spillway: Side,
}

impl Row {
    pub fn queue_ratio(&self) -> f64 {
        self.spillway.queue_mean_s / self.oscar.queue_mean_s.max(1e-9)
    }

    pub fn completion_ratio(&self) -> f64 {
        self.spillway.completion_mean_s / self.oscar.completion_mean_s.max(1e-9)
    }
}

/// Spillway at no more Lambda spend than OSCAR's on `case`: its hourly budget starts at what
/// OSCAR billed per hour of the trace and shrinks until Spillway's whole bill (cold starts
/// included) is not above OSCAR's.
pub fn at_oscars_spend(case: FireCase, setup: &str) -> Row {
    let oscar = case.run("oscar");
    let within = |budget: f64| {
        FireCase {
            spillway_budget_gb_s: Some(budget),
            ..case
        }
        .run("spillway")
    };
    let mut budget = oscar.lambda_gb_s / f64::from(case.trace.hours().max(1));
    let mut spillway = within(budget);
    for _ in 0..40 {
        if spillway.lambda_gb_s <= oscar.lambda_gb_s {
            break;
        }
        budget *= 0.95;
        spillway = within(budget);
    }
    Row {
        setup: setup.to_owned(),
        threshold_ms: case.threshold_ms,
        oscar: Side::of(&oscar, None),
        spillway: Side::of(&spillway, Some(budget)),
    }
}

/// The comparisons `spillway sim fire` prints: both scenarios at the thesis' threshold; OSCAR
/// also with a 1 s Resource Manager; and both at shorter thresholds.
pub fn fair(thesis: FireCase) -> Vec<Row> {
    let mut rows = Vec::new();
    for lambda in [false, true] {
        let case = FireCase { lambda, ..thesis };
        let name = if lambda { "scenario 2" } else { "scenario 1" };
        rows.push(at_oscars_spend(
            case,
            &format!("{name}, as the thesis ran it"),
        ));
        rows.push(at_oscars_spend(
            FireCase {
                oscar_resource_manager_ms: Some(SPILLWAY_REPORT_MS),
                ..case
            },
            &format!("{name}, OSCAR's Resource Manager every 1 s"),
        ));
        for threshold_ms in [15_000, 5_000, 2_000] {
            if threshold_ms == thesis.threshold_ms {
                continue;
            }
            rows.push(at_oscars_spend(
                FireCase {
                    threshold_ms,
                    oscar_resource_manager_ms: Some(SPILLWAY_REPORT_MS),
                    ..case
                },
                &format!(
                    "{name}, both at threshold {} s, Resource Manager every 1 s",
                    threshold_ms / 1000
                ),
            ));
        }
    }
    rows
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<58} {:>8} {:>17} {:>17} {:>15} {:>6}",
        "set-up (same threshold for both)",
        "policy",
        "queue mean/p95 s",
        "compl. mean/p95 s",
        "Lambda GB-s ($)",
        "dup."
    );
    for r in rows {
        for (i, s) in [&r.oscar, &r.spillway].into_iter().enumerate() {
            let _ = writeln!(
                out,
                "{:<58} {:>8} {:>8.1}/{:<8.1} {:>8.1}/{:<8.1} {:>6.0} ({:.3}) {:>6}",
                if i == 0 { r.setup.as_str() } else { "" },
                s.policy,
                s.queue_mean_s,
                s.queue_p95_s,
                s.completion_mean_s,
                s.completion_p95_s,
                s.lambda_gb_s,
                s.lambda_usd,
                s.duplicates
            );
        }
        let _ = writeln!(
            out,
            "{:<58} {:>8} queue ×{:.2}, completion ×{:.2}",
            "",
            "ratio",
            r.queue_ratio(),
            r.completion_ratio()
        );
    }
    out
}

/// Loads beyond the seeds on the calibrated scenario-2 tiers (fog, on-prem, Lambda), both
/// policies set up as the thesis ran them, Spillway at no more than OSCAR's spend: a fire seen by
/// one camera (150 images at once every 10 minutes for 2 hours, over the phase-1 rate), and a
/// day that follows the sun (up to 36 images a minute, the thesis' phase-2 rate, at noon).
pub fn beyond() -> Vec<Row> {
    let traces = [
        Trace::Bursts {
            hours: 2,
            every_min: 10,
            burst: 150,
        },
        Trace::Diurnal {
            hours: 24,
            peak_per_min: 36,
        },
    ];
    traces
        .into_iter()
        .map(|trace| {
            let case = FireCase {
                trace,
                ..FireCase::thesis(true)
            };
            at_oscars_spend(case, &trace.name(true))
        })
        .collect()
}

/// One point of Spillway's cost/queue curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// Hourly budget in GB-s; `None`: unbounded.
    pub budget_gb_s: Option<f64>,
    pub spent_gb_s: f64,
    pub usd: f64,
    pub queue_mean_s: f64,
    pub queue_p95_s: f64,
    pub completion_mean_s: f64,
}

/// The set-up of the cost curve: scenario 2 with both at a 5 s threshold and OSCAR's Resource
/// Manager every second (at the thesis' 30 s Spillway needs no Lambda at all, so the curve
/// would be flat).
pub fn curve_case() -> FireCase {
    FireCase {
        lambda: true,
        threshold_ms: 5_000,
        oscar_resource_manager_ms: Some(SPILLWAY_REPORT_MS),
        ..FireCase::thesis(true)
    }
}

/// Spillway's queue time as its Lambda budget goes from nothing to unbounded (scenario 2).
pub fn curve(case: FireCase) -> Vec<CurvePoint> {
    let budgets = [
        Some(0.0),
        Some(250.0),
        Some(500.0),
        Some(1_000.0),
        Some(1_500.0),
        Some(2_000.0),
        Some(3_000.0),
        Some(4_000.0),
        Some(6_000.0),
        Some(8_000.0),
        Some(12_000.0),
        Some(16_000.0),
        None,
    ];
    budgets
        .into_iter()
        .map(|budget| {
            let r = FireCase {
                lambda: true,
                spillway_budget_gb_s: budget,
                ..case
            }
            .run("spillway");
            CurvePoint {
                budget_gb_s: budget,
                spent_gb_s: r.lambda_gb_s,
                usd: r.lambda_usd,
                queue_mean_s: r.queue_mean_s,
                queue_p95_s: r.queue_p95_s,
                completion_mean_s: r.completion_mean_s,
            }
        })
        .collect()
}

pub fn curve_table(points: &[CurvePoint], oscar: &Side) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>14} {:>10} {:>9} {:>16} {:>16}",
        "budget GB-s/h", "spent GB-s", "$", "queue mean/p95 s", "completion mean"
    );
    for p in points {
        let _ = writeln!(
            out,
            "{:>14} {:>10.0} {:>9.4} {:>7.1}/{:<8.1} {:>16.1}",
            p.budget_gb_s
                .map_or("unbounded".to_owned(), |b| format!("{b:.0}")),
            p.spent_gb_s,
            p.usd,
            p.queue_mean_s,
            p.queue_p95_s,
            p.completion_mean_s
        );
    }
    let _ = write!(
        out,
        "{:>14} {:>10.0} {:>9.4} {:>7.1}/{:<8.1} {:>16.1}",
        "OSCAR",
        oscar.lambda_gb_s,
        oscar.lambda_usd,
        oscar.queue_mean_s,
        oscar.queue_p95_s,
        oscar.completion_mean_s
    );
    out
}

/// The curve as an SVG or PNG (by `path`'s extension): mean queue time against Lambda GB-s,
/// with OSCAR's point.
pub fn plot_curve(points: &[CurvePoint], oscar: &Side, path: &Path) -> Result<(), String> {
    crate::on_canvas!(path, (900, 520), |root| draw_curve(root, points, oscar))
}

fn draw_curve<DB: plotters::prelude::DrawingBackend>(
    root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    points: &[CurvePoint],
    oscar: &Side,
) -> Result<(), String> {
    use plotters::prelude::*;
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let x_max = points
        .iter()
        .map(|p| p.spent_gb_s)
        .chain([oscar.lambda_gb_s])
        .fold(1.0, f64::max)
        * 1.1;
    let y_max = points
        .iter()
        .map(|p| p.queue_mean_s)
        .chain([oscar.queue_mean_s])
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = crate::report::chart(
        root,
        "fire detection, scenario 2, threshold 5 s: mean queue time against Lambda spend",
        (x_max, y_max),
        ("Lambda GB-s billed (1 GB functions)", "mean queue time, s"),
    )?;
    let line: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.spent_gb_s, p.queue_mean_s))
        .collect();
    chart
        .draw_series(LineSeries::new(line.clone(), &BLUE))
        .map_err(|e| e.to_string())?
        .label("Spillway, budget from 0 to unbounded")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(line.into_iter().map(|p| Circle::new(p, 3, BLUE.filled())))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series([Cross::new(
            (oscar.lambda_gb_s, oscar.queue_mean_s),
            7,
            RED.stroke_width(2),
        )])
        .map_err(|e| e.to_string())?
        .label("OSCAR (calibrated, Resource Manager every 1 s)")
        .legend(|(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(2)));
    crate::report::legend(&mut chart)
}

/// A policy's mean completion against the offline bound on one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    pub trace: String,
    pub policy: String,
    pub completion_mean_s: f64,
    pub lambda_gb_s: f64,
    /// "exact optimum" (small traces) or "LP relaxation" (the full trace).
    pub bound_kind: &'static str,
    pub bound_mean_s: f64,
}

impl Limit {
    pub fn ratio(&self) -> f64 {
        self.completion_mean_s / self.bound_mean_s.max(1e-9)
    }
}

/// Lambda's memory in the fire case (GB).
const LAMBDA_GB: f64 = 1.0;

/// Both policies on small traces of the fire case (`rounds` rounds of 3 images 5.25 s apart
/// on one 3-slot fog node, a 2-slot on-prem cluster and Lambda), against the exact optimum at
/// each policy's own Lambda spend.
pub fn small_limits(case: FireCase, rounds: &[u32]) -> Vec<Limit> {
    use crate::bound::{elastic_jobs_for, exact_mean_s, relax};
    use crate::scenario::small_fire;
    let mut out = Vec::new();
    for &n in rounds {
        let scenarios = [
            small_fire(true, &case, n, 5_250),
            small_fire(false, &case, n, 5_250),
        ];
        let relaxed = relax(&[&scenarios[0], &scenarios[1]]);
        for (policy, sc) in ["oscar", "spillway"].into_iter().zip(&scenarios) {
            let r = crate::run(sc, case.policy(policy).as_mut());
            let jobs = elastic_jobs_for(&relaxed, r.lambda_gb_s, LAMBDA_GB);
            if let Some(bound) = exact_mean_s(&relaxed, jobs) {
                out.push(Limit {
                    trace: format!("{} images in {} rounds", n * 3, n),
                    policy: policy.to_owned(),
                    completion_mean_s: r.completion_mean_s,
                    lambda_gb_s: r.lambda_gb_s,
                    bound_kind: "exact optimum",
                    bound_mean_s: bound,
                });
            }
        }
    }
    out
}

/// Both policies on the whole trace of `case` against the linear relaxation at each policy's
/// own Lambda spend (2 s buckets: a start counts from its bucket's beginning).
#[cfg(feature = "bound")]
pub fn full_limits(case: FireCase, label: &str) -> Result<Vec<Limit>, String> {
    use crate::bound::{elastic_jobs_for, lp_mean_s, relax};
    let scenarios = [case.scenario("oscar"), case.scenario("spillway")];
    let relaxed = relax(&[&scenarios[0], &scenarios[1]]);
    let mut out = Vec::new();
    for (policy, sc) in ["oscar", "spillway"].into_iter().zip(&scenarios) {
        let r = crate::run(sc, case.policy(policy).as_mut());
        let jobs = elastic_jobs_for(&relaxed, r.lambda_gb_s, LAMBDA_GB);
        let bound = lp_mean_s(&relaxed, jobs, 2_000, 300_000)?;
        out.push(Limit {
            trace: label.to_owned(),
            policy: policy.to_owned(),
            completion_mean_s: r.completion_mean_s,
            lambda_gb_s: r.lambda_gb_s,
            bound_kind: "LP relaxation",
            bound_mean_s: bound,
        });
    }
    Ok(out)
}

pub fn limits_table(limits: &[Limit]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<46} {:>8} {:>11} {:>8} {:>15} {:>10} {:>7}",
        "trace", "policy", "Lambda GB-s", "mean s", "bound", "bound s", "ratio"
    );
    for l in limits {
        let _ = writeln!(
            out,
            "{:<46} {:>8} {:>11.0} {:>8.2} {:>15} {:>10.2} {:>7.2}",
            l.trace,
            l.policy,
            l.lambda_gb_s,
            l.completion_mean_s,
            l.bound_kind,
            l.bound_mean_s,
            l.ratio()
        );
    }
    out
}

/// What `spillway sim fire` and the placement bench print, and what `--plot` draws.
#[derive(Debug)]
pub struct FireSummary {
    pub text: String,
    /// Each policy's run on the thesis' set-up (scenario 2 if `lambda`).
    pub oscar: Report,
    pub spillway: Report,
    pub curve: Vec<CurvePoint>,
    /// OSCAR on the curve's set-up, the point the curve is drawn against.
    pub curve_oscar: Side,
}

/// The fits next to the thesis (`fits`: at 30 s, then 15 s) and which is closer, the priors,
/// both policies on the thesis' set-up, the fair comparison, Spillway's cost/queue curve and
/// the small traces against their exact optimum.
pub fn fire_summary(fits: &[crate::calibrate::Fitted], lambda: bool) -> FireSummary {
    use crate::calibrate;
    let mut text = String::from("Calibration of OSCAR's policy against the thesis (ch. 5)\n\n");
    for fitted in fits {
        let _ = writeln!(
            text,
            "{}\n",
            calibrate::explain(fitted, &calibrate::Grid::standard())
        );
    }
    let closer = fits
        .iter()
        .min_by(|a, b| a.score.total_cmp(&b.score))
        .map_or(0, |f| f.threshold_ms / 1000);
    let _ = writeln!(
        text,
        "The thesis' text says the default 30 s threshold ran; Fig. 5.4's FDL says 15 s. The \
         {closer} s fit is the closer one; the replays below use the recorded 30 s fit.\n\
         priors (not fitted): {}\n",
        crate::scenario::FIRE_PRIORS
    );
    let case = FireCase::thesis(lambda);
    let (oscar, spillway) = (case.run("oscar"), case.run("spillway"));
    let _ = writeln!(text, "{}\n\n{}\n", oscar.table(), spillway.table());
    let _ = writeln!(
        text,
        "Fair comparison: the same threshold for both; Spillway at no more Lambda spend\n\n{}",
        table(&fair(FireCase::thesis(true)))
    );
    let curve = curve(curve_case());
    let curve_oscar = side(&curve_case().run("oscar"));
    let _ = writeln!(
        text,
        "Spillway's cost/queue curve, scenario 2, both at threshold 5 s, OSCAR's Resource \
         Manager every 1 s\n{}\n",
        curve_table(&curve, &curve_oscar)
    );
    let _ = write!(
        text,
        "Against the exact optimum on small traces (the linear relaxation of the whole trace: \
         `cargo bench -p spillway-sim --features bound --bench bound`)\n{}",
        limits_table(&small_limits(FireCase::thesis(true), &[2, 3, 4]))
    );
    FireSummary {
        text,
        oscar,
        spillway,
        curve,
        curve_oscar,
    }
}
