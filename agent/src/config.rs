//! The agent's TOML configuration file. Relative paths resolve against the file's folder, so a
//! config and its FDL files can be moved around together.

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
    wasm: RawWasm,
    #[serde(default)]
    oci: RawOci,
    #[serde(default)]
    registries: std::collections::BTreeMap<String, crate::image::RegistrySettings>,
    join: Option<RawJoin>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoin {
    coordinator: String,
    token_file: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOci {
    pids_limit: Option<i64>,
    tmp_size: Option<Memory>,
    image_store_max: Option<Memory>,
    kill_grace_secs: Option<u64>,
    platform: Option<String>,
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
    pub platform: crate::image::Platform,
    pub registries: crate::image::Registries,
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
    pub wasm: WasmSettings,
    pub oci: OciConfig,
    /// Join a mesh at start when this node has not joined yet (a flashed card's first boot).
    pub join: Option<JoinSettings>,
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
            node_name,
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
            oci: OciConfig {
                pids_limit: raw.oci.pids_limit.unwrap_or(1024).max(16),
                tmp_size: raw.oci.tmp_size.map_or(Bytes(64 << 20), |m| m.0),
                image_store_max: raw.oci.image_store_max.map_or(Bytes(4 << 30), |m| m.0),
                kill_grace: Duration::from_secs(raw.oci.kill_grace_secs.unwrap_or(5)),
                platform: match raw.oci.platform {
                    Some(p) => crate::image::Platform::parse(&p)
                        .map_err(|e| format!("oci.platform: {e}"))?,
                    None => crate::image::Platform::host(),
                },
                registries: crate::image::Registries(
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

    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
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
}
