//! `GET /v1/events` (the kept events, as JSON) and `GET /v1/events/stream` (server-sent events:
//! the kept ones after `Last-Event-ID` or `?after=`, then each as it happens).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use spillway_api::events::{FeedEvent, FeedKind, MISSED};
use tokio::sync::broadcast::error::RecvError;

use super::State;
use super::api_error::ApiError;

/// How long one stream stays open; the client resumes from its last id (a bound on what a
/// forgotten watcher holds).
const STREAM_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    /// Only events after this id.
    #[serde(default)]
    after: u64,
    kind: Option<FeedKind>,
}

pub async fn list(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<FeedQuery>,
) -> axum::Json<Vec<FeedEvent>> {
    let events = state
        .feed
        .since(q.after)
        .events
        .into_iter()
        .filter(|e| q.kind.is_none_or(|k| e.kind == k))
        .map(|e| (*e).clone())
        .collect();
    axum::Json(events)
}

pub async fn stream(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<FeedQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(permit) = state.feed.streams.clone().try_acquire_owned() else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} event streams are open already; close one, or list with GET /v1/events",
                super::feed::MAX_STREAMS
            ),
        )
        .into_response();
    };
    // A reconnecting EventSource says where it was.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(q.after);
    let (kept, rx) = state.feed.follow(after);
    let kind = q.kind;
    let wanted = move |e: &FeedEvent| kind.is_none_or(|k| e.kind == k);
    let missed = kept
        .missed
        .then(|| Ok(Event::default().event(MISSED).data(after.to_string())));
    let backlog: Vec<Result<Event, Infallible>> = missed
        .into_iter()
        .chain(
            kept.events
                .iter()
                .filter(|e| wanted(e))
                .map(|e| Ok(sse_event(e))),
        )
        .collect();
    let until = Instant::now() + STREAM_LIFETIME;
    let live = stream::unfold((Some(rx), permit), move |(rx, permit)| async move {
        let mut rx = rx?;
        loop {
            match tokio::time::timeout_at(until.into(), rx.recv()).await {
                Ok(Ok(e)) if wanted(&e) => return Some((Ok(sse_event(&e)), (Some(rx), permit))),
                Ok(Ok(_)) => continue,
                // Too slow to keep up: say so and end; the client resumes from its last id.
                Ok(Err(RecvError::Lagged(_))) => {
                    let notice = Event::default().event(MISSED).data("lagged");
                    return Some((Ok(notice), (None, permit)));
                }
                Ok(Err(RecvError::Closed)) | Err(_) => return None,
            }
        }
    });
    Sse::new(stream::iter(backlog).chain(live.boxed()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn sse_event(e: &FeedEvent) -> Event {
    let data = serde_json::to_string(e).unwrap_or_default();
    Event::default().id(e.id.to_string()).data(data)
}
