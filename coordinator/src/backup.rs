//! Backups of a coordinator's state folder, and their restore.
//!
//! A backup is a tar archive encrypted with [age](https://age-encryption.org) under an operator
//! passphrase (scrypt), so `age -d` opens it too. It holds a consistent copy of the store (one
//! read transaction, taken while the coordinator runs: see [`Store::snapshot`]), the CA's
//! certificate and key, the admin token, the presigning key and the blobs of open hand-overs;
//! its last entry is a manifest with every file's size and SHA-256.
//!
//! Restoring is done with the coordinator stopped. Everything is checked before anything is put
//! in place: age authenticates every 64 KiB chunk and the end of the file (a wrong passphrase, a
//! changed byte or a cut file fails), the archive may hold only the files a state folder has
//! (regular files, known names, bounded sizes), every file must match the manifest, every blob
//! its digest, and the store must open as a coordinator's. Only then is the folder swapped in,
//! the old one moved aside. Agents keep their certificates: the CA and their node records come
//! back as they were, so they reconnect without joining again.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::server::store::{Store, StoreError};

/// The backup layout this coordinator writes and reads.
pub const FORMAT: u32 = 1;
/// The last entry: what the archive holds.
const MANIFEST: &str = "spillway-backup.json";
/// The store's copy.
const STORE: &str = "coordinator.redb";
/// Small files of the state folder a coordinator cannot do without.
const KEYS: [&str; 4] = ["ca/ca.crt", "ca/ca.key", "admin.token", "presign.key"];
/// During a CA rotation: the new CA and its cross certificate (all three, or none).
const ROTATION_KEYS: [&str; 3] = [
    "ca/rotation/ca.crt",
    "ca/rotation/ca.key",
    "ca/rotation/cross.crt",
];
/// Bounds on what a restore accepts: a key file or the manifest, any one file, all of them.
const MAX_SMALL: u64 = 1 << 20;
const MAX_FILE: u64 = 64 << 30;
const MAX_TOTAL: u64 = 256 << 30;
const MAX_ENTRIES: usize = 1_000_000;
/// Passphrase length bounds, in characters.
pub const MIN_PASSPHRASE: usize = 12;
pub const MAX_PASSPHRASE: usize = 1024;

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum BackupError {
    /// a backup passphrase has 12 to 1024 characters, not {0}; choose a longer one (a few words) and keep it apart from the backups
    Passphrase(usize),
    /// cannot read {path}: {source}
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// cannot write {path}: {source}
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// cannot write the backup out: {0}
    Output(std::io::Error),
    /// {0}
    Store(#[from] StoreError),
    /// cannot decrypt the backup: {0} (a wrong passphrase, or not a Spillway backup); nothing was restored
    Decrypt(String),
    /// the backup is damaged or was changed: {0}; nothing was restored
    Damaged(String),
    /// {0} already holds a coordinator's state: restore into an empty folder, or pass --force to move the old state aside first
    NotEmpty(PathBuf),
    /// a coordinator is running on {0}: stop it (systemctl stop spillway-coordinator) before restoring
    InUse(PathBuf),
}

/// An operator's passphrase, checked for length, never printed.
pub struct Passphrase(SecretString);

impl Passphrase {
    pub fn new(text: &str) -> Result<Self, BackupError> {
        let n = text.chars().count();
        if !(MIN_PASSPHRASE..=MAX_PASSPHRASE).contains(&n) {
            return Err(BackupError::Passphrase(n));
        }
        Ok(Self(SecretString::from(text.to_owned())))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// What a backup holds: its last entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The coordinator's name (`name` in coordinator.toml).
    pub coordinator: String,
    pub created_at_ms: u64,
    pub files: BTreeMap<String, FileSum>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub size: u64,
    /// Hex.
    pub sha256: String,
}

impl Manifest {
    pub fn blobs(&self) -> usize {
        self.files
            .keys()
            .filter(|k| k.starts_with("blobs/"))
            .count()
    }

    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

/// Writes an encrypted backup of the state folder `dir` (whose open store is `store`) to `out`.
/// Runs beside a working coordinator; blocking (call it off the async workers).
pub fn write(
    dir: &Path,
    store: &Store,
    coordinator: &str,
    passphrase: &Passphrase,
    out: impl Write,
) -> Result<Manifest, BackupError> {
    let scratch = Scratch::create(dir.join(format!(".backup-{}", unique())))?;
    let snapshot = scratch.0.join(STORE);
    store.snapshot(&snapshot)?;
    let mut files = vec![(STORE.to_owned(), snapshot)];
    files.extend(KEYS.iter().map(|k| ((*k).to_owned(), dir.join(k))));
    if dir.join(ROTATION_KEYS[1]).exists() {
        files.extend(ROTATION_KEYS.iter().map(|k| ((*k).to_owned(), dir.join(k))));
    }
    files.extend(blobs(&dir.join("blobs"))?);

    let sealed = age::Encryptor::with_user_passphrase(passphrase.0.clone())
        .wrap_output(out)
        .map_err(BackupError::Output)?;
    let mut tar = tar::Builder::new(sealed);
    let mut manifest = Manifest {
        format: FORMAT,
        coordinator: coordinator.to_owned(),
        created_at_ms: crate::server::now_ms(),
        files: BTreeMap::new(),
    };
    for (name, path) in files {
        let file = match open_nofollow(&path) {
            Ok(f) => f,
            // A blob of a hand-over that ended meanwhile: not needed any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.starts_with("blobs/") => {
                continue;
            }
            Err(source) => return Err(BackupError::Read { path, source }),
        };
        let read_err = |source| BackupError::Read {
            path: path.clone(),
            source,
        };
        let size = file.metadata().map_err(read_err)?.len();
        let mut header = entry_header(size, manifest.created_at_ms);
        let mut hashed = Hashing::new(file.take(size));
        tar.append_data(&mut header, &name, &mut hashed)
            .map_err(BackupError::Output)?;
        if hashed.read != size {
            return Err(read_err(std::io::Error::other(format!(
                "it changed while it was being read ({size} bytes, then {})",
                hashed.read
            ))));
        }
        manifest.files.insert(
            name,
            FileSum {
                size,
                sha256: hashed.finish(),
            },
        );
    }
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let mut header = entry_header(json.len() as u64, manifest.created_at_ms);
    tar.append_data(&mut header, MANIFEST, json.as_slice())
        .map_err(BackupError::Output)?;
    let sealed = tar.into_inner().map_err(BackupError::Output)?;
    sealed
        .finish()
        .and_then(|mut out| out.flush())
        .map_err(BackupError::Output)?;
    Ok(manifest)
}

/// Reads a whole backup without writing anything: decrypts it, checks every file against its
/// manifest and every blob against its name. What `spillway admin backup` does to the file it
/// downloaded before it says it has a backup.
pub fn inspect(input: impl Read, passphrase: &Passphrase) -> Result<Manifest, BackupError> {
    let mut plain = decrypt(input, passphrase)?;
    let (manifest, seen) = unpack(&mut plain, None)?;
    check(&manifest, &seen)?;
    Ok(manifest)
}

fn decrypt<'a>(
    input: impl Read + 'a,
    passphrase: &Passphrase,
) -> Result<impl Read + 'a, BackupError> {
    let decryptor = age::Decryptor::new(input).map_err(|e| BackupError::Decrypt(e.to_string()))?;
    let identity = age::scrypt::Identity::new(passphrase.0.clone());
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| BackupError::Decrypt(e.to_string()))
}

