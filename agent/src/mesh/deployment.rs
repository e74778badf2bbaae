//! The function set the coordinator deployed here, kept on disk so the agent comes back with it
//! after a reboot while the coordinator is away (offline autonomy).
//!
//! Layout under `state_dir/deployment/`: `<digest>/<function>/<files>` for each deployment's
//! scripts and modules, and `current` (postcard) naming the deployment in force. A new
//! deployment is written completely, then `current` is replaced atomically, then older folders
//! are removed: a crash at any point leaves either the old or the new set, never a mix.

use std::path::{Path, PathBuf};

use spillway_proto::FunctionDef;
use spillway_proto::key::ObjectKey;
use spillway_proto::wire::Deployment;

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum DeploymentError {
    /// cannot write the deployment to {path}: {source}
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// function `{function}`: {message}
    Bundle { function: String, message: String },
}

fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("deployment")
}

/// The deployment in force, if the coordinator ever sent one.
pub fn load(state_dir: &Path) -> Option<Deployment> {
    let bytes = std::fs::read(root(state_dir).join("current")).ok()?;
    match postcard::from_bytes(&bytes) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(
                "the saved deployment is unreadable ({e}); running without it until the coordinator sends it again"
            );
            None
        }
    }
}

/// Writes `deployment` and makes it the one in force.
pub fn save(state_dir: &Path, deployment: &Deployment) -> Result<(), DeploymentError> {
    let root = root(state_dir);
    let digest = hex::encode(deployment.digest());
    let dir = root.join(&digest);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DeploymentError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for bundle in &deployment.functions {
        let fdir = dir.join(&bundle.name);
        std::fs::create_dir_all(&fdir).map_err(io(&fdir))?;
        for file in &bundle.files {
            let key = ObjectKey::parse(&file.path).map_err(|e| DeploymentError::Bundle {
                function: bundle.name.clone(),
                message: format!("file `{}`: {e}", file.path),
            })?;
            let path = key.under(&fdir);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, &file.bytes).map_err(io(&path))?;
        }
    }
    let current = root.join("current");
    let bytes = postcard::to_stdvec(deployment).unwrap_or_default();
    spillway_plumbing::atomic::write_whole(&current, &bytes, 0o644).map_err(io(&current))?;
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            if e.path().is_dir() && e.file_name() != digest.as_str() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// The functions of a saved deployment, with scripts and modules pointing at its files.
pub fn functions(
    state_dir: &Path,
    deployment: &Deployment,
) -> Vec<Result<FunctionDef, (String, String)>> {
    let dir = root(state_dir).join(hex::encode(deployment.digest()));
    deployment
        .functions
        .iter()
        .map(|b| {
            let mut def: FunctionDef = serde_json::from_str(&b.def_json)
                .map_err(|e| (b.name.clone(), format!("unreadable definition: {e}")))?;
            let fdir = dir.join(&b.name);
            for path in [&mut def.script, &mut def.module].into_iter().flatten() {
                *path = fdir.join(&*path);
            }
            Ok(def)
        })
        .collect()
}
