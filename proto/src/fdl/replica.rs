//! Where a function's jobs may be delegated: `replicas[]` and `federation.members[]`.

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::diag::Diagnostics;
use super::model::*;
use super::reader::{Fields, boolean, bounded, mapping, scalar_map, sequence, string};

pub(crate) fn read_replicas(diags: &mut Diagnostics, node: &Node, path: &str) -> Vec<Replica> {
    let Some(items) = sequence(diags, node, path) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let ipath = format!("{path}[{i}]");
            let map = mapping(diags, item, &ipath)?;
            read_replica(diags, map, &ipath)
        })
        .collect()
}

fn read_replica(diags: &mut Diagnostics, map: &MarkedMappingNode, path: &str) -> Option<Replica> {
    let mut f = Fields::new(map, path);
    let kind = match f.take("type") {
        Some(n) => string(diags, n, &f.child_path("type")),
        None => {
            diags.error(
                map.span(),
                path,
                "missing `type`: `oscar`, `endpoint`, `kubernetes` or `lambda`",
            );
            None
        }
    };
    // Priorities order replicas; OSCAR's are small whole numbers.
    const MAX_PRIORITY: u64 = 1_000_000;
    let priority = f
        .field("priority")
        .and_then(|(n, p)| bounded(diags, n, &p, MAX_PRIORITY))
        .map(|p| u32::try_from(p).unwrap_or(u32::MAX))
        .unwrap_or(0);
    let mut required = |f: &mut Fields<'_>, key: &'static str, what: &str| match f.take(key) {
        Some(n) => string(diags, n, &f.child_path(key)),
        None => {
            diags.error(map.span(), path, format!("missing `{key}` ({what})"));
            None
        }
    };
    let target = match kind.as_deref() {
        Some("oscar") => {
            let cluster_id = required(&mut f, "cluster_id", "the cluster that runs the replica");
            let service_name =
                required(&mut f, "service_name", "the service's name on that cluster");
            Some(ReplicaTarget::Oscar {
                cluster_id: cluster_id?,
                service_name: service_name?,
            })
        }
        Some("endpoint") => {
            let url = required(&mut f, "url", "where to POST the event");
            let headers = f
                .field("headers")
                .map(|(n, p)| scalar_map(diags, n, &p))
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Secret(v)))
                .collect();
            let url = url?;
            if !is_http_url(&url) {
                diags.error(
                    map.span(),
                    &f.child_path("url"),
                    format!("`{url}` is not an http:// or https:// URL"),
                );
                return None;
            }
            Some(ReplicaTarget::Endpoint { url, headers })
        }
        Some("kubernetes") => {
            let mut text = |f: &mut Fields<'_>, key: &'static str| {
                f.take(key)
                    .and_then(|n| string(diags, n, &f.child_path(key)))
            };
            Some(ReplicaTarget::Kubernetes {
                cluster_id: text(&mut f, "cluster_id").unwrap_or_else(|| "default".into()),
                namespace: text(&mut f, "namespace"),
                image: text(&mut f, "image"),
            })
        }
        Some("lambda") => read_lambda(diags, map, &mut f, path),
        Some(other) => {
            diags.error(
                map.span(),
                &f.child_path("type"),
                format!(
                    "unknown replica type `{other}`: expected `oscar`, `endpoint`, `kubernetes` or `lambda`"
                ),
            );
            None
        }
        None => None,
    };
    if let Some(n) = f.take("ssl_verify") {
        boolean(diags, n, &f.child_path("ssl_verify"));
    }
    let mut extra = Extra::new();
    f.finish(
        diags,
        &[
            "type",
            "priority",
            "cluster_id",
            "service_name",
            "url",
            "headers",
            "ssl_verify",
            "namespace",
            "image",
            "function_name",
            "function_url",
            "region",
            "invocation_type",
            "auth",
        ],
        &mut extra,
    );
    Some(Replica {
        target: target?,
        priority,
    })
}

fn read_lambda(
    diags: &mut Diagnostics,
    map: &MarkedMappingNode,
    f: &mut Fields<'_>,
    path: &str,
) -> Option<ReplicaTarget> {
    let mut text = |f: &mut Fields<'_>, key: &'static str| {
        f.take(key)
            .and_then(|n| string(diags, n, &f.child_path(key)))
    };
    let name = text(f, "function_name");
    let url = text(f, "function_url");
    let region = text(f, "region");
    let invocation = text(f, "invocation_type");
    let auth = text(f, "auth");
    let asynchronous = match invocation.as_deref() {
        None | Some("RequestResponse") => false,
        Some("Event") => true,
        Some(other) => {
            diags.error(
                map.span(),
                &f.child_path("invocation_type"),
                format!("unknown invocation_type `{other}`: expected `RequestResponse` or `Event`"),
            );
            return None;
        }
    };
    let iam = match auth.as_deref() {
        None | Some("iam") | Some("AWS_IAM") => true,
        Some("none") | Some("NONE") => false,
        Some(other) => {
            diags.error(
                map.span(),
                &f.child_path("auth"),
                format!("unknown auth `{other}`: expected `iam` (SigV4-signed) or `none`"),
            );
            return None;
        }
    };
    let target = match (name, url) {
        (Some(name), None) => LambdaTarget::Function { name, region },
        (None, Some(url)) if is_http_url(&url) => {
            if asynchronous {
                diags.error(
                    map.span(),
                    &f.child_path("invocation_type"),
                    "a function URL is always called synchronously: drop `invocation_type: Event` or use `function_name`",
                );
                return None;
            }
            LambdaTarget::Url { url, iam }
        }
        (None, Some(url)) => {
            diags.error(
                map.span(),
                &f.child_path("function_url"),
                format!("`{url}` is not an http:// or https:// URL"),
            );
            return None;
        }
        _ => {
            diags.error(
                map.span(),
                path,
                "a `lambda` replica needs exactly one of `function_name` (Invoke API) and `function_url`",
            );
            return None;
        }
    };
    Some(ReplicaTarget::Lambda {
        target,
        asynchronous,
    })
}

/// `federation:`, and its `rescheduler_threshold` (as written, for the service to read).
pub(crate) fn read_federation<'n>(
    diags: &mut Diagnostics,
    map: &'n MarkedMappingNode,
    path: &str,
    replicas: &mut Vec<Replica>,
    extra: &mut Extra,
) -> (Federation, Option<(&'n Node, String)>) {
    let mut f = Fields::new(map, path);
    let mut text = |f: &mut Fields<'_>, key: &'static str| {
        f.take(key)
            .and_then(|n| string(diags, n, &f.child_path(key)))
    };
    let group_id = text(&mut f, "group_id");
    let topology = text(&mut f, "topology");
    let delegation = text(&mut f, "delegation");
    if let Some(members) = f.take("members") {
        replicas.extend(read_replicas(diags, members, &f.child_path("members")));
    }
    let threshold = f.field("rescheduler_threshold");
    let mut kept = Extra::new();
    f.finish(
        diags,
        &[
            "group_id",
            "topology",
            "delegation",
            "members",
            "rescheduler_threshold",
        ],
        &mut kept,
    );
    if !kept.is_empty() {
        extra.insert(
            "federation".into(),
            serde_json::Value::Object(kept.into_iter().collect()),
        );
    }
    let federation = Federation {
        group_id,
        topology,
        delegation,
    };
    (federation, threshold)
}

pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && !r.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}
