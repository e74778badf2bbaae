//! A service's jobs as OSCAR lists them: `GET /system/logs/{service}` (paged, `page`,
//! `next_page`, `remaining_jobs`), `GET /system/logs/{service}/{job}` (its log), and deletion:
//! `DELETE /system/logs/{service}` (its finished jobs that succeeded; `?all=true`: every
//! finished job) and `DELETE /system/logs/{service}/{job}`.
//!
//! Jobs appear under the name their cluster gave them when another cluster delegated them, and
//! under their job id otherwise. Deleting forgets the coordinator's record; a job still queued or
//! running cannot be deleted (Spillway does not stop jobs on request), and says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use spillway_proto::wire::JobPhase;

use super::State;
use super::api_error::ApiError;
use super::store::{DelegatedJob, JobRow};
use super::submit::function_record;

/// Jobs per page, as OSCAR lists them by default.
const PAGE: usize = 70;

fn oscar_status(phase: JobPhase) -> &'static str {
    match phase {
        JobPhase::Queued => "Pending",
        JobPhase::Running => "Running",
        JobPhase::Succeeded => "Succeeded",
        JobPhase::Failed => "Failed",
        _ => "Pending",
    }
}

fn rfc3339(ms: Option<u64>) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms?) * 1_000_000).ok()?;
    t.replace_nanosecond(0)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// One job of a service: its row, if its node reported it, and the delegation that named it,
/// if any.
type Entry = (Option<JobRow>, Option<DelegatedJob>);

/// A service's jobs, by the name OSCAR clients know them by.
struct Listed {
    jobs: BTreeMap<String, Entry>,
}

fn listed(state: &State, service: &str) -> Result<Listed, ApiError> {
    function_record(state, service)?;
    let delegated = state.store.delegated(service)?;
    let mut jobs = BTreeMap::new();
    for row in state
        .store
        .jobs()?
        .into_iter()
        .filter(|r| r.update.function == service)
    {
        let id = row.update.id.to_string();
        let named = delegated.iter().find(|d| d.job == id).cloned();
        let name = named.as_ref().map_or(id, |d| d.name.clone());
        jobs.insert(name, (Some(row), named));
    }
    // Delegated jobs whose node has not reported yet.
    for d in delegated {
        jobs.entry(d.name.clone()).or_insert((None, Some(d)));
    }
    Ok(Listed { jobs })
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// The `next_page` of the previous answer; empty or absent: the first page.
    #[serde(default)]
    page: String,
}

/// `GET /system/logs/{service}?page=`: `{"jobs": {name: {status, creation_time, start_time,
/// finish_time}}, "next_page", "remaining_jobs"}`, names in order, `PAGE` at a time.
pub async fn list(
    AxState(state): AxState<Arc<State>>,
    Path(service): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = listed(&state, &service)?;
    let after: Vec<(&String, &Entry)> = all
        .jobs
        .iter()
        .filter(|(name, _)| q.page.is_empty() || name.as_str() > q.page.as_str())
        .collect();
    let mut jobs = serde_json::Map::new();
    for (name, (row, named)) in after.iter().take(PAGE) {
        let mut job = serde_json::Map::new();
        match row {
            Some(row) => {
                job.insert("status".into(), json!(oscar_status(row.update.phase)));
                let times = [
                    ("creation_time", Some(row.update.queued_at_ms)),
                    ("start_time", row.update.started_at_ms),
                    ("finish_time", row.update.finished_at_ms),
                ];
                for (key, ms) in times {
                    if let Some(t) = rfc3339(ms) {
                        job.insert(key.into(), json!(t));
                    }
                }
            }
            None => {
                job.insert("status".into(), json!("Pending"));
                if let Some(t) = rfc3339(named.as_ref().map(|d| d.received_at_ms)) {
                    job.insert("creation_time".into(), json!(t));
                }
            }
        }
        jobs.insert((*name).clone(), Value::Object(job));
    }
    let mut answer = json!({ "jobs": jobs });
    if after.len() > PAGE {
        answer["next_page"] = json!(after[PAGE - 1].0);
        answer["remaining_jobs"] = json!(after.len() - PAGE);
    }
    Ok(Json(answer))
}

/// `GET /system/logs/{service}/{job}`: the job's log, by the name its cluster gave it or its id.
pub async fn log(
    state: AxState<Arc<State>>,
    Path((service, name)): Path<(String, String)>,
) -> Result<String, ApiError> {
    let id = state
        .store
        .delegated(&service)?
        .into_iter()
        .find(|d| d.name == name)
        .map_or(name.clone(), |d| d.job);
    super::node_calls::job_log_text(&state, &id).await
}

fn finished(row: &Option<JobRow>) -> bool {
    row.as_ref()
        .is_some_and(|r| matches!(r.update.phase, JobPhase::Succeeded | JobPhase::Failed))
}

fn forget(
    state: &State,
    doomed: &[(Option<JobRow>, Option<DelegatedJob>)],
) -> Result<(), ApiError> {
    let ids: Vec<String> = doomed
        .iter()
        .filter_map(|(row, _)| row.as_ref().map(|r| r.update.id.to_string()))
        .collect();
    let names: Vec<DelegatedJob> = doomed.iter().filter_map(|(_, d)| d.clone()).collect();
    state.store.forget_jobs(&ids, &names)?;
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    all: Option<String>,
}

/// `DELETE /system/logs/{service}[?all=true]`: 204. As OSCAR, only jobs that succeeded unless
/// `all=true`, which takes every finished one; jobs still queued or running stay, and the
/// `x-spillway-kept` header counts them.
pub async fn delete_all(
    AxState(state): AxState<Arc<State>>,
    Path(service): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let every = q.all.as_deref() == Some("true");
    let all = listed(&state, &service)?;
    let (doomed, kept): (Vec<_>, Vec<_>) = all.jobs.into_values().partition(|(row, _)| {
        let succeeded = row
            .as_ref()
            .is_some_and(|r| r.update.phase == JobPhase::Succeeded);
        if every { finished(row) } else { succeeded }
    });
    forget(&state, &doomed)?;
    let unfinished = kept.iter().filter(|(row, _)| !finished(row)).count();
    tracing::info!(%service, deleted = doomed.len(), unfinished, "jobs deleted through the OSCAR API");
    let mut response = StatusCode::NO_CONTENT.into_response();
    if unfinished > 0
        && let Ok(v) = HeaderValue::from_str(&format!("{unfinished} unfinished"))
    {
        response.headers_mut().insert("x-spillway-kept", v);
    }
    Ok(response)
}

/// `DELETE /system/logs/{service}/{job}`: 204, 404 when the service has no such job, 409 when
/// it has not finished.
pub async fn delete_one(
    AxState(state): AxState<Arc<State>>,
    Path((service, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut all = listed(&state, &service)?;
    let Some(job) = all.jobs.remove(&name) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("service `{service}` has no job `{name}`"),
        ));
    };
    if !finished(&job.0) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "job `{name}` has not finished; Spillway does not stop jobs on request, so delete it once it has"
            ),
        ));
    }
    forget(&state, &[job])?;
    Ok(StatusCode::NO_CONTENT)
}
