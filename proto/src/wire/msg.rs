//! Every message of the protocol. Adding a field is a minor version; changing one is a major.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Version;
use crate::job::JobId;

/// The largest frame on an unauthenticated (joining) connection.
pub const MAX_JOIN_FRAME: usize = 64 << 10;
/// The largest frame on a control or request stream (deployments carry wasm modules and
/// scripts; requests carry files).
pub const MAX_STREAM_FRAME: usize = 64 << 20;

/// The one request a connection without a client certificate may make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub version: Version,
    pub token: String,
    pub node: String,
    /// A PKCS#10 certificate signing request for the agent's own key (the key never leaves it).
    pub csr_der: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReply {
    /// `ca_der`: the CAs to trust, concatenated (more than one during a CA rotation, for agents
    /// of 1.6 or later; see `spillway_link::bundle`).
    Granted {
        cert_der: Vec<u8>,
        ca_der: Vec<u8>,
    },
    Refused {
        reason: String,
    },
}

/// Agent → coordinator on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentFrame {
    Hello(Hello),
    /// The outcome of applying a [`Deployment`].
    Deployed(DeployAck),
    Job(JobUpdate),
    /// The origin offers a queued job it cannot run soon enough (its input is already in the
    /// coordinator's blob store).
    Offer(Offer),
    /// A peer ran a job placed on it (its outputs are already in the blob store).
    GuestDone(GuestDone),
    /// The origin journaled a delivery or a return: the coordinator may forget the job.
    HandoverAck(JobId),
    /// Since 1.3, answering [`CoordinatorFrame::RenewCertificate`]: a certificate request (DER)
    /// for a new key, under the node's own name.
    RenewCertificate {
        csr_der: Vec<u8>,
    },
    /// Since 1.4, to a coordinator of 1.4 or later, when linked and at each change: what keeps
    /// the node from taking work besides its load.
    Condition(NodeCondition),
    /// Since 1.5, to a coordinator of 1.5 or later: how an upgrade order went. Sent when it
    /// changes and again at every link until the next order, so none is lost to a restart.
    Upgrade(UpgradeReport),
    /// Since 1.6, to a coordinator of 1.6 or later, answering [`CoordinatorFrame::Trust`]: the
    /// SHA-256 of each CA certificate the agent trusts now, stored. A coordinator retires an
    /// old CA only once every node trusts the new one.
    Trusted {
        cas: Vec<[u8; 32]>,
    },
}

/// What keeps a node from taking work besides its load (see [`AgentFrame::Condition`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCondition {
    /// Under `[disk] min_free`: it takes no new inputs and no placements.
    pub disk_full: bool,
    /// Free bytes on its state folder's or data root's file system, whichever has fewer.
    pub disk_free_bytes: u64,
}

/// Since 1.5: run another agent binary. The agent checks `signature` (made with the mesh CA's
/// key over [`UpgradeOrder::signed_message`]) before it fetches the binary, by its digest, from
/// the coordinator's blob store; then its size, digest and architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOrder {
    pub rollout: u64,
    pub version: String,
    /// The architecture the binary is for, as `std::env::consts::ARCH` names it.
    pub arch: String,
    pub sha256: [u8; 32],
    pub size: u64,
    pub signature: Vec<u8>,
    /// How long the new binary has, from its start, to link again and report Ready before it
    /// rolls back by itself.
    pub ready_within_ms: u64,
}

/// The largest agent binary shipped over the mesh (release builds are 12 to 20 MiB).
pub const MAX_AGENT_BINARY: u64 = 128 << 20;

impl UpgradeOrder {
    /// What the CA signs: every field the agent acts on, each one length-prefixed so that no
    /// two orders sign the same bytes.
    pub fn signed_message(version: &str, arch: &str, sha256: &[u8; 32], size: u64) -> Vec<u8> {
        let mut m = b"spillway agent binary v1\n".to_vec();
        for field in [version.as_bytes(), arch.as_bytes(), &sha256[..]] {
            m.extend_from_slice(&(field.len() as u64).to_be_bytes());
            m.extend_from_slice(field);
        }
        m.extend_from_slice(&size.to_be_bytes());
        m
    }

