//! The node's image store, under `<state>/images/`:
//!
//! - `blobs/sha256/<hex>`: manifests, configs and layers, each verified against its digest
//!   before it gets its name (so a name is a proof);
//! - `rootfs/<config hex>/`: an image's layers applied in order, made once and then shared
//!   read-only by every job of the image (jobs write into their own overlay);
//! - `records/<config hex>.json`: what the image is called, its layers, its run settings, its
//!   size and when a job last used it (for least-recently-used eviction).
//!
//! Half-written blobs and half-unpacked roots carry temporary names and are removed at open.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ImageError, digest_hex, unpack};

/// What an image says about running it (the parts of its config a job needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest: the same image pulled under two names is stored once.
    pub id: String,
    /// Canonical references (`registry/repository:tag`) that name it.
    pub references: BTreeSet<String>,
    pub manifest_digest: Option<String>,
    /// `linux/arm64`, as its config says.
    pub platform: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    pub config: RunConfig,
    /// Bytes on disk: compressed layers plus the unpacked root.
    pub size: u64,
    /// Unix seconds.
    pub added: u64,
    pub last_used: u64,
}

impl ImageRecord {
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }
}

/// An image whose blobs are all in the store, ready to be recorded and unpacked.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub references: Vec<String>,
    pub manifest_digest: Option<String>,
    pub config_digest: String,
    pub layers: Vec<String>,
}

/// The largest manifest, index or image config the agent reads (real ones are a few KiB).
pub const MAX_METADATA_BLOB: u64 = 4 << 20;

#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    /// Images deployed functions use, with how many use each: never evicted.
    leases: Mutex<HashMap<String, usize>>,
    /// One pull or import at a time: they share blobs and write the same roots.
    pub(crate) adding: tokio::sync::Mutex<()>,
}

