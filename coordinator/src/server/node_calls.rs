//! What the API asks of a node over its link: a request and its answer, a job's log, a file
//! put into its folders.

use axum::http::StatusCode;
use spillway_api::Stored;
use spillway_link::stream::request;
use spillway_proto::wire::{self, MAX_STREAM_FRAME, Response as AgentResponse};

use super::State;
use super::api_error::{ApiError, not_found};
use super::store::JobRow;

pub(super) fn job_row(state: &State, id: &str) -> Result<JobRow, ApiError> {
    state.store.job(id)?.map_err(not_found)
}

/// Sends `req` to `node` over its QUIC connection and waits for the answer.
pub(super) async fn ask(
    state: &State,
    node: &str,
    req: wire::Request,
) -> Result<AgentResponse, ApiError> {
    let conn = state.view.connection(node).ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "node `{node}` is not connected; check it with `spillway describe node {node}`"
            ),
        )
    })?;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        request::<_, AgentResponse>(&conn, &req, MAX_STREAM_FRAME),
    )
    .await
    .map_err(|_| {
        ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("node `{node}` did not answer within 60 s"),
        )
    })?
    .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("node `{node}`: {e}")))?;
    match answer {
        AgentResponse::Error(message) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("node `{node}`: {message}"),
        )),
        other => Ok(other),
    }
}

/// The log of a job (a unique id prefix is enough), from the node that has it.
pub(super) async fn job_log_text(state: &State, id: &str) -> Result<String, ApiError> {
    let row = job_row(state, id)?;
    match ask(
        state,
        &row.node,
        wire::Request::Logs {
            job: row.update.id.to_string(),
        },
    )
    .await?
    {
        AgentResponse::Logs(text) => Ok(text),
        _ => Err(ApiError(
            StatusCode::BAD_GATEWAY,
            "unexpected answer".into(),
        )),
    }
}

pub(super) async fn store_on(
    state: &State,
    node: &str,
    path: String,
    bytes: Vec<u8>,
) -> Result<Stored, ApiError> {
    let (path, sha256, write) =
        match ask(state, node, wire::Request::PutFile { path, bytes }).await? {
            // Agents before protocol 1.2 do not count writes: every file is a first write there.
            AgentResponse::Stored { path, sha256 } => (path, sha256, 1),
            AgentResponse::StoredWrite {
                path,
                sha256,
                occurrence,
            } => (path, sha256, occurrence),
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_GATEWAY,
                    "unexpected answer".into(),
                ));
            }
        };
    Ok(Stored {
        node: node.to_owned(),
        path,
        sha256: hex::encode(sha256),
        write,
    })
}
