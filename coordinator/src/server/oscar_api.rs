//! Delegation from OSCAR clusters (and other coordinators) through OSCAR's API: delegated jobs
//! on `POST /job/{service}` (the wrapped event OSCAR's delegation posts). The rest of OSCAR's
//! API is in [`super::oscar_services`], [`super::oscar_jobs`] and [`super::oscar_system`].
//!
//! Also the presigned routes executors outside the mesh use: `GET /v1/blobs/{sha256}` (a job's
//! input) and `POST /v1/callbacks/{job}/{attempt}` (its result).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spillway_proto::envelope::{ENVELOPE_VERSION, Envelope, ResultReport};
use spillway_proto::fdl::ProviderRef;
use spillway_proto::wire::MAX_STREAM_FRAME;

use super::api_error::ApiError;
use super::events::parse_notification;
use super::presign::PresignError;
use super::store::DelegatedJob;
use super::submit::{function_record, submit};
use super::{State, now_ms};

#[derive(Debug, Deserialize)]
pub struct Presigned {
    expires: Option<u64>,
    signature: Option<String>,
}

fn check(state: &State, method: &str, path: &str, q: &Presigned) -> Result<(), ApiError> {
    state
        .presigner
        .verify(
            method,
            path,
            q.expires,
            q.signature.as_deref(),
            now_ms() / 1000,
        )
        .map_err(|e| {
            let status = match e {
                PresignError::Expired(_) => StatusCode::GONE,
                _ => StatusCode::FORBIDDEN,
            };
            ApiError(status, format!("{path}: {e}"))
        })
}

/// `GET /v1/blobs/{sha256}` with a presigned query: the bytes.
pub async fn get_blob(
    AxState(state): AxState<Arc<State>>,
    Path(digest): Path<String>,
    Query(q): Query<Presigned>,
) -> Result<Vec<u8>, ApiError> {
    check(&state, "GET", &format!("/v1/blobs/{digest}"), &q)?;
    let d = super::blobs::parse_digest(&digest).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("`{digest}` is not a SHA-256"),
        )
    })?;
    let blobs = state.clone();
    tokio::task::spawn_blocking(move || blobs.blobs.get(&d))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e))
}

/// The largest output file an executor may upload: one blob, served to agents in one frame.
const MAX_OUTPUT: usize = spillway_proto::wire::MAX_STREAM_FRAME - 4096;
/// The largest result report (status, reason and the list of outputs).
const MAX_REPORT: usize = 1 << 20;

/// Reads a request body whose credentials were checked already, up to `limit` bytes.
async fn read_body(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} is larger than {limit} bytes, or its upload broke off: {e}"),
        )
    })
}

/// `PUT /v1/outputs/{job}/{attempt}/{name…}` with a presigned query (signed for the prefix, so
/// one URL template serves every output of the attempt): an executor stores an output file.
/// Answers `{"sha256": …}`; an attempt that no longer holds the job's lease is refused, so a
/// late executor cannot mix its files into the next attempt's result.
pub async fn put_output(
    AxState(state): AxState<Arc<State>>,
    Path((job, attempt, name)): Path<(String, u32, String)>,
    Query(q): Query<Presigned>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check(&state, "PUT", &format!("/v1/outputs/{job}/{attempt}/"), &q)?;
    if spillway_proto::ObjectKey::parse(&name).is_err() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("`{name}` is not a relative file path inside the output folder"),
        ));
    }
    attempt_in_force(&state, &job, attempt, "outputs are")?;
    // Only now, signed and in force, is the body read (and only up to one blob).
    let body = read_body(body, MAX_OUTPUT, "an output").await?;
    let blobs = state.clone();
    let digest = tokio::task::spawn_blocking(move || blobs.blobs.put(&body))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            ApiError(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("cannot store output `{name}`: {e}"),
            )
        })?;
    tracing::debug!(job = %job, output = %name, "output uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({"sha256": hex::encode(digest)})),
    ))
}

/// The job `job` names, if replica attempt `attempt` still holds its lease: an executor of an
/// attempt the job moved on from (or that finished) is refused with `409`, its `what` not taken.
fn attempt_in_force(
    state: &State,
    job: &str,
    attempt: u32,
    what: &str,
) -> Result<spillway_proto::JobId, ApiError> {
    let id = job
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("`{job}` is not a job id")))?;
    if !state.replica_lease_is(id, attempt) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "attempt {attempt} of job {job} is over (the job was moved or finished): its {what} not taken"
            ),
        ));
    }
    Ok(id)
}

/// `POST /v1/callbacks/{job}/{attempt}` with a presigned query: an executor reports the job.
/// A report from an attempt that no longer holds the job's lease (a replica the job moved on
/// from) is refused, so it cannot pass for the current attempt's result.
pub async fn callback(
    AxState(state): AxState<Arc<State>>,
    Path((job, attempt)): Path<(String, u32)>,
    Query(q): Query<Presigned>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check(
        &state,
        "POST",
        &format!("/v1/callbacks/{job}/{attempt}"),
        &q,
    )?;
    let id = attempt_in_force(&state, &job, attempt, "report is").inspect_err(|e| {
        if e.0 == StatusCode::CONFLICT {
            tracing::info!(job = %job, attempt, "late report of an attempt that is over: ignored");
        }
    })?;
    let body = read_body(body, MAX_REPORT, "a report").await?;
    let report: ResultReport = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"status\": \"running|succeeded|failed\", \"reason\": …}}: {e}"),
        )
    })?;
    tracing::info!(job = %job, status = ?report.status, "result reported by a callback");
    state.delegations.callbacks.report(id, report);
    Ok(StatusCode::NO_CONTENT)
}

