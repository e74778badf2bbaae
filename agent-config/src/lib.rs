//! The agent's TOML configuration file, `agent.toml`: read by the agent and written by
//! `spillway flash`, which checks what it writes with this same parser. Relative paths resolve
//! against the file's folder, so a config and its FDL files can be moved around together.
//! [`platform`] is the OS/architecture a node pulls images for, [`registry`] how it reaches
//! each registry.

pub mod platform;
pub mod registry;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spillway_proto::quantity::{Bytes, Millicores};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum ConfigError {
    /// cannot read config file {path}: {source}
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// invalid config file {path}: {message}
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_name: Option<String>,
    data_root: PathBuf,
    state_dir: PathBuf,
    #[serde(default)]
    functions: Vec<PathBuf>,
    cluster_id: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    resources: RawResources,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    logs: RawLogs,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    disk: RawDisk,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    wasm: RawWasm,
    #[serde(default)]
    oci: RawOci,
    #[serde(default)]
    process: RawProcess,
    #[serde(default)]
    registries: std::collections::BTreeMap<String, registry::RegistrySettings>,
    join: Option<RawJoin>,
    mqtt: Option<RawMqtt>,
    metrics: Option<RawMetrics>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    broker: String,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    keep_alive_secs: Option<u64>,
    max_payload: Option<Memory>,
    publish_timeout_secs: Option<u64>,
    #[serde(default)]
    mesh_identity: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoin {
    coordinator: String,
    token_file: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOci {
    pids_limit: Option<i64>,
    tmp_size: Option<Memory>,
    image_store_max: Option<Memory>,
    kill_grace_secs: Option<u64>,
    platform: Option<String>,
    network_bridge: Option<String>,
    network_subnet: Option<String>,
    cni_path: Option<Vec<PathBuf>>,
    cni_conflist: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    reserved_memory: Option<Memory>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    max_bytes_per_stream: Option<usize>,
    keep_jobs: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    max_batch: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_finished_days: Option<u64>,
    keep_finished_jobs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    min_free: Option<Memory>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWasm {
    memory_reservation: Option<Memory>,
    memory_guard_size: Option<Memory>,
    pooling: Option<bool>,
    pool_instances: Option<u32>,
}

/// A quantity as people write it in TOML: `2`, `0.5` or `"500m"`; `"512Mi"` or `1073741824`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum QuantityText {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl QuantityText {
    fn text(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Integer(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "QuantityText")]
struct Cpu(Millicores);

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "QuantityText")]
struct Memory(Bytes);

impl TryFrom<QuantityText> for Cpu {
    type Error = String;
    fn try_from(q: QuantityText) -> Result<Self, String> {
        Millicores::parse(&q.text())
            .map(Self)
            .map_err(|e| e.to_string())
    }
}

impl TryFrom<QuantityText> for Memory {
    type Error = String;
    fn try_from(q: QuantityText) -> Result<Self, String> {
        Bytes::parse(&q.text()).map(Self).map_err(|e| e.to_string())
    }
}

/// The agent's settings, with every default applied and every path absolute.
/// Container settings (`[oci]`) and registry access (`[registries."HOST"]`).
#[derive(Debug, Clone)]
pub struct OciConfig {
    pub pids_limit: i64,
    pub tmp_size: Bytes,
    pub image_store_max: Bytes,
    pub kill_grace: Duration,
    pub platform: platform::Platform,
    pub registries: registry::Registries,
    pub network: ContainerNetwork,
}

/// How containers with `network: outbound` (the default) reach out: their own network
/// namespace wired by the standard CNI plugins (Debian's `containernetworking-plugins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNetwork {
    /// The built-in network's bridge (`oci.network_bridge`, `spillway0`).
    pub bridge: String,
    /// The built-in network's addresses (`oci.network_subnet`, `10.93.0.0/24`).
    pub subnet: String,
    /// Where CNI plugins are looked for (`oci.cni_path`).
    pub cni_path: Vec<PathBuf>,
    /// The operator's own CNI network list, used instead of the built-in bridge.
    pub conflist: Option<PathBuf>,
}

