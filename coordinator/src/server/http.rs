//! The HTTP API the `spillway` CLI speaks (axum). Every route but `/health` and `/metrics`
//! needs the admin bearer token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spillway_proto::fdl::StorageRef;
use spillway_proto::load::NodeHealth;
use spillway_proto::wire::{self, MAX_STREAM_FRAME, Response as AgentResponse};

use super::api_error::{ApiError, not_found};
use super::apply::ApplyError;
use super::metrics::inc;
use super::node_calls::{ask, job_log_text, job_row, store_on};
use super::scope;
use super::store::{FunctionRecord, JobRow, NodeRecord};
use super::submit::{function_record, no_function, submit};
use super::{State, now_ms};
use spillway_api::events::FeedKind;
use spillway_api::tokens::{ApiTokenRecord, Scope, TokenGrant, TokenListing};
use spillway_api::*;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The body a small JSON request may have (tokens, labels, lists).
const CONTROL_BODY: usize = 64 << 10;
/// An OSCAR service with its script inline: as large as an FDL file may be.
const SERVICE_BODY: usize = 4 << 20;
/// The body of a request that carries a file or an FDL with its scripts and modules.
const FILE_BODY: usize = MAX_STREAM_FRAME - 4096;

/// How long each kind of request may take, body included.
mod limit {
    use std::time::Duration;
    pub const PROBE: Duration = Duration::from_secs(10);
    pub const CONTROL: Duration = Duration::from_secs(90);
    /// Moving up to 64 MiB over a slow link to or from a node.
    pub const TRANSFER: Duration = Duration::from_secs(600);
    /// `/run` waits for the job (at most an hour, see `invoke::run`).
    pub const RUN: Duration = Duration::from_secs(3_700);
    /// A backup of a large state (many blobs) to a slow client.
    pub const BACKUP: Duration = Duration::from_secs(3_600);
}

