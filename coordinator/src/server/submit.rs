//! A new job from the API (`invoke`, `/job`, `/run`, bucket events): its input stored on the
//! node the placement core chooses, and the job that file makes there.

use axum::body::Bytes;
use axum::http::StatusCode;
use spillway_api::Invoked;
use spillway_proto::key::ObjectKey;
use spillway_proto::{Event, FileEvent};

use super::State;
use super::api_error::{ApiError, not_found};
use super::node_calls::store_on;
use super::store::FunctionRecord;

pub(super) fn function_record(state: &State, name: &str) -> Result<FunctionRecord, ApiError> {
    state.store.function(name)?.ok_or_else(|| no_function(name))
}

/// What a caller naming a function that does not exist is told.
pub(super) fn no_function(name: &str) -> ApiError {
    not_found(format!(
        "no function named `{name}`; list them with `spillway get functions`"
    ))
}

/// What `invoke`, `/job` and `/run` share: the body becomes the file `file` in the function's
/// input folder on a node that runs it; the answer names the job that file makes there.
pub(super) async fn submit(
    state: &State,
    name: &str,
    file: &str,
    node: Option<String>,
    body: Bytes,
) -> Result<Invoked, ApiError> {
    let f = function_record(state, name)?;
    let input = f
        .def
        .input
        .iter()
        .find(|i| i.provider.is_local() && f.def.s3_settings(&i.provider).is_none())
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("function `{name}` has no folder input to invoke it through"),
            )
        })?;
    let file = ObjectKey::parse(file)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("file name `{file}`: {e}")))?;
    let key = match &input.path.folder {
        Some(folder) => ObjectKey::parse(&format!("{folder}/{file}")),
        None => Ok(file),
    }
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    submit_object(state, name, &input.path.bucket, key, node, body).await
}

/// Stores `body` as `bucket/key` under the data root of a node that runs `name` (the least
/// busy one unless `node` is given); the answer names the job that file makes there.
pub(super) async fn submit_object(
    state: &State,
    name: &str,
    bucket: &str,
    key: ObjectKey,
    node: Option<String>,
    body: Bytes,
) -> Result<Invoked, ApiError> {
    let node = match node {
        Some(n) => n,
        None => pick_node(state, name, body.len() as u64)?,
    };
    let size = body.len() as u64;
    let stored = store_on(state, &node, format!("{bucket}/{key}"), body.to_vec()).await?;
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(&stored.sha256, &mut sha256)
        .map_err(|_| ApiError(StatusCode::BAD_GATEWAY, "bad digest".into()))?;
    // The job the node's watcher makes of this write (every write is a new one).
    let event = Event::written(
        FileEvent {
            bucket: bucket.to_owned(),
            key,
            size,
            mtime_ns: 0,
            sha256,
        },
        stored.write,
    );
    Ok(Invoked {
        job: event.job_id(&node, name).to_string(),
        node,
        input: stored.path,
    })
}

/// The node a new job of `function` starts on: the placement core's choice among the Ready
/// nodes that run it.
fn pick_node(state: &State, function: &str, input_bytes: u64) -> Result<String, ApiError> {
    state.place_new_job(function, input_bytes).ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no Ready node runs `{function}` (cordoned nodes take no new jobs); see `spillway get nodes` and `spillway describe function {function}`"),
        )
    })
}
