//! The checks on an upgrade order, in the order that keeps a hostile coordinator (or anyone in
//! its place) from making the node fetch, store or run anything unsigned: the signature and
//! bounds first, the fetched bytes next, and only then a file on disk.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use spillway_link::signing::SignatureError;
use spillway_proto::wire::UpgradeOrder;

use super::{Boot, Slot, UpgradeError};

/// The largest agent binary taken.
pub const MAX_BINARY: u64 = spillway_proto::wire::MAX_AGENT_BINARY;
/// The shortest and longest time a new binary may be given to report Ready.
pub const READY_WITHIN_MS: std::ops::RangeInclusive<u64> = 5_000..=3_600_000;

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum Refusal {
    /// the binary is not signed by this mesh's CA: {0}
    Signature(SignatureError),
    /// the binary is for {theirs}, this node is {ours}
    Arch { theirs: String, ours: String },
    /// the binary's size {0} is not between 1 byte and 128 MiB
    Size(u64),
    /// the deadline to report Ready ({0} ms) is not between 5 s and 1 h
    Deadline(u64),
    /// the fetched binary is not the one signed ({0})
    Damaged(String),
    /// the binary is not an ELF executable for {arch}: {why}
    NotExecutable { arch: String, why: String },
    /// no room for the binary: it needs {need} bytes with the same again to spare, {free} are free
    NoRoom { need: u64, free: u64 },
    /// cannot fetch the binary from the coordinator: {0}
    Fetch(String),
    /// cannot store the binary: {0}
    Store(UpgradeError),
    /// this agent runs inside `spillway up`; upgrade the `spillway` binary instead
    Embedded,
}

/// Everything that can be checked before a byte of the binary is fetched.
pub fn check(order: &UpgradeOrder, ca_der: &[u8], our_arch: &str) -> Result<(), Refusal> {
    spillway_link::signing::verify(ca_der, &order.message(), &order.signature)
        .map_err(Refusal::Signature)?;
    if order.arch != our_arch {
        return Err(Refusal::Arch {
            theirs: order.arch.clone(),
            ours: our_arch.to_owned(),
        });
    }
    if order.size == 0 || order.size > MAX_BINARY {
        return Err(Refusal::Size(order.size));
    }
    if !READY_WITHIN_MS.contains(&order.ready_within_ms) {
        return Err(Refusal::Deadline(order.ready_within_ms));
    }
    Ok(())
}

/// Checks the ELF identification and machine of `bytes` against an architecture name.
pub fn elf_for(bytes: &[u8], arch: &str) -> Result<(), String> {
    match spillway_proto::wire::binary_arch(bytes)? {
        found if found == arch => Ok(()),
        found => Err(format!("it is built for {found}")),
    }
}

/// Room for the binary with as much again to spare, so an upgrade never fills the disk.
pub fn check_room(order: &UpgradeOrder, free: u64) -> Result<(), Refusal> {
    let need = order.size.saturating_mul(2);
    if free < need {
        return Err(Refusal::NoRoom {
            need: order.size,
            free,
        });
    }
    Ok(())
}

/// A binary arriving in pieces: written beside the slots under a temporary name and hashed as
/// it comes, so the node never holds it in memory; it becomes a slot only once whole and checked.
#[derive(Debug)]
pub struct Download {
    partial: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    written: u64,
    header: Vec<u8>,
}

impl Download {
    pub fn begin(state_dir: &Path, order: &UpgradeOrder) -> Result<Self, Refusal> {
        let folder = super::slots_dir(state_dir);
        std::fs::create_dir_all(&folder)
            .map_err(|e| Refusal::Store(super::io("create", &folder)(e)))?;
        let partial = folder.join(format!(".partial-{}", hex::encode(order.sha256)));
        let file = std::fs::File::create(&partial)
            .map_err(|e| Refusal::Store(super::io("create", &partial)(e)))?;
        Ok(Self {
            partial,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
            header: Vec::new(),
        })
    }

    /// How many bytes arrived so far.
    pub fn received(&self) -> u64 {
        self.written
    }

    /// The next piece; refused past the signed size.
    pub fn push(&mut self, order: &UpgradeOrder, piece: &[u8]) -> Result<(), Refusal> {
        use std::io::Write;
        self.written += piece.len() as u64;
        if self.written > order.size {
            return Err(Refusal::Damaged(format!(
                "more than the signed {} bytes",
                order.size
            )));
        }
        if self.header.len() < 64 {
            let take = piece.len().min(64 - self.header.len());
            self.header.extend_from_slice(&piece[..take]);
        }
        self.hasher.update(piece);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Refusal::Damaged("written after its end".into()))?;
        file.write_all(piece)
            .map_err(|e| Refusal::Store(super::io("write", &self.partial)(e)))
    }

    /// Checks the whole (signed size and digest, an ELF executable for the signed
    /// architecture: a script or another machine's binary would only fail at the restart),
    /// makes it a slot (mode 0755, synced) and puts it on trial in the boot record, saved
    /// before the caller restarts on it.
    pub fn finish(mut self, state_dir: &Path, order: &UpgradeOrder) -> Result<Boot, Refusal> {
        if self.written != order.size {
            return Err(Refusal::Damaged(format!(
                "{} bytes instead of {}",
                self.written, order.size
            )));
        }
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if digest != order.sha256 {
            return Err(Refusal::Damaged("its SHA-256 differs".into()));
        }
        elf_for(&self.header, &order.arch).map_err(|why| Refusal::NotExecutable {
            arch: order.arch.clone(),
            why,
        })?;
        let file = self
            .file
            .take()
            .ok_or_else(|| Refusal::Damaged("finished twice".into()))?;
        let sha256 = hex::encode(order.sha256);
        let slot = super::slot_path(state_dir, &sha256);
        let store = |action, e| Refusal::Store(super::io(action, &slot)(e));
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(|e| store("make executable", e))?;
        file.sync_all().map_err(|e| store("sync", e))?;
        std::fs::rename(&self.partial, &slot).map_err(|e| store("write", e))?;
        if let Some(folder) = slot.parent() {
            std::fs::File::open(folder)
                .and_then(|d| d.sync_all())
                .map_err(|e| store("sync", e))?;
        }
        let mut boot = super::load(state_dir).map_err(Refusal::Store)?;
        let new = Slot {
            sha256,
            version: order.version.clone(),
        };
        boot.begin_trial(new, order.rollout, order.ready_within_ms);
        super::save(state_dir, &boot).map_err(Refusal::Store)?;
        Ok(boot)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // Unfinished or refused, nothing of it stays (once finished, the name is gone).
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// Deletes stored binaries the boot record no longer names (failed trials, old previous ones).
pub fn remove_unused(state_dir: &Path, boot: &Boot) {
    let Ok(entries) = std::fs::read_dir(super::slots_dir(state_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !boot.keeps(&name) && super::running_slot().as_deref() != Some(name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests;
