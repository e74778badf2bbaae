//! The coordinator's content-addressed blob store: job inputs on their way to a peer, and
//! outputs on their way back to the origin. A blob is named by the SHA-256 of its bytes, written
//! under a temporary name, synced and renamed, so a reader never sees half a blob and the same
//! bytes stored twice are one file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sha2::{Digest, Sha256};

/// A blob's digest from its hex form (as URLs and reports carry it).
pub fn parse_digest(hex_text: &str) -> Option<[u8; 32]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
    /// Held shared while storing and exclusively while deciding a removal, so a blob stored
    /// again is never removed under the upload that just refreshed it.
    store: Arc<RwLock<()>>,
    /// Blobs no hand-over refers to any more, removed once idle ([`Blobs::remove_idle`]).
    unused: Arc<Mutex<HashSet<[u8; 32]>>>,
    /// Blobs kept whatever their age and whoever stops using them: agent release binaries.
    pinned: Arc<Mutex<HashSet<[u8; 32]>>>,
}

impl Blobs {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            store: Arc::default(),
            unused: Arc::default(),
            pinned: Arc::default(),
        })
    }

    fn path(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(hex::encode(digest))
    }

    /// The size of a stored blob, if it is there.
    pub fn size(&self, digest: &[u8; 32]) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Stores `bytes` and returns their digest (blocking IO).
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<[u8; 32]> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let target = self.path(&digest);
        let _storing = self.store.read().unwrap_or_else(PoisonError::into_inner);
        if target.exists() {
            // The same bytes again (identical outputs of two jobs are one blob): fresh again,
            // so a drop decided for the other job's sake leaves it (see `remove_if_idle`).
            if let Ok(f) = std::fs::File::options().write(true).open(&target) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(digest);
        }
        spillway_plumbing::atomic::write_whole(&target, bytes, 0o644)?;
        Ok(digest)
    }

    /// The bytes of a blob, checked against their name (blocking IO).
    pub fn get(&self, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        let bytes = std::fs::read(self.path(digest)).map_err(|e| {
            format!(
                "the coordinator has no blob {}: {e}",
                hex::encode(&digest[..8])
            )
        })?;
        if Sha256::digest(&bytes)[..] != digest[..] {
            return Err(format!(
                "blob {} is corrupt on the coordinator's disk",
                hex::encode(&digest[..8])
            ));
        }
        Ok(bytes)
    }

    /// Up to `len` bytes of a blob from `offset` (fewer at its end); the reader checks the
    /// whole against its digest (blocking IO).
    pub fn get_range(&self, digest: &[u8; 32], offset: u64, len: u32) -> Result<Vec<u8>, String> {
        use std::io::{Read, Seek};
        let missing = |e: std::io::Error| {
            format!(
                "the coordinator has no blob {}: {e}",
                hex::encode(&digest[..8])
            )
        };
        let mut file = std::fs::File::open(self.path(digest)).map_err(missing)?;
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(missing)?;
        let mut out = Vec::new();
        file.take(u64::from(len))
            .read_to_end(&mut out)
            .map_err(missing)?;
        Ok(out)
    }

    /// Takes a whole file (written beside the blobs, under a name starting with a dot) in as
    /// the blob `digest` (blocking IO).
    pub fn adopt(&self, temporary: &Path, digest: &[u8; 32]) -> std::io::Result<()> {
        let _storing = self.store.read().unwrap_or_else(PoisonError::into_inner);
        std::fs::rename(temporary, self.path(digest))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Where to write a blob before [`Blobs::adopt`] (swept if a crash leaves it).
    pub fn temporary(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}"))
    }

    pub fn remove(&self, digest: &[u8; 32]) {
        if !self.is_pinned(digest) {
            let _ = std::fs::remove_file(self.path(digest));
        }
    }

    /// Keeps a blob from every removal (an agent release's binary).
    pub fn pin(&self, digest: [u8; 32]) {
        self.pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest);
    }

    /// Lets a blob go again like any other.
    pub fn unpin(&self, digest: &[u8; 32]) {
        self.pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
    }

    fn is_pinned(&self, digest: &[u8; 32]) -> bool {
        self.pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(digest)
    }

    /// Marks a blob no hand-over refers to any more (once the record saying so is durable).
    pub fn unused(&self, digest: [u8; 32]) {
        self.unused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest);
    }

    /// Removes the unused blobs stored longer than `idle` ago that `in_use` does not claim
    /// again. One blob is every job's whose output has the same bytes: another job may have
    /// uploaded it just now, its result not recorded yet, so a blob stored within `idle` waits.
    /// Returns how many went.
    pub fn remove_idle(
        &self,
        idle: std::time::Duration,
        in_use: impl Fn(&[u8; 32]) -> bool,
    ) -> usize {
        let mut unused = self.unused.lock().unwrap_or_else(PoisonError::into_inner);
        let _deciding = self.store.write().unwrap_or_else(PoisonError::into_inner);
        let mut removed = 0;
        unused.retain(|d| {
            if in_use(d) || self.is_pinned(d) {
                return false;
            }
            let path = self.path(d);
            let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
                return false;
            };
            if modified.elapsed().is_ok_and(|e| e >= idle) {
                if std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
                return false;
            }
            true
        });
        removed
    }

    /// Deletes blobs older than `age` that `in_use` does not claim: uploads whose offer or
    /// result never arrived (the link died in between). Returns how many went.
    pub fn sweep(&self, age: std::time::Duration, in_use: impl Fn(&[u8; 32]) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let _deciding = self.store.write().unwrap_or_else(PoisonError::into_inner);
        let mut swept = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut digest = [0u8; 32];
            // Temporary files of a crashed write are swept too; they start with a dot.
            let orphan_tmp = name.starts_with('.');
            if !orphan_tmp
                && (hex::decode_to_slice(&name, &mut digest).is_err()
                    || in_use(&digest)
                    || self.is_pinned(&digest))
            {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|e| e >= age));
            if old && std::fs::remove_file(entry.path()).is_ok() {
                swept += 1;
            }
        }
        swept
    }

    /// Blobs on disk (for `/metrics` and tests).
    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_one_blob_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let a = blobs.put(b"frame").unwrap();
        assert_eq!(blobs.put(b"frame").unwrap(), a);
        assert_eq!(blobs.count(), 1);
        assert_eq!(blobs.get(&a).unwrap(), b"frame");
        std::fs::write(dir.path().join(hex::encode(a)), b"other").unwrap();
        assert!(blobs.get(&a).unwrap_err().contains("corrupt"));
        blobs.remove(&a);
        assert!(blobs.get(&a).unwrap_err().contains("no blob"));
    }

    #[test]
    fn a_blob_stored_again_just_now_survives_a_drop_decided_for_an_earlier_job() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let d = blobs.put(b"ok\n").unwrap();
        let age = |b: &Blobs, ago: u64| {
            let f = std::fs::File::options()
                .write(true)
                .open(b.path(&d))
                .unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(ago))
                .unwrap();
        };
        // An hour old: the first job's output, acknowledged and no longer needed.
        age(&blobs, 3600);
        blobs.unused(d);
        // Another job uploads the same bytes before the removal happens.
        assert_eq!(blobs.put(b"ok\n").unwrap(), d);
        let idle = std::time::Duration::from_secs(5);
        assert_eq!(blobs.remove_idle(idle, |_| false), 0);
        assert_eq!(blobs.get(&d).unwrap(), b"ok\n");
        // Claimed again by a hand-over: forgotten as unused, kept however old.
        age(&blobs, 3600);
        assert_eq!(blobs.remove_idle(idle, |_| true), 0);
        assert_eq!(blobs.remove_idle(idle, |_| false), 0);
        assert_eq!(blobs.get(&d).unwrap(), b"ok\n");
        // Unused again and idle: it goes.
        blobs.unused(d);
        assert_eq!(blobs.remove_idle(idle, |_| false), 1);
        assert!(blobs.get(&d).is_err());
    }

    #[test]
    fn a_sweep_takes_only_old_blobs_nobody_claims() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let (kept, orphan, young) = (
            blobs.put(b"claimed").unwrap(),
            blobs.put(b"orphan").unwrap(),
            blobs.put(b"young").unwrap(),
        );
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for d in [kept, orphan] {
            let f = std::fs::File::options()
                .write(true)
                .open(dir.path().join(hex::encode(d)))
                .unwrap();
            f.set_modified(hour_ago).unwrap();
        }
        let swept = blobs.sweep(std::time::Duration::from_secs(600), |d| *d == kept);
        assert_eq!(swept, 1);
        assert!(blobs.get(&kept).is_ok() && blobs.get(&young).is_ok());
        assert!(blobs.get(&orphan).is_err());
    }
}
