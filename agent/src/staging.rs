//! The staging contract (OSCAR faas-supervisor compatible): a fresh input folder holding a copy
//! of the input file, an empty output folder, and afterwards the delivery of every output file
//! to each of the function's outputs.
//!
//! Each run attempt has its own folders (`staging/<job>-<attempt>`), so a run orphaned by a
//! crash can never mix its files into the next attempt.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use spillway_agent_config::AgentConfig;
use spillway_proto::fdl::StorageRef;
use spillway_proto::{JobId, ObjectKey};

use crate::beneath::Beneath;

/// The folders of one run attempt.
#[derive(Debug, Clone)]
pub struct Staging {
    pub root: PathBuf,
    pub input_dir: PathBuf,
    pub output_dir: PathBuf,
    pub work_dir: PathBuf,
}

/// A delivery that could not be completed.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum StagingError {
    /// cannot prepare the staging folder {path}: {source}
    Prepare { path: PathBuf, source: io::Error },
    /// the input file {path} is gone or unreadable: {source}
    Input { path: PathBuf, source: io::Error },
    /// output file {key} is refused: {reason}
    BadOutput { key: String, reason: String },
    /// cannot deliver {key} to {dest}: {source}
    Deliver {
        key: String,
        dest: PathBuf,
        source: io::Error,
    },
}

/// Opens a job's input for reading: a bucket file beneath the data root without following
/// a symbolic link (one swapped in while the job was queued fails it, with the reason), a
/// message's payload from this node's own inbox.
pub fn open_input(
    config: &AgentConfig,
    id: spillway_proto::JobId,
    event: &spillway_proto::Event,
) -> std::io::Result<std::fs::File> {
    match event.as_file() {
        Some(f) => {
            let rel = Path::new(&f.bucket).join(f.key.as_str());
            Beneath::open(&config.data_root)
                .and_then(|root| root.open_file(&rel))
                .map_err(crate::beneath::BeneathError::into_io)
        }
        None => std::fs::File::open(config.input_of(id, event)),
    }
}

impl Staging {
    pub fn for_attempt(staging_root: &Path, job: JobId, attempt: u32) -> Self {
        let root = staging_root.join(format!("{job}-{attempt}"));
        Self {
            input_dir: root.join("input"),
            output_dir: root.join("output"),
            work_dir: root.join("work"),
            root,
        }
    }

    /// Creates the folders afresh and copies the input file in. The copy keeps the original
    /// untouched whatever the function does to its input. `input` is the input opened by its
    /// owner ([`open_input`]); `shown` names it in errors.
    pub fn prepare(
        &self,
        input: io::Result<fs::File>,
        shown: &Path,
        file_name: &str,
    ) -> Result<(), StagingError> {
        if self.root.exists() {
            fs::remove_dir_all(&self.root).map_err(|source| StagingError::Prepare {
                path: self.root.clone(),
                source,
            })?;
        }
        for dir in [&self.input_dir, &self.output_dir, &self.work_dir] {
            fs::create_dir_all(dir).map_err(|source| StagingError::Prepare {
                path: dir.clone(),
                source,
            })?;
        }
        let failed = |source| StagingError::Input {
            path: shown.to_owned(),
            source,
        };
        let mut input = input.map_err(failed)?;
        let mut copy = fs::File::create_new(self.input_dir.join(file_name)).map_err(|source| {
            StagingError::Prepare {
                path: self.input_dir.join(file_name),
                source,
            }
        })?;
        io::copy(&mut input, &mut copy).map_err(failed)?;
        Ok(())
    }

