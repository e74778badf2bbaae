//! One function entry: an OSCAR service (`functions.oscar[]`) or a SCAR Lambda function
//! (`functions.aws[].lambda`), with Spillway's own fields on the same entry.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::STAGING_VARIABLES;
use super::diag::Diagnostics;
use super::model::*;
use super::reader::{
    Fields, boolean, mapping, scalar, scalar_map, sequence, string, strings, unsigned,
};
use crate::key::ObjectKey;
use crate::quantity::{Bytes, Millicores};

const SERVICE_FIELDS: &[&str] = &[
    "name",
    "image",
    "script",
    "cpu",
    "memory",
    "input",
    "output",
    "replicas",
    "federation",
    "rescheduler_threshold",
    "environment",
    "log_level",
    "runtime",
    "module",
    "command",
    "timeout",
    "max_concurrency",
];
const LAMBDA_FIELDS: &[&str] = &[
    "name",
    "container",
    "init_script",
    "script",
    "memory",
    "timeout",
    "input",
    "output",
    "environment",
    "log_level",
    "runtime",
    "module",
    "command",
    "max_concurrency",
    "image",
];

/// Reads one function; `None` (with diagnostics) when it cannot be used.
pub(crate) fn parse_service(
    diags: &mut Diagnostics,
    map: &MarkedMappingNode,
    path: &str,
    platform: Platform,
    base_dir: &Path,
) -> Option<FunctionDef> {
    let aws = platform == Platform::Aws;
    let errors_before = diags.items.iter().filter(|d| d.is_error()).count();
    let mut f = Fields::new(map, path);
    let mut extra = Extra::new();

    let name = match f.take("name") {
        Some(n) => string(diags, n, &f.child_path("name"))
            .filter(|name| check_name(diags, n, &f.child_path("name"), name, aws)),
        None => {
            diags.error(map.span(), path, "missing `name`: every function needs one");
            None
        }
    };
    let mut image = f
        .take("image")
        .and_then(|n| string(diags, n, &f.child_path("image")));
    let mut environment = BTreeMap::new();
    if aws && let Some(node) = f.take("container") {
        read_container(
            diags,
            node,
            &f.child_path("container"),
            &mut image,
            &mut environment,
            &mut extra,
        );
    }
    let script_key = if aws && map.get_node("init_script").is_some() {
        "init_script"
    } else {
        "script"
    };
    let script = f.take(script_key).and_then(|n| {
        let p = f.child_path(script_key);
        string(diags, n, &p).map(|s| resolve_file(diags, n, &p, "script", &s, base_dir))
    });
    let module = f.take("module").and_then(|n| {
        let p = f.child_path("module");
        string(diags, n, &p).map(|s| resolve_file(diags, n, &p, "module", &s, base_dir))
    });
    let command = f
        .take("command")
        .and_then(|n| read_command(diags, n, &f.child_path("command")));
    let runtime_node = f.take("runtime");
    let explicit_runtime = runtime_node.and_then(|n| {
        let p = f.child_path("runtime");
        let text = scalar(diags, n, &p)?.as_str().to_owned();
        match Runtime::from_name(&text) {
            Some(r) => Some(r),
            // SCAR uses `runtime` for Lambda's runtime name (`image`, `python3.9`): keep it.
            None if aws => {
                diags.warn(
                    n.span(),
                    &p,
                    format!("SCAR runtime `{text}` is not used by Spillway; kept"),
                );
                extra.insert("runtime".into(), serde_json::Value::String(text));
                None
            }
            None => {
                diags.error(
                    n.span(),
                    &p,
                    format!(
                        "unknown runtime `{text}`: expected one of {}",
                        Runtime::NAMES
                    ),
                );
                None
            }
        }
    });
    let cpu = f.take("cpu").and_then(|n| {
        let p = f.child_path("cpu");
        let s = scalar(diags, n, &p)?;
        Millicores::parse(s.as_str())
            .map_err(|e| diags.error(n.span(), &p, format!("cannot read cpu: {e}")))
            .ok()
    });
    let memory = f
        .take("memory")
        .and_then(|n| read_memory(diags, n, &f.child_path("memory"), aws));
    let input = f
        .take("input")
        .map(|n| read_storage_refs(diags, n, &f.child_path("input")))
        .unwrap_or_default();
    let output = f
        .take("output")
        .map(|n| read_storage_refs(diags, n, &f.child_path("output")))
        .unwrap_or_default();
    let mut replicas = f
        .take("replicas")
        .map(|n| read_replicas(diags, n, &f.child_path("replicas")))
        .unwrap_or_default();
    let federation = f.take("federation").and_then(|n| {
        let p = f.child_path("federation");
        let m = mapping(diags, n, &p)?;
        Some(read_federation(diags, m, &p, &mut replicas, &mut extra))
    });
    let rescheduler_threshold = f
        .take("rescheduler_threshold")
        .and_then(|n| unsigned(diags, n, &f.child_path("rescheduler_threshold")));
    if let Some(node) = f.take("environment") {
        read_environment(
            diags,
            node,
            &f.child_path("environment"),
            &mut environment,
            &mut extra,
        );
    }
    let log_level = f.take("log_level").and_then(|n| {
        let p = f.child_path("log_level");
        let level = string(diags, n, &p)?;
        const LEVELS: &[&str] = &[
            "CRITICAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG", "TRACE", "NOTSET",
        ];
        if !LEVELS.contains(&level.to_ascii_uppercase().as_str()) {
            diags.warn(
                n.span(),
                &p,
                format!(
                    "unknown log level `{level}`: expected one of {}",
                    LEVELS.join(", ")
                ),
            );
        }
        Some(level)
    });
    let timeout = f
        .take("timeout")
        .and_then(|n| read_duration(diags, n, &f.child_path("timeout")));
    let max_concurrency = f.take("max_concurrency").and_then(|n| {
        let p = f.child_path("max_concurrency");
        match unsigned(diags, n, &p)? {
            0 => {
                diags.error(
                    n.span(),
                    &p,
                    "must be at least 1 (leave it out for no limit)",
                );
                None
            }
            v => Some(u32::try_from(v).unwrap_or(u32::MAX)),
        }
    });
    f.finish(
        diags,
        if aws { LAMBDA_FIELDS } else { SERVICE_FIELDS },
        &mut extra,
    );

    let runtime = resolve_runtime(
        diags,
        map,
        path,
        explicit_runtime,
        &image,
        &script,
        &module,
        &command,
    );
    let errors_after = diags.items.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    Some(FunctionDef {
        platform,
        name: name?,
        runtime: runtime?,
        image,
        script,
        module,
        command,
        cpu,
        memory,
        input,
        output,
        replicas,
        federation,
        rescheduler_threshold,
        environment,
        log_level,
        timeout,
        max_concurrency,
        extra,
        location: diags.location(map.span()),
        fdl_path: path.to_owned(),
    })
}

