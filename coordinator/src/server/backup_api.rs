//! `POST /v1/admin/backup`: an encrypted backup of the running coordinator's state, streamed as
//! it is written (see [`crate::backup`]). Admin only. A failure midway cuts the response off, so
//! a client never mistakes half a backup for a whole one (and age would refuse it anyway).

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use spillway_api::BackupRequest;
use tokio::sync::mpsc;

use super::State;
use super::api_error::ApiError;
use crate::backup::{self, Passphrase};

/// Chunks in flight between the writer and the connection: back-pressure for a slow client.
const CHUNKS: usize = 8;
const CHUNK: usize = 64 << 10;

pub async fn backup(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<BackupRequest>,
) -> Result<Response, ApiError> {
    let passphrase = Passphrase::new(&req.passphrase)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS);
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let dir = state.config.state_dir.clone();
        // The CA's files are read as one: no rotation or retirement changes them meanwhile.
        let _ca_unchanged = state.ca.hold_changes();
        match backup::write(&dir, &state.store, &state.config.name, &passphrase, out) {
            Ok(m) => tracing::info!(
                files = m.files.len(),
                blobs = m.blobs(),
                bytes = m.bytes(),
                "backup written"
            ),
            Err(e) => {
                tracing::error!("backup failed: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Hands what the backup writes to the response in chunks; fails once the client is gone.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
