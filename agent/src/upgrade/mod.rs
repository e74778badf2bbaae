//! Agent upgrades over the mesh, A/B. The coordinator orders a binary (signed by the mesh CA);
//! the agent checks the signature before it fetches anything, then the binary's size, digest and
//! architecture, stores it under `state_dir/upgrade/slots/<sha256>` and puts it on trial
//! ([`boot`]). It stops its work and restarts: under systemd by exiting with
//! [`EXIT_RESTART`] (the unit restarts it), otherwise under its own supervisor ([`launch`]).
//! The launcher starts the trial binary once. It becomes current when it links to the
//! coordinator within the order's deadline; otherwise (it crashed, hung or could not link) the
//! previous binary runs again and the node reports the rollback.
//!
//! The binary the service starts (`/usr/local/bin/spillway-agent`) is never written: systemd's
//! `ProtectSystem=strict` keeps it read-only, and it stays the way back if everything else fails.

pub mod boot;
pub mod launch;
pub mod order;

use std::path::{Path, PathBuf};

pub use boot::{Boot, Run, Slot};

/// Exit status asking the service manager (or the supervisor) to start the agent again, on the
/// binary [`Boot::choose`] picks (EX_TEMPFAIL).
pub const EXIT_RESTART: u8 = 75;

/// Set by the launcher for a stored binary it starts: that binary's SHA-256.
pub const SLOT_ENV: &str = "SPILLWAY_AGENT_SLOT";
/// Set by the supervisor for the agent it starts, so that one does not supervise again.
pub const SUPERVISED_ENV: &str = "SPILLWAY_AGENT_SUPERVISED";

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum UpgradeError {
    /// cannot {action} {path}: {source}
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// {path} is damaged ({reason}); remove it to run the installed binary again
    Damaged { path: PathBuf, reason: String },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UpgradeError {
    let path = path.to_owned();
    move |source| UpgradeError::Io {
        action,
        path,
        source,
    }
}

pub fn upgrade_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("upgrade")
}

pub fn boot_file(state_dir: &Path) -> PathBuf {
    upgrade_dir(state_dir).join("boot.json")
}

/// Where stored binaries are, each named by its SHA-256.
pub fn slots_dir(state_dir: &Path) -> PathBuf {
    upgrade_dir(state_dir).join("slots")
}

pub fn slot_path(state_dir: &Path, sha256: &str) -> PathBuf {
    slots_dir(state_dir).join(sha256)
}

/// The boot record; a node never upgraded has none.
pub fn load(state_dir: &Path) -> Result<Boot, UpgradeError> {
    let path = boot_file(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| UpgradeError::Damaged {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Boot::default()),
        Err(e) => Err(io("read", &path)(e)),
    }
}

/// Writes the boot record durably (whole, then synced) before anything acts on it.
pub fn save(state_dir: &Path, boot: &Boot) -> Result<(), UpgradeError> {
    let path = boot_file(state_dir);
    let dir = upgrade_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let bytes = serde_json::to_vec_pretty(boot).unwrap_or_default();
    spillway_plumbing::atomic::write_whole(&path, &bytes, 0o600).map_err(io("write", &path))
}

/// The SHA-256 (hex) of the stored binary this process runs, if it is one.
pub fn running_slot() -> Option<String> {
    std::env::var(SLOT_ENV).ok().filter(|s| !s.is_empty())
}

/// A way for the mesh session to stop the agent so that it starts again on another binary.
#[derive(Debug, Clone, Default)]
pub struct RestartRequest {
    inner: std::sync::Arc<(tokio::sync::Notify, std::sync::atomic::AtomicBool)>,
}

impl RestartRequest {
    pub fn request(&self) {
        self.inner
            .1
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.0.notify_waiters();
    }

    pub fn requested(&self) -> bool {
        self.inner.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once a restart is requested.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.0.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}
