//! What the coordinator may ask of an agent: job logs, and files in and out of its data root.
//! Every path is an object key (no `..`, no absolute paths) resolved beneath the data root without
//! following symbolic links ([`crate::beneath`]), and a file is stored under a hidden name and
//! renamed, so watchers only ever see it whole.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::{FileEntry, MAX_STREAM_FRAME, Request, Response};

use crate::beneath::{Beneath, Kind};
use crate::joblog;
use crate::journal::{Journal, WriteStamp};
use spillway_agent_config::AgentConfig;

/// Answers one request (blocking file IO: call from `spawn_blocking`).
pub fn answer(config: &AgentConfig, journal: &Journal, req: Request) -> Response {
    let result = match req {
        Request::Logs { job } => joblog::read(&config.logs_dir(), &job)
            .map(Response::Logs)
            .map_err(|e| e.to_string()),
        Request::PutFile { path, bytes } => put(&config.data_root, journal, &path, &bytes),
        Request::GetFile { path } => get(&config.data_root, &path),
        Request::ListFiles { path } => list(&config.data_root, &path),
    };
    result.unwrap_or_else(Response::Error)
}

fn key(path: &str) -> Result<ObjectKey, String> {
    ObjectKey::parse(path.trim_end_matches('/'))
        .map_err(|e| format!("`{path}` is not a path under the data root: {e}"))
}

fn data_root(data_root: &Path) -> Result<Beneath, String> {
    Beneath::open(data_root).map_err(|e| e.to_string())
}

/// What a request may carry back: a file bigger than one frame cannot be answered.
const MAX_FILE: u64 = (MAX_STREAM_FRAME - 4096) as u64;

/// Stores a file whole and says which write of its key it is, so that the coordinator names the
/// job it makes as the watcher will (see [`WriteStamp`]).
fn put(data_root: &Path, journal: &Journal, path: &str, bytes: &[u8]) -> Result<Response, String> {
    let key = key(path)?;
    let root = self::data_root(data_root)?;
    let rel = Path::new(key.as_str());
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        root.mkdir_all(parent, 0o755).map_err(|e| e.to_string())?;
    }
    root.write_whole(rel, bytes, 0o644)
        .map_err(|e| e.to_string())?;
    let meta = root
        .open_file(rel)
        .map_err(|e| e.to_string())?
        .metadata()
        .map_err(|e| e.to_string())?;
    let last = journal
        .last_write(key.as_str())
        .map_err(|e| e.to_string())?;
    let stamp = WriteStamp::next(last, &meta);
    Ok(Response::StoredWrite {
        path: key.to_string(),
        sha256: Sha256::digest(bytes).into(),
        occurrence: stamp.occurrence,
    })
}

fn get(data_root: &Path, path: &str) -> Result<Response, String> {
    let key = key(path)?;
    let root = self::data_root(data_root)?;
    let mut file = root.open_file(Path::new(key.as_str())).map_err(|e| {
        if e.is_not_found() {
            format!("no file `{path}` on this node; list files with `spillway get files NODE`")
        } else {
            e.to_string()
        }
    })?;
    let size = file.metadata().map_or(0, |m| m.len());
    if size > MAX_FILE {
        return Err(format!(
            "`{path}` is {size} bytes, more than the {MAX_FILE} a request carries; fetch it from the node another way"
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.by_ref()
        .take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    Ok(Response::File(bytes))
}

fn list(data_root: &Path, prefix: &str) -> Result<Response, String> {
    let base = if prefix.trim_matches('/').is_empty() {
        data_root.to_owned()
    } else {
        let key = key(prefix)?;
        // The folder itself, and every folder on the way, must be a real folder: a link is not
        // followed out of the data root (nor listed through inside it).
        match self::data_root(data_root)?
            .kind(Path::new(key.as_str()))
            .map_err(|e| e.to_string())?
        {
            Some(Kind::Dir) => {}
            Some(_) => return Err(format!("`{prefix}` is not a folder under the data root")),
            None => return Ok(Response::Listing(Vec::new())),
        }
        key.under(data_root)
    };
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&base)
        .follow_links(false)
        .follow_root_links(false)
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
    fn files_outside_the_data_root_are_refused_and_nothing_is_made_there() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("data");
        let journal = Journal::open(&base.path().join("journal.redb")).unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let r = put(&dir, &journal, bad, b"x");
            assert!(r.is_err(), "{bad}");
        }
        std::os::unix::fs::symlink(&outside, dir.join("escape")).unwrap();
        let err = put(&dir, &journal, "escape/new/x", b"x").unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        let err = get(&dir, "escape/secret").unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(list(&dir, "escape").is_err());
        // A link to a file is refused too, not followed.
        std::os::unix::fs::symlink(outside.join("secret"), dir.join("leak")).unwrap();
        assert!(get(&dir, "leak").is_err());
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("secret")],
            "nothing made outside"
        );
        let Response::Listing(files) = list(&dir, "").unwrap() else {
            panic!()
        };
        assert!(files.is_empty(), "links are not listed: {files:?}");
    }

    #[test]
    fn a_stored_file_reads_back_and_lists_without_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::open(&state.path().join("journal.redb")).unwrap();
        put(dir.path(), &journal, "in/a.txt", b"hello").unwrap();
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

    #[test]
    fn every_stored_copy_is_a_new_write_of_its_key_even_with_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::open(&state.path().join("journal.redb")).unwrap();
        let write = |journal: &Journal| match put(dir.path(), journal, "in/a.txt", b"same") {
            Ok(Response::StoredWrite { occurrence, .. }) => occurrence,
            other => panic!("{other:?}"),
        };
        assert_eq!(write(&journal), 1, "nothing seen yet: a first write");
        // The watcher saw the first write (the engine journals it with the job).
        let meta = std::fs::metadata(dir.path().join("in/a.txt")).unwrap();
        let seen = WriteStamp::next(None, &meta);
        journal
            .commit(&[crate::journal::Change::Written("in/a.txt".into(), seen)])
            .unwrap();
        assert_eq!(
            WriteStamp::next(Some(seen), &meta).occurrence,
            1,
            "the same write seen again keeps its number"
        );
        // Stored again, byte for byte: a new file, so the next write.
        assert_eq!(write(&journal), 2);
    }
}
