//! OSCAR's services, as `oscar-python` and `oscar-cli` drive them: `GET /system/services[/{name}]`
//! describes functions as OSCAR v4 services (each with its 64-digit service token), `POST` and `PUT
//! /system/services` take OSCAR's JSON service (its script inline), `DELETE
//! /system/services/{name}` removes one. A service goes through the same path as `spillway
//! apply`: it becomes an FDL document (JSON is YAML) with its script as a bundled file, parsed
//! and checked by the same parser, stored all or nothing. Answers are OSCAR's: 201 and 204 with
//! empty bodies, errors as plain text.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use spillway_api::ApplyRequest;
use spillway_proto::FunctionDef;
use spillway_proto::fdl::{LambdaTarget, ReplicaTarget, StorageRef};

use super::State;
use super::api_error::ApiError;
use super::apply::ApplyError;
use super::submit::function_record;

/// The name the bundled script gets in the document made from a service.
const SCRIPT: &str = "script.sh";

/// An OSCAR-shaped answer: a status and a plain-text body (empty for success).
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let body: String = body.into();
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// What was wrong with a service body, as OSCAR words it.
fn invalid(why: impl std::fmt::Display) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        format!("The service specification is not valid: {why}"),
    )
}

/// `POST /system/services`: 201, or 400 when a service of that name exists.
pub async fn create(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    put_service(&state, &body, Mode::Create)
}

/// `PUT /system/services`: 204, or 404 when there is no service of that name.
pub async fn update(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    put_service(&state, &body, Mode::Update)
}

