use std::path::Path;

use super::*;

fn ca() -> (rcgen::KeyPair, Vec<u8>) {
    spillway_link::test_ca::ca("mesh CA").into_parts()
}

/// Stores `bytes` as they would arrive, in pieces.
fn store(dir: &Path, o: &UpgradeOrder, bytes: &[u8]) -> Result<Boot, Refusal> {
    let mut d = Download::begin(dir, o)?;
    for piece in bytes.chunks(7) {
        d.push(o, piece)?;
    }
    d.finish(dir, o)
}

fn check_binary(o: &UpgradeOrder, bytes: &[u8]) -> Result<(), Refusal> {
    let dir = tempfile::tempdir().expect("dir");
    store(dir.path(), o, bytes).map(|_| ())
}

fn elf(class: u8, machine: u16, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.max(20)];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = class;
    b[5] = 1;
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b
}

fn order(key: &rcgen::KeyPair, arch: &str, bytes: &[u8]) -> UpgradeOrder {
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let size = bytes.len() as u64;
    let message = UpgradeOrder::signed_message("9.9.9", arch, &sha256, size);
    UpgradeOrder {
        rollout: 1,
        version: "9.9.9".into(),
        arch: arch.into(),
        sha256,
        size,
        signature: spillway_link::signing::sign(key, &message).expect("sign"),
        ready_within_ms: 60_000,
    }
}

#[test]
fn a_signed_binary_for_this_node_is_stored_and_put_on_trial() {
    let (key, ca_der) = ca();
    let bytes = elf(2, 183, 4096);
    let o = order(&key, "aarch64", &bytes);
    check(&o, &ca_der, "aarch64").expect("order");
    let dir = tempfile::tempdir().expect("dir");
    let boot = store(dir.path(), &o, &bytes).expect("stored");
    let sha = hex::encode(o.sha256);
    assert_eq!(boot.on_trial(&sha).map(|t| t.starts), Some(0));
    let path = super::super::slot_path(dir.path(), &sha);
    assert_eq!(std::fs::read(&path).expect("slot"), bytes);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(super::super::load(dir.path()).expect("boot"), boot);
}

#[test]
fn orders_not_signed_by_the_mesh_ca_are_refused_before_anything_is_fetched() {
    let (key, ca_der) = ca();
    let (stranger, _) = ca();
    let bytes = elf(2, 183, 64);
    let forged = order(&stranger, "aarch64", &bytes);
    let err = check(&forged, &ca_der, "aarch64").expect_err("forged");
    assert!(
        err.to_string().contains("not signed by this mesh's CA"),
        "{err}"
    );
    // A signed order whose fields were changed afterwards.
    for tamper in [
        |o: &mut UpgradeOrder| o.version = "10.0.0".into(),
        |o: &mut UpgradeOrder| o.sha256[0] ^= 1,
        |o: &mut UpgradeOrder| o.size += 1,
    ] {
        let mut o = order(&key, "aarch64", &bytes);
        tamper(&mut o);
        assert!(matches!(
            check(&o, &ca_der, "aarch64"),
            Err(Refusal::Signature(_))
        ));
    }
}

#[test]
fn wrong_architecture_size_or_deadline_are_refused_with_what_was_wrong() {
    let (key, ca_der) = ca();
    let bytes = elf(2, 62, 64);
    let err = check(&order(&key, "x86_64", &bytes), &ca_der, "aarch64").expect_err("arch");
    assert_eq!(
        err.to_string(),
        "the binary is for x86_64, this node is aarch64"
    );
    let mut huge = order(&key, "aarch64", &bytes);
    huge.size = MAX_BINARY + 1;
    huge.signature = spillway_link::signing::sign(&key, &huge.message()).expect("sign");
    assert!(matches!(
        check(&huge, &ca_der, "aarch64"),
        Err(Refusal::Size(_))
    ));
    let mut rushed = order(&key, "aarch64", &bytes);
    rushed.ready_within_ms = 10;
    assert!(matches!(
        check(&rushed, &ca_der, "aarch64"),
        Err(Refusal::Deadline(10))
    ));
}

#[test]
fn fetched_bytes_must_be_the_signed_elf_for_the_signed_machine() {
    let (key, _) = ca();
    let good = elf(2, 183, 256);
    let o = order(&key, "aarch64", &good);
    let mut changed = good.clone();
    changed[100] = 1;
    assert!(
        check_binary(&o, &changed)
            .expect_err("changed")
            .to_string()
            .contains("SHA-256 differs")
    );
    assert!(
        check_binary(&o, &good[..200])
            .expect_err("short")
            .to_string()
            .contains("200 bytes instead of 256")
    );
    let mut long = good.clone();
    long.push(0);
    let err = check_binary(&o, &long).expect_err("long");
    assert!(
        err.to_string().contains("more than the signed 256 bytes"),
        "{err}"
    );
    // Nothing refused is left behind, not even the partial file, and nothing goes on trial.
    let dir = tempfile::tempdir().expect("dir");
    assert!(store(dir.path(), &o, &changed).is_err());
    let left = std::fs::read_dir(super::super::slots_dir(dir.path())).expect("slots");
    assert_eq!(left.count(), 0);
    assert!(
        super::super::load(dir.path())
            .expect("boot")
            .trial
            .is_none()
    );
    // Signed, but a script or an x86-64 binary: it could only fail at the restart.
    let script = b"#!/bin/sh\nexec /usr/bin/env true\n".to_vec();
    let err = check_binary(&order(&key, "aarch64", &script), &script).expect_err("script");
    assert!(err.to_string().contains("no ELF magic number"), "{err}");
    let x86 = elf(2, 62, 64);
    let err = check_binary(&order(&key, "aarch64", &x86), &x86).expect_err("x86");
    assert!(err.to_string().contains("it is built for x86_64"), "{err}");
    let arm32 = elf(1, 40, 64);
    check_binary(&order(&key, "arm", &arm32), &arm32).expect("armv7");
}

#[test]
fn a_binary_is_taken_only_with_its_size_again_to_spare() {
    let (key, _) = ca();
    let o = order(&key, "aarch64", &elf(2, 183, 1000));
    check_room(&o, 2000).expect("room");
    let err = check_room(&o, 1999).expect_err("full");
    assert!(err.to_string().contains("no room for the binary"), "{err}");
}

#[test]
fn stored_binaries_the_boot_record_no_longer_names_are_removed() {
    let (key, _) = ca();
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (elf(2, 183, 100), elf(2, 183, 101));
    let boot_a = store(dir.path(), &order(&key, "aarch64", &a), &a).expect("a");
    let mut boot = store(dir.path(), &order(&key, "aarch64", &b), &b).expect("b");
    // The trial of b replaced a's: a is named nowhere.
    assert!(boot_a.on_trial(&hex::encode(Sha256::digest(&a))).is_some());
    boot.choose();
    boot.commit();
    remove_unused(dir.path(), &boot);
    let slots: Vec<_> = std::fs::read_dir(super::super::slots_dir(dir.path()))
        .expect("slots")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(slots, vec![hex::encode(Sha256::digest(&b))]);
}
