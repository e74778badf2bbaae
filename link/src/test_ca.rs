//! Throwaway CAs for tests of the mesh's trust (a rotation's old and new CA, the cross
//! certificate, server and member certificates), built with rcgen as the coordinator builds
//! them. Compiled for this crate's tests and, with the `test-ca` feature, for other crates'.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use spillway_proto::wire::COORDINATOR_SERVER_NAME;

#[derive(Debug)]
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub der: Vec<u8>,
}

/// A self-signed CA named `name`, as the coordinator makes them.
pub fn ca(name: &str) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    // As the coordinator's first CAs were made: no CA below them.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let der = params.self_signed(&key).unwrap().der().to_vec();
    TestCa { params, key, der }
}

impl TestCa {
    /// Its key (which signs) and certificate.
    pub fn into_parts(self) -> (KeyPair, Vec<u8>) {
        (self.key, self.der)
    }

    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// `next`'s certificate (same name, same key) signed by this CA.
    pub fn cross_sign(&self, next: &TestCa) -> Vec<u8> {
        next.params
            .signed_by(&next.key, &self.issuer())
            .unwrap()
            .der()
            .to_vec()
    }

    pub fn leaf(&self, usage: ExtendedKeyUsagePurpose, name: &str) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    /// A server certificate and key under the coordinator's fixed name.
    pub fn server(&self) -> (Vec<u8>, Vec<u8>) {
        self.leaf(ExtendedKeyUsagePurpose::ServerAuth, COORDINATOR_SERVER_NAME)
    }

    /// A member's client certificate and key.
    pub fn member(&self) -> (Vec<u8>, Vec<u8>) {
        self.leaf(ExtendedKeyUsagePurpose::ClientAuth, "pi-1")
    }
}
