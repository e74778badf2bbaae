//! Upgrade orders on the link: carrying one out (checks, fetch, store, restart), and the trial
//! of a new binary, which is committed once it links and rolled back when its deadline passes
//! first. The decisions are `crate::upgrade`'s; this file moves bytes and frames.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spillway_proto::wire::{
    AgentFrame, BlobRequest, BlobResponse, MAX_BLOB_RANGE, UpgradeOrder, UpgradeReport,
    UpgradeStatus,
};

use crate::upgrade::order::{self, Refusal};
use crate::upgrade::{self, RestartRequest};

/// Extra bytes a blob frame carries besides the blob.
const FRAME_OVERHEAD: usize = 64;

#[derive(Debug)]
pub struct Upgrades {
    state_dir: PathBuf,
    /// `None`: this agent cannot restart itself (it runs inside `spillway up`).
    restart: Option<RestartRequest>,
    /// This binary's trial and when it ends, while it has not linked.
    trial: Option<(upgrade::boot::Trial, Instant)>,
    busy: Arc<AtomicBool>,
}

impl Upgrades {
    pub fn new(state_dir: PathBuf, restart: Option<RestartRequest>) -> Self {
        let trial = upgrade::running_slot().and_then(|sha| {
            let boot = upgrade::load(&state_dir).ok()?;
            let trial = boot.on_trial(&sha)?.clone();
            let ends = Instant::now() + Duration::from_millis(trial.ready_within_ms);
            tracing::info!(
                version = %trial.slot.version,
                "running a new binary on trial: it must link to the coordinator within {}",
                humantime::format_duration(Duration::from_millis(trial.ready_within_ms))
            );
            Some((trial, ends))
        });
        Self {
            state_dir,
            restart,
            trial,
            busy: Arc::default(),
        }
    }

    /// When this binary's trial ends, if it is on one.
    pub fn trial_ends(&self) -> Option<Instant> {
        self.trial.as_ref().map(|(_, ends)| *ends)
    }