    /// [`UpgradeOrder::signed_message`] of this order.
    pub fn message(&self) -> Vec<u8> {
        Self::signed_message(&self.version, &self.arch, &self.sha256, self.size)
    }
}

/// The architecture (as `std::env::consts::ARCH` names it) a Linux executable is built for,
/// from its ELF header: 64-bit x86-64 and AArch64, 32-bit ARM, all little-endian.
pub fn binary_arch(bytes: &[u8]) -> Result<&'static str, String> {
    let header = bytes.get(..20).ok_or("too short for an ELF header")?;
    if header[..4] != *b"\x7fELF" {
        return Err("no ELF magic number".into());
    }
    let machine = u16::from_le_bytes([header[18], header[19]]);
    match (header[4], header[5], machine) {
        (2, 1, 62) => Ok("x86_64"),
        (2, 1, 183) => Ok("aarch64"),
        (1, 1, 40) => Ok("arm"),
        (class, data, machine) => Err(format!(
            "ELF class {class}, data encoding {data} and machine {machine} are no architecture Spillway runs on"
        )),
    }
}

/// Agent → coordinator: where an upgrade order stands on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub rollout: u64,
    pub sha256: [u8; 32],
    pub status: UpgradeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpgradeStatus {
    /// The binary was checked and stored; the agent stops its work and restarts on it.
    Restarting,
    /// The new binary runs and is linked: the upgrade is done.
    Ready,
    /// The new binary did not report Ready in time, or stopped: the previous one runs again.
    RolledBack { reason: String },
    /// The order was not carried out (bad signature, wrong architecture, damaged binary, no
    /// room): the agent runs what it ran.
    Refused { reason: String },
}

/// Coordinator → agent on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorFrame {
    Welcome(Welcome),
    Refused {
        reason: String,
    },
    Deploy(Deployment),
    /// To the origin: the coordinator owns the offered job now.
    Accepted(JobId),
    /// To the origin: keep the job and run it yourself.
    Declined {
        id: JobId,
        reason: String,
    },
    /// To a peer: run this job.
    Place(Placement),
    /// To the origin: a peer's result, to deliver into the function's outputs.
    Deliver {
        id: JobId,
        outcome: Outcome,
    },
    /// To the origin: the job is yours again (hop limit reached, no peer left); never offer it
    /// again.
    Return {
        id: JobId,
        reason: String,
    },
    /// To a peer: its result was recorded; it may forget the job.
    GuestAck(JobId),
    /// Since 1.3, to an agent of 1.3 or later whose certificate expires soon: send a request
    /// for a new one.
    RenewCertificate,
    /// Since 1.3: the new certificate (DER) and when it expires. The agent keeps its old one
    /// until it has stored this one with its key, and connects again with it; the coordinator
    /// accepts both until then.
    Renewed {
        cert_der: Vec<u8>,
        expires_at_ms: u64,
    },
    /// Since 1.3: renewal failed; the agent keeps its certificate and is asked again later.
    RenewRefused {
        reason: String,
    },
    /// Since 1.5, to an agent of 1.5 or later: run another binary (see [`UpgradeOrder`]).
    Upgrade(UpgradeOrder),
    /// Since 1.6, to an agent of 1.6 or later, at each link and whenever they change: the CA
    /// certificates (DER) to trust from now on, the one that signs first. The agent stores
    /// them only if they still verify the coordinator it is linked to, and answers with
    /// [`AgentFrame::Trusted`].
    Trust {
        cas: Vec<Vec<u8>>,
    },
}

/// Why a job is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferReason {
    /// On arrival: its predicted local wait was over the function's threshold.
    Admission,
    /// It waited in the queue longer than the function's `rescheduler_threshold`.
    Rescheduler,
}

/// A job on the move: everything a peer needs to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub id: JobId,
    pub function: String,
    pub event: crate::Event,
    /// SHA-256 of the input bytes in the coordinator's blob store.
    pub input: [u8; 32],
    pub input_bytes: u64,
    pub reason: OfferReason,
    pub queued_at_ms: u64,
    /// The origin's predicted wait before the job would start there, and its mean run time of
    /// the function (0: not measured yet): a peer must beat their sum.
    pub local_wait_ms: u64,
    pub run_ms: u64,
}

