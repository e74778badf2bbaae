//! One-time join tokens: `spw1.<secret>.<ca pin>`.
//!
//! The secret (128 random bits) is stored only as its SHA-256, with an expiry; it is consumed by
//! the first join that presents it. The CA pin (the first 128 bits of the CA certificate's
//! SHA-256) lets the joining agent authenticate the coordinator before it has any certificate.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

const PREFIX: &str = "spw1";

/// A token as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub secret: [u8; 16],
    pub ca_pin: [u8; 16],
}

impl JoinToken {
    pub fn generate(ca_fingerprint: &[u8; 32]) -> Result<Self, String> {
        let mut secret = [0u8; 16];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| "the system random number generator failed".to_string())?;
        let mut ca_pin = [0u8; 16];
        ca_pin.copy_from_slice(&ca_fingerprint[..16]);
        Ok(Self { secret, ca_pin })
    }

    /// What the store keeps instead of the secret.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let help = "a join token looks like spw1.<32 hex digits>.<32 hex digits>; create one with `spillway token create`";
        let mut parts = text.trim().split('.');
        let (Some(PREFIX), Some(secret), Some(pin), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed join token: {help}"));
        };
        let mut token = Self {
            secret: [0; 16],
            ca_pin: [0; 16],
        };
        hex::decode_to_slice(secret, &mut token.secret)
            .and_then(|()| hex::decode_to_slice(pin, &mut token.ca_pin))
            .map_err(|_| format!("malformed join token: {help}"))?;
        Ok(token)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}",
            hex::encode(self.secret),
            hex::encode(self.ca_pin)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_round_trips_and_pins_the_ca() {
        let t = JoinToken::generate(&[7; 32]).unwrap();
        let back = JoinToken::parse(&t.to_string()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.ca_pin, [7; 16]);
    }

    #[test]
    fn malformed_tokens_explain_the_expected_shape() {
        for bad in ["", "spw1.zz.00", "spw2.00.00", "spw1.00", "spw1.00.00.00"] {
            let err = JoinToken::parse(bad).unwrap_err();
            assert!(err.contains("spillway token create"), "{bad}: {err}");
        }
    }
}
