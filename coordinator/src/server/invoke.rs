//! HTTP invocation in OSCAR's contract (the input file base64-encoded, see
//! [`super::supervisor`]): `POST /job/{function}` (asynchronous: answers with the job id) and
//! `POST /run/{function}` (synchronous: answers with the outputs, base64-encoded); and in raw
//! bytes: `POST /v1/functions/{function}/invoke` and `POST /v1/functions/{function}/run`. The input file is dropped into the function's input folder on a node that runs it, so
//! the job is the same one a file copied there would make: journaled, retried, spilled over like
//! any other. On the raw routes the same input under the same name is the same job, so a client
//! may safely retry; on OSCAR's every call is a new job, as it is in OSCAR.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spillway_proto::wire::{self, JobPhase, Response as AgentResponse};

use super::State;
use super::api_error::ApiError;
use super::node_calls::ask;
use super::submit::{function_record, submit};
use super::supervisor;

#[derive(Debug, Deserialize)]
pub struct InvokeParams {
    /// The input file's name (default: the body's SHA-256, shortened, plus `.bin`).
    name: Option<String>,
    /// Run it on this node instead of the least busy one.
    node: Option<String>,
    /// `/run` only: how long to wait for the result, in seconds (default 300).
    timeout: Option<u64>,
}

/// The input's name on the raw routes: `?name=`, else named after its content, so the same
/// body is the same job and a client may retry.
fn file_name(params: &InvokeParams, body: &[u8]) -> String {
    params
        .name
        .clone()
        .unwrap_or_else(|| format!("{}.bin", &hex::encode(Sha256::digest(body))[..16]))
}

/// The input's name on OSCAR's routes: `?name=`, else a fresh one (as OSCAR's supervisor names
/// it, `event-file-…`), so every call is a new job, as every call is in OSCAR.
fn event_file_name(params: &InvokeParams) -> String {
    params.name.clone().unwrap_or_else(|| {
        let mut nonce = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        format!("event-file-{}", hex::encode(nonce))
    })
}

/// `POST /job/{function}`: OSCAR's asynchronous call, the input file in base64 (or a JSON
/// object) as `/run` takes it; 202 Accepted with `{job, node, input}`. Raw bytes go to
/// `POST /v1/functions/{function}/invoke`.
pub async fn job(
    AxState(state): AxState<Arc<State>>,
    Path(function): Path<String>,
    Query(params): Query<InvokeParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Another cluster delegating (OSCAR's wrapped event): 201 as OSCAR answers.
    if let Some(answer) = super::oscar_api::delegated_job(&state, &function, &headers, &body).await
    {
        return answer;
    }
    function_record(&state, &function)?;
    // MinIO's webhook posts its notifications here in OSCAR: the objects it names are the
    // inputs, fetched as `POST /events` fetches them (for this function only).
    if super::events::is_notification(&body) {
        let objects = super::events::parse_notification(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.0))?;
        let jobs = super::events::accept(&state, &objects, Some(&function)).await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(super::events::EventsAccepted { jobs }),
        )
            .into_response());
    }
    let input = supervisor::input_of(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let name = event_file_name(&params);
    let invoked = submit(&state, &function, &name, params.node, input.into()).await?;
    Ok((StatusCode::ACCEPTED, Json(invoked)).into_response())
}

/// `POST /v1/functions/{function}/run`: waits for the job and answers with its first output
/// file (200), or 204 when it succeeded without output, 500 with the reason when it failed, 504
/// with the job id when it is still running at the deadline. Headers name the job and every
/// output.
pub async fn run_raw(
    AxState(state): AxState<Arc<State>>,
    Path(function): Path<String>,
    Query(params): Query<InvokeParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = file_name(&params, &body);
    let finished = run_to_end(&state, &function, &name, &params, body.to_vec()).await?;
    let Some(first) = finished.files.first() else {
        return Ok(with_headers(
            StatusCode::NO_CONTENT.into_response(),
            &finished.headers,
        ));
    };
    let content = fetch(&state, &finished.node, first).await?;
    Ok(with_headers(content.into_response(), &finished.headers))
}