/// Coordinator → peer: run a job for `origin` under lease `attempt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub id: JobId,
    pub origin: String,
    pub function: String,
    pub event: crate::Event,
    pub input: [u8; 32],
    pub attempt: u32,
    /// Placements so far, this one included, and the nodes the job has been on (the origin
    /// first): the coordinator never places it on one of them again, nor past its hop limit.
    pub hops: u8,
    pub visited: Vec<String>,
}

/// What became of a job run elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Output keys (relative to the function's output folder) and the SHA-256 of their bytes
    /// in the blob store.
    Succeeded {
        outputs: Vec<(String, [u8; 32])>,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDone {
    pub id: JobId,
    pub attempt: u32,
    pub outcome: Outcome,
}

/// Agent → coordinator, one per blob stream (opened by the agent after its control stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobRequest {
    Put(Vec<u8>),
    Get([u8; 32]),
    /// Since 1.5: `len` bytes (at most [`MAX_BLOB_RANGE`]) from `offset`, for blobs too large
    /// for one frame (agent binaries); the whole is checked against `digest` once assembled.
    GetRange {
        digest: [u8; 32],
        offset: u64,
        len: u32,
    },
}

/// The largest range one [`BlobRequest::GetRange`] asks for.
pub const MAX_BLOB_RANGE: u32 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    Stored([u8; 32]),
    Blob(Vec<u8>),
    Error(String),
}

/// The first frame of every authenticated connection. The node name comes from the
/// certificate, never from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: Version,
    pub agent_version: String,
    pub cluster_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    /// Hash of the deployment the agent runs now, so an unchanged one is not resent.
    pub deployment: [u8; 32],
    pub arch: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: Version,
    pub coordinator_version: String,
    /// How often the agent should report its load when nothing changes.
    pub report_interval_ms: u32,
}

/// The whole function set meant for one agent (desired state, so applying it twice is harmless).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub functions: Vec<FunctionBundle>,
}

/// One function as deployed: its FDL definition and the files it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionBundle {
    pub name: String,
    /// The `FunctionDef` as JSON (postcard cannot carry its free-form `extra` fields), with
    /// `script`/`module` relative to the bundle's own folder.
    pub def_json: String,
    pub files: Vec<Artifact>,
}

/// A file shipped with a function (its script, its wasm module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Relative path, as written in the FDL.
    pub path: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployAck {
    pub deployment: [u8; 32],
    pub running: Vec<String>,
    /// Functions the agent could not deploy, with the reason.
    pub refused: Vec<(String, String)>,
}

/// Where a job is, as the mesh sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobPhase {
    Queued,
    Running,
    Delivering,
    Succeeded,
    Failed,
    /// Offered to the coordinator, or handed over and running elsewhere.
    Handed,
}

impl JobPhase {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl std::fmt::Display for JobPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A job changed state on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    pub id: JobId,
    pub function: String,
    pub phase: JobPhase,
    /// Where the input came from: `bucket/key` of a folder, or `mqtt:TOPIC`.
    pub input: Option<String>,
    /// `bucket/key` of every delivered output file, and `mqtt:TOPIC` per published message.
    pub outputs: Vec<String>,
    pub reason: Option<String>,
    pub attempt: u32,
    pub queued_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Set when the reporting node ran the job for another node: that node (the job's origin).
    pub origin: Option<String>,
}

/// Coordinator → agent, one per request stream; the agent answers with one [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The log of a job (a unique id prefix is enough).
    Logs {
        job: String,
    },
    /// Store a file at `bucket/key` under the data root (atomically: it appears whole).
    PutFile {
        path: String,
        bytes: Vec<u8>,
    },
    GetFile {
        path: String,
    },
    ListFiles {
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Logs(String),
    Stored {
        path: String,
        sha256: [u8; 32],
    },
    File(Vec<u8>),
    Listing(Vec<FileEntry>),
    Error(String),
    /// A file stored, and which write of its key it is (1 for the first): the job it makes is
    /// `Event::written(.., occurrence)`'s (protocol 1.2).
    StoredWrite {
        path: String,
        sha256: [u8; 32],
        occurrence: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub modified_ms: u64,
}

impl Deployment {
    /// Identifies a deployment's content, so an agent that already runs it is not sent it again.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(postcard::to_stdvec(self).unwrap_or_default()).into()
    }
}
