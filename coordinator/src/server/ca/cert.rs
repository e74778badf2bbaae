//! One certificate authority: a self-signed CA kept in a folder of the state, the server
//! certificates of the coordinator's listeners, and node certificates signed from agents'
//! requests.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use spillway_link::identity::fingerprint;
use spillway_proto::wire::COORDINATOR_SERVER_NAME;

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum CaError {
    /// cannot {action} {path}: {source}
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// the CA in {0} is damaged ({1}); restore it from a backup, or remove the folder to start a new mesh (every agent must then join again)
    Damaged(PathBuf, String),
    /// certificate request refused: {0}
    Request(String),
    /// the mesh CA is being rotated already: retire the old CA first (`spillway admin ca retire`), then rotate again
    Rotating,
    /// no CA rotation is under way, so there is no old CA to retire (`spillway admin ca status` shows the CAs)
    NotRotating,
}

/// One certificate authority: its certificate and key.
#[derive(Debug)]
pub struct Ca {
    cert_der: Vec<u8>,
    key: KeyPair,
}

/// The files of a CA in its folder: the certificate (PEM) and the private key (PEM, 0600).
pub const CERT_FILE: &str = "ca.crt";
pub const KEY_FILE: &str = "ca.key";

impl Ca {
    /// A new self-signed CA named `common_name`, with the parameters it was made from (a
    /// rotation cross-signs them with the CA it replaces).
    pub fn create(common_name: &str) -> Result<(Self, CertificateParams), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Request(e.to_string()))?;
        let mut params = CertificateParams::default();
        // One CA below it at most: the cross certificate of its successor in a rotation.
        // (CAs made before rotations existed say none; WebPKI, which agents and the CLI use,
        // reads only name and key from a trust anchor, but OpenSSL clients enforce it.)
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Request(e.to_string()))?;
        let ca = Self {
            cert_der: cert.der().to_vec(),
            key,
        };
        Ok((ca, params))
    }

    /// The CA kept in `dir`.
    pub fn read(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let key_pem = std::fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io("read", &cert_path))?;
        let damaged = |e: String| CaError::Damaged(dir.to_owned(), e);
        let key = KeyPair::from_pem(&key_pem).map_err(|e| damaged(e.to_string()))?;
        let cert_der = pem_to_der(&cert_pem).map_err(damaged)?;
        Ok(Self { cert_der, key })
    }

    /// Writes the CA into `dir`, each file whole and synced (the key readable by its owner only).
    pub fn write(&self, dir: &Path) -> Result<(), CaError> {
        use spillway_plumbing::atomic::write_whole;
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        write_whole(&key_path, self.key.serialize_pem().as_bytes(), 0o600)
            .map_err(io("write", &key_path))?;
        write_whole(&cert_path, pem(&self.cert_der).as_bytes(), 0o644)
            .map_err(io("write", &cert_path))
    }

    /// `next`'s certificate (its name and key, from the parameters it was made with) signed by
    /// this CA: members that trust only this one verify chains that `next` signs through it.
    pub fn cross_sign(
        &self,
        next: &Self,
        next_params: &CertificateParams,
    ) -> Result<Vec<u8>, CaError> {
        let cert = next_params
            .signed_by(&next.key, &self.issuer()?)
            .map_err(|e| CaError::Request(e.to_string()))?;
        Ok(cert.der().to_vec())
    }

    /// Signs `message` with the CA's key: agent binaries shipped over the mesh, which agents
    /// check with the CA certificates they trust.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        spillway_link::signing::sign(&self.key, message)
            .map_err(|e| CaError::Request(e.to_string()))
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CaError> {
        Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.as_slice()), &self.key)
            .map_err(|e| CaError::Damaged(PathBuf::from(CERT_FILE), e.to_string()))
    }

    /// A fresh TLS server certificate and key (DER) under the coordinator's fixed name (what
    /// agents verify) plus `names` (DNS names or IP addresses): made at every start and
    /// rotation, never stored, so there is nothing to renew and nothing to leak from disk.
    pub fn server_leaf(&self, names: &[String]) -> Result<(Vec<u8>, Vec<u8>), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Request(e.to_string()))?;
        let mut params = CertificateParams::new(vec![COORDINATOR_SERVER_NAME.to_owned()])
            .map_err(|e| CaError::Request(e.to_string()))?;
        for name in names {
            params
                .subject_alt_names
                .push(match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => {
                        SanType::DnsName(name.as_str().try_into().map_err(|e: rcgen::Error| {
                            CaError::Request(format!("`{name}`: {e}"))
                        })?)
                    }
                });
        }
        params
            .distinguished_name
            .push(DnType::CommonName, COORDINATOR_SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| CaError::Request(e.to_string()))?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }

    /// Certifies the key in `csr_der` for `node` for `lifetime` (`[certificates]
    /// node_lifetime`); returns the certificate and when it expires (ms since the epoch). Names
    /// and usages come from us, never from the request: an agent cannot ask for another node's
    /// name or for a server certificate.
    pub fn sign_node(
        &self,
        node: &str,
        csr_der: &[u8],
        lifetime: std::time::Duration,
    ) -> Result<(Vec<u8>, u64), CaError> {
        let mut csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| CaError::Request(format!("not a certificate signing request: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, node);
        params.subject_alt_names = vec![SanType::DnsName(
            node.try_into()
                .map_err(|e: rcgen::Error| CaError::Request(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // An hour of slack for boards whose clock is behind (no RTC on a Pi until NTP syncs).
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        let lifetime = time::Duration::try_from(lifetime)
            .map_err(|e| CaError::Request(format!("certificate lifetime: {e}")))?;
        let not_after = now + lifetime;
        params.not_after = not_after;
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer()?)
            .map_err(|e| CaError::Request(e.to_string()))?;
        // Whole seconds, as the certificate holds them.
        let expires_ms = u64::try_from(not_after.unix_timestamp()).unwrap_or(0) * 1000;
        Ok((cert.der().to_vec(), expires_ms))
    }
}

pub(super) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CaError {
    let path = path.to_owned();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

/// A certificate (DER) in PEM, for MQTT clients' `--cafile` and curl's `--cacert`.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

pub(super) fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| e.to_string())
}

/// A certificate's subject as people read it (`CN=…`); empty when it cannot be read.
pub fn subject(cert_der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, cert)| cert.subject().to_string())
        .unwrap_or_default()
}

/// When a certificate (DER) ends, in ms since the epoch; `None` when it cannot be read.
pub fn not_after_ms(cert_der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    u64::try_from(cert.validity().not_after.timestamp())
        .ok()?
        .checked_mul(1000)
}
