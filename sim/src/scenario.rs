//! What is simulated: the tiers (nodes and clusters), the functions and the arrivals.
//!
//! The thesis (OSCAR, ch. 5) gives the fire-detection set-up: a fog k3s cluster of Raspberry Pi 4
//! workers with 9 one-CPU job slots, an on-premises cluster with 7, optionally AWS Lambda at 1 GB;
//! 3 images every 30 s for 30 min, then 3 every 5 s for 30 min (1005 and 1028 arrived, not 1080).
//! It gives no run, transfer or start-up times (only figures): the run times and the Resource
//! Manager's interval are fitted to its counts ([`crate::calibrate`]), the rest are the priors in
//! [`FIRE_PRIORS`].

use std::collections::BTreeMap;

use serde::Serialize;

use spillway_placement::model::Cost;
use spillway_placement::policy::FunctionSpec;
use spillway_placement::{Millis, TargetKind};

/// One executor: an agent, a cluster, or an elastic service.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    /// The tier it is reported under ("fog", "on-prem", "lambda").
    pub tier: String,
    /// Jobs at once; `None` for elastic services.
    pub slots: Option<u32>,
    /// Time from a job being started to its function running (pod scheduling, container start).
    pub start_ms: Millis,
    /// Elastic only: a start without a warm instance costs this more; instances stay warm for
    /// `keep_warm_ms` after a run.
    pub cold_start_ms: Millis,
    pub keep_warm_ms: Millis,
    pub run_ms: BTreeMap<String, Millis>,
    /// Reaching it from elsewhere: one-way latency and bandwidth.
    pub latency_ms: Millis,
    pub bytes_per_ms: f64,
    pub cost: Option<Cost>,
    /// Whether jobs held here are placed by the policy (agents and OSCAR clusters), or simply run
    /// (a replica Spillway delegates to).
    pub decides: bool,
    /// Where it may hand jobs: (target id, kind as seen from here, preference tier).
    pub sees: Vec<(String, TargetKind, u32)>,
    /// Each run lasts `run_ms` ± this percent (inputs differ), deterministically per job.
    pub spread_pct: u32,
    /// How a delegation call to it answers the caller.
    pub answer: Answer,
    /// Pending jobs are bound by kube-scheduler with back-off up to this long (0: first come,
    /// first served, as an agent's queue).
    pub backoff_max_ms: Millis,
    /// Jobs reaching it are taken in one at a time, each this long (0: at once): the front end
    /// that turns each event into a Kubernetes Job, or a client invoking Lambda file by file.
    pub admit_ms: Millis,
    /// Worker nodes powered on and off with the load (CLUES); `slots` is then the most it can
    /// have, and what it has is the nodes that are up.
    pub clues: Option<Clues>,
}

/// An elastic cluster as OSCAR deploys it with CLUES: worker VMs powered on when jobs pend and
/// off once idle (OSCAR paper, seed 001: up to 10 nodes of 3 job slots, one always on, 3 min
/// to boot, off after 5 idle minutes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Clues {
    pub slots_per_node: u32,
    pub min_nodes: u32,
    pub max_nodes: u32,
    pub boot_ms: Millis,
    pub idle_off_ms: Millis,
    /// How often CLUES looks at pending jobs and idle nodes.
    pub period_ms: Millis,
    /// Nodes powered on together become ready this far apart (the paper's power-on area spans
    /// 8 minutes for a 3-minute boot: the VMs are deployed one after another).
    pub stagger_ms: Millis,
}

/// How a target answers a delegation call (the caller's rescheduler waits for the answer
/// before it deletes its own copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted after this long (an OSCAR cluster's `POST /job`).
    Accepted { after_ms: Millis },
    /// Only when the run is done (a synchronous HTTP endpoint, such as a Lambda function behind
    /// API Gateway); a call longer than `timeout_ms` fails and the caller keeps its copy.
    WhenDone { timeout_ms: Millis },
}

/// OSCAR's delegation is an HTTP call per job: half a second until a cluster accepts it.
pub const CLUSTER_ACCEPTS_MS: Millis = 500;
/// OSCAR's HTTP client gives a replica this long to answer (its delegation code).
pub const DELEGATION_TIMEOUT_MS: Millis = 20_000;

