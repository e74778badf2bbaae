//! The coordinator's HTTP API as both sides see it: the request and response bodies the server
//! sends and the CLI reads, ([`tokens`]) the records of who holds which token or login,
//! ([`upgrades`]) agent releases and rollouts, ([`ca`]) the mesh CA and its rotation, and
//! ([`selector`]) label selectors.

pub mod ca;
pub mod events;
pub mod selector;
pub mod tokens;
pub mod upgrades;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spillway_proto::load::{LoadReport, NodeHealth};
use spillway_proto::wire::{Capacity, FileEntry, JobUpdate};

/// First line of client configs the coordinator writes; a file without it is the user's own and
/// is never overwritten.
pub const WRITTEN_BY_MARKER: &str =
    "# written by `spillway serve`/`spillway up`; remove this line to keep your own edits";

/// `POST /v1/apply`: one FDL file as written, plus the files it names (base64), keyed by the
/// path written in the FDL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub file: String,
    pub text: String,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// (function, "created" | "configured" | "unchanged")
    pub functions: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// `POST /v1/admin/backup`: the answer is the encrypted backup (an age file).
#[derive(Clone, Serialize, Deserialize)]
pub struct BackupRequest {
    /// What the backup is encrypted under (12 to 1024 characters).
    pub passphrase: String,
}

impl std::fmt::Debug for BackupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupRequest { passphrase: .. }")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub ttl_secs: u64,
    #[serde(default)]
    pub description: String,
    /// How many tokens (one node each); 1 when absent.
    #[serde(default)]
    pub count: Option<u32>,
    /// What the token grants: the node name it is for (the only way to join again under a name
    /// the mesh has), the node's labels and cluster.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// `POST /v1/mqtt/users`: a login on the embedded MQTT broker and what it may reach.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MqttUserRequest {
    pub name: String,
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MqttUserCreated {
    pub name: String,
    /// Shown once: only its hash is kept.
    pub password: String,
}

/// `POST /v1/api-tokens`: a scoped API token (`operator`, `invoker` with `functions`, `webhook`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenRequest {
    pub scope: String,
    #[serde(default)]
    pub functions: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenCreated {
    /// Shown once: only its hash is kept.
    pub token: String,
    pub id: String,
    pub scope: String,
}

/// `POST /v1/tokens/revoke`: revokes the unused tokens whose id starts with `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRevoke {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensRevoked {
    pub revoked: usize,
}

/// `PUT /v1/nodes/{name}/labels`: the operator's labels and cluster for a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelChange {
    /// Labels to set (added or replaced).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Labels to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Take what the agent's own config proposes (labels and cluster) first.
    #[serde(default)]
    pub adopt_proposed: bool,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub clear_cluster_id: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    /// The other tokens when `count` asked for several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<String>,
    pub expires_at_ms: u64,
    /// The QUIC address agents should join (as the coordinator knows it).
    pub coordinator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub health: NodeHealth,
    pub connected: bool,
    pub silent_for_ms: Option<u64>,
    pub address: String,
    pub cluster_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// What the agent's own config proposes (not acted on until the operator adopts it).
    #[serde(default)]
    pub proposed_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub proposed_cluster_id: Option<String>,
    pub arch: String,
    pub agent_version: String,
    pub capacity: Capacity,
    pub load: Option<LoadReport>,
    pub running: Vec<String>,
    pub refused: Vec<(String, String)>,
    pub joined_at_ms: u64,
    pub last_seen_ms: u64,
    /// When its certificate expires (ms since the epoch); agents renew it over the mesh
    /// `[certificates] renew_before` ahead.
    #[serde(default)]
    pub cert_expires_at_ms: u64,
    #[serde(default)]
    pub certificate_renewals: u32,
    /// Under `[disk] min_free` on the node: it takes no new inputs and no placements.
    #[serde(default)]
    pub disk_full: bool,
    /// Cordoned by the operator: no new job is placed on it.
    #[serde(default)]
    pub cordoned: bool,
    /// Free bytes on the node's state or data file system, as it last said (agents of 1.4 on).
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionView {
    pub name: String,
    pub runtime: String,
    pub cluster_id: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    /// The function's own labels (the FDL's `labels`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Nodes whose last deployment ack says they run it.
    pub nodes: Vec<String>,
    pub source: String,
    pub applied_at_ms: u64,
    /// The whole definition, for `describe`.
    pub definition: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// Where the job appeared.
    pub node: String,
    #[serde(flatten)]
    pub job: JobUpdate,
    pub updated_at_ms: u64,
    /// The peer that ran it, when it was handed over.
    #[serde(default)]
    pub ran_on: Option<String>,
}

/// `PUT /v1/nodes/{name}/cordon`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cordon {
    pub cordoned: bool,
}

/// `POST /v1/functions/{name}/invoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invoked {
    pub job: String,
    pub node: String,
    pub input: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub node: String,
    pub path: String,
    pub sha256: String,
    /// Which write of this path the node has seen (1 for the first): every write is a new job
    /// of the functions watching it.
    #[serde(default = "first_write")]
    pub write: u64,
}

fn first_write() -> u64 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub node: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
