//! One function entry: an OSCAR service (`functions.oscar[]`) or a SCAR Lambda function
//! (`functions.aws[].lambda`), with Spillway's own fields on the same entry.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::STAGING_VARIABLES;
use super::diag::Diagnostics;
use super::model::*;
use super::reader::{Fields, boolean, bounded, mapping, scalar, scalar_map, string, strings};
use super::replica::{read_federation, read_replicas};
use super::storage::read_storage_refs;
use super::trigger::read_triggers;
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
    "node_selector",
    "labels",
    "image_prefetch",
    "network",
    "triggers",
    "cluster_id",
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
    parse_service_as(diags, map, path, platform, base_dir, None)
}

/// A function of SCAR's own YAML, from before the FDL (`functions: {NAME: {image, init_script,
/// memory, s3: {input_bucket, output_bucket}}}`): it runs on the mesh's nodes like an OSCAR
/// service, its buckets as folders there.
pub(crate) fn parse_scar_function(
    diags: &mut Diagnostics,
    name: &MarkedScalarNode,
    map: &MarkedMappingNode,
    path: &str,
    base_dir: &Path,
) -> Option<FunctionDef> {
    let platform = Platform::Oscar { cluster_id: None };
    parse_service_as(diags, map, path, platform, base_dir, Some(name))
}

/// Fields SCAR's own YAML has that an OSCAR service does not.
const SCAR_FIELDS: &[&str] = &["init_script", "s3"];

