//! A small cursor over a marked YAML tree: typed accessors that report problems with their
//! position, and a field tracker that turns unknown keys into kept-and-warned extras.

use std::collections::BTreeMap;

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::diag::Diagnostics;

/// Unknown or not-yet-supported fields, kept as written so nothing is silently dropped.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// Fields of one YAML mapping, read one by one; whatever is left is reported by [`Fields::finish`].
pub(crate) struct Fields<'n> {
    map: &'n MarkedMappingNode,
    pub path: String,
    used: Vec<&'n str>,
}

/// Fields OSCAR or SCAR define that Spillway does not act on yet: kept, with a warning that says
/// so rather than "unknown field".
const KNOWN_UNSUPPORTED: &[&str] = &[
    "alpine",
    "token",
    "vo",
    "allowed_users",
    "expose",
    "synchronous",
    "image_pull_secrets",
    "enable_gpu",
    "enable_sgx",
    "total_memory",
    "total_cpu",
    "annotations",
    "mount",
    "isolation_level",
    "interlink_node_name",
    "visibility",
    "owner",
    "file_stage_in",
    "secrets",
    "execution_mode",
    "init_script_env",
    "supervisor",
    "layers",
    "lambda_role",
    "log_type",
    "region",
    "tags",
    "description",
    "api_gateway",
    "deployment",
    "container",
    "boto_profile",
    "batch",
    "image_file",
    "timeout_threshold",
    "runtime",
    // OSCAR v4's Kubernetes-only features.
    "ephemeral_storage_request",
    "volume",
    "kserve",
    "bucket_list",
];

impl<'n> Fields<'n> {
    pub fn new(map: &'n MarkedMappingNode, path: impl Into<String>) -> Self {
        Self {
            map,
            path: path.into(),
            used: Vec::new(),
        }
    }

    /// Takes a field; `None` when absent. A field present with an empty value (`name:`) counts
    /// as absent too, as YAML `null` does in OSCAR.
    pub fn take(&mut self, key: &'n str) -> Option<&'n Node> {
        let node = self.map.get_node(key)?;
        self.used.push(key);
        match node {
            Node::Scalar(s) if s.may_coerce() && matches!(s.as_str(), "" | "~" | "null") => None,
            other => Some(other),
        }
    }

    /// Takes a field whatever the case of its name (`Variables`, `variables`), as OSCAR's JSON
    /// decoder matches them, with the path as written. The first spelling found wins.
    pub fn field_any_case(&mut self, key: &str) -> Option<(&'n Node, String)> {
        let map: &'n MarkedMappingNode = self.map;
        let (written, _) = map
            .iter()
            .find(|(k, _)| k.as_str().eq_ignore_ascii_case(key))?;
        let written: &'n str = written.as_str();
        self.field(written)
    }

    /// Takes a field together with its path (`functions.oscar[0].fog.cpu`), for diagnostics.
    pub fn field(&mut self, key: &'n str) -> Option<(&'n Node, String)> {
        let node = self.take(key)?;
        Some((node, self.child_path(key)))
    }

    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Reports each field that was not taken and keeps it (as JSON) in `extra`.
    pub fn finish(
        self,
        diags: &mut Diagnostics,
        known: &[&str],
        extra: &mut BTreeMap<String, serde_json::Value>,
    ) {
        for (key, value) in self.map.iter() {
            let name = key.as_str();
            if self.used.contains(&name) {
                continue;
            }
            let path = if self.path.is_empty() {
                name.to_owned()
            } else {
                format!("{}.{name}", self.path)
            };
            let message = if KNOWN_UNSUPPORTED.contains(&name) {
                format!("`{name}` is not supported by Spillway yet; kept as written and ignored")
            } else {
                match suggest(name, known) {
                    Some(s) => format!(
                        "unknown field `{name}`; did you mean `{s}`? (kept as written and ignored)"
                    ),
                    None => format!("unknown field `{name}` (kept as written and ignored)"),
                }
            };
            diags.warn(key.span(), &path, message);
            extra.insert(name.to_owned(), to_json(value));
        }
    }
}

/// The closest known field name, if it is plausibly a typo.
fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// A YAML node as JSON, scalars typed the way YAML would type them when unquoted.
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if s.may_coerce() {
                if let Some(b) = s.as_bool() {
                    return Value::Bool(b);
                }
                if let Ok(i) = text.parse::<i64>() {
                    return Value::from(i);
                }
                if let Some(f) = text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    return Value::Number(f);
                }
                if matches!(text, "~" | "null" | "") {
                    return Value::Null;
                }
            }
            Value::String(text.to_owned())
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a single value",
        Node::Sequence(_) => "a list",
        Node::Mapping(_) => "a mapping",
    }
}

