//! `spillway config`: the contexts of the client config (several coordinators in one file),
//! as `kubectl config` has them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::output::{Format, print};
use crate::client::{default_config_path, write_private};
use crate::contexts::{self, ConfigFile, DEFAULT_CONTEXT, Settings};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// List the contexts: where each points, and which is current.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make a context the one commands use.
    UseContext { name: String },
    /// Add a context, or change the keys given of one (`default`: the file's own keys).
    SetContext {
        name: String,
        /// The coordinator's API URL.
        #[arg(long = "server")]
        server: Option<String>,
        /// The API token (from `spillway api-token create` on that coordinator).
        #[arg(long = "api-token", conflicts_with = "api_token_file")]
        api_token: Option<String>,
        /// A file holding the API token (keeps it out of the shell's history).
        #[arg(long)]
        api_token_file: Option<PathBuf>,
        /// A CA (PEM) the coordinator's HTTPS certificate must chain to (relative paths: from
        /// the config's folder).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Remove a context (if it was current, the file's own keys are current again).
    DeleteContext { name: String },
}

/// The file `spillway config` edits: `--client-config`, else `$SPILLWAY_CONFIG`, else the
/// user's own.
fn config_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    flag.or_else(default_config_path)
        .context("no client config path: set HOME, SPILLWAY_CONFIG or --client-config")
}

fn read(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[derive(Debug, Serialize)]
struct ContextRow {
    name: String,
    current: bool,
    coordinator: Option<String>,
    token: bool,
    ca: &'static str,
}

pub fn run(command: ConfigCommand, flag: Option<PathBuf>, format: Format) -> anyhow::Result<()> {
    let path = config_path(flag)?;
    let text = read(&path)?;
    let bad = |e: String| anyhow::anyhow!("client config {}: {e}", path.display());
    let file = ConfigFile::parse(&text).map_err(bad)?;
    let write = |updated: String| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_private(&path, &updated).with_context(|| format!("cannot write {}", path.display()))
    };
    match command {
        ConfigCommand::GetContexts => {
            let current = file.current();
            let rows: Vec<ContextRow> = file
                .names()
                .into_iter()
                .map(|name| {
                    let s = if name == DEFAULT_CONTEXT && !file.contexts.contains_key(&name) {
                        file.flat()
                    } else {
                        file.contexts
                            .get(&name)
                            .cloned()
                            .unwrap_or_else(|| file.flat())
                    };
                    ContextRow {
                        current: name == current,
                        coordinator: s.coordinator,
                        token: s.token.is_some(),
                        ca: match (&s.ca, &s.ca_file) {
                            (Some(_), _) => "pinned",
                            (None, Some(_)) => "file",
                            (None, None) => "system",
                        },
                        name,
                    }
                })
                .collect();
            print(
                format,
                &rows,
                &["NAME", "CURRENT", "COORDINATOR", "TOKEN", "CA"],
                || {
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.name.clone(),
                                if r.current { "*".into() } else { String::new() },
                                r.coordinator
                                    .clone()
                                    .unwrap_or_else(|| "http://127.0.0.1:7480".into()),
                                if r.token { "set" } else { "none" }.into(),
                                r.ca.into(),
                            ]
                        })
                        .collect()
                },
            )
        }
        ConfigCommand::CurrentContext => {
            println!("{}", file.current());
            Ok(())
        }
        ConfigCommand::UseContext { name } => {
            write(contexts::use_context(&text, &name).map_err(bad)?)?;
            println!("Switched to context \"{name}\".");
            Ok(())
        }
        ConfigCommand::SetContext {
            name,
            server,
            api_token,
            api_token_file,
            ca_file,
        } => {
            let api_token = match api_token_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => api_token,
            };
            let existed = name == DEFAULT_CONTEXT || file.contexts.contains_key(&name);
            let settings = Settings {
                coordinator: server,
                token: api_token,
                ca: None,
                ca_file,
            };
            write(contexts::set_context(&text, &name, &settings).map_err(bad)?)?;
            if existed {
                println!("Context \"{name}\" modified.");
            } else {
                println!(
                    "Context \"{name}\" created (use it: spillway config use-context {name}, or --context {name})."
                );
            }
            Ok(())
        }
        ConfigCommand::DeleteContext { name } => {
            write(contexts::delete_context(&text, &name).map_err(bad)?)?;
            println!("Deleted context \"{name}\" from {}.", path.display());
            Ok(())
        }
    }
}