/// A function and what its completion triggers.
#[derive(Debug, Clone)]
pub struct FunctionSim {
    pub spec: FunctionSpec,
    pub input_bytes: u64,
    /// What the placement core assumes before it has measured anything.
    pub prior_ms: Millis,
    /// Each completed job triggers this many jobs of that function on its origin node (its
    /// outputs land in the origin's folder, which is the next function's input).
    pub then: Option<(String, u32)>,
}

#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Millis,
    pub node: String,
    pub function: String,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    pub functions: BTreeMap<String, FunctionSim>,
    pub arrivals: Vec<Arrival>,
    /// Tiers in display order.
    pub tiers: Vec<String>,
}

/// The workloads `spillway sim` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The thesis' fire detection; `lambda`: its scenario 2 (Lambda behind the on-prem cluster).
    Fire { lambda: bool },
    /// `files` files at once on one node of five.
    Burst { files: u32 },
    /// One video split into `frames` frames, each analysed by a second function.
    Video { frames: u32 },
}

/// The phase-2 images the thesis counted (ch. 5): the upload script lost time to uploads, so
/// fewer than the nominal 1080 arrived; scenario 1 (no Lambda) and scenario 2 (Lambda).
pub const PHASE2_IMAGES: [u32; 2] = [1005, 1028];

/// The thesis' unknowns in the fire case, fitted so that OSCAR's policy reproduces its counts
/// ([`crate::calibrate`] finds them; `spillway sim fire --fit` searches again).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FireFit {
    /// One image on one Raspberry Pi 4 job slot (1 CPU, 1 GiB).
    pub fog_run_ms: Millis,
    /// One image on one on-premises job slot (1 vCPU, 1 GiB).
    pub onprem_run_ms: Millis,
    /// One image on Lambda at 1 GB (about 0.6 vCPU), warm.
    pub lambda_run_ms: Millis,
    /// Each run lasts its tier's time ± this percent: images differ.
    pub spread_pct: u32,
    /// How often OSCAR's Resource Manager refreshes its snapshot of free resources (the thesis
    /// does not say; OSCAR's default is 15 s).
    pub resource_manager_interval_ms: Millis,
    /// Start-up of a job on the on-premises cluster (pod scheduling, container start).
    pub onprem_start_ms: Millis,
    /// kube-scheduler's longest back-off for a pod it could not bind (10 s by default; 0: the
    /// clusters bind pending jobs first come, first served).
    pub backoff_max_ms: Millis,
}

/// What the fit does not vary, and why.
pub const FIRE_PRIORS: &str = "\
start-up per job: OSCAR pod on k3s/Raspberry Pi 4 s, Spillway agent container 0.2 s; \
kube-scheduler back-off 1 s doubling to 10 s (its defaults); Lambda cold start 5 s (container image), warm for 10 min; image 150 KB over \
20 Mbit/s with 20 ms latency to on-prem and 50 ms to Lambda; OSCAR's Rescheduler every 15 s \
(its default, as the thesis says); a delegation call to a cluster answers in 0.5 s, one to \
Lambda through API Gateway when the run is done (20 s client timeout); a deleted Kubernetes \
Job stops its pod; Lambda $0.0000166667 per GB-s; Spillway's fog is the same 9 slots as 3 \
agents of 3 slots, the 3 cameras' images spread over them";

/// Start-up of an OSCAR job on the Raspberry Pi cluster (pod scheduling, container start).
pub const FOG_POD_START_MS: Millis = 4_000;
/// A Spillway agent starting a prepared container.
pub const AGENT_START_MS: Millis = 200;
/// OSCAR's Rescheduler interval (the thesis: the default, 15 s).
pub const RESCHEDULER_INTERVAL_MS: Millis = 15_000;

