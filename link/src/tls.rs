//! rustls and quinn configurations for the three kinds of endpoint, TLS 1.3 on `ring` only.
//!
//! Trust is always the coordinator's own CA, never the system's roots: members are given the CA
//! certificate when they join, and a joining agent recognises the CA by the fingerprint carried in
//! its one-time token (as `kubeadm join --discovery-token-ca-cert-hash` does).

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use spillway_proto::wire::ALPN;

use crate::identity::fingerprint;
#[cfg(doc)]
use crate::live::Clients;
use crate::live::LiveServer;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum TlsError {
    /// TLS configuration rejected: {0}
    Rustls(#[from] rustls::Error),
    /// the CA certificate is not usable as a trust anchor: {0}
    Anchor(String),
    /// QUIC cannot use this TLS configuration: {0}
    Quic(String),
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Keep-alives every second and a 6 s idle timeout: a cut link is noticed within seconds, while
/// a report every second keeps a healthy one busy anyway.
/// Streams a peer may have open to us at once (control, blobs, requests).
pub const MAX_STREAMS: u32 = 32;

pub fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.max_idle_timeout(Some(
        Duration::from_secs(6)
            .try_into()
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(6000))),
    ));
    t.datagram_receive_buffer_size(Some(64 << 10));
    // Each stream may carry a frame of up to 64 MiB: a peer gets a few at a time, not quinn's
    // default hundred.
    t.max_concurrent_bidi_streams(MAX_STREAMS.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

/// A trust store of the CAs in `bundle` (one or more certificates, see [`crate::bundle`]).
pub(crate) fn roots(bundle: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in crate::bundle::split(bundle).map_err(|e| TlsError::Anchor(e.to_string()))? {
        roots
            .add(CertificateDer::from(ca.to_vec()))
            .map_err(|e| TlsError::Anchor(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// The coordinator's QUIC endpoint, following `live` (built with
/// [`crate::live::Clients::OptionalEndedToo`]): it presents the listener's chain, verifies client
/// certificates against the trusted CAs but also lets certificate-less clients in — they may
/// only join (the coordinator checks which kind each connection is). A member certificate that
/// has ended, but is valid in every other way, is let in too: the coordinator renews it or says
/// why not, and lets that connection do nothing else ([`peer_certificate`] tells them apart).
/// Certificate and CAs may change while it listens (a CA rotation).
pub fn quic_server(live: &Arc<LiveServer>) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = live.config()?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// A member agent: trusts only the coordinator's CA and proves itself with its own certificate.
pub fn member(
    ca_der: &[u8],
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
) -> Result<quinn::ClientConfig, TlsError> {
    let key = PrivateKeyDer::try_from(key_der).map_err(|e| TlsError::Anchor(e.to_string()))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_der)?)
        .with_client_auth_cert(vec![CertificateDer::from(cert_der)], key)?;
    client(tls)
}

/// A joining agent: no certificate yet; accepts the coordinator only if the chain it presents
/// contains the CA whose fingerprint is `ca_pin`, and the server certificate verifies under it.
pub fn joining(ca_pin: [u8; 16]) -> Result<quinn::ClientConfig, TlsError> {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            pin: ca_pin,
            algorithms: provider().signature_verification_algorithms,
        }))
        .with_no_client_auth();
    client(tls)
}

fn client(mut tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The member's certificate and key (DER) as they are now.
pub type CurrentIdentity = dyn Fn() -> Option<(Vec<u8>, Vec<u8>)> + Send + Sync;

/// The CAs (a bundle, see [`crate::bundle`]) the member trusts now.
pub type CurrentTrust = dyn Fn() -> Option<Vec<u8>> + Send + Sync;

/// A member's TLS stream client to the coordinator (its MQTT broker): trusts only the mesh's
/// CAs, proves itself with its certificate, and checks the coordinator's certificate under the
/// coordinator's fixed name, whatever host name or address the broker was reached at.
///
/// The certificate is `current()` and the CAs `trust()` at each handshake, not the ones the
/// client started with: a long-lived client (one that reconnects for months) picks up a
/// certificate renewed over the mesh, after which the coordinator stops accepting the old one,
/// and the CAs of a rotation, after which the coordinator presents a chain only the new CA
/// verifies.
pub fn stream_member(
    trust: Box<CurrentTrust>,
    current: Box<CurrentIdentity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let name = ServerName::try_from(spillway_proto::wire::COORDINATOR_SERVER_NAME)
        .map_err(|e| TlsError::Anchor(e.to_string()))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CoordinatorName {
            trust,
            cache: std::sync::Mutex::new(None),
            name,
            algorithms: provider().signature_verification_algorithms,
        }))
        .with_client_cert_resolver(Arc::new(Renewable {
            current,
            provider: provider(),
        })))
}

/// A verifier of the coordinator's certificate under the CAs of `bundle`.
fn coordinator_verifier(bundle: &[u8]) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(roots(bundle)?, provider())
        .build()
        .map_err(|e| TlsError::Anchor(e.to_string()))
}

/// Whether the CAs of `bundle` verify `chain` (the coordinator's certificate, then the ones
/// it sent along) under the coordinator's fixed name, now: an agent takes new CAs only if they
/// still verify the coordinator it is talking to, so no bundle can lock it out.
pub fn verifies_coordinator(bundle: &[u8], chain: &[Vec<u8>]) -> Result<(), TlsError> {
    let (end_entity, intermediates) = chain
        .split_first()
        .ok_or_else(|| TlsError::Anchor("the coordinator presented no certificate".into()))?;
    let intermediates: Vec<_> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let name = ServerName::try_from(spillway_proto::wire::COORDINATOR_SERVER_NAME)
        .map_err(|e| TlsError::Anchor(e.to_string()))?;
    coordinator_verifier(bundle)?
        .verify_server_cert(
            &CertificateDer::from(end_entity.as_slice()),
            &intermediates,
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(TlsError::Rustls)
}

/// Resolves the client certificate afresh at each handshake (see [`stream_member`]).
struct Renewable {
    current: Box<CurrentIdentity>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Renewable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renewable")
    }
}