/// `runtime` when written; otherwise inferred from what the entry gives to run.
#[allow(clippy::too_many_arguments)]
fn resolve_runtime(
    diags: &mut Diagnostics,
    map: &MarkedMappingNode,
    path: &str,
    explicit: Option<Runtime>,
    image: &Option<String>,
    script: &Option<std::path::PathBuf>,
    module: &Option<std::path::PathBuf>,
    command: &Option<Vec<String>>,
) -> Option<Runtime> {
    let runtime = explicit.or(if module.is_some() {
        Some(Runtime::Wasm)
    } else if command.is_some() {
        Some(Runtime::Process)
    } else if image.is_some() {
        Some(Runtime::Oci)
    } else if script.is_some() {
        Some(Runtime::Process)
    } else {
        None
    });
    let missing = match runtime {
        None => Some(
            "nothing to run: set `image` (with `script`), `module` (a WASI module) or `command`",
        ),
        Some(Runtime::Wasm) if module.is_none() => {
            Some("runtime `wasm` needs `module`: the path of a .wasm file")
        }
        Some(Runtime::Process) if command.is_none() && script.is_none() => {
            Some("runtime `process` needs `command` or `script`")
        }
        Some(Runtime::Oci) if image.is_none() => Some("runtime `oci` needs `image`"),
        _ => None,
    };
    if let Some(message) = missing {
        diags.error(map.span(), path, message);
        return None;
    }
    runtime
}