impl ContainerNetwork {
    /// Checks a bridge name (a Linux interface name) and a subnet (`A.B.C.D/N`, N from 8 to 30).
    pub fn new(bridge: String, subnet: String) -> Result<Self, String> {
        let ok_name = !bridge.is_empty()
            && bridge.len() <= 15
            && bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return Err(format!(
                "oci.network_bridge `{bridge}`: an interface name of 1 to 15 letters, digits, '-' or '_'"
            ));
        }
        let parsed = subnet.split_once('/').and_then(|(addr, len)| {
            Some((
                addr.parse::<std::net::Ipv4Addr>().ok()?,
                len.parse::<u8>().ok()?,
            ))
        });
        match parsed {
            Some((addr, len))
                if (8..=30).contains(&len) && u32::from(addr) & (u32::MAX >> len) == 0 => {}
            _ => {
                return Err(format!(
                    "oci.network_subnet `{subnet}`: an IPv4 network such as 10.93.0.0/24 (prefix 8 to 30, no host bits set)"
                ));
            }
        }
        Ok(Self {
            bridge,
            subnet,
            cni_path: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
            conflist: None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub data_root: PathBuf,
    pub state_dir: PathBuf,
    pub functions: Vec<PathBuf>,
    /// Which `functions.oscar[]` entries this node runs; all of them when unset.
    pub cluster_id: Option<String>,
    /// Matched by functions' `node_selector` when the coordinator deploys them.
    pub labels: std::collections::BTreeMap<String, String>,
    pub resources: Resources,
    pub defaults: Defaults,
    pub logs: LogLimits,
    pub journal: JournalSettings,
    /// `[disk] min_free`: below this much free space (on the state folder's or the data
    /// root's file system) the agent takes no new inputs; 0: never.
    pub disk_min_free: Bytes,
    /// `[metrics] listen`: where the agent serves `/metrics` over plain HTTP (opt-in: a Pi's
    /// agent opens no port it was not asked to).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[retention]`: how long, and how many, finished jobs the journal keeps.
    pub retention: RetentionSettings,
    pub wasm: WasmSettings,
    pub oci: OciConfig,
    /// `[process] user`: who `process` functions run as (`nobody` unless set; `root` keeps
    /// them as the agent's own user).
    pub process_user: String,
    /// Join a mesh at start when this node has not joined yet (a flashed card's first boot).
    pub join: Option<JoinSettings>,
    pub mqtt: Option<MqttSettings>,
}

/// `[mqtt]`: the broker that MQTT triggers subscribe to and MQTT outputs publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Stable, so the broker keeps this node's session (and its messages) while it is away.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) for `mqtts://`; the system's bundle when unset.
    pub ca_file: Option<PathBuf>,
    pub keep_alive: Duration,
    /// Larger payloads are refused (recorded as a failed job, acknowledged, never stored).
    pub max_payload: Bytes,
    /// How long an output message may wait for the broker's acknowledgement.
    pub publish_timeout: Duration,
    /// Prove this node's mesh identity (its certificate) to the coordinator's broker over
    /// `mqtts://`, trusting only the mesh CA: no password to keep.
    pub mesh_identity: bool,
}

impl MqttSettings {
    /// `mqtt://host[:1883]`, `mqtts://host[:8883]` or `host[:port]`.
    fn parse_broker(text: &str) -> Result<(String, u16, bool), String> {
        let (tls, rest) = if let Some(r) = text.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("mqtt://") {
            (false, r)
        } else if text.contains("://") {
            return Err(format!(
                "mqtt.broker `{text}`: use mqtt://HOST:PORT or mqtts://HOST:PORT"
            ));
        } else {
            (false, text)
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(port) if port > 0 => (h, port),
                _ => return Err(format!("mqtt.broker `{text}`: `{p}` is not a port")),
            },
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "mqtt.broker `{text}`: expected mqtt://HOST:PORT, e.g. mqtt://127.0.0.1:1883"
            ));
        }
        Ok((host.to_owned(), port, tls))
    }

    /// The password, read from `password_file` when set.
    pub fn password(&self) -> Result<Option<String>, String> {
        match &self.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| format!("cannot read mqtt.password_file {}: {e}", path.display())),
            None => Ok(self.password.clone()),
        }
    }
}

