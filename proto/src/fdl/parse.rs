//! The document level of an FDL file: `functions`, `clusters`, `storage_providers`, and the
//! checks that span several functions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use marked_yaml::{LoadError, LoaderOptions, Marker, Node, Span};

use super::diag::{Diagnostic, Diagnostics};
use super::model::*;
use super::reader::{Fields, mapping, scalar_map, sequence, string};
use super::replica::is_http_url;
use super::service::{parse_scar_function, parse_service};

/// The outcome of reading one FDL file: the model if it had no errors, and every diagnostic.
#[derive(Debug)]
pub struct Parsed {
    pub fdl: Option<Fdl>,
    pub diagnostics: Vec<Diagnostic>,
}

/// An FDL file with errors; `Display` prints one diagnostic per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FdlError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for FdlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.diagnostics.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl Parsed {
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    /// The model and its warnings, or every diagnostic when there was an error.
    pub fn into_result(self) -> Result<(Fdl, Vec<Diagnostic>), FdlError> {
        match self.fdl {
            Some(fdl) => Ok((fdl, self.diagnostics)),
            None => Err(FdlError {
                diagnostics: self.diagnostics,
            }),
        }
    }
}

/// Reads an FDL file; relative `script`/`module` paths resolve against its folder.
pub fn parse_file(path: &Path) -> Parsed {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            parse_str(&name, &text, &base)
        }
        Err(e) => {
            let mut diags = Diagnostics::new(name);
            diags.error(&Span::new_blank(), "", format!("cannot read the file: {e}"));
            Parsed {
                fdl: None,
                diagnostics: diags.items,
            }
        }
    }
}

