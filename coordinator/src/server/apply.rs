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

/// Functions are known by name alone on a coordinator: a name listed twice (for two clusters), or
/// already applied for another cluster, would overwrite the other. Both places are named.
fn same_names(store: &Store, defs: &[fdl::FunctionDef]) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    for (i, def) in defs.iter().enumerate() {
        if let Some(first) = defs[..i].iter().find(|d| d.name == def.name) {
            problems.push(format!(
                "{}: function `{}` is defined again here; it is already defined at {} (one coordinator knows a function by its name: rename one)",
                def.location, def.name, first.location
            ));
            continue;
        }
        if let Some(stored) = store.function(&def.name)?
            && stored.def.cluster_id() != def.cluster_id()
        {
            let cluster = |d: &fdl::FunctionDef| d.cluster_id().unwrap_or("any").to_owned();
            problems.push(format!(
                "{}: function `{}` for cluster `{}` would replace the one applied from {} for cluster `{}` (defined at {}); delete that one first (spillway delete function {}) or rename this one",
                def.location,
                def.name,
                cluster(def),
                stored.source,
                cluster(&stored.def),
                stored.def.location,
                def.name
            ));
        }
    }
    Ok(problems)
}

/// What the coordinator's config lacks for a function (see [`super::replicas::unconfigured`]).
pub type Check<'a> = &'a dyn Fn(&fdl::FunctionDef) -> Vec<String>;

pub fn apply(
    store: &Store,
    req: &ApplyRequest,
    now_ms: u64,
    check: Check<'_>,
) -> Result<ApplyOutcome, ApplyError> {
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
    let mut problems = same_names(store, &doc.functions)?;
    for def in &doc.functions {
        problems.extend(check(def));
    }
    let mut records = Vec::new();
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

impl super::State {
    /// Applies functions and, when any changed, has every session recompute its node's
    /// deployment: what `spillway apply` and OSCAR's `POST`/`PUT /system/services` do.
    pub fn apply_functions(&self, req: &ApplyRequest) -> Result<ApplyOutcome, ApplyError> {
        let check = |def: &fdl::FunctionDef| super::replicas::unconfigured(def, &self.config);
        let outcome = apply(&self.store, req, super::now_ms(), &check)?;
        if outcome.functions.iter().any(|(_, v)| v != "unchanged") {
            self.deployments.send_modify(|g| *g += 1);
        }
        Ok(outcome)
    }

    /// Deletes function `name` and takes it off the nodes; `false` when there is none.
    pub fn delete_function(&self, name: &str) -> Result<bool, StoreError> {
        if self.store.function(name)?.is_none() {
            return Ok(false);
        }
        self.store.change_functions(&[], &[name.to_owned()])?;
        self.deployments.send_modify(|g| *g += 1);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(file: &str, text: &str) -> ApplyRequest {
        ApplyRequest {
            file: file.into(),
            text: text.into(),
            files: Default::default(),
        }
    }

    const FOG: &str = "functions:\n  oscar:\n  - fog:\n      name: detect\n      runtime: process\n      command: [\"true\"]\n";

    #[test]
    fn a_kubernetes_replica_without_a_runner_image_is_refused_saying_how_to_make_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        let fdl = format!(
            "{FOG}      replicas:\n      - {{type: kubernetes, cluster_id: edge, image: busybox, priority: 0}}\n"
        );
        let mut config = crate::config::CoordinatorConfig::default();
        let check = |def: &fdl::FunctionDef| crate::server::replicas::unconfigured(def, &config);
        let err = apply(&store, &request("k.yaml", &fdl), 1, &check).expect_err("refused");
        let text = err.to_string();
        for want in [
            "k.yaml:",
            "function `detect`",
            "[kubernetes.edge] runner_image is not set",
            "cross/build.sh --images",
            "skopeo copy --all",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(
            store.function("detect").expect("read").is_none(),
            "nothing applied"
        );

        config.kubernetes.insert(
            "edge".into(),
            crate::config::KubeCluster {
                runner_image: Some("registry.lan/spillway-agent:0.1.0".into()),
                ..Default::default()
            },
        );
        let check = |def: &fdl::FunctionDef| crate::server::replicas::unconfigured(def, &config);
        apply(&store, &request("k.yaml", &fdl), 2, &check).expect("applied");
    }

    #[test]
    fn one_name_for_two_clusters_is_refused_with_both_places_and_nothing_is_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        let both = format!(
            "{FOG}  - cloud:\n      name: detect\n      runtime: process\n      command: [\"true\"]\n"
        );
        let err =
            apply(&store, &request("two.yaml", &both), 1, &|_| Vec::new()).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("two.yaml:8:11") && text.contains("two.yaml:4:11"),
            "{text}"
        );
        assert!(
            store.function("detect").expect("read").is_none(),
            "nothing applied"
        );

        apply(&store, &request("fog.yaml", FOG), 1, &|_| Vec::new()).expect("applied");
        let cloud = FOG.replace("fog:", "cloud:");
        let err =
            apply(&store, &request("cloud.yaml", &cloud), 2, &|_| Vec::new()).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("from fog.yaml for cluster `fog`")
                && text.contains("spillway delete function detect"),
            "{text}"
        );
        let kept = store.function("detect").expect("read").expect("kept");
        assert_eq!(kept.def.cluster_id(), Some("fog"), "not overwritten");
        // The same cluster again is an update.
        let outcome =
            apply(&store, &request("fog.yaml", FOG), 3, &|_| Vec::new()).expect("re-applied");
        assert_eq!(
            outcome.functions,
            [("detect".to_owned(), "unchanged".to_owned())]
        );
    }
}
