//! What a simulated run produced, as a table, as JSON, and as a plot of queued and running jobs
//! per tier over time (like figures 5.7/5.8 of the OSCAR thesis).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use spillway_placement::{Mechanism, Millis};

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    pub queued: u32,
    pub running: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delegations {
    pub admission: u32,
    pub rescheduler: u32,
    /// "fog → on-prem" and the like, with counts.
    pub routes: BTreeMap<String, u32>,
    /// The same routes, split by mechanism (the thesis counts them apart).
    pub by_mechanism: BTreeMap<String, Route>,
}

/// Hand-overs on one route: at admission (OSCAR's Resource Manager) and by the rescheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Route {
    pub admission: u32,
    pub rescheduler: u32,
}

impl Route {
    pub fn total(&self) -> u32 {
        self.admission + self.rescheduler
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub policy: String,
    pub jobs: usize,
    /// Jobs by the tier that finished them first.
    pub jobs_per_tier: BTreeMap<String, u32>,
    /// Each job (numbered in the order jobs were made: arrivals first) and the node that
    /// finished it first, for comparing decisions one by one.
    #[serde(skip)]
    pub ran_on: BTreeMap<u64, String>,
    pub delegations: Delegations,
    pub queue_mean_s: f64,
    pub queue_p95_s: f64,
    pub completion_mean_s: f64,
    pub completion_p95_s: f64,
    /// Mean completion if every job had run at once on its fastest target (no queueing anywhere).
    pub lower_bound_mean_s: f64,
    /// Runs beyond the first of the same job (started on a second target).
    pub duplicate_runs: u32,
    /// Jobs that finished more than once (each extra finish counted): work done twice.
    pub duplicate_completions: u32,
    /// Runs stopped when their job was deleted (OSCAR's Rescheduler deleting a local copy that
    /// had started meanwhile); each is also a duplicate run.
    pub killed_runs: u32,
    pub lost_jobs: usize,
    pub lambda_gb_s: f64,
    pub lambda_usd: f64,
    pub makespan_s: f64,
    /// When the last job of each function first finished (ms from the start): a workflow's
    /// end, when each stage is its own function.
    pub last_finish_ms: BTreeMap<String, Millis>,
    #[serde(skip)]
    tiers: Vec<String>,
    #[serde(skip)]
    queue: Vec<Millis>,
    #[serde(skip)]
    completion: Vec<Millis>,
    #[serde(skip)]
    lower: Vec<Millis>,
    #[serde(skip)]
    series: Vec<(Millis, BTreeMap<String, Sample>)>,
}

fn mean(v: &[Millis]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<Millis>() as f64 / v.len() as f64 / 1000.0
}

fn p95(v: &mut [Millis]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

impl Report {
    pub fn new(workload: &str, policy: &str, tiers: &[String]) -> Self {
        Self {
            workload: workload.into(),
            policy: policy.into(),
            jobs: 0,
            jobs_per_tier: tiers.iter().map(|t| (t.clone(), 0)).collect(),
            ran_on: BTreeMap::new(),
            delegations: Delegations::default(),
            queue_mean_s: 0.0,
            queue_p95_s: 0.0,
            completion_mean_s: 0.0,
            completion_p95_s: 0.0,
            lower_bound_mean_s: 0.0,
            duplicate_runs: 0,
            killed_runs: 0,
            duplicate_completions: 0,
            lost_jobs: 0,
            lambda_gb_s: 0.0,
            lambda_usd: 0.0,
            makespan_s: 0.0,
            last_finish_ms: BTreeMap::new(),
            tiers: tiers.to_vec(),
            queue: Vec::new(),
            completion: Vec::new(),
            lower: Vec::new(),
            series: Vec::new(),
        }
    }

    pub(crate) fn delegated(&mut self, m: Mechanism, from: &str, to: &str) {
        let route = format!("{from} → {to}");
        let split = self
            .delegations
            .by_mechanism
            .entry(route.clone())
            .or_default();
        match m {
            Mechanism::Admission => {
                self.delegations.admission += 1;
                split.admission += 1;
            }
            Mechanism::Rescheduler => {
                self.delegations.rescheduler += 1;
                split.rescheduler += 1;
            }
        }
        *self.delegations.routes.entry(route).or_default() += 1;
    }

    /// Hand-overs from tier `from` to tier `to`.
    pub fn route(&self, from: &str, to: &str) -> Route {
        self.delegations
            .by_mechanism
            .get(&format!("{from} → {to}"))
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn completed(
        &mut self,
        function: &str,
        at: Millis,
        tier: &str,
        queue: Millis,
        completion: Millis,
        lower: Millis,
    ) {
        *self.jobs_per_tier.entry(tier.to_owned()).or_default() += 1;
        let last = self.last_finish_ms.entry(function.to_owned()).or_default();
        *last = (*last).max(at);
        self.queue.push(queue);
        self.completion.push(completion);
        self.lower.push(lower);
    }

    pub(crate) fn duplicate(&mut self) {
        self.duplicate_runs += 1;
    }

    pub(crate) fn finished_again(&mut self) {
        self.duplicate_completions += 1;
    }

    pub(crate) fn killed(&mut self) {
        self.killed_runs += 1;
    }

    pub(crate) fn bill(&mut self, gb_s: f64, usd_per_gb_s: f64) {
        self.lambda_gb_s += gb_s;
        self.lambda_usd += gb_s * usd_per_gb_s;
    }

    pub(crate) fn sample(&mut self, at: Millis, by_tier: BTreeMap<String, Sample>) {
        self.series.push((at, by_tier));
    }

    pub(crate) fn close(&mut self, jobs: usize, lost: usize, end: Millis) {
        self.jobs = jobs;
        self.lost_jobs = lost;
        self.makespan_s = end as f64 / 1000.0;
        self.queue_mean_s = mean(&self.queue);
        self.queue_p95_s = p95(&mut self.queue.clone());
        self.completion_mean_s = mean(&self.completion);
        self.completion_p95_s = p95(&mut self.completion.clone());
        self.lower_bound_mean_s = mean(&self.lower);
    }

    /// The summary table `spillway sim` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "workload {}, policy {}: {} jobs",
            self.workload, self.policy, self.jobs
        );
        let tiers: Vec<String> = self
            .tiers
            .iter()
            .map(|t| format!("{t} {}", self.jobs_per_tier.get(t).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "  jobs per tier        {}", tiers.join(", "));
        let routes: Vec<String> = self
            .delegations
            .by_mechanism
            .iter()
            .map(|(r, n)| format!("{r} {} = {} + {}", n.total(), n.admission, n.rescheduler))
            .collect();
        let _ = writeln!(
            out,
            "  delegations          {} at admission, {} by the rescheduler{}",
            self.delegations.admission,
            self.delegations.rescheduler,
            if routes.is_empty() {
                String::new()
            } else {
                format!(" ({})", routes.join(", "))
            }
        );
        let _ = writeln!(
            out,
            "  queue time           mean {:.1} s, p95 {:.1} s",
            self.queue_mean_s, self.queue_p95_s
        );
        let _ = writeln!(
            out,
            "  completion time      mean {:.1} s, p95 {:.1} s (no-queueing lower bound: mean {:.1} s)",
            self.completion_mean_s, self.completion_p95_s, self.lower_bound_mean_s
        );
        let _ = writeln!(
            out,
            "  duplicate runs       {} started twice, {} finished twice, {} stopped when the local copy was deleted",
            self.duplicate_runs, self.duplicate_completions, self.killed_runs
        );
        let _ = writeln!(out, "  lost jobs            {}", self.lost_jobs);
        let _ = writeln!(
            out,
            "  Lambda               {:.0} GB-s (${:.4})",
            self.lambda_gb_s, self.lambda_usd
        );
        let _ = write!(out, "  makespan             {:.0} s", self.makespan_s);
        out
    }

    /// Queued and running jobs per tier over time, as an SVG or PNG file.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        let title = format!("{} ({})", self.policy, self.workload);
        plot_series(path, &title, &self.tiers, &self.series)
    }
}

/// Queued and running jobs per tier over time (`series`: when, and per tier), one panel per
/// tier, as an SVG or PNG file by `path`'s extension; the simulator's runs and the live replay
/// draw alike.
pub fn plot_series(
    path: &Path,
    title: &str,
    tiers: &[String],
    series: &[(Millis, BTreeMap<String, Sample>)],
) -> Result<(), String> {
    let size = (1100, 360 * tiers.len().max(1) as u32);
    crate::on_canvas!(path, size, |root| draw_series(root, title, tiers, series))
}

fn draw_series<DB: plotters::prelude::DrawingBackend>(
    root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    tiers: &[String],
    series: &[(Millis, BTreeMap<String, Sample>)],
) -> Result<(), String> {
    use plotters::prelude::*;
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((tiers.len().max(1), 1));
    let end = series
        .last()
        .map_or(1.0, |(t, _)| *t as f64 / 1000.0)
        .max(1.0);
    for (tier, panel) in tiers.iter().zip(panels) {
        let point = |f: fn(&Sample) -> u32| -> Vec<(f64, f64)> {
            series
                .iter()
                .map(|(t, by)| (*t as f64 / 1000.0, by.get(tier).map_or(0, f) as f64))
                .collect()
        };
        let (queued, running) = (point(|s| s.queued), point(|s| s.running));
        let top = queued
            .iter()
            .chain(&running)
            .map(|p| p.1)
            .fold(1.0, f64::max)
            * 1.1;
        let caption = format!("{tier} — {title}");
        let mut chart = chart(&panel, &caption, (end, top), ("seconds", "jobs"))?;
        chart
            .draw_series(LineSeries::new(running, &BLUE))
            .map_err(|e| e.to_string())?
            .label("running")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(queued, &RED))
            .map_err(|e| e.to_string())?
            .label("queued")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        legend(&mut chart)?;
    }
    Ok(())
}

/// A chart with a caption and labelled axes from 0 to `(x, y)` on `area`.
pub(crate) fn chart<'a, DB: plotters::prelude::DrawingBackend + 'a>(
    area: &'a plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    (x, y): (f64, f64),
    (x_desc, y_desc): (&str, &str),
) -> Result<
    plotters::prelude::ChartContext<
        'a,
        DB,
        plotters::prelude::Cartesian2d<
            plotters::coord::types::RangedCoordf64,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
    String,
> {
    use plotters::prelude::*;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x, 0.0..y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

/// The series' labels in a framed box.
pub(crate) fn legend<'a, DB: plotters::prelude::DrawingBackend + 'a>(
    chart: &mut plotters::prelude::ChartContext<
        'a,
        DB,
        plotters::prelude::Cartesian2d<
            plotters::coord::types::RangedCoordf64,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
) -> Result<(), String> {
    use plotters::prelude::*;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())
}
