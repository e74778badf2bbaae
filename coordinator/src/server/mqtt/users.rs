//! `spillway mqtt user add|list|remove` and `spillway mqtt ca`: the API side. Users are
//! people and devices on the embedded broker; each gets a random password (shown once) and the
//! topic filters the operator names.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::server::api_error::ApiError;
use crate::server::{State, now_ms};
use spillway_api::tokens::MqttUserRecord;
use spillway_api::{MqttUserCreated, MqttUserRequest};

/// Filters per direction, and the longest filter, a user may be given.
const MAX_FILTERS: usize = 64;
const MAX_FILTER_LEN: usize = 1024;

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// Checks a user request: a plain name, valid filters, at least one of them.
pub fn check(req: &MqttUserRequest) -> Result<(), String> {
    let name_ok = !req.name.is_empty()
        && req.name.len() <= 64
        && req
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err(format!(
            "MQTT user name `{}`: 1 to 64 letters, digits, `.`, `_` or `-`",
            req.name
        ));
    }
    if req.publish.is_empty() && req.subscribe.is_empty() {
        return Err("give the user at least one --publish or --subscribe topic filter".into());
    }
    for (what, filters) in [("publish", &req.publish), ("subscribe", &req.subscribe)] {
        if filters.len() > MAX_FILTERS {
            return Err(format!("at most {MAX_FILTERS} {what} filters per user"));
        }
        for f in filters {
            if f.len() > MAX_FILTER_LEN {
                return Err(format!("a {what} filter is at most {MAX_FILTER_LEN} bytes"));
            }
            spillway_proto::fdl::check_topic(f, true).map_err(|e| format!("{what} filter: {e}"))?;
        }
    }
    Ok(())
}

pub async fn create(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<MqttUserRequest>,
) -> Result<Json<MqttUserCreated>, ApiError> {
    check(&req).map_err(bad)?;
    let secret = spillway_link::token::JoinToken::generate(&[0; 32])
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let password = format!("spwm_{}", hex::encode(secret.secret));
    let record = MqttUserRecord {
        name: req.name.clone(),
        password_hash: hex::encode(Sha256::digest(password.as_bytes())),
        publish: req.publish,
        subscribe: req.subscribe,
        description: req.description,
        created_at_ms: now_ms(),
    };
    state.store.put_mqtt_user(&record)?;
    // Connections of a user replaced here see their new grants at once.
    state.mqtt_users.fetch_add(1, Ordering::Relaxed);
    Ok(Json(MqttUserCreated {
        name: req.name,
        password,
    }))
}

pub async fn list(
    AxState(state): AxState<Arc<State>>,
) -> Result<Json<Vec<MqttUserRecord>>, ApiError> {
    Ok(Json(state.store.mqtt_users()?))
}

pub async fn remove(
    AxState(state): AxState<Arc<State>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.store.remove_mqtt_user(&name)? {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no MQTT user `{name}`; see `spillway mqtt user list`"),
        ));
    }
    state.mqtt_users.fetch_add(1, Ordering::Relaxed);
    Ok(Json(serde_json::json!({ "removed": name })))
}

/// The mesh CA in PEM: what MQTT clients pass as `--cafile` for the TLS listener.
pub async fn ca(AxState(state): AxState<Arc<State>>) -> String {
    state.ca.cert_pem()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, publish: &[&str], subscribe: &[&str]) -> MqttUserRequest {
        MqttUserRequest {
            name: name.into(),
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            description: String::new(),
        }
    }

    #[test]
    fn user_requests_need_a_plain_name_and_valid_filters() {
        assert!(check(&req("camera-1", &["cameras/cam1/frames"], &[])).is_ok());
        assert!(check(&req("ops", &[], &["alerts/#"])).is_ok());
        let e = check(&req("a/b", &["x"], &[])).unwrap_err();
        assert!(e.contains("letters"), "{e}");
        let e = check(&req("x", &[], &[])).unwrap_err();
        assert!(e.contains("--publish"), "{e}");
        let e = check(&req("x", &["a/#/b"], &[])).unwrap_err();
        assert!(e.contains("publish filter"), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!("t/{i}")).collect();
        let mut r = req("x", &[], &[]);
        r.subscribe = many;
        assert!(check(&r).unwrap_err().contains("at most 64"));
    }
}
