//! The coordinator's settings (TOML), every default applied and every path absolute.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spillway_proto::load::Liveness;

pub mod env;

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum ConfigError {
    /// cannot read {path}: {source}
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// {path}: {message}
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Name in the coordinator's certificate and in messages.
    pub name: String,
    pub state_dir: PathBuf,
    /// QUIC endpoint for agents.
    pub quic_listen: SocketAddr,
    /// HTTP API for the CLI.
    pub http_listen: SocketAddr,
    /// API connections served at once (more wait in the kernel's backlog).
    pub http_max_connections: usize,
    /// HTTPS for the API (plain HTTP only on loopback).
    pub http_tls: HttpTls,
    /// `[metrics] listen`: a plain-HTTP listener for Prometheus's scrapes of `/metrics`, apart
    /// from the API (which serves `/metrics` too). None: only the API's.
    pub metrics_listen: Option<SocketAddr>,
    pub liveness: Liveness,
    pub report_interval: Duration,
    /// Placements a handed-over job may make before it goes back to its origin.
    pub max_hops: u8,
    /// How long a peer may be away before the jobs it runs are placed elsewhere.
    pub lease_grace: Duration,
    /// Where the embedded MQTT broker listens for plain MQTT (`None`: not in plain MQTT).
    pub mqtt_listen: Option<SocketAddr>,
    /// The embedded broker's TLS listener, who may connect, and its quotas.
    pub mqtt: MqttSettings,
    /// Delegation to replicas outside the mesh (endpoints, OSCAR clusters).
    pub replicas: ReplicaSettings,
    /// Credentials of OSCAR clusters named by replicas, by cluster id; they complete (and
    /// override) the FDL's `clusters`, so passwords need not be written in FDL files.
    pub clusters: BTreeMap<String, ClusterCreds>,
    /// The user name of the OSCAR API's basic authentication (its password is the API token).
    pub oscar_user: String,
    /// The store OSCAR clients get as `minio.default` (`None`: there is none to give).
    pub oscar_minio: Option<MinioProvider>,
    /// AWS access for `lambda` replicas (`[aws]`; the usual `AWS_*` variables fill what is
    /// not written).
    pub aws: AwsSettings,
    /// Kubernetes clusters of `kubernetes` replicas, by the replica's `cluster_id`.
    pub kubernetes: BTreeMap<String, KubeCluster>,
    /// `[placement]`: the bounds and assumptions of the placement decision.
    pub placement: PlacementSettings,
    /// `[certificates]`: how long node certificates last and when agents renew them.
    pub certificates: CertificateSettings,
    /// `[retention]`: how long, and how many, finished jobs the coordinator remembers.
    pub retention: RetentionSettings,
}

/// `[retention]`: finished jobs' rows (what `get jobs`, `logs` and OSCAR's job listing show)
/// are kept `keep_finished` and at most `keep_finished_jobs`, the oldest going first; the nodes
/// keep their own (the agent's `[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    #[serde(default = "default_keep_finished", with = "humantime_years")]
    pub keep_finished: Duration,
    #[serde(default = "default_keep_finished_jobs")]
    pub keep_finished_jobs: usize,
}

fn default_keep_finished() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_keep_finished_jobs() -> usize {
    1_000_000
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            keep_finished: default_keep_finished(),
            keep_finished_jobs: default_keep_finished_jobs(),
        }
    }
}

/// `[certificates]`: node certificates last `node_lifetime`; a connected agent whose
/// certificate has less than `renew_before` left is asked to renew it over the mesh (a new key
/// and a new certificate, the old one valid until the agent has switched). An agent that was
/// away past its certificate's end (stored, shipped, powered off) is renewed when it comes back
/// within `renew_expired` of that end, and does nothing else until it has: the certificate must
/// still chain to the CA and name a member (a removed node stays removed). `"0s"`: never; such
/// agents join again with a token made for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSettings {
    #[serde(default = "default_node_lifetime", with = "humantime_years")]
    pub node_lifetime: Duration,
    #[serde(default = "default_renew_before", with = "humantime_years")]
    pub renew_before: Duration,
    #[serde(default = "default_renew_expired", with = "humantime_years")]
    pub renew_expired: Duration,
}

fn default_node_lifetime() -> Duration {
    Duration::from_secs(365 * 86_400)
}

fn default_renew_before() -> Duration {
    Duration::from_secs(30 * 86_400)
}

