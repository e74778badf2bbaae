//! Dynamic shell completion of node, function and job names, asked of the coordinator when the
//! shell completes (`source <(COMPLETE=bash spillway)`; zsh, fish, elvish and powershell too).
//! The coordinator is the one the client config's current context names, or
//! `$SPILLWAY_COORDINATOR`/`$SPILLWAY_TOKEN`/`$SPILLWAY_CONTEXT`. An unreachable one completes
//! nothing, within a second, rather than hang the shell.

use std::ffi::OsStr;
use std::time::Duration;

use clap_complete::engine::CompletionCandidate;

use crate::client::Client;

/// How long a completion may wait for the coordinator.
const WAIT: Duration = Duration::from_secs(1);

/// The names (or ids) under `field` of what `GET path` lists, that start with `current`.
fn listed(path: &str, field: &str, current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Ok(client) = Client::resolve(
        env("SPILLWAY_COORDINATOR"),
        env("SPILLWAY_TOKEN"),
        None,
        env("SPILLWAY_CONTEXT"),
    ) else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let answer = runtime.block_on(async {
        tokio::time::timeout(WAIT, client.get::<Vec<serde_json::Value>>(path)).await
    });
    let Ok(Ok(items)) = answer else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| i[field].as_str())
        .filter(|n| n.starts_with(current.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

pub fn nodes(current: &OsStr) -> Vec<CompletionCandidate> {
    listed("/v1/nodes", "name", current)
}

pub fn functions(current: &OsStr) -> Vec<CompletionCandidate> {
    listed("/v1/functions", "name", current)
}

/// The 100 most recent jobs' ids.
pub fn jobs(current: &OsStr) -> Vec<CompletionCandidate> {
    listed("/v1/jobs?limit=100", "id", current)
}

/// After `get`, `describe` or `delete`, whose kind the completer cannot see: nodes and
/// functions both.
pub fn names(current: &OsStr) -> Vec<CompletionCandidate> {
    let mut all = nodes(current);
    all.extend(functions(current));
    all
}