/// The header of a private file of `size` bytes in the archive.
fn entry_header(size: u64, created_at_ms: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(created_at_ms / 1000);
    header
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the folder's earlier content went (`--force`).
    pub moved_aside: Option<PathBuf>,
}

/// Restores the backup read from `input` into the state folder `dir`, which must be empty or
/// absent unless `force` (then its content is moved aside, never deleted). The coordinator must
/// be stopped. Nothing in `dir` changes unless the whole backup checks out.
pub fn restore(
    input: impl Read,
    passphrase: &Passphrase,
    dir: &Path,
    force: bool,
) -> Result<Restored, BackupError> {
    let occupied = occupied(dir)?;
    if occupied && !force {
        return Err(BackupError::NotEmpty(dir.to_owned()));
    }
    let mut plain = decrypt(input, passphrase)?;
    let name = dir
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| BackupError::Write {
        path: parent.to_owned(),
        source,
    })?;
    let staging = Scratch::create(parent.join(format!(".{name}.restoring-{}", unique())))?;
    let (manifest, seen) = unpack(&mut plain, Some(&staging.0))?;
    check(&manifest, &seen)?;
    // The store must read as a coordinator's (every node, function and token decodes).
    drop(Store::open(&staging.0.join(STORE)).map_err(|e| {
        BackupError::Damaged(format!("its store does not open as a coordinator's: {e}"))
    })?);
    sync_folder(&staging.0)?;
    let moved_aside = if occupied {
        let aside = parent.join(format!("{name}.before-restore-{}", crate::server::now_ms()));
        std::fs::rename(dir, &aside).map_err(|source| BackupError::Write {
            path: dir.to_owned(),
            source,
        })?;
        Some(aside)
    } else {
        // An empty folder (made by the operator, perhaps with its owner set): replaced.
        let _ = std::fs::remove_dir(dir);
        None
    };
    std::fs::rename(&staging.0, dir).map_err(|source| BackupError::Write {
        path: dir.to_owned(),
        source,
    })?;
    staging.keep();
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(Restored {
        manifest,
        moved_aside,
    })
}