fn default_renew_expired() -> Duration {
    Duration::from_secs(30 * 86_400)
}

impl Default for CertificateSettings {
    fn default() -> Self {
        Self {
            node_lifetime: default_node_lifetime(),
            renew_before: default_renew_before(),
            renew_expired: default_renew_expired(),
        }
    }
}

impl CertificateSettings {
    fn check(&self) -> Result<(), String> {
        if self.node_lifetime < Duration::from_secs(10) {
            return Err(format!(
                "certificates.node_lifetime must be at least 10s, not {}",
                humantime::format_duration(self.node_lifetime)
            ));
        }
        if self.renew_before.is_zero() || self.renew_before >= self.node_lifetime {
            return Err(format!(
                "certificates.renew_before ({}) must be more than 0 and less than certificates.node_lifetime ({}): agents renew that long before expiry",
                humantime::format_duration(self.renew_before),
                humantime::format_duration(self.node_lifetime)
            ));
        }
        Ok(())
    }
}

/// `[placement]`: what the placement core is told about money and about replicas, which send
/// no load reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSettings {
    /// Most one job may cost on an elastic replica (USD); unset: no bound.
    pub cost_bound_usd: Option<f64>,
    /// Most GB-seconds elastic replicas (Lambda) may be committed in any hour; unset: none.
    pub elastic_budget_gb_s_per_hour: Option<f64>,
    /// Lambda's price per GB-second (x86, us-east-1 on-demand by default).
    #[serde(default = "default_lambda_price")]
    pub lambda_usd_per_gb_s: f64,
    /// Jobs a cluster or endpoint replica is assumed to run at once (it reports no load: the
    /// coordinator counts what it has placed there and not yet seen finish).
    #[serde(default = "default_replica_slots")]
    pub replica_slots: u32,
    /// Expected time from placing a job on a cluster or endpoint replica to its function
    /// running (pod scheduling, container start), and on Lambda (a start without a warm
    /// instance). Equal by default, so that the FDL's `priority` alone orders the replicas; a
    /// later tier is taken first only when it is known to start the job sooner and the first
    /// would make it wait past its threshold.
    #[serde(default = "default_cluster_start", with = "humantime_serde_req")]
    pub cluster_start: Duration,
    #[serde(default = "default_lambda_start", with = "humantime_serde_req")]
    pub lambda_start: Duration,
}

fn default_lambda_price() -> f64 {
    0.000_016_666_7
}
fn default_replica_slots() -> u32 {
    8
}
fn default_cluster_start() -> Duration {
    Duration::from_secs(1)
}
fn default_lambda_start() -> Duration {
    Duration::from_secs(1)
}

impl Default for PlacementSettings {
    fn default() -> Self {
        Self {
            cost_bound_usd: None,
            elastic_budget_gb_s_per_hour: None,
            lambda_usd_per_gb_s: default_lambda_price(),
            replica_slots: default_replica_slots(),
            cluster_start: default_cluster_start(),
            lambda_start: default_lambda_start(),
        }
    }
}

impl PlacementSettings {
    fn check(&self) -> Result<(), String> {
        let positive = |name: &str, v: Option<f64>| match v {
            Some(x) if !x.is_finite() || x < 0.0 => Err(format!(
                "placement.{name} must be a number of at least 0, not {x}"
            )),
            _ => Ok(()),
        };
        positive("cost_bound_usd", self.cost_bound_usd)?;
        positive(
            "elastic_budget_gb_s_per_hour",
            self.elastic_budget_gb_s_per_hour,
        )?;
        positive("lambda_usd_per_gb_s", Some(self.lambda_usd_per_gb_s))?;
        if self.replica_slots == 0 || self.replica_slots > 100_000 {
            return Err(format!(
                "placement.replica_slots must be between 1 and 100000, not {}",
                self.replica_slots
            ));
        }
        Ok(())
    }
}

