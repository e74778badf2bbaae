//! OSCAR's `/system` descriptions of the cluster: `GET /system/config` (what storage clients
//! connect to), `GET /system/status` (OSCAR's `StatusInfo`, which OSCAR's `load-based` and
//! `topsis` delegation read to choose a cluster) and `GET /system/info`.
//!
//! In `StatusInfo` every quantity is a whole number: "cores" are millicores and memory is bytes,
//! as OSCAR's Go types decode them (a float there fails the whole decode).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxState;
use serde_json::{Value, json};
use spillway_proto::load::NodeHealth;

use super::State;
use super::api_error::ApiError;

/// `GET /system/config` (and `/system/config/`, which `oscar-python`'s storage client asks).
/// `minio_provider` is the store the operator named for OSCAR clients
/// (`[oscar.minio_provider]`), with the keys meant for them; without one there is none, and the
/// answer says so instead of inventing an endpoint.
pub async fn config(AxState(state): AxState<Arc<State>>) -> Json<Value> {
    let mut answer = json!({
        "config": {
            "name": state.config.name,
            "namespace": "spillway",
            "services_namespace": "spillway",
            "gpu_available": false,
            "interLink_available": false,
            "serverless_backend": "spillway",
            "yunikorn_enable": false,
            "kueue_enable": false,
            "volume_enable": false,
            "minio_quota_enabled": false,
            "oidc_groups": [],
        },
        "allowed_image_repositories": [],
    });
    match &state.config.oscar_minio {
        Some(m) => {
            answer["minio_provider"] = json!({
                "endpoint": m.endpoint,
                "verify": m.verify,
                "region": m.region,
                "access_key": m.access_key,
                "secret_key": m.secret_key.clone().unwrap_or_default(),
            });
        }
        None => {
            answer["spillway"] = json!({
                "minio_provider": "none: this coordinator has no default S3-compatible store for OSCAR clients; its operator can name one in coordinator.toml [oscar.minio_provider]",
            });
        }
    }
    Json(answer)
}

/// One node's CPU (millicores) and memory (bytes): what it offers, uses and has promised.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    capacity_millis: i64,
    usage_millis: i64,
    request_millis: i64,
    capacity_bytes: i64,
    usage_bytes: i64,
    request_bytes: i64,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `GET /system/status`: OSCAR's `StatusInfo`. A node's capacity is what its agent offers to
/// functions; its usage comes from its last load report (the whole machine's CPU and memory);
/// its requests are the running jobs times what their functions ask for per job.
pub async fn status(AxState(state): AxState<Arc<State>>) -> Result<Json<Value>, ApiError> {
    let demands: BTreeMap<String, (u64, u64)> = state
        .store
        .functions()?
        .into_iter()
        .map(|f| {
            let cpu = f.def.cpu.map_or(0, |c| c.0);
            let memory = f.def.memory.map_or(0, |m| m.0);
            (f.def.name, (cpu, memory))
        })
        .collect();
    let mut nodes = Vec::new();
    let mut ready_usage = Vec::new();
    let mut running_jobs = 0u64;
    for n in state.store.nodes()? {
        let live = state.view.node(&n.name);
        let ready = live.as_ref().is_some_and(|l| l.health == NodeHealth::Ready);
        let report = live.and_then(|l| l.report);
        let mut u = Usage {
            capacity_millis: int(n.capacity.cpu_millis),
            capacity_bytes: int(n.capacity.memory_bytes),
            ..Usage::default()
        };
        if let Some(r) = &report {
            u.usage_millis = int(n
                .capacity
                .cpu_millis
                .saturating_mul(u64::from(r.cpu_permille))
                / 1000);
            u.usage_bytes = int(r.memory_used).min(u.capacity_bytes);
            for f in &r.functions {
                let (cpu, memory) = demands.get(&f.name).copied().unwrap_or_default();
                let running = u64::from(f.running);
                running_jobs = running_jobs.saturating_add(running);
                u.request_millis = u
                    .request_millis
                    .saturating_add(int(cpu.saturating_mul(running)));
                u.request_bytes = u
                    .request_bytes
                    .saturating_add(int(memory.saturating_mul(running)));
            }
        }
        if ready {
            ready_usage.push(u);
        }
        // OSCAR leaves zero quantities out of a node's entry; readers take them as 0.
        let quantities = |pairs: [(&str, i64); 3]| -> Value {
            Value::Object(
                pairs
                    .into_iter()
                    .filter(|(_, v)| *v != 0)
                    .map(|(k, v)| (k.to_owned(), json!(v)))
                    .collect(),
            )
        };
        nodes.push(json!({
            "name": n.name,
            "cpu": quantities([("capacity_cores", u.capacity_millis), ("usage_cores", u.usage_millis), ("request_cores", u.request_millis)]),
            "memory": quantities([("capacity_bytes", u.capacity_bytes), ("usage_bytes", u.usage_bytes), ("request_bytes", u.request_bytes)]),
            "gpu": 0,
            "is_interlink": false,
            "status": if ready { "Ready" } else { "NotReady" },
            "conditions": [{"type": "Ready", "status": ready}],
        }));
    }
    let free = |f: fn(&Usage) -> i64| ready_usage.iter().map(f).map(|v| v.max(0));
    let metrics = json!({
        "cpu": {
            "total_free_cores": free(|u| u.capacity_millis - u.usage_millis).sum::<i64>(),
            "max_free_on_node_cores": free(|u| u.capacity_millis - u.usage_millis).max().unwrap_or(0),
            "total_schedulable_cores": free(|u| u.capacity_millis - u.request_millis).sum::<i64>(),
            // OSCAR's name for the most one node can still schedule.
            "total_schedulable_on_node_cores": free(|u| u.capacity_millis - u.request_millis).max().unwrap_or(0),
        },
        "memory": {
            "total_free_bytes": free(|u| u.capacity_bytes - u.usage_bytes).sum::<i64>(),
            "max_free_on_node_bytes": free(|u| u.capacity_bytes - u.usage_bytes).max().unwrap_or(0),
            "total_schedulable_bytes": free(|u| u.capacity_bytes - u.request_bytes).sum::<i64>(),
            "max_schedulable_on_node_bytes": free(|u| u.capacity_bytes - u.request_bytes).max().unwrap_or(0),
        },
        "gpu": {"total_gpu": 0},
    });
    let jobs = state.store.jobs()?.len();
    Ok(Json(json!({
        "cluster": {"nodes_count": ready_usage.len(), "metrics": metrics, "nodes": nodes},
        "oscar": {
            "deployment_name": state.config.name,
            "ready": true,
            "deployment": {
                "available_replicas": 1,
                "ready_replicas": 1,
                "replicas": 1,
                "creation_timestamp": "1970-01-01T00:00:00Z",
                "strategy": "",
                "labels": {},
            },
            "jobs_count": jobs,
            "pods": {"total": running_jobs, "states": {"Running": running_jobs}},
            "oidc": {"enabled": false, "issuers": [], "groups": []},
        },
        "minio": {"buckets_count": 0, "total_objects": 0},
    })))
}

/// `GET /system/info`
pub async fn info(AxState(state): AxState<Arc<State>>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": "",
        "architecture": std::env::consts::ARCH,
        "kubernetes_version": "",
        "serverless_backend": {"name": "spillway", "version": env!("CARGO_PKG_VERSION")},
        "name": state.config.name,
    }))
}
