//! The mesh's certificate authority over time: the CA that signs, and during a rotation the one
//! it replaces, still trusted until it is retired.
//!
//! A rotation (`spillway admin ca rotate`) makes a new CA and a cross certificate of it signed
//! by the old one. From then on the new CA signs everything; both are trusted; every listener
//! presents its certificate with the cross certificate, the old CA and the new CA, so members
//! and clients that know only the old CA (agents away, old `client.toml` files, tokens with the
//! old pin) still verify it. Agents are sent both CAs and renew their certificates under the
//! new one. Retiring (`spillway admin ca retire`) drops the old CA and the cross certificate.
//!
//! On disk (`state/ca/`), every step is one rename, so a crash leaves the state before the
//! step or after it:
//! - `ca.crt`, `ca.key`: the CA, or during a rotation the old one;
//! - `rotation/`: during a rotation, the new CA (`ca.crt`, `ca.key`) and `cross.crt`; written
//!   as `rotation.tmp/` and renamed;
//! - `rotation/retired`: a retirement under way: the new CA is copied over `ca.*`, then
//!   `rotation/` is renamed to `rotation.done/` and removed. A start finishes whatever it finds.

pub mod api;
mod cert;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use spillway_link::live::{Clients, LiveServer};

use cert::io;
pub use cert::{Ca, CaError, not_after_ms, pem};

const ROTATION: &str = "rotation";
const ROTATION_TMP: &str = "rotation.tmp";
const ROTATION_DONE: &str = "rotation.done";
const RETIRED: &str = "retired";
const CROSS_FILE: &str = "cross.crt";

/// The CAs trusted at one moment.
#[derive(Debug)]
pub struct Trust {
    /// Signs node certificates, server certificates and agent binaries.
    pub signing: Ca,
    /// During a rotation: the CA being replaced, and the signing CA's certificate signed by it.
    pub retiring: Option<Retiring>,
}

#[derive(Debug)]
pub struct Retiring {
    pub cert_der: Vec<u8>,
    pub cross_der: Vec<u8>,
}

impl Trust {
    /// The trusted CA certificates, the signing one first.
    pub fn cas(&self) -> Vec<Vec<u8>> {
        let mut cas = vec![self.signing.cert_der().to_vec()];
        cas.extend(self.retiring.as_ref().map(|r| r.cert_der.clone()));
        cas
    }

    /// The trusted CAs as one bundle (see `spillway_link::bundle`).
    pub fn bundle(&self) -> Vec<u8> {
        spillway_link::bundle::join(&self.cas())
    }

    /// What follows a listener's certificate in its chain: the signing CA; during a rotation
    /// the cross certificate and the old CA first. Clients that build one path in the order
    /// they are given (OpenSSL's) then reach the old CA through the cross certificate before
    /// they meet the new CA's self-signed one; WebPKI tries every path anyway, and a joining
    /// agent finds the CA its token pins anywhere in the chain.
    fn chain_after_leaf(&self) -> Vec<Vec<u8>> {
        let mut chain = Vec::new();
        if let Some(r) = &self.retiring {
            chain.extend([r.cross_der.clone(), r.cert_der.clone()]);
        }
        chain.push(self.signing.cert_der().to_vec());
        chain
    }

    /// Whether a join token's CA pin names a trusted CA.
    pub fn accepts_pin(&self, pin: &[u8; 16]) -> bool {
        self.cas()
            .iter()
            .any(|ca| spillway_link::identity::fingerprint(ca)[..16] == pin[..])
    }

    /// The trusted CAs in PEM: `client.toml`'s `ca`, MQTT clients' `--cafile`.
    pub fn pem(&self) -> String {
        self.cas().iter().map(|c| pem(c)).collect()
    }
}

/// A listener whose certificate follows the CAs.
#[derive(Debug)]
struct Listener {
    live: Arc<LiveServer>,
    /// Names and addresses in its certificate besides the coordinator's fixed name.
    names: Vec<String>,
}