    /// The trial ended before the link came up: back to the previous binary.
    pub fn trial_failed(&mut self) {
        let Some((trial, _)) = self.trial.take() else {
            return;
        };
        let reason = format!(
            "the new binary did not link to the coordinator within {}",
            humantime::format_duration(Duration::from_millis(trial.ready_within_ms))
        );
        tracing::error!("{reason}; rolling back to the previous binary");
        match upgrade::load(&self.state_dir) {
            Ok(mut boot) => {
                boot.roll_back(reason);
                if let Err(e) = upgrade::save(&self.state_dir, &boot) {
                    tracing::error!("{e}");
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        if let Some(r) = &self.restart {
            r.request();
        }
    }

    /// Linked to the coordinator: a binary on trial becomes current. The report to send (the
    /// last order's outcome, again at every link until the next order).
    pub fn linked(&mut self) -> Option<AgentFrame> {
        let mut boot = upgrade::load(&self.state_dir).ok()?;
        if let Some((trial, _)) = self.trial.take()
            && boot.on_trial(&trial.slot.sha256).is_some()
        {
            let freed = boot.commit();
            match upgrade::save(&self.state_dir, &boot) {
                Ok(()) => {
                    tracing::info!(version = %trial.slot.version, "upgrade done: this binary is the current one now");
                    if freed.is_some() {
                        order::remove_unused(&self.state_dir, &boot);
                    }
                }
                Err(e) => tracing::error!("cannot record the upgrade as done: {e}"),
            }
        }
        let outcome = boot.outcome?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&outcome.sha256, &mut sha256).ok()?;
        let status = match outcome.rolled_back {
            None => UpgradeStatus::Ready,
            Some(reason) => UpgradeStatus::RolledBack { reason },
        };
        Some(AgentFrame::Upgrade(UpgradeReport {
            rollout: outcome.rollout,
            sha256,
            status,
        }))
    }

    /// Carries out an order on its own task; `report` sends frames on the link it came on.
    pub fn order(
        &self,
        conn: quinn::Connection,
        ca_der: Vec<u8>,
        order: UpgradeOrder,
        report: impl Fn(AgentFrame) + Send + 'static,
    ) {
        let (rollout, sha256) = (order.rollout, order.sha256);
        let answer = move |status| {
            AgentFrame::Upgrade(UpgradeReport {
                rollout,
                sha256,
                status,
            })
        };
        let Some(restart) = self.restart.clone() else {
            let reason = Refusal::Embedded.to_string();
            return report(answer(UpgradeStatus::Refused { reason }));
        };
        if self.busy.swap(true, Ordering::SeqCst) {
            tracing::info!(version = %order.version, "an upgrade is under way; the order waits for it");
            return;
        }
        let (busy, state_dir) = (self.busy.clone(), self.state_dir.clone());
        tokio::spawn(async move {
            let result = carry_out(&conn, &ca_der, &state_dir, &order).await;
            let status = match result {
                Ok(Done::AlreadyRunning) => UpgradeStatus::Ready,
                Ok(Done::Stored) => UpgradeStatus::Restarting,
                Err(refusal) => {
                    tracing::warn!(version = %order.version, "upgrade refused: {refusal}");
                    UpgradeStatus::Refused {
                        reason: refusal.to_string(),
                    }
                }
            };
            let restarting = status == UpgradeStatus::Restarting;
            report(answer(status));
            if restarting {
                tracing::info!(version = %order.version, "new binary stored; stopping to start it");
                // Time for the report to leave before the link closes.
                tokio::time::sleep(Duration::from_millis(300)).await;
                restart.request();
            } else {
                busy.store(false, Ordering::SeqCst);
            }
        });
    }
}

enum Done {
    AlreadyRunning,
    Stored,
}

async fn carry_out(
    conn: &quinn::Connection,
    ca_der: &[u8],
    state_dir: &std::path::Path,
    order: &UpgradeOrder,
) -> Result<Done, Refusal> {
    order::check(order, ca_der, std::env::consts::ARCH)?;
    if running_sha256().await == Some(order.sha256) {
        return Ok(Done::AlreadyRunning);
    }
    let free = crate::disk::free_bytes([state_dir]).unwrap_or(0);
    order::check_room(order, free)?;
    let mut download = order::Download::begin(state_dir, order)?;
    while download.received() < order.size {
        let offset = download.received();
        let len = u32::try_from((order.size - offset).min(u64::from(MAX_BLOB_RANGE)))
            .unwrap_or(MAX_BLOB_RANGE);
        let piece = get_range(conn, order.sha256, offset, len).await?;
        if piece.is_empty() {
            return Err(Refusal::Damaged(format!(
                "the coordinator's copy ends at {offset} of {} bytes",
                order.size
            )));
        }
        download = tokio::task::spawn_blocking({
            let order = order.clone();
            move || download.push(&order, &piece).map(|()| download)
        })
        .await
        .map_err(|e| Refusal::Fetch(e.to_string()))??;
    }
    let (dir, o) = (state_dir.to_owned(), order.clone());
    tokio::task::spawn_blocking(move || download.finish(&dir, &o))
        .await
        .map_err(|e| Refusal::Fetch(e.to_string()))??;
    Ok(Done::Stored)
}

/// One piece of a blob from the coordinator.
async fn get_range(
    conn: &quinn::Connection,
    digest: [u8; 32],
    offset: u64,
    len: u32,
) -> Result<Vec<u8>, Refusal> {
    let request = BlobRequest::GetRange {
        digest,
        offset,
        len,
    };
    let limit = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .saturating_add(FRAME_OVERHEAD);
    match spillway_link::stream::request(conn, &request, limit).await {
        Ok(BlobResponse::Blob(bytes)) if bytes.len() <= len as usize => Ok(bytes),
        Ok(BlobResponse::Error(e)) => Err(Refusal::Fetch(e)),
        Ok(other) => Err(Refusal::Fetch(format!("unexpected answer: {other:?}"))),
        Err(e) => Err(Refusal::Fetch(e.to_string())),
    }
}

/// The SHA-256 of the binary this process runs.
async fn running_sha256() -> Option<[u8; 32]> {
    if let Some(sha) = upgrade::running_slot() {
        let mut out = [0u8; 32];
        return hex::decode_to_slice(sha, &mut out).ok().map(|()| out);
    }
    tokio::task::spawn_blocking(|| {
        let bytes = std::fs::read(std::env::current_exe().ok()?).ok()?;
        Some(Sha256::digest(&bytes).into())
    })
    .await
    .ok()
    .flatten()
}
