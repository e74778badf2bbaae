//! `/v1/ca` (the trusted CAs and where each node stands) and `/v1/admin/ca/{rotate,retire}`:
//! rotating the mesh CA. Rotating and retiring are the admin's.

use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use spillway_api::ca::{CaStatus, CaSummary, NodeCa, RetireRequest};

use super::{CaError, Trust};
use crate::server::State;
use crate::server::api_error::ApiError;

/// Nodes named in a refusal; the rest are counted.
const NAMED: usize = 10;

impl From<CaError> for ApiError {
    fn from(e: CaError) -> Self {
        let status = match e {
            CaError::Rotating | CaError::NotRotating => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// `GET /v1/ca`.
pub async fn status(AxState(state): AxState<Arc<State>>) -> Result<Json<CaStatus>, ApiError> {
    Ok(Json(current(&state)?))
}

/// `POST /v1/admin/ca/rotate`: a new CA signs from now on, cross-signed by the current one.
/// Nodes certified before are labelled as the old CA's, durably, before anything changes.
pub async fn rotate(AxState(state): AxState<Arc<State>>) -> Result<Json<CaStatus>, ApiError> {
    let worker = state.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let old = hex::encode(worker.ca.fingerprint());
        if worker.ca.trust().retiring.is_some() {
            return Err(CaError::Rotating.into());
        }
        worker.store.label_issuers(&old)?;
        worker.ca.rotate()?;
        let trust = worker.ca.trust();
        tracing::warn!(
            new = %hex::encode(trust.signing.fingerprint()),
            old = %old,
            "mesh CA rotated: the new CA signs from now on, both are trusted until `spillway admin ca retire`"
        );
        Ok(())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(current(&state)?))
}

/// `POST /v1/admin/ca/retire`: only the new CA is trusted from now on. Refused while a node
/// still depends on the old one, unless forced; a forced retirement closes those nodes' links.
pub async fn retire(
    AxState(state): AxState<Arc<State>>,
    Json(req): Json<RetireRequest>,
) -> Result<Json<CaStatus>, ApiError> {
    let before = current(&state)?;
    if before.retiring.is_none() {
        return Err(CaError::NotRotating.into());
    }
    let held: Vec<(String, String)> = before
        .nodes
        .iter()
        .filter_map(|n| n.holds_back().map(|why| (n.node.clone(), why)))
        .collect();
    if !held.is_empty() && !req.force {
        let mut named: Vec<String> = held
            .iter()
            .take(NAMED)
            .map(|(_, why)| why.clone())
            .collect();
        if held.len() > NAMED {
            named.push(format!("and {} more", held.len() - NAMED));
        }
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "the old CA cannot be retired yet: {} node(s) still depend on it: {}. Wait for them to connect (each renews and takes the new CA at once; `spillway admin ca status` shows who is left), or retire anyway with --force: those nodes must then join again",
                held.len(),
                named.join("; ")
            ),
        ));
    }
    let worker = state.clone();
    tokio::task::spawn_blocking(move || worker.ca.retire())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    tracing::warn!(
        forced_out = held.len(),
        "the old mesh CA is retired: only the new one is trusted"
    );
    for (node, _) in &held {
        tracing::warn!(
            node,
            "the CA this node depends on was retired: it must join again"
        );
        if let Some(conn) = state.view.connection(node) {
            let reason = format!(
                "the mesh CA this node depends on was retired: join again with a token made for it (spillway token create --node {node})"
            );
            conn.close(3u32.into(), reason.as_bytes());
        }
    }
    Ok(Json(current(&state)?))
}

/// The CAs and, during a rotation, every node's standing.
fn current(state: &State) -> Result<CaStatus, ApiError> {
    let trust = state.ca.trust();
    let signing = hex::encode(trust.signing.fingerprint());
    let nodes = match &trust.retiring {
        None => Vec::new(),
        Some(_) => state
            .store
            .nodes()?
            .into_iter()
            .map(|n| NodeCa {
                certified_by_signing: n.issuer.as_deref() == Some(signing.as_str()),
                trusts_signing: n.trusted_cas.contains(&signing),
                connected: state.view.connection(&n.name).is_some(),
                node: n.name,
            })
            .collect(),
    };
    Ok(CaStatus {
        signing: summary(trust.signing.cert_der()),
        retiring: trust.retiring.as_ref().map(|r| summary(&r.cert_der)),
        nodes,
        pem: Trust::pem(&trust),
    })
}

fn summary(der: &[u8]) -> CaSummary {
    CaSummary {
        subject: super::cert::subject(der),
        fingerprint: hex::encode(spillway_link::identity::fingerprint(der)),
    }
}
