//! Signatures by the mesh CA's key on things other than certificates: agent binaries shipped
//! over the mesh. The coordinator signs with the key it certifies nodes with; an agent checks
//! with the CA certificates it trusts (pinned at join, then those a CA rotation brought), so
//! nothing new has to be distributed.

use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum SignatureError {
    /// the mesh CA certificate cannot be read: {0}
    Ca(String),
    /// the signature is not the mesh CA's over these bytes (it was made with another key, or the bytes were changed)
    Mismatch,
    /// cannot sign: {0}
    Sign(String),
}

/// Signs `message` with the CA's key (ECDSA P-256 with SHA-256 for the keys this mesh makes).
pub fn sign(ca_key: &rcgen::KeyPair, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
    use rcgen::SigningKey;
    ca_key
        .sign(message)
        .map_err(|e| SignatureError::Sign(e.to_string()))
}

/// Checks that `signature` over `message` was made with the key of a CA certificate in
/// `bundle` (the CAs the node trusts: during a rotation the new one signs, see
/// [`crate::bundle`]).
pub fn verify(bundle: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let cas = crate::bundle::split(bundle).map_err(|e| SignatureError::Ca(e.to_string()))?;
    let algorithms = [
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
    ];
    for ca in cas {
        let der = CertificateDer::from(ca);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| SignatureError::Ca(format!("{e:?}")))?;
        if algorithms
            .iter()
            .any(|alg| cert.verify_signature(*alg, message, signature).is_ok())
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::KeyPair, Vec<u8>) {
        crate::test_ca::ca("mesh CA").into_parts()
    }

    #[test]
    fn a_signature_by_the_ca_key_verifies_with_its_certificate() {
        let (key, ca_der) = ca();
        let sig = sign(&key, b"agent 1.2 aarch64").expect("sign");
        verify(&ca_der, b"agent 1.2 aarch64", &sig).expect("verifies");
    }

    #[test]
    fn during_a_rotation_a_signature_by_either_trusted_ca_verifies_and_by_no_other() {
        let (old_key, old_ca) = ca();
        let (new_key, new_ca) = ca();
        let (stranger, _) = ca();
        let by_new = sign(&new_key, b"agent 1.3 aarch64").expect("sign");
        let by_old = sign(&old_key, b"agent 1.3 aarch64").expect("sign");
        let bundle = crate::bundle::join(&[&new_ca, &old_ca]);
        verify(&bundle, b"agent 1.3 aarch64", &by_new).expect("new CA");
        verify(&bundle, b"agent 1.3 aarch64", &by_old).expect("old CA");
        let forged = sign(&stranger, b"agent 1.3 aarch64").expect("sign");
        assert!(matches!(
            verify(&bundle, b"agent 1.3 aarch64", &forged),
            Err(SignatureError::Mismatch)
        ));
        // Once the old CA is retired, what it signs no longer counts.
        assert!(matches!(
            verify(&new_ca, b"agent 1.3 aarch64", &by_old),
            Err(SignatureError::Mismatch)
        ));
    }

    #[test]
    fn changed_bytes_another_key_or_garbage_are_refused() {
        let (key, ca_der) = ca();
        let (other, _) = ca();
        let sig = sign(&key, b"agent 1.2 aarch64").expect("sign");
        let forged = sign(&other, b"agent 1.2 aarch64").expect("sign");
        for (msg, sig) in [
            (&b"agent 1.2 x86_64"[..], &sig[..]),
            (b"agent 1.2 aarch64", &forged[..]),
            (b"agent 1.2 aarch64", &[0u8; 70][..]),
            (b"agent 1.2 aarch64", &[][..]),
        ] {
            let err = verify(&ca_der, msg, sig).expect_err("refused");
            assert!(matches!(err, SignatureError::Mismatch), "{err}");
        }
        let err = verify(b"not a certificate", b"x", &sig).expect_err("refused");
        assert!(
            err.to_string().contains("CA certificate cannot be read"),
            "{err}"
        );
    }
}