    /// Every regular file the function left in the output folder, as keys relative to it.
    /// Symbolic links are skipped: following one could copy data from outside the job.
    pub fn collect_outputs(&self) -> Result<Vec<ObjectKey>, StagingError> {
        let mut keys = Vec::new();
        for entry in walkdir::WalkDir::new(&self.output_dir).min_depth(1) {
            let entry = entry.map_err(|e| StagingError::Prepare {
                path: e.path().unwrap_or(&self.output_dir).to_owned(),
                source: e.into(),
            })?;
            let kind = entry.file_type();
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                tracing::warn!(path = %entry.path().display(), "skipping output that is not a regular file");
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.output_dir)
                .unwrap_or(entry.path());
            let key = ObjectKey::from_relative_path(rel).map_err(|e| StagingError::BadOutput {
                key: rel.display().to_string(),
                reason: e.to_string(),
            })?;
            keys.push(key);
        }
        keys.sort();
        Ok(keys)
    }

    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Copies each output key to every output whose filters accept it, beneath `data_root` (never
/// through a symbolic link: see [`crate::beneath`]).
///
/// Files are written to a hidden temporary name and renamed into place, so a reader (or a chained
/// function watching that folder) only ever sees complete files, and a repeated delivery after a
/// crash replaces the same names instead of adding new ones. Returns the delivered paths.
pub fn deliver(
    output_dir: &Path,
    keys: &[ObjectKey],
    outputs: &[StorageRef],
    data_root: &Path,
    job: JobId,
) -> Result<Vec<String>, StagingError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut delivered = Vec::new();
    let mut root = None;
    for output in outputs.iter().filter(|o| o.provider.is_local()) {
        let dest_dir = output.path.dir_under(Path::new(""));
        for key in keys.iter().filter(|k| output.accepts(k.file_name())) {
            let dest = key.under(&dest_dir);
            let fail = |source| StagingError::Deliver {
                key: key.to_string(),
                dest: data_root.join(&dest),
                source,
            };
            let root = match &root {
                Some(r) => r,
                None => root.insert(Beneath::open(data_root).map_err(|e| fail(e.into_io()))?),
            };
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                root.mkdir_all(parent, 0o755)
                    .map_err(|e| fail(e.into_io()))?;
            }
            let tmp = dest.with_file_name(format!(
                ".spillway-{}-{}.part",
                job.short(),
                key.file_name()
            ));
            // The function wrote the output folder: a link there is not followed either.
            let mut source = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(key.under(output_dir))
                .map_err(fail)?;
            root.remove_all(&tmp).map_err(|e| fail(e.into_io()))?;
            let mut part = root
                .create_file(&tmp, 0o644)
                .map_err(|e| fail(e.into_io()))?;
            io::copy(&mut source, &mut part)
                .and_then(|_| {
                    part.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
                })
                .and_then(|()| part.sync_all())
                .map_err(fail)?;
            root.rename(&tmp, &dest).map_err(|e| fail(e.into_io()))?;
            delivered.push(format!("{}/{}", output.path, key));
        }
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::fdl::{BucketPath, ProviderRef};

    fn out(path: &str, suffix: &[&str]) -> StorageRef {
        let (bucket, folder) = path.split_once('/').expect("bucket/folder");
        StorageRef {
            provider: ProviderRef::parse("minio.default"),
            path: BucketPath {
                bucket: bucket.into(),
                folder: Some(ObjectKey::parse(folder).expect("key")),
            },
            suffix: suffix.iter().map(|s| s.to_string()).collect(),
            prefix: vec![],
        }
    }

    #[test]
    fn outputs_are_filtered_per_output_and_delivered_twice_without_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging =
            Staging::for_attempt(&dir.path().join("staging"), JobId::from_bytes([7; 16]), 1);
        let input = dir.path().join("in.jpg");
        fs::write(&input, b"img").expect("write");
        staging
            .prepare(fs::File::open(&input), &input, "in.jpg")
            .expect("prepare");
        fs::write(staging.output_dir.join("a.avi"), b"video").expect("write");
        fs::create_dir_all(staging.output_dir.join("sub")).expect("mkdir");
        fs::write(staging.output_dir.join("sub/b.wav"), b"audio").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", staging.output_dir.join("leak"))
            .expect("symlink");
        let keys = staging.collect_outputs().expect("collect");
        assert_eq!(
            keys.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["a.avi", "sub/b.wav"]
        );
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("data root");
        let outputs = [out("av/video", &["avi"]), out("av/audio", &["wav"])];
        for _ in 0..2 {
            let delivered = deliver(
                &staging.output_dir,
                &keys,
                &outputs,
                &data,
                JobId::from_bytes([7; 16]),
            )
            .expect("deliver");
            assert_eq!(delivered, vec!["av/video/a.avi", "av/audio/sub/b.wav"]);
        }
        assert_eq!(
            fs::read(data.join("av/video/a.avi")).expect("read"),
            b"video"
        );
        assert_eq!(
            fs::read_dir(data.join("av/video")).expect("ls").count(),
            1,
            "no temp files, no copies"
        );
        assert!(!data.join("av/video/leak").exists());
    }
}
