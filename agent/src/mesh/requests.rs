//! What the coordinator may ask of an agent: job logs, and files in and out of its data root.
//! Every path is an object key (no `..`, no absolute paths) resolved under the data root, and a
//! file is stored under a hidden name and renamed, so watchers only ever see it whole.

use std::path::Path;

use sha2::{Digest, Sha256};
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::{FileEntry, Request, Response};

use crate::config::AgentConfig;
use crate::joblog;

/// Answers one request (blocking file IO: call from `spawn_blocking`).
pub fn answer(config: &AgentConfig, req: Request) -> Response {
    let result = match req {
        Request::Logs { job } => joblog::read(&config.logs_dir(), &job)
            .map(Response::Logs)
            .map_err(|e| e.to_string()),
        Request::PutFile { path, bytes } => put(&config.data_root, &path, &bytes),
        Request::GetFile { path } => get(&config.data_root, &path),
        Request::ListFiles { path } => list(&config.data_root, &path),
    };
    result.unwrap_or_else(Response::Error)
}

fn key(path: &str) -> Result<ObjectKey, String> {
    ObjectKey::parse(path.trim_end_matches('/'))
        .map_err(|e| format!("`{path}` is not a path under the data root: {e}"))
}

/// Whether `path`, with links resolved, is still inside the data root.
fn inside(data_root: &Path, path: &Path) -> bool {
    match (
        std::fs::canonicalize(data_root),
        std::fs::canonicalize(path),
    ) {
        (Ok(root), Ok(p)) => p.starts_with(root),
        _ => false,
    }
}

fn put(data_root: &Path, path: &str, bytes: &[u8]) -> Result<Response, String> {
    let key = key(path)?;
    let target = key.under(data_root);
    let parent = target.parent().ok_or("no parent folder")?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    if !inside(data_root, parent) {
        return Err(format!("`{path}` leads outside the data root"));
    }
    crate::atomic::write_whole(&target, bytes, 0o644)
        .map_err(|e| format!("cannot store {}: {e}", target.display()))?;
    Ok(Response::Stored {
        path: key.to_string(),
        sha256: Sha256::digest(bytes).into(),
    })
}

fn get(data_root: &Path, path: &str) -> Result<Response, String> {
    let target = key(path)?.under(data_root);
    if !target.is_file() || !inside(data_root, &target) {
        return Err(format!(
            "no file `{path}` on this node; list files with `spillway get files NODE`"
        ));
    }
    std::fs::read(&target)
        .map(Response::File)
        .map_err(|e| format!("cannot read `{path}`: {e}"))
}

fn list(data_root: &Path, prefix: &str) -> Result<Response, String> {
    let base = if prefix.trim_matches('/').is_empty() {
        data_root.to_owned()
    } else {
        key(prefix)?.under(data_root)
    };
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&base)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        .flatten()
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(data_root) else {
            continue;
        };
        let meta = entry.metadata().ok();
        files.push(FileEntry {
            path: rel.to_string_lossy().into_owned(),
            size: meta.as_ref().map_or(0, |m| m.len()),
            modified_ms: meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64),
        });
        if files.len() >= 10_000 {
            break;
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Response::Listing(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_outside_the_data_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let r = put(dir.path(), bad, b"x");
            assert!(r.is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/tmp", dir.path().join("escape")).unwrap();
        assert!(put(dir.path(), "escape/x", b"x").is_err());
        assert!(get(dir.path(), "escape/x").is_err());
    }

    #[test]
    fn a_stored_file_reads_back_and_lists_without_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "in/a.txt", b"hello").unwrap();
        assert_eq!(
            get(dir.path(), "in/a.txt").unwrap(),
            Response::File(b"hello".to_vec())
        );
        std::fs::write(dir.path().join("in/.hidden"), b"").unwrap();
        let Response::Listing(files) = list(dir.path(), "").unwrap() else {
            panic!()
        };
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "in/a.txt");
    }
}
