//! `spillway apply`: an FDL file (with the scripts and modules it names) becomes stored
//! functions, all or nothing.

use std::path::Path;

use base64::Engine;
use spillway_proto::fdl;
use spillway_proto::wire::Artifact;

use super::store::{FunctionRecord, Store, StoreError};
use spillway_api::{ApplyOutcome, ApplyRequest};

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum ApplyError {
    /// {0}
    Invalid(String),
    /// {0}
    Store(#[from] StoreError),
}

pub fn apply(store: &Store, req: &ApplyRequest, now_ms: u64) -> Result<ApplyOutcome, ApplyError> {
    // Paths stay as written (relative): the files travel with the request, not the path.
    let parsed = fdl::parse_str(&req.file, &req.text, Path::new(""));
    let warnings: Vec<String> = parsed.warnings().map(|d| d.to_string()).collect();
    let (doc, _) = parsed.into_result().map_err(|e| {
        let lines: Vec<String> = e.diagnostics.iter().map(|d| d.to_string()).collect();
        ApplyError::Invalid(format!(
            "{} is not valid; nothing was applied:\n{}",
            req.file,
            lines.join("\n")
        ))
    })?;
    if doc.functions.is_empty() {
        return Err(ApplyError::Invalid(format!(
            "{} defines no functions; nothing was applied",
            req.file
        )));
    }
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for mut def in doc.functions {
        let mut files = Vec::new();
        let name = def.name.clone();
        let location = def.location.clone();
        for (role, path) in [("script", &mut def.script), ("module", &mut def.module)] {
            let Some(path) = path else { continue };
            let key = path.to_string_lossy().into_owned();
            // In the bundle the file gets a plain name of its own: the path as written may
            // climb out of the FDL's folder (`../examples/x.sh`), which means nothing on a node.
            let file_name = path
                .file_name()
                .map_or_else(|| role.to_owned(), |n| n.to_string_lossy().into_owned());
            let bundled = format!("{role}/{file_name}");
            match req.files.get(&key).map(|b| base64::engine::general_purpose::STANDARD.decode(b)) {
                Some(Ok(bytes)) => {
                    *path = bundled.clone().into();
                    files.push(Artifact { path: bundled, bytes });
                }
                Some(Err(e)) => problems.push(format!("{name}: `{key}` is not valid base64: {e}")),
                None => problems.push(format!(
                    "{name}: the file `{key}` named in {location} was not sent with it; apply with `spillway apply -f {}`, which sends the files an FDL names",
                    req.file
                )),
            }
        }
        records.push(FunctionRecord {
            def,
            files,
            source: req.file.clone(),
            applied_at_ms: now_ms,
        });
    }
    if !problems.is_empty() {
        return Err(ApplyError::Invalid(format!(
            "nothing was applied:\n{}",
            problems.join("\n")
        )));
    }
    let mut outcome = ApplyOutcome {
        functions: Vec::new(),
        warnings,
    };
    let mut changed = Vec::new();
    for mut r in records {
        let verdict = match store.function(&r.def.name)? {
            None => "created",
            Some(old) if old.def == r.def && old.files == r.files => {
                r.applied_at_ms = old.applied_at_ms;
                "unchanged"
            }
            Some(_) => "configured",
        };
        outcome
            .functions
            .push((r.def.name.clone(), verdict.to_owned()));
        if verdict != "unchanged" {
            changed.push(r);
        }
    }
    store.change_functions(&changed, &[])?;
    Ok(outcome)
}
