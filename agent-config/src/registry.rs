//! `[registries."HOST[:PORT]"]`: how the agent reaches each container registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[registries."HOST[:PORT]"]` in the agent config.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Plain HTTP instead of HTTPS (loopback registries are always plain HTTP, as Docker does).
    #[serde(default)]
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (kept out of the config, e.g. a systemd credential).
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// Settings per registry host.
#[derive(Debug, Clone, Default)]
pub struct Registries(pub BTreeMap<String, RegistrySettings>);

impl Registries {
    pub fn settings(&self, registry: &str) -> RegistrySettings {
        self.0.get(registry).cloned().unwrap_or_default()
    }
}