/// Where the document first nests deeper than `max`, found by walking the YAML parser's events
/// (iteratively) before any tree is built. Syntax errors are left to the reader that follows.
fn nested_too_deep(text: &str, max: usize) -> Option<marked_yaml::Marker> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token() {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), m)) => {
                depth += 1;
                if depth > max {
                    return Some(marked_yaml::Marker::new(
                        0,
                        m.index(),
                        m.line(),
                        m.col() + 1,
                    ));
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok((Event::StreamEnd, _)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

const TOP_FIELDS: &[&str] = &["functions", "clusters", "storage_providers"];
const FUNCTIONS_FIELDS: &[&str] = &["oscar", "aws", "storage_providers"];

/// How deep an FDL document may nest (real ones nest under ten levels). The YAML reader recurses
/// once per level, so a document nested a million deep would overflow the stack.
pub const MAX_DEPTH: usize = 64;
/// How large an FDL document may be (scripts and modules are separate files).
pub const MAX_BYTES: usize = 4 << 20;

/// Reads FDL text; `file` names it in diagnostics.
pub fn parse_str(file: &str, text: &str, base_dir: &Path) -> Parsed {
    let mut diags = Diagnostics::new(file);
    let refused = |diags: Diagnostics| Parsed {
        fdl: None,
        diagnostics: diags.items,
    };
    if text.len() > MAX_BYTES {
        diags.error(
            &Span::new_blank(),
            "",
            format!(
                "the file is {} bytes; an FDL file is at most {MAX_BYTES} (put scripts and modules in files of their own)",
                text.len()
            ),
        );
        return refused(diags);
    }
    if let Some(marker) = nested_too_deep(text, MAX_DEPTH) {
        diags.error(
            &Span::new_start(marker),
            "",
            format!("the document nests deeper than {MAX_DEPTH} levels; an FDL file does not"),
        );
        return refused(diags);
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            let (marker, message) = describe_load_error(&e);
            diags.error(&Span::new_start(marker), "", message);
            return Parsed {
                fdl: None,
                diagnostics: diags.items,
            };
        }
    };
    let mut fdl = Fdl::default();
    if let Some(map) = mapping(&mut diags, &root, "") {
        let mut top = Fields::new(map, "");
        match top.take("functions") {
            Some(node) => read_functions(&mut diags, node, base_dir, &mut fdl),
            None => diags.error(map.span(), "functions", "missing `functions`: an FDL file defines at least one function under `functions.oscar` or `functions.aws`"),
        }
        if let Some(node) = top.take("clusters") {
            fdl.clusters = read_clusters(&mut diags, node, "clusters");
        }
        if let Some(node) = top.take("storage_providers") {
            read_storage_providers(
                &mut diags,
                node,
                "storage_providers",
                &mut fdl.storage_providers,
            );
        }
        top.finish(&mut diags, TOP_FIELDS, &mut fdl.extra);
    }
    cross_check(&mut diags, &fdl);
    attach_providers(&mut fdl);
    diags
        .items
        .sort_by_key(|d| (d.location.line, d.location.col));
    let fdl = (!diags.has_errors()).then_some(fdl);
    Parsed {
        fdl,
        diagnostics: diags.items,
    }
}

fn describe_load_error(e: &LoadError) -> (Marker, String) {
    match e {
        LoadError::TopLevelMustBeMapping(m) => (
            *m,
            "the document must be a mapping starting with `functions:`".into(),
        ),
        LoadError::TopLevelMustBeSequence(m) => (*m, "the document must be a list".into()),
        LoadError::UnexpectedAnchor(m) => (
            *m,
            "YAML anchors and aliases are not supported in FDL files; write the values out".into(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => (*m, "mapping keys must be plain values".into()),
        LoadError::UnexpectedTag(m) => (
            *m,
            "YAML tags (`!name`) are not supported in FDL files".into(),
        ),
        LoadError::ScanError(m, err) => (*m, format!("not valid YAML: {}", err.info())),
        LoadError::DuplicateKey(d) => {
            let first = d.prev_key.span().start().map(|m| m.line()).unwrap_or(0);
            let marker = d
                .key
                .span()
                .start()
                .copied()
                .unwrap_or_else(|| Marker::new(0, 0, 1, 1));
            (
                marker,
                format!(
                    "`{}` is defined twice (first on line {first}); keep one",
                    d.key.as_str()
                ),
            )
        }
    }
}

fn read_functions(diags: &mut Diagnostics, node: &Node, base_dir: &Path, fdl: &mut Fdl) {
    let Some(map) = mapping(diags, node, "functions") else {
        return;
    };
    let mut fields = Fields::new(map, "functions");
    let mut found_any = false;
    // SCAR's own YAML from before the FDL: `functions: {NAME: {image, …}}`.
    let scar: Vec<_> = map
        .iter()
        .filter(|(k, v)| {
            !["oscar", "aws", "storage_providers"].contains(&k.as_str())
                && matches!(v, Node::Mapping(_))
        })
        .collect();
    if !scar.is_empty() && map.get_node("oscar").is_none() && map.get_node("aws").is_none() {
        found_any = true;
        diags.warn(
            map.span(),
            "functions",
            "SCAR's own format (before the FDL): each function runs on the mesh's nodes as an OSCAR service would",
        );
        for (key, value) in scar {
            let path = format!("functions.{}", key.as_str());
            let _ = fields.take(key.as_str());
            if let Some(service) = mapping(diags, value, &path) {
                fdl.functions
                    .extend(parse_scar_function(diags, key, service, &path, base_dir));
            }
        }
    }
    if let Some(list) = fields.take("oscar") {
        found_any = true;
        let Some(items) = sequence(diags, list, "functions.oscar") else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("functions.oscar[{i}]");
            let Some(entry) = mapping(diags, item, &path) else {
                continue;
            };
            // `- fog: {name: …}` wraps the service in its cluster id; `- name: …` does not.
            let wrapped = (entry.len() == 1)
                .then(|| entry.iter().next())
                .flatten()
                .filter(|(k, v)| k.as_str() != "name" && matches!(v, Node::Mapping(_)));
            let function = match wrapped {
                Some((cluster, service)) => {
                    let path = format!("{path}.{}", cluster.as_str());
                    let platform = Platform::Oscar {
                        cluster_id: Some(cluster.as_str().to_owned()),
                    };
                    mapping(diags, service, &path).and_then(|service| {
                        parse_service(diags, service, &path, platform, base_dir)
                    })
                }
                None => parse_service(
                    diags,
                    entry,
                    &path,
                    Platform::Oscar { cluster_id: None },
                    base_dir,
                ),
            };
            fdl.functions.extend(function);
        }
    }
    if let Some(list) = fields.take("aws") {
        found_any = true;
        if let Some(items) = sequence(diags, list, "functions.aws") {
            for (i, item) in items.iter().enumerate() {
                let path = format!("functions.aws[{i}]");
                let Some(entry) = mapping(diags, item, &path) else {
                    continue;
                };
                let mut wrapper = Fields::new(entry, path.clone());
                match wrapper.take("lambda") {
                    Some(lambda) => {
                        let lpath = format!("{path}.lambda");
                        if let Some(service) = mapping(diags, lambda, &lpath) {
                            fdl.functions.extend(parse_service(
                                diags,
                                service,
                                &lpath,
                                Platform::Aws,
                                base_dir,
                            ));
                        }
                    }
                    None => diags.error(
                        entry.span(),
                        &path,
                        "expected `lambda:` with the function's fields",
                    ),
                }
                let mut ignored = Extra::new();
                wrapper.finish(diags, &["lambda"], &mut ignored);
            }
        }
    }
    // Fig. 3.2 of the OSCAR thesis nests `storage_providers` under `functions`; accept both.
    if let Some(node) = fields.take("storage_providers") {
        read_storage_providers(
            diags,
            node,
            "functions.storage_providers",
            &mut fdl.storage_providers,
        );
    }
    if !found_any {
        diags.error(
            map.span(),
            "functions",
            "no functions: add a list under `functions.oscar` or `functions.aws`",
        );
    }
    fields.finish(diags, FUNCTIONS_FIELDS, &mut fdl.extra);
}

fn read_clusters(diags: &mut Diagnostics, node: &Node, path: &str) -> BTreeMap<String, ClusterDef> {
    let mut clusters = BTreeMap::new();
    let Some(map) = mapping(diags, node, path) else {
        return clusters;
    };
    for (id, value) in map.iter() {
        let cpath = format!("{path}.{}", id.as_str());
        let Some(cmap) = mapping(diags, value, &cpath) else {
            continue;
        };
        let mut f = Fields::new(cmap, cpath.clone());
        let endpoint = match f.take("endpoint") {
            Some(n) => string(diags, n, &f.child_path("endpoint")).filter(|url| {
                let ok = is_http_url(url);
                if !ok {
                    diags.error(
                        n.span(),
                        &format!("{cpath}.endpoint"),
                        format!("`{url}` is not an http:// or https:// URL"),
                    );
                }
                ok
            }),
            None => {
                diags.error(
                    cmap.span(),
                    &cpath,
                    "missing `endpoint` (the cluster's URL)",
                );
                None
            }
        };
        let auth_user = f
            .take("auth_user")
            .and_then(|n| string(diags, n, &format!("{cpath}.auth_user")));
        let auth_password = f
            .take("auth_password")
            .and_then(|n| string(diags, n, &format!("{cpath}.auth_password")))
            .map(Secret);
        if let Some(n) = f.take("ssl_verify")
            && super::reader::boolean(diags, n, &format!("{cpath}.ssl_verify")) == Some(false)
        {
            diags.warn(n.span(), &format!("{cpath}.ssl_verify"), "Spillway always verifies TLS certificates; `ssl_verify: false` is ignored (install the cluster's CA instead)");
        }
        let mut extra = Extra::new();
        f.finish(
            diags,
            &["endpoint", "auth_user", "auth_password", "ssl_verify"],
            &mut extra,
        );
        if let Some(endpoint) = endpoint {
            clusters.insert(
                id.as_str().to_owned(),
                ClusterDef {
                    endpoint,
                    auth_user,
                    auth_password,
                    extra,
                },
            );
        }
    }
    clusters
}

/// Storage kinds Spillway reads and writes (`minio`/`local` are an agent's data-root folders).
const SUPPORTED_STORAGE: &[&str] = &["minio", "local", "s3"];

fn read_storage_providers(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    out: &mut Vec<StorageProvider>,
) {
    let Some(kinds) = mapping(diags, node, path) else {
        return;
    };
    for (kind, ids) in kinds.iter() {
        let kpath = format!("{path}.{}", kind.as_str());
        if !SUPPORTED_STORAGE.contains(&kind.as_str()) {
            diags.warn(
                kind.span(),
                &kpath,
                format!(
                    "storage kind `{}` is not supported by Spillway yet (supported: {}); kept",
                    kind.as_str(),
                    SUPPORTED_STORAGE.join(", ")
                ),
            );
        }
        let Some(ids) = mapping(diags, ids, &kpath) else {
            continue;
        };
        for (id, settings) in ids.iter() {
            let ipath = format!("{kpath}.{}", id.as_str());
            let settings = scalar_map(diags, settings, &ipath)
                .into_iter()
                .map(|(k, v)| (k, Secret(v)))
                .collect();
            out.push(StorageProvider {
                reference: ProviderRef {
                    kind: kind.as_str().to_owned(),
                    id: id.as_str().to_owned(),
                },
                settings,
            });
        }
    }
}

/// Checks that need the whole document: duplicate names and dangling references.
/// Gives each function the storage providers its inputs and outputs name, so a function sent
/// alone (to an agent, in a deployment) still knows where its S3 buckets are.
fn attach_providers(fdl: &mut Fdl) {
    let providers = fdl.storage_providers.clone();
    for f in &mut fdl.functions {
        f.clusters = fdl
            .clusters
            .iter()
            .filter(|(id, _)| {
                f.replicas.iter().any(
                    |r| matches!(&r.target, ReplicaTarget::Oscar { cluster_id, .. } if cluster_id == *id),
                )
            })
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        f.providers = providers
            .iter()
            .filter(|p| {
                f.input
                    .iter()
                    .chain(&f.output)
                    .any(|r| r.provider == p.reference)
            })
            .cloned()
            .collect();
    }
}

fn cross_check(diags: &mut Diagnostics, fdl: &Fdl) {
    let mut seen: BTreeMap<(String, String), &FunctionDef> = BTreeMap::new();
    let cluster_ids: BTreeSet<&str> = fdl
        .clusters
        .keys()
        .map(String::as_str)
        .chain(fdl.functions.iter().filter_map(FunctionDef::cluster_id))
        .collect();
    let defined: BTreeSet<&ProviderRef> =
        fdl.storage_providers.iter().map(|p| &p.reference).collect();
    for f in &fdl.functions {
        let scope = match &f.platform {
            Platform::Oscar { cluster_id } => {
                format!("oscar/{}", cluster_id.as_deref().unwrap_or(""))
            }
            Platform::Aws => "aws".to_owned(),
        };
        let span = span_at(&f.location);
        if let Some(first) = seen.insert((scope, f.name.clone()), f) {
            diags.error(
                &span,
                &format!("{}.name", f.fdl_path),
                format!(
                    "function `{}` is defined twice (first at {}); give each a distinct name",
                    f.name, first.location
                ),
            );
        }
        // An output the nodes cannot write would be dropped while the job reports success.
        if matches!(f.platform, Platform::Oscar { .. }) {
            for r in &f.output {
                if !SUPPORTED_STORAGE.contains(&r.provider.kind.as_str()) {
                    diags.error(
                        &span,
                        &format!("{}.output", f.fdl_path),
                        format!(
                            "output to `{}`: Spillway's nodes cannot write storage kind `{}` (they write {}); remove this output or have the script deliver it",
                            r.provider,
                            r.provider.kind,
                            SUPPORTED_STORAGE.join(", ")
                        ),
                    );
                }
            }
        }
        for (dir, refs) in [("input", &f.input), ("output", &f.output)] {
            for r in refs.iter() {
                let p = &r.provider;
                if p.id != "default" && !defined.contains(p) {
                    diags.warn(&span, &format!("{}.{dir}", f.fdl_path), format!("storage provider `{p}` is not defined under `storage_providers.{}` in this file; the node that runs `{}` must know it", p.kind, f.name));
                }
            }
        }
        for r in &f.replicas {
            if let ReplicaTarget::Oscar { cluster_id, .. } = &r.target
                && !cluster_ids.contains(cluster_id.as_str())
            {
                diags.warn(&span, &format!("{}.replicas", f.fdl_path), format!("replica cluster `{cluster_id}` is not defined under `clusters` in this file; its credentials must come from the coordinator's configuration"));
            }
        }
    }
}

fn span_at(location: &super::diag::Location) -> Span {
    Span::new_start(Marker::new(0, 0, location.line, location.col))
}
