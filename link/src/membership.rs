//! Joining a mesh and the identity that results: `state_dir/identity/` holds this node's key
//! (mode 0600), its certificate, the coordinator's CA certificate and the coordinator's address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::stream::{FrameReader, send};
use crate::token::JoinToken;
use spillway_proto::wire::{
    COORDINATOR_SERVER_NAME, JoinReply, JoinRequest, MAX_JOIN_FRAME, PROTOCOL,
};

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum JoinError {
    /// {0}
    Token(String),
    /// cannot resolve the coordinator address `{0}`: {1}
    Resolve(String, String),
    /// cannot reach the coordinator at {addr}: {message}. Check the address (the coordinator's QUIC port, 7443 by default) and that UDP is not blocked
    Connect { addr: String, message: String },
    /// the coordinator refused to join this node: {0}
    Refused(String),
    /// {0}
    Identity(#[from] crate::identity::IdentityError),
    /// {0}
    Tls(#[from] crate::tls::TlsError),
    /// cannot save the identity in {path}: {source}
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an agent that joined knows about its mesh.
#[derive(Debug, Clone)]
pub struct Membership {
    pub coordinator: String,
    /// The CAs this node trusts: one certificate, or during a CA rotation several (a bundle,
    /// see [`crate::bundle`]).
    pub ca_der: Vec<u8>,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

impl Membership {
    /// The saved membership, if this node has joined. A renewed certificate and its key (see
    /// [`Membership::save_renewed`]) take the place of the ones the node joined with.
    pub fn load(state_dir: &Path) -> Option<Self> {
        let d = dir(state_dir);
        let (cert_der, key_der) = match std::fs::read(d.join(RENEWED))
            .ok()
            .and_then(|b| split_pair(&b))
        {
            Some(pair) => pair,
            None => (
                std::fs::read(d.join("node.der")).ok()?,
                std::fs::read(d.join("node.key.der")).ok()?,
            ),
        };
        Some(Self {
            coordinator: std::fs::read_to_string(d.join("coordinator"))
                .ok()?
                .trim()
                .to_owned(),
            ca_der: std::fs::read(d.join("ca.der")).ok()?,
            cert_der,
            key_der,
        })
    }

    /// Stores a renewed certificate with its key as one file, replaced atomically (written
    /// aside, synced, renamed): a crash leaves the old pair or the new one, never a certificate
    /// with the wrong key.
    pub fn save_renewed(&self, state_dir: &Path) -> std::io::Result<()> {
        let len = u32::try_from(self.cert_der.len())
            .map_err(|_| std::io::Error::other("certificate larger than 4 GiB"))?;
        let mut pair = len.to_be_bytes().to_vec();
        pair.extend_from_slice(&self.cert_der);
        pair.extend_from_slice(&self.key_der);
        spillway_plumbing::atomic::write_whole(&dir(state_dir).join(RENEWED), &pair, 0o600)
    }

    /// Stores the CAs this node trusts (a bundle, see [`crate::bundle`]), replaced atomically:
    /// a crash leaves the old set or the new one.
    pub fn save_trust(&self, state_dir: &Path) -> std::io::Result<()> {
        spillway_plumbing::atomic::write_whole(&dir(state_dir).join("ca.der"), &self.ca_der, 0o644)
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let d = dir(state_dir);
        let write = |name: &str, bytes: &[u8], mode: u32| {
            spillway_plumbing::atomic::write_whole(&d.join(name), bytes, mode)
        };
        // A new join replaces any renewal of the previous membership.
        match std::fs::remove_file(d.join(RENEWED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        write("node.key.der", &self.key_der, 0o600)?;
        write("node.der", &self.cert_der, 0o644)?;
        write("ca.der", &self.ca_der, 0o644)?;
        // Last: its presence means the identity is complete.
        write("coordinator", self.coordinator.as_bytes(), 0o644)
    }
}

/// The file of a renewed certificate and its key: a 4-byte big-endian certificate length, the
/// certificate, the key.
const RENEWED: &str = "renewed.pair";

fn split_pair(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let cert = bytes.get(4..4usize.checked_add(len)?)?;
    let key = bytes.get(4 + len..)?;
    (!cert.is_empty() && !key.is_empty()).then(|| (cert.to_vec(), key.to_vec()))
}

/// Whether `cert_der` certifies `public_key_der` (a SubjectPublicKeyInfo, DER): its encoding
/// is canonical, so a certificate for that key carries it byte for byte. Checked before a
/// renewed certificate replaces the one that works.
pub fn certifies(cert_der: &[u8], public_key_der: &[u8]) -> bool {
    !public_key_der.is_empty()
        && cert_der
            .windows(public_key_der.len())
            .any(|w| w == public_key_der)
}

/// Resolves `HOST:PORT` (a name or an address).
pub async fn resolve(addr: &str) -> Result<SocketAddr, JoinError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| JoinError::Resolve(addr.to_owned(), e.to_string()))?
        .next()
        .ok_or_else(|| JoinError::Resolve(addr.to_owned(), "no address".into()))
}

/// A client endpoint on the address family of `remote`.
pub fn client_endpoint(remote: &SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse().unwrap_or(SocketAddr::from(([0u16; 8], 0)))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    quinn::Endpoint::client(bind)
}

/// Joins the mesh of the coordinator at `coordinator` with a one-time `token`, as `node`, and
/// saves the identity under `state_dir`. The private key is made here and never sent.
pub async fn join(
    state_dir: &Path,
    node: &str,
    coordinator: &str,
    token: &str,
) -> Result<Membership, JoinError> {
    let membership = request_membership(node, coordinator, token).await?;
    membership
        .save(state_dir)
        .map_err(|source| JoinError::Save {
            path: dir(state_dir),
            source,
        })?;
    Ok(membership)
}

/// The join exchange itself, without saving anything (load generators join thousands).
pub async fn request_membership(
    node: &str,
    coordinator: &str,
    token: &str,
) -> Result<Membership, JoinError> {
    let token = JoinToken::parse(token).map_err(JoinError::Token)?;
    let (key, csr_der) = crate::identity::new_request(node)?;
    let addr = resolve(coordinator).await?;
    let connect_err = |message: String| JoinError::Connect {
        addr: coordinator.to_owned(),
        message,
    };
    let endpoint = client_endpoint(&addr).map_err(|e| connect_err(e.to_string()))?;
    let config = crate::tls::joining(token.ca_pin)?;
    let exchange = async {
        let conn = endpoint
            .connect_with(config, addr, COORDINATOR_SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // A coordinator that hangs up says why (too many attempts, shutting down).
        let failed = |e: String| match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c)) if !c.reason.is_empty() => {
                connect_err(format!(
                    "the coordinator closed the connection: {}",
                    String::from_utf8_lossy(&c.reason)
                ))
            }
            _ => connect_err(e),
        };
        let (mut tx, rx) = conn.open_bi().await.map_err(|e| failed(e.to_string()))?;
        let req = JoinRequest {
            version: PROTOCOL,
            token: token.to_string(),
            node: node.to_owned(),
            csr_der,
        };
        send(&mut tx, &req)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let _ = tx.finish();
        let reply = FrameReader::new(rx, MAX_JOIN_FRAME)
            .next::<JoinReply>()
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed("the coordinator hung up without answering".into()))?;
        conn.close(0u32.into(), b"joined");
        Ok::<_, JoinError>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| connect_err("no answer within 20 s".into()))??;
    endpoint.wait_idle().await;
    match reply {
        JoinReply::Refused { reason } => Err(JoinError::Refused(reason)),
        JoinReply::Granted { cert_der, ca_der } => Ok(Membership {
            coordinator: coordinator.to_owned(),
            ca_der,
            cert_der,
            key_der: key.serialize_der(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(cert: &[u8], key: &[u8]) -> Membership {
        Membership {
            coordinator: "127.0.0.1:7443".into(),
            ca_der: b"ca".to_vec(),
            cert_der: cert.to_vec(),
            key_der: key.to_vec(),
        }
    }

    #[test]
    fn a_renewed_pair_replaces_the_joined_one_and_a_new_join_replaces_both() {
        let dir = tempfile::tempdir().unwrap();
        joined(b"cert-1", b"key-1").save(dir.path()).unwrap();
        joined(b"cert-2", b"key-2")
            .save_renewed(dir.path())
            .unwrap();
        let loaded = Membership::load(dir.path()).unwrap();
        assert_eq!(
            (loaded.cert_der, loaded.key_der),
            (b"cert-2".to_vec(), b"key-2".to_vec())
        );
        joined(b"cert-3", b"key-3").save(dir.path()).unwrap();
        let loaded = Membership::load(dir.path()).unwrap();
        assert_eq!(
            (loaded.cert_der, loaded.key_der),
            (b"cert-3".to_vec(), b"key-3".to_vec())
        );
    }

    #[test]
    fn a_damaged_renewal_file_falls_back_to_the_joined_pair() {
        let dir = tempfile::tempdir().unwrap();
        joined(b"cert-1", b"key-1").save(dir.path()).unwrap();
        for bad in [
            &b""[..],
            b"\x00\x00",
            b"\x00\x00\x00\x09short",
            b"\x00\x00\x00\x04cert",
        ] {
            std::fs::write(dir.path().join("identity").join(RENEWED), bad).unwrap();
            let loaded = Membership::load(dir.path()).unwrap();
            assert_eq!(loaded.cert_der, b"cert-1".to_vec(), "{bad:?}");
        }
    }

    #[test]
    fn a_certificate_certifies_only_its_own_key() {
        use rcgen::PublicKeyData;
        let (key, _) = crate::identity::new_request("pi-1").unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pi-1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(certifies(cert.der(), &key.subject_public_key_info()));
        assert!(!certifies(cert.der(), &other.subject_public_key_info()));
        assert!(!certifies(cert.der(), &[]));
    }
}