/// `POST /run/{function}`: OSCAR's synchronous call. The body is the input file in base64 (or
/// a JSON object); the answer is the one output in base64, several as a zip in base64, or what
/// the script printed when it wrote none, as OSCAR's FaaS Supervisor answers.
pub async fn run(
    AxState(state): AxState<Arc<State>>,
    Path(function): Path<String>,
    Query(params): Query<InvokeParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    function_record(&state, &function)?;
    let input = supervisor::input_of(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let name = event_file_name(&params);
    let finished = run_to_end(&state, &function, &name, &params, input).await?;
    let text = if finished.files.is_empty() {
        supervisor::printed(&super::node_calls::job_log_text(&state, &finished.job).await?)
    } else {
        let mut outputs = supervisor::Outputs::default();
        for path in &finished.files {
            // Named as the script wrote them: relative to the output folder.
            let name = finished
                .folders
                .iter()
                .find_map(|f| path.strip_prefix(f.as_str()))
                .unwrap_or(path)
                .to_owned();
            let bytes = fetch(&state, &finished.node, path).await?;
            outputs
                .add(name, bytes, supervisor::MAX_ANSWER_BYTES)
                .map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e))?;
        }
        let files = outputs.files;
        supervisor::answer_of(files).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?
    };
    Ok(with_headers(text.into_response(), &finished.headers))
}

/// A finished job, as the synchronous calls answer it.
struct Finished {
    job: String,
    node: String,
    /// Its output files in the node's folder outputs (paths under the data root), and those
    /// folders (`bucket/folder/`).
    files: Vec<String>,
    folders: Vec<String>,
    headers: Vec<(&'static str, String)>,
}

/// Submits `input` and waits for its job: `Err` when it failed (500) or is still running at the
/// deadline (504).
async fn run_to_end(
    state: &State,
    function: &str,
    name: &str,
    params: &InvokeParams,
    input: Vec<u8>,
) -> Result<Finished, ApiError> {
    let wait = Duration::from_secs(params.timeout.unwrap_or(300).clamp(1, 3600));
    // Subscribed before the job exists, so its end cannot pass unseen.
    let mut feed = state.feed.subscribe();
    let invoked = submit(state, function, name, params.node.clone(), input.into()).await?;
    let deadline = tokio::time::Instant::now() + wait;
    // The origin reports its jobs over the link; the feed says when it reported this one's
    // end (and the row is read again at least every second, whatever the feed says).
    let row = loop {
        if let Ok(row) = state.store.job(&invoked.job)?
            && matches!(row.update.phase, JobPhase::Succeeded | JobPhase::Failed)
        {
            break row;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "job {} of `{function}` has not finished within {}s; follow it with `spillway describe job {}` or GET /v1/jobs/{}",
                    invoked.job,
                    wait.as_secs(),
                    invoked.job,
                    invoked.job
                ),
            ));
        }
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        while let Ok(next) = tokio::time::timeout_at(until, feed.recv()).await {
            match next {
                Ok(e) if e.ends_job(&invoked.job) => break,
                Ok(_) => {}
                // Fell behind, or the feed is gone: read the row again.
                Err(_) => {
                    feed = feed.resubscribe();
                    break;
                }
            }
        }
    };
    let mut headers = vec![("x-spillway-job", invoked.job.clone())];
    headers.push(("x-spillway-node", row.node.clone()));
    if row.update.phase == JobPhase::Failed {
        let reason = row.update.reason.unwrap_or_else(|| "unknown".into());
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "`{function}` failed: {reason} (job {}; its log: spillway logs {})",
                invoked.job, invoked.job
            ),
        ));
    }
    // Only files in the node's folder outputs can be returned: outputs also name published
    // messages (`mqtt:TOPIC`) and uploaded objects (`PROVIDER:bucket/key`).
    let def = function_record(state, function)?.def;
    let folders: Vec<String> = def
        .output
        .iter()
        .filter(|o| def.s3_settings(&o.provider).is_none())
        .map(|o| format!("{}/", o.path))
        .collect();
    let files: Vec<String> = row
        .update
        .outputs
        .iter()
        .filter(|o| folders.iter().any(|f| o.starts_with(f)))
        .cloned()
        .collect();
    if !files.is_empty() {
        headers.push(("x-spillway-outputs", files.join(", ")));
    }
    Ok(Finished {
        job: invoked.job,
        node: row.node,
        files,
        folders,
        headers,
    })
}

/// A file under a node's data root.
async fn fetch(state: &State, node: &str, path: &str) -> Result<Vec<u8>, ApiError> {
    match ask(
        state,
        node,
        wire::Request::GetFile {
            path: path.to_owned(),
        },
    )
    .await?
    {
        AgentResponse::File(bytes) => Ok(bytes),
        _ => Err(ApiError(
            StatusCode::BAD_GATEWAY,
            "unexpected answer".into(),
        )),
    }
}

fn with_headers(mut response: Response, headers: &[(&'static str, String)]) -> Response {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, v);
        }
    }
    response
}