/// One run of the fire case: which scenario, the fit, and the knobs both policies are given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FireCase {
    /// Scenario 2 (Lambda behind the on-prem cluster) or 1.
    pub lambda: bool,
    pub fit: FireFit,
    /// The function's `rescheduler_threshold`, the same for both: OSCAR's Rescheduler moves
    /// jobs pending longer; a Spillway agent keeps a job whose predicted wait is within it
    /// (the live agent and coordinator read the same field).
    pub threshold_ms: Millis,
    /// Spillway's hourly Lambda budget in GB-s (`None`: unbounded).
    pub spillway_budget_gb_s: Option<f64>,
    /// OSCAR's Resource Manager interval when it is offered Spillway's reporting interval in its
    /// own terms; `None`: the fitted one.
    pub oscar_resource_manager_ms: Option<Millis>,
    /// Which images arrive.
    pub trace: Trace,
}

/// Which images arrive in a fire case: the thesis' trace, or loads beyond the seeds on the
/// same calibrated tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Trace {
    /// The thesis' two phases (ch. 5): 180 images in 30 min, then 1005 or 1028 in 30 min.
    Thesis,
    /// The thesis' phase-1 rate (3 images every 30 s) for `hours`, and every `every_min`
    /// minutes `burst` images at once on one camera (the cameras in turn): a fire seen by one.
    Bursts {
        hours: u32,
        every_min: u32,
        burst: u32,
    },
    /// A day that follows the sun: the rate rises from none at midnight to `peak_per_min`
    /// images a minute at noon and falls again (a raised cosine), spread over the cameras in
    /// turn, deterministically.
    Diurnal { hours: u32, peak_per_min: u32 },
}

impl Trace {
    /// How many hours of arrivals it spans.
    pub fn hours(&self) -> u32 {
        match *self {
            Trace::Thesis => 1,
            Trace::Bursts { hours, .. } | Trace::Diurnal { hours, .. } => hours,
        }
    }

    pub fn name(&self, lambda: bool) -> String {
        let tiers = if lambda { "" } else { ", no Lambda" };
        match *self {
            Trace::Thesis => Workload::Fire { lambda }.name(),
            Trace::Bursts {
                hours,
                every_min,
                burst,
            } => format!("fire, {burst}-image bursts every {every_min} min for {hours} h{tiers}"),
            Trace::Diurnal {
                hours,
                peak_per_min,
            } => format!("fire, a diurnal {hours} h peaking at {peak_per_min} images/min{tiers}"),
        }
    }

    /// The arrivals on `edge` (camera `i` uploads to `edge[i % len]`).
    pub fn arrivals(&self, edge: &[(&str, u32)], phase2: u32) -> Vec<Arrival> {
        let on = |at: Millis, camera: u64| Arrival {
            at,
            node: edge[(camera % edge.len() as u64) as usize].0.to_string(),
            function: "fire-detection".into(),
        };
        match *self {
            Trace::Thesis => fire_arrivals(edge, phase2),
            Trace::Bursts {
                hours,
                every_min,
                burst,
            } => {
                let end = u64::from(hours) * 3_600_000;
                let mut out: Vec<Arrival> = (0..end / 30_000)
                    .flat_map(|round| (0..3).map(move |camera| (round * 30_000, camera)))
                    .map(|(at, camera)| on(at, camera))
                    .collect();
                let every = u64::from(every_min.max(1)) * 60_000;
                for (i, at) in (1..)
                    .map(|k| k * every)
                    .take_while(|at| *at < end)
                    .enumerate()
                {
                    out.extend((0..burst).map(|_| on(at, i as u64)));
                }
                out.sort_by_key(|a| a.at);
                out
            }
            Trace::Diurnal {
                hours,
                peak_per_min,
            } => {
                // One image each time the rate's integral passes a whole number, checked every
                // second: no randomness, the same day in every replay.
                let day = 24.0 * 3_600.0;
                let mut owed = 0.0;
                let mut out = Vec::new();
                for second in 0..u64::from(hours) * 3_600 {
                    let phase = 2.0 * std::f64::consts::PI * second as f64 / day;
                    owed += f64::from(peak_per_min) / 60.0 * (1.0 - phase.cos()) / 2.0;
                    while owed >= 1.0 {
                        owed -= 1.0;
                        out.push(on(second * 1_000, out.len() as u64));
                    }
                }
                out
            }
        }
    }
}

