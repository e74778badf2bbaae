//! Structure-aware tarballs: image layers and image archives made of entries drawn from the
//! shapes attackers use (links out of the root, whiteouts through them, `..`, long names, hard
//! links, devices, PAX and GNU headers) mixed with ordinary files, plain or gzipped.

use std::io::Write;

use sha2::{Digest, Sha256};

use crate::rng::Rng;

/// Names and fragments a mutation may splice into a tarball.
pub const DICTIONARY: [&[u8]; 12] = [
    b"../",
    b".wh.",
    b".wh..wh..opq",
    b"/etc/passwd",
    b"ustar\x0000",
    b"ustar  \x00",
    b"././@LongLink",
    b"\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    b"blobs/sha256/",
    b"index.json",
    b"manifest.json",
    b"\x1f\x8b\x08\x00",
];

const NAMES: [&str; 16] = [
    "etc",
    "etc/passwd",
    "bin/sh",
    "esc",
    "esc/x",
    "esc/.wh.x",
    "esc/.wh..wh..opq",
    ".wh..",
    ".wh...",
    "a/.wh.b",
    "a/b/c",
    "..",
    "../out",
    "/abs",
    "usr/lib/x.so",
    "dev/null",
];

fn header(kind: tar::EntryType, size: u64, rng: &mut Rng) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(*rng.pick(&[0o644, 0o755, 0o4755, 0o777, 0o000]));
    h.set_uid(*rng.pick(&[0, 1000, 65534]));
    h.set_gid(0);
    h.set_mtime(*rng.pick(&[0, 1_700_000_000, u64::MAX >> 1]));
    h
}

/// Writes `name` into the header by hand, so `..` and absolute names survive.
fn raw_name(h: &mut tar::Header, name: &str) {
    if let Some(gnu) = h.as_gnu_mut() {
        let bytes = name.as_bytes();
        let n = bytes.len().min(99);
        gnu.name = [0; 100];
        gnu.name[..n].copy_from_slice(&bytes[..n]);
    }
    h.set_cksum();
}

/// A random image layer.
pub fn layer(rng: &mut Rng) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for _ in 0..1 + rng.below(12) {
        let name = if rng.chance(6) {
            format!("{}/f", "d".repeat(100 + rng.below(400)))
        } else {
            rng.pick(&NAMES).to_string()
        };
        let target = *rng.pick(&["/", "/etc", "..", "../../x", "etc/passwd", "esc", "bin/sh"]);
        let _ = match rng.below(7) {
            0 => {
                let mut h = header(tar::EntryType::Directory, 0, rng);
                raw_name(&mut h, &name);
                b.append(&h, &[][..])
            }
            1 => {
                let mut h = header(tar::EntryType::Symlink, 0, rng);
                b.append_link(&mut h, &name, target)
            }
            2 => {
                let mut h = header(tar::EntryType::Link, 0, rng);
                b.append_link(&mut h, &name, target)
            }
            3 => {
                let kind = *rng.pick(&[tar::EntryType::Char, tar::EntryType::Fifo]);
                let mut h = header(kind, 0, rng);
                raw_name(&mut h, &name);
                b.append(&h, &[][..])
            }
            _ => {
                let body = vec![b'x'; rng.below(2048)];
                let mut h = header(tar::EntryType::Regular, body.len() as u64, rng);
                if name.len() < 100 {
                    raw_name(&mut h, &name);
                    b.append(&h, &body[..])
                } else {
                    b.append_data(&mut h, &name, &body[..])
                }
            }
        };
    }
    let bytes = b.into_inner().unwrap_or_default();
    if rng.chance(2) { gzip(&bytes) } else { bytes }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, body: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    let _ = b.append_data(&mut h, name, body);
}

/// A layer any unpacker accepts: a folder, a file, a link inside the image.
pub fn benign_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "bin/hello", b"#!/bin/sh\necho hello\n");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    let _ = b.append_link(&mut h, "bin/hi", "hello");
    b.into_inner().unwrap_or_default()
}

/// An `oci-archive` of one amd64 image whose layer is a random one.
pub fn oci_archive(rng: &mut Rng) -> Vec<u8> {
    oci_archive_of(&layer(rng))
}

/// An `oci-archive` of one amd64 image with `layer`.
pub fn oci_archive_of(layer: &[u8]) -> Vec<u8> {
    let layer = gzip(layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest.as_bytes()), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "fuzz:1"}}],
    })
    .to_string();
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    file(&mut b, "index.json", index.as_bytes());
    for blob in [manifest.as_bytes(), config.as_bytes(), &layer[..]] {
        let name = format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]);
        file(&mut b, &name, blob);
    }
    b.into_inner().unwrap_or_default()
}

/// `docker save` output (the legacy layout) of one image whose layer is a random one.
pub fn docker_save(rng: &mut Rng) -> Vec<u8> {
    let layer = if rng.chance(2) {
        benign_layer()
    } else {
        layer(rng)
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    })
    .to_string();
    let config_name = format!("{}.json", &digest(config.as_bytes())["sha256:".len()..]);
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["fuzz:1"], "Layers": ["abc/layer.tar"]}]).to_string();
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, &config_name, config.as_bytes());
    file(&mut b, "abc/layer.tar", &layer);
    file(&mut b, "manifest.json", manifest.as_bytes());
    b.into_inner().unwrap_or_default()
}