fn parse_service_as(
    diags: &mut Diagnostics,
    map: &MarkedMappingNode,
    path: &str,
    platform: Platform,
    base_dir: &Path,
    scar_name: Option<&MarkedScalarNode>,
) -> Option<FunctionDef> {
    let aws = platform == Platform::Aws;
    // SCAR's conventions (MiB memory, `init_script`) hold for its Lambda functions in an FDL and
    // for its own older YAML.
    let scar = aws || scar_name.is_some();
    let errors_before = diags.items.iter().filter(|d| d.is_error()).count();
    let mut f = Fields::new(map, path);
    let mut extra = Extra::new();

    let name = match (scar_name, f.take("name")) {
        // SCAR's names are Lambda's.
        (Some(n), _) => {
            Some(n.as_str().to_owned()).filter(|name| check_name(diags, n.span(), path, name, true))
        }
        (None, Some(n)) => string(diags, n, &f.child_path("name"))
            .filter(|name| check_name(diags, n.span(), &f.child_path("name"), name, aws)),
        (None, None) => {
            diags.error(map.span(), path, "missing `name`: every function needs one");
            None
        }
    };
    // OSCAR v4 services name their cluster themselves; an FDL lists them under it.
    let mut platform = platform;
    if !aws && let Some((n, p)) = f.field("cluster_id") {
        let named = string(diags, n, &p);
        match (&mut platform, named) {
            (
                Platform::Oscar {
                    cluster_id: wrapper @ None,
                },
                Some(id),
            ) => *wrapper = Some(id),
            (
                Platform::Oscar {
                    cluster_id: Some(wrapper),
                },
                Some(id),
            ) if *wrapper != id => {
                diags.error(
                    n.span(),
                    &p,
                    format!("`{id}` is not `{wrapper}`, the cluster this service is listed under; keep one of them"),
                );
            }
            _ => {}
        }
    }
    let mut image = f.field("image").and_then(|(n, p)| string(diags, n, &p));
    let mut environment = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    if aws && let Some(node) = f.take("container") {
        read_container(
            diags,
            node,
            &f.child_path("container"),
            &mut image,
            (&mut environment, &mut secrets),
            &mut extra,
        );
    }
    let script_key = if scar && map.get_node("init_script").is_some() {
        "init_script"
    } else {
        "script"
    };
    let script = f.take(script_key).and_then(|n| {
        let p = f.child_path(script_key);
        string(diags, n, &p).map(|s| resolve_file(diags, n, &p, "script", &s, base_dir))
    });
    let module = f.field("module").and_then(|(n, p)| {
        string(diags, n, &p).map(|s| resolve_file(diags, n, &p, "module", &s, base_dir))
    });
    let command = f
        .field("command")
        .and_then(|(n, p)| read_command(diags, n, &p));
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
    let cpu = f.field("cpu").and_then(|(n, p)| {
        let s = scalar(diags, n, &p)?;
        Millicores::parse(s.as_str())
            .map_err(|e| diags.error(n.span(), &p, format!("cannot read cpu: {e}")))
            .ok()
    });
    let memory = f
        .field("memory")
        .and_then(|(n, p)| read_memory(diags, n, &p, scar));
    // Read here (so they are checked, not warned about) and carried in `extra`: OSCAR's
    // `image_prefetch` pulls the image at deploy time; `network` picks a container's network.
    if let Some(b) = f
        .field("image_prefetch")
        .and_then(|(n, p)| boolean(diags, n, &p))
    {
        extra.insert("image_prefetch".into(), serde_json::Value::Bool(b));
    }
    let network = f.field("network").and_then(|(n, p)| {
        let s = scalar(diags, n, &p)?;
        match NetworkMode::from_name(s.as_str()) {
            Some(mode) => Some((mode, n, p)),
            None => {
                diags.error(
                    s.span(),
                    &p,
                    format!(
                        "unknown network `{}`: expected one of {}",
                        s.as_str(),
                        NetworkMode::NAMES
                    ),
                );
                None
            }
        }
    });
    let mut input = f
        .field("input")
        .map(|(n, p)| read_storage_refs(diags, n, &p, None))
        .unwrap_or_default();
    let mut mqtt_outputs = Vec::new();
    let mut output = f
        .field("output")
        .map(|(n, p)| read_storage_refs(diags, n, &p, Some(&mut mqtt_outputs)))
        .unwrap_or_default();
    if scar_name.is_some()
        && let Some((n, p)) = f.field("s3")
    {
        let function = name.as_deref().unwrap_or_default();
        read_scar_buckets(diags, n, &p, function, &mut input, &mut output);
    }
    let triggers = f
        .field("triggers")
        .map(|(n, p)| read_triggers(diags, n, &p))
        .unwrap_or_default();
    let mut replicas = f
        .field("replicas")
        .map(|(n, p)| read_replicas(diags, n, &p))
        .unwrap_or_default();
    let mut federated_threshold = None;
    let federation = f.field("federation").and_then(|(n, p)| {
        let m = mapping(diags, n, &p)?;
        let (federation, threshold) = read_federation(diags, m, &p, &mut replicas, &mut extra);
        federated_threshold = threshold;
        Some(federation)
    });
    // OSCAR v4.1 moved `rescheduler_threshold` under `federation`; both places are read, the
    // service's own first.
    let rescheduler_threshold = f
        .field("rescheduler_threshold")
        .or(federated_threshold)
        .and_then(|(n, p)| bounded(diags, n, &p, MAX_SECONDS));
    if let Some(node) = f.take("environment") {
        read_environment(
            diags,
            node,
            &f.child_path("environment"),
            &mut environment,
            &mut secrets,
            &mut extra,
        );
    }
    let node_selector = f
        .field("node_selector")
        .map(|(n, p)| scalar_map(diags, n, &p))
        .unwrap_or_default();
    let labels = f
        .field("labels")
        .map(|(n, p)| read_labels(diags, n, &p))
        .unwrap_or_default();
    let log_level = f.field("log_level").and_then(|(n, p)| {
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
        .field("timeout")
        .and_then(|(n, p)| read_duration(diags, n, &p));
    let max_concurrency = f.field("max_concurrency").and_then(|(n, p)| {
        match bounded(diags, n, &p, MAX_CONCURRENCY)? {
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
    let known: Vec<&str> = match (aws, scar_name) {
        (true, _) => LAMBDA_FIELDS.to_vec(),
        (false, Some(_)) => SERVICE_FIELDS.iter().chain(SCAR_FIELDS).copied().collect(),
        (false, None) => SERVICE_FIELDS.to_vec(),
    };
    f.finish(diags, &known, &mut extra);

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
    if let (Some((mode, n, p)), Some(runtime)) = (&network, runtime) {
        check_network(diags, n, p, *mode, runtime);
        extra.insert(
            "network".into(),
            serde_json::Value::String(mode.name().to_owned()),
        );
    }
    let errors_after = diags.items.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    if !secrets.is_empty() {
        warn_secrets_stay_home(diags, map, path, &replicas);
    }
    let name = name?;
    if input.is_empty()
        && let Some(folder) = invocation_folder(&name)
    {
        input.push(folder);
    }
    Some(FunctionDef {
        platform,
        name,
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
        secrets,
        log_level,
        timeout,
        max_concurrency,
        node_selector,
        labels,
        triggers,
        mqtt_outputs,
        providers: Vec::new(),
        clusters: BTreeMap::new(),
        extra,
        location: diags.location(map.span()),
        fdl_path: path.to_owned(),
    })
}

/// Secrets go to the nodes and, as a Kubernetes Secret, to `kubernetes` replicas; they are
/// never sent to an HTTP endpoint, a Lambda function or another cluster, which must hold them in
/// their own configuration. Said at apply time rather than found out from a failing job.
fn warn_secrets_stay_home(
    diags: &mut Diagnostics,
    map: &MarkedMappingNode,
    path: &str,
    replicas: &[Replica],
) {
    for r in replicas {
        let (kind, who) = match &r.target {
            ReplicaTarget::Kubernetes { .. } => continue,
            ReplicaTarget::Endpoint { url, .. } => ("endpoint", url.clone()),
            ReplicaTarget::Lambda { .. } => ("lambda", "its Lambda function".to_owned()),
            ReplicaTarget::Oscar {
                cluster_id,
                service_name,
            } => (
                "oscar",
                format!("service `{service_name}` on `{cluster_id}`"),
            ),
        };
        diags.warn(
            map.span(),
            path,
            format!(
                "`environment.secrets` are not sent to the `{kind}` replica ({who}): jobs placed there run without them unless its own configuration sets them"
            ),
        );
    }
}

/// OSCAR runs any service through `/run` and `/job`, and SCAR any function through `scar run`,
/// with or without a bucket: a function with no input gets a folder to be invoked through,
/// `NAME/invoke` on the nodes that run it (what `/run`, `/job` and `spillway invoke` write to).
/// `None` for a name that cannot be a folder (a SCAR name with capitals or `_`).
pub fn invocation_folder(name: &str) -> Option<StorageRef> {
    let bucket_like = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_like {
        return None;
    }
    Some(StorageRef::on_nodes(BucketPath {
        bucket: name.to_owned(),
        folder: ObjectKey::parse("invoke").ok(),
    }))
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

/// Only a container can be given a network of its own: a `process` function is on the node's,
/// a WASI module has no sockets.
fn check_network(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    mode: NetworkMode,
    runtime: Runtime,
) {
    match (runtime, mode) {
        (Runtime::Oci, _) | (Runtime::Process, NetworkMode::Host) | (Runtime::Wasm, NetworkMode::None) => {}
        (Runtime::Process, NetworkMode::None) => diags.error(
            node.span(),
            path,
            "a `process` function runs in the node's own network and cannot be cut off from it; run it as `runtime: oci` (an image) to get `network: none`",
        ),
        (Runtime::Process, NetworkMode::Outbound) => diags.warn(
            node.span(),
            path,
            "a `process` function runs in the node's own network (as `network: host`)",
        ),
        (Runtime::Wasm, _) => diags.error(
            node.span(),
            path,
            "a WASI module has no sockets here (WASI preview 1): drop `network`, or run the function as an image",
        ),
    }
}

fn check_name(
    diags: &mut Diagnostics,
    span: &marked_yaml::Span,
    path: &str,
    name: &str,
    aws: bool,
) -> bool {
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
        diags.error(span, path, format!("invalid name `{name}`: use {rule}"));
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

/// SCAR's `s3: {input_bucket, output_bucket}` (its YAML before the FDL): buckets become folders on the node, laid out as SCAR
/// laid them out in S3. A bare input bucket is read from `BUCKET/FUNCTION/input`; outputs go to
/// the output bucket's folder, or to `BUCKET/FUNCTION/output` when it names no folder or there is
/// no output bucket (into the input bucket then), as SCAR's supervisor uploads them (less its
/// per-request folder).
fn read_scar_buckets(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    function: &str,
    input: &mut Vec<StorageRef>,
    output: &mut Vec<StorageRef>,
) {
    let Some(map) = mapping(diags, node, path) else {
        return;
    };
    let mut f = Fields::new(map, path);
    let on_node = |mut path: BucketPath, default: &str| {
        if path.folder.is_none() {
            path.folder = ObjectKey::parse(&format!("{function}/{default}")).ok();
        }
        StorageRef::on_nodes(path)
    };
    let input_bucket = f
        .field("input_bucket")
        .and_then(|(n, p)| super::storage::read_bucket_path(diags, n, &p));
    let output_bucket = f
        .field("output_bucket")
        .and_then(|(n, p)| super::storage::read_bucket_path(diags, n, &p));
    if let Some(bucket) = &input_bucket {
        input.push(on_node(bucket.clone(), "input"));
    }
    let output_bucket = output_bucket.or_else(|| {
        input_bucket.map(|b| BucketPath {
            bucket: b.bucket,
            folder: None,
        })
    });
    if let Some(bucket) = output_bucket {
        output.push(on_node(bucket, "output"));
    }
    diags.warn(
        node.span(),
        path,
        "SCAR's S3 buckets are folders on the node that runs the function here (`minio.default`); to use a real bucket, define an `s3` storage provider and list it under `input`/`output`",
    );
    let mut kept = Extra::new();
    f.finish(diags, &["input_bucket", "output_bucket"], &mut kept);
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

/// The longest timeout or threshold an FDL may set: a week.
const MAX_SECONDS: u64 = 7 * 86_400;
/// More concurrent jobs of one function than any node runs.
const MAX_CONCURRENCY: u64 = 100_000;

/// Seconds (`300`) or a number with a unit (`30s`, `5m`, `1h`), up to [`MAX_SECONDS`].
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
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier));
    match seconds {
        Some(n) if n > MAX_SECONDS => {
            diags.error(
                node.span(),
                path,
                format!("`{text}` is too long: at most {MAX_SECONDS} seconds (7 days)"),
            );
            None
        }
        Some(n) if n > 0 => Some(Duration::from_secs(n)),
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

fn read_environment(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    environment: &mut BTreeMap<String, String>,
    secrets: &mut BTreeMap<String, Secret>,
    extra: &mut Extra,
) {
    let Some(map) = mapping(diags, node, path) else {
        return;
    };
    let mut f = Fields::new(map, path);
    // OSCAR wrote `Variables`, OSCAR v4 writes `variables` (and `secrets`): its decoder ignores
    // case, so does this.
    if let Some((vars, vpath)) = f.field_any_case("variables") {
        for (name, value) in read_variables(diags, vars, &vpath) {
            environment.insert(name, value);
        }
    }
    if let Some((vars, vpath)) = f.field_any_case("secrets") {
        for (name, value) in read_variables(diags, vars, &vpath) {
            secrets.insert(name, Secret(value));
        }
    }
    let mut kept = Extra::new();
    f.finish(diags, &["variables", "secrets"], &mut kept);
    if !kept.is_empty() {
        extra.insert(
            "environment".into(),
            serde_json::Value::Object(kept.into_iter().collect()),
        );
    }
}

/// `NAME: value` pairs for a function's environment: names a shell accepts, values as written,
/// none of the names the agent sets for every job.
fn read_variables(diags: &mut Diagnostics, node: &Node, path: &str) -> Vec<(String, String)> {
    let Some(map) = mapping(diags, node, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in map.iter() {
        let kpath = format!("{path}.{}", key.as_str());
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
            out.push((name.to_owned(), s.as_str().to_owned()));
        }
    }
    out
}

/// At most this many labels on a function, each key and value at most `MAX_LABEL` bytes.
const MAX_LABELS: usize = 64;
const MAX_LABEL: usize = 253;

/// `labels: {key: value}` (OSCAR's service labels): what `spillway get functions -l` selects
/// on. Keys as label selectors take them; bounded in number and length.
fn read_labels(diags: &mut Diagnostics, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut labels = scalar_map(diags, node, path);
    let valid_key = |k: &str| {
        !k.is_empty()
            && k.len() <= MAX_LABEL
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    };
    labels.retain(|k, v| {
        let ok = valid_key(k) && v.len() <= MAX_LABEL;
        if !ok {
            diags.error(
                node.span(),
                &format!("{path}.{k}"),
                format!("a label key is letters, digits and `-_./`, and keys and values are at most {MAX_LABEL} bytes"),
            );
        }
        ok
    });
    if labels.len() > MAX_LABELS {
        diags.error(node.span(), path, format!("at most {MAX_LABELS} labels"));
        labels.clear();
    }
    labels
}

fn read_container(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    image: &mut Option<String>,
    (environment, secrets): (&mut BTreeMap<String, String>, &mut BTreeMap<String, Secret>),
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
        read_environment(
            diags,
            n,
            &f.child_path("environment"),
            environment,
            secrets,
            extra,
        );
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
