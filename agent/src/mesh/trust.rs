//! The CAs this node trusts, as the coordinator sends them when the mesh CA is rotated (and at
//! every link from protocol 1.6 on). A new set is taken only if it still verifies the
//! coordinator this node is linked to, so no set can lock the node out; it is stored before
//! it is used or acknowledged.

use spillway_link::bundle::{self, MAX_CA_BYTES, MAX_CAS};
use spillway_link::membership::Membership;

/// What became of CAs the coordinator sent.
#[derive(Debug)]
pub enum Adopted {
    /// The node trusted exactly these already.
    Unchanged,
    /// Stored: the membership and client configuration to connect with from now on.
    Changed(Membership, quinn::ClientConfig),
}

/// Checks `cas` (bounded, each one certificate, together verifying `presented`, the chain
/// the coordinator showed on this link), then stores them as this node's trusted CAs.
pub fn adopt(
    state_dir: &std::path::Path,
    current: &Membership,
    cas: &[Vec<u8>],
    presented: &[Vec<u8>],
) -> Result<Adopted, String> {
    if cas.is_empty() || cas.len() > MAX_CAS {
        return Err(format!(
            "{} CA certificates (1 to {MAX_CAS} expected)",
            cas.len()
        ));
    }
    if cas.iter().any(|c| c.len() > MAX_CA_BYTES) {
        return Err(format!("a CA certificate over {MAX_CA_BYTES} bytes"));
    }
    let joined = bundle::join(cas);
    let split = bundle::split(&joined).map_err(|e| e.to_string())?;
    if split.len() != cas.len() {
        return Err("an entry that is not exactly one certificate".into());
    }
    if joined == current.ca_der {
        return Ok(Adopted::Unchanged);
    }
    spillway_link::tls::verifies_coordinator(&joined, presented)
        .map_err(|e| format!("they do not verify the coordinator this node is linked to ({e})"))?;
    let tls =
        spillway_link::tls::member(&joined, current.cert_der.clone(), current.key_der.clone())
            .map_err(|e| format!("they make no usable client configuration: {e}"))?;
    let next = Membership {
        ca_der: joined,
        ..current.clone()
    };
    next.save_trust(state_dir)
        .map_err(|e| format!("cannot store them: {e}"))?;
    Ok(Adopted::Changed(next, tls))
}

/// The fingerprints of the CAs in `bundle`, for the coordinator's record.
pub fn fingerprints(bundle: &[u8]) -> Vec<[u8; 32]> {
    bundle::split(bundle)
        .map(|cas| {
            cas.iter()
                .map(|c| spillway_link::identity::fingerprint(c))
                .collect()
        })
        .unwrap_or_default()
}

/// A connection failure, with what to do when it is about certificates: after a CA rotation
/// and retirement this node missed, neither side trusts the other's certificate any more.
pub fn explain_connect_error(error: &str) -> String {
    if error.contains("UnknownIssuer") {
        format!(
            "{error}. The coordinator's certificate is not from a CA this node trusts: if the mesh CA was rotated and the old one retired while this node was away, join again with a token made for it (on the coordinator: spillway token create --node NODE; here: spillway-agent join --token …)"
        )
    } else if error.contains("error 42") || error.contains("error 48") {
        format!(
            "{error}. The coordinator refused this node's certificate: if the mesh CA that issued it was retired, join again with a token made for it (on the coordinator: spillway token create --node NODE; here: spillway-agent join --token …)"
        )
    } else {
        error.to_owned()
    }
}

#[cfg(test)]
mod tests;
