//! Importing images from tarballs, for devices without a registry in reach: `oci-archive`
//! (an OCI image layout in a tar, as `skopeo copy … oci-archive:` and `buildah push` write) and
//! `docker save` output (both its legacy `<id>/layer.tar` form and the OCI-layout form newer
//! Docker writes). Every blob is checked against its digest; a failed import leaves nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use super::store::{ImageRecord, ImageStore, NewImage, canonical_reference};
use super::{ImageError, Platform};

/// Small JSON files kept in memory while the tar streams by; anything bigger is not metadata.
const MAX_METADATA: u64 = 4 << 20;
/// Files in one archive, and bytes in all: far above real images, low enough that a hostile
/// archive cannot fill a card with blobs.
const MAX_ENTRIES: u64 = 100_000;
const MAX_BYTES: u64 = 16 << 30;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports every image of the archive at `path` that has a variant for `platform`. `tag` names
/// the image when the archive does not (or renames it when it has one image).
pub fn import(
    store: &Arc<ImageStore>,
    path: &Path,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<Vec<ImageRecord>, ImageError> {
    let result = import_inner(store, path, tag, platform);
    if result.is_err() {
        // Blobs this import stored are referenced by no record: drop them.
        store.gc_blobs();
    }
    result
}

fn import_inner(
    store: &Arc<ImageStore>,
    path: &Path,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<Vec<ImageRecord>, ImageError> {
    let fail = |message: String| ImageError::Archive {
        path: path.to_path_buf(),
        message,
    };
    let tag = tag.map(canonical_reference).transpose()?;
    let file = std::fs::File::open(path).map_err(ImageError::io(path))?;
    let mut reader = BufReader::new(file);
    let gzipped = reader
        .fill_buf()
        .map_err(ImageError::io(path))?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let (stream, allowance) = super::tar_guard::Allowance::wrap(stream);
    let mut tar = tar::Archive::new(stream);
    let mut metadata: HashMap<String, Vec<u8>> = HashMap::new();
    let (mut entries_left, mut bytes_left) = (MAX_ENTRIES, MAX_BYTES);
    // docker-save files named by path (`abc/layer.tar`) → the digest of their content.
    let mut by_path: HashMap<String, String> = HashMap::new();
    let truncated = |e: std::io::Error| {
        fail(format!(
            "the tarball is truncated or corrupt ({e}); copy or export it again"
        ))
    };
    for entry in tar.entries().map_err(truncated)? {
        let mut entry = entry.map_err(truncated)?;
        allowance.entry(entry.size());
        entries_left = entries_left.checked_sub(1).ok_or_else(|| {
            fail(format!(
                "it has more than {MAX_ENTRIES} entries; that is not an image archive"
            ))
        })?;
        bytes_left = bytes_left.checked_sub(entry.size()).ok_or_else(|| {
            fail(format!(
                "it holds more than {} GiB; that is not an image a node imports",
                MAX_BYTES >> 30
            ))
        })?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some(name) = entry.path().ok().and_then(|p| clean(&p)) else {
            continue;
        };
        match name.as_str() {
            "index.json" | "oci-layout" | "manifest.json" | "repositories" => {
                if entry.size() > MAX_METADATA {
                    return Err(fail(format!(
                        "{name} is {} bytes; that is not image metadata",
                        entry.size()
                    )));
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(truncated)?;
                metadata.insert(name, bytes);
            }
            _ => {
                let expected = name
                    .strip_prefix("blobs/sha256/")
                    .map(|hex| format!("sha256:{hex}"));
                let size = entry.size();
                let mut blob = store.blob_writer(
                    expected.as_deref(),
                    &format!("{name} in {}", path.display()),
                )?;
                std::io::copy(&mut entry, &mut blob).map_err(truncated)?;
                if blob.written() != size {
                    return Err(truncated(std::io::Error::other(format!(
                        "{name} ends after {} of its {size} bytes",
                        blob.written()
                    ))));
                }
                let digest = blob.finish()?;
                by_path.insert(name, digest);
            }
        }
    }
    let images = if let Some(index) = metadata.get("index.json") {
        from_layout(store, index, tag.as_deref(), platform).map_err(&fail)?
    } else if let Some(manifest) = metadata.get("manifest.json") {
        from_docker(manifest, &by_path, tag.as_deref()).map_err(&fail)?
    } else {
        return Err(fail(
            "it is neither an OCI archive (no index.json) nor `docker save` output (no manifest.json)".to_owned(),
        ));
    };
    if images.is_empty() {
        return Err(fail(format!(
            "it holds no image for this node's platform ({platform})"
        )));
    }
    for image in &images {
        for layer in &image.layers {
            if !store.has_blob(layer) {
                return Err(fail(format!("layer {layer} is missing from the archive")));
            }
        }
        if !store.has_blob(&image.config_digest) {
            return Err(fail(format!(
                "the image config {} is missing from the archive",
                image.config_digest
            )));
        }
        let name = image
            .references
            .first()
            .map_or("the archive's image", String::as_str);
        store.check_platform(&image.config_digest, platform, name)?;
    }
    images.into_iter().map(|i| store.commit(i)).collect()
}

/// The entry name without `./`, or `None` if it is odd (`..`, absolute).
fn clean(path: &Path) -> Option<String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    out.to_str().map(str::to_owned)
}

fn from_layout(
    store: &ImageStore,
    index: &[u8],
    tag: Option<&str>,
    platform: &Platform,
) -> Result<Vec<NewImage>, String> {
    let index = ImageIndex::from_reader(index)
        .map_err(|e| format!("index.json is not an OCI index: {e}"))?;
    let mut images = Vec::new();
    let many = index.manifests().len() > 1;
    for top in index.manifests() {
        let name = top
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned();
        let digest = top.digest().to_string();
        let manifest_digest = match top.media_type() {
            MediaType::ImageIndex => {
                let nested = read_json(store, &digest)?;
                let nested = ImageIndex::from_reader(&nested[..])
                    .map_err(|e| format!("{digest} is not an OCI index: {e}"))?;
                let entries: Vec<(String, String, Option<String>, String)> = nested
                    .manifests()
                    .iter()
                    .filter_map(|m| {
                        let p = m.platform().as_ref()?;
                        Some((
                            p.os().to_string(),
                            p.architecture().to_string(),
                            p.variant().clone(),
                            m.digest().to_string(),
                        ))
                    })
                    .collect();
                match platform.choose(
                    entries
                        .iter()
                        .map(|(o, a, v, d)| (o.as_str(), a.as_str(), v.as_deref(), d.as_str())),
                ) {
                    Some(d) => d.to_owned(),
                    None => continue,
                }
            }
            _ => {
                if let Some(p) = top.platform()
                    && platform
                        .fit(
                            &p.os().to_string(),
                            &p.architecture().to_string(),
                            p.variant().as_deref(),
                        )
                        .is_none()
                {
                    continue;
                }
                digest
            }
        };
        let manifest = read_json(store, &manifest_digest)?;
        let manifest = ImageManifest::from_reader(&manifest[..])
            .map_err(|e| format!("{manifest_digest} is not an OCI image manifest: {e}"))?;
        let reference = reference_for(tag, name.as_deref(), many)?;
        images.push(NewImage {
            references: reference.into_iter().collect(),
            manifest_digest: Some(manifest_digest),
            config_digest: manifest.config().digest().to_string(),
            layers: manifest
                .layers()
                .iter()
                .map(|l| l.digest().to_string())
                .collect(),
        });
    }
    Ok(images)
}

/// `--tag` wins for a one-image archive; otherwise the archive's own name. A name like `1.0`
/// (skopeo writes just the tag when told `oci-archive:x.tar:1.0`) is not enough.
fn reference_for(
    tag: Option<&str>,
    own: Option<&str>,
    many: bool,
) -> Result<Option<String>, String> {
    if let Some(tag) = tag
        && !many
    {
        return Ok(Some(tag.to_owned()));
    }
    match own.map(canonical_reference) {
        Some(Ok(r)) if own.is_some_and(|o| o.contains('/') || o.contains(':')) => Ok(Some(r)),
        _ if many => Ok(None),
        _ => Err("the archive does not name its image; give it a name with --tag NAME (e.g. --tag localhost/fire:1.0)".to_owned()),
    }
}

fn read_json(store: &ImageStore, digest: &str) -> Result<Vec<u8>, String> {
    store
        .read_blob(digest)
        .map_err(|_| format!("blob {digest} is missing from the archive"))
}

fn from_docker(
    manifest: &[u8],
    by_path: &HashMap<String, String>,
    tag: Option<&str>,
) -> Result<Vec<NewImage>, String> {
    let entries: Vec<DockerManifest> = serde_json::from_slice(manifest)
        .map_err(|e| format!("manifest.json is not `docker save` output: {e}"))?;
    let many = entries.len() > 1;
    let find = |p: &str| {
        by_path
            .get(p)
            .cloned()
            .ok_or_else(|| format!("{p} is listed in manifest.json but missing from the archive"))
    };
    let mut images = Vec::new();
    for entry in entries {
        let references: Vec<String> = match (tag, &entry.repo_tags) {
            (Some(t), _) if !many => vec![t.to_owned()],
            (_, Some(tags)) if !tags.is_empty() => tags
                .iter()
                .map(|t| canonical_reference(t).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
            _ if many => Vec::new(),
            _ => {
                return Err(
                    "the archive does not name its image; give it a name with --tag NAME"
                        .to_owned(),
                );
            }
        };
        images.push(NewImage {
            references,
            manifest_digest: None,
            config_digest: find(&entry.config)?,
            layers: entry
                .layers
                .iter()
                .map(|l| find(l))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(images)
}
