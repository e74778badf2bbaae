//! CAs sent by a coordinator: stored only when they are bounded, well-formed and still verify
//! the coordinator this node is linked to; every refusal leaves the stored CAs as they were.

use spillway_link::bundle::join;
use spillway_link::test_ca::ca;

use super::*;

/// A node that joined under `old`, its identity stored in a temporary state folder.
fn joined(old: &[u8]) -> (tempfile::TempDir, Membership) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_der, key_der) = ca("unused").member();
    let m = Membership {
        coordinator: "127.0.0.1:7443".into(),
        ca_der: old.to_vec(),
        cert_der,
        key_der,
    };
    m.save(dir.path()).unwrap();
    (dir, m)
}

#[test]
fn the_cas_of_a_rotation_are_stored_once_and_acknowledged_by_fingerprint() {
    let (old, new) = (ca("mesh CA"), ca("mesh CA 2"));
    let (leaf, _) = new.server();
    let presented = [leaf, new.der.clone(), old.cross_sign(&new), old.der.clone()];
    let (dir, m) = joined(&old.der);
    let cas = vec![new.der.clone(), old.der.clone()];
    let Ok(Adopted::Changed(next, _)) = adopt(dir.path(), &m, &cas, &presented) else {
        panic!("the rotation's CAs were not adopted");
    };
    assert_eq!(next.ca_der, join(&cas));
    assert_eq!(Membership::load(dir.path()).unwrap().ca_der, join(&cas));
    assert_eq!(
        fingerprints(&next.ca_der),
        vec![
            spillway_link::identity::fingerprint(&new.der),
            spillway_link::identity::fingerprint(&old.der)
        ]
    );
    assert!(matches!(
        adopt(dir.path(), &next, &cas, &presented),
        Ok(Adopted::Unchanged)
    ));
}

#[test]
fn cas_that_would_lock_the_node_out_or_are_malformed_are_refused_and_nothing_is_stored() {
    let (old, stranger) = (ca("mesh CA"), ca("someone else"));
    let (leaf, _) = old.server();
    let presented = [leaf, old.der.clone()];
    let (dir, m) = joined(&old.der);
    let mut two_in_one = old.der.clone();
    two_in_one.extend_from_slice(&stranger.der);
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![], "1 to 8 expected"),
        (vec![old.der.clone(); 9], "1 to 8 expected"),
        (vec![vec![0x30; 20_000]], "over 16384 bytes"),
        (vec![b"not DER".to_vec()], "not DER"),
        (vec![two_in_one], "not exactly one certificate"),
        (
            vec![stranger.der.clone()],
            "do not verify the coordinator this node is linked to",
        ),
    ];
    for (cas, want) in cases {
        let Err(why) = adopt(dir.path(), &m, &cas, &presented) else {
            panic!("adopted {} CAs that should be refused ({want})", cas.len());
        };
        assert!(why.contains(want), "{why} (wanted: {want})");
        assert_eq!(Membership::load(dir.path()).unwrap().ca_der, old.der);
    }
}

#[test]
fn a_certificate_failure_after_a_missed_rotation_says_to_join_again() {
    let unknown = explain_connect_error(
        "cannot connect to 10.0.0.1:7443: the cryptographic handshake failed: invalid peer certificate: UnknownIssuer",
    );
    assert!(unknown.contains("join again"), "{unknown}");
    let refused = explain_connect_error(
        "cannot connect to 10.0.0.1:7443: aborted by peer: the cryptographic handshake failed: error 48",
    );
    assert!(
        refused.contains("refused this node's certificate"),
        "{refused}"
    );
    assert_eq!(explain_connect_error("timed out"), "timed out");
}