/// A body of `POST /job/{service}` that is OSCAR's wrapped event.
#[derive(Debug, Deserialize)]
struct DelegatedEvent {
    storage_provider: String,
    event: String,
}

/// Where the input of a wrapped event is, as read from the body (nothing fetched yet).
#[derive(Debug)]
pub enum WrappedInput {
    /// A Spillway coordinator's envelope: a presigned URL and the input's SHA-256.
    Envelope(Box<Envelope>),
    /// An S3/MinIO notification: the first created object, from `storage_provider`.
    Object {
        storage_provider: String,
        object: super::events::CreatedObject,
    },
}

/// Reads OSCAR's wrapped event (`{"storage_provider", "event"}` with the event as a JSON
/// string). `None`: the body is not a wrapped event (it is then the input itself); `Err`: it is
/// one, but its event cannot be used, with the reason.
pub fn parse_wrapped_event(body: &[u8]) -> Option<Result<WrappedInput, String>> {
    let wrapped: DelegatedEvent = serde_json::from_slice(body).ok()?;
    Some((|| {
        let event: Value = serde_json::from_str(&wrapped.event)
            .map_err(|e| format!("`event` of the wrapped event is not JSON: {e}"))?;
        if let Some(envelope) = event.get("spillway") {
            let envelope: Envelope = serde_json::from_value(envelope.clone())
                .map_err(|e| format!("`spillway` in the event is not an envelope: {e}"))?;
            if envelope.spillway != ENVELOPE_VERSION {
                return Err(format!(
                    "envelope version {} is not {ENVELOPE_VERSION}: upgrade the older coordinator",
                    envelope.spillway
                ));
            }
            return Ok(WrappedInput::Envelope(Box::new(envelope)));
        }
        let object = parse_notification(wrapped.event.as_bytes())
            .map_err(|e| e.0)?
            .into_iter()
            .next()
            .ok_or("the wrapped event names no created object")?;
        Ok(WrappedInput::Object {
            storage_provider: wrapped.storage_provider,
            object,
        })
    })())
}

/// `POST /job/{service}` with OSCAR's wrapped event: the input is fetched (from the presigned
/// URL a Spillway coordinator put in it, or from the storage provider the event names, with the
/// function's credentials for it) and dropped into the function's input folder. `None` when the
/// body is not a wrapped event (it is then the input itself).
pub async fn delegated_job(
    state: &Arc<State>,
    service: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Result<Response, ApiError>> {
    let input = parse_wrapped_event(body)?;
    Some(match input {
        Ok(input) => accept_delegated(state, service, headers, input).await,
        Err(why) => Err(ApiError(StatusCode::BAD_REQUEST, why)),
    })
}

async fn accept_delegated(
    state: &Arc<State>,
    service: &str,
    headers: &HeaderMap,
    input: WrappedInput,
) -> Result<Response, ApiError> {
    let def = function_record(state, service)?.def;
    let (name, bytes) = match input {
        WrappedInput::Envelope(envelope) => {
            let bytes = fetch(state, &envelope.input.url).await?;
            if hex::encode(Sha256::digest(&bytes)) != envelope.input.sha256 {
                return Err(ApiError(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the input fetched from {} does not have the SHA-256 the envelope gives",
                        redact(&envelope.input.url)
                    ),
                ));
            }
            (envelope.input.name, bytes)
        }
        WrappedInput::Object {
            storage_provider,
            object,
        } => {
            let provider = ProviderRef::parse(&storage_provider);
            let settings = def.s3_settings(&provider).ok_or_else(|| {
                ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{service}` cannot read `{}` from storage provider `{provider}`: define it under `storage_providers` of the function's FDL (with its endpoint and keys)", object.key),
                )
            })?;
            let bucket = spillway_plumbing::s3::Bucket::open(&settings, &object.bucket)
                .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
            let bytes = bucket
                .get(&object.key, (MAX_STREAM_FRAME - 4096) as u64)
                .await
                .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e))?;
            let name = object.key.rsplit('/').next().unwrap_or("input").to_owned();
            (name, bytes)
        }
    };
    let invoked = submit(state, service, &name, None, Bytes::from(bytes)).await?;
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(given) = header("x-delegated-job-id") {
        state.store.put_delegated(&DelegatedJob {
            service: service.to_owned(),
            name: given,
            job: invoked.job.clone(),
            from: header("x-delegated-from"),
            received_at_ms: now_ms(),
        })?;
    }
    tracing::info!(service, job = %invoked.job, from = ?header("x-delegated-from"), "delegated job accepted");
    Ok((StatusCode::CREATED, Json(invoked)).into_response())
}

/// A presigned URL without its signature, for messages.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

async fn fetch(state: &State, url: &str) -> Result<Vec<u8>, ApiError> {
    let gateway = |why: String| ApiError(StatusCode::BAD_GATEWAY, why);
    let response = state
        .delegations
        .http
        .get(url)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| {
            gateway(format!(
                "cannot fetch the input from {}: {}",
                redact(url),
                super::replicas::error_chain(&e)
            ))
        })?;
    if !response.status().is_success() {
        return Err(gateway(format!(
            "fetching the input from {} answered HTTP {}",
            redact(url),
            response.status()
        )));
    }
    let limit = (MAX_STREAM_FRAME - 4096) as u64;
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the input at {} is over {limit} bytes", redact(url)),
        ));
    }
    // A length may be missing or false (chunked answers): the bound holds while reading.
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| gateway(format!("reading the input from {}: {e}", redact(url))))?
    {
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the input at {} is over {limit} bytes", redact(url)),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