/// `[join]`: the coordinator to join and the file holding the one-time token. Used only while
/// the state folder has no identity; the token file may be deleted once the node has joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinSettings {
    pub coordinator: String,
    pub token_file: PathBuf,
}

/// What this node offers to functions; `None` means "measure the machine".
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub cpu: Option<Millicores>,
    pub memory: Option<Bytes>,
    pub reserved_memory: Bytes,
}

/// What a function gets when its FDL entry does not say.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub cpu: Millicores,
    pub memory: Bytes,
    pub timeout: Duration,
    /// Runs interrupted by agent restarts before a job is failed (guards against crash loops).
    pub max_attempts: u32,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct LogLimits {
    pub max_bytes_per_stream: usize,
    pub keep_jobs: usize,
}

/// How long the journal keeps finished jobs, and how many at most (`[retention]`): the oldest
/// go first, with their logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    pub keep_finished: Duration,
    pub keep_finished_jobs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            keep_finished: Duration::from_secs(30 * 86_400),
            keep_finished_jobs: 100_000,
        }
    }
}

/// How the journal groups its commits.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// The most inputs (messages, files, run ends, answers) one durable commit covers: what
    /// arrived while the last fsync ran is journaled with one more. 1 gives every input an
    /// fsync of its own.
    pub max_batch: usize,
}

impl JournalSettings {
    /// The bounds of `[journal] max_batch`.
    pub const MAX_BATCH: std::ops::RangeInclusive<usize> = 1..=65_536;
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self { max_batch: 512 }
    }
}

#[derive(Debug, Clone)]
pub struct WasmSettings {
    pub memory_reservation: Bytes,
    pub memory_guard_size: Bytes,
    pub pooling: bool,
    pub pool_instances: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            cpu: Millicores(500),
            memory: Bytes(256 << 20),
            timeout: Duration::from_secs(300),
            max_attempts: 3,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_bytes_per_stream: 64 << 10,
            keep_jobs: 10_000,
        }
    }
}

