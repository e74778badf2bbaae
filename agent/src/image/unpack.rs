//! Applying one image layer onto a root filesystem: gzip or plain tar, OCI whiteouts
//! (`.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` hides a directory's lower
//! content), and nothing touched outside the root. Every create, remove, whiteout and type change
//! is resolved beneath the root without following symbolic links ([`crate::beneath`]): a layer's
//! own links are image contents, stored as they are and never followed while unpacking, so an
//! entry, a whiteout or an opaque marker behind a link is refused with the layer. Sizes, entry
//! counts and path depths are bounded, so a decompression bomb stops at the bound.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::beneath::{Beneath, BeneathError, Kind, relative};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What one image may unpack to: bytes of file contents, entries, and path depth. Far above any
/// real image (the largest official images are a few GiB in well under a million files).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub bytes: u64,
    pub entries: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            bytes: 16 << 30,
            entries: 1_000_000,
        }
    }
}

const MAX_DEPTH: usize = 256;

/// Applies a (possibly gzipped) tar layer onto `root`, spending `budget`. Errors are sentences
/// for the user.
pub fn apply_layer(
    mut reader: impl BufRead,
    root: &Path,
    budget: &mut Budget,
) -> Result<(), String> {
    let magic = reader
        .fill_buf()
        .map_err(|e| format!("cannot read it: {e}"))?;
    let stream: Box<dyn Read> = match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::GzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            return Err("it is zstd-compressed, which this agent does not unpack yet; push the image with gzip layers (`skopeo copy --dest-compress-format gzip …`)".to_owned());
        }
        _ => Box::new(reader),
    };
    let root = Beneath::open(root).map_err(|e| e.to_string())?;
    let as_root = nix::unistd::Uid::effective().is_root();
    let (stream, allowance) = super::tar_guard::Allowance::wrap(stream);
    let mut archive = tar::Archive::new(stream);
    // Paths this layer wrote: an opaque marker hides only what lower layers put there.
    let mut mine: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| format!("the tar stream is truncated or corrupt: {e}"))?;
        allowance.entry(entry.size());
        budget.entries = budget.entries.checked_sub(1).ok_or_else(|| {
            format!(
                "it has more than {} entries; that is not an image a node unpacks",
                Budget::default().entries
            )
        })?;
        let raw = entry
            .path()
            .map_err(|e| format!("an entry has an unreadable name: {e}"))?
            .into_owned();
        let Some(rel) = relative(&raw) else {
            return Err(format!(
                "entry `{}` points outside the image root; the image is malformed or malicious",
                raw.display()
            ));
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        if rel.components().count() > MAX_DEPTH {
            return Err(format!(
                "entry `{}` is more than {MAX_DEPTH} folders deep; the image is malformed or malicious",
                raw.display()
            ));
        }
        let name = rel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == OPAQUE {
            clear_lower(&root, &parent, &mine).map_err(|e| refused(&raw, &e))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if hidden.starts_with(WHITEOUT) {
                // Other `.wh..wh.` names are aufs bookkeeping, not whiteouts: skipped, as Docker does.
                continue;
            }
            if matches!(hidden, "" | "." | "..") || hidden.contains('/') {
                return Err(format!(
                    "whiteout `{}` names no file; the image is malformed or malicious",
                    raw.display()
                ));
            }
            root.remove_all(&parent.join(hidden))
                .map_err(|e| refused(&raw, &e))?;
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            // Containers get a fresh /dev; device nodes in layers are not needed.
            continue;
        }
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let size = entry.size();
        budget.bytes = budget.bytes.checked_sub(size).ok_or_else(|| {
            format!(
                "it unpacks to more than {} GiB; that is not an image a node unpacks",
                Budget::default().bytes >> 30
            )
        })?;
        write_entry(&root, &rel, &mut entry, as_root).map_err(|e| refused(&raw, &e))?;
        mine.insert(rel);
    }
    Ok(())
}