/// The coordinator's CAs, and the listeners that present certificates from them.
#[derive(Debug)]
pub struct Authority {
    dir: PathBuf,
    name: String,
    now: RwLock<Arc<Trust>>,
    /// Held across a rotation or retirement, so two never interleave.
    changing: Mutex<()>,
    listeners: Mutex<Vec<Listener>>,
    /// Bumped at every change of the trusted CAs: member connections send the new ones.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Authority {
    /// Loads the CAs from `dir`, finishing a rotation step a crash interrupted, and creating the
    /// first CA (named after the coordinator) on first start.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self, CaError> {
        recover(dir)?;
        if !dir.join(cert::KEY_FILE).exists() {
            let (ca, _) = Ca::create(&format!("Spillway mesh CA ({name})"))?;
            ca.write(dir)?;
            sync_dir(dir)?;
        }
        let trust = read(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            now: RwLock::new(Arc::new(trust)),
            changing: Mutex::new(()),
            listeners: Mutex::new(Vec::new()),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// The CAs trusted now.
    pub fn trust(&self) -> Arc<Trust> {
        self.now
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes to the trusted CAs, for member connections to pass on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The signing CA's certificate.
    pub fn cert_der(&self) -> Vec<u8> {
        self.trust().signing.cert_der().to_vec()
    }

    /// The signing CA's fingerprint (new join tokens pin it).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.trust().signing.fingerprint()
    }

    /// Signs `message` with the signing CA's key.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        self.trust().signing.sign(message)
    }

    /// A node certificate from the signing CA: the certificate, when it ends (ms since the
    /// epoch), and the signing CA's fingerprint (hex), which the node's record keeps.
    pub fn sign_node(
        &self,
        node: &str,
        csr_der: &[u8],
        lifetime: std::time::Duration,
    ) -> Result<(Vec<u8>, u64, String), CaError> {
        let trust = self.trust();
        let (cert, expires_ms) = trust.signing.sign_node(node, csr_der, lifetime)?;
        Ok((cert, expires_ms, hex::encode(trust.signing.fingerprint())))
    }

    /// The trusted CAs in PEM.
    pub fn cert_pem(&self) -> String {
        self.trust().pem()
    }

