//! The coordinator's settings (TOML), every default applied and every path absolute.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spillway_proto::load::Liveness;

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
    pub liveness: Liveness,
    pub report_interval: Duration,
    /// Placements a handed-over job may make before it goes back to its origin.
    pub max_hops: u8,
    /// How long a peer may be away before the jobs it runs are placed elsewhere.
    pub lease_grace: Duration,
    /// Where the embedded MQTT broker listens (`None`: no embedded broker).
    pub mqtt_listen: Option<SocketAddr>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            name: "coordinator".into(),
            state_dir: PathBuf::from("/var/lib/spillway/coordinator"),
            quic_listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            liveness: Liveness::default(),
            report_interval: Duration::from_secs(1),
            max_hops: spillway_placement::handover::DEFAULT_MAX_HOPS,
            lease_grace: Duration::from_secs(3),
            mqtt_listen: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    state_dir: Option<PathBuf>,
    quic: Option<Listen>,
    http: Option<Listen>,
    mqtt: Option<Listen>,
    #[serde(default, with = "humantime_serde_opt")]
    report_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    suspect_after: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    down_after: Option<Duration>,
    max_hops: Option<u8>,
    #[serde(default, with = "humantime_serde_opt")]
    lease_grace: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listen {
    listen: SocketAddr,
}

/// `"1s"`, `"500ms"`, as humantime writes them.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a duration like \"1s\" or \"500ms\": {e}"
                ))
            })
        })
        .transpose()
    }
}

impl CoordinatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
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
            c.http_listen = h.listen;
        }
        c.mqtt_listen = file.mqtt.map(|m| m.listen);
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
    fn unknown_keys_and_inconsistent_timers_are_refused() {
        assert!(CoordinatorConfig::from_toml("sate_dir = \"x\"", Path::new("/")).is_err());
        let err = CoordinatorConfig::from_toml(
            "suspect_after = \"10s\"\ndown_after = \"5s\"",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("down_after"), "{err}");
    }
}
