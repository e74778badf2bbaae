//! From a file in a bucket folder to the job it makes: its object key, content hash and id, or a
//! refusal recorded as a failed job (bad names, links leading out of the data root).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use spillway_proto::fdl::BucketPath;
use spillway_proto::{Event, FileEvent, ObjectKey};

use super::Shared;
use crate::beneath::{Beneath, BeneathError};
use crate::catalog::Deployed;
use crate::journal::{Change, JobRecord, JobState, SeenFile, WriteStamp, mtime_ns, now_ms};

pub(super) fn fail(r: &mut JobRecord, reason: String) {
    r.state = JobState::Failed { reason };
    r.finished_at_ms = Some(now_ms());
}

/// The job a file makes for a function, with what the journal learns with it (the file's hash
/// and which write of its key it is), or `None` when the file vanished before it was read.
pub(super) fn identify_file(
    s: &Shared,
    function: &Deployed,
    bucket: &BucketPath,
    rel: &Path,
    path: &Path,
) -> Option<(JobRecord, Vec<Change>)> {
    let name = &function.def.name;
    let key = match ObjectKey::from_relative_path(rel) {
        Ok(rel_key) => match &bucket.folder {
            Some(folder) => ObjectKey::parse(&format!("{folder}/{rel_key}")),
            None => Ok(rel_key),
        },
        Err(e) => Err(e),
    };
    let (mut file, meta, refusal) = match open_beneath(s, rel, path) {
        Opened::Gone => return None,
        Opened::File(file, meta) => (Some(file), meta, None),
        Opened::Refused(reason, meta) => (None, meta, Some(reason)),
    };
    let mtime_ns = mtime_ns(&meta);
    let key = match (key, refusal) {
        (Err(e), _) => Err(format!("input file name refused: {e}")),
        (Ok(_), Some(reason)) => Err(reason),
        (Ok(key), None) => Ok(key),
    };
    let key = match key {
        Ok(key) => key,
        Err(reason) => {
            // Record the refusal as a failed job so the user can find it in `jobs`/`logs`.
            let shown: String = rel
                .to_string_lossy()
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            let shown = match &bucket.folder {
                Some(folder) => format!("{folder}/{shown}"),
                None => shown,
            };
            let placeholder = ObjectKey::parse(&shown.replace("..", "_"))
                .or_else(|_| ObjectKey::parse("invalid-name"))
                .ok()?;
            let digest: [u8; 32] = Sha256::digest(rel.as_os_str().as_encoded_bytes()).into();
            let event = Event::File(FileEvent {
                bucket: bucket.bucket.clone(),
                key: placeholder,
                size: meta.len(),
                mtime_ns,
                sha256: digest,
            });
            let mut record =
                JobRecord::new(event.job_id(&s.config.node_name, name), name.clone(), event);
            fail(&mut record, reason);
            return Some((record, Vec::new()));
        }
    };
    let file_key = format!("{name}\0{}/{key}", bucket.bucket);
    let cached = s
        .journal
        .seen_file(&file_key)
        .ok()
        .flatten()
        .filter(|f| f.size == meta.len() && f.mtime_ns == mtime_ns);
    let sha256 = match cached {
        Some(seen) => seen.sha256,
        None => sha256_file(file.as_mut()?)?,
    };
    let seen = SeenFile {
        size: meta.len(),
        mtime_ns,
        sha256,
    };
    // Every new write of the key is a new job, identical content included (as every upload is
    // in OSCAR); the same write seen again is the same job.
    let write_key = format!("{}/{key}", bucket.bucket);
    let last = s.journal.last_write(&write_key).ok().flatten();
    let stamp = WriteStamp::next(last, &meta);
    let event = Event::written(
        FileEvent {
            bucket: bucket.bucket.clone(),
            key,
            size: meta.len(),
            mtime_ns,
            sha256,
        },
        stamp.occurrence,
    );
    let record = JobRecord::new(event.job_id(&s.config.node_name, name), name.clone(), event);
    if last == Some(stamp) && matches!(s.journal.get(record.id), Ok(None)) {
        // This write made a job long ago, and `[retention]` has removed its record since (the
        // write is remembered apart): it ran, and does not run again.
        return None;
    }
    let learnt = vec![
        Change::SeenFile(file_key, seen),
        Change::Written(write_key, stamp),
    ];
    Some((record, learnt))
}

/// A bucket file, opened beneath the data root without following links: a symbolic link may
/// point anywhere (and be swapped for another later), so only real files inside the data root
/// are inputs.
enum Opened {
    File(std::fs::File, std::fs::Metadata),
    /// Refused with the reason; the metadata is the link's own (the input itself is not read).
    Refused(String, std::fs::Metadata),
    /// Vanished before it was read, or not a regular file: nothing to do.
    Gone,
}

fn open_beneath(s: &Shared, rel: &Path, path: &Path) -> Opened {
    let Ok(under) = path.strip_prefix(&s.config.data_root) else {
        return Opened::Gone;
    };
    let opened = Beneath::open(&s.config.data_root).and_then(|root| root.open_file(under));
    let reason = match opened {
        Ok(file) => {
            return match file.metadata() {
                Ok(meta) if meta.is_file() => Opened::File(file, meta),
                _ => Opened::Gone,
            };
        }
        Err(e) if e.is_not_found() => return Opened::Gone,
        Err(BeneathError::Symlink { .. }) => format!(
            "input file refused: {} is or leads through a symbolic link, which inputs may not be; copy the file in instead",
            rel.display()
        ),
        Err(BeneathError::NotA { .. }) => return Opened::Gone,
        Err(other) => format!("input file refused: {other}"),
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Opened::Refused(reason, meta),
        Err(_) => Opened::Gone,
    }
}

fn sha256_file(file: &mut std::fs::File) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => return None,
        }
    }
    Some(hasher.finalize().into())
}
