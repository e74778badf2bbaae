//! A hostile image cannot reach outside its root: layers written by Python's `tarfile` (any name,
//! any link) plant a symbolic link to a host folder and then try to delete, hide or replace
//! through it, or whiteout `..`. Each image is loaded with `spillway-agent load` as an
//! oci-archive made by skopeo; the load is refused with the reason, a sentinel tree outside the
//! image store is byte-identical afterwards, and an image loaded before is still whole.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::oci::{ImageSpec, busybox_layer, gzip, host_arch, skopeo_copy, write_layout};
use support::{Node, files_under};

/// A layer written by Python's `tarfile`: `entries` are (kind, name, link target or content).
fn python_layer(dir: &Path, entries: &[(&str, &str, &str)]) -> Vec<u8> {
    let out = dir.join(format!("layer-{}.tar", files_under(dir).len()));
    let script = r#"
import sys, tarfile, io, json
out, entries = sys.argv[1], json.loads(sys.argv[2])
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
    for kind, name, arg in entries:
        info = tarfile.TarInfo(name)
        info.mode = 0o755
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, arg
            t.addfile(info)
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, arg
            t.addfile(info)
        elif kind == "dir":
            info.type = tarfile.DIRTYPE
            t.addfile(info)
        else:
            data = arg.encode()
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
"#;
    let entries: Vec<[&str; 3]> = entries.iter().map(|(k, n, a)| [*k, *n, *a]).collect();
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&out)
        .arg(serde_json::to_string(&entries).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "python3 tarfile");
    std::fs::read(&out).unwrap()
}

/// An oci-archive (made by skopeo from a layout) of a busybox image plus `extra` layers.
fn archive(dir: &Path, name: &str, extra: Vec<Vec<u8>>) -> PathBuf {
    let mut image = ImageSpec::busybox("linux", host_arch(), None);
    image.layers = std::iter::once(gzip(&busybox_layer(&format!("linux/{}", host_arch()))))
        .chain(extra.iter().map(|l| gzip(l)))
        .collect();
    let layout = dir.join(format!("layout-{name}"));
    write_layout(&layout, "1", &[image]);
    let out = dir.join(format!("{name}.tar"));
    skopeo_copy(
        &format!("oci:{}:1", layout.display()),
        &format!("oci-archive:{}:localhost/{name}:1", out.display()),
        &[],
    );
    out
}

/// Every file, folder and link under `dir` with its content or target.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = files_under(dir)
        .into_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            let content = std::fs::read_link(&path)
                .map(|t| t.into_os_string().into_encoded_bytes())
                .or_else(|_| std::fs::read(&path))
                .unwrap_or_default();
            (rel, content)
        })
        .collect();
    all.sort();
    all
}

struct Bed {
    node: Node,
    scratch: tempfile::TempDir,
    sentinel: PathBuf,
    before: Vec<(String, Vec<u8>)>,
}

impl Bed {
    /// A node with one good image loaded, next to a sentinel tree the attacker aims at.
    fn new() -> Self {
        let node = Node::new("");
        let scratch = tempfile::tempdir().unwrap();
        let sentinel = scratch.path().join("host");
        std::fs::create_dir_all(sentinel.join("sub")).unwrap();
        std::fs::write(sentinel.join("file"), "precious").unwrap();
        std::fs::write(sentinel.join("sub/deep"), "also precious").unwrap();
        let before = snapshot(&sentinel);
        let good = archive(scratch.path(), "good", vec![]);
        let (ok, out, err) = node.agent_cli(&["load", &good.display().to_string()]);
        assert!(ok, "the good image loads: {out}{err}");
        Self {
            node,
            scratch,
            sentinel,
            before,
        }
    }

    fn good_rootfs(&self) -> Vec<String> {
        files_under(&self.node.path("state/images/rootfs"))
    }

    /// Loads an image with `layers` on top of busybox: refused, with `reason` in the message,
    /// and nothing outside the store (nor the good image) changed.
    fn refused(&self, name: &str, layers: &[&[(&str, &str, &str)]], reason: &str) {
        let good = self.good_rootfs();
        let layers = layers
            .iter()
            .map(|l| python_layer(self.scratch.path(), l))
            .collect();
        let evil = archive(self.scratch.path(), name, layers);
        let (ok, out, err) = self.node.agent_cli(&["load", &evil.display().to_string()]);
        assert!(!ok, "{name}: the hostile image was loaded: {out}{err}");
        assert!(err.contains(reason), "{name}: {err}");
        assert_eq!(
            snapshot(&self.sentinel),
            self.before,
            "{name}: the host tree changed"
        );
        assert_eq!(self.good_rootfs(), good, "{name}: the good image changed");
        let (ok, list, _) = self.node.agent_cli(&["images"]);
        assert!(
            ok && list.contains("localhost/good:1") && !list.contains(&format!("/{name}:")),
            "{list}"
        );
    }
}

#[test]
fn whiteouts_opaque_markers_and_type_changes_through_an_image_symlink_cannot_touch_the_host() {
    let bed = Bed::new();
    let host = bed.sentinel.display().to_string();
    let link = ("symlink", "esc", host.as_str());
    for (name, attack) in [
        ("whiteout", ("file", "esc/.wh.file", "")),
        ("whiteout-dir", ("file", "esc/.wh.sub", "")),
        ("opaque", ("file", "esc/.wh..wh..opq", "")),
        ("dir-over-file", ("dir", "esc/file", "")),
        ("write-through", ("file", "esc/sub/deep", "pwned")),
    ] {
        // In one layer, and with the link planted by a lower layer.
        bed.refused(name, &[&[link, attack]], "symbolic link");
        bed.refused(&format!("{name}-2"), &[&[link], &[attack]], "symbolic link");
    }
}

#[test]
fn a_whiteout_of_dot_dot_cannot_remove_the_image_store() {
    let bed = Bed::new();
    for (name, whiteout) in [
        ("dotdot", ".wh..."),
        ("dot", "bin/.wh.."),
        ("empty", ".wh."),
    ] {
        bed.refused(name, &[&[("file", whiteout, "")]], "names no file");
    }
}

#[test]
fn hard_links_out_of_the_image_are_refused() {
    let bed = Bed::new();
    bed.refused(
        "hardlink",
        &[&[("hardlink", "grab", "../../../../host/file")]],
        "outside the image",
    );
}
