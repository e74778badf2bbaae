//! Container images on this node: pulled from registries ([`pull`]) or imported from
//! `oci-archive` / `docker save` tarballs ([`archive`]), verified by digest, stored
//! content-addressed, and unpacked once into a root-filesystem cache that every job of the image
//! shares ([`store`]).

pub mod archive;
pub mod pull;
pub mod store;
mod tar_guard;
pub mod unpack;

use std::path::PathBuf;

pub use pull::PullProgress;
pub use spillway_agent_config::platform::Platform;
pub use store::{ImageRecord, ImageStore, RunConfig};

/// Why an image could not be made ready. Each message says what to do about it.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum ImageError {
    /// `{reference}` is not an image reference ({message}); write it like `registry.example.com/team/fire:1.0`
    BadReference { reference: String, message: String },
    /// image `{reference}` was not found in its registry; check the name and the tag (`skopeo inspect docker://{reference}` shows what the registry has)
    NotFound { reference: String },
    /// registry `{registry}` refused access to `{reference}`: wrong or missing credentials; set `username` and `password` under `[registries."{registry}"]` in the agent config
    Unauthorized { registry: String, reference: String },
    /// cannot reach registry `{registry}`: {message}; check the address, that it is up, and `insecure = true` under `[registries."{registry}"]` for a plain-HTTP registry
    Unreachable { registry: String, message: String },
    /// registry `{registry}` failed on `{reference}`: {message}
    Registry {
        registry: String,
        reference: String,
        message: String,
    },
    /// image `{reference}` has no {platform} variant (it has: {available}); build and push one for this node's architecture
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    /// {what} is corrupt: its digest should be {expected} but is {actual}; the registry or the archive is damaged, push or export the image again
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// cannot import {path}: {message}
    Archive { path: PathBuf, message: String },
    /// cannot unpack layer {digest}: {message}
    Layer { digest: String, message: String },
    /// image `{reference}` is not in this node's image store; pull it (`spillway-agent pull {reference}`) or load its tarball (`spillway-agent load FILE`)
    Missing { reference: String },
    /// {path}: {source}
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

pub(crate) use spillway_plumbing::error_chain;

/// A `sha256:<hex>` digest's hex part, checked so it is safe as a file name.
pub(crate) fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_lowercase_sha256_digests_become_file_names() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(super::digest_hex(&ok), Some("a".repeat(64).as_str()));
        assert_eq!(super::digest_hex("sha256:../../etc/passwd"), None);
        assert_eq!(
            super::digest_hex(&format!("sha512:{}", "a".repeat(64))),
            None
        );
        assert_eq!(
            super::digest_hex(&format!("sha256:{}", "A".repeat(64))),
            None
        );
    }
}