pub fn router(state: Arc<State>) -> Router {
    let within = |state: &Arc<State>, limit: std::time::Duration| {
        middleware::from_fn_with_state(
            state.clone(),
            move |s: AxState<Arc<State>>, req: Request, next: Next| time_limit(s, limit, req, next),
        )
    };
    let control = Router::new()
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/releases", get(super::upgrades::api::list_releases))
        .route("/v1/ca", get(super::ca::api::status))
        .route("/v1/admin/ca/rotate", post(super::ca::api::rotate))
        .route("/v1/admin/ca/retire", post(super::ca::api::retire))
        .route(
            "/v1/upgrades",
            get(super::upgrades::api::list).post(super::upgrades::api::start),
        )
        .route(
            "/v1/upgrades/{id}/cancel",
            post(super::upgrades::api::cancel),
        )
        .route("/v1/nodes/{name}", get(get_node).delete(delete_node))
        .route("/v1/nodes/{name}/files", get(list_files))
        .route("/v1/nodes/{name}/labels", put(label_node))
        .route("/v1/nodes/{name}/cordon", put(cordon_node))
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            get(get_function).delete(delete_function),
        )
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/events", get(super::feed_api::list))
        .route("/v1/events/stream", get(super::feed_api::stream))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/log", get(job_log))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/revoke", post(revoke_tokens))
        .route(
            "/v1/api-tokens",
            post(create_api_token).get(list_api_tokens),
        )
        .route("/v1/api-tokens/revoke", post(revoke_api_tokens))
        .route(
            "/v1/mqtt/users",
            post(super::mqtt::users::create).get(super::mqtt::users::list),
        )
        .route("/v1/mqtt/users/{name}", delete(super::mqtt::users::remove))
        .route("/v1/mqtt/ca", get(super::mqtt::users::ca))
        .route(
            "/system/services",
            get(super::oscar_services::list)
                .post(super::oscar_services::create)
                .put(super::oscar_services::update)
                // A service carries its script: as large as an FDL file may be.
                .layer(DefaultBodyLimit::max(SERVICE_BODY)),
        )
        .route(
            "/system/services/{name}",
            get(super::oscar_services::get).delete(super::oscar_services::delete),
        )
        .route("/system/config", get(super::oscar_system::config))
        .route("/system/config/", get(super::oscar_system::config))
        .route("/system/status", get(super::oscar_system::status))
        .route("/system/info", get(super::oscar_system::info))
        .route(
            "/system/logs/{service}",
            get(super::oscar_jobs::list).delete(super::oscar_jobs::delete_all),
        )
        .route(
            "/system/logs/{service}/{job}",
            get(super::oscar_jobs::log).delete(super::oscar_jobs::delete_one),
        )
        .layer(DefaultBodyLimit::max(CONTROL_BODY))
        .layer(within(&state, limit::CONTROL));
    let transfers = Router::new()
        .route(
            "/v1/nodes/{name}/files/{*path}",
            get(get_file).put(put_file),
        )
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/job/{name}", post(super::invoke::job))
        .route("/events", post(super::events::receive))
        .route("/v1/apply", post(apply_fdl))
        .layer(DefaultBodyLimit::max(FILE_BODY))
        .layer(within(&state, limit::TRANSFER));
    let run = Router::new()
        .route("/run/{name}", post(super::invoke::run))
        .route("/v1/functions/{name}/run", post(super::invoke::run_raw))
        .layer(DefaultBodyLimit::max(FILE_BODY))
        .layer(within(&state, limit::RUN));
    // Streamed to disk within its own bound (`upgrades::api::receive`).
    let releases = Router::new()
        .route(
            "/v1/releases/{version}",
            put(super::upgrades::api::put_binary),
        )
        .layer(DefaultBodyLimit::disable())
        .layer(within(&state, limit::TRANSFER));
    let backups = Router::new()
        .route("/v1/admin/backup", post(super::backup_api::backup))
        .layer(DefaultBodyLimit::max(CONTROL_BODY))
        .layer(within(&state, limit::BACKUP));
    let api = control
        .merge(transfers)
        .merge(run)
        .merge(releases)
        .merge(backups)
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    // Presigned: the signature in the query is the credential, checked before any body is read
    // (each handler reads its body itself, within its own bound).
    let presigned = Router::new()
        .route("/v1/blobs/{digest}", get(super::oscar_api::get_blob))
        .route(
            "/v1/callbacks/{job}/{attempt}",
            post(super::oscar_api::callback),
        )
        .route(
            "/v1/outputs/{job}/{attempt}/{*name}",
            put(super::oscar_api::put_output),
        )
        .layer(within(&state, limit::TRANSFER));
    let probes = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(within(&state, limit::PROBE));
    probes.merge(presigned).merge(api).with_state(state)
}

/// Cuts a request off at its route's time limit (a slow upload, a node that does not answer).
async fn time_limit(
    AxState(state): AxState<Arc<State>>,
    limit: std::time::Duration,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            inc(&state.metrics.api_timeouts);
            ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request took longer than this route's limit of {} s; send it again, over a faster link or with a smaller body",
                    limit.as_secs()
                ),
            )
            .into_response()
        }
    }
}

