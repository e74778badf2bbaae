//! `/v1/releases` and `/v1/upgrades`: uploading agent binaries, starting, watching and
//! cancelling rollouts. Everything but reading is the admin's (a binary runs as root on every
//! node it reaches).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use spillway_api::upgrades::{Release, Rollout, RolloutRequest};
use spillway_proto::wire::{MAX_AGENT_BINARY, binary_arch};

use super::Refusal;
use crate::server::State;
use crate::server::api_error::ApiError;

type ApiResult<T> = Result<Json<T>, ApiError>;

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            Refusal::Busy(m) => ApiError(StatusCode::CONFLICT, m),
            Refusal::Failed(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

/// `PUT /v1/releases/{version}`: one agent binary (its architecture is read from it), streamed
/// to disk and hashed as it arrives, within [`MAX_AGENT_BINARY`].
pub async fn put_binary(
    AxState(state): AxState<Arc<State>>,
    Path(version): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Release>), ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    super::check_version(&version).map_err(bad)?;
    let temporary = state.blobs.temporary(&format!("upload-{}", rand_suffix()));
    let received = receive(body, &temporary).await;
    let upload = match received {
        Ok(u) => u,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(e);
        }
    };
    let (s, v) = (state.clone(), version.clone());
    let stored = tokio::task::spawn_blocking(move || {
        s.blobs
            .adopt(&temporary, &upload.sha256)
            .map_err(|e| format!("cannot store the binary: {e}"))?;
        s.upgrades.add_binary(&s, &v, &upload)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let release = stored.map_err(|m| ApiError(StatusCode::INTERNAL_SERVER_ERROR, m))?;
    tracing::info!(
        version,
        binaries = release.binaries.len(),
        "agent binary uploaded"
    );
    Ok((StatusCode::CREATED, Json(release)))
}

/// Writes the body to `path`, hashing it; refuses it past [`MAX_AGENT_BINARY`] or when its
/// first bytes are no ELF header of an architecture Spillway runs on.
async fn receive(body: Body, path: &std::path::Path) -> Result<super::Upload, ApiError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let failed = |e: std::io::Error| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the binary: {e}"),
        )
    };
    let mut file = tokio::fs::File::create(path).await.map_err(failed)?;
    let (mut hasher, mut size, mut header) = (Sha256::new(), 0u64, Vec::new());
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the upload broke off: {e}"),
            )
        })?;
        size += chunk.len() as u64;
        if size > MAX_AGENT_BINARY {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("an agent binary is at most {} MiB", MAX_AGENT_BINARY >> 20),
            ));
        }
        if header.len() < 64 {
            header.extend_from_slice(&chunk[..chunk.len().min(64 - header.len())]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(failed)?;
    }
    let arch = binary_arch(&header).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("this is not an agent binary: {e}"),
        )
    })?;
    file.sync_all().await.map_err(failed)?;
    Ok(super::Upload {
        sha256: hasher.finalize().into(),
        size,
        arch,
    })
}

/// A name no two uploads share.
fn rand_suffix() -> String {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    hex::encode(b)
}

pub async fn list_releases(AxState(state): AxState<Arc<State>>) -> ApiResult<Vec<Release>> {
    Ok(Json(state.upgrades.releases()))
}

/// `POST /v1/upgrades`: starts a rollout.
pub async fn start(
    AxState(state): AxState<Arc<State>>,
    Json(request): Json<RolloutRequest>,
) -> Result<(StatusCode, Json<Rollout>), ApiError> {
    let rollout = state.upgrades.start(&state, &request)?;
    Ok((StatusCode::CREATED, Json(rollout)))
}

pub async fn list(AxState(state): AxState<Arc<State>>) -> ApiResult<Vec<Rollout>> {
    Ok(Json(state.upgrades.rollouts()))
}

/// `POST /v1/upgrades/{id}/cancel`.
pub async fn cancel(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<u64>,
) -> ApiResult<Rollout> {
    Ok(Json(state.upgrades.cancel(&state, id)?))
}