/// `DELETE /system/services/{name}`: 204, or 404.
pub async fn delete(AxState(state): AxState<Arc<State>>, Path(name): Path<String>) -> Response {
    match state.delete_function(&name) {
        Ok(true) => {
            tracing::info!(service = %name, "service deleted through the OSCAR API");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
}

fn put_service(state: &State, body: &[u8], mode: Mode) -> Response {
    let service: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return invalid(format!("the body is not JSON: {e}")),
    };
    let (name, request) = match to_apply_request(service, &state.config.name) {
        Ok(r) => r,
        Err(why) => return invalid(why),
    };
    let exists = match state.store.function(&name) {
        Ok(found) => found.is_some(),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match (mode, exists) {
        (Mode::Create, true) => {
            return text(
                StatusCode::BAD_REQUEST,
                "A service with the provided name already exists",
            );
        }
        (Mode::Update, false) => return StatusCode::NOT_FOUND.into_response(),
        _ => {}
    }
    let outcome = match state.apply_functions(&request) {
        Ok(outcome) => outcome,
        Err(ApplyError::Invalid(why)) => return invalid(why),
        Err(ApplyError::Store(e)) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    for warning in &outcome.warnings {
        tracing::warn!(service = %name, "{warning}");
    }
    tracing::info!(service = %name, ?mode, "service applied through the OSCAR API");
    match mode {
        Mode::Create => StatusCode::CREATED.into_response(),
        Mode::Update => StatusCode::NO_CONTENT.into_response(),
    }
}

fn storage(refs: &[StorageRef]) -> Vec<Value> {
    refs.iter()
        .map(|r| {
            let mut v = json!({
                "storage_provider": r.provider.to_string(),
                "path": r.path.to_string(),
            });
            if !r.suffix.is_empty() {
                v["suffix"] = json!(r.suffix);
            }
            if !r.prefix.is_empty() {
                v["prefix"] = json!(r.prefix);
            }
            v
        })
        .collect()
}

/// A replica as OSCAR describes a federation member (Spillway's own kinds in the same form).
fn member(target: &ReplicaTarget, priority: u32) -> Value {
    match target {
        ReplicaTarget::Oscar {
            cluster_id,
            service_name,
        } => {
            json!({"type": "oscar", "cluster_id": cluster_id, "service_name": service_name, "priority": priority})
        }
        // Endpoint headers may be credentials: only their names.
        ReplicaTarget::Endpoint { url, headers } => {
            json!({"type": "endpoint", "url": url, "priority": priority, "headers": headers.keys().collect::<Vec<_>>()})
        }
        ReplicaTarget::Kubernetes {
            cluster_id,
            namespace,
            image,
        } => {
            json!({"type": "kubernetes", "cluster_id": cluster_id, "namespace": namespace, "image": image, "priority": priority})
        }
        ReplicaTarget::Lambda {
            target,
            asynchronous,
        } => {
            let mut v = match target {
                LambdaTarget::Function { name, region } => {
                    json!({"type": "lambda", "function_name": name, "region": region})
                }
                LambdaTarget::Url { url, iam } => {
                    json!({"type": "lambda", "function_url": url, "auth": if *iam { "iam" } else { "none" }})
                }
            };
            v["invocation_type"] = json!(if *asynchronous {
                "Event"
            } else {
                "RequestResponse"
            });
            v["priority"] = json!(priority);
            v
        }
    }
}

/// A function as OSCAR v4 describes a service. Secrets show their names only (OSCAR blanks
/// their values), storage credentials never appear (`storage_providers` is empty: OSCAR clients
/// take `minio.default` from `GET /system/config`), nor do the credentials of `clusters`.
fn service(state: &State, def: &FunctionDef, script: Option<String>) -> Value {
    let members: Vec<Value> = def
        .replicas
        .iter()
        .map(|r| member(&r.target, r.priority))
        .collect();
    let nodes: Vec<String> = state
        .store
        .nodes()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.running.contains(&def.name))
        .map(|n| n.name)
        .collect();
    let secrets: Map<String, Value> = def.secrets.keys().map(|k| (k.clone(), json!(""))).collect();
    let federation = def.federation.as_ref();
    let mut v = json!({
        "name": def.name,
        "cluster_id": def.cluster_id().unwrap_or(&state.config.name),
        "image": def.image.clone().unwrap_or_default(),
        "cpu": def.cpu.map(|c| c.to_string()).unwrap_or_default(),
        "memory": def.memory.map(|m| m.to_string()).unwrap_or_default(),
        "total_cpu": "",
        "total_memory": "",
        "enable_gpu": false,
        "enable_sgx": false,
        "image_prefetch": false,
        "synchronous": {"min_scale": 0, "max_scale": 0},
        "log_level": def.log_level.clone().unwrap_or_else(|| "INFO".into()),
        "alpine": false,
        "token": state.presigner.service_token(&def.name),
        "file_stage_in": false,
        "input": storage(&def.input),
        "output": storage(&def.output),
        "expose": {"min_scale": 0, "max_scale": 0, "cpu_threshold": 0, "rewrite_target": false, "default_command": false, "set_auth": false, "health_path": ""},
        "environment": {"variables": def.environment, "secrets": secrets},
        "annotations": {},
        "labels": {},
        "vo": "",
        "storage_providers": {},
        "owner": "cluster_admin",
        "interlink_node_name": "",
        "visibility": "private",
        "allowed_users": [],
        "isolation_level": "",
        "bucket_list": [],
        "mount": {"storage_provider": "", "path": ""},
        "volume_status": {"enabled": false},
        // OSCAR v4.0 read these at the top level; v4.1 reads `federation`.
        "replicas": members,
        "rescheduler_threshold": def.rescheduler_threshold.unwrap_or(0),
        "spillway": {"runtime": def.runtime.to_string(), "nodes": nodes},
    });
    if let Some(script) = script {
        v["script"] = json!(script);
    }
    if federation.is_some() || !def.replicas.is_empty() || def.rescheduler_threshold.is_some() {
        let mut f = json!({
            "group_id": federation.and_then(|f| f.group_id.clone()).unwrap_or_else(|| def.name.clone()),
            "topology": federation.and_then(|f| f.topology.clone()).unwrap_or_else(|| "none".into()),
            "members": members,
        });
        if let Some(d) = federation.and_then(|f| f.delegation.clone()) {
            f["delegation"] = json!(d);
        }
        if let Some(t) = def.rescheduler_threshold {
            f["rescheduler_threshold"] = json!(t);
        }
        v["federation"] = f;
    }
    v
}

/// `GET /system/services`
pub async fn list(AxState(state): AxState<Arc<State>>) -> Result<Json<Value>, ApiError> {
    let services: Vec<Value> = state
        .store
        .functions()?
        .iter()
        .map(|f| service(&state, &f.def, None))
        .collect();
    Ok(Json(Value::Array(services)))
}

/// `GET /system/services/{name}`: with the script's text and the service token, as OSCAR's.
pub async fn get(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = function_record(&state, &name)?;
    Ok(Json(service(&state, &record.def, record.script_text())))
}

/// An OSCAR service as the request `spillway apply` sends: a one-function FDL document under
/// the service's `cluster_id` (or this coordinator's name), its script as a bundled file, its
/// `storage_providers` and `clusters` where an FDL has them. The file is named after the
/// service, so diagnostics say which one.
fn to_apply_request(service: Value, this_cluster: &str) -> Result<(String, ApplyRequest), String> {
    let Value::Object(mut service) = service else {
        return Err("expected a JSON object (an OSCAR service)".into());
    };
    let name = match service.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(
            "Key: 'Service.Name' Error:Field validation for 'Name' failed on the 'required' tag"
                .into(),
        ),
    };
    let mut files = BTreeMap::new();
    match service.remove("script") {
        Some(Value::String(script)) => {
            // OSCAR normalises line ends, so a script written on Windows still runs.
            let script = script.replace("\r\n", "\n");
            files.insert(
                SCRIPT.to_owned(),
                base64::engine::general_purpose::STANDARD.encode(script),
            );
            service.insert("script".into(), Value::String(SCRIPT.into()));
        }
        Some(Value::Null) | None => {}
        Some(_) => return Err("`script` must be the script's text".into()),
    }
    // The client sends numbers where OSCAR wants strings (`cpu: 1.0`); the parser reads both.
    let cluster = match service.get("cluster_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => this_cluster.to_owned(),
    };
    // Fields the server fills in, sent back by clients that read a service and put it again.
    for generated in [
        "token",
        "owner",
        "namespace",
        "volume_status",
        "deployment",
        "cluster_id",
    ] {
        service.remove(generated);
    }
    let mut document = Map::new();
    for section in ["storage_providers", "clusters"] {
        if let Some(value) = service.remove(section)
            && !value.is_null()
        {
            document.insert(section.into(), value);
        }
    }
    let mut entry = Map::new();
    entry.insert(cluster, Value::Object(service));
    document.insert(
        "functions".into(),
        serde_json::json!({ "oscar": [Value::Object(entry)] }),
    );
    let text = serde_json::to_string_pretty(&Value::Object(document))
        .map_err(|e| format!("cannot restate the service: {e}"))?;
    let request = ApplyRequest {
        file: format!("{name}.json"),
        text,
        files,
    };
    Ok((name, request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(req: &ApplyRequest) -> spillway_proto::Fdl {
        let parsed = spillway_proto::fdl::parse_str(&req.file, &req.text, std::path::Path::new(""));
        let (fdl, _) = parsed.into_result().expect("a valid document");
        fdl
    }

    #[test]
    fn a_service_from_oscar_python_becomes_the_fdl_apply_reads() {
        let service = json!({
            "name": "cowsay",
            "cpu": "1.0",
            "memory": "1Gi",
            "image": "ghcr.io/grycap/cowsay",
            "script": "#!/bin/sh\r\necho hi\r\n",
            "log_level": "CRITICAL",
            "environment": {"Variables": {"INPUT_TYPE": "json"}},
            "token": "0123",
            "storage_providers": {},
        });
        let (name, req) = to_apply_request(service, "spillway").expect("converted");
        assert_eq!(
            (name.as_str(), req.file.as_str()),
            ("cowsay", "cowsay.json")
        );
        let script = base64::engine::general_purpose::STANDARD
            .decode(&req.files[SCRIPT])
            .expect("base64");
        assert_eq!(script, b"#!/bin/sh\necho hi\n");
        let fdl = parsed(&req);
        let f = &fdl.functions[0];
        assert_eq!(f.name, "cowsay");
        assert_eq!(f.cluster_id(), Some("spillway"));
        assert_eq!(f.environment["INPUT_TYPE"], "json");
        assert_eq!(f.script.as_deref(), Some(std::path::Path::new(SCRIPT)));
    }

    #[test]
    fn a_service_names_its_own_cluster_and_numbers_are_read_as_oscar_strings() {
        let service = json!({"name": "f", "cluster_id": "edge", "cpu": 0.5, "image": "alpine", "script": "true"});
        let fdl = parsed(&to_apply_request(service, "spillway").expect("converted").1);
        assert_eq!(fdl.functions[0].cluster_id(), Some("edge"));
        assert_eq!(
            fdl.functions[0].cpu,
            Some(spillway_proto::quantity::Millicores(500))
        );
    }

    #[test]
    fn a_body_that_is_not_a_named_service_is_refused_with_oscars_words() {
        for bad in [json!([]), json!({"image": "alpine"}), json!({"name": ""})] {
            let err = to_apply_request(bad, "spillway").expect_err("refused");
            assert!(!err.is_empty());
        }
        let err =
            to_apply_request(json!({"name": "f", "script": 3}), "spillway").expect_err("refused");
        assert!(err.contains("script"), "{err}");
    }
}