/// The refusal of a layer because of one entry.
fn refused(raw: &Path, e: &BeneathError) -> String {
    match e {
        BeneathError::Symlink { .. } => format!(
            "entry `{}` leads through a symbolic link of the image; the image is malformed or malicious",
            raw.display()
        ),
        other => format!("cannot write `{}`: {other}", raw.display()),
    }
}

/// Writes one entry (file, folder, link) at `rel`, replacing what lower layers had there.
fn write_entry(
    root: &Beneath,
    rel: &Path,
    entry: &mut tar::Entry<'_, impl Read>,
    as_root: bool,
) -> Result<(), BeneathError> {
    let header = entry.header();
    let kind = header.entry_type();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let (uid, gid) = (
        header.uid().unwrap_or(0).try_into().unwrap_or(0),
        header.gid().unwrap_or(0).try_into().unwrap_or(0),
    );
    let mtime = header.mtime().unwrap_or(0);
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty())
        && root.kind(parent)?.is_none()
    {
        root.mkdir_all(parent, 0o755)?;
    }
    let existing = root.kind(rel)?;
    // A folder stays a folder (its content merges); anything else is replaced whole.
    if existing.is_some() && !(kind.is_dir() && existing == Some(Kind::Dir)) {
        root.remove_all(rel)?;
    }
    // A binary mtime field can hold any u64: past what the clock holds, the epoch.
    let modified = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(mtime))
        .unwrap_or(std::time::UNIX_EPOCH);
    let times = std::fs::FileTimes::new().set_modified(modified);
    if kind.is_dir() {
        if existing != Some(Kind::Dir) {
            root.mkdir(rel, 0o700)?;
        }
        if as_root {
            root.chown(rel, uid, gid)?;
        }
        let dir = root.open_dir(rel)?;
        finish(root, rel, &dir, mode, times)
    } else if kind.is_symlink() {
        let target = entry
            .link_name()
            .ok()
            .flatten()
            .ok_or_else(|| bad(root, rel, "symbolic link without a target"))?;
        root.symlink(rel, &target)?;
        if as_root {
            root.chown(rel, uid, gid)?;
        }
        Ok(())
    } else if kind.is_hard_link() {
        let target = entry
            .link_name()
            .ok()
            .flatten()
            .and_then(|t| relative(&t))
            .ok_or_else(|| bad(root, rel, "hard link to a file outside the image"))?;
        root.hard_link(rel, &target)
    } else if kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse() {
        let mut file = root.create_file(rel, 0o600)?;
        std::io::copy(entry, &mut file).map_err(|source| BeneathError::Io {
            action: "write",
            root: root.path().to_owned(),
            path: rel.to_owned(),
            source,
        })?;
        if as_root {
            nix::unistd::fchown(&file, Some(uid.into()), Some(gid.into())).map_err(|e| {
                BeneathError::Io {
                    action: "change the owner of",
                    root: root.path().to_owned(),
                    path: rel.to_owned(),
                    source: e.into(),
                }
            })?;
        }
        finish(root, rel, &file, mode, times)
    } else {
        // Other tar entry kinds carry no file of an image.
        Ok(())
    }
}

/// Sets the exact mode (after the owner: a change of owner clears set-id bits) and times.
fn finish(
    root: &Beneath,
    rel: &Path,
    file: &std::fs::File,
    mode: u32,
    times: std::fs::FileTimes,
) -> Result<(), BeneathError> {
    let io = |action, source| BeneathError::Io {
        action,
        root: root.path().to_owned(),
        path: rel.to_owned(),
        source,
    };
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode of", e))?;
    file.set_times(times).map_err(|e| io("set the times of", e))
}

fn bad(root: &Beneath, rel: &Path, what: &str) -> BeneathError {
    BeneathError::Io {
        action: "unpack",
        root: root.path().to_owned(),
        path: rel.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()),
    }
}

/// Removes what lower layers put in the folder `dir` (an opaque marker), keeping this layer's.
fn clear_lower(root: &Beneath, dir: &Path, mine: &HashSet<PathBuf>) -> Result<(), BeneathError> {
    let names = match root.read_dir(dir) {
        Ok(names) => names,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        let child = dir.join(&name);
        if !mine.contains(&child) {
            root.remove_all(&child)?;
        }
    }
    Ok(())
}

