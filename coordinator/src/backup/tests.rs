use super::*;
use spillway_api::tokens::TokenRecord;

const PASS: &str = "correct horse battery staple";
/// Long enough never to turn up in ciphertext by chance.
const CA_KEY: &str = "-----BEGIN PRIVATE KEY----- the CA's key material -----";

fn pass() -> Passphrase {
    Passphrase::new(PASS).expect("passphrase")
}

/// A state folder as a coordinator leaves it: its store (with one join token), CA, tokens, two
/// blobs, and a blob's temporary file that a backup leaves out.
fn state(dir: &Path) -> Store {
    std::fs::create_dir_all(dir.join("ca")).expect("ca");
    std::fs::create_dir_all(dir.join("blobs")).expect("blobs");
    std::fs::write(dir.join("ca/ca.crt"), "CERT").expect("crt");
    std::fs::write(dir.join("ca/ca.key"), CA_KEY).expect("key");
    std::fs::write(dir.join("admin.token"), "a".repeat(32)).expect("token");
    std::fs::write(dir.join("presign.key"), [7u8; 32]).expect("presign");
    for blob in [&b"input one"[..], b"input two"] {
        std::fs::write(
            dir.join("blobs").join(hex::encode(Sha256::digest(blob))),
            blob,
        )
        .expect("blob");
    }
    std::fs::write(dir.join("blobs/.tmp-123"), "half a blob").expect("tmp");
    let store = Store::open(&dir.join(STORE)).expect("store");
    store
        .put_token(
            "hash-of-a-token",
            &TokenRecord {
                created_at_ms: 1,
                expires_at_ms: u64::MAX,
                description: "kept".into(),
                used_by: None,
                grant: Default::default(),
                revoked_at_ms: None,
            },
        )
        .expect("token");
    store
}

fn backup_of(dir: &Path, store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    write(dir, store, "c1", &pass(), &mut out).expect("backup");
    out
}

/// Encrypts a tar archive made by `build` as a backup would be: for archives a backup never
/// makes.
fn sealed(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    build(&mut tar);
    let plain = tar.into_inner().expect("tar");
    let mut out = Vec::new();
    let mut w = age::Encryptor::with_user_passphrase(SecretString::from(PASS.to_owned()))
        .wrap_output(&mut out)
        .expect("age");
    w.write_all(&plain).expect("write");
    w.finish().expect("finish");
    out
}

fn file(tar: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    // `append_data` would refuse `..`: a hostile archive is written by hand.
    let name_field = &mut h.as_old_mut().name;
    name_field[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    tar.append(&h, bytes).expect("append");
}

/// Every file a state folder must have, then `extra`, then a manifest that matches them all:
/// an archive refused only for what `extra` holds.
fn whole_state_with(t: &mut tar::Builder<Vec<u8>>, extra: &[(&str, &[u8])]) {
    let mut files: Vec<(&str, &[u8])> = vec![
        (STORE, b"x"),
        ("ca/ca.crt", b"c"),
        ("ca/ca.key", b"k"),
        ("admin.token", b"t"),
        ("presign.key", b"p"),
    ];
    files.extend_from_slice(extra);
    for (n, b) in &files {
        file(t, n, b);
    }
    file(t, MANIFEST, &manifest_of(&files));
}

fn manifest_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let manifest = Manifest {
        format: FORMAT,
        coordinator: "c1".into(),
        created_at_ms: 1,
        files: files
            .iter()
            .map(|(n, b)| {
                (
                    (*n).to_owned(),
                    FileSum {
                        size: b.len() as u64,
                        sha256: hex::encode(Sha256::digest(b)),
                    },
                )
            })
            .collect(),
    };
    serde_json::to_vec(&manifest).expect("json")
}

fn restore_into(bytes: &[u8], dir: &Path) -> Result<Restored, BackupError> {
    restore(bytes, &pass(), dir, false)
}

#[test]
fn a_backup_taken_while_the_store_is_open_restores_every_file_and_record() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (from, to) = (tmp.path().join("state"), tmp.path().join("restored"));
    let store = state(&from);
    let bytes = backup_of(&from, &store);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("age-encryption.org/v1\n-> scrypt "),
        "an age file"
    );
    assert!(
        !text.contains(CA_KEY) && !text.contains("hash-of-a-token"),
        "encrypted"
    );
    assert!(
        !from
            .read_dir()
            .expect("dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".backup")),
        "no working folder left behind"
    );

    let inspected = inspect(&bytes[..], &pass()).expect("a whole backup");
    assert_eq!(inspected.coordinator, "c1");
    assert_eq!(
        inspected.files.len(),
        7,
        "store, 4 keys, 2 blobs: {:?}",
        inspected.files.keys()
    );

    let restored = restore_into(&bytes, &to).expect("restore");
    assert_eq!(restored.manifest, inspected);
    assert_eq!(
        restored.manifest.blobs(),
        2,
        "the temporary file is left out"
    );
    assert!(restored.moved_aside.is_none());
    for name in ["ca/ca.crt", "ca/ca.key", "admin.token", "presign.key"] {
        assert_eq!(
            std::fs::read(to.join(name)).expect("restored"),
            std::fs::read(from.join(name)).expect("original"),
            "{name}"
        );
    }
    assert!(!to.join("blobs/.tmp-123").exists());
    let mode = std::fs::metadata(&to).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the state folder is its owner's only");
    let back = Store::open(&to.join(STORE)).expect("store opens");
    assert_eq!(back.tokens().expect("tokens")[0].description, "kept");
}

