//! Applying one image layer onto a root filesystem: gzip or plain tar, OCI whiteouts
//! (`.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` hides a directory's lower
//! content), and nothing written outside the root — `..` and absolute names are refused and
//! links are never followed out of it (the `tar` crate's `unpack_in` checks each parent).

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies a (possibly gzipped) tar layer onto `root`. Errors are sentences for the user.
pub(crate) fn apply_layer(mut reader: impl BufRead, root: &Path) -> Result<(), String> {
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
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix::unistd::Uid::effective().is_root());
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    // Paths this layer wrote: an opaque marker hides only what lower layers put there.
    let mut mine: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| format!("the tar stream is truncated or corrupt: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("an entry has an unreadable name: {e}"))?
            .into_owned();
        let Some(rel) = contained(&raw) else {
            return Err(format!(
                "entry `{}` points outside the image root; the image is malformed or malicious",
                raw.display()
            ));
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = rel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == OPAQUE {
            clear_lower(&root.join(&parent), &parent, &mine);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove_any(&root.join(&parent).join(hidden));
            continue;
        }
        let target = root.join(&rel);
        let is_dir = entry.header().entry_type().is_dir();
        // A directory replacing a file (or the reverse) must not merge with what was there.
        if let Ok(existing) = std::fs::symlink_metadata(&target)
            && (existing.is_dir() != is_dir || existing.file_type().is_symlink())
        {
            remove_any(&target);
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            // Containers get a fresh /dev; device nodes in layers are not needed.
            continue;
        }
        entry.unpack_in(root).map_err(|e| {
            format!(
                "cannot write `{}`: {}",
                rel.display(),
                super::error_chain(&e)
            )
        })?;
        mine.insert(rel);
    }
    Ok(())
}

/// The entry's path relative to the root, or `None` if it climbs out of it.
fn contained(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in raw.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn clear_lower(dir: &Path, rel_dir: &Path, mine: &HashSet<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !mine.contains(&rel_dir.join(entry.file_name())) {
            remove_any(&entry.path());
        }
    }
}

fn remove_any(path: &Path) {
    super::store::remove_any(path);
}

/// Mount points every container needs, so a read-only root still takes its mounts.
pub(crate) fn prepare_mount_points(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
    ] {
        let path = root.join(dir);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => remove_any(&path),
            Err(_) => {}
        }
        std::fs::create_dir(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
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
        apply_layer(&gz(&lower)[..], root.path()).expect("lower");
        let upper = layer(|b| {
            file(b, "etc/.wh.gone", b"");
            dir(b, "data");
            file(b, "data/new", b"n");
            file(b, "data/.wh..wh..opq", b"");
        });
        apply_layer(&upper[..], root.path()).expect("upper");
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
        let err = apply_layer(&evil[..], &root).expect_err("refused");
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
        assert!(apply_layer(&evil[..], &root).is_err());
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn truncated_and_zstd_layers_fail_with_a_reason() {
        let root = tempfile::tempdir().expect("tmp");
        let whole = gz(&layer(|b| file(b, "big", &vec![7u8; 100_000])));
        let err = apply_layer(&whole[..whole.len() / 2], root.path()).expect_err("truncated");
        assert!(
            err.contains("truncated") || err.contains("cannot write"),
            "{err}"
        );
        let err = apply_layer(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..], root.path()).expect_err("zstd");
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
