//! The parts a placement decision is about.

use serde::{Deserialize, Serialize};

/// Milliseconds on whatever clock the caller uses (simulated or real).
pub type Millis = u64;

/// What kind of executor a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TargetKind {
    /// The node where the job appeared.
    Origin,
    /// Another agent of the mesh.
    Peer,
    /// A replica from the FDL: an OSCAR cluster, a Kubernetes cluster, an HTTP endpoint.
    Cluster,
    /// An elastic replica billed per use (AWS Lambda).
    Elastic,
}

/// Where a job could run, as the deciding party sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
    pub kind: TargetKind,
    /// Preference tier, 0 first. Peers share the origin's tier; FDL replicas come after, in
    /// their `priority` order.
    pub tier: u32,
    /// Jobs it runs at once; `None` for elastic targets.
    pub slots: Option<u32>,
    pub free_slots: u32,
    pub queued: u32,
    /// One-way latency and bandwidth from the origin, for moving the input.
    pub latency_ms: Millis,
    pub bytes_per_ms: f64,
    /// Expected time before a job starts running once it arrives (container start, Lambda
    /// cold start); 0 for a warm agent.
    pub start_ms: Millis,
    /// Price per GB-second and the memory billed, for elastic targets.
    pub cost: Option<Cost>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub usd_per_gb_s: f64,
    pub memory_gb: f64,
}

impl Target {
    pub fn is_elastic(&self) -> bool {
        self.slots.is_none()
    }
}

/// A job waiting for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub function: String,
    pub input_bytes: u64,
    /// The target id of the node where it appeared.
    pub origin: String,
    /// Hand-overs so far, and the targets it has been on: never sent back to one of them.
    pub hops: u8,
    pub visited: Vec<String>,
    pub queued_at: Millis,
}

/// Why a job left its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    /// Decided when it arrived.
    Admission,
    /// Moved after waiting too long in a queue.
    Rescheduler,
}

/// What to do with a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Decision {
    /// Run (or queue) it where it is.
    Stay,
    /// Hand it over to the target with this id.
    Delegate {
        target: String,
        mechanism: Mechanism,
    },
}