impl Default for WasmSettings {
    fn default() -> Self {
        // Small reservations keep the address space modest on 32-bit boards and under qemu;
        // memories still grow past them (by moving), within each function's `memory` cap.
        Self {
            memory_reservation: Bytes(64 << 20),
            memory_guard_size: Bytes(64 << 10),
            pooling: false,
            pool_instances: 16,
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // `agent.toml` alone has an empty parent: that is the current folder.
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses config text; relative paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let base = std::path::absolute(base).map_err(|e| e.to_string())?;
        let abs = |p: &Path| base.join(p);
        let (d, l, w) = (
            Defaults::default(),
            LogLimits::default(),
            WasmSettings::default(),
        );
        let node_name = match raw.node_name {
            Some(n) if !n.trim().is_empty() => n,
            _ => hostname(),
        };
        Ok(Self {
            node_name: node_name.clone(),
            data_root: abs(&raw.data_root),
            state_dir: abs(&raw.state_dir),
            functions: raw.functions.iter().map(|p| abs(p)).collect(),
            cluster_id: raw.cluster_id,
            labels: raw.labels,
            resources: Resources {
                cpu: raw.resources.cpu.map(|c| c.0),
                memory: raw.resources.memory.map(|m| m.0),
                reserved_memory: raw
                    .resources
                    .reserved_memory
                    .map_or(Bytes(128 << 20), |m| m.0),
            },
            defaults: Defaults {
                cpu: raw.defaults.cpu.map_or(d.cpu, |c| c.0),
                memory: raw.defaults.memory.map_or(d.memory, |m| m.0),
                timeout: raw
                    .defaults
                    .timeout_secs
                    .map_or(d.timeout, Duration::from_secs),
                max_attempts: raw.defaults.max_attempts.unwrap_or(d.max_attempts).max(1),
                shutdown_grace: raw
                    .defaults
                    .shutdown_grace_secs
                    .map_or(d.shutdown_grace, Duration::from_secs),
            },
            logs: LogLimits {
                max_bytes_per_stream: raw
                    .logs
                    .max_bytes_per_stream
                    .unwrap_or(l.max_bytes_per_stream),
                keep_jobs: raw.logs.keep_jobs.unwrap_or(l.keep_jobs),
            },
            disk_min_free: raw.disk.min_free.map_or(Bytes(64 << 20), |m| m.0),
            metrics_listen: match &raw.metrics {
                None => None,
                Some(m) => Some(m.listen.parse().map_err(|_| {
                    format!(
                        "metrics.listen = {:?}: not an IP address and port; write one such as \"127.0.0.1:9101\" (or \"0.0.0.0:9101\" for a scraper on the network)",
                        m.listen
                    )
                })?),
            },
            retention: {
                let d = RetentionSettings::default();
                let days = raw
                    .retention
                    .keep_finished_days
                    .unwrap_or(d.keep_finished.as_secs() / 86_400);
                if days > 3_650 {
                    return Err(format!(
                        "retention.keep_finished_days = {days}: at most 3650 (ten years)"
                    ));
                }
                RetentionSettings {
                    keep_finished: Duration::from_secs(days * 86_400),
                    keep_finished_jobs: raw
                        .retention
                        .keep_finished_jobs
                        .unwrap_or(d.keep_finished_jobs),
                }
            },
            journal: JournalSettings {
                max_batch: match raw.journal.max_batch {
                    None => JournalSettings::default().max_batch,
                    Some(n) if JournalSettings::MAX_BATCH.contains(&n) => n,
                    Some(n) => {
                        return Err(format!(
                            "journal.max_batch = {n}: it must be between {} and {} (inputs per durable commit)",
                            JournalSettings::MAX_BATCH.start(),
                            JournalSettings::MAX_BATCH.end()
                        ));
                    }
                },
            },
            wasm: WasmSettings {
                memory_reservation: raw
                    .wasm
                    .memory_reservation
                    .map_or(w.memory_reservation, |m| m.0),
                memory_guard_size: raw
                    .wasm
                    .memory_guard_size
                    .map_or(w.memory_guard_size, |m| m.0),
                pooling: raw.wasm.pooling.unwrap_or(w.pooling),
                pool_instances: raw.wasm.pool_instances.unwrap_or(w.pool_instances).max(1),
            },
            process_user: {
                let user = raw.process.user.unwrap_or_else(|| "nobody".into());
                if user.is_empty() || user.contains(['\n', '\0']) {
                    return Err(format!("process.user `{user}`: a user name, UID:GID, or root"));
                }
                user
            },
            oci: OciConfig {
                pids_limit: raw.oci.pids_limit.unwrap_or(1024).max(16),
                tmp_size: raw.oci.tmp_size.map_or(Bytes(64 << 20), |m| m.0),
                image_store_max: raw.oci.image_store_max.map_or(Bytes(4 << 30), |m| m.0),
                kill_grace: Duration::from_secs(raw.oci.kill_grace_secs.unwrap_or(5)),
                platform: match raw.oci.platform {
                    Some(p) => platform::Platform::parse(&p)
                        .map_err(|e| format!("oci.platform: {e}"))?,
                    None => platform::Platform::host(),
                },
                network: {
                    let mut n = ContainerNetwork::new(
                        raw.oci.network_bridge.unwrap_or_else(|| "spillway0".into()),
                        raw.oci.network_subnet.unwrap_or_else(|| "10.93.0.0/24".into()),
                    )?;
                    if let Some(dirs) = raw.oci.cni_path {
                        n.cni_path = dirs.iter().map(|d| abs(d)).collect();
                    }
                    n.conflist = raw.oci.cni_conflist.map(|p| abs(&p));
                    n
                },
                registries: registry::Registries(
                    raw.registries
                        .into_iter()
                        .map(|(host, mut r)| {
                            r.password_file = r.password_file.map(|p| abs(&p));
                            (host, r)
                        })
                        .collect(),
                ),
            },
            join: raw.join.map(|j| JoinSettings {
                coordinator: j.coordinator,
                token_file: abs(&j.token_file),
            }),
            mqtt: raw
                .mqtt
                .map(|m| -> Result<MqttSettings, String> {
                    let (host, port, tls) = MqttSettings::parse_broker(&m.broker)?;
                    if m.password.is_some() && m.password_file.is_some() {
                        return Err("mqtt: set password or password_file, not both".into());
                    }
                    if m.mesh_identity && (!tls || m.username.is_some() || m.ca_file.is_some()) {
                        return Err("mqtt.mesh_identity proves this node with its mesh certificate to the coordinator's broker: it needs an mqtts:// broker and no username or ca_file".into());
                    }
                    Ok(MqttSettings {
                        host,
                        port,
                        tls,
                        client_id: m
                            .client_id
                            .unwrap_or_else(|| format!("spillway-{node_name}")),
                        username: m.username,
                        password: m.password,
                        password_file: m.password_file.map(|p| abs(&p)),
                        ca_file: m.ca_file.map(|p| abs(&p)),
                        keep_alive: Duration::from_secs(m.keep_alive_secs.unwrap_or(30).max(5)),
                        max_payload: m.max_payload.map_or(Bytes(8 << 20), |b| b.0),
                        publish_timeout: Duration::from_secs(
                            m.publish_timeout_secs.unwrap_or(60).max(1),
                        ),
                        mesh_identity: m.mesh_identity,
                    })
                })
                .transpose()?,
        })
    }

    pub fn journal_path(&self) -> PathBuf {
        self.state_dir.join("journal.redb")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.state_dir.join("staging")
    }

    /// The container image store.
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }

    /// libcontainer's state of live containers.
    pub fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    /// The network namespaces of this agent's running containers.
    pub fn netns_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }

    /// Where the payloads of MQTT-triggered jobs wait for their run.
    pub fn inbox_dir(&self) -> PathBuf {
        self.state_dir.join("inbox")
    }

    /// The input file of a job started on this node (a guest's input is elsewhere).
    pub fn input_of(&self, id: spillway_proto::JobId, event: &spillway_proto::Event) -> PathBuf {
        match event {
            spillway_proto::Event::File(f) => f.key.under(&self.data_root.join(&f.bucket)),
            spillway_proto::Event::FileAgain(w) => {
                w.file.key.under(&self.data_root.join(&w.file.bucket))
            }
            spillway_proto::Event::Mqtt(m) => {
                m.file_name.under(&self.inbox_dir().join(id.to_string()))
            }
        }
    }

    pub fn wasm_cache_dir(&self) -> PathBuf {
        self.state_dir.join("wasm-cache")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spillway-node".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = AgentConfig::from_toml(
            "data_root = \"data\"\nstate_dir = \"/var/lib/s\"\nfunctions = [\"f.yaml\"]\n",
            Path::new("/etc/spillway"),
        )
        .expect("valid");
        assert_eq!(c.data_root, Path::new("/etc/spillway/data"));
        assert_eq!(c.state_dir, Path::new("/var/lib/s"));
        assert_eq!(c.functions, vec![PathBuf::from("/etc/spillway/f.yaml")]);
        assert_eq!(c.defaults.timeout, Duration::from_secs(300));
    }

    #[test]
    fn typos_and_bad_quantities_are_refused_with_the_field_name() {
        let err = AgentConfig::from_toml(
            "data_root = \"d\"\nstate_dir = \"s\"\ndata_rot = 1\n",
            Path::new("/"),
        )
        .expect_err("unknown field");
        assert!(err.contains("data_rot"), "{err}");
        let err = AgentConfig::from_toml(
            "data_root = \"d\"\nstate_dir = \"s\"\n[resources]\nmemory = \"lots\"\n",
            Path::new("/"),
        )
        .expect_err("bad memory");
        assert!(
            err.contains("line 4") && err.contains("`lots` is not a number"),
            "{err}"
        );
    }

    #[test]
    fn retention_defaults_to_a_month_or_a_hundred_thousand_jobs_and_is_bounded() {
        let config = |extra: &str| {
            AgentConfig::from_toml(
                &format!("data_root = \"d\"\nstate_dir = \"s\"\n{extra}"),
                Path::new("/"),
            )
        };
        let d = config("").expect("default").retention;
        assert_eq!(d.keep_finished, Duration::from_secs(30 * 86_400));
        assert_eq!(d.keep_finished_jobs, 100_000);
        let r = config("[retention]\nkeep_finished_days = 7\nkeep_finished_jobs = 5000\n")
            .expect("set")
            .retention;
        assert_eq!(r.keep_finished, Duration::from_secs(7 * 86_400));
        assert_eq!(r.keep_finished_jobs, 5_000);
        let err = config("[retention]\nkeep_finished_days = 4000\n").expect_err("too long");
        assert!(err.contains("retention.keep_finished_days = 4000"), "{err}");
    }

    #[test]
    fn the_journal_batch_is_bounded_and_named_when_out_of_bounds() {
        let config = |extra: &str| {
            AgentConfig::from_toml(
                &format!("data_root = \"d\"\nstate_dir = \"s\"\n{extra}"),
                Path::new("/"),
            )
        };
        assert_eq!(config("").expect("default").journal.max_batch, 512);
        assert_eq!(
            config("[journal]\nmax_batch = 1\n")
                .expect("one fsync per input")
                .journal
                .max_batch,
            1
        );
        for bad in ["0", "65537"] {
            let err =
                config(&format!("[journal]\nmax_batch = {bad}\n")).expect_err("out of bounds");
            assert!(
                err.contains("journal.max_batch") && err.contains("between 1 and 65536"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_container_network_is_checked_and_its_paths_resolve_beside_the_config() {
        let config = |oci: &str| {
            AgentConfig::from_toml(
                &format!("data_root = \"d\"\nstate_dir = \"s\"\n[oci]\n{oci}"),
                Path::new("/etc/spillway"),
            )
        };
        let default = config("").expect("defaults").oci.network;
        assert_eq!(
            (default.bridge.as_str(), default.subnet.as_str()),
            ("spillway0", "10.93.0.0/24")
        );
        assert_eq!(default.conflist, None);
        let own = config("cni_path = [\"cni\"]\ncni_conflist = \"lan.conflist\"\n")
            .expect("own")
            .oci
            .network;
        assert_eq!(own.cni_path, [PathBuf::from("/etc/spillway/cni")]);
        assert_eq!(own.conflist, Some("/etc/spillway/lan.conflist".into()));
        for (oci, says) in [
            (
                "network_bridge = \"a-bridge-name-too-long\"",
                "1 to 15 letters",
            ),
            ("network_bridge = \"br 0\"", "oci.network_bridge"),
            ("network_subnet = \"10.93.0.1/24\"", "no host bits"),
            ("network_subnet = \"10.93.0.0/31\"", "prefix 8 to 30"),
            ("network_subnet = \"fd00::/64\"", "an IPv4 network"),
        ] {
            let err = config(oci).expect_err(oci);
            assert!(err.contains(says), "{oci}: {err}");
        }
    }

    #[test]
    fn cpu_may_be_written_as_number_or_string() {
        let c = AgentConfig::from_toml("data_root = \"d\"\nstate_dir = \"s\"\n[resources]\ncpu = 2\n[defaults]\ncpu = \"250m\"\n", Path::new("/"))
            .expect("valid");
        assert_eq!(c.resources.cpu, Some(Millicores(2000)));
        assert_eq!(c.defaults.cpu, Millicores(250));
    }

    #[test]
    fn join_section_names_the_coordinator_and_a_token_file_beside_the_config() {
        let c = AgentConfig::from_toml(
            "data_root = \"d\"\nstate_dir = \"s\"\n[join]\ncoordinator = \"10.0.2.2:7443\"\ntoken_file = \"join-token\"\n",
            Path::new("/etc/spillway"),
        )
        .expect("valid");
        assert_eq!(
            c.join,
            Some(JoinSettings {
                coordinator: "10.0.2.2:7443".into(),
                token_file: PathBuf::from("/etc/spillway/join-token"),
            })
        );
        let err = AgentConfig::from_toml(
            "data_root = \"d\"\nstate_dir = \"s\"\n[join]\ncoordinator = \"c:1\"\n",
            Path::new("/"),
        )
        .expect_err("token_file is required");
        assert!(err.contains("token_file"), "{err}");
    }

    #[test]
    fn mesh_identity_needs_mqtts_and_no_other_credentials() {
        let base = "node_name = \"pi\"\ndata_root = \"d\"\nstate_dir = \"s\"\n[mqtt]\n";
        let ok = format!("{base}broker = \"mqtts://c:8883\"\nmesh_identity = true\n");
        let c = AgentConfig::from_toml(&ok, Path::new("/")).unwrap();
        assert!(c.mqtt.unwrap().mesh_identity);
        for bad in [
            "broker = \"mqtt://c:1883\"\nmesh_identity = true\n",
            "broker = \"mqtts://c\"\nmesh_identity = true\nusername = \"u\"\n",
            "broker = \"mqtts://c\"\nmesh_identity = true\nca_file = \"ca.pem\"\n",
        ] {
            let err = AgentConfig::from_toml(&format!("{base}{bad}"), Path::new("/")).unwrap_err();
            assert!(err.contains("mesh_identity"), "{bad}: {err}");
        }
    }

    #[test]
    fn mqtt_broker_urls_give_host_port_and_tls() {
        let parse = MqttSettings::parse_broker;
        assert_eq!(
            parse("mqtt://10.0.0.1"),
            Ok(("10.0.0.1".into(), 1883, false))
        );
        assert_eq!(
            parse("mqtts://broker.lan:8884"),
            Ok(("broker.lan".into(), 8884, true))
        );
        assert_eq!(
            parse("127.0.0.1:1999"),
            Ok(("127.0.0.1".into(), 1999, false))
        );
        assert_eq!(parse("mqtt://[::1]:1884"), Ok(("::1".into(), 1884, false)));
        assert!(
            parse("http://x:1")
                .unwrap_err()
                .contains("mqtt://HOST:PORT")
        );
        assert!(parse("mqtt://x:port").unwrap_err().contains("not a port"));
        let c = AgentConfig::from_toml(
            "node_name = \"pi\"\ndata_root = \"d\"\nstate_dir = \"s\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\nmax_payload = \"1Mi\"\n",
            Path::new("/"),
        )
        .expect("valid");
        let m = c.mqtt.expect("mqtt section");
        assert_eq!(m.client_id, "spillway-pi");
        assert_eq!(m.max_payload, Bytes(1 << 20));
    }
}