/// Who is calling: the admin token or a scoped API token as a bearer (for OSCAR clients also as
/// the password of basic authentication, user `oscar` unless configured), or a function's
/// service token on `/job/{name}` and `/run/{name}`, as OSCAR accepts them. Then whether that
/// caller's scope allows the route ([`scope`]): 401 for no or an unknown token, 403 for a known
/// one that may not do this.
async fn authorize(AxState(state): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let need = scope::need(req.method(), &path);
    let caller = if let Some(token) = auth.strip_prefix("Bearer ") {
        let token = token.trim();
        caller_of(&state, token).or_else(|| {
            let function = path
                .strip_prefix("/job/")
                .or_else(|| path.strip_prefix("/run/"))
                .filter(|f| !f.contains('/'))?;
            state
                .presigner
                .is_service_token(function, token)
                .then(|| Scope::Invoker {
                    functions: vec![function.to_owned()],
                })
        })
    } else if let Some(basic) = auth.strip_prefix("Basic ") {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| {
                let (user, password) = pair.split_once(':')?;
                (user == state.config.oscar_user)
                    .then(|| caller_of(&state, password))
                    .flatten()
            })
    } else {
        None
    };
    match caller {
        Some(scope) if scope::allows(&scope, &need) => next.run(req).await,
        Some(scope) => {
            inc(&state.metrics.api_forbidden);
            ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "this token's scope ({}) does not allow {} {path}; use a token whose scope does (spillway api-token create --scope …)",
                    scope.describe(),
                    req.method()
                ),
            )
            .into_response()
        }
        None => {
            inc(&state.metrics.api_unauthorized);
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token: use the token in the coordinator's client.toml (spillway --config FILE, or SPILLWAY_TOKEN), or a token from `spillway api-token create`".into(),
            )
            .into_response()
        }
    }
}

/// The scope of an admin or API token (`None` for anything else).
fn caller_of(state: &State, token: &str) -> Option<Scope> {
    let digest = Sha256::digest(token.trim().as_bytes());
    if digest[..] == state.admin_hash[..] {
        return Some(Scope::Admin);
    }
    state
        .store
        .api_token(&hex::encode(digest))
        .ok()
        .flatten()
        .map(|t| t.scope)
}

async fn metrics(AxState(state): AxState<Arc<State>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            spillway_plumbing::metrics::CONTENT_TYPE,
        )],
        state.render_metrics(),
    )
}

fn node_view(state: &State, r: NodeRecord) -> NodeView {
    let live = state.view.node(&r.name);
    let condition = live.as_ref().map(|l| l.condition).unwrap_or_default();
    NodeView {
        disk_full: condition.disk_full,
        cordoned: r.cordoned,
        disk_free_bytes: (condition != Default::default()).then_some(condition.disk_free_bytes),
        health: live.as_ref().map_or(NodeHealth::Down, |l| l.health),
        connected: live.as_ref().is_some_and(|l| l.connected),
        silent_for_ms: live
            .as_ref()
            .and_then(|l| l.silent_for)
            .map(|d| d.as_millis() as u64),
        load: live.and_then(|l| l.report),
        name: r.name,
        address: r.last_address,
        cluster_id: r.cluster_id,
        labels: r.labels,
        proposed_labels: r.proposed_labels,
        proposed_cluster_id: r.proposed_cluster_id,
        arch: r.arch,
        agent_version: r.agent_version,
        capacity: r.capacity,
        running: r.running,
        refused: r.refused,
        joined_at_ms: r.joined_at_ms,
        last_seen_ms: r.last_seen_ms,
        cert_expires_at_ms: r.cert_expires_at_ms,
        certificate_renewals: r.renewals,
    }
}

async fn list_nodes(AxState(state): AxState<Arc<State>>) -> ApiResult<Vec<NodeView>> {
    let nodes = state.store.nodes()?;
    Ok(Json(
        nodes.into_iter().map(|r| node_view(&state, r)).collect(),
    ))
}

fn node_record(state: &State, name: &str) -> Result<NodeRecord, ApiError> {
    state.store.node(name)?.ok_or_else(|| no_such_node(name))
}

fn no_such_node(name: &str) -> ApiError {
    not_found(format!(
        "no node named `{name}`; list them with `spillway get nodes`"
    ))
}

