//! Presigned, expiring URLs on the coordinator's HTTP API, for executors outside the mesh (an
//! HTTP endpoint, another cluster, a Kubernetes Job, a Lambda function) that have no mesh
//! certificate: fetching a job's input, storing its outputs, reporting its result. The URL
//! carries its expiry and an HMAC-SHA256 of method, path and expiry under a key that never leaves
//! the coordinator's state folder; it grants that one request on that one path until then.
//! The same key derives each function's OSCAR service token.

use std::path::Path;

use ring::hmac;

/// Why a presigned request is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum PresignError {
    /// the URL is not presigned (no `expires` and `signature`): ask the coordinator for a new one
    Missing,
    /// the URL expired {0}s ago: ask the coordinator for a new one
    Expired(u64),
    /// the URL's signature does not match its method, path and expiry
    BadSignature,
}

pub struct Presigner {
    key: hmac::Key,
}

impl std::fmt::Debug for Presigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presigner(***)")
    }
}

impl Presigner {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key in `dir/presign.key`, created (0600, 32 random bytes) on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("presign.key");
        match std::fs::read(&path) {
            Ok(secret) if secret.len() >= 32 => return Ok(Self::from_secret(&secret)),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is shorter than 32 bytes; delete it to make a new one (outstanding presigned URLs stop working)",
                        path.display()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| std::io::Error::other("no randomness for the presign key"))?;
        spillway_plumbing::atomic::write_whole(&path, &secret, 0o600)?;
        Ok(Self::from_secret(&secret))
    }

    fn signature(&self, method: &str, path: &str, expires: u64) -> String {
        let message = format!("{method}\n{path}\n{expires}");
        hex::encode(hmac::sign(&self.key, message.as_bytes()))
    }

    /// The query string (`expires=…&signature=…`) that lets `method path` through until
    /// `expires` (seconds since the Unix epoch).
    pub fn query(&self, method: &str, path: &str, expires: u64) -> String {
        format!(
            "expires={expires}&signature={}",
            self.signature(method, path, expires)
        )
    }

    pub fn verify(
        &self,
        method: &str,
        path: &str,
        expires: Option<u64>,
        signature: Option<&str>,
        now_secs: u64,
    ) -> Result<(), PresignError> {
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(PresignError::Missing);
        };
        let given = hex::decode(signature).map_err(|_| PresignError::BadSignature)?;
        let message = format!("{method}\n{path}\n{expires}");
        hmac::verify(&self.key, message.as_bytes(), &given)
            .map_err(|_| PresignError::BadSignature)?;
        if now_secs > expires {
            return Err(PresignError::Expired(now_secs - expires));
        }
        Ok(())
    }

    /// The bearer token of a function's OSCAR service (`GET /system/services/{name}` gives it
    /// out to the cluster's users; `POST /job/{name}` and `/run/{name}` accept it): 64 hex
    /// digits, as OSCAR's, which tells a service token from an OIDC token by its length.
    pub fn service_token(&self, function: &str) -> String {
        let tag = hmac::sign(&self.key, format!("service-token\n{function}").as_bytes());
        hex::encode(tag.as_ref())
    }

    /// Whether `token` is the service token of `function`: the 64-digit one, or its first 48
    /// digits, which earlier releases handed out (and users' scripts may still hold).
    pub fn is_service_token(&self, function: &str, token: &str) -> bool {
        use sha2::{Digest, Sha256};
        let full = self.service_token(function);
        // Digests compared, so the comparison's time says nothing about the token.
        let given = Sha256::digest(token.as_bytes());
        [full.as_str(), &full[..48]]
            .iter()
            .any(|t| Sha256::digest(t.as_bytes()) == given)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_token_has_oscars_64_digits_and_the_older_48_still_work() {
        let p = Presigner::from_secret(&[7; 32]);
        let token = p.service_token("detect");
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(p.is_service_token("detect", &token));
        assert!(p.is_service_token("detect", &token[..48]), "issued before");
        assert!(!p.is_service_token("other", &token), "another function's");
        assert!(!p.is_service_token("detect", &token[..40]));
        assert_ne!(
            token,
            Presigner::from_secret(&[8; 32]).service_token("detect")
        );
    }

    #[test]
    fn a_presigned_url_opens_only_its_method_and_path_until_it_expires() {
        let p = Presigner::from_secret(&[7; 32]);
        let q = p.query("GET", "/v1/blobs/ab", 1000);
        let sig = q.split("signature=").nth(1).map(str::to_owned);
        let ok = |m: &str, path: &str, exp: u64, now: u64| {
            p.verify(m, path, Some(exp), sig.as_deref(), now)
        };
        assert_eq!(ok("GET", "/v1/blobs/ab", 1000, 999), Ok(()));
        assert_eq!(
            ok("PUT", "/v1/blobs/ab", 1000, 999),
            Err(PresignError::BadSignature)
        );
        assert_eq!(
            ok("GET", "/v1/blobs/cd", 1000, 999),
            Err(PresignError::BadSignature)
        );
        assert_eq!(
            ok("GET", "/v1/blobs/ab", 2000, 999),
            Err(PresignError::BadSignature)
        );
        assert_eq!(
            ok("GET", "/v1/blobs/ab", 1000, 1030),
            Err(PresignError::Expired(30))
        );
        assert_eq!(
            p.verify("GET", "/v1/blobs/ab", None, None, 0),
            Err(PresignError::Missing)
        );
    }

    #[test]
    fn service_tokens_differ_per_function_and_per_key() {
        let a = Presigner::from_secret(&[1; 32]);
        let b = Presigner::from_secret(&[2; 32]);
        assert_ne!(a.service_token("f"), a.service_token("g"));
        assert_ne!(a.service_token("f"), b.service_token("f"));
    }
}
