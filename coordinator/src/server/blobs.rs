//! The coordinator's content-addressed blob store: job inputs on their way to a peer, and
//! outputs on their way back to the origin. A blob is named by the SHA-256 of its bytes, written
//! under a temporary name, synced and renamed, so a reader never sees half a blob and the same
//! bytes stored twice are one file.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

    /// Stores `bytes` and returns their digest (blocking IO).
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<[u8; 32]> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let target = self.path(&digest);
        if target.exists() {
            return Ok(digest);
        }
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            hex::encode(&digest[..8]),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
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
}
