//! `spillway-agent install`: puts this binary, a hardened systemd unit and a starter config in
//! place, under `/` or under another root (an image being prepared, a package being built).
//! Files are written whole (temporary name, then rename), so a running agent's binary can be
//! replaced; an existing config is never overwritten.

use std::path::{Path, PathBuf};

/// The unit, as shipped in `configs/systemd/`.
pub const AGENT_UNIT: &str = include_str!("../../configs/systemd/spillway-agent.service");

/// Where things go, relative to the root.
pub const BINARY: &str = "usr/local/bin/spillway-agent";
pub const UNIT: &str = "etc/systemd/system/spillway-agent.service";
pub const CONFIG: &str = "etc/spillway/agent.toml";
pub const STATE: &str = "var/lib/spillway";

/// A config for a fresh node: paths under the service's state directory, nothing deployed yet.
pub const STARTER_CONFIG: &str = include_str!("../../configs/agent.toml");

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum InstallError {
    /// cannot find this program's own binary to install: {0}
    OwnBinary(std::io::Error),
    /// cannot write {path}: {source} (run as root, or choose another --root)
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// cannot read the config to install {path}: {source}
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `install` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Installed {
    pub written: Vec<PathBuf>,
    /// An existing config that was left as it is.
    pub kept: Option<PathBuf>,
}

fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    spillway_plumbing::atomic::write_whole(path, bytes, mode).map_err(|source| {
        InstallError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Installs `binary` (this program), the unit and a config under `root`. The config is
/// `config` when given and present, else the starter config; an existing one is kept.
pub fn install(
    root: &Path,
    binary: &Path,
    config: Option<&Path>,
) -> Result<Installed, InstallError> {
    let mut done = Installed::default();
    let bytes = std::fs::read(binary).map_err(InstallError::OwnBinary)?;
    let target = root.join(BINARY);
    write_whole(&target, &bytes, 0o755)?;
    done.written.push(target);

    let unit = root.join(UNIT);
    write_whole(&unit, AGENT_UNIT.as_bytes(), 0o644)?;
    done.written.push(unit);

    let state = root.join(STATE);
    std::fs::create_dir_all(&state).map_err(|source| InstallError::Write {
        path: state.clone(),
        source,
    })?;

    let config_target = root.join(CONFIG);
    if config_target.exists() {
        done.kept = Some(config_target);
    } else {
        let text = match config.filter(|c| c.exists()) {
            Some(c) => std::fs::read(c).map_err(|source| InstallError::ReadConfig {
                path: c.to_owned(),
                source,
            })?,
            None => STARTER_CONFIG.as_bytes().to_vec(),
        };
        // The config may hold labels and paths only, but keep it to root like the rest of /etc/spillway.
        write_whole(&config_target, &text, 0o640)?;
        done.written.push(config_target);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_unit_is_a_notify_service_with_a_watchdog() {
        assert!(AGENT_UNIT.contains("Type=notify"));
        assert!(AGENT_UNIT.contains("WatchdogSec="));
        // By name: systemd looks in /usr/local/bin (BINARY) before /usr/bin (the Debian package).
        assert!(BINARY.starts_with("usr/local/bin/"));
        assert!(AGENT_UNIT.contains(&format!("ExecStart=spillway-agent --config /{CONFIG} run")));
    }

    #[test]
    fn the_starter_config_is_a_valid_agent_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, STARTER_CONFIG).unwrap();
        let config = spillway_agent_config::AgentConfig::load(&path).unwrap();
        assert_eq!(config.data_root, Path::new("/var/lib/spillway/data"));
        assert_eq!(config.state_dir, Path::new("/var/lib/spillway/state"));
    }

    #[test]
    fn installing_twice_replaces_the_binary_and_keeps_an_edited_config() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let binary = dir.path().join("agent-binary");
        std::fs::write(&binary, b"v1").unwrap();
        let first = install(&root, &binary, None).unwrap();
        assert_eq!(first.written.len(), 3);
        assert_eq!(std::fs::read(root.join(BINARY)).unwrap(), b"v1");
        std::fs::write(root.join(CONFIG), "node_name = \"edited\"\n").unwrap();
        std::fs::write(&binary, b"v2").unwrap();
        let second = install(&root, &binary, None).unwrap();
        assert_eq!(second.kept, Some(root.join(CONFIG)));
        assert_eq!(std::fs::read(root.join(BINARY)).unwrap(), b"v2");
        assert_eq!(
            std::fs::read_to_string(root.join(CONFIG)).unwrap(),
            "node_name = \"edited\"\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join(BINARY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