/// `[aws]`: region, endpoint and keys for Lambda.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    pub region: Option<String>,
    /// Another Lambda API endpoint than AWS's (a local emulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// A file holding the secret key (preferred over writing it here).
    pub secret_access_key_file: Option<PathBuf>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// `[kubernetes.<cluster_id>]`: how Jobs are made on one cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeCluster {
    /// A kubeconfig file; without one, `KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account, as kubectl finds them.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (its current one when absent).
    pub context: Option<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub service_account: Option<String>,
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Finished Jobs are removed by Kubernetes after this many seconds.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
    /// The image whose `runner_path` is the static `spillway-agent` (Spillway's agent image, as
    /// `cross/build.sh --images` makes it, pushed where the cluster pulls from); an init
    /// container runs its `install-runner` to put it into the Job's pod, so any function image
    /// works. No default: no registry holds Spillway's image for you, and a replica without
    /// one is refused at `spillway apply` with how to make it ([`missing_runner_image`]).
    pub runner_image: Option<String>,
    #[serde(default = "default_runner_path")]
    pub runner_path: String,
}

fn default_namespace() -> String {
    "default".into()
}

fn default_ttl() -> i32 {
    600
}

/// What to do when `[kubernetes.<cluster_id>] runner_image` is not set.
pub fn missing_runner_image(cluster_id: &str) -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "kubernetes replicas on cluster `{cluster_id}` need Spillway's runner image, and [kubernetes.{cluster_id}] runner_image is not set in coordinator.toml: build it with `cross/build.sh --images`, push it where the cluster pulls from (`skopeo copy --all oci-archive:$CARGO_TARGET_DIR/images/spillway-agent.oci.tar:{version} docker://REGISTRY/spillway-agent:{version}`), then set runner_image = \"REGISTRY/spillway-agent:{version}\" and restart the coordinator"
    )
}

fn default_runner_path() -> String {
    "/usr/local/bin/spillway-agent".into()
}

impl Default for KubeCluster {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: default_namespace(),
            service_account: None,
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            ttl_seconds_after_finished: default_ttl(),
            runner_image: None,
            runner_path: default_runner_path(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSettings {
    /// How long one request to a replica may take before it counts as unanswered.
    pub timeout: Duration,
    /// The coordinator's API as replicas reach it (presigned input and callback URLs); by
    /// default `http://` + the HTTP listen address.
    pub public_url: Option<String>,
    /// How long presigned URLs given to replicas stay valid.
    pub url_ttl: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(20),
            public_url: None,
            url_ttl: Duration::from_secs(3600),
        }
    }
}

/// An OSCAR cluster's endpoint and basic-auth credentials.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterCreds {
    pub endpoint: Option<String>,
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    /// A file holding the password (preferred over writing it here).
    pub auth_password_file: Option<PathBuf>,
}

