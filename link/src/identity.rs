//! Keys, certificate signing requests and fingerprints.

use rcgen::{CertificateParams, DnType, KeyPair};
use sha2::{Digest, Sha256};

/// Why an identity could not be made or read.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum IdentityError {
    /// cannot generate a key pair: {0}
    Generate(rcgen::Error),
    /// `{0}` cannot be a node name: use letters, digits, `-` and `.` (a DNS name)
    BadNodeName(String),
}

/// SHA-256 of a DER certificate: how the coordinator recognises a node and how a token pins the CA.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Whether `name` can be a node name (it becomes a certificate's DNS name).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// A fresh key for `node` and the request to certify it. The key stays with the caller; only
/// the request travels.
pub fn new_request(node: &str) -> Result<(KeyPair, Vec<u8>), IdentityError> {
    if !valid_node_name(node) {
        return Err(IdentityError::BadNodeName(node.to_owned()));
    }
    let key = KeyPair::generate().map_err(IdentityError::Generate)?;
    let mut params =
        CertificateParams::new(vec![node.to_owned()]).map_err(IdentityError::Generate)?;
    params.distinguished_name.push(DnType::CommonName, node);
    let csr = params
        .serialize_request(&key)
        .map_err(IdentityError::Generate)?;
    Ok((key, csr.der().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_must_be_dns_labels() {
        assert!(valid_node_name("pi-4.lab"));
        for bad in ["", "-pi", "pi.", "a b", "x/y", &"a".repeat(64)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
        assert!(matches!(
            new_request("bad name"),
            Err(IdentityError::BadNodeName(_))
        ));
    }
}
