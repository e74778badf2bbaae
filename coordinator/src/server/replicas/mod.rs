//! Replicas outside the mesh, the FDL's `replicas[]` (and `federation.members[]`): where a job
//! goes when no peer agent can take it, highest priority (0) first. Each kind is a [`Backend`];
//! what an answer means (move on, wait, reconcile, give up) is decided by the sans-IO
//! [`spillway_placement::delegation::Attempt`], driven by [`driver::Delegations`].

pub mod driver;
pub mod endpoint;
pub mod kube_secrets;
pub mod kubernetes;
pub mod lambda;
pub mod oscar;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use spillway_placement::delegation::{Found, Submitted};
use spillway_placement::handover::Holder;
use spillway_proto::FunctionDef;
use spillway_proto::envelope::Envelope;
use spillway_proto::fdl::{LambdaTarget, Replica, ReplicaTarget};

use crate::config::CoordinatorConfig;

pub use driver::Delegations;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What `def`'s replicas need from the coordinator's config and it lacks, one line each (empty:
/// nothing): checked at `spillway apply`, so a replica that could never run is refused there
/// rather than failing every job it is given.
pub fn unconfigured(def: &FunctionDef, config: &CoordinatorConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for replica in &def.replicas {
        if let ReplicaTarget::Kubernetes { cluster_id, .. } = &replica.target
            && config
                .kubernetes
                .get(cluster_id)
                .is_none_or(|c| c.runner_image.is_none())
        {
            let line = format!(
                "{}: function `{}`: {}",
                def.location,
                def.name,
                crate::config::missing_runner_image(cluster_id)
            );
            if !problems.contains(&line) {
                problems.push(line);
            }
        }
    }
    problems
}

/// One kind of executor outside the mesh. Every call is idempotent on the envelope's job id.
pub trait Backend: Send + Sync {
    /// The replica's id, as hand-over records name it (`endpoint:URL`, `oscar:CLUSTER/SERVICE`).
    fn id(&self) -> &str;
    /// Hands the job over; submitting the same job again must not run it twice.
    fn submit<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Submitted>;
    /// What the replica knows of the job, by its id (observing it, or reconciling an attempt
    /// whose answer was lost).
    fn status<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Found>;
    /// Stops the job there, if the replica can.
    fn cancel<'a>(&'a self, envelope: &'a Envelope) -> BoxFut<'a, Result<(), String>>;
}

/// The id a replica has in hand-over records (as [`Holder::Replica`]).
pub fn replica_id(target: &ReplicaTarget) -> String {
    match target {
        ReplicaTarget::Oscar {
            cluster_id,
            service_name,
        } => format!("oscar:{cluster_id}/{service_name}"),
        ReplicaTarget::Endpoint { url, .. } => format!("endpoint:{url}"),
        ReplicaTarget::Kubernetes {
            cluster_id,
            namespace,
            ..
        } => match namespace {
            Some(ns) => format!("kubernetes:{cluster_id}/{ns}"),
            None => format!("kubernetes:{cluster_id}"),
        },
        ReplicaTarget::Lambda { target, .. } => match target {
            LambdaTarget::Function { name, .. } => format!("lambda:{name}"),
            LambdaTarget::Url { url, .. } => format!("lambda:{url}"),
        },
    }
}

/// The kind of a replica from its id (`kubernetes`, `lambda`, `oscar`, `endpoint`): what
/// comes before the `:` ([`replica_id`]).
pub fn kind_of(id: &str) -> Option<&str> {
    id.split_once(':').map(|(kind, _)| kind)
}

/// A lease holder as a hand-over row names it. Rows keep the name as written since the first
/// release, so a coordinator's state survives upgrades: a replica id always has a kind before a
/// `:` ([`replica_id`]), and node names cannot contain one (joining refuses them).
pub fn holder_of_row(name: &str) -> Holder {
    if name.contains(':') {
        Holder::Replica(name.to_owned())
    } else {
        Holder::Node(name.to_owned())
    }
}

/// The function's replicas, highest priority first (the order written breaks ties).
pub fn by_priority(def: &FunctionDef) -> Vec<&Replica> {
    let mut replicas: Vec<&Replica> = def.replicas.iter().collect();
    replicas.sort_by_key(|r| r.priority);
    replicas
}

/// The backend for the replica of `def` with this id.
pub fn backend_for(
    def: &FunctionDef,
    id: &str,
    config: &CoordinatorConfig,
    delegations: &Delegations,
) -> Result<Arc<dyn Backend>, String> {
    let http = &delegations.http;
    let callbacks = delegations.callbacks.clone();
    let replica = def
        .replicas
        .iter()
        .find(|r| replica_id(&r.target) == id)
        .ok_or_else(|| format!("function `{}` has no replica `{id}` any more", def.name))?;
    Ok(match &replica.target {
        ReplicaTarget::Endpoint { url, headers } => Arc::new(endpoint::EndpointBackend {
            id: id.to_owned(),
            url: url.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            http: http.clone(),
            timeout: config.replicas.timeout,
            callbacks,
        }),
        ReplicaTarget::Lambda {
            target,
            asynchronous,
        } => Arc::new(lambda::backend(
            id,
            target,
            *asynchronous,
            config,
            def.timeout,
            http,
            callbacks,
        )?),
        ReplicaTarget::Kubernetes {
            cluster_id,
            namespace,
            image,
        } => Arc::new(kubernetes::KubernetesBackend::new(
            id,
            cluster_id,
            config
                .kubernetes
                .get(cluster_id)
                .cloned()
                .unwrap_or_default(),
            namespace.as_deref(),
            image.as_deref(),
            def,
            config.replicas.timeout,
            delegations.kube.clone(),
            callbacks,
        )?),
        ReplicaTarget::Oscar {
            cluster_id,
            service_name,
        } => {
            let written = def.clusters.get(cluster_id);
            let configured = config.clusters.get(cluster_id);
            let endpoint = configured
                .and_then(|c| c.endpoint.clone())
                .or_else(|| written.map(|c| c.endpoint.clone()))
                .ok_or_else(|| format!("cluster `{cluster_id}` of replica `{id}` is defined neither under `clusters` in the FDL nor under [clusters.{cluster_id}] in the coordinator's config"))?;
            let user = configured
                .and_then(|c| c.auth_user.clone())
                .or_else(|| written.and_then(|c| c.auth_user.clone()))
                .unwrap_or_default();
            let password = env_password(cluster_id)
                .or_else(|| configured.and_then(|c| c.auth_password.clone()))
                .or_else(|| {
                    written.and_then(|c| c.auth_password.as_ref().map(|p| p.expose().to_owned()))
                })
                .unwrap_or_default();
            Arc::new(oscar::OscarBackend::new(
                id.to_owned(),
                endpoint.trim_end_matches('/').to_owned(),
                service_name.clone(),
                user,
                password,
                config.name.clone(),
                http.clone(),
                config.replicas.timeout,
            ))
        }
    })
}

/// `SPILLWAY_CLUSTER_<ID>_PASSWORD` (the id upper-cased, `-` and `.` as `_`).
fn env_password(cluster_id: &str) -> Option<String> {
    let var = format!(
        "SPILLWAY_CLUSTER_{}_PASSWORD",
        cluster_id.to_uppercase().replace(['-', '.'], "_")
    );
    std::env::var(var).ok()
}

/// What a failed request means: never sent, or sent without an answer.
pub fn classify(e: &reqwest_tls::Error) -> Submitted {
    let why = error_chain(e);
    if e.is_connect() {
        Submitted::NotSent(why)
    } else {
        Submitted::NoAnswer(why)
    }
}

pub use spillway_plumbing::error_chain;

/// The start of a refusing answer's body (trimmed, at most `max_chars`), for the reason a job
/// moved on.
pub async fn body_excerpt(response: reqwest_tls::Response, max_chars: usize) -> String {
    let body = response.text().await.unwrap_or_default();
    body.trim().chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_nodes_and_replicas_apart() {
        for node in ["pi-1", "edge.site-2", "n0"] {
            assert!(spillway_link::identity::valid_node_name(node));
            assert_eq!(holder_of_row(node), Holder::node(node));
        }
        let targets = [
            ReplicaTarget::Endpoint {
                url: "http://10.0.0.9:8080/run".parse().expect("url"),
                headers: Default::default(),
            },
            ReplicaTarget::Oscar {
                cluster_id: "onprem".into(),
                service_name: "fire".into(),
            },
        ];
        for target in &targets {
            let id = replica_id(target);
            assert!(!spillway_link::identity::valid_node_name(&id), "{id}");
            assert_eq!(holder_of_row(&id), Holder::Replica(id.clone()));
        }
    }
}