impl std::fmt::Debug for ClusterCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCreds")
            .field("endpoint", &self.endpoint)
            .field("auth_user", &self.auth_user)
            .field("auth_password", &self.auth_password.as_ref().map(|_| "***"))
            .field("auth_password_file", &self.auth_password_file)
            .finish()
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            name: "coordinator".into(),
            state_dir: PathBuf::from("/var/lib/spillway-coordinator"),
            quic_listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            http_max_connections: 256,
            metrics_listen: None,
            http_tls: HttpTls::Off,
            liveness: Liveness::default(),
            report_interval: Duration::from_secs(1),
            max_hops: spillway_placement::handover::DEFAULT_MAX_HOPS,
            lease_grace: Duration::from_secs(3),
            mqtt_listen: None,
            mqtt: MqttSettings::default(),
            replicas: ReplicaSettings::default(),
            clusters: BTreeMap::new(),
            oscar_user: "oscar".into(),
            oscar_minio: None,
            aws: AwsSettings::default(),
            kubernetes: BTreeMap::new(),
            placement: PlacementSettings::default(),
            certificates: CertificateSettings::default(),
            retention: RetentionSettings::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    state_dir: Option<PathBuf>,
    quic: Option<Listen>,
    http: Option<HttpFile>,
    metrics: Option<Listen>,
    mqtt: Option<MqttFile>,
    #[serde(default, with = "humantime_serde_opt")]
    report_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    suspect_after: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    down_after: Option<Duration>,
    max_hops: Option<u8>,
    #[serde(default, with = "humantime_serde_opt")]
    lease_grace: Option<Duration>,
    replicas: Option<ReplicasFile>,
    #[serde(default)]
    clusters: BTreeMap<String, ClusterCreds>,
    oscar: Option<OscarFile>,
    aws: Option<AwsSettings>,
    #[serde(default)]
    kubernetes: BTreeMap<String, KubeCluster>,
    placement: Option<PlacementSettings>,
    certificates: Option<CertificateSettings>,
    retention: Option<RetentionSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicasFile {
    #[serde(default, with = "humantime_serde_opt")]
    timeout: Option<Duration>,
    public_url: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    url_ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OscarFile {
    user: Option<String>,
    minio_provider: Option<MinioProvider>,
}

/// `[oscar.minio_provider]`: the S3-compatible store OSCAR clients are told is `minio.default`
/// (`GET /system/config`). Its keys are handed to every caller allowed to read the API, so they
/// must be a user's with access to the functions' buckets, never the store's admin keys.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinioProvider {
    pub endpoint: String,
    #[serde(default)]
    pub region: String,
    #[serde(default = "yes")]
    pub verify: bool,
    pub access_key: String,
    #[serde(default)]
    pub secret_key: Option<String>,
    /// A file holding the secret key (preferred over writing it here).
    pub secret_key_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for MinioProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinioProvider")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("verify", &self.verify)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// `[mqtt]`: the embedded broker. Every client proves who it is: agents with their mesh
/// certificate on `tls_listen`, people and devices with `spillway mqtt user add` credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// MQTT over TLS, with a certificate from the mesh CA (`spillway mqtt ca` prints the CA).
    pub tls_listen: Option<SocketAddr>,
    /// Names (DNS or IP) clients use to reach the TLS listener, put in its certificate.
    pub tls_names: Vec<String>,
    /// Clients without credentials may do anything: only on loopback listeners, on request.
    pub allow_anonymous: bool,
    /// The largest message (payload) a client may publish.
    pub max_payload: usize,
    /// Topics that may hold a retained message, and the largest retained message.
    pub max_retained: usize,
    pub max_retained_bytes: usize,
    /// QoS 1/2 messages in flight per connection.
    pub max_inflight: u16,
    /// Client connections at once.
    pub max_connections: usize,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            tls_listen: None,
            tls_names: Vec::new(),
            allow_anonymous: false,
            max_payload: 8 << 20,
            max_retained: 1000,
            max_retained_bytes: 64 << 10,
            max_inflight: 100,
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttFile {
    listen: Option<SocketAddr>,
    tls_listen: Option<SocketAddr>,
    #[serde(default)]
    tls_names: Vec<String>,
    #[serde(default)]
    allow_anonymous: bool,
    max_payload: Option<Size>,
    max_retained: Option<usize>,
    max_retained_bytes: Option<Size>,
    max_inflight: Option<u16>,
    max_connections: Option<usize>,
}

/// A size as `"4Ki"`, `"8Mi"` or a number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            Self::Bytes(n) => Ok(*n),
            Self::Text(t) => spillway_proto::quantity::Bytes::parse(t)
                .map(|b| b.0)
                .map_err(|e| e.to_string()),
        }
    }
}

impl MqttSettings {
    fn from_file(m: MqttFile) -> Result<Self, String> {
        let d = Self::default();
        let bytes = |b: Option<Size>, default: usize, what: &str| {
            let n = match b {
                Some(s) => s.bytes().map_err(|e| format!("mqtt.{what}: {e}"))?,
                None => default as u64,
            };
            if !(1..=256 << 20).contains(&n) {
                return Err(format!(
                    "mqtt.{what} must be between 1 byte and 256Mi, not {n}"
                ));
            }
            Ok(n as usize)
        };
        let count = |n: Option<usize>, default: usize, max: usize, what: &str| {
            let n = n.unwrap_or(default);
            if !(1..=max).contains(&n) {
                return Err(format!("mqtt.{what} must be between 1 and {max}, not {n}"));
            }
            Ok(n)
        };
        Ok(Self {
            tls_listen: m.tls_listen,
            tls_names: m.tls_names,
            allow_anonymous: m.allow_anonymous,
            max_payload: bytes(m.max_payload, d.max_payload, "max_payload")?,
            max_retained: count(m.max_retained, d.max_retained, 1_000_000, "max_retained")?,
            max_retained_bytes: bytes(
                m.max_retained_bytes,
                d.max_retained_bytes,
                "max_retained_bytes",
            )?,
            max_inflight: count(
                m.max_inflight.map(usize::from),
                d.max_inflight.into(),
                65_535,
                "max_inflight",
            )? as u16,
            max_connections: count(
                m.max_connections,
                d.max_connections,
                1_000_000,
                "max_connections",
            )?,
        })
    }