impl FireCase {
    /// The thesis' set-up with the calibrated fit and its threshold.
    pub fn thesis(lambda: bool) -> Self {
        Self {
            lambda,
            fit: crate::calibrate::CALIBRATED,
            threshold_ms: crate::calibrate::THESIS_THRESHOLD_MS,
            spillway_budget_gb_s: Some(FIRE_LAMBDA_BUDGET_GB_S),
            oscar_resource_manager_ms: None,
            trace: Trace::Thesis,
        }
    }

    pub fn phase2_images(&self) -> u32 {
        PHASE2_IMAGES[usize::from(self.lambda)]
    }

    /// The policy object `policy` ("oscar" or "spillway") runs with in this case.
    pub fn policy(&self, policy: &str) -> Box<dyn spillway_placement::Policy> {
        if policy == "oscar" {
            Box::new(spillway_placement::policy::OscarPolicy {
                resource_manager_interval_ms: self
                    .oscar_resource_manager_ms
                    .unwrap_or(self.fit.resource_manager_interval_ms),
                rescheduler_interval_ms: RESCHEDULER_INTERVAL_MS,
            })
        } else {
            Box::new(spillway_placement::policy::SpillwayPolicy::default())
        }
    }

    /// Runs this case under `policy`.
    pub fn run(&self, policy: &str) -> crate::Report {
        crate::run(&self.scenario(policy), self.policy(policy).as_mut())
    }

    /// The scenario `policy` runs in this case.
    pub fn scenario(&self, policy: &str) -> Scenario {
        fire(policy == "oscar", self)
    }
}

/// Spillway's hourly Lambda budget in [`FireCase::thesis`]. The fair comparison
/// (`compare::at_oscars_spend`) replaces it with what OSCAR billed in the same run, so the two
/// are compared at equal or lower cost; this one only bounds the other replays.
pub const FIRE_LAMBDA_BUDGET_GB_S: f64 = 5_000.0;

const MB: f64 = 1_000_000.0;

pub(crate) fn node(
    id: &str,
    tier: &str,
    slots: Option<u32>,
    start_ms: Millis,
    decides: bool,
) -> NodeSpec {
    NodeSpec {
        id: id.into(),
        tier: tier.into(),
        slots,
        start_ms,
        cold_start_ms: 0,
        keep_warm_ms: 0,
        run_ms: BTreeMap::new(),
        latency_ms: 20,
        bytes_per_ms: 20.0 * MB / 8.0 / 1000.0,
        cost: None,
        decides,
        sees: Vec::new(),
        spread_pct: 0,
        answer: Answer::Accepted {
            after_ms: CLUSTER_ACCEPTS_MS,
        },
        backoff_max_ms: 0,
        admit_ms: 0,
        clues: None,
    }
}

pub(crate) fn lambda(run: &[(&str, Millis)]) -> NodeSpec {
    let mut l = node("lambda", "lambda", None, 100, false);
    l.cold_start_ms = 5_000;
    l.keep_warm_ms = 600_000;
    l.latency_ms = 50;
    l.cost = Some(Cost {
        usd_per_gb_s: 0.000_016_666_7,
        memory_gb: 1.0,
    });
    // The thesis reaches Lambda as an `endpoint` replica through API Gateway, which answers
    // when the function returns.
    l.answer = Answer::WhenDone {
        timeout_ms: DELEGATION_TIMEOUT_MS,
    };
    l.run_ms = run.iter().map(|(f, ms)| (f.to_string(), *ms)).collect();
    l
}

pub(crate) fn function(
    name: &str,
    input_bytes: u64,
    prior_ms: Millis,
    threshold_ms: Millis,
) -> FunctionSim {
    FunctionSim {
        spec: FunctionSpec {
            name: name.into(),
            // The live agent and coordinator read both from the one FDL field.
            max_local_wait_ms: threshold_ms,
            rescheduler_threshold_ms: threshold_ms,
            cost_bound_usd: None,
            elastic_budget_gb_s_per_hour: None,
            max_hops: 3,
        },
        input_bytes,
        prior_ms,
        then: None,
    }
}

impl Workload {
    pub fn name(&self) -> String {
        match self {
            Workload::Fire { lambda: true } => "fire".into(),
            Workload::Fire { lambda: false } => "fire (no Lambda)".into(),
            Workload::Burst { files } => format!("burst ({files} files on 1 of 5 nodes)"),
            Workload::Video { frames } => format!("video (1 video → {frames} frames)"),
        }
    }