async fn get_node(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> ApiResult<NodeView> {
    let r = node_record(&state, &name)?;
    Ok(Json(node_view(&state, r)))
}

async fn delete_node(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.remove_node(&name)? {
        state
            .feed
            .publish(FeedKind::Node, &name, "Removed", None, None, String::new());
    } else {
        return Err(not_found(format!("no node named `{name}`")));
    }
    if let Some(conn) = state.view.connection(&name) {
        conn.close(3u32.into(), b"removed from the mesh");
    }
    Ok(StatusCode::NO_CONTENT)
}

fn function_view(state: &State, f: FunctionRecord) -> FunctionView {
    let nodes = state
        .store
        .nodes()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.running.contains(&f.def.name))
        .map(|n| n.name)
        .collect();
    let show = |s: &StorageRef| format!("{}:{}", s.provider, s.path);
    FunctionView {
        name: f.def.name.clone(),
        runtime: f.def.runtime.to_string(),
        cluster_id: f.def.cluster_id().map(str::to_owned),
        node_selector: f.def.node_selector.clone(),
        labels: f.def.labels.clone(),
        inputs: f.def.input.iter().map(show).collect(),
        outputs: f.def.output.iter().map(show).collect(),
        nodes,
        source: f.source.clone(),
        applied_at_ms: f.applied_at_ms,
        definition: serde_json::to_value(f.def.redacted()).unwrap_or_default(),
    }
}

async fn list_functions(AxState(state): AxState<Arc<State>>) -> ApiResult<Vec<FunctionView>> {
    let functions = state.store.functions()?;
    Ok(Json(
        functions
            .into_iter()
            .map(|f| function_view(&state, f))
            .collect(),
    ))
}

async fn get_function(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> ApiResult<FunctionView> {
    let f = function_record(&state, &name)?;
    Ok(Json(function_view(&state, f)))
}

async fn delete_function(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.delete_function(&name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_function(&name))
    }
}

async fn apply_fdl(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<ApplyRequest>,
) -> ApiResult<ApplyOutcome> {
    let outcome = state.apply_functions(&req).map_err(|e| match e {
        ApplyError::Invalid(m) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, m),
        ApplyError::Store(e) => e.into(),
    })?;
    Ok(Json(outcome))
}

#[derive(Debug, Deserialize)]
struct JobFilter {
    node: Option<String>,
    function: Option<String>,
    limit: Option<usize>,
    /// Jobs of the nodes whose labels match (`get jobs -l zone=shed`).
    selector: Option<String>,
}

fn job_view(r: JobRow) -> JobView {
    JobView {
        node: r.node,
        job: r.update,
        updated_at_ms: r.updated_at_ms,
        ran_on: r.ran_on,
    }
}

async fn list_jobs(
    AxState(state): AxState<Arc<State>>,
    Query(filter): Query<JobFilter>,
) -> ApiResult<Vec<JobView>> {
    let nodes: Option<std::collections::BTreeSet<String>> = match &filter.selector {
        None => None,
        Some(text) => {
            let selector: spillway_api::selector::Selector = text
                .parse()
                .map_err(|e: String| ApiError(StatusCode::BAD_REQUEST, e))?;
            Some(
                state
                    .store
                    .nodes()?
                    .into_iter()
                    .filter(|n| selector.matches(&n.labels))
                    .map(|n| n.name)
                    .collect(),
            )
        }
    };
    let mut rows: Vec<JobRow> = state
        .store
        .jobs()?
        .into_iter()
        .filter(|r| filter.node.as_ref().is_none_or(|n| *n == r.node))
        .filter(|r| nodes.as_ref().is_none_or(|set| set.contains(&r.node)))
        .filter(|r| {
            filter
                .function
                .as_ref()
                .is_none_or(|f| *f == r.update.function)
        })
        .collect();
    rows.sort_by_key(|r| r.update.queued_at_ms);
    let limit = filter.limit.unwrap_or(100);
    let skip = rows.len().saturating_sub(limit);
    Ok(Json(rows.into_iter().skip(skip).map(job_view).collect()))
}