    /// Anonymous access only where nobody but this host can connect.
    pub fn check(&self, plain: Option<SocketAddr>) -> Result<(), String> {
        if !self.allow_anonymous {
            return Ok(());
        }
        for addr in plain.iter().chain(self.tls_listen.iter()) {
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "mqtt.allow_anonymous is only for loopback listeners, and {addr} is not: give people and devices credentials with `spillway mqtt user add` instead"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listen {
    listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    listen: Option<SocketAddr>,
    max_connections: Option<usize>,
    /// `mesh` (a certificate from the mesh CA) or `off` (plain HTTP, loopback only).
    tls: Option<String>,
    #[serde(default)]
    tls_names: Vec<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// How the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// Plain HTTP: only on a loopback address.
    Off,
    /// A certificate from the mesh CA for these names (plus the coordinator's, `localhost`,
    /// `127.0.0.1` and the listen address); the CLI pins the CA from its client config.
    Mesh { names: Vec<String> },
    /// The operator's certificate chain and key (PEM).
    Files { cert: PathBuf, key: PathBuf },
}

impl HttpTls {
    /// Reads `[http] tls`, `cert_file`, `key_file`: unset means the mesh CA's certificate;
    /// plain HTTP only when asked for (`tls = "off"`), and only on loopback.
    fn from_file(h: &HttpFile, listen: SocketAddr, base: &Path) -> Result<Self, String> {
        let tls = match (&h.cert_file, &h.key_file, h.tls.as_deref()) {
            (Some(cert), Some(key), None | Some("files")) => Self::Files {
                cert: base.join(cert),
                key: base.join(key),
            },
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err("http: give cert_file and key_file together".into());
            }
            (Some(_), Some(_), Some(other)) => {
                return Err(format!(
                    "http.tls = \"{other}\" but cert_file and key_file are given: drop one"
                ));
            }
            (None, None, Some("mesh")) => Self::Mesh {
                names: h.tls_names.clone(),
            },
            (None, None, Some("off")) => Self::Off,
            (None, None, None) => Self::Mesh {
                names: h.tls_names.clone(),
            },
            (None, None, Some(other)) => {
                return Err(format!(
                    "http.tls = \"{other}\": use \"mesh\", \"off\", or cert_file and key_file"
                ));
            }
        };
        tls.check(listen)?;
        Ok(tls)
    }

    /// Plain HTTP carries the bearer token in clear: loopback only.
    pub fn check(&self, listen: SocketAddr) -> Result<(), String> {
        if *self == Self::Off && !listen.ip().is_loopback() {
            return Err(format!(
                "plain HTTP is only for loopback, and {listen} is not: drop http.tls = \"off\" (the API then gets a certificate from the mesh CA) or give cert_file and key_file"
            ));
        }
        Ok(())
    }
}

/// `text` as a duration of at most `max_days`; `like` shows the form in the error.
fn bounded_duration(text: &str, max_days: u64, like: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like {like}: {e}"))?;
    if d > Duration::from_secs(max_days * 86_400) {
        return Err(format!("`{text}` is too long: at most {max_days} days"));
    }
    Ok(d)
}

/// Durations of up to ten years (certificate lifetimes), which no timer waits for whole.
mod humantime_years {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::bounded_duration(&text, 3_650, "\"365d\" or \"30d\"")
            .map_err(serde::de::Error::custom)
    }
}

/// A duration that has a default (the field's `serde(default)`), read like the optional ones.
mod humantime_serde_req {
    use std::time::Duration;

