//! What crosses to an executor outside the mesh (an HTTP endpoint, another cluster, a runner in
//! a Kubernetes Job or a Lambda function): the job, its original event, where to fetch its input
//! and where to report its result, as JSON. URLs are presigned and expire; the executor needs no
//! other credential.

use serde::{Deserialize, Serialize};

use crate::{Event, JobId};

/// The envelope's format version; a reader refuses others.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub spillway: u32,
    pub job: JobId,
    pub function: String,
    /// The node where the job appeared.
    pub origin: String,
    /// Placements so far; a receiver that is itself a mesh stops at the coordinator's limit.
    pub hops: u8,
    /// The lease number: a result reported for an older attempt is ignored.
    pub attempt: u32,
    pub event: Event,
    pub input: InputRef,
    /// `POST` a [`ResultReport`] here when the job starts and when it ends.
    pub callback: String,
    /// When the URLs stop working, seconds since the Unix epoch.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// `FILE_NAME` for the function.
    pub name: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes at `url`.
    pub sha256: String,
    /// `GET` gives the input's bytes.
    pub url: String,
}

/// What an executor reports through the envelope's `callback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultReport {
    pub status: ReportedStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    Running,
    Succeeded,
    Failed,
}

impl JobId {
    /// The job's name on systems that name their work (an OSCAR job, a Kubernetes Job): a
    /// lowercase DNS label, the same for every attempt, so a second submission is recognised.
    pub fn executor_name(&self) -> String {
        format!("spillway-{self}")
    }
}
