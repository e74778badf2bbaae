//! The typed FDL model: what a parsed file means, independent of how it was written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::diag::Location;
use crate::key::ObjectKey;
use crate::quantity::{Bytes, Millicores};

pub use super::reader::Extra;

/// One FDL document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fdl {
    pub functions: Vec<FunctionDef>,
    pub clusters: BTreeMap<String, ClusterDef>,
    pub storage_providers: Vec<StorageProvider>,
    pub extra: Extra,
}

/// Where OSCAR/SCAR meant the function to live: which list it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    /// `functions.oscar[]`; `cluster_id` is the key wrapping the service (`- fog: {…}`), absent
    /// for the newer unwrapped form (`- name: …`).
    Oscar { cluster_id: Option<String> },
    /// `functions.aws[].lambda` (SCAR).
    Aws,
}

/// How a function is executed on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Runtime {
    /// An OCI image run in a container (the default when `image` is set).
    Oci,
    /// A WASI module run by wasmtime.
    Wasm,
    /// A plain command on the host (trusted setups and tests).
    Process,
}

impl Runtime {
    pub const NAMES: &'static str = "oci, wasm, process";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "oci" => Some(Self::Oci),
            "wasm" => Some(Self::Wasm),
            "process" => Some(Self::Process),
            _ => None,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Oci => "oci",
            Self::Wasm => "wasm",
            Self::Process => "process",
        })
    }
}

/// The network a container function gets (`network:` in the FDL; carried in
/// [`FunctionDef::extra`] so older agents keep reading their deployments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own network namespace with an address on the node's bridge and outbound traffic
    /// masqueraded, as an OSCAR pod has (the default; `network: true` too).
    Outbound,
    /// Its own namespace with only a loopback device (`network: none`, or `false`).
    None,
    /// The node's own network namespace (`network: host`), only when asked.
    Host,
}

impl NetworkMode {
    pub const NAMES: &'static str = "outbound (the default), none, host";

    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "outbound" | "true" | "yes" | "on" => Some(Self::Outbound),
            "none" | "false" | "no" | "off" => Some(Self::None),
            "host" => Some(Self::Host),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::None => "none",
            Self::Host => "host",
        }
    }

    /// What a deployment asks for: `extra.network` as a name, or as the boolean that agents
    /// before the outbound default sent (`true` then meant the host's network; it now means the
    /// outbound default, which reaches the same places without sharing the node's).
    pub fn of(extra: &BTreeMap<String, serde_json::Value>) -> Self {
        match extra.get("network") {
            Some(serde_json::Value::String(s)) => Self::from_name(s).unwrap_or(Self::None),
            Some(serde_json::Value::Bool(false)) => Self::None,
            _ => Self::Outbound,
        }
    }

    /// Whether the function said so itself (and not just took the default).
    pub fn explicit(extra: &BTreeMap<String, serde_json::Value>) -> Option<Self> {
        extra.contains_key("network").then(|| Self::of(extra))
    }
}

/// One function (an OSCAR service or a SCAR Lambda function).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub platform: Platform,
    pub name: String,
    pub runtime: Runtime,
    pub image: Option<String>,
    /// The shell script, resolved against the FDL file's folder.
    pub script: Option<PathBuf>,
    /// The WASI module, resolved against the FDL file's folder.
    pub module: Option<PathBuf>,
    /// The command of a `process` function: argv, no shell.
    pub command: Option<Vec<String>>,
    pub cpu: Option<Millicores>,
    pub memory: Option<Bytes>,
    pub input: Vec<StorageRef>,
    pub output: Vec<StorageRef>,
    /// `replicas[]` and `federation.members[]`, in the order written.
    pub replicas: Vec<Replica>,
    pub federation: Option<Federation>,
    /// Seconds a queued job may wait before it is offered elsewhere.
    pub rescheduler_threshold: Option<u64>,
    /// `environment.variables` (`Variables`), values as written.
    pub environment: BTreeMap<String, String>,
    /// `environment.secrets`: set in the function's environment like variables, but never shown
    /// ([`FunctionDef::redacted`]) and sent only to the nodes that run the function.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Secret>,
    pub log_level: Option<String>,
    pub timeout: Option<Duration>,
    pub max_concurrency: Option<u32>,
    /// Agent labels a node must carry to run this function (Spillway's field; all nodes when
    /// empty).
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The service's own labels (OSCAR's `labels`): what `get functions -l` selects on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Message sources that start jobs besides the `input` folders (Spillway's `triggers`).
    #[serde(default)]
    pub triggers: Vec<super::trigger::Trigger>,
    /// `output` entries that publish files as MQTT messages.
    #[serde(default)]
    pub mqtt_outputs: Vec<super::trigger::MqttOutput>,
    /// The `storage_providers` its inputs and outputs name (credentials included).
    #[serde(default)]
    pub providers: Vec<StorageProvider>,
    /// The clusters its `oscar` replicas name (from the file's `clusters`), so the coordinator
    /// can delegate to them with the credentials written next to the function.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterDef>,
    pub extra: Extra,
    /// Where the function was defined, for messages about it later on.
    pub location: Location,
    /// Its field path in the file (`functions.oscar[0].fog`).
    pub fdl_path: String,
}