    /// The policy object `policy` ("oscar" or "spillway") runs with on this workload.
    pub fn policy(&self, policy: &str) -> Box<dyn spillway_placement::Policy> {
        match *self {
            Workload::Fire { lambda } => FireCase::thesis(lambda).policy(policy),
            _ => default_policy(policy == "oscar"),
        }
    }

    /// Runs this workload under `policy`.
    pub fn run(&self, policy: &str) -> crate::Report {
        crate::run(&self.build(policy), self.policy(policy).as_mut())
    }

    /// The scenario as `policy` deploys it: OSCAR as clusters with replicas, Spillway as agents
    /// that see each other and the same replicas.
    pub fn build(&self, policy: &str) -> Scenario {
        let oscar = policy == "oscar";
        match *self {
            Workload::Fire { lambda } => fire(oscar, &FireCase::thesis(lambda)),
            Workload::Burst { files } => burst(oscar, files),
            Workload::Video { frames } => video(oscar, frames),
        }
    }
}

/// OSCAR's policy (`oscar`) or Spillway's, each with its defaults: workloads without a fit of
/// their own.
pub(crate) fn default_policy(oscar: bool) -> Box<dyn spillway_placement::Policy> {
    if oscar {
        Box::new(spillway_placement::policy::OscarPolicy::default())
    } else {
        Box::new(spillway_placement::policy::SpillwayPolicy::default())
    }
}

/// Edge nodes (agents or one OSCAR cluster), an on-prem cluster and optionally Lambda.
fn three_tiers(
    oscar: bool,
    edge: &[(&str, u32)],
    edge_run: &[(&str, Millis)],
    onprem_slots: u32,
    onprem_run: &[(&str, Millis)],
    with_lambda: Option<&[(&str, Millis)]>,
) -> Vec<NodeSpec> {
    let runs = |r: &[(&str, Millis)]| r.iter().map(|(f, ms)| (f.to_string(), *ms)).collect();
    let mut nodes = Vec::new();
    let mut onprem = node(
        "on-prem",
        "on-prem",
        Some(onprem_slots),
        // An OSCAR cluster either way (Spillway delegates to it as an `oscar` replica): a pod
        // per job.
        2_000,
        oscar,
    );
    onprem.run_ms = runs(onprem_run);
    if oscar && with_lambda.is_some() {
        onprem.sees.push(("lambda".into(), TargetKind::Elastic, 0));
    }
    for (id, slots) in edge {
        let mut n = node(
            id,
            "fog",
            Some(*slots),
            if oscar { 4_000 } else { 200 },
            true,
        );
        n.run_ms = runs(edge_run);
        if oscar {
            n.sees.push(("on-prem".into(), TargetKind::Cluster, 0));
        } else {
            for (peer, _) in edge.iter().filter(|(p, _)| p != id) {
                n.sees.push((peer.to_string(), TargetKind::Peer, 0));
            }
            n.sees.push(("on-prem".into(), TargetKind::Cluster, 1));
            if with_lambda.is_some() {
                n.sees.push(("lambda".into(), TargetKind::Elastic, 2));
            }
        }
        nodes.push(n);
    }
    nodes.push(onprem);
    if let Some(run) = with_lambda {
        nodes.push(lambda(run));
    }
    nodes
}

fn fire(oscar: bool, case: &FireCase) -> Scenario {
    let edge: &[(&str, u32)] = if oscar {
        &[("fog", 9)]
    } else {
        &[("pi-1", 3), ("pi-2", 3), ("pi-3", 3)]
    };
    let arrivals = case.trace.arrivals(edge, case.phase2_images());
    let mut sc = fire_shaped(oscar, case, edge, 7, arrivals);
    sc.name = case.trace.name(case.lambda);
    sc
}

