//! The coordinator's certificate authority: one self-signed CA kept in the state folder, a
//! server certificate for the QUIC endpoint, and node certificates signed from agents' requests.

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
}

#[derive(Debug)]
pub struct Ca {
    cert_der: Vec<u8>,
    key: KeyPair,
    server_cert_der: Vec<u8>,
    server_key_der: Vec<u8>,
}

impl Ca {
    /// Loads the CA from `dir`, creating it (private key mode 0600) on first start.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self, CaError> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io {
                action,
                path,
                source,
            }
        };
        if !key_path.exists() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            let key = KeyPair::generate().map_err(|e| CaError::Request(e.to_string()))?;
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params
                .distinguished_name
                .push(DnType::CommonName, format!("Spillway mesh CA ({name})"));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
            let cert = params
                .self_signed(&key)
                .map_err(|e| CaError::Request(e.to_string()))?;
            write_private(&key_path, key.serialize_pem().as_bytes())
                .map_err(io("write", &key_path))?;
            std::fs::write(&cert_path, cert.pem()).map_err(io("write", &cert_path))?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io("read", &cert_path))?;
        let damaged = |e: rcgen::Error| CaError::Damaged(dir.to_owned(), e.to_string());
        let key = KeyPair::from_pem(&key_pem).map_err(damaged)?;
        let cert_der = pem_to_der(&cert_pem).map_err(|e| CaError::Damaged(dir.to_owned(), e))?;
        let mut ca = Self {
            cert_der,
            key,
            server_cert_der: Vec::new(),
            server_key_der: Vec::new(),
        };
        ca.issue_server_cert(name)?;
        Ok(ca)
    }

    /// Signs `message` with the CA's key: agent binaries shipped over the mesh, which agents
    /// check with the CA certificate they pinned when they joined.
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

    /// The QUIC endpoint's chain (server certificate, then the CA) and key.
    pub fn server_identity(&self) -> (Vec<Vec<u8>>, Vec<u8>) {
        (
            vec![self.server_cert_der.clone(), self.cert_der.clone()],
            self.server_key_der.clone(),
        )
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CaError> {
        Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.as_slice()), &self.key)
            .map_err(|e| CaError::Damaged(PathBuf::from("ca.crt"), e.to_string()))
    }

    /// A fresh server certificate at every start: nothing to renew, nothing to leak from disk.
    fn issue_server_cert(&mut self, name: &str) -> Result<(), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Request(e.to_string()))?;
        let mut params = CertificateParams::new(vec![COORDINATOR_SERVER_NAME.to_owned()])
            .map_err(|e| CaError::Request(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(|e| CaError::Request(e.to_string()))?;
        self.server_cert_der = cert.der().to_vec();
        self.server_key_der = key.serialize_der();
        Ok(())
    }

    /// A TLS server certificate for listeners people connect to by name (the MQTT broker):
    /// the coordinator's fixed name (what agents verify) plus `names` (DNS names or IP
    /// addresses). Fresh at every start, like the QUIC one; returns the chain and key.
    pub fn tls_server(&self, names: &[String]) -> Result<(Vec<Vec<u8>>, Vec<u8>), CaError> {
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
        Ok((
            vec![cert.der().to_vec(), self.cert_der.clone()],
            key.serialize_der(),
        ))
    }

    /// [`Ca::tls_server`] for a listener on `listen`: its address (unless unspecified),
    /// `localhost` and `127.0.0.1` join the operator's `names`.
    pub fn tls_server_for(
        &self,
        listen: std::net::SocketAddr,
        names: &[String],
    ) -> Result<(Vec<Vec<u8>>, Vec<u8>), CaError> {
        let mut names = names.to_vec();
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        names.sort();
        names.dedup();
        self.tls_server(&names)
    }

    /// The CA certificate in PEM, for MQTT clients' `--cafile` and curl's `--cacert`.
    pub fn cert_pem(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.cert_der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
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

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| e.to_string())
}

/// When a certificate (DER) ends, in ms since the epoch; `None` when it cannot be read.
pub fn not_after_ms(cert_der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    u64::try_from(cert.validity().not_after.timestamp())
        .ok()?
        .checked_mul(1000)
}
