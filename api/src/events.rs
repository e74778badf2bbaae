//! The coordinator's event feed: what changed in the mesh (`spillway get events`, and the
//! server-sent stream behind `--watch`).

use serde::{Deserialize, Serialize};

/// One change. Ids increase by one; a client resumes a stream from the last id it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    pub id: u64,
    /// When the coordinator recorded it (Unix ms).
    pub at_ms: u64,
    pub kind: FeedKind,
    /// The job's id, or the node's name.
    pub name: String,
    /// What happened, in one word: a job's phase (`Queued`, `Running`, `Succeeded`, …), or a
    /// node's `Joined`, `Connected`, `Disconnected`, `Cordoned`, `Uncordoned`, `Removed`.
    pub reason: String,
    /// The node it concerns (a job's origin), when it is not the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// More, for people (a failed job's reason, where a job ran).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl FeedEvent {
    /// Whether this is job `id`'s end (it succeeded or failed).
    pub fn ends_job(&self, id: &str) -> bool {
        self.kind == FeedKind::Job
            && self.name == id
            && matches!(self.reason.as_str(), "Succeeded" | "Failed")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedKind {
    Job,
    Node,
}

impl FeedKind {
    /// As JSON and the `kind` query parameter have it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Node => "node",
        }
    }
}

/// The SSE event name of a notice that events were missed: the client's last id is older than
/// what the coordinator keeps, so it lists again before following.
pub const MISSED: &str = "missed";