    /// A listener for members and joining agents (QUIC) or for TLS streams (the MQTT broker,
    /// the HTTPS API), its certificate naming `names` besides the coordinator's fixed name. It
    /// follows rotations from then on.
    pub fn listener(
        &self,
        clients: Clients,
        names: Vec<String>,
    ) -> Result<Arc<LiveServer>, CaError> {
        let trust = self.trust();
        let (chain, key) = identity(&trust, &names)?;
        let live = LiveServer::new(clients, &trust.bundle(), chain, key)
            .map_err(|e| CaError::Request(e.to_string()))?;
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Listener {
                live: live.clone(),
                names,
            });
        Ok(live)
    }

    /// The names a TLS listener on `listen` is reached at: the operator's `names`, `localhost`,
    /// `127.0.0.1`, and its address unless unspecified.
    pub fn names_for(listen: SocketAddr, names: &[String]) -> Vec<String> {
        let mut names = names.to_vec();
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        names.sort();
        names.dedup();
        names
    }

    /// Keeps the CA's files as they are (no rotation or retirement) while the guard lives: a
    /// backup reads them as one.
    pub fn hold_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a rotation: a new CA, cross-signed by the current one, signs from now on, and
    /// both are trusted. Refused while a rotation is under way.
    pub fn rotate(&self) -> Result<(), CaError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.trust();
        if old.retiring.is_some() {
            return Err(CaError::Rotating);
        }
        let when = time::OffsetDateTime::now_utc();
        let name = format!(
            "Spillway mesh CA ({}, {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z)",
            self.name,
            when.year(),
            u8::from(when.month()),
            when.day(),
            when.hour(),
            when.minute(),
            when.second()
        );
        let (next, params) = Ca::create(&name)?;
        let cross_der = old.signing.cross_sign(&next, &params)?;
        let tmp = self.dir.join(ROTATION_TMP);
        remove_dir_all(&tmp)?;
        next.write(&tmp)?;
        let cross = tmp.join(CROSS_FILE);
        spillway_plumbing::atomic::write_whole(&cross, pem(&cross_der).as_bytes(), 0o644)
            .map_err(io("write", &cross))?;
        sync_dir(&tmp)?;
        rename(&tmp, &self.dir.join(ROTATION))?;
        sync_dir(&self.dir)?;
        let trust = Trust {
            signing: next,
            retiring: Some(Retiring {
                cert_der: old.signing.cert_der().to_vec(),
                cross_der,
            }),
        };
        self.adopt(trust);
        Ok(())
    }

    /// Ends a rotation: only the new CA is trusted from now on.
    pub fn retire(&self) -> Result<(), CaError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.trust().retiring.is_none() {
            return Err(CaError::NotRotating);
        }
        let marker = self.dir.join(ROTATION).join(RETIRED);
        spillway_plumbing::atomic::write_whole(&marker, b"", 0o644)
            .map_err(io("write", &marker))?;
        sync_dir(&self.dir.join(ROTATION))?;
        recover(&self.dir)?;
        let trust = read(&self.dir)?;
        self.adopt(trust);
        Ok(())
    }

    /// Makes `trust` the one in force: listeners present certificates from it at their next
    /// handshake, and member connections hear of it.
    fn adopt(&self, trust: Trust) {
        let trust = Arc::new(trust);
        *self.now.write().unwrap_or_else(PoisonError::into_inner) = trust.clone();
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let updated = identity(&trust, &l.names).and_then(|(chain, key)| {
                l.live
                    .update(&trust.bundle(), chain, key)
                    .map_err(|e| CaError::Request(e.to_string()))
            });
            if let Err(e) = updated {
                tracing::error!("a listener keeps its previous certificate: {e}");
            }
        }
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A listener's chain (a fresh certificate, then the CAs behind it) and key.
fn identity(trust: &Trust, names: &[String]) -> Result<(Vec<Vec<u8>>, Vec<u8>), CaError> {
    let (leaf, key) = trust.signing.server_leaf(names)?;
    let mut chain = vec![leaf];
    chain.extend(trust.chain_after_leaf());
    Ok((chain, key))
}

/// Reads the CAs as the folder holds them (after [`recover`]).
fn read(dir: &Path) -> Result<Trust, CaError> {
    let current = Ca::read(dir)?;
    let rotation = dir.join(ROTATION);
    if !rotation.exists() {
        return Ok(Trust {
            signing: current,
            retiring: None,
        });
    }
    let next = Ca::read(&rotation)?;
    let cross = rotation.join(CROSS_FILE);
    let cross_pem = std::fs::read_to_string(&cross).map_err(io("read", &cross))?;
    let cross_der = cert::pem_to_der(&cross_pem).map_err(|e| CaError::Damaged(cross, e))?;
    Ok(Trust {
        signing: next,
        retiring: Some(Retiring {
            cert_der: current.cert_der().to_vec(),
            cross_der,
        }),
    })
}

/// Finishes or undoes whatever step a crash interrupted: a rotation not yet renamed into
/// place is dropped; a retirement marked is completed.
fn recover(dir: &Path) -> Result<(), CaError> {
    remove_dir_all(&dir.join(ROTATION_TMP))?;
    let rotation = dir.join(ROTATION);
    if rotation.join(RETIRED).exists() {
        let next = Ca::read(&rotation)?;
        next.write(dir)?;
        sync_dir(dir)?;
        rename(&rotation, &dir.join(ROTATION_DONE))?;
        sync_dir(dir)?;
    }
    remove_dir_all(&dir.join(ROTATION_DONE))
}

fn remove_dir_all(path: &Path) -> Result<(), CaError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path)(e)),
        _ => Ok(()),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), CaError> {
    std::fs::rename(from, to).map_err(io("rename", from))
}

/// Makes renames and new files in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}