impl FunctionDef {
    /// Where `provider` keeps its objects: an S3 API (an `s3` provider, or a `minio` provider
    /// defined with an `endpoint`), or `None` for the folders under an agent's data root
    /// (`minio.default`, `local`).
    pub fn s3_settings(&self, provider: &ProviderRef) -> Option<S3Settings> {
        let defined = self.providers.iter().find(|p| &p.reference == provider);
        let get = |key: &str| {
            defined
                .and_then(|p| p.settings.get(key))
                .map(|v| v.expose().to_owned())
        };
        let endpoint = get("endpoint");
        match provider.kind.as_str() {
            "s3" => {}
            "minio" if endpoint.is_some() => {}
            _ => return None,
        }
        Some(S3Settings {
            endpoint,
            region: get("region").unwrap_or_else(|| "us-east-1".into()),
            access_key: get("access_key").unwrap_or_default(),
            secret_key: Secret(get("secret_key").unwrap_or_default()),
            verify: get("verify").is_none_or(|v| v != "false"),
        })
    }

    /// The definition as shown to people (API answers, logs): every credential replaced by
    /// [`REDACTED`] — secret provider settings, cluster passwords, endpoint header values, and
    /// `secrets` kept from OSCAR's newer FDL. Agents that run the function get the real one.
    pub fn redacted(&self) -> Self {
        let mut def = self.clone();
        for value in def.secrets.values_mut() {
            *value = Secret(REDACTED.into());
        }
        for provider in &mut def.providers {
            for (key, value) in &mut provider.settings {
                if is_secret_setting(key) {
                    *value = Secret(REDACTED.into());
                }
            }
        }
        for cluster in def.clusters.values_mut() {
            if cluster.auth_password.is_some() {
                cluster.auth_password = Some(Secret(REDACTED.into()));
            }
        }
        for replica in &mut def.replicas {
            if let ReplicaTarget::Endpoint { headers, .. } = &mut replica.target {
                headers
                    .values_mut()
                    .for_each(|v| *v = Secret(REDACTED.into()));
            }
        }
        redact_secrets(&mut def.extra);
        def
    }

    /// The OSCAR cluster id this entry was written under, if any.
    pub fn cluster_id(&self) -> Option<&str> {
        match &self.platform {
            Platform::Oscar { cluster_id } => cluster_id.as_deref(),
            Platform::Aws => None,
        }
    }
}

/// `storage_provider` of an input/output: `minio.default` is kind `minio`, id `default`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProviderRef {
    pub kind: String,
    pub id: String,
}

impl ProviderRef {
    pub fn parse(text: &str) -> Self {
        match text.split_once('.') {
            Some((kind, id)) => Self {
                kind: kind.to_owned(),
                id: id.to_owned(),
            },
            None => Self {
                kind: text.to_owned(),
                id: "default".to_owned(),
            },
        }
    }

    /// Providers whose buckets are folders under an agent's data root.
    pub fn is_local(&self) -> bool {
        matches!(self.kind.as_str(), "minio" | "local")
    }
}

impl fmt::Display for ProviderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.id)
    }
}

/// `bucket[/folder…]`: where inputs come from or outputs go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BucketPath {
    pub bucket: String,
    pub folder: Option<ObjectKey>,
}

impl BucketPath {
    /// The folder this path names under a data root.
    pub fn dir_under(&self, data_root: &Path) -> PathBuf {
        let bucket = data_root.join(&self.bucket);
        match &self.folder {
            Some(folder) => folder.under(&bucket),
            None => bucket,
        }
    }
}

impl fmt::Display for BucketPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.folder {
            Some(folder) => write!(f, "{}/{folder}", self.bucket),
            None => f.write_str(&self.bucket),
        }
    }
}

/// An `input` or `output` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRef {
    pub provider: ProviderRef,
    pub path: BucketPath,
    pub suffix: Vec<String>,
    pub prefix: Vec<String>,
}

impl StorageRef {
    /// `path` on `minio.default`, unfiltered: a folder on the nodes that run the function (or
    /// the operator's store, when the coordinator names one).
    pub fn on_nodes(path: BucketPath) -> Self {
        Self {
            provider: ProviderRef::parse("minio.default"),
            path,
            suffix: Vec::new(),
            prefix: Vec::new(),
        }
    }

    /// Whether a file with this name passes the `suffix`/`prefix` filters (empty = any).
    pub fn accepts(&self, file_name: &str) -> bool {
        let suffix_ok =
            self.suffix.is_empty() || self.suffix.iter().any(|s| file_name.ends_with(s.as_str()));
        let prefix_ok = self.prefix.is_empty()
            || self
                .prefix
                .iter()
                .any(|p| file_name.starts_with(p.as_str()));
        suffix_ok && prefix_ok
    }
}