#[test]
fn a_backup_taken_during_a_ca_rotation_restores_the_new_ca_and_its_cross_certificate() {
    let (tmp_from, tmp_to) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (from, to) = (tmp_from.path().join("state"), tmp_to.path().join("state"));
    let store = state(&from);
    std::fs::create_dir_all(from.join("ca/rotation")).expect("rotation");
    for (name, bytes) in ROTATION_KEYS.iter().zip(["NEW CERT", "NEW KEY", "CROSS"]) {
        std::fs::write(from.join(name), bytes).expect("write");
    }
    let bytes = backup_of(&from, &store);
    restore_into(&bytes, &to).expect("restore");
    for name in ROTATION_KEYS {
        assert_eq!(
            std::fs::read(to.join(name)).expect("restored"),
            std::fs::read(from.join(name)).expect("original"),
            "{name}"
        );
    }
}

#[test]
fn a_wrong_passphrase_or_a_changed_byte_or_a_cut_file_restores_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let from = tmp.path().join("state");
    let store = state(&from);
    let bytes = backup_of(&from, &store);
    let to = tmp.path().join("restored");

    let err = restore(
        &bytes[..],
        &Passphrase::new("not the passphrase").expect("p"),
        &to,
        false,
    )
    .expect_err("wrong passphrase");
    assert!(matches!(err, BackupError::Decrypt(_)), "{err}");
    assert!(err.to_string().contains("a wrong passphrase"), "{err}");

    let mut changed = bytes.clone();
    let at = changed.len() / 2;
    changed[at] ^= 1;
    let err = restore_into(&changed, &to).expect_err("changed");
    assert!(
        matches!(err, BackupError::Decrypt(_) | BackupError::Damaged(_)),
        "{err}"
    );

    let err = restore_into(&bytes[..bytes.len() - 10], &to).expect_err("cut");
    assert!(
        matches!(err, BackupError::Decrypt(_) | BackupError::Damaged(_)),
        "{err}"
    );

    assert!(!to.exists(), "nothing was restored");
    let leftovers: Vec<_> = tmp
        .path()
        .read_dir()
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("restoring"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no working folder left behind: {leftovers:?}"
    );
}

#[test]
fn archives_a_backup_never_makes_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tmp");
    let to = tmp.path().join("restored");
    let outside = tmp.path().join("escape");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "is not a file of a coordinator's state folder",
            sealed(|t| file(t, "../escape", b"owned")),
        ),
        (
            "is not a regular file",
            sealed(|t| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                t.append_link(&mut h, "ca/ca.key", "/etc/shadow")
                    .expect("link");
            }),
        ),
        (
            "over",
            sealed(|t| file(t, "admin.token", &vec![b'a'; 2 << 20])),
        ),
        (
            "does not hash to its name",
            sealed(|t| {
                let name = format!("blobs/{}", "ab".repeat(32));
                whole_state_with(t, &[(name.as_str(), b"other")]);
            }),
        ),
        (
            "holds part of a CA rotation",
            sealed(|t| whole_state_with(t, &[("ca/rotation/ca.key", b"new key, no certificate")])),
        ),
        (
            "do not match its manifest",
            sealed(|t| {
                file(t, "admin.token", b"one");
                file(t, MANIFEST, &manifest_of(&[("admin.token", b"two")]));
            }),
        ),
        ("has no manifest", sealed(|t| file(t, "admin.token", b"t"))),
        (
            "comes after the manifest",
            sealed(|t| {
                file(t, MANIFEST, &manifest_of(&[]));
                file(t, "admin.token", b"t");
            }),
        ),
    ];
    for (says, bytes) in cases {
        let err = restore_into(&bytes, &to).expect_err(says);
        assert!(
            matches!(err, BackupError::Damaged(_)) && err.to_string().contains(says),
            "{says}: {err}"
        );
        assert!(err.to_string().contains("nothing was restored"), "{err}");
        inspect(&bytes[..bytes.len() - 10], &pass()).expect_err("a cut file is not a backup");
        assert!(!to.exists() && !outside.exists(), "{says}: nothing written");
    }
}

#[test]
fn a_restore_moves_an_existing_state_aside_only_when_forced_and_never_under_a_running_coordinator()
{
    let tmp = tempfile::tempdir().expect("tmp");
    let from = tmp.path().join("state");
    let store = state(&from);
    let bytes = backup_of(&from, &store);

    // The coordinator still runs on `state`: its store is locked.
    let err = restore(&bytes[..], &pass(), &from, true).expect_err("in use");
    assert!(matches!(err, BackupError::InUse(_)), "{err}");
    assert!(err.to_string().contains("stop it"), "{err}");
    drop(store);

    let to = tmp.path().join("other");
    std::fs::create_dir_all(&to).expect("dir");
    std::fs::write(to.join("notes.txt"), "the operator's").expect("notes");
    let err = restore_into(&bytes, &to).expect_err("not empty");
    assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert!(to.join("notes.txt").exists() && !to.join(STORE).exists());

    let restored = restore(&bytes[..], &pass(), &to, true).expect("forced");
    let aside = restored.moved_aside.expect("moved aside");
    assert_eq!(
        std::fs::read_to_string(aside.join("notes.txt")).expect("kept"),
        "the operator's"
    );
    assert!(to.join(STORE).exists() && !to.join("notes.txt").exists());
}

#[test]
fn a_short_passphrase_is_refused_and_never_printed() {
    let err = Passphrase::new("short").expect_err("short");
    assert!(
        err.to_string().contains("12 to 1024 characters, not 5"),
        "{err}"
    );
    assert_eq!(format!("{:?}", pass()), "Passphrase(..)");
}
