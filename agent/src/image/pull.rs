//! Pulling images with the OCI distribution API (`oci-client`): anonymous, basic or bearer-token
//! auth (the client follows the registry's `WWW-Authenticate` challenge), multi-arch indexes
//! resolved to this node's platform, every blob verified by digest before it is stored.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::store::{ImageRecord, ImageStore, NewImage, canonical_reference};
use super::{ImageError, Platform};
use spillway_agent_config::registry::{Registries, RegistrySettings};

/// The credentials `settings` give for `registry` (a password file is read now, so a rotated
/// secret is picked up at the next pull).
fn auth(settings: &RegistrySettings, registry: &str) -> Result<RegistryAuth, ImageError> {
    let Some(user) = &settings.username else {
        return Ok(RegistryAuth::Anonymous);
    };
    let password = match (&settings.password, &settings.password_file) {
        (Some(p), _) => p.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(ImageError::io(file))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => {
            return Err(ImageError::Unauthorized {
                registry: registry.to_owned(),
                reference: format!("(username `{user}` has no password or password_file)"),
            });
        }
    };
    Ok(RegistryAuth::Basic(user.clone(), password))
}

/// Pull progress, for a terminal progress bar (the agent itself pulls quietly).
pub trait PullProgress: Send {
    fn layer(&mut self, _index: usize, _count: usize, _digest: &str, _size: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn unpacking(&mut self) {}
}

#[derive(Debug, Default)]
pub struct Quiet;
impl PullProgress for Quiet {}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            registry
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

type Entries = Arc<Mutex<Vec<String>>>;

/// Pulls `reference` for `platform` into the store (blobs already there are not fetched again)
/// and returns its record.
pub async fn pull(
    store: &Arc<ImageStore>,
    reference: &str,
    registries: &Registries,
    platform: &Platform,
    progress: &mut dyn PullProgress,
) -> Result<ImageRecord, ImageError> {
    let canonical = canonical_reference(reference)?;
    let parsed: Reference =
        canonical
            .parse()
            .map_err(|e: oci_client::ParseError| ImageError::BadReference {
                reference: reference.to_owned(),
                message: e.to_string(),
            })?;
    let registry = parsed.registry().to_owned();
    let settings = registries.settings(&registry);
    let auth = auth(&settings, &registry)?;
    let offered: Entries = Arc::default();
    let client = client(&settings, &registry, platform, offered.clone());
    let fail = |e: OciDistributionError| classify(e, &registry, &canonical);

    let _one_at_a_time = store.adding.lock().await;
    let (manifest, manifest_digest, _index) = match client
        .pull_image_manifest_and_list_digest(&parsed, &auth)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            let offered = offered.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(if offered.is_empty() {
                fail(e)
            } else {
                ImageError::NoPlatform {
                    reference: canonical.clone(),
                    platform: platform.to_string(),
                    available: offered.join(", "),
                }
            });
        }
    };
    let config_digest = manifest.config.digest.clone();
    if manifest.config.size < 0 || manifest.config.size as u64 > super::store::MAX_METADATA_BLOB {
        return Err(ImageError::Registry {
            registry: parsed.registry().to_owned(),
            reference: canonical.clone(),
            message: format!(
                "its config is said to be {} bytes, which is not image metadata; the image is malformed",
                manifest.config.size
            ),
        });
    }
    if !store.has_blob(&config_digest) {
        let mut config = Vec::new();
        client
            .pull_blob(&parsed, &manifest.config, &mut config)
            .await
            .map_err(fail)?;
        store.put_blob(Some(&config_digest), &config, "the image config")?;
    }
    // A single-platform image built for another architecture fails here, not as
    // "exec format error" inside the first job.
    store.check_platform(&config_digest, platform, &canonical)?;
    let count = manifest.layers.len();
    for (i, layer) in manifest.layers.iter().enumerate() {
        progress.layer(i, count, &layer.digest, layer.size.max(0) as u64);
        if store.has_blob(&layer.digest) {
            progress.advance(layer.size.max(0) as u64);
            continue;
        }
        let mut blob =
            store.blob_writer(Some(&layer.digest), &format!("layer {}", layer.digest))?;
        let mut stream = client
            .pull_blob_stream(&parsed, layer)
            .await
            .map_err(fail)?;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| broken_download(e, &registry, &canonical, &layer.digest))?;
            blob.write_all(&chunk)
                .map_err(ImageError::io(store.root()))?;
            progress.advance(chunk.len() as u64);
        }
        blob.finish()?;
    }
    progress.unpacking();
    let new = NewImage {
        references: vec![canonical],
        manifest_digest: Some(manifest_digest),
        config_digest,
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
    };
    let owned = store.clone();
    // Unpacking is disk-bound work: off the async workers.
    tokio::task::spawn_blocking(move || owned.commit(new))
        .await
        .map_err(|e| ImageError::Io {
            path: store.root().to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Where rustls-native-certs (behind reqwest) looks for CA certificates on Linux.
const CA_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// A board image without CA certificates makes every registry client panic at construction
/// (reqwest's default client inside oci-client). Then this points `SSL_CERT_FILE` at a
/// certificate made here that signs nothing: plain-HTTP registries work, HTTPS ones are refused
/// as untrusted, and the log says how to fix it. Call before any thread starts.
pub fn ensure_trust_store(state_dir: &Path) {
    let has_bundle = CA_BUNDLES.iter().any(|p| Path::new(p).is_file())
        || std::fs::read_dir("/etc/ssl/certs").is_ok_and(|mut d| d.next().is_some());
    if has_bundle || std::env::var_os("SSL_CERT_FILE").is_some() {
        return;
    }
    let file = state_dir.join("tls").join("no-ca-certificates.pem");
    let made = rcgen::generate_simple_self_signed(vec!["trusts-nothing.invalid".to_owned()])
        .map_err(|e| e.to_string())
        .and_then(|c| {
            std::fs::create_dir_all(state_dir.join("tls"))
                .and_then(|()| std::fs::write(&file, c.cert.pem()))
                .map_err(|e| e.to_string())
        });
    match made {
        Ok(()) => {
            tracing::warn!(
                "this system has no CA certificates: HTTPS registries cannot be verified and are refused; install the ca-certificates package (plain-HTTP registries with `insecure = true` work)"
            );
            // SAFETY: called from main before the runtime or any other thread exists.
            unsafe { std::env::set_var("SSL_CERT_FILE", &file) };
        }
        Err(e) => tracing::warn!(
            "this system has no CA certificates and {} cannot be written ({e})",
            file.display()
        ),
    }
}

fn client(
    settings: &RegistrySettings,
    registry: &str,
    platform: &Platform,
    offered: Entries,
) -> Client {
    let platform = platform.clone();
    let resolver = move |entries: &[oci_client::manifest::ImageIndexEntry]| {
        let described: Vec<(String, String, Option<String>, String)> = entries
            .iter()
            .filter_map(|e| {
                let p = e.platform.as_ref()?;
                Some((
                    p.os.to_string(),
                    p.architecture.to_string(),
                    p.variant.clone(),
                    e.digest.clone(),
                ))
            })
            .collect();
        let chosen = platform
            .choose(
                described
                    .iter()
                    .map(|(o, a, v, d)| (o.as_str(), a.as_str(), v.as_deref(), d.as_str())),
            )
            .map(str::to_owned);
        if chosen.is_none() {
            *offered.lock().unwrap_or_else(|p| p.into_inner()) = described
                .iter()
                .map(|(o, a, v, _)| match v {
                    Some(v) => format!("{o}/{a}/{v}"),
                    None => format!("{o}/{a}"),
                })
                .collect();
        }
        chosen
    };
    // reqwest's rustls takes the process's default provider: ring (aws-lc-rs does not cross-build
    // to the boards). Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if settings.insecure || is_loopback(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(resolver)),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        max_concurrent_download: 2,
        ..Default::default()
    })
}

