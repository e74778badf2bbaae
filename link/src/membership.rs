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
    pub ca_der: Vec<u8>,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

impl Membership {
    /// The saved membership, if this node has joined.
    pub fn load(state_dir: &Path) -> Option<Self> {
        let d = dir(state_dir);
        Some(Self {
            coordinator: std::fs::read_to_string(d.join("coordinator"))
                .ok()?
                .trim()
                .to_owned(),
            ca_der: std::fs::read(d.join("ca.der")).ok()?,
            cert_der: std::fs::read(d.join("node.der")).ok()?,
            key_der: std::fs::read(d.join("node.key.der")).ok()?,
        })
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let d = dir(state_dir);
        let write = |name: &str, bytes: &[u8], mode: u32| {
            spillway_plumbing::atomic::write_whole(&d.join(name), bytes, mode)
        };
        write("node.key.der", &self.key_der, 0o600)?;
        write("node.der", &self.cert_der, 0o644)?;
        write("ca.der", &self.ca_der, 0o644)?;
        // Last: its presence means the identity is complete.
        write("coordinator", self.coordinator.as_bytes(), 0o644)
    }
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