impl rustls::client::ResolvesClientCert for Renewable {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let (cert_der, key_der) = (self.current)()?;
        let key = PrivateKeyDer::try_from(key_der).ok()?;
        let signer = self.provider.key_provider.load_private_key(key).ok()?;
        Some(Arc::new(rustls::sign::CertifiedKey::new(
            vec![CertificateDer::from(cert_der)],
            signer,
        )))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// WebPKI verification under the coordinator's fixed name, with the CAs trusted at the time
/// (the verifier is rebuilt only when they change).
struct CoordinatorName {
    trust: Box<CurrentTrust>,
    cache: std::sync::Mutex<Option<(Vec<u8>, Arc<WebPkiServerVerifier>)>>,
    name: ServerName<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for CoordinatorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoordinatorName")
    }
}

impl CoordinatorName {
    fn verifier(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let bundle = (self.trust)().ok_or_else(|| {
            rustls::Error::General("this node's trusted CAs cannot be read".into())
        })?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((cached, verifier)) = cache.as_ref()
            && *cached == bundle
        {
            return Ok(verifier.clone());
        }
        let verifier =
            coordinator_verifier(&bundle).map_err(|e| rustls::Error::General(e.to_string()))?;
        *cache = Some((bundle, verifier.clone()));
        Ok(verifier)
    }
}

impl ServerCertVerifier for CoordinatorName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            &self.name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Member certificates as WebPKI checks them, and besides, ones that have ended but are valid
/// in every other way as of their last second: they chain to the CA, are signed by it and are
/// meant for client authentication. For agents that were away past their certificate's end;
/// the coordinator lets such a connection do nothing but renew (within its policy) or hear why
/// not.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for Ended {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                not_after,
                ..
            })) => self
                .inner
                .verify_client_cert(end_entity, intermediates, not_after),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate a peer proved it holds (DER), if it presented one.
pub fn peer_certificate(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|c| c.to_vec())
}

/// The whole chain a peer presented (its certificate first), as DER.
pub fn peer_chain(conn: &quinn::Connection) -> Vec<Vec<u8>> {
    conn.peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
        .unwrap_or_default()
}

/// The fingerprint of the certificate a peer proved it holds, if it presented one.
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<[u8; 32]> {
    peer_certificate(conn).map(|cert| fingerprint(&cert))
}

/// Verifies the coordinator against the CA named by a pin instead of a trust store.
#[derive(Debug)]
struct PinnedCa {
    /// The first 128 bits of the CA certificate's SHA-256.
    pin: [u8; 16],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c)[..16] == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the coordinator's CA does not match the token: the token belongs to another coordinator, or this is not a Spillway coordinator".into(),
                )
            })?;
        let roots = roots(ca).map_err(|e| rustls::Error::General(e.to_string()))?;
        WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn pair(name: &str) -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    #[test]
    fn a_stream_client_presents_the_certificate_current_at_each_handshake() {
        let (ca, _) = pair("ca");
        let now = Arc::new(Mutex::new(Some(pair("pi-1"))));
        let seen = now.clone();
        let config = stream_member(
            Box::new(move || Some(ca.clone())),
            Box::new(move || seen.lock().ok().and_then(|p| p.clone())),
        )
        .unwrap();
        let presented = || {
            config
                .client_auth_cert_resolver
                .resolve(&[], &[])
                .map(|k| k.cert[0].to_vec())
        };
        let first = now.lock().unwrap().clone().unwrap().0;
        assert_eq!(presented(), Some(first));
        // Renewed on disk: the next handshake presents the new one.
        let renewed = pair("pi-1");
        *now.lock().unwrap() = Some(renewed.clone());
        assert_eq!(presented(), Some(renewed.0));
        // Unreadable: no certificate, and the broker refuses the handshake.
        *now.lock().unwrap() = None;
        assert_eq!(presented(), None);
    }

    /// A CA, and a client certificate it signed that ended at the start of 2021.
    fn ca_and_ended(name: &str) -> (Vec<u8>, Vec<u8>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(rcgen::DnType::CommonName, name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["pi-1".to_owned()]).unwrap();
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let leaf_der = leaf
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .der()
            .to_vec();
        (ca_der, leaf_der)
    }

    #[test]
    fn an_ended_member_certificate_is_let_in_only_by_the_mesh_endpoint_and_only_from_the_ca() {
        let (ca, ended) = ca_and_ended("mesh");
        let (_, foreign) = ca_and_ended("someone else");
        let webpki = || {
            WebPkiClientVerifier::builder_with_provider(roots(&ca).unwrap(), provider())
                .allow_unauthenticated()
                .build()
                .unwrap()
        };
        let verify = |v: &dyn ClientCertVerifier, cert: &[u8]| {
            v.verify_client_cert(&CertificateDer::from(cert.to_vec()), &[], UnixTime::now())
        };
        // TLS streams (the MQTT broker): an ended certificate is refused as such.
        assert!(matches!(
            verify(webpki().as_ref(), &ended),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredContext { .. }
            ))
        ));
        // The mesh endpoint lets it in, for the coordinator to renew it or say why not...
        let mesh = Ended { inner: webpki() };
        assert!(verify(&mesh, &ended).is_ok());
        // ...but never one another CA signed, ended or not.
        assert!(matches!(
            verify(&mesh, &foreign),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
    }
}