/// Where a job may be delegated when this node cannot take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub target: ReplicaTarget,
    /// 0 is the highest priority.
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaTarget {
    /// A service on another OSCAR cluster (or Spillway coordinator) named in `clusters`.
    Oscar {
        cluster_id: String,
        service_name: String,
    },
    /// Any HTTP endpoint that takes a POST of the event.
    Endpoint {
        url: String,
        headers: BTreeMap<String, Secret>,
    },
    /// A `batch/v1` Job per job on a Kubernetes cluster (Spillway's): the connection comes from
    /// the coordinator's `[kubernetes.<cluster_id>]` (kubeconfig or in-cluster).
    Kubernetes {
        cluster_id: String,
        namespace: Option<String>,
        /// The image the Job runs (the function's `image` when absent).
        image: Option<String>,
    },
    /// An AWS Lambda function running the Spillway runner (Spillway's).
    Lambda {
        target: LambdaTarget,
        /// `Event` (asynchronous; the result comes through the callback) rather than
        /// `RequestResponse`.
        asynchronous: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LambdaTarget {
    /// `Invoke` through the Lambda API (`function_name`, optionally an ARN, in `region`).
    Function {
        name: String,
        region: Option<String>,
    },
    /// A function URL (`function_url`), SigV4-signed unless `auth: none`.
    Url { url: String, iam: bool },
}

/// `federation:` of newer OSCAR releases (its `members` become [`Replica`]s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Federation {
    pub group_id: Option<String>,
    pub topology: Option<String>,
    pub delegation: Option<String>,
}

/// A cluster of `clusters:`, the credentials used to delegate to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDef {
    pub endpoint: String,
    pub auth_user: Option<String>,
    pub auth_password: Option<Secret>,
    pub extra: Extra,
}

/// A provider of `storage_providers:` (credentials and endpoint of an S3/MinIO/… store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageProvider {
    pub reference: ProviderRef,
    pub settings: BTreeMap<String, Secret>,
}

/// How to reach an S3-compatible store (AWS S3, MinIO, moto…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `None`: AWS S3 itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
    /// TLS certificate verification (OSCAR's `verify`).
    pub verify: bool,
}

/// What a credential is shown as.
pub const REDACTED: &str = "***";

/// Settings of `storage_providers` that are credentials (an access key id names a user, like a
/// login; its secret does not leave the coordinator's store but for the nodes that need it).
fn is_secret_setting(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "password", "token", "credential", "private"]
        .iter()
        .any(|w| key.contains(w))
}

/// Every `secrets` map (and secret-looking key) kept as written in `extra`, redacted.
fn redact_secrets(extra: &mut Extra) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if key == "secrets" || is_secret_setting(key) {
                        *v = serde_json::Value::String(REDACTED.into());
                    } else {
                        walk(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    for (key, v) in extra.iter_mut() {
        if key == "secrets" || is_secret_setting(key) {
            *v = serde_json::Value::String(REDACTED.into());
        } else {
            walk(v);
        }
    }
}

/// A value that may be a credential: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(suffix: &[&str], prefix: &[&str]) -> StorageRef {
        StorageRef {
            provider: ProviderRef::parse("minio"),
            path: BucketPath {
                bucket: "b".into(),
                folder: None,
            },
            suffix: suffix.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn outputs_filter_by_suffix_and_prefix() {
        assert!(output(&[], &[]).accepts("x.avi"));
        assert!(output(&["avi"], &[]).accepts("x.avi"));
        assert!(!output(&["avi"], &[]).accepts("x.wav"));
        assert!(output(&["avi", "wav"], &["x"]).accepts("x.wav"));
        assert!(!output(&["wav"], &["y"]).accepts("x.wav"));
    }

    #[test]
    fn provider_without_id_is_the_default_one() {
        assert_eq!(ProviderRef::parse("minio").to_string(), "minio.default");
        assert_eq!(
            ProviderRef::parse("s3.my_s3"),
            ProviderRef {
                kind: "s3".into(),
                id: "my_s3".into()
            }
        );
    }

    #[test]
    fn a_redacted_definition_shows_no_credential_and_keeps_the_rest() {
        let text = r#"
functions:
  oscar:
  - edge:
      name: f
      command: 'true'
      input: [{storage_provider: s3.store, path: b/in}]
      replicas:
      - {type: endpoint, url: 'https://x', headers: {Authorization: 'Bearer hunter2'}}
      - {type: oscar, cluster_id: c1, service_name: f}
      environment:
        Variables: {MODE: fast}
        secrets: {API_KEY: hunter2}
storage_providers:
  s3:
    store: {access_key: AKIA, secret_key: hunter2, region: eu-west-1}
clusters:
  c1: {endpoint: 'https://oscar', auth_user: u, auth_password: hunter2}
"#;
        let parsed = crate::fdl::parse_str("f.yaml", text, std::path::Path::new("/"));
        let (fdl, _) = parsed.into_result().expect("valid");
        let def = &fdl.functions[0];
        let shown = serde_json::to_string(&def.redacted()).expect("json");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("AKIA") && shown.contains("eu-west-1") && shown.contains("fast"));
        assert!(
            serde_json::to_string(def)
                .expect("json")
                .contains("hunter2"),
            "the real one stays whole"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