fn check_name(diags: &mut Diagnostics, node: &Node, path: &str, name: &str, aws: bool) -> bool {
    let ok = if aws {
        // AWS Lambda function names.
        name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    } else {
        // OSCAR service names are Kubernetes names (RFC 1123 labels).
        name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    };
    if !ok {
        let rule = if aws {
            "letters, digits, '-' and '_', at most 64 characters (an AWS Lambda name)"
        } else {
            "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (an OSCAR service name)"
        };
        diags.error(
            node.span(),
            path,
            format!("invalid name `{name}`: use {rule}"),
        );
    }
    ok
}

fn resolve_file(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    what: &str,
    written: &str,
    base_dir: &Path,
) -> std::path::PathBuf {
    let resolved = base_dir.join(written);
    if !resolved.is_file() {
        diags.warn(
            node.span(),
            path,
            format!(
                "{what} `{written}` not found at {}; deploying this function fails until it exists",
                resolved.display()
            ),
        );
    }
    resolved
}

fn read_command(diags: &mut Diagnostics, node: &Node, path: &str) -> Option<Vec<String>> {
    match node {
        // A single string runs through the shell, as a user typing it would expect.
        Node::Scalar(_) => {
            string(diags, node, path).map(|c| vec!["/bin/sh".into(), "-c".into(), c])
        }
        _ => {
            let argv = strings(diags, node, path);
            if argv.is_empty() {
                diags.error(node.span(), path, "the command is empty");
                return None;
            }
            Some(argv)
        }
    }
}

fn read_memory(diags: &mut Diagnostics, node: &Node, path: &str, aws: bool) -> Option<Bytes> {
    let s = scalar(diags, node, path)?;
    let text = s.as_str().trim();
    let bare = text.chars().all(|c| c.is_ascii_digit());
    if bare && aws {
        // SCAR (like Lambda) counts memory in MiB.
        return text.parse().ok().map(Bytes::from_mib);
    }
    match Bytes::parse(text) {
        Ok(bytes) => {
            if bare && bytes.0 < 1 << 20 {
                diags.warn(node.span(), path, format!("`{text}` has no unit and is read as bytes, as Kubernetes does; did you mean `{text}Mi`?"));
            }
            Some(bytes)
        }
        Err(e) => {
            diags.error(node.span(), path, format!("cannot read memory: {e}"));
            None
        }
    }
}

/// Seconds (`300`) or a number with a unit (`30s`, `5m`, `1h`).
fn read_duration(diags: &mut Diagnostics, node: &Node, path: &str) -> Option<Duration> {
    let s = scalar(diags, node, path)?;
    let text = s.as_str().trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let multiplier = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 && multiplier > 0 => Some(Duration::from_secs(n * multiplier)),
        _ => {
            diags.error(
                node.span(),
                path,
                format!("`{text}` is not a duration: write seconds (`300`) or `30s`, `5m`, `1h`"),
            );
            None
        }
    }
}

fn read_storage_refs(diags: &mut Diagnostics, node: &Node, path: &str) -> Vec<StorageRef> {
    let Some(items) = sequence(diags, node, path) else {
        return Vec::new();
    };
    let mut refs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let Some(map) = mapping(diags, item, &ipath) else {
            continue;
        };
        let mut f = Fields::new(map, ipath.clone());
        let provider = match f.take("storage_provider") {
            Some(n) => {
                string(diags, n, &f.child_path("storage_provider")).map(|s| ProviderRef::parse(&s))
            }
            None => {
                diags.error(
                    map.span(),
                    &ipath,
                    "missing `storage_provider` (e.g. `minio.default`)",
                );
                None
            }
        };
        let bucket_path = match f.take("path") {
            Some(n) => read_bucket_path(diags, n, &f.child_path("path")),
            None => {
                diags.error(
                    map.span(),
                    &ipath,
                    "missing `path` (e.g. `fire-detect/input`)",
                );
                None
            }
        };
        let suffix = f
            .take("suffix")
            .map(|n| strings(diags, n, &f.child_path("suffix")))
            .unwrap_or_default();
        let prefix = f
            .take("prefix")
            .map(|n| strings(diags, n, &f.child_path("prefix")))
            .unwrap_or_default();
        let mut extra = Extra::new();
        f.finish(
            diags,
            &["storage_provider", "path", "suffix", "prefix"],
            &mut extra,
        );
        if let (Some(provider), Some(path)) = (provider, bucket_path) {
            refs.push(StorageRef {
                provider,
                path,
                suffix,
                prefix,
            });
        }
    }
    refs
}