async fn get_job(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> ApiResult<JobView> {
    Ok(Json(job_view(job_row(&state, &id)?)))
}

async fn job_log(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<String, ApiError> {
    job_log_text(&state, &id).await
}

async fn get_file(
    AxState(state): AxState<Arc<State>>,
    Path((node, path)): Path<(String, String)>,
) -> Result<Vec<u8>, ApiError> {
    node_record(&state, &node)?;
    match ask(&state, &node, wire::Request::GetFile { path }).await? {
        AgentResponse::File(bytes) => Ok(bytes),
        _ => Err(ApiError(
            StatusCode::BAD_GATEWAY,
            "unexpected answer".into(),
        )),
    }
}

async fn put_file(
    AxState(state): AxState<Arc<State>>,
    Path((node, path)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Stored> {
    node_record(&state, &node)?;
    store_on(&state, &node, path, body.to_vec()).await.map(Json)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

async fn list_files(
    AxState(state): AxState<Arc<State>>,
    Path(node): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Listing> {
    node_record(&state, &node)?;
    match ask(&state, &node, wire::Request::ListFiles { path: q.prefix }).await? {
        AgentResponse::Listing(files) => Ok(Json(Listing { node, files })),
        _ => Err(ApiError(
            StatusCode::BAD_GATEWAY,
            "unexpected answer".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct InvokeQuery {
    node: Option<String>,
    file: String,
}

/// Drops the body into the function's input folder on a node that runs it (the least busy one
/// unless `node` is given) and returns the job id that file makes there.
async fn invoke(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    Query(q): Query<InvokeQuery>,
    body: Bytes,
) -> ApiResult<Invoked> {
    submit(&state, &name, &q.file, q.node, body).await.map(Json)
}

async fn create_token(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<TokenCreated> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let count = req.count.unwrap_or(1);
    if count == 0 || count > 100_000 {
        return Err(bad(format!(
            "count must be between 1 and 100000, not {count}"
        )));
    }
    if req.ttl_secs == 0 || req.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(bad(format!(
            "a join token lives between 1 s and {} days, not {} s",
            MAX_TOKEN_TTL_SECS / 86_400,
            req.ttl_secs
        )));
    }
    if let Some(node) = &req.node {
        if !spillway_link::identity::valid_node_name(node) {
            return Err(bad(format!(
                "`{node}` cannot be a node name: use letters, digits, `-` and `.`"
            )));
        }
        if count > 1 {
            return Err(bad(
                "a token made for one node (--node) admits one node: count must be 1".into(),
            ));
        }
    }
    if let Some(labels) = &req.labels {
        check_labels(labels).map_err(bad)?;
    }
    if let Some(c) = &req.cluster_id {
        check_label_value("cluster id", c).map_err(bad)?;
    }
    let grant = TokenGrant {
        node: req.node,
        labels: req.labels,
        cluster_id: req.cluster_id,
    };
    let (mut tokens, expires_at_ms) = state
        .create_tokens(count, req.ttl_secs, &req.description, &grant)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let token = tokens.remove(0);
    Ok(Json(TokenCreated {
        token,
        more: tokens,
        expires_at_ms,
        coordinator: state.advertised_quic(),
    }))
}

/// A join token lives at most this long: a year covers flashing cards in advance.
const MAX_TOKEN_TTL_SECS: u64 = 366 * 86_400;

/// Label keys and values: short, printable, and safe to show (they also select functions).
fn check_label_value(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{}` must be 1 to 63 letters, digits, `-`, `_`, `.` or `/`",
            value.escape_debug()
        ))
    }
}

fn check_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > 64 {
        return Err(format!("{} labels; a node has at most 64", labels.len()));
    }
    for (k, v) in labels {
        check_label_value("label key", k)?;
        check_label_value("label value", v)?;
    }
    Ok(())
}

async fn list_tokens(AxState(state): AxState<Arc<State>>) -> ApiResult<Vec<TokenListing>> {
    Ok(Json(state.store.token_listing()?))
}

async fn revoke_tokens(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<TokenRevoke>,
) -> ApiResult<TokensRevoked> {
    let id = token_id(&req.id, "token")?;
    let revoked = state.store.revoke_tokens(&id, now_ms())?;
    if revoked == 0 {
        return Err(not_found(format!(
            "no unused token with id {id}; see `spillway token list`"
        )));
    }
    Ok(Json(TokensRevoked { revoked }))
}

/// A token id as `token list` and `api-token list` show it: at least 6 hex digits.
fn token_id(id: &str, list: &str) -> Result<String, ApiError> {
    if id.len() < 6 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "give at least 6 hex digits of the token's id (the ID column of `spillway {list} list`)"
            ),
        ));
    }
    Ok(id.to_ascii_lowercase())
}

async fn create_api_token(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<ApiTokenRequest>,
) -> ApiResult<ApiTokenCreated> {
    let scope = Scope::parse(&req.scope, req.functions)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let secret = spillway_link::token::JoinToken::generate(&[0; 32])
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let token = format!("spwa_{}", hex::encode(secret.secret));
    let record = ApiTokenRecord {
        scope,
        description: req.description,
        created_at_ms: now_ms(),
        revoked_at_ms: None,
    };
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    state.store.put_api_token(&hash, &record)?;
    Ok(Json(ApiTokenCreated {
        token,
        id: hash.chars().take(super::store::TOKEN_ID_LEN).collect(),
        scope: record.scope.describe(),
    }))
}

async fn list_api_tokens(
    AxState(state): AxState<Arc<State>>,
) -> ApiResult<Vec<spillway_api::tokens::ApiTokenListing>> {
    Ok(Json(state.store.api_token_listing()?))
}

async fn revoke_api_tokens(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<TokenRevoke>,
) -> ApiResult<TokensRevoked> {
    let id = token_id(&req.id, "api-token")?;
    let revoked = state.store.revoke_api_tokens(&id, now_ms())?;
    if revoked == 0 {
        return Err(not_found(format!(
            "no live API token with id {id}; see `spillway api-token list`"
        )));
    }
    Ok(Json(TokensRevoked { revoked }))
}

/// The operator's labels and cluster for a node: they decide which functions it receives.
/// `spillway cordon|uncordon NODE`: in or out of placement; jobs there carry on.
async fn cordon_node(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    Json(change): Json<spillway_api::Cordon>,
) -> ApiResult<NodeView> {
    let updated = state
        .store
        .set_node_cordoned(&name, change.cordoned)?
        .ok_or_else(|| no_such_node(&name))?;
    tracing::info!(node = %name, cordoned = change.cordoned, "node cordon changed");
    let reason = if change.cordoned {
        "Cordoned"
    } else {
        "Uncordoned"
    };
    state
        .feed
        .publish(FeedKind::Node, &name, reason, None, None, String::new());
    Ok(Json(node_view(&state, updated)))
}

async fn label_node(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
    Json(change): Json<LabelChange>,
) -> ApiResult<NodeView> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let node = node_record(&state, &name)?;
    let mut labels = if change.adopt_proposed {
        node.proposed_labels.clone()
    } else {
        node.labels.clone()
    };
    labels.extend(change.set.clone());
    for k in &change.remove {
        labels.remove(k);
    }
    check_labels(&labels).map_err(bad)?;
    let cluster_id = if change.clear_cluster_id {
        Some(None)
    } else if let Some(c) = &change.cluster_id {
        check_label_value("cluster id", c).map_err(bad)?;
        Some(Some(c.clone()))
    } else if change.adopt_proposed {
        Some(node.proposed_cluster_id.clone())
    } else {
        None
    };
    let updated = state
        .store
        .set_node_labels(&name, labels, cluster_id)?
        .ok_or_else(|| not_found(format!("no node named `{name}`")))?;
    state.deployments.send_modify(|g| *g += 1);
    Ok(Json(node_view(&state, updated)))
}
