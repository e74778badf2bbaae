//! Agent releases and their rollouts (`spillway upgrade nodes`, `spillway get upgrades`).

use serde::{Deserialize, Serialize};

/// One agent binary of a release, as the coordinator stored and signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseBinary {
    /// As `std::env::consts::ARCH` names it (`x86_64`, `aarch64`, `arm`).
    pub arch: String,
    /// Hex SHA-256; the bytes are in the coordinator's blob store under it.
    pub sha256: String,
    pub size: u64,
    /// The mesh CA's signature over `UpgradeOrder::signed_message` (hex).
    pub signature: String,
    pub uploaded_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub binaries: Vec<ReleaseBinary>,
}

/// `POST /v1/upgrades`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRequest {
    pub version: String,
    /// Label selector (`zone=kitchen,board!=zero`); none: every node.
    #[serde(default)]
    pub selector: Option<String>,
    /// Nodes upgraded at once; the next batch starts when all of this one are done.
    pub batch: u32,
    /// How long a new binary has to link again before it rolls back by itself.
    pub ready_within_ms: u64,
    /// How long a node has, from its order, to be done before the rollout stops.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    /// Every node runs the release.
    Succeeded,
    /// A node failed: no further node is ordered.
    Stopped {
        reason: String,
    },
    /// `spillway upgrade cancel`: no further node is ordered.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodePhase {
    /// Not ordered yet (a later batch, or the rollout stopped first).
    Waiting,
    /// Sent (or to be sent when it connects); the node fetches and checks the binary.
    Ordered,
    /// The binary is stored; the node restarts on it.
    Restarting,
    /// The node runs the release and linked again.
    Done,
    /// The node refused the order, or did not finish in time.
    Failed,
    /// The new binary did not come up; the node runs its previous one.
    RolledBack,
}

impl NodePhase {
    /// Waiting for the node.
    pub fn in_flight(self) -> bool {
        matches!(self, NodePhase::Ordered | NodePhase::Restarting)
    }

    pub fn failed(self) -> bool {
        matches!(self, NodePhase::Failed | NodePhase::RolledBack)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpgrade {
    pub node: String,
    pub arch: String,
    /// The agent version it ran when the rollout began.
    pub from_version: String,
    pub phase: NodePhase,
    /// When it entered its phase (ms since the epoch).
    pub since_ms: u64,
    /// Why it failed or rolled back, as the node said.
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u64,
    /// What was asked for.
    #[serde(flatten)]
    pub request: RolloutRequest,
    pub created_at_ms: u64,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    #[serde(flatten)]
    pub state: RolloutState,
    pub nodes: Vec<NodeUpgrade>,
}

impl Rollout {
    pub fn count(&self, phase: NodePhase) -> usize {
        self.nodes.iter().filter(|n| n.phase == phase).count()
    }

    pub fn is_running(&self) -> bool {
        self.state == RolloutState::Running
    }
}