/// Whether `dir` holds anything; refused when a coordinator is running on it.
fn occupied(dir: &Path) -> Result<bool, BackupError> {
    let store = dir.join(STORE);
    if std::fs::symlink_metadata(&store).is_ok() {
        // Read-only: never repairs or changes the file. Damaged or fine, it is moved aside.
        if let Err(redb::DatabaseError::DatabaseAlreadyOpen) = redb::ReadOnlyDatabase::open(&store)
        {
            return Err(BackupError::InUse(dir.to_owned()));
        }
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(BackupError::Read {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Reads the archive, into the folder `into` if given, each file checked against what a state
/// folder may hold; returns the manifest and what was found. Reads the decrypted stream to its
/// end: only then has age checked the whole file.
fn unpack(
    plain: &mut impl Read,
    into: Option<&Path>,
) -> Result<(Manifest, BTreeMap<String, FileSum>), BackupError> {
    let damaged = |m: String| BackupError::Damaged(m);
    let mut seen = BTreeMap::new();
    let mut manifest = None;
    let (mut total, mut count) = (0u64, 0usize);
    {
        let mut archive = tar::Archive::new(&mut *plain);
        let entries = archive
            .entries()
            .map_err(|e| damaged(format!("not an archive ({e})")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| damaged(format!("unreadable entry ({e})")))?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(damaged(format!("more than {MAX_ENTRIES} entries")));
            }
            let name = String::from_utf8(entry.path_bytes().into_owned())
                .map_err(|_| damaged("an entry's name is not UTF-8".into()))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(damaged(format!("`{name}` is not a regular file")));
            }
            let size = entry
                .header()
                .size()
                .map_err(|e| damaged(format!("`{name}`: {e}")))?;
            if manifest.is_some() {
                return Err(damaged(format!("`{name}` comes after the manifest")));
            }
            if name == MANIFEST {
                if size > MAX_SMALL {
                    return Err(damaged(format!("its manifest is {size} bytes")));
                }
                let mut json = Vec::new();
                entry
                    .read_to_end(&mut json)
                    .map_err(|e| damaged(format!("its manifest: {e}")))?;
                manifest = Some(
                    serde_json::from_slice::<Manifest>(&json)
                        .map_err(|e| damaged(format!("its manifest: {e}")))?,
                );
                continue;
            }
            let limit = allowed(&name).ok_or_else(|| {
                damaged(format!(
                    "`{name}` is not a file of a coordinator's state folder"
                ))
            })?;
            if size > limit {
                return Err(damaged(format!("`{name}` is {size} bytes, over {limit}")));
            }
            total += size;
            if total > MAX_TOTAL {
                return Err(damaged(format!("it holds more than {MAX_TOTAL} bytes")));
            }
            if seen.contains_key(&name) {
                return Err(damaged(format!("`{name}` appears twice")));
            }
            let mut out: Box<dyn Write> = match into {
                Some(folder) => Box::new(create(&folder.join(&name))?),
                None => Box::new(std::io::sink()),
            };
            let mut hashed = Hashing::new((&mut entry).take(size));
            std::io::copy(&mut hashed, &mut out).map_err(|e| damaged(format!("`{name}`: {e}")))?;
            if hashed.read != size {
                return Err(damaged(format!("`{name}` is cut short")));
            }
            seen.insert(
                name,
                FileSum {
                    size,
                    sha256: hashed.finish(),
                },
            );
        }
    }
    // The archive's end is not the file's: what follows (tar's padding) must authenticate too.
    std::io::copy(plain, &mut std::io::sink())
        .map_err(|e| BackupError::Decrypt(format!("its end: {e}")))?;
    let manifest = manifest.ok_or_else(|| damaged("it has no manifest".into()))?;
    Ok((manifest, seen))
}

/// The manifest agrees with the files, names a layout this coordinator reads, and holds what a
/// coordinator needs; every blob is what its name says.
fn check(manifest: &Manifest, seen: &BTreeMap<String, FileSum>) -> Result<(), BackupError> {
    let damaged = |m: String| BackupError::Damaged(m);
    if manifest.format != FORMAT {
        return Err(damaged(format!(
            "it is backup format {}, and this spillway reads format {FORMAT}",
            manifest.format
        )));
    }
    if &manifest.files != seen {
        let differ: Vec<&String> = manifest
            .files
            .keys()
            .chain(seen.keys())
            .filter(|k| manifest.files.get(*k) != seen.get(*k))
            .collect();
        return Err(damaged(format!(
            "its files do not match its manifest: {differ:?}"
        )));
    }
    for needed in std::iter::once(&STORE).chain(KEYS.iter()) {
        if !seen.contains_key(*needed) {
            return Err(damaged(format!("it has no `{needed}`")));
        }
    }
    let rotation = ROTATION_KEYS
        .iter()
        .filter(|k| seen.contains_key(**k))
        .count();
    if rotation != 0 && rotation != ROTATION_KEYS.len() {
        return Err(damaged(format!(
            "it holds part of a CA rotation ({rotation} of {:?})",
            ROTATION_KEYS
        )));
    }
    for (name, sum) in seen {
        if let Some(digest) = name.strip_prefix("blobs/")
            && digest != sum.sha256
        {
            return Err(damaged(format!("`{name}` does not hash to its name")));
        }
    }
    Ok(())
}

/// The largest size a state folder's file of this name may have; `None`: not one of its files.
fn allowed(name: &str) -> Option<u64> {
    if name == STORE {
        return Some(MAX_FILE);
    }
    if KEYS.contains(&name) || ROTATION_KEYS.contains(&name) {
        return Some(MAX_SMALL);
    }
    let digest = name.strip_prefix("blobs/")?;
    (digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(MAX_FILE)
}

/// The blobs in `dir`: files named by their digest (temporary files and anything else left out).
fn blobs(dir: &Path) -> Result<Vec<(String, PathBuf)>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(BackupError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = format!("blobs/{}", entry.file_name().to_string_lossy());
        if allowed(&name).is_some() && entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A new private file (never an existing one, never through a symlink), its folder made.
fn create(path: &Path) -> Result<std::fs::File, BackupError> {
    let write_err = |path: &Path, source| BackupError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(|e| write_err(folder, e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| write_err(path, e))
}

fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Flushes a restored folder's files before it is swapped in.
fn sync_folder(dir: &Path) -> Result<(), BackupError> {
    let sync = || -> std::io::Result<()> {
        let folder = std::fs::File::open(dir)?;
        nix::unistd::syncfs(&folder)?;
        Ok(())
    };
    sync().map_err(|source| BackupError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private working folder, removed with what it holds unless kept.
struct Scratch(PathBuf, bool);

impl Scratch {
    fn create(path: PathBuf) -> Result<Self, BackupError> {
        std::fs::create_dir(&path).map_err(|source| BackupError::Write {
            path: path.clone(),
            source,
        })?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
        Ok(Self(path, true))
    }

    fn keep(mut self) {
        self.1 = false;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
