//! Server TLS whose certificate and trusted CAs change while it listens: the coordinator's
//! listeners (QUIC, MQTT over TLS, HTTPS) across a CA rotation. rustls asks for the certificate
//! and the client verifier at every handshake, so a swap here takes effect at the next one,
//! and connections already open carry on.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::tls::{Ended, TlsError, provider, roots};

/// Which client certificates a listener asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// None (the HTTPS API: callers show tokens).
    NotAsked,
    /// Verified against the trusted CAs when presented (members), optional otherwise.
    Optional,
    /// As `Optional`, and a member certificate that has ended is let in too (the QUIC endpoint,
    /// which renews it or says why not).
    OptionalEndedToo,
}

/// A listener's certificate chain and key, and the CAs its clients' certificates must chain to.
#[derive(Debug)]
pub struct LiveServer {
    clients: Clients,
    now: RwLock<Arc<Snapshot>>,
}

#[derive(Debug)]
struct Snapshot {
    key: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl LiveServer {
    /// `bundle`: the trusted CAs (see [`crate::bundle`]); `chain`: the listener's certificate
    /// then the certificates that lead to them.
    pub fn new(
        clients: Clients,
        bundle: &[u8],
        chain: Vec<Vec<u8>>,
        key_der: Vec<u8>,
    ) -> Result<Arc<Self>, TlsError> {
        let now = RwLock::new(Arc::new(snapshot(clients, bundle, chain, key_der)?));
        Ok(Arc::new(Self { clients, now }))
    }

    /// From the next handshake on: this chain and key, these CAs.
    pub fn update(
        &self,
        bundle: &[u8],
        chain: Vec<Vec<u8>>,
        key_der: Vec<u8>,
    ) -> Result<(), TlsError> {
        let next = Arc::new(snapshot(self.clients, bundle, chain, key_der)?);
        match self.now.write() {
            Ok(mut now) => *now = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.now.read() {
            Ok(now) => now.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A server configuration that follows this listener: TLS 1.3, or 1.2 and 1.3 for HTTPS.
    pub fn config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        // People's HTTPS clients may still speak TLS 1.2; members speak 1.3.
        let versions: &[&rustls::SupportedProtocolVersion] = match self.clients {
            Clients::NotAsked => rustls::DEFAULT_VERSIONS,
            Clients::Optional | Clients::OptionalEndedToo => &[&rustls::version::TLS13],
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)?;
        Ok(match self.clients {
            Clients::NotAsked => builder.with_no_client_auth(),
            Clients::Optional | Clients::OptionalEndedToo => {
                builder.with_client_cert_verifier(Arc::new(LiveClients(self.clone())))
            }
        }
        .with_cert_resolver(self.clone()))
    }
}

fn snapshot(
    clients: Clients,
    bundle: &[u8],
    chain: Vec<Vec<u8>>,
    key_der: Vec<u8>,
) -> Result<Snapshot, TlsError> {
    let webpki = WebPkiClientVerifier::builder_with_provider(roots(bundle)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Anchor(e.to_string()))?;
    let verifier: Arc<dyn ClientCertVerifier> = match clients {
        Clients::OptionalEndedToo => Arc::new(Ended { inner: webpki }),
        Clients::NotAsked | Clients::Optional => webpki,
    };
    let key = PrivateKeyDer::try_from(key_der).map_err(|e| TlsError::Anchor(e.to_string()))?;
    let signer = provider().key_provider.load_private_key(key)?;
    let key = CertifiedKey::new(
        chain.into_iter().map(CertificateDer::from).collect(),
        signer,
    );
    key.keys_match()?;
    Ok(Snapshot {
        key: Arc::new(key),
        verifier,
    })
}

impl ResolvesServerCert for LiveServer {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.snapshot().key.clone())
    }
}

/// The client verifier of the moment.
#[derive(Debug)]
struct LiveClients(Arc<LiveServer>);

impl ClientCertVerifier for LiveClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: they would borrow from a verifier that may be swapped meanwhile, and members
    /// present their one certificate whatever the hints say.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        (self.0.snapshot().verifier).verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        (self.0.snapshot().verifier).verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        (self.0.snapshot().verifier).verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.snapshot().verifier.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