/// A small trace of the fire case, for comparing with an exact optimum: one fog node of 3
/// slots (an OSCAR cluster, or one agent), an on-prem cluster of 2 and Lambda, and `rounds`
/// rounds of 3 images `gap_ms` apart.
pub fn small_fire(oscar: bool, case: &FireCase, rounds: u32, gap_ms: Millis) -> Scenario {
    let edge: &[(&str, u32)] = if oscar { &[("fog", 3)] } else { &[("pi-1", 3)] };
    let arrivals = (0..rounds * 3)
        .map(|i| Arrival {
            at: u64::from(i / 3) * gap_ms,
            node: edge[0].0.to_owned(),
            function: "fire-detection".into(),
        })
        .collect();
    fire_shaped(oscar, case, edge, 2, arrivals)
}

/// The fire case as the live replay runs it (`cargo bench -p spillway-tests --bench fire_live`):
/// agents only, under Spillway's policy. Three fog agents of 3 slots and an on-prem pool as one
/// agent of 7 slots (a peer: its runs include the fitted pod start), each agent starting a job
/// in `agent_start_ms`; phase 2 of `case` alone (phase 1 never spills); the function's
/// run-time prior `prior_ms`, as the live placement core starts from. In scenario 2 every agent
/// also sees Lambda as the live coordinator's `lambda` replica does: the Lambda Runtime API
/// emulator's instances are started ahead, so warm (no cold start), and a run there starts in
/// `agent_start_ms` too (the runner fetching the input and spawning the script).
pub fn fire_on_agents(case: &FireCase, agent_start_ms: Millis, prior_ms: Millis) -> Scenario {
    let edge: &[(&str, u32)] = &[("pi-1", 3), ("pi-2", 3), ("pi-3", 3)];
    let mut sc = fire_shaped(false, case, edge, 7, Vec::new());
    let onprem_run = case.fit.onprem_start_ms + case.fit.onprem_run_ms;
    for n in &mut sc.nodes {
        n.start_ms = agent_start_ms;
        if n.tier == "lambda" {
            n.cold_start_ms = 0;
        }
        if n.tier == "on-prem" {
            n.run_ms.insert("fire-detection".into(), onprem_run);
            n.backoff_max_ms = 0;
            n.decides = true;
            n.sees = edge
                .iter()
                .map(|(id, _)| ((*id).to_owned(), TargetKind::Peer, 0))
                .collect();
            if case.lambda {
                n.sees.push(("lambda".into(), TargetKind::Elastic, 2));
            }
        }
        for seen in &mut n.sees {
            if seen.0 == "on-prem" {
                *seen = ("on-prem".into(), TargetKind::Peer, 0);
            }
        }
    }
    sc.arrivals = fire_arrivals(edge, case.phase2_images())
        .into_iter()
        .filter(|a| a.at >= 1_800_000)
        .map(|a| Arrival {
            at: a.at - 1_800_000,
            ..a
        })
        .collect();
    if let Some(f) = sc.functions.get_mut("fire-detection") {
        f.prior_ms = prior_ms;
    }
    if !case.lambda {
        sc.tiers.retain(|t| t != "lambda");
    }
    sc
}

fn fire_shaped(
    oscar: bool,
    case: &FireCase,
    edge: &[(&str, u32)],
    onprem_slots: u32,
    arrivals: Vec<Arrival>,
) -> Scenario {
    let fit = case.fit;
    let fire_fn = [("fire-detection", fit.fog_run_ms)];
    let mut nodes = three_tiers(
        oscar,
        edge,
        &fire_fn,
        onprem_slots,
        &[("fire-detection", fit.onprem_run_ms)],
        case.lambda
            .then_some(&[("fire-detection", fit.lambda_run_ms)][..]),
    );
    for n in &mut nodes {
        n.spread_pct = fit.spread_pct;
        if n.slots.is_some() && (oscar || n.tier == "on-prem") {
            n.backoff_max_ms = fit.backoff_max_ms;
        }
        match n.tier.as_str() {
            "fog" if oscar => n.start_ms = FOG_POD_START_MS,
            "fog" => n.start_ms = AGENT_START_MS,
            "on-prem" => n.start_ms = fit.onprem_start_ms,
            _ => {}
        }
    }
    let mut functions = BTreeMap::new();
    let mut fire = function("fire-detection", 150_000, fit.fog_run_ms, case.threshold_ms);
    fire.spec.elastic_budget_gb_s_per_hour = case.spillway_budget_gb_s;
    functions.insert("fire-detection".into(), fire);
    Scenario {
        name: Workload::Fire {
            lambda: case.lambda,
        }
        .name(),
        nodes,
        functions,
        arrivals,
        tiers: ["fog", "on-prem", "lambda"].map(String::from).to_vec(),
    }
}