fn classify(e: OciDistributionError, registry: &str, reference: &str) -> ImageError {
    let unauthorized = || ImageError::Unauthorized {
        registry: registry.to_owned(),
        reference: reference.to_owned(),
    };
    let not_found = || ImageError::NotFound {
        reference: reference.to_owned(),
    };
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => unauthorized(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found()
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else {
                ImageError::Registry {
                    registry: registry.to_owned(),
                    reference: reference.to_owned(),
                    message: envelope.to_string(),
                }
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(),
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            ImageError::Unreachable {
                registry: registry.to_owned(),
                message: super::error_chain(&e),
            }
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => ImageError::DigestMismatch {
            what: format!("a blob of `{reference}` from the registry"),
            expected,
            actual,
        },
        other => ImageError::Registry {
            registry: registry.to_owned(),
            reference: reference.to_owned(),
            message: super::error_chain(&other),
        },
    }
}

/// A layer download that ended in an error: the client's own digest check (a damaged blob), or
/// the connection.
fn broken_download(e: std::io::Error, registry: &str, reference: &str, digest: &str) -> ImageError {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<oci_client::errors::DigestError>());
    if let Some(oci_client::errors::DigestError::VerificationError { expected, actual }) = inner {
        return ImageError::DigestMismatch {
            what: format!("layer {digest} of `{reference}` from the registry"),
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    if e.to_string().contains("Invalid digest") {
        return ImageError::DigestMismatch {
            what: format!("layer {digest} of `{reference}` from the registry"),
            expected: digest.to_owned(),
            actual: e.to_string(),
        };
    }
    ImageError::Unreachable {
        registry: registry.to_owned(),
        message: format!("the download of layer {digest} broke off: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_registries_are_recognised_with_and_without_ports() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.8.9.1",
        ] {
            assert!(super::is_loopback(r), "{r}");
        }
        for r in ["registry.example.com", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!super::is_loopback(r), "{r}");
        }
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let s = super::RegistrySettings {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