/// Mount points every container needs, so a read-only root still takes its mounts. Whatever
/// the image has there that is not a folder (a link to the host's `/proc`, say) is replaced.
pub fn prepare_mount_points(root: &Path) -> Result<(), BeneathError> {
    let root = Beneath::open(root)?;
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
    ] {
        let path = Path::new(dir);
        match root.kind(path)? {
            Some(Kind::Dir) => continue,
            Some(_) => root.remove_all(path)?,
            None => {}
        }
        root.mkdir(path, 0o700)?;
        let opened = root.open_dir(path)?;
        opened
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|source| BeneathError::Io {
                action: "set the mode of",
                root: root.path().to_owned(),
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar layer made by `build` (also used by the store's tests).
    pub(crate) fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("tar")
    }

    /// A regular file owned by root, mode 0644.
    pub(crate) fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, body).expect("append");
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Directory);
        b.append_data(&mut h, path, &[][..]).expect("append");
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    fn apply(layer: &[u8], root: &Path) -> Result<(), String> {
        apply_layer(layer, root, &mut Budget::default())
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        b.append_link(&mut h, path, target).expect("link");
    }

    /// A raw entry whose name `tar::Builder` would refuse (`..`, odd whiteouts).
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(kind);
        h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &[][..]).expect("append");
    }

    /// A folder outside every image root, with files an attacker would like to delete.
    struct Sentinel {
        dir: PathBuf,
        before: Vec<(PathBuf, Vec<u8>)>,
    }

    impl Sentinel {
        fn new(base: &Path) -> Self {
            let dir = base.join("host");
            std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
            std::fs::write(dir.join("file"), b"precious").expect("write");
            std::fs::write(dir.join("sub/deep"), b"also precious").expect("write");
            let before = Self::snapshot(&dir);
            Self { dir, before }
        }

        fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
            let mut all: Vec<_> = walkdir::WalkDir::new(dir)
                .into_iter()
                .flatten()
                .map(|e| {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    (e.path().to_owned(), bytes)
                })
                .collect();
            all.sort();
            all
        }

        fn assert_intact(&self) {
            assert_eq!(
                Self::snapshot(&self.dir),
                self.before,
                "the host tree changed"
            );
        }
    }

    /// Unpacks `layers` into a fresh root next to a sentinel tree; returns the outcome of the
    /// last layer (the earlier ones must succeed).
    fn hostile(layers: &[Vec<u8>]) -> (String, Sentinel, tempfile::TempDir) {
        let base = tempfile::tempdir().expect("tmp");
        let sentinel = Sentinel::new(base.path());
        let root = base.path().join("images/rootfs/one");
        std::fs::create_dir_all(&root).expect("root");
        let (last, lower) = layers.split_last().expect("layers");
        for l in lower {
            apply(l, &root).expect("lower layer");
        }
        let err = apply(last, &root).expect_err("the hostile layer is refused");
        (err, sentinel, base)
    }

    #[test]
    fn whiteouts_and_opaque_markers_behind_an_image_symlink_are_refused_and_the_host_is_untouched()
    {
        for marker in ["esc/.wh.file", "esc/.wh.sub", "esc/.wh..wh..opq"] {
            let base = tempfile::tempdir().expect("tmp");
            let sentinel = Sentinel::new(base.path());
            let root = base.path().join("root");
            std::fs::create_dir_all(&root).expect("root");
            let evil = layer(|b| {
                link(
                    b,
                    tar::EntryType::Symlink,
                    "esc",
                    &sentinel.dir.to_string_lossy(),
                );
                file(b, marker, b"");
            });
            let err = apply(&evil, &root).expect_err(marker);
            assert!(
                err.contains("leads through a symbolic link") && err.contains(marker),
                "{marker}: {err}"
            );
            sentinel.assert_intact();
        }
    }

    #[test]
    fn a_symlink_planted_by_a_lower_layer_cannot_carry_a_later_layer_out() {
        let base = tempfile::tempdir().expect("tmp");
        let sentinel = Sentinel::new(base.path());
        let root = base.path().join("root");
        std::fs::create_dir_all(&root).expect("root");
        let target = sentinel.dir.to_string_lossy().into_owned();
        apply(
            &layer(|b| link(b, tar::EntryType::Symlink, "esc", &target)),
            &root,
        )
        .expect("a link is image content");
        for evil in [
            layer(|b| file(b, "esc/.wh.file", b"")),
            layer(|b| file(b, "esc/new", b"x")),
            // A folder replacing a file, through the link.
            layer(|b| dir(b, "esc/file")),
            layer(|b| link(b, tar::EntryType::Symlink, "esc/sub/x", "/")),
        ] {
            let err = apply(&evil, &root).expect_err("refused");
            assert!(err.contains("symbolic link"), "{err}");
        }
        sentinel.assert_intact();
        // The link itself is still image content, as the image made it.
        assert_eq!(
            std::fs::read_link(root.join("esc")).expect("link"),
            sentinel.dir
        );
    }

    #[test]
    fn whiteouts_naming_nothing_or_a_parent_are_refused_and_other_images_survive() {
        for name in [&b"a/.wh..\0"[..], b".wh...\0", b".wh.\0"] {
            let lower = layer(|b| {
                dir(b, "a");
                file(b, "a/keep", b"k");
            });
            let mut b = tar::Builder::new(Vec::new());
            raw(&mut b, name, tar::EntryType::Regular);
            let evil = b.into_inner().expect("tar");
            let (err, sentinel, base) = hostile(&[lower, evil]);
            assert!(err.contains("names no file"), "{err}");
            sentinel.assert_intact();
            let root = base.path().join("images/rootfs/one");
            assert_eq!(std::fs::read(root.join("a/keep")).expect("kept"), b"k");
        }
    }

    #[test]
    fn hard_links_may_not_point_outside_the_image() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o644);
        h.as_gnu_mut().expect("gnu").name[..5].copy_from_slice(b"grab\0");
        h.as_gnu_mut().expect("gnu").linkname[..17].copy_from_slice(b"../../host/file\0\0");
        h.set_cksum();
        b.append(&h, &[][..]).expect("append");
        let (err, sentinel, _base) = hostile(&[b.into_inner().expect("tar")]);
        assert!(err.contains("outside the image"), "{err}");
        sentinel.assert_intact();
    }

    #[test]
    fn links_inside_the_image_stay_image_contents() {
        let root = tempfile::tempdir().expect("tmp");
        let l = layer(|b| {
            dir(b, "usr");
            dir(b, "usr/bin");
            file(b, "usr/bin/busybox", b"bb");
            link(b, tar::EntryType::Symlink, "bin", "usr/bin");
            link(b, tar::EntryType::Symlink, "usr/bin/sh", "/usr/bin/busybox");
            link(b, tar::EntryType::Link, "usr/bin/ls", "usr/bin/busybox");
        });
        apply(&l, root.path()).expect("unpack");
        assert_eq!(
            std::fs::read_link(root.path().join("bin")).expect("bin"),
            Path::new("usr/bin")
        );
        assert_eq!(
            std::fs::read_link(root.path().join("usr/bin/sh")).expect("sh"),
            Path::new("/usr/bin/busybox")
        );
        assert_eq!(
            std::fs::read(root.path().join("usr/bin/ls")).expect("ls"),
            b"bb"
        );
        // A later layer replaces a link with a file instead of writing through it.
        apply(&layer(|b| file(b, "bin", b"now a file")), root.path()).expect("replace");
        assert_eq!(
            std::fs::read(root.path().join("bin")).expect("bin"),
            b"now a file"
        );
        assert!(root.path().join("usr/bin/busybox").is_file());
    }

    #[test]
    fn modes_owners_and_set_id_bits_are_kept() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().expect("tmp");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o4755);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "su", &b"x"[..]).expect("append");
        apply(&b.into_inner().expect("tar"), root.path()).expect("unpack");
        let meta = std::fs::metadata(root.path().join("su")).expect("su");
        assert_eq!(meta.mode() & 0o7777, 0o4755);
        assert_eq!(meta.mtime(), 1_000_000);
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
        }
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_budget() {
        let root = tempfile::tempdir().expect("tmp");
        let bomb = gz(&layer(|b| {
            for i in 0..8 {
                file(b, &format!("f{i}"), &vec![0u8; 1 << 20]);
            }
        }));
        let mut budget = Budget {
            bytes: 3 << 20,
            entries: 1_000,
        };
        let err = apply_layer(&bomb[..], root.path(), &mut budget).expect_err("bounded");
        assert!(err.contains("GiB"), "{err}");
        let written = std::fs::read_dir(root.path()).expect("ls").count();
        assert!(written <= 3, "{written} files written past the budget");
        let mut budget = Budget {
            bytes: 1 << 30,
            entries: 2,
        };
        let err = apply_layer(&bomb[..], root.path(), &mut budget).expect_err("bounded");
        assert!(err.contains("entries"), "{err}");
    }

    #[test]
    fn whiteouts_delete_lower_files_and_opaque_dirs_hide_only_lower_content() {
        let root = tempfile::tempdir().expect("tmp");
        let lower = layer(|b| {
            dir(b, "etc");
            file(b, "etc/keep", b"k");
            file(b, "etc/gone", b"g");
            dir(b, "data");
            file(b, "data/old", b"o");
        });
        apply(&gz(&lower), root.path()).expect("lower");
        let upper = layer(|b| {
            file(b, "etc/.wh.gone", b"");
            dir(b, "data");
            file(b, "data/new", b"n");
            file(b, "data/.wh..wh..opq", b"");
        });
        apply(&upper, root.path()).expect("upper");
        assert!(root.path().join("etc/keep").exists());
        assert!(!root.path().join("etc/gone").exists());
        assert!(
            !root.path().join("data/old").exists(),
            "opaque dir hides lower content"
        );
        assert_eq!(
            std::fs::read(root.path().join("data/new")).expect("new"),
            b"n"
        );
        assert!(
            !root.path().join("etc/.wh.gone").exists(),
            "markers are not unpacked"
        );
    }

    #[test]
    fn a_layer_climbing_out_of_the_root_is_refused_and_writes_nothing_outside() {
        let base = tempfile::tempdir().expect("tmp");
        let root = base.path().join("root");
        std::fs::create_dir(&root).expect("root");
        // tar::Builder refuses `..` itself, so write the name into the header by hand.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.as_gnu_mut().expect("gnu").name[..11].copy_from_slice(b"../escaped\0");
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append");
        let evil = b.into_inner().expect("tar");
        let err = apply(&evil, &root).expect_err("refused");
        assert!(err.contains("outside the image root"), "{err}");
        assert!(!base.path().join("escaped").exists());
    }

    #[test]
    fn a_symlink_in_a_layer_cannot_carry_later_writes_out_of_the_root() {
        let base = tempfile::tempdir().expect("tmp");
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&root).expect("root");
        std::fs::create_dir_all(&outside).expect("outside");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        b.append_link(&mut h, "link", &outside).expect("link");
        file(&mut b, "link/pwned", b"x");
        let evil = b.into_inner().expect("tar");
        assert!(apply(&evil, &root).is_err());
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn truncated_and_zstd_layers_fail_with_a_reason() {
        let root = tempfile::tempdir().expect("tmp");
        let whole = gz(&layer(|b| file(b, "big", &vec![7u8; 100_000])));
        let err = apply(&whole[..whole.len() / 2], root.path()).expect_err("truncated");
        assert!(
            err.contains("truncated") || err.contains("cannot write"),
            "{err}"
        );
        let err = apply(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], root.path()).expect_err("zstd");
        assert!(err.contains("zstd"), "{err}");
    }

    #[test]
    fn mount_points_are_made_when_the_image_lacks_them() {
        let root = tempfile::tempdir().expect("tmp");
        prepare_mount_points(root.path()).expect("prepare");
        for d in ["proc", "sys", "dev", "tmp"] {
            assert!(root.path().join(d).is_dir(), "{d}");
        }
    }
}