/// Three cameras: 3 images every 30 s for 30 min (180), then `phase2` images in rounds of 3
/// spread evenly over the next 30 min (the last round short if `phase2` is not a multiple of 3).
pub fn fire_arrivals(edge: &[(&str, u32)], phase2: u32) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    let mut push = |at: Millis, camera: usize| {
        arrivals.push(Arrival {
            at,
            node: edge[camera % edge.len()].0.to_string(),
            function: "fire-detection".into(),
        });
    };
    for round in 0..60u64 {
        for camera in 0..3 {
            push(round * 30_000, camera);
        }
    }
    let rounds = u64::from(phase2.div_ceil(3));
    for i in 0..u64::from(phase2) {
        let round = i / 3;
        push(
            1_800_000 + round * 1_800_000 / rounds.max(1),
            (i % 3) as usize,
        );
    }
    arrivals
}

fn burst(oscar: bool, files: u32) -> Scenario {
    // Five nodes of 2 slots; 1000 files land on the first. OSCAR: five clusters, the first
    // with the other four as replicas in order; Spillway: five agents that see each other.
    let ids = ["node-1", "node-2", "node-3", "node-4", "node-5"];
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut n = node(
            id,
            if i == 0 { "origin" } else { "peers" },
            Some(2),
            if oscar { 2_000 } else { 100 },
            true,
        );
        n.run_ms.insert("thumbnail".into(), 2_000);
        n.latency_ms = 2;
        n.bytes_per_ms = 100.0 * MB / 8.0 / 1000.0;
        for (j, other) in ids.iter().enumerate().filter(|(j, _)| *j != i) {
            let tier = if oscar { j as u32 } else { 0 };
            let kind = if oscar {
                TargetKind::Cluster
            } else {
                TargetKind::Peer
            };
            if oscar && i != 0 {
                continue;
            }
            n.sees.push((other.to_string(), kind, tier));
        }
        nodes.push(n);
    }
    let arrivals = (0..files)
        .map(|_| Arrival {
            at: 0,
            node: "node-1".into(),
            function: "thumbnail".into(),
        })
        .collect();
    let mut functions = BTreeMap::new();
    functions.insert(
        "thumbnail".into(),
        function("thumbnail", 2_000_000, 2_000, 30_000),
    );
    Scenario {
        name: Workload::Burst { files }.name(),
        nodes,
        functions,
        arrivals,
        tiers: ["origin", "peers"].map(String::from).to_vec(),
    }
}

fn video(oscar: bool, frames: u32) -> Scenario {
    // 001's workflow: ffmpeg extracts key frames, then YOLOv3 analyses each one. A 4-core edge
    // box (or 3 agents) first, an on-prem cluster of 12 slots, Lambda at 1 GB.
    let edge: &[(&str, u32)] = if oscar {
        &[("edge", 12)]
    } else {
        &[("edge-1", 4), ("edge-2", 4), ("edge-3", 4)]
    };
    let runs = [("split", 60_000), ("detect", 20_000)];
    let nodes = three_tiers(
        oscar,
        edge,
        &runs,
        12,
        &[("split", 20_000), ("detect", 6_000)],
        Some(&[("split", 30_000), ("detect", 10_000)][..]),
    );
    let mut functions = BTreeMap::new();
    let mut split = function("split", 50_000_000, 60_000, 30_000);
    split.then = Some(("detect".into(), frames));
    functions.insert("split".into(), split);
    functions.insert("detect".into(), function("detect", 300_000, 20_000, 30_000));
    Scenario {
        name: Workload::Video { frames }.name(),
        nodes,
        functions,
        arrivals: vec![Arrival {
            at: 0,
            node: edge[0].0.into(),
            function: "split".into(),
        }],
        tiers: ["fog", "on-prem", "lambda"].map(String::from).to_vec(),
    }
}
