//! The CAs a member trusts: one or more CA certificates (DER), concatenated. One certificate
//! until the mesh CA is rotated; during a rotation the new CA first, then the one it replaces
//! (`spillway admin ca rotate`), and after the old one is retired the new one alone.
//!
//! DER is self-delimiting, so the file an agent kept from before rotations existed (one
//! certificate) is a bundle as it stands. Bundles come from the coordinator over an
//! authenticated link, but are bounded all the same: at most [`MAX_CAS`] certificates of at most
//! [`MAX_CA_BYTES`] each.

/// Most CAs one bundle holds (two during a rotation; room for an operator's own chain).
pub const MAX_CAS: usize = 8;
/// Largest CA certificate in a bundle (the mesh's are about 400 bytes).
pub const MAX_CA_BYTES: usize = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, displaydoc::Display)]
pub enum BundleError {
    /// the CA bundle is empty
    Empty,
    /// the CA bundle holds more than 8 certificates
    TooMany,
    /// CA certificate {0} in the bundle is not DER (or is cut short)
    NotDer(usize),
    /// CA certificate {0} in the bundle is larger than 16 KiB
    TooLarge(usize),
}

/// The certificates of `bundle`, in order, each checked only for its DER framing and size.
pub fn split(bundle: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    let mut rest = bundle;
    let mut certs = Vec::new();
    while !rest.is_empty() {
        let n = certs.len();
        if n == MAX_CAS {
            return Err(BundleError::TooMany);
        }
        let len = der_len(rest).ok_or(BundleError::NotDer(n + 1))?;
        if len > MAX_CA_BYTES {
            return Err(BundleError::TooLarge(n + 1));
        }
        let (cert, after) = rest
            .split_at_checked(len)
            .ok_or(BundleError::NotDer(n + 1))?;
        certs.push(cert);
        rest = after;
    }
    if certs.is_empty() {
        return Err(BundleError::Empty);
    }
    Ok(certs)
}

/// One bundle of `certs`, in order.
pub fn join<C: AsRef<[u8]>>(certs: &[C]) -> Vec<u8> {
    certs
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

/// The whole length (header included) of the DER SEQUENCE `bytes` starts with: a certificate.
fn der_len(bytes: &[u8]) -> Option<usize> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    // Long form: 1 to 3 length bytes are plenty for MAX_CA_BYTES; more is refused as not DER.
    let n = usize::from(first & 0x7f);
    if !(1..=3).contains(&n) {
        return None;
    }
    let len = rest
        .get(..n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    (2 + n).checked_add(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_single_certificate_is_a_bundle_and_a_joined_bundle_splits_back_in_order() {
        let (one, two) = (ca("one"), ca("two"));
        assert_eq!(split(&one).unwrap(), vec![one.as_slice()]);
        let both = join(&[&one, &two]);
        assert_eq!(split(&both).unwrap(), vec![one.as_slice(), two.as_slice()]);
    }

    #[test]
    fn hostile_bundles_are_refused_without_reading_past_their_end() {
        let one = ca("one");
        let cut = &one[..one.len() - 1];
        let mut trailing = one.clone();
        trailing.push(0x30);
        let mut huge = vec![0x30, 0x83, 0x01, 0x00, 0x00];
        huge.resize(70_000, 0);
        let many = join(&vec![one.clone(); MAX_CAS + 1]);
        let cases: [(&[u8], BundleError); 7] = [
            (b"", BundleError::Empty),
            (b"\x04\x01x", BundleError::NotDer(1)),
            (cut, BundleError::NotDer(1)),
            (&trailing, BundleError::NotDer(2)),
            (b"\x30\x84\xff\xff\xff\xff", BundleError::NotDer(1)),
            (&huge, BundleError::TooLarge(1)),
            (&many, BundleError::TooMany),
        ];
        for (bytes, want) in cases {
            assert_eq!(split(bytes), Err(want.clone()), "{want}");
        }
        assert_eq!(split(&join(&vec![one; MAX_CAS])).unwrap().len(), MAX_CAS);
    }
}