    use serde::{Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::humantime_serde_opt::deserialize(d)?
            .ok_or_else(|| D::Error::custom("a duration like \"1s\" is needed"))
    }
}

/// `"1s"`, `"500ms"`, as humantime writes them, up to a month: no setting of this file needs
/// more, and beyond, timers overflow.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            super::bounded_duration(&t, 31, "\"1s\" or \"500ms\"").map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

impl CoordinatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::iter::empty())
    }

    /// The file at `path` with the settings among `vars` (the process environment, see
    /// `env::VARIABLES`) over it: how `spillway serve` reads its config.
    pub fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = env::overlay(&text, vars).map_err(invalid)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(invalid)
    }

    pub fn from_toml(text: &str, base: &Path) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut c = Self::default();
        if let Some(name) = file.name {
            c.name = name;
        }
        if let Some(dir) = file.state_dir {
            c.state_dir = base.join(dir);
        }
        if let Some(q) = file.quic {
            c.quic_listen = q.listen;
        }
        if let Some(h) = file.http {
            if let Some(l) = h.listen {
                c.http_listen = l;
            }
            c.http_tls = HttpTls::from_file(&h, c.http_listen, base)?;
            if let Some(n) = h.max_connections {
                if !(1..=65_536).contains(&n) {
                    return Err(format!(
                        "http.max_connections must be between 1 and 65536, not {n}"
                    ));
                }
                c.http_max_connections = n;
            }
        } else {
            c.http_tls = HttpTls::Mesh { names: Vec::new() };
        }
        c.metrics_listen = file.metrics.map(|m| m.listen);
        if let Some(m) = file.mqtt {
            c.mqtt_listen = m.listen;
            c.mqtt = MqttSettings::from_file(m)?;
            c.mqtt.check(c.mqtt_listen)?;
        }
        if let Some(d) = file.report_interval {
            c.report_interval = d;
        }
        if let Some(d) = file.suspect_after {
            c.liveness.suspect_after = d;
        }
        if let Some(d) = file.down_after {
            c.liveness.down_after = d;
        }
        if let Some(h) = file.max_hops {
            if h == 0 {
                return Err("max_hops must be at least 1 (it counts placements on peers)".into());
            }
            c.max_hops = h;
        }
        if let Some(d) = file.lease_grace {
            c.lease_grace = d;
        }
        if let Some(r) = file.replicas {
            if let Some(t) = r.timeout {
                c.replicas.timeout = t;
            }
            if let Some(u) = r.public_url {
                if !u.starts_with("http://") && !u.starts_with("https://") {
                    return Err(format!(
                        "replicas.public_url `{u}` must be an http:// or https:// URL (how replicas reach this coordinator's API)"
                    ));
                }
                c.replicas.public_url = Some(u.trim_end_matches('/').to_owned());
            }
            if let Some(t) = r.url_ttl {
                c.replicas.url_ttl = t;
            }
        }
        for (id, mut creds) in file.clusters {
            if let Some(p) = &creds.auth_password_file {
                let p = base.join(p);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    format!("clusters.{id}.auth_password_file {}: {e}", p.display())
                })?;
                creds.auth_password = Some(text.trim().to_owned());
            }
            c.clusters.insert(id, creds);
        }
        if let Some(p) = file.placement {
            p.check()?;
            c.placement = p;
        }
        if let Some(certs) = file.certificates {
            certs.check()?;
            c.certificates = certs;
        }
        if let Some(retention) = file.retention {
            c.retention = retention;
        }
        if let Some(oscar) = file.oscar {
            if let Some(user) = oscar.user {
                c.oscar_user = user;
            }
            if let Some(mut minio) = oscar.minio_provider {
                if !minio.endpoint.starts_with("http://") && !minio.endpoint.starts_with("https://")
                {
                    return Err(format!(
                        "oscar.minio_provider.endpoint `{}` must be an http:// or https:// URL",
                        minio.endpoint
                    ));
                }
                if let Some(p) = &minio.secret_key_file {
                    let p = base.join(p);
                    let text = std::fs::read_to_string(&p).map_err(|e| {
                        format!("oscar.minio_provider.secret_key_file {}: {e}", p.display())
                    })?;
                    minio.secret_key = Some(text.trim().to_owned());
                }
                if minio.secret_key.is_none() {
                    return Err("oscar.minio_provider needs secret_key_file (or secret_key)".into());
                }
                c.oscar_minio = Some(minio);
            }
        }
        if let Some(mut aws) = file.aws {
            if let Some(p) = &aws.secret_access_key_file {
                let p = base.join(p);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| format!("aws.secret_access_key_file {}: {e}", p.display()))?;
                aws.secret_access_key = Some(text.trim().to_owned());
            }
            c.aws = aws;
        }
        for (id, mut cluster) in file.kubernetes {
            cluster.kubeconfig = cluster.kubeconfig.map(|p| base.join(p));
            c.kubernetes.insert(id, cluster);
        }
        if c.liveness.down_after <= c.liveness.suspect_after {
            return Err("down_after must be longer than suspect_after".into());
        }
        if c.report_interval >= c.liveness.suspect_after {
            return Err(
                "report_interval must be shorter than suspect_after, or healthy nodes look suspect"
                    .into(),
            );
        }
        Ok(c)
    }

    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("coordinator.redb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_lifetimes_are_read_and_a_window_as_long_as_the_lifetime_is_refused() {
        let c = CoordinatorConfig::from_toml(
            "[certificates]\nnode_lifetime = \"90d\"\nrenew_before = \"10d\"\nrenew_expired = \"0s\"\n",
            Path::new("/etc/sp"),
        )
        .unwrap();
        assert_eq!(c.certificates.renew_expired, Duration::ZERO, "never");
        assert_eq!(
            c.certificates.node_lifetime,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            c.certificates.renew_before,
            Duration::from_secs(10 * 86_400)
        );
        let d = CoordinatorConfig::from_toml("", Path::new("/etc/sp")).unwrap();
        assert_eq!(d.certificates, CertificateSettings::default());
        for (toml, says) in [
            (
                "[certificates]\nnode_lifetime = \"1h\"\nrenew_before = \"1h\"\n",
                "certificates.renew_before (1h) must be more than 0 and less than certificates.node_lifetime (1h)",
            ),
            (
                "[certificates]\nnode_lifetime = \"5s\"\nrenew_before = \"1s\"\n",
                "certificates.node_lifetime must be at least 10s, not 5s",
            ),
        ] {
            let err = CoordinatorConfig::from_toml(toml, Path::new("/etc/sp")).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn durations_and_listen_addresses_are_read() {
        let c = CoordinatorConfig::from_toml(
            "state_dir = \"st\"\nsuspect_after = \"2s\"\ndown_after = \"5s\"\n[quic]\nlisten = \"127.0.0.1:9000\"\n",
            Path::new("/etc/sp"),
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/sp/st"));
        assert_eq!(c.liveness.suspect_after, Duration::from_secs(2));
        assert_eq!(c.quic_listen.port(), 9000);
    }

    #[test]
    fn the_store_for_oscar_clients_is_read_with_its_key_file_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("minio.key"), "user-secret\n").unwrap();
        let c = CoordinatorConfig::from_toml(
            "[oscar.minio_provider]\nendpoint = \"https://minio.lab:9000\"\naccess_key = \"fn-user\"\nsecret_key_file = \"minio.key\"\n",
            dir.path(),
        )
        .unwrap();
        let m = c.oscar_minio.as_ref().expect("configured");
        assert_eq!(m.secret_key.as_deref(), Some("user-secret"));
        assert!(m.verify, "TLS is checked unless said otherwise");
        assert!(!format!("{c:?}").contains("user-secret"));
        for (bad, says) in [
            (
                "endpoint = \"minio:9000\"\naccess_key = \"a\"\nsecret_key = \"s\"",
                "http:// or https://",
            ),
            (
                "endpoint = \"http://m\"\naccess_key = \"a\"",
                "secret_key_file",
            ),
        ] {
            let err = CoordinatorConfig::from_toml(
                &format!("[oscar.minio_provider]\n{bad}\n"),
                dir.path(),
            )
            .expect_err("refused");
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn replica_settings_and_cluster_credentials_are_read_with_password_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c2.pass"), "s3cret\n").unwrap();
        let c = CoordinatorConfig::from_toml(
            "[replicas]\ntimeout = \"2s\"\npublic_url = \"http://10.0.0.1:7480/\"\n[clusters.c2]\nendpoint = \"http://c2\"\nauth_user = \"oscar\"\nauth_password_file = \"c2.pass\"\n[oscar]\nuser = \"ops\"\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!(c.replicas.timeout, Duration::from_secs(2));
        assert_eq!(
            c.replicas.public_url.as_deref(),
            Some("http://10.0.0.1:7480")
        );
        assert_eq!(c.clusters["c2"].auth_password.as_deref(), Some("s3cret"));
        assert!(!format!("{:?}", c.clusters["c2"]).contains("s3cret"));
        assert_eq!(c.oscar_user, "ops");
        let err = CoordinatorConfig::from_toml(
            "[clusters.c2]\nauth_password_file = \"missing\"\n",
            dir.path(),
        )
        .unwrap_err();
        assert!(err.contains("clusters.c2.auth_password_file"), "{err}");
        let err =
            CoordinatorConfig::from_toml("[replicas]\npublic_url = \"10.0.0.1\"\n", dir.path())
                .unwrap_err();
        assert!(err.contains("public_url"), "{err}");
    }

    #[test]
    fn placement_bounds_are_read_and_nonsense_is_refused_with_the_key() {
        let c = CoordinatorConfig::from_toml(
            "[placement]\ncost_bound_usd = 0.002\nelastic_budget_gb_s_per_hour = 5000\nreplica_slots = 3\nlambda_start = \"5s\"\n",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.placement.cost_bound_usd, Some(0.002));
        assert_eq!(c.placement.elastic_budget_gb_s_per_hour, Some(5000.0));
        assert_eq!(c.placement.replica_slots, 3);
        assert_eq!(c.placement.lambda_start, Duration::from_secs(5));
        assert_eq!(c.placement.cluster_start, Duration::from_secs(1), "default");
        let defaults = CoordinatorConfig::from_toml("", Path::new("/")).unwrap();
        assert_eq!(defaults.placement, PlacementSettings::default());
        for (text, says) in [
            (
                "[placement]\ncost_bound_usd = -1\n",
                "placement.cost_bound_usd must be",
            ),
            (
                "[placement]\nelastic_budget_gb_s_per_hour = nan\n",
                "placement.elastic_budget_gb_s_per_hour must be",
            ),
            (
                "[placement]\nreplica_slots = 0\n",
                "placement.replica_slots must be",
            ),
            ("[placement]\nbudget = 5\n", "unknown field `budget`"),
            ("[placement]\ncluster_start = \"soon\"\n", "not a duration"),
        ] {
            let err = CoordinatorConfig::from_toml(text, Path::new("/")).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_inconsistent_timers_are_refused() {
        assert!(CoordinatorConfig::from_toml("sate_dir = \"x\"", Path::new("/")).is_err());
        let err = CoordinatorConfig::from_toml(
            "suspect_after = \"10s\"\ndown_after = \"5s\"",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("down_after"), "{err}");
    }

    #[test]
    fn the_api_is_https_unless_plain_http_is_asked_for_on_loopback() {
        let read = |text: &str| CoordinatorConfig::from_toml(text, Path::new("/"));
        let mesh = HttpTls::Mesh { names: vec![] };
        assert_eq!(read("").unwrap().http_tls, mesh);
        assert_eq!(
            read("[http]\nlisten = \"127.0.0.1:7480\"\n")
                .unwrap()
                .http_tls,
            mesh
        );
        let off = "[http]\nlisten = \"127.0.0.1:7480\"\ntls = \"off\"\n";
        assert_eq!(read(off).unwrap().http_tls, HttpTls::Off);
        let err = read("[http]\nlisten = \"0.0.0.0:7480\"\ntls = \"off\"\n").unwrap_err();
        assert!(err.contains("plain HTTP is only for loopback"), "{err}");
        let err = read("[http]\ncert_file = \"a.pem\"\n").unwrap_err();
        assert!(err.contains("together"), "{err}");
    }

    #[test]
    fn mqtt_settings_are_read_bounded_and_anonymous_only_on_loopback() {
        let c = CoordinatorConfig::from_toml(
            "[mqtt]\nlisten = \"127.0.0.1:1883\"\ntls_listen = \"0.0.0.0:8883\"\ntls_names = [\"broker.lan\"]\nmax_payload = \"1Mi\"\nmax_retained_bytes = 512\n",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.mqtt.max_payload, 1 << 20);
        assert_eq!(c.mqtt.max_retained_bytes, 512);
        assert_eq!(c.mqtt.tls_names, ["broker.lan"]);
        assert!(!c.mqtt.allow_anonymous);
        let loopback = "[mqtt]\nlisten = \"127.0.0.1:1883\"\nallow_anonymous = true\n";
        assert!(CoordinatorConfig::from_toml(loopback, Path::new("/")).is_ok());
        for bad in [
            "[mqtt]\nlisten = \"0.0.0.0:1883\"\nallow_anonymous = true\n",
            "[mqtt]\nlisten = \"127.0.0.1:1883\"\ntls_listen = \"10.0.0.1:8883\"\nallow_anonymous = true\n",
        ] {
            let err = CoordinatorConfig::from_toml(bad, Path::new("/")).unwrap_err();
            assert!(err.contains("only for loopback"), "{err}");
        }
        for (bad, what) in [
            ("max_payload = \"1Gi\"", "max_payload"),
            ("max_payload = \"lots\"", "max_payload"),
            ("max_retained = 0", "max_retained"),
            ("max_connections = 0", "max_connections"),
        ] {
            let err = CoordinatorConfig::from_toml(&format!("[mqtt]\n{bad}\n"), Path::new("/"))
                .unwrap_err();
            assert!(err.contains(what), "{bad}: {err}");
        }
    }
}
