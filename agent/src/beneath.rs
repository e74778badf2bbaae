//! Paths from outside (image layers, object keys, the coordinator's file requests) resolved
//! beneath a root folder without following symbolic links, on libpathrs: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it, libpathrs' own checked walk
//! elsewhere (kernels before 5.6, qemu-user). Every operation works on a file descriptor of the
//! resolved parent, so swapping a folder for a symbolic link half-way cannot redirect it.
//!
//! The root itself is opened as an ordinary path: it comes from the node's own config.

use std::ffi::OsString;
use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use pathrs::flags::{OpenFlags, RenameFlags, ResolverFlags};
use pathrs::{InodeType, Root};

/// Why an operation beneath a root was refused or failed.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum BeneathError {
    /// `{path}` leads through a symbolic link under {root}; symbolic links are not followed there
    Symlink { root: PathBuf, path: PathBuf },
    /// `{path}` is not a path beneath {root} (absolute, `..` or empty)
    Outside { root: PathBuf, path: PathBuf },
    /// `{path}` under {root} is not a {expected}
    NotA {
        root: PathBuf,
        path: PathBuf,
        expected: &'static str,
    },
    /// cannot {action} `{path}` under {root}: {source}
    Io {
        action: &'static str,
        root: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
}

impl BeneathError {
    /// The error as `std::io::Error`, for callers whose errors carry one.
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                io::Error::new(io::ErrorKind::NotFound, source.to_string())
            }
            other => io::Error::other(other.to_string()),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What is at a path (never followed if it is a symbolic link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A folder whose paths are resolved beneath it, never through a symbolic link.
#[derive(Debug)]
pub struct Beneath {
    root: Root,
    path: PathBuf,
}

/// `raw` as a relative path of plain names: `.` and leading `/` dropped, `..` refused.
pub fn relative(raw: &Path) -> Option<PathBuf> {
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

impl Beneath {
    /// Opens `root` (an ordinary path from the node's config; it may itself be a link).
    pub fn open(root: &Path) -> Result<Self, BeneathError> {
        let opened = Root::open(root).map_err(|e| BeneathError::Io {
            action: "open",
            root: root.to_owned(),
            path: PathBuf::new(),
            source: to_io(&e),
        })?;
        Ok(Self {
            root: opened.with_resolver_flags(ResolverFlags::NO_SYMLINKS),
            path: root.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rel(&self, path: &Path) -> Result<PathBuf, BeneathError> {
        match relative(path) {
            Some(rel) if !rel.as_os_str().is_empty() => Ok(rel),
            _ => Err(BeneathError::Outside {
                root: self.path.clone(),
                path: path.to_owned(),
            }),
        }
    }

    /// Turns a libpathrs error into ours: a symbolic link on the way (`ELOOP`) is named as such.
    fn fail(&self, action: &'static str, path: &Path, e: &pathrs::error::Error) -> BeneathError {
        let source = to_io(e);
        if source.raw_os_error() == Some(nix::libc::ELOOP) {
            return BeneathError::Symlink {
                root: self.path.clone(),
                path: path.to_owned(),
            };
        }
        BeneathError::Io {
            action,
            root: self.path.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// What `path` is, or `None` when nothing is there.
    pub fn kind(&self, path: &Path) -> Result<Option<Kind>, BeneathError> {
        let rel = self.rel(path)?;
        let handle = match self.root.resolve_nofollow(&rel) {
            Ok(h) => h,
            Err(e) => {
                let err = self.fail("look at", path, &e);
                return if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let meta = File::from(std::os::fd::OwnedFd::from(handle))
            .metadata()
            .map_err(|source| self.io("look at", path, source))?;
        let kind = meta.file_type();
        Ok(Some(if kind.is_symlink() {
            Kind::Symlink
        } else if kind.is_dir() {
            Kind::Dir
        } else if kind.is_file() {
            Kind::File
        } else {
            Kind::Other
        }))
    }

    fn io(&self, action: &'static str, path: &Path, source: io::Error) -> BeneathError {
        BeneathError::Io {
            action,
            root: self.path.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// Removes whatever is at `path` (a whole tree for a folder; a link itself, never its
    /// target). Nothing there is not an error.
    pub fn remove_all(&self, path: &Path) -> Result<(), BeneathError> {
        let rel = self.rel(path)?;
        match self.root.remove_all(&rel) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = self.fail("remove", path, &e);
                if err.is_not_found() { Ok(()) } else { Err(err) }
            }
        }
    }

    /// Creates the folder `path` and its missing parents with `mode`.
    pub fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), BeneathError> {
        let rel = self.rel(path)?;
        self.root
            .mkdir_all(&rel, &Permissions::from_mode(mode))
            .map(drop)
            .map_err(|e| self.fail("create the folder", path, &e))
    }

    /// Creates the folder `path` (its parent must exist).
    pub fn mkdir(&self, path: &Path, mode: u32) -> Result<(), BeneathError> {
        let rel = self.rel(path)?;
        self.root
            .create(&rel, &InodeType::Directory(Permissions::from_mode(mode)))
            .map_err(|e| self.fail("create the folder", path, &e))
    }

    /// Creates a new file at `path` (nothing may be there), open for writing.
    pub fn create_file(&self, path: &Path, mode: u32) -> Result<File, BeneathError> {
        let rel = self.rel(path)?;
        self.root
            .create_file(
                &rel,
                OpenFlags::O_WRONLY | OpenFlags::O_EXCL | OpenFlags::O_CLOEXEC,
                &Permissions::from_mode(mode),
            )
            .map_err(|e| self.fail("create", path, &e))
    }

    /// Opens `path` for `flags`; `expected` says what must be there.
    fn reopen(&self, path: &Path, flags: OpenFlags, expected: Kind) -> Result<File, BeneathError> {
        let rel = self.rel(path)?;
        let handle = self
            .root
            .resolve_nofollow(&rel)
            .map_err(|e| self.fail("open", path, &e))?;
        let file = handle
            .reopen(flags | OpenFlags::O_CLOEXEC)
            .map_err(|e| self.fail("open", path, &e))?;
        let kind = file
            .metadata()
            .map_err(|source| self.io("open", path, source))?
            .file_type();
        let right = match expected {
            Kind::File => kind.is_file(),
            Kind::Dir => kind.is_dir(),
            Kind::Symlink | Kind::Other => false,
        };
        if !right {
            return Err(BeneathError::NotA {
                root: self.path.clone(),
                path: path.to_owned(),
                expected: if expected == Kind::Dir {
                    "folder"
                } else {
                    "regular file"
                },
            });
        }
        Ok(file)
    }

    /// Opens the regular file at `path` for reading (a link there is refused, not followed).
    pub fn open_file(&self, path: &Path) -> Result<File, BeneathError> {
        self.reopen(path, OpenFlags::O_RDONLY, Kind::File)
    }

    /// Opens the folder at `path` (for its metadata and times).
    pub fn open_dir(&self, path: &Path) -> Result<File, BeneathError> {
        self.reopen(
            path,
            OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY,
            Kind::Dir,
        )
    }

    /// The names in the folder `path` (the root itself when `path` is empty).
    pub fn read_dir(&self, path: &Path) -> Result<Vec<OsString>, BeneathError> {
        use std::os::unix::ffi::OsStrExt;
        let dir = if relative(path).is_some_and(|r| r.as_os_str().is_empty()) {
            File::open(&self.path).map_err(|source| self.io("list", path, source))?
        } else {
            self.open_dir(path)?
        };
        // rustix reads with getdents64 itself: a 32-bit C library's readdir fails with
        // EOVERFLOW on file systems with 64-bit inode numbers.
        let listing = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| self.io("list", path, io::Error::from(e)))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| self.io("list", path, io::Error::from(e)))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    /// A symbolic link at `path` pointing at `target` (image contents: never followed here).
    pub fn symlink(&self, path: &Path, target: &Path) -> Result<(), BeneathError> {
        let rel = self.rel(path)?;
        self.root
            .create(&rel, &InodeType::Symlink(target.to_owned()))
            .map_err(|e| self.fail("create the link", path, &e))
    }

    /// A hard link at `path` to the file at `target`, both beneath the root.
    pub fn hard_link(&self, path: &Path, target: &Path) -> Result<(), BeneathError> {
        let rel = self.rel(path)?;
        let target_rel = self.rel(target)?;
        self.root
            .create(&rel, &InodeType::Hardlink(target_rel))
            .map_err(|e| self.fail("create the hard link", path, &e))
    }

    /// Sets the owner of what is at `path` (a link itself, not its target).
    pub fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), BeneathError> {
        let rel = self.rel(path)?;
        let handle = self
            .root
            .resolve_nofollow(&rel)
            .map_err(|e| self.fail("change the owner of", path, &e))?;
        nix::unistd::fchownat(
            &handle,
            "",
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| self.io("change the owner of", path, io::Error::from(e)))
    }

    /// Writes `bytes` to `path` whole (see [`spillway_plumbing::atomic`]): under a hidden temporary name in
    /// the same folder, synced, then renamed over the target.
    pub fn write_whole(&self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), BeneathError> {
        use std::io::Write;
        let tmp = spillway_plumbing::atomic::temporary_name(path);
        let written = self.create_file(&tmp, mode).and_then(|mut f| {
            f.write_all(bytes)
                .and_then(|()| f.set_permissions(Permissions::from_mode(mode)))
                .and_then(|()| f.sync_all())
                .map_err(|source| self.io("write", path, source))
        });
        let renamed = written.and_then(|()| self.rename(&tmp, path));
        if renamed.is_err() {
            let _ = self.remove_all(&tmp);
        }
        renamed
    }

    /// Renames `from` to `to` (replacing what is there), both beneath the root.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), BeneathError> {
        let (from_rel, to_rel) = (self.rel(from)?, self.rel(to)?);
        self.root
            .rename(&from_rel, &to_rel, RenameFlags::empty())
            .map_err(|e| self.fail("rename", from, &e))
    }
}

/// The errno behind a libpathrs error (so callers can tell "not found" from the rest), else
/// its message.
fn to_io(e: &pathrs::error::Error) -> io::Error {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => io::Error::from_raw_os_error(errno),
        _ => io::Error::other(e.to_string()),
    }
}