pub(crate) fn scalar<'n>(
    diags: &mut Diagnostics,
    node: &'n Node,
    path: &str,
) -> Option<&'n MarkedScalarNode> {
    match node {
        Node::Scalar(s) => Some(s),
        other => {
            diags.error(
                other.span(),
                path,
                format!("expected a single value, found {}", kind(other)),
            );
            None
        }
    }
}

pub(crate) fn string(diags: &mut Diagnostics, node: &Node, path: &str) -> Option<String> {
    let s = scalar(diags, node, path)?;
    if s.as_str().trim().is_empty() {
        diags.error(s.span(), path, "must not be empty");
        return None;
    }
    Some(s.as_str().to_owned())
}

pub(crate) fn mapping<'n>(
    diags: &mut Diagnostics,
    node: &'n Node,
    path: &str,
) -> Option<&'n MarkedMappingNode> {
    match node {
        Node::Mapping(m) => Some(m),
        other => {
            diags.error(
                other.span(),
                path,
                format!(
                    "expected a mapping (`key: value` lines), found {}",
                    kind(other)
                ),
            );
            None
        }
    }
}

pub(crate) fn sequence<'n>(
    diags: &mut Diagnostics,
    node: &'n Node,
    path: &str,
) -> Option<&'n [Node]> {
    match node {
        Node::Sequence(s) => Some(s.as_slice()),
        other => {
            diags.error(
                other.span(),
                path,
                format!("expected a list (`- item` lines), found {}", kind(other)),
            );
            None
        }
    }
}

pub(crate) fn unsigned(diags: &mut Diagnostics, node: &Node, path: &str) -> Option<u64> {
    let s = scalar(diags, node, path)?;
    match s.as_str().trim().parse::<u64>() {
        Ok(v) => Some(v),
        Err(_) => {
            diags.error(
                s.span(),
                path,
                format!("`{}` is not a whole non-negative number", s.as_str()),
            );
            None
        }
    }
}

/// A whole number from 0 to `max`: past it, an error that names the bound (numbers from an FDL
/// end up in timers, counters and sizes, where a huge one overflows later).
pub(crate) fn bounded(diags: &mut Diagnostics, node: &Node, path: &str, max: u64) -> Option<u64> {
    let v = unsigned(diags, node, path)?;
    if v > max {
        diags.error(
            node.span(),
            path,
            format!("{v} is too large: at most {max}"),
        );
        return None;
    }
    Some(v)
}

pub(crate) fn boolean(diags: &mut Diagnostics, node: &Node, path: &str) -> Option<bool> {
    let s = scalar(diags, node, path)?;
    match s.as_str().trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        other => {
            diags.error(s.span(), path, format!("`{other}` is not true or false"));
            None
        }
    }
}

/// A string or a list of strings (OSCAR accepts both for `suffix` and `prefix`).
pub(crate) fn strings(diags: &mut Diagnostics, node: &Node, path: &str) -> Vec<String> {
    match node {
        Node::Scalar(s) => vec![s.as_str().to_owned()],
        Node::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| string(diags, item, &format!("{path}[{i}]")))
            .collect(),
        Node::Mapping(m) => {
            diags.error(
                m.span(),
                path,
                "expected a value or a list of values, found a mapping",
            );
            Vec::new()
        }
    }
}

/// A mapping of names to single values (environment variables, headers, provider settings).
pub(crate) fn scalar_map(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
) -> BTreeMap<String, String> {
    let Some(map) = mapping(diags, node, path) else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let p = format!("{path}.{}", k.as_str());
            scalar(diags, v, &p).map(|s| (k.as_str().to_owned(), s.as_str().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn typos_get_a_suggestion_but_strangers_do_not() {
        let known = ["script", "image", "memory"];
        assert_eq!(super::suggest("scirpt", &known), Some("script"));
        assert_eq!(super::suggest("memroy", &known), Some("memory"));
        assert_eq!(super::suggest("colour", &known), None);
    }
}
