//! The bytes of a hand-over: inputs and outputs move through the coordinator's blob store on
//! their own QUIC streams, checked against their SHA-256 on arrival. The decisions are the
//! job book's (`crate::book`); this file only carries files and builds frames.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use spillway_link::stream::request;
use spillway_proto::JobId;
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::{
    AgentFrame, BlobRequest, BlobResponse, GuestDone, MAX_STREAM_FRAME, Offer, OfferReason,
    Outcome, Placement,
};

use crate::engine::{AgentHandle, Answer};
use crate::journal::{Guest, JobRecord, JobState};
use spillway_plumbing::atomic::write_whole;

/// Folder of a job hosted here for another node.
pub fn guest_dir(state_dir: &Path, id: JobId) -> PathBuf {
    state_dir.join("guests").join(id.to_string())
}

/// Folder the outputs of a job run elsewhere are fetched into, before delivery.
pub fn delivery_dir(staging_dir: &Path, id: JobId) -> PathBuf {
    staging_dir.join(format!("handed-{id}"))
}

async fn put_blob(conn: &quinn::Connection, bytes: Vec<u8>) -> Result<[u8; 32], String> {
    let expected: [u8; 32] = Sha256::digest(&bytes).into();
    match request(conn, &BlobRequest::Put(bytes), MAX_STREAM_FRAME).await {
        Ok(BlobResponse::Stored(d)) if d == expected => Ok(d),
        Ok(BlobResponse::Stored(_)) => Err("the coordinator stored other bytes".into()),
        Ok(BlobResponse::Error(e)) => Err(e),
        Ok(other) => Err(format!("unexpected answer to a blob upload: {other:?}")),
        Err(e) => Err(format!("cannot upload to the coordinator: {e}")),
    }
}

async fn get_blob(conn: &quinn::Connection, digest: [u8; 32]) -> Result<Vec<u8>, String> {
    match request(conn, &BlobRequest::Get(digest), MAX_STREAM_FRAME).await {
        Ok(BlobResponse::Blob(bytes)) if Sha256::digest(&bytes)[..] == digest[..] => Ok(bytes),
        Ok(BlobResponse::Blob(_)) => Err("a blob arrived damaged (its hash differs)".into()),
        Ok(BlobResponse::Error(e)) => Err(e),
        Ok(other) => Err(format!("unexpected answer to a blob download: {other:?}")),
        Err(e) => Err(format!("cannot download from the coordinator: {e}")),
    }
}

/// An offered job's input, whole: it goes to the coordinator as one blob frame.
fn read_input(
    config: &spillway_agent_config::AgentConfig,
    id: spillway_proto::JobId,
    event: &spillway_proto::Event,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let path = config.input_of(id, event);
    let failed = |e: std::io::Error| format!("cannot read the input {}: {e}", path.display());
    let file = crate::staging::open_input(config, id, event).map_err(failed)?;
    let limit = (MAX_STREAM_FRAME - 4096) as u64;
    let size = file.metadata().map_err(failed)?.len();
    if size > limit {
        return Err(format!(
            "the input {} is {size} bytes, more than the {limit} one hand-over carries",
            path.display()
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit).read_to_end(&mut bytes).map_err(failed)?;
    Ok(bytes)
}

/// Uploads an offered job's input and builds the offer.
pub async fn offer(
    conn: &quinn::Connection,
    agent: &AgentHandle,
    record: &JobRecord,
    reason: OfferReason,
    (local_wait_ms, run_ms): (u64, u64),
) -> Result<AgentFrame, String> {
    let bytes = {
        let (config, id, event) = (agent.config().clone(), record.id, record.event.clone());
        tokio::task::spawn_blocking(move || read_input(&config, id, &event))
            .await
            .map_err(|e| e.to_string())??
    };
    let input_bytes = bytes.len() as u64;
    let input = put_blob(conn, bytes).await?;
    Ok(AgentFrame::Offer(Offer {
        id: record.id,
        function: record.function.clone(),
        event: record.event.clone(),
        input,
        input_bytes,
        reason,
        queued_at_ms: record.queued_at_ms,
        local_wait_ms,
        run_ms,
    }))
}

/// Fetches the outputs of a job run elsewhere into its delivery folder: the answer to journal.
pub async fn fetch_outputs(
    conn: &quinn::Connection,
    agent: &AgentHandle,
    id: JobId,
    outputs: Vec<(String, [u8; 32])>,
) -> Result<Answer, String> {
    let staging = delivery_dir(&agent.config().staging_dir(), id);
    let mut keys = Vec::new();
    for (key, digest) in outputs {
        let key = ObjectKey::parse(&key)
            .map_err(|e| format!("a peer named an output `{key}` that is not a safe path: {e}"))?;
        let bytes = get_blob(conn, digest).await?;
        let target = key.under(&staging.join("output"));
        tokio::task::spawn_blocking(move || write_whole(&target, &bytes, 0o644))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot store a fetched output: {e}"))?;
        keys.push(key);
    }
    Ok(Answer::Delivered {
        staging,
        outputs: keys,
    })
}

/// Fetches a placed job's input and queues it here. `Ok(false)`: already known here.
pub async fn host(
    conn: &quinn::Connection,
    agent: &AgentHandle,
    placement: Placement,
) -> Result<bool, String> {
    if agent
        .journal()
        .hosting(placement.id)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(false);
    }
    if agent.disk_full() {
        return Err(format!(
            "{}'s disk is nearly full ([disk] min_free): it takes no jobs until there is room",
            agent.config().node_name
        ));
    }
    let bytes = get_blob(conn, placement.input).await?;
    let dir = guest_dir(&agent.config().state_dir, placement.id);
    let input = dir.join("input").join(placement.event.file_name());
    tokio::task::spawn_blocking(move || write_whole(&input, &bytes, 0o644))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot store the input of a placed job: {e}"))?;
    let function = placement.function.clone();
    let record = JobRecord::new(placement.id, placement.function, placement.event);
    let guest = Guest {
        origin: placement.origin,
        attempt: placement.attempt,
        dir: dir.clone(),
        acked: false,
    };
    if agent.host(record, guest).await {
        return Ok(true);
    }
    if agent
        .journal()
        .hosting(placement.id)
        .ok()
        .flatten()
        .is_none()
    {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "function `{function}` is not deployed on {}",
            agent.config().node_name
        ));
    }
    Ok(false)
}

/// The result of a finished guest job, its outputs uploaded; `None` while it is not finished
/// or not a guest.
pub async fn guest_result(
    conn: &quinn::Connection,
    agent: &AgentHandle,
    id: JobId,
) -> Result<Option<AgentFrame>, String> {
    let journal = agent.journal();
    let (Some(guest), Some(record)) = (
        journal.hosting(id).map_err(|e| e.to_string())?,
        journal.get(id).map_err(|e| e.to_string())?,
    ) else {
        return Ok(None);
    };
    let outcome = match &record.state {
        JobState::Succeeded { outputs } => {
            let mut sent = Vec::new();
            for key in outputs {
                let path = guest.dir.join("output").join(key);
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| format!("cannot read output {}: {e}", path.display()))?;
                sent.push((key.clone(), put_blob(conn, bytes).await?));
            }
            Outcome::Succeeded { outputs: sent }
        }
        JobState::Failed { reason } => Outcome::Failed {
            reason: format!("on {}: {reason}", agent.config().node_name),
        },
        _ => return Ok(None),
    };
    Ok(Some(AgentFrame::GuestDone(GuestDone {
        id,
        attempt: guest.attempt,
        outcome,
    })))
}
