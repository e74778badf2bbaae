//! The coordinator's content-addressed blob store: job inputs on their way to a peer, and
//! outputs on their way back to the origin. A blob is named by the SHA-256 of its bytes, written
//! under a temporary name, synced and renamed, so a reader never sees half a blob and the same
//! bytes stored twice are one file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A blob's digest from its hex form (as URLs and reports carry it).
pub fn parse_digest(hex_text: &str) -> Option<[u8; 32]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
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
        if target.exists() {
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

    pub fn remove(&self, digest: &[u8; 32]) {
        let _ = std::fs::remove_file(self.path(digest));
    }

    /// Deletes blobs older than `age` that `in_use` does not claim: uploads whose offer or
    /// result never arrived (the link died in between). Returns how many went.
    pub fn sweep(&self, age: std::time::Duration, in_use: impl Fn(&[u8; 32]) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut swept = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut digest = [0u8; 32];
            // Temporary files of a crashed write are swept too; they start with a dot.
            let orphan_tmp = name.starts_with('.');
            if !orphan_tmp && (hex::decode_to_slice(&name, &mut digest).is_err() || in_use(&digest))
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
