//! `input`/`output` entries: a storage provider and a `bucket/folder` path, with filters.

use marked_yaml::Node;

use super::diag::Diagnostics;
use super::model::*;
use super::reader::{Fields, mapping, sequence, string};
use super::trigger::{MqttOutput, read_filters, read_mqtt_output};
use crate::key::ObjectKey;

/// `input`/`output` entries; `mqtt` collects output entries written as `{mqtt: {topic}}`
/// (`None` for inputs, where MQTT belongs under `triggers`).
pub(crate) fn read_storage_refs(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
    mut mqtt: Option<&mut Vec<MqttOutput>>,
) -> Vec<StorageRef> {
    let Some(items) = sequence(diags, node, path) else {
        return Vec::new();
    };
    let mut refs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let Some(map) = mapping(diags, item, &ipath) else {
            continue;
        };
        let mut f = Fields::new(map, ipath.clone());
        let [suffix, prefix] = read_filters(diags, &mut f);
        if let Some((n, p)) = f.field("mqtt") {
            match mqtt.as_deref_mut() {
                Some(outputs) => {
                    if let Some(out) = read_mqtt_output(diags, n, &p, suffix, prefix) {
                        outputs.push(out);
                    }
                }
                None => diags.error(
                    n.span(),
                    &p,
                    "MQTT messages start jobs through `triggers: [{mqtt: {topic: …}}]`, not `input`",
                ),
            }
            let mut extra = Extra::new();
            f.finish(diags, &["mqtt", "suffix", "prefix"], &mut extra);
            continue;
        }
        let provider = match f.take("storage_provider") {
            Some(n) => {
                string(diags, n, &f.child_path("storage_provider")).map(|s| ProviderRef::parse(&s))
            }
            None => {
                diags.error(
                    map.span(),
                    &ipath,
                    "missing `storage_provider` (e.g. `minio.default`), or `mqtt: {topic: …}` for an output",
                );
                None
            }
        };
        let bucket_path = match f.take("path") {
            Some(n) => read_bucket_path(diags, n, &f.child_path("path")),
            None => {
                diags.error(
                    map.span(),
                    &ipath,
                    "missing `path` (e.g. `fire-detect/input`)",
                );
                None
            }
        };
        // rclone mount flags: OSCAR uses them only for `mount`, never for inputs and outputs.
        let _ = f.take("options");
        let mut extra = Extra::new();
        f.finish(
            diags,
            &["storage_provider", "path", "suffix", "prefix", "options"],
            &mut extra,
        );
        if let (Some(provider), Some(path)) = (provider, bucket_path) {
            refs.push(StorageRef {
                provider,
                path,
                suffix,
                prefix,
            });
        }
    }
    refs
}

pub(crate) fn read_bucket_path(
    diags: &mut Diagnostics,
    node: &Node,
    path: &str,
) -> Option<BucketPath> {
    let text = string(diags, node, path)?;
    let trimmed = text.trim_matches('/');
    // The whole path obeys the object-key rules, so no bucket or folder can escape a data root.
    if let Err(e) = ObjectKey::parse(trimmed) {
        diags.error(node.span(), path, format!("invalid path `{text}`: {e}"));
        return None;
    }
    let (bucket, folder) = match trimmed.split_once('/') {
        Some((b, rest)) => (b, ObjectKey::parse(rest).ok()),
        None => (trimmed, None),
    };
    Some(BucketPath {
        bucket: bucket.to_owned(),
        folder,
    })
}