fn read_bucket_path(diags: &mut Diagnostics, node: &Node, path: &str) -> Option<BucketPath> {
    let text = string(diags, node, path)?;
    let trimmed = text.trim_matches('/');
    // The whole path obeys the object-key rules, so no bucket or folder can escape a data root.
    if let Err(e) = ObjectKey::parse(trimmed) {
        diags.error(node.span(), path, format!("invalid path `{text}`: {e}"));
        return None;
    }
    let (bucket, folder) = match trimmed.split_once('/') {
        Some((b, rest)) => (b, ObjectKey::parse(rest).ok()),
        None => (trimmed, None),
    };
    Some(BucketPath {
        bucket: bucket.to_owned(),
        folder,
    })
}

fn read_replicas(diags: &mut Diagnostics, node: &Node, path: &str) -> Vec<Replica> {
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
            diags.error(map.span(), path, "missing `type`: `oscar` or `endpoint`");
            None
        }
    };
    let priority = f
        .take("priority")
        .and_then(|n| unsigned(diags, n, &f.child_path("priority")))
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
                .take("headers")
                .map(|n| scalar_map(diags, n, &f.child_path("headers")))
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
        Some(other) => {
            diags.error(
                map.span(),
                &f.child_path("type"),
                format!("unknown replica type `{other}`: expected `oscar` or `endpoint`"),
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
        ],
        &mut extra,
    );
    Some(Replica {
        target: target?,
        priority,
    })
}

fn read_federation(
    diags: &mut Diagnostics,
    map: &MarkedMappingNode,
    path: &str,
    replicas: &mut Vec<Replica>,
    extra: &mut Extra,
) -> Federation {
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
    let mut kept = Extra::new();
    f.finish(
        diags,
        &["group_id", "topology", "delegation", "members"],
        &mut kept,
    );
    if !kept.is_empty() {
        extra.insert(
            "federation".into(),
            serde_json::Value::Object(kept.into_iter().collect()),
        );
    }
    Federation {
        group_id,
        topology,
        delegation,
    }
}

fn read_environment(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    environment: &mut BTreeMap<String, String>,
    extra: &mut Extra,
) {
    let Some(map) = mapping(diags, node, path) else {
        return;
    };
    let mut f = Fields::new(map, path);
    if let Some(vars) = f.take("Variables") {
        let vpath = f.child_path("Variables");
        let Some(vmap) = mapping(diags, vars, &vpath) else {
            return;
        };
        for (key, value) in vmap.iter() {
            let kpath = format!("{vpath}.{}", key.as_str());
            let name = key.as_str();
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                diags.error(key.span(), &kpath, format!("`{name}` is not a valid environment variable name (letters, digits and '_', not starting with a digit)"));
                continue;
            }
            if STAGING_VARIABLES.contains(&name) {
                diags.warn(key.span(), &kpath, format!("`{name}` is set by the agent for every job (staging contract); this value is ignored"));
                continue;
            }
            if let Some(s) = scalar(diags, value, &kpath) {
                environment.insert(name.to_owned(), s.as_str().to_owned());
            }
        }
    }
    let mut kept = Extra::new();
    f.finish(diags, &["Variables"], &mut kept);
    if !kept.is_empty() {
        extra.insert(
            "environment".into(),
            serde_json::Value::Object(kept.into_iter().collect()),
        );
    }
}

fn read_container(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    image: &mut Option<String>,
    environment: &mut BTreeMap<String, String>,
    extra: &mut Extra,
) {
    let Some(map) = mapping(diags, node, path) else {
        return;
    };
    let mut f = Fields::new(map, path);
    if let Some(n) = f.take("image") {
        *image = string(diags, n, &f.child_path("image"));
    }
    if let Some(n) = f.take("environment") {
        read_environment(diags, n, &f.child_path("environment"), environment, extra);
    }
    let mut kept = Extra::new();
    f.finish(diags, &["image", "environment"], &mut kept);
    if !kept.is_empty() {
        extra.insert(
            "container".into(),
            serde_json::Value::Object(kept.into_iter().collect()),
        );
    }
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
