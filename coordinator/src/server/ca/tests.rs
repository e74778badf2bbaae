//! The CA's rotation on disk: every step survives a restart, and a crash between steps leaves
//! the state before or after it.

use super::*;

fn fp(der: &[u8]) -> String {
    hex::encode(spillway_link::identity::fingerprint(der))
}

#[test]
fn a_rotation_and_a_retirement_survive_restarts_and_keep_the_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let first = Authority::load_or_create(&ca_dir, "home").unwrap();
    let old = first.cert_der();
    let pin: [u8; 16] = first.fingerprint()[..16].try_into().unwrap();
    first.rotate().unwrap();
    let new = first.cert_der();
    assert_ne!(fp(&old), fp(&new));
    assert!(
        super::cert::subject(&new).contains("Spillway mesh CA (home, "),
        "{}",
        super::cert::subject(&new)
    );

    let again = Authority::load_or_create(&ca_dir, "home").unwrap();
    let trust = again.trust();
    assert_eq!(trust.cas(), vec![new.clone(), old.clone()]);
    // Old tokens still name a trusted CA; the signing one is the new.
    assert!(trust.accepts_pin(&pin));
    assert_eq!(
        again.fingerprint(),
        spillway_link::identity::fingerprint(&new)
    );
    assert!(matches!(again.rotate(), Err(CaError::Rotating)));

    again.retire().unwrap();
    assert_eq!(again.trust().cas(), vec![new.clone()]);
    assert!(!again.trust().accepts_pin(&pin));
    let after = Authority::load_or_create(&ca_dir, "home").unwrap();
    assert_eq!(after.trust().cas(), vec![new]);
    assert!(matches!(after.retire(), Err(CaError::NotRotating)));
    assert!(!ca_dir.join(ROTATION).exists());
    // The key stays its owner's.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca_dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_crash_mid_rotation_leaves_the_old_ca_and_one_mid_retirement_finishes_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let a = Authority::load_or_create(&ca_dir, "home").unwrap();
    let old = a.cert_der();
    // A rotation that never got renamed into place: dropped.
    let (half, _) = Ca::create("half-made").unwrap();
    half.write(&ca_dir.join(ROTATION_TMP)).unwrap();
    let b = Authority::load_or_create(&ca_dir, "home").unwrap();
    assert_eq!(b.trust().cas(), vec![old.clone()]);
    assert!(!ca_dir.join(ROTATION_TMP).exists());

    // A retirement marked but not carried out: finished.
    b.rotate().unwrap();
    let new = b.cert_der();
    std::fs::write(ca_dir.join(ROTATION).join(RETIRED), b"").unwrap();
    let c = Authority::load_or_create(&ca_dir, "home").unwrap();
    assert_eq!(c.trust().cas(), vec![new.clone()]);
    assert!(!ca_dir.join(ROTATION).exists());

    // Half way through: the new key already over the old one, the certificate not yet.
    c.rotate().unwrap();
    let newer = c.cert_der();
    std::fs::write(ca_dir.join(ROTATION).join(RETIRED), b"").unwrap();
    std::fs::copy(ca_dir.join(ROTATION).join("ca.key"), ca_dir.join("ca.key")).unwrap();
    let d = Authority::load_or_create(&ca_dir, "home").unwrap();
    assert_eq!(d.trust().cas(), vec![newer.clone()]);
    // Signing works with the key that goes with the certificate.
    let sig = d.sign(b"agent 2.0 aarch64").unwrap();
    spillway_link::signing::verify(&newer, b"agent 2.0 aarch64", &sig).unwrap();

    // Renamed to done, not yet removed: removed.
    std::fs::create_dir_all(ca_dir.join(ROTATION_DONE)).unwrap();
    Authority::load_or_create(&ca_dir, "home").unwrap();
    assert!(!ca_dir.join(ROTATION_DONE).exists());
}

#[test]
fn a_damaged_rotation_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let a = Authority::load_or_create(&ca_dir, "home").unwrap();
    a.rotate().unwrap();
    std::fs::write(ca_dir.join(ROTATION).join(CROSS_FILE), "not PEM").unwrap();
    let err = Authority::load_or_create(&ca_dir, "home").unwrap_err();
    assert!(err.to_string().contains("is damaged"), "{err}");
    assert!(
        err.to_string().contains("restore it from a backup"),
        "{err}"
    );
}

#[test]
fn listeners_present_the_new_chain_that_members_of_either_ca_verify() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::load_or_create(&dir.path().join("ca"), "home").unwrap();
    let old = a.cert_der();
    a.rotate().unwrap();
    let (chain, _) = identity(&a.trust(), &[]).unwrap();
    assert_eq!(chain.len(), 4, "leaf, new CA, cross certificate, old CA");
    spillway_link::tls::verifies_coordinator(&old, &chain).unwrap();
    spillway_link::tls::verifies_coordinator(&a.cert_der(), &chain).unwrap();
    a.retire().unwrap();
    let (chain, _) = identity(&a.trust(), &[]).unwrap();
    assert_eq!(chain.len(), 2);
    assert!(spillway_link::tls::verifies_coordinator(&old, &chain).is_err());
}
