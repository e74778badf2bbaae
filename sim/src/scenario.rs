//! What is simulated: the tiers (nodes and clusters), the functions and the arrivals.
//!
//! The thesis (OSCAR, ch. 5) gives the fire-detection set-up: a fog k3s cluster of Raspberry Pi 4
//! workers with 9 one-CPU job slots, an on-premises cluster with 7, optionally AWS Lambda at 1 GB;
//! 3 images every 30 s for 30 min, then 3 every 5 s for 30 min. It gives no run, transfer or
//! start-up times (only figures), so these are chosen, and stated in [`FIRE_ASSUMPTIONS`].

use std::collections::BTreeMap;

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
}

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

/// The values the thesis does not give, and why they were chosen.
pub const FIRE_ASSUMPTIONS: &str = "\
run time per image: Raspberry Pi 4 core 40 s, on-prem vCPU 12 s, Lambda 1 GB 20 s (thesis: fog \
noticeably slowest, on-prem fastest, Lambda in between since 1 GB buys ~0.6 vCPU; chosen so that \
fog + on-prem can just absorb phase 2's 0.6 images/s, as the thesis' saturation suggests); start-up per \
job: OSCAR pod on k3s/Pi 4 s, OSCAR pod on-prem 2 s, Spillway agent container 0.2 s; Lambda cold \
start 5 s (container image), warm for 10 min; image 150 KB over 20 Mbit/s with 20 ms latency to \
on-prem and 50 ms to Lambda; Lambda $0.0000166667 per GB-s; Spillway's fog is the same 9 slots as \
3 agents of 3 slots, with the 3 cameras' images spread over them; Spillway's Lambda budget 5000 GB-s per hour (OSCAR has none and spends what its Rescheduler sends)";

/// Spillway's hourly Lambda budget in the fire case: set a little below what OSCAR's policy spends
/// in the run, so the two are compared at equal or lower cost.
pub const FIRE_LAMBDA_BUDGET_GB_S: f64 = 5_000.0;

const MB: f64 = 1_000_000.0;

fn node(id: &str, tier: &str, slots: Option<u32>, start_ms: Millis, decides: bool) -> NodeSpec {
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
    }
}

fn lambda(run: &[(&str, Millis)]) -> NodeSpec {
    let mut l = node("lambda", "lambda", None, 100, false);
    l.cold_start_ms = 5_000;
    l.keep_warm_ms = 600_000;
    l.latency_ms = 50;
    l.cost = Some(Cost {
        usd_per_gb_s: 0.000_016_666_7,
        memory_gb: 1.0,
    });
    l.run_ms = run.iter().map(|(f, ms)| (f.to_string(), *ms)).collect();
    l
}

fn function(name: &str, input_bytes: u64, prior_ms: Millis, threshold_ms: Millis) -> FunctionSim {
    FunctionSim {
        spec: FunctionSpec {
            name: name.into(),
            max_local_wait_ms: 2_000,
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

    /// The scenario as `policy` deploys it: OSCAR as clusters with replicas, Spillway as agents
    /// that see each other and the same replicas.
    pub fn build(&self, policy: &str) -> Scenario {
        let oscar = policy == "oscar";
        match *self {
            Workload::Fire {
                lambda: with_lambda,
            } => fire(oscar, with_lambda),
            Workload::Burst { files } => burst(oscar, files),
            Workload::Video { frames } => video(oscar, frames),
        }
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

fn fire(oscar: bool, with_lambda: bool) -> Scenario {
    let edge: &[(&str, u32)] = if oscar {
        &[("fog", 9)]
    } else {
        &[("pi-1", 3), ("pi-2", 3), ("pi-3", 3)]
    };
    let fire_fn = [("fire-detection", 40_000)];
    let nodes = three_tiers(
        oscar,
        edge,
        &fire_fn,
        7,
        &[("fire-detection", 12_000)],
        with_lambda.then_some(&[("fire-detection", 20_000)][..]),
    );
    let mut arrivals = Vec::new();
    // Three cameras: 3 images every 30 s for 30 min, then every 5 s for 30 min.
    let mut t = 0;
    while t < 3_600_000 {
        for camera in 0..3 {
            let node = edge[camera % edge.len()].0.to_string();
            arrivals.push(Arrival {
                at: t,
                node,
                function: "fire-detection".into(),
            });
        }
        t += if t < 1_800_000 { 30_000 } else { 5_000 };
    }
    let mut functions = BTreeMap::new();
    let mut fire = function("fire-detection", 150_000, 40_000, 30_000);
    fire.spec.elastic_budget_gb_s_per_hour = Some(FIRE_LAMBDA_BUDGET_GB_S);
    functions.insert("fire-detection".into(), fire);
    Scenario {
        name: Workload::Fire {
            lambda: with_lambda,
        }
        .name(),
        nodes,
        functions,
        arrivals,
        tiers: ["fog", "on-prem", "lambda"].map(String::from).to_vec(),
    }
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
