//! Folder triggers: real inotify (through `notify`) on every input folder of the deployed
//! functions, plus a rescan at start so files that arrived while the agent was down are seen.
//!
//! A file counts when it is closed after writing or moved in. Partial and temporary files
//! (hidden names, `~` backups, `.part`, `.tmp`, `.crdownload`, `.swp` …) are ignored: copy tools
//! and browsers write those first and rename them when complete, which we see as a move.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// What the watcher reports to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderEvent {
    /// A complete file was just written or moved in here.
    Ready(PathBuf),
    /// A rescan found this file (it may have been there for a while).
    Found(PathBuf),
    /// Events may have been lost (queue overflow, a folder moved in): scan this folder.
    Rescan(PathBuf),
    /// What was in this folder before it was watched (at start, or newly deployed): files
    /// changed since `watched_since` are left to the watcher, which reports them when they are
    /// complete; a scan would find them half-written.
    Backlog {
        dir: PathBuf,
        watched_since: std::time::SystemTime,
    },
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum WatchError {
    /// cannot create input folder {path}: {source}
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// cannot watch {path}: {source} (raise fs.inotify.max_user_watches if the limit was reached)
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    /// cannot start the file watcher: {0}
    Start(notify::Error),
}

/// Keeps the inotify watches alive; dropping it stops watching.
#[derive(Debug)]
pub struct FolderWatch {
    _watcher: RecommendedWatcher,
}

const TEMP_SUFFIXES: &[&str] = &[
    "~",
    ".part",
    ".tmp",
    ".partial",
    ".crdownload",
    ".swp",
    ".swx",
    ".filepart",
    ".download",
];

/// Whether a file name looks like work in progress rather than a finished file.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') || TEMP_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn ready(path: &Path) -> Option<FolderEvent> {
    let name = path.file_name()?.to_string_lossy();
    (!is_temporary(&name)).then(|| FolderEvent::Ready(path.to_owned()))
}

impl FolderWatch {
    /// Creates the folders if needed and watches them (recursively) for finished files.
    pub fn start(
        dirs: &[PathBuf],
        events: UnboundedSender<FolderEvent>,
    ) -> Result<Self, WatchError> {
        let roots = dirs.to_vec();
        let tx = events.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let event = match res {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("file watcher error, rescanning: {e}");
                    for root in &roots {
                        let _ = tx.send(FolderEvent::Rescan(root.clone()));
                    }
                    return;
                }
            };
            if event.need_rescan() {
                for root in &roots {
                    let _ = tx.send(FolderEvent::Rescan(root.clone()));
                }
                return;
            }
            let target = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => event.paths.first(),
                // Renames also arrive as a paired `Both` event; the `To` half is enough.
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
                _ => None,
            };
            if let Some(path) = target {
                // A whole folder moved in arrives as one event: look inside it.
                let message = if path.is_dir() {
                    Some(FolderEvent::Rescan(path.clone()))
                } else {
                    ready(path)
                };
                if let Some(m) = message {
                    let _ = tx.send(m);
                }
            }
        })
        .map_err(WatchError::Start)?;
        for dir in dirs {
            std::fs::create_dir_all(dir).map_err(|source| WatchError::CreateDir {
                path: dir.clone(),
                source,
            })?;
            watcher
                .watch(dir, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Watch {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(Self { _watcher: watcher })
    }
}

/// Every finished file under `dir`, oldest modification first (so a backlog runs in arrival
/// order); with `before`, only files whose inode last changed before then (a write, a move in).
pub fn scan(dir: &Path, before: Option<std::time::SystemTime>) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let before_ns = before.map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128)
    });
    let mut found: Vec<_> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        // Temporary names are skipped, and so is everything inside a temporary-named folder.
        .filter_entry(|e| e.depth() == 0 || !is_temporary(&e.file_name().to_string_lossy()))
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let meta = e.metadata().ok();
            if let (Some(before), Some(m)) = (before_ns, &meta) {
                let changed = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
                if changed > before {
                    return None;
                }
            }
            Some((meta.and_then(|m| m.modified().ok()), e.into_path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn temporary_names_are_recognised() {
        for name in [
            ".hidden.jpg",
            "img.jpg.part",
            "img.jpg~",
            "x.crdownload",
            ".spillway-abc.part",
            "a.tmp",
        ] {
            assert!(is_temporary(name), "{name}");
        }
        for name in ["img.jpg", "part.jpg", "report.txt"] {
            assert!(!is_temporary(name), "{name}");
        }
    }

    #[tokio::test]
    async fn inotify_reports_closed_and_moved_files_but_not_partial_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("bucket/input");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _watch = FolderWatch::start(std::slice::from_ref(&watched), tx).expect("watch");
        std::fs::write(watched.join("a.jpg"), b"x").expect("write");
        std::fs::write(watched.join("b.jpg.part"), b"x").expect("write");
        std::fs::rename(watched.join("b.jpg.part"), watched.join("b.jpg")).expect("rename");
        let outside = dir.path().join("c.jpg");
        std::fs::write(&outside, b"x").expect("write");
        std::fs::rename(&outside, watched.join("c.jpg")).expect("move in");
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            seen.push(ev);
        }
        let names: Vec<String> = seen
            .iter()
            .filter_map(|e| match e {
                FolderEvent::Ready(p) => Some(p.file_name()?.to_string_lossy().into_owned()),
                FolderEvent::Rescan(_) | FolderEvent::Found(_) | FolderEvent::Backlog { .. } => {
                    None
                }
            })
            .collect();
        assert_eq!(names, vec!["a.jpg", "b.jpg", "c.jpg"]);
    }

    #[test]
    fn a_rescan_finds_files_in_subfolders_and_skips_temporary_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("day1")).expect("mkdir");
        std::fs::write(dir.path().join("day1/a.jpg"), b"x").expect("write");
        std::fs::write(dir.path().join("b.jpg"), b"x").expect("write");
        std::fs::write(dir.path().join("b.jpg.part"), b"x").expect("write");
        let mut found: Vec<_> = scan(dir.path(), None)
            .into_iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .map(Path::to_path_buf)
                    .unwrap_or(p)
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![PathBuf::from("b.jpg"), PathBuf::from("day1/a.jpg")]
        );
    }

    #[test]
    fn a_backlog_scan_leaves_files_changed_since_the_watch_began_to_the_watcher() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("before.jpg"), b"x").expect("write");
        // Past the file system's timestamp granularity (a clock tick).
        std::thread::sleep(Duration::from_millis(50));
        let watched_since = std::time::SystemTime::now();
        std::thread::sleep(Duration::from_millis(50));
        // Still being written when the scan runs: its close will be reported live.
        std::fs::write(dir.path().join("during.jpg"), b"x").expect("write");
        let names = |before| -> Vec<String> {
            scan(dir.path(), before)
                .iter()
                .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                .collect()
        };
        assert_eq!(names(Some(watched_since)), ["before.jpg"]);
        let mut all = names(None);
        all.sort();
        assert_eq!(all, ["before.jpg", "during.jpg"], "a full rescan sees both");
    }
}
