//! From a file in a bucket folder to the job it makes: its object key, content hash and id, or a
//! refusal recorded as a failed job (bad names, links leading out of the data root).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use spillway_proto::fdl::BucketPath;
use spillway_proto::{Event, FileEvent, ObjectKey};

use super::Shared;
use crate::catalog::Deployed;
use crate::journal::{JobRecord, JobState, SeenFile, now_ms};

pub(super) fn fail(r: &mut JobRecord, reason: String) {
    r.state = JobState::Failed { reason };
    r.finished_at_ms = Some(now_ms());
}

/// The job a file makes for a function, or `None` when the file vanished before it was read.
pub(super) fn identify_file(
    s: &Shared,
    function: &Deployed,
    bucket: &BucketPath,
    rel: &Path,
    path: &Path,
) -> Option<(JobRecord, Option<(String, SeenFile)>)> {
    let name = &function.def.name;
    let key = match ObjectKey::from_relative_path(rel) {
        Ok(rel_key) => match &bucket.folder {
            Some(folder) => ObjectKey::parse(&format!("{folder}/{rel_key}")),
            None => Ok(rel_key),
        },
        Err(e) => Err(e),
    };
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    // A symbolic link may point anywhere; only files inside the data root are inputs.
    let escapes =
        std::fs::canonicalize(path).map_or(true, |real| !real.starts_with(&s.real_data_root));
    let key = match key {
        Ok(_) if escapes => Err(format!(
            "input file refused: {} resolves outside the data root (a symbolic link?); copy the file in instead",
            rel.display()
        )),
        Ok(key) => Ok(key),
        Err(e) => Err(format!("input file name refused: {e}")),
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
            return Some((record, None));
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
        None => sha256_file(path)?,
    };
    let seen = SeenFile {
        size: meta.len(),
        mtime_ns,
        sha256,
    };
    let event = Event::File(FileEvent {
        bucket: bucket.bucket.clone(),
        key,
        size: meta.len(),
        mtime_ns,
        sha256,
    });
    let record = JobRecord::new(event.job_id(&s.config.node_name, name), name.clone(), event);
    Some((record, Some((file_key, seen))))
}

fn sha256_file(path: &Path) -> Option<[u8; 32]> {
    let mut file = std::fs::File::open(path).ok()?;
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