/// Keeps an image from eviction while it lives.
#[derive(Debug)]
pub struct Lease {
    store: Arc<ImageStore>,
    id: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.store.leases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = leases.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                leases.remove(&self.id);
            }
        }
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The canonical spelling of an image reference (`busybox` is
/// `docker.io/library/busybox:latest`), so two spellings find the same image.
pub fn canonical_reference(text: &str) -> Result<String, ImageError> {
    let reference: oci_client::Reference =
        text.trim()
            .parse()
            .map_err(|e: oci_client::ParseError| ImageError::BadReference {
                reference: text.to_owned(),
                message: e.to_string(),
            })?;
    Ok(reference.whole())
}

impl ImageStore {
    /// Opens (creating) the store under `root` and removes what an interrupted pull, import or
    /// unpack left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        for dir in ["blobs/sha256", "rootfs", "records", "tmp"] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        }
        // Another process (the agent, or `spillway-agent pull` next to it) may be writing: only
        // what is an hour old, or belongs to a process that is gone, is debris.
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp)
            .map_err(ImageError::io(&tmp))?
            .flatten()
        {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age > std::time::Duration::from_secs(3600) {
                remove_any(&entry.path());
            }
        }
        let rootfs = root.join("rootfs");
        for entry in std::fs::read_dir(&rootfs)
            .map_err(ImageError::io(&rootfs))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((_, pid)) = name.split_once(".partial-")
                && !process_alive(pid)
            {
                remove_any(&entry.path());
            }
        }
        Ok(Self {
            root,
            leases: Mutex::default(),
            adding: tokio::sync::Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        digest_hex(digest).map(|hex| self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_some_and(|p| p.is_file())
    }

    /// A writer for one blob. With `expected`, `finish` refuses content with another digest;
    /// without, the content names itself (docker-save layers carry no digest).
    pub fn blob_writer(
        &self,
        expected: Option<&str>,
        what: &str,
    ) -> Result<BlobWriter, ImageError> {
        if let Some(d) = expected
            && digest_hex(d).is_none()
        {
            return Err(ImageError::DigestMismatch {
                what: what.to_owned(),
                expected: d.to_owned(),
                actual: "(only lowercase sha256 digests are supported)".to_owned(),
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.root.join("tmp"))
            .map_err(ImageError::io(self.root.join("tmp")))?;
        Ok(BlobWriter {
            tmp,
            hasher: Sha256::new(),
            expected: expected.map(str::to_owned),
            what: what.to_owned(),
            blobs: self.root.join("blobs/sha256"),
            written: 0,
        })
    }

    pub fn put_blob(
        &self,
        expected: Option<&str>,
        bytes: &[u8],
        what: &str,
    ) -> Result<String, ImageError> {
        let mut w = self.blob_writer(expected, what)?;
        w.write_all(bytes)
            .map_err(ImageError::io(self.root.join("tmp")))?;
        w.finish()
    }

    /// Reads a metadata blob (a manifest, an index, an image config) whole: at most
    /// [`MAX_METADATA_BLOB`] bytes, so a descriptor naming a layer cannot make the agent load it.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| ImageError::DigestMismatch {
                what: "a descriptor".to_owned(),
                expected: digest.to_owned(),
                actual: "(not a sha256 digest)".to_owned(),
            })?;
        let size = std::fs::metadata(&path)
            .map_err(ImageError::io(&path))?
            .len();
        if size > MAX_METADATA_BLOB {
            return Err(ImageError::Layer {
                digest: digest.to_owned(),
                message: format!(
                    "it is {size} bytes, which is not image metadata (at most {MAX_METADATA_BLOB}); the image is malformed"
                ),
            });
        }
        std::fs::read(&path).map_err(ImageError::io(path))
    }

    pub fn records(&self) -> Vec<ImageRecord> {
        let dir = self.root.join("records");
        let mut records: Vec<ImageRecord> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        records.sort_by(|a, b| a.references.iter().next().cmp(&b.references.iter().next()));
        records
    }

    /// The image a reference names, if it is here (and unpacked).
    pub fn find(&self, reference: &str) -> Option<ImageRecord> {
        let canonical = canonical_reference(reference).ok()?;
        self.records()
            .into_iter()
            .find(|r| r.references.contains(&canonical) && self.rootfs(r).is_dir())
    }

    pub fn rootfs(&self, record: &ImageRecord) -> PathBuf {
        let hex = record.id.strip_prefix("sha256:").unwrap_or(&record.id);
        self.root.join("rootfs").join(hex)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        self.root.join("records").join(format!("{hex}.json"))
    }

    fn save(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let path = self.record_path(&record.id);
        let json = serde_json::to_vec_pretty(record).unwrap_or_default();
        spillway_plumbing::atomic::write_whole(&path, &json, 0o644).map_err(ImageError::io(path))
    }

    /// Refuses an image whose config says it was built for a platform this node cannot run.
    pub fn check_platform(
        &self,
        config_digest: &str,
        platform: &super::Platform,
        reference: &str,
    ) -> Result<(), ImageError> {
        let config = self.read_blob(config_digest)?;
        let Ok(c) = oci_spec::image::ImageConfiguration::from_reader(&config[..]) else {
            return Ok(()); // commit reports a bad config with its own message
        };
        let (os, arch) = (c.os().to_string(), c.architecture().to_string());
        if platform.fit(&os, &arch, c.variant().as_deref()).is_some() {
            return Ok(());
        }
        let mut theirs = format!("{os}/{arch}");
        if let Some(v) = c.variant() {
            theirs = format!("{theirs}/{v}");
        }
        Err(ImageError::NoPlatform {
            reference: reference.to_owned(),
            platform: platform.to_string(),
            available: theirs,
        })
    }

    /// Records an image whose blobs are all here and unpacks it (once per config digest). A
    /// reference that named another image before now names this one. Blocking: run it off the
    /// async workers.
    pub fn commit(&self, new: NewImage) -> Result<ImageRecord, ImageError> {
        let config_bytes = self.read_blob(&new.config_digest)?;
        let config =
            oci_spec::image::ImageConfiguration::from_reader(&config_bytes[..]).map_err(|e| {
                ImageError::Layer {
                    digest: new.config_digest.clone(),
                    message: format!(
                        "the image config is not valid JSON of an OCI image config: {e}"
                    ),
                }
            })?;
        let mut platform = format!("{}/{}", config.os(), config.architecture());
        if let Some(v) = config.variant() {
            platform.push('/');
            platform.push_str(v);
        }
        let run = config
            .config()
            .as_ref()
            .map(|c| RunConfig {
                env: c.env().clone().unwrap_or_default(),
                working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
                user: c.user().clone().filter(|u| !u.is_empty()),
                entrypoint: c.entrypoint().clone().unwrap_or_default(),
                cmd: c.cmd().clone().unwrap_or_default(),
            })
            .unwrap_or_default();
        let records = self.records();
        let mut record = match records.iter().find(|r| r.id == new.config_digest).cloned() {
            Some(existing) => existing,
            None => ImageRecord {
                id: new.config_digest.clone(),
                references: BTreeSet::new(),
                manifest_digest: new.manifest_digest.clone(),
                platform,
                layers: new.layers.clone(),
                config: run,
                size: 0,
                added: now(),
                last_used: now(),
            },
        };
        let rootfs = self.rootfs(&record);
        if !rootfs.is_dir() {
            self.unpack(&record, &rootfs)?;
        }
        record.size = self.disk_size(&record);
        // A tag moved to this image: the old image loses the name (and may be evicted later).
        for mut other in records {
            if other.id != record.id && new.references.iter().any(|r| other.references.remove(r)) {
                self.save(&other)?;
            }
        }
        record.references.extend(new.references.iter().cloned());
        self.save(&record)?;
        Ok(record)
    }

    fn unpack(&self, record: &ImageRecord, rootfs: &Path) -> Result<(), ImageError> {
        let partial = self.root.join("rootfs").join(format!(
            "{}.partial-{}",
            rootfs.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        remove_any(&partial);
        std::fs::create_dir_all(&partial).map_err(ImageError::io(&partial))?;
        let applied = (|| {
            let mut budget = unpack::Budget::default();
            for layer in &record.layers {
                let path = self.blob_path(layer).ok_or_else(|| ImageError::Layer {
                    digest: layer.clone(),
                    message: "not a sha256 digest".to_owned(),
                })?;
                let file = std::fs::File::open(&path).map_err(ImageError::io(&path))?;
                unpack::apply_layer(std::io::BufReader::new(file), &partial, &mut budget).map_err(
                    |message| ImageError::Layer {
                        digest: layer.clone(),
                        message,
                    },
                )?;
            }
            unpack::prepare_mount_points(&partial).map_err(|e| ImageError::Layer {
                digest: record.id.clone(),
                message: e.to_string(),
            })
        })();
        match applied
            .and_then(|()| std::fs::rename(&partial, rootfs).map_err(ImageError::io(rootfs)))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                remove_any(&partial);
                // Another process finished the same root first: theirs is as good as ours.
                if rootfs.is_dir() { Ok(()) } else { Err(e) }
            }
        }
    }

    fn disk_size(&self, record: &ImageRecord) -> u64 {
        let blobs: u64 = record
            .layers
            .iter()
            .filter_map(|d| std::fs::metadata(self.blob_path(d)?).ok())
            .map(|m| m.len())
            .sum();
        let root: u64 = walkdir::WalkDir::new(self.rootfs(record))
            .into_iter()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        blobs + root
    }

    /// Notes that a job used the image now (at most once a minute on disk: SD cards wear).
    pub fn touch(&self, record: &ImageRecord) {
        if now().saturating_sub(record.last_used) >= 60 {
            let mut used = record.clone();
            used.last_used = now();
            let _ = self.save(&used);
        }
    }

    /// Keeps the image from eviction while the lease lives (a deployed function holds one).
    pub fn lease(self: &Arc<Self>, id: &str) -> Lease {
        *self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default() += 1;
        Lease {
            store: self.clone(),
            id: id.to_owned(),
        }
    }

    fn leased(&self, id: &str) -> bool {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Evicts least-recently-used images no deployed function uses until the store fits in
    /// `max_bytes` (images in use stay even if that is not enough). Returns the evicted ones.
    pub fn prune(&self, max_bytes: u64) -> Vec<ImageRecord> {
        let mut records = self.records();
        let mut total: u64 = records.iter().map(|r| r.size).sum();
        records.sort_by_key(|r| r.last_used);
        let mut evicted = Vec::new();
        for record in records {
            if total <= max_bytes {
                break;
            }
            if self.leased(&record.id) {
                continue;
            }
            if self.remove(&record).is_ok() {
                total = total.saturating_sub(record.size);
                evicted.push(record);
            }
        }
        if !evicted.is_empty() {
            self.gc_blobs();
        }
        evicted
    }

    /// Removes one image (record first, so a crash leaves an orphan root, not a broken record).
    pub fn remove(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let path = self.record_path(&record.id);
        std::fs::remove_file(&path).map_err(ImageError::io(&path))?;
        remove_any(&self.rootfs(record));
        Ok(())
    }

    /// Deletes blobs no record refers to (left by evictions, and by imports and pulls that
    /// failed half-way), and roots without a record.
    pub fn gc_blobs(&self) {
        let records = self.records();
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut roots: BTreeSet<PathBuf> = BTreeSet::new();
        for r in &records {
            keep.extend(r.layers.iter().cloned());
            keep.insert(r.id.clone());
            keep.extend(r.manifest_digest.iter().cloned());
            roots.insert(self.rootfs(r));
        }
        let keep_hex: BTreeSet<String> = keep
            .iter()
            .filter_map(|d| digest_hex(d).map(str::to_owned))
            .collect();
        for entry in std::fs::read_dir(self.root.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !keep_hex.contains(&*entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        for entry in std::fs::read_dir(self.root.join("rootfs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if !roots.contains(&path) && !entry.file_name().to_string_lossy().contains(".partial") {
                remove_any(&path);
            }
        }
    }
}

/// A blob being written: hashed as it goes, named by its digest only once complete and checked.
#[derive(Debug)]
pub struct BlobWriter {
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    expected: Option<String>,
    what: String,
    blobs: PathBuf,
    written: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.tmp.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies the digest and moves the blob into place; returns its digest.
    pub fn finish(self) -> Result<String, ImageError> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if let Some(expected) = &self.expected
            && *expected != actual
        {
            return Err(ImageError::DigestMismatch {
                what: self.what,
                expected: expected.clone(),
                actual,
            });
        }
        let hex = actual.trim_start_matches("sha256:");
        let path = self.blobs.join(hex);
        self.tmp
            .as_file()
            .sync_all()
            .map_err(ImageError::io(&path))?;
        self.tmp.persist(&path).map_err(|e| ImageError::Io {
            path,
            source: e.error,
        })?;
        Ok(actual)
    }
}

fn process_alive(pid: &str) -> bool {
    pid.parse::<u32>()
        .is_ok_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
}

pub(crate) fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::tests::{file, layer};

    /// Stores a one-layer image named `name` whose layer holds `size` bytes.
    fn add(store: &ImageStore, name: &str, size: usize) -> ImageRecord {
        let tar = layer(|b| file(b, &format!("{name}.bin"), &vec![1u8; size]));
        let layer = store.put_blob(None, &tar, "layer").expect("layer");
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["N={name}"]}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let config = store
            .put_blob(None, config.as_bytes(), "config")
            .expect("config");
        store
            .commit(NewImage {
                references: vec![canonical_reference(&format!("localhost/{name}:1")).expect("ref")],
                manifest_digest: None,
                config_digest: config,
                layers: vec![layer],
            })
            .expect("commit")
    }

    fn used_at(store: &ImageStore, record: &ImageRecord, at: u64) {
        let mut r = record.clone();
        r.last_used = at;
        store.save(&r).expect("save");
    }

    #[test]
    fn pruning_evicts_least_recently_used_images_nobody_deploys_and_their_blobs() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(ImageStore::open(dir.path()).expect("store"));
        let old = add(&store, "old", 100_000);
        let deployed = add(&store, "deployed", 100_000);
        let recent = add(&store, "recent", 100_000);
        used_at(&store, &old, 10);
        used_at(&store, &deployed, 5);
        used_at(&store, &recent, 1_000);
        let _lease = store.lease(&deployed.id);
        let total: u64 = store.records().iter().map(|r| r.size).sum();

        let evicted = store.prune(total - 1);
        assert_eq!(
            evicted.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            vec![old.id.clone()]
        );
        assert!(store.find("localhost/old:1").is_none());
        assert!(!store.rootfs(&old).exists());
        assert!(
            !store.has_blob(&old.layers[0]),
            "the evicted image's layer is gone"
        );
        assert!(
            store.find("localhost/deployed:1").is_some()
                && store.find("localhost/recent:1").is_some()
        );

        // Even a tiny limit keeps what a deployed function uses.
        store.prune(0);
        assert!(store.find("localhost/deployed:1").is_some());
        assert!(store.find("localhost/recent:1").is_none());
    }

    #[test]
    fn a_tag_pulled_again_moves_to_the_new_image_and_spellings_agree() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = ImageStore::open(dir.path()).expect("store");
        let first = add(&store, "app", 10);
        assert_eq!(
            canonical_reference("busybox").expect("ref"),
            "docker.io/library/busybox:latest"
        );
        let tar = layer(|b| file(b, "v2", b"2"));
        let layer = store.put_blob(None, &tar, "layer").expect("layer");
        let config = store
            .put_blob(None, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#, "config")
            .expect("config");
        let second = store
            .commit(NewImage {
                references: vec![canonical_reference("localhost/app:1").expect("ref")],
                manifest_digest: None,
                config_digest: config,
                layers: vec![layer],
            })
            .expect("commit");
        assert_eq!(store.find("localhost/app:1").map(|r| r.id), Some(second.id));
        let orphan = store
            .records()
            .into_iter()
            .find(|r| r.id == first.id)
            .expect("old image kept");
        assert!(orphan.references.is_empty(), "the old image lost the tag");
    }

    #[test]
    fn a_blob_with_the_wrong_digest_is_refused_and_not_stored() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = ImageStore::open(dir.path()).expect("store");
        let claimed = format!("sha256:{}", "0".repeat(64));
        let err = store
            .put_blob(Some(&claimed), b"not zero", "layer x")
            .expect_err("mismatch");
        assert!(err.to_string().contains("layer x is corrupt"), "{err}");
        assert!(!store.has_blob(&claimed));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
    }
}
