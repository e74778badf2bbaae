//! Per-job log files (`state/logs/<job id>.log`): what ran, how it ended, and the bounded
//! stdout/stderr. Plain files, so `spillway-agent logs` works while the agent holds the journal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use spillway_proto::JobId;

use crate::capture::Captured;
use crate::journal::{JobRecord, JobState};

/// Why a log could not be shown.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum LogError {
    /// no log for job `{0}` in {1} (queued and running jobs have no log yet; `spillway-agent jobs` lists finished ones)
    NotFound(String, PathBuf),
    /// `{0}` matches several jobs ({1}); give more digits of the job id
    Ambiguous(String, String),
    /// `{0}` is not a job id: expected hexadecimal digits
    BadId(String),
    /// cannot read {0}: {1}
    Io(PathBuf, std::io::Error),
}

pub fn path_for(logs_dir: &Path, id: JobId) -> PathBuf {
    logs_dir.join(format!("{id}.log"))
}

/// Writes the log of a finished (or refused) job, replacing any earlier attempt's log.
pub fn write(
    logs_dir: &Path,
    record: &JobRecord,
    stdout: Option<&Captured>,
    stderr: Option<&Captured>,
) {
    let mut text = String::new();
    let _ = writeln!(text, "job:      {}", record.id);
    let _ = writeln!(text, "function: {}", record.function);
    let _ = writeln!(text, "input:    {}", input_of(record));
    let _ = writeln!(text, "attempt:  {}", record.attempt);
    let _ = writeln!(text, "state:    {}", record.state.name());
    match &record.state {
        JobState::Failed { reason } => {
            let _ = writeln!(text, "reason:   {reason}");
        }
        JobState::Succeeded { outputs } => {
            let _ = writeln!(
                text,
                "outputs:  {}",
                if outputs.is_empty() {
                    "(none)".to_owned()
                } else {
                    outputs.join(", ")
                }
            );
        }
        _ => {}
    }
    let path = path_for(logs_dir, record.id);
    if stdout.is_none() && stderr.is_none() {
        // A later state of the same run: keep the streams an earlier write recorded.
        if let Some(streams) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.find("--- stdout").map(|i| old[i..].to_owned()))
        {
            text.push_str(&streams);
        }
    }
    for (name, stream) in [("stdout", stdout), ("stderr", stderr)] {
        if let Some(c) = stream {
            let _ = writeln!(text, "--- {name} ({} bytes) ---", c.total());
            text.push_str(&c.render());
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
        tracing::warn!(job = %record.id, "cannot write the job log {}: {e}", path.display());
    }
}

fn input_of(record: &JobRecord) -> String {
    record.event.source()
}

/// The log of the job whose id starts with `prefix`.
pub fn read(logs_dir: &Path, prefix: &str) -> Result<String, LogError> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LogError::BadId(prefix));
    }
    let entries = std::fs::read_dir(logs_dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LogError::NotFound(prefix.clone(), logs_dir.to_owned()),
        _ => LogError::Io(logs_dir.to_owned(), e),
    })?;
    let mut matches: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    match matches.len() {
        0 => Err(LogError::NotFound(prefix, logs_dir.to_owned())),
        1 => {
            let path = matches.remove(0);
            std::fs::read_to_string(&path).map_err(|e| LogError::Io(path, e))
        }
        _ => {
            let names: Vec<String> = matches
                .iter()
                .filter_map(|p| {
                    let stem = p.file_stem()?.to_string_lossy().into_owned();
                    Some(stem.get(..12).unwrap_or(&stem).to_owned())
                })
                .collect();
            Err(LogError::Ambiguous(prefix, names.join(", ")))
        }
    }
}

/// One line per finished job, newest last: `id  state  function  input`.
pub fn list(logs_dir: &Path) -> Result<Vec<String>, LogError> {
    let entries = match std::fs::read_dir(logs_dir) {
        Ok(entries) => entries,
        // The agent has not run yet: no jobs.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::Io(logs_dir.to_owned(), e)),
    };
    let mut rows: Vec<(std::time::SystemTime, String)> = Vec::new();
    for path in entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
    {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or("?")
                .to_owned()
        };
        let id = field("job:");
        let mtime = path
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        rows.push((
            mtime,
            format!(
                "{}  {:<9}  {:<20}  {}",
                &id[..id.len().min(12)],
                field("state:"),
                field("function:"),
                field("input:")
            ),
        ));
    }
    rows.sort();
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// Keeps the newest `keep` logs.
pub fn prune(logs_dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(logs_dir) else {
        return;
    };
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if logs.len() <= keep {
        return;
    }
    logs.sort();
    let excess = logs.len() - keep;
    for (_, path) in logs.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}
