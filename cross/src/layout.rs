//! The pieces of an OCI image layout, with `oci-spec`'s types: one layer, config and manifest per
//! platform, an index over them, and the layout tarred into an `oci-archive`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
    Sha256Digest,
};
use sha2::{Digest as _, Sha256};

/// What differs between the agent's and the coordinator's images.
pub struct ImageKind {
    pub name: &'static str,
    pub binary: &'static str,
    entrypoint: &'static [&'static str],
    cmd: &'static [&'static str],
    /// `None` runs as root.
    user: Option<u32>,
    ports: &'static [&'static str],
    description: &'static str,
    /// The config file at /etc/spillway/, if the image ships one.
    config: Option<(&'static str, &'static str)>,
}

impl ImageKind {
    pub fn agent() -> Self {
        Self {
            name: "spillway-agent",
            binary: "spillway-agent",
            entrypoint: &["/usr/local/bin/spillway-agent"],
            cmd: &["--config", "/etc/spillway/agent.toml", "run"],
            // It creates containers: namespaces, cgroups and mounts need root.
            user: None,
            ports: &[],
            description: "Spillway edge agent: runs functions where data appears",
            // Each board's own, with its join: mounted by whoever runs it.
            config: None,
        }
    }

    pub fn coordinator() -> Self {
        Self {
            name: "spillway-coordinator",
            binary: "spillway",
            entrypoint: &["/usr/local/bin/spillway"],
            cmd: &["serve", "--config", "/etc/spillway/coordinator.toml"],
            user: Some(65532),
            ports: &["7443/udp", "7480/tcp"],
            description: "Spillway coordinator: the mesh's placement, CA and API",
            // Listening on the container's interfaces; the environment or a mounted file
            // changes it.
            config: Some((
                "coordinator.toml",
                include_str!("../../configs/container/coordinator.toml"),
            )),
        }
    }
}

/// A platform and the Rust target whose binary it gets.
#[derive(Clone)]
pub struct Target {
    pub platform: String,
    triple: &'static str,
    arch: Arch,
    variant: Option<&'static str>,
    /// ELF class and machine of its programs.
    elf: (u8, u16),
}

impl Target {
    pub fn parse(platform: &str) -> anyhow::Result<Self> {
        let (triple, arch, variant, elf) = match platform {
            "linux/amd64" => ("x86_64-unknown-linux-gnu", Arch::Amd64, None, (2, 0x3e)),
            "linux/arm64" | "linux/arm64/v8" => {
                ("aarch64-unknown-linux-gnu", Arch::ARM64, None, (2, 0xb7))
            }
            "linux/arm/v7" => (
                "armv7-unknown-linux-gnueabihf",
                Arch::ARM,
                Some("v7"),
                (1, 0x28),
            ),
            other => bail!(
                "no Spillway build for platform {other} (linux/amd64, linux/arm64, linux/arm/v7)"
            ),
        };
        Ok(Self {
            platform: platform.to_owned(),
            triple,
            arch,
            variant,
            elf,
        })
    }

    /// The binary in `dir` (a cargo target folder or a folder of triples).
    pub fn find(&self, dir: &Path, binary: &str) -> anyhow::Result<PathBuf> {
        [
            dir.join(self.triple).join("release").join(binary),
            dir.join(self.triple).join(binary),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no {binary} for {} in {}: run cross/build.sh {}",
                self.platform,
                dir.display(),
                self.triple
            )
        })
    }
}

/// Refuses a binary of another architecture or one that needs a dynamic loader (the images
/// have no libc).
pub fn check_static_elf(bytes: &[u8], target: &Target) -> anyhow::Result<()> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if bytes.get(..4) != Some(b"\x7fELF") || (bytes[4], u16_at(18).unwrap_or(0)) != target.elf {
        bail!("it is not a {} program", target.triple);
    }
    let (phoff, phentsize, phnum) = if bytes[4] == 2 {
        let off = bytes
            .get(32..40)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        (off.unwrap_or(0) as usize, u16_at(54), u16_at(56))
    } else {
        let off = bytes
            .get(28..32)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
        (off.unwrap_or(0) as usize, u16_at(42), u16_at(44))
    };
    let (size, count) = (
        usize::from(phentsize.unwrap_or(0)),
        usize::from(phnum.unwrap_or(0)),
    );
    for i in 0..count {
        let at = phoff + i * size;
        let p_type = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
        if p_type == Some(3) {
            bail!(
                "it is dynamically linked (PT_INTERP); build it with cross/build.sh, which links statically"
            );
        }
    }
    Ok(())
}

/// JSON with every object's keys sorted: oci-spec keeps labels and annotations in `HashMap`s,
/// whose order changes from run to run, and a digest must not.
fn canonical_json(value: &impl serde::Serialize) -> anyhow::Result<Vec<u8>> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sort(serde_json::to_value(value)?))?)
}

/// A blob: its bytes and descriptor fields.
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

fn blob(bytes: Vec<u8>) -> anyhow::Result<Blob> {
    let hex = hex::encode(Sha256::digest(&bytes));
    let digest: Sha256Digest = hex.parse().context("sha256 digest")?;
    Ok(Blob {
        bytes,
        digest: digest.into(),
    })
}

fn descriptor(media: MediaType, blob: &Blob) -> DescriptorBuilder {
    DescriptorBuilder::default()
        .media_type(media)
        .digest(blob.digest.clone())
        .size(blob.bytes.len() as u64)
}

/// One platform's image: its layer, config and manifest blobs, and the manifest's descriptor.
pub struct PlatformImage {
    pub blobs: Vec<Blob>,
    pub manifest: Descriptor,
    pub target: Target,
}

pub fn platform_image(
    kind: &ImageKind,
    target: &Target,
    binary: &[u8],
    ca_bundle: &[u8],
    epoch: u64,
) -> anyhow::Result<PlatformImage> {
    let raw = layer_tar(kind, binary, ca_bundle, epoch)?;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)?;
    let layer = blob(gz.finish()?)?;
    let created = rfc3339(epoch)?;
    let labels: HashMap<String, String> = [
        ("org.opencontainers.image.title", kind.name),
        ("org.opencontainers.image.description", kind.description),
        (
            "org.opencontainers.image.version",
            env!("CARGO_PKG_VERSION"),
        ),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut config = ConfigBuilder::default()
        .entrypoint(strings(kind.entrypoint))
        .cmd(strings(kind.cmd))
        .env(vec![
            "PATH=/usr/local/bin".to_owned(),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_owned(),
        ])
        .working_dir("/var/lib/spillway")
        .labels(labels.clone());
    if let Some(uid) = kind.user {
        config = config.user(format!("{uid}:{uid}"));
    }
    if !kind.ports.is_empty() {
        config = config.exposed_ports(strings(kind.ports));
    }
    if kind.config.is_some() {
        // The state (CA, tokens, nodes, jobs) outlives the container.
        config = config.volumes(strings(&["/var/lib/spillway"]));
    }
    let mut image_config = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(target.arch.clone())
        .os(Os::Linux)
        .config(config.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()?,
        );
    if let Some(v) = target.variant {
        image_config = image_config.variant(v);
    }
    let config_blob = blob(canonical_json(&image_config.build()?)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_blob).build()?)
        .layers(vec![descriptor(MediaType::ImageLayerGzip, &layer).build()?])
        .annotations(labels)
        .build()?;
    let manifest_blob = blob(canonical_json(&manifest)?)?;
    let mut platform = PlatformBuilder::default()
        .architecture(target.arch.clone())
        .os(Os::Linux);
    if let Some(v) = target.variant {
        platform = platform.variant(v);
    }
    let manifest_descriptor = descriptor(MediaType::ImageManifest, &manifest_blob)
        .platform(platform.build()?)
        .build()?;
    Ok(PlatformImage {
        blobs: vec![layer, config_blob, manifest_blob],
        manifest: manifest_descriptor,
        target: target.clone(),
    })
}

/// The image's only layer: directories, users, CA bundle and the binary, in a fixed order.
fn layer_tar(kind: &ImageKind, binary: &[u8], ca: &[u8], epoch: u64) -> anyhow::Result<Vec<u8>> {
    let uid = kind.user.unwrap_or(0);
    let passwd = match kind.user {
        Some(u) => format!(
            "root:x:0:0:root:/root:/sbin/nologin\nspillway:x:{u}:{u}:Spillway:/var/lib/spillway:/sbin/nologin\n"
        ),
        None => "root:x:0:0:root:/root:/sbin/nologin\n".to_owned(),
    };
    let group = match kind.user {
        Some(u) => format!("root:x:0:\nspillway:x:{u}:\n"),
        None => "root:x:0:\n".to_owned(),
    };
    let dirs: [(&str, u32, u32); 10] = [
        ("etc/", 0o755, 0),
        ("etc/spillway/", 0o755, 0),
        ("etc/ssl/", 0o755, 0),
        ("etc/ssl/certs/", 0o755, 0),
        ("tmp/", 0o1777, 0),
        ("usr/", 0o755, 0),
        ("usr/local/", 0o755, 0),
        ("usr/local/bin/", 0o755, 0),
        ("var/", 0o755, 0),
        ("var/lib/", 0o755, 0),
    ];
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, owner: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.into());
        h.set_gid(owner.into());
        h.set_mtime(epoch);
        h.set_size(size);
        h
    };
    let mut entries: Vec<(String, tar::Header, Vec<u8>)> = Vec::new();
    for (path, mode, owner) in dirs {
        entries.push((
            path.to_owned(),
            header(tar::EntryType::Directory, mode, owner, 0),
            Vec::new(),
        ));
    }
    entries.push((
        "var/lib/spillway/".to_owned(),
        header(tar::EntryType::Directory, 0o750, uid, 0),
        Vec::new(),
    ));
    for (path, mode, bytes) in [
        ("etc/group", 0o644, group.into_bytes()),
        ("etc/passwd", 0o644, passwd.into_bytes()),
        ("etc/ssl/certs/ca-certificates.crt", 0o644, ca.to_vec()),
        (
            &*format!("usr/local/bin/{}", kind.binary),
            0o755,
            binary.to_vec(),
        ),
    ] {
        let h = header(tar::EntryType::Regular, mode, 0, bytes.len() as u64);
        entries.push((path.to_owned(), h, bytes));
    }
    if let Some((name, text)) = kind.config {
        let h = header(tar::EntryType::Regular, 0o644, 0, text.len() as u64);
        entries.push((format!("etc/spillway/{name}"), h, text.as_bytes().to_vec()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, mut h, bytes) in entries {
        tar.append_data(&mut h, &path, &bytes[..])
            .with_context(|| format!("layer entry {path}"))?;
    }
    Ok(tar.into_inner()?)
}

/// The OCI layout of all platforms as an `oci-archive`: `index.json` names the multi-platform
/// index `tag` and each platform's manifest `tag-ARCH[VARIANT]` (for single-image tools such as
/// `umoci`).
pub fn archive(
    kind: &ImageKind,
    tag: &str,
    images: &[PlatformImage],
    epoch: u64,
) -> anyhow::Result<Vec<u8>> {
    let ref_name = |name: String| -> HashMap<String, String> {
        [("org.opencontainers.image.ref.name".to_owned(), name)].into()
    };
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(
            images
                .iter()
                .map(|i| i.manifest.clone())
                .collect::<Vec<_>>(),
        )
        .annotations(HashMap::from([(
            "org.opencontainers.image.title".to_owned(),
            kind.name.to_owned(),
        )]))
        .build()?;
    let index_blob = blob(canonical_json(&index)?)?;
    let mut refs = vec![
        descriptor(MediaType::ImageIndex, &index_blob)
            .annotations(ref_name(tag.to_owned()))
            .build()?,
    ];
    for i in images {
        let suffix = i
            .target
            .platform
            .trim_start_matches("linux/")
            .replace('/', "");
        let mut d = i.manifest.clone();
        d.set_annotations(Some(ref_name(format!("{tag}-{suffix}"))));
        refs.push(d);
    }
    let top = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(refs)
        .build()?;
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), canonical_json(&top)?),
    ];
    for b in images.iter().flat_map(|i| &i.blobs).chain([&index_blob]) {
        let hex = b.digest.digest().to_owned();
        files.push((format!("blobs/sha256/{hex}"), b.bytes.clone()));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(epoch);
        h.set_size(0);
        tar.append_data(&mut h, dir, &[][..])?;
    }
    for (path, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(epoch);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, &path, &bytes[..])?;
    }
    Ok(tar.into_inner()?)
}

/// `epoch` as RFC 3339 UTC.
fn rfc3339(epoch: u64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(epoch)?)?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0).expect("in range"), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_376_132).expect("in range"),
            "2026-11-22T19:35:32Z"
        );
        assert_eq!(
            rfc3339(951_782_400).expect("in range"),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn layers_are_reproducible_and_binaries_of_other_machines_are_refused() {
        let kind = ImageKind::coordinator();
        let mut elf = vec![0u8; 128];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
        let arm64 = Target::parse("linux/arm64").expect("known");
        check_static_elf(&elf, &arm64).expect("a static aarch64 header");
        let amd64 = Target::parse("linux/amd64").expect("known");
        assert!(check_static_elf(&elf, &amd64).is_err());
        assert!(Target::parse("linux/riscv64").is_err());
        let a = platform_image(&kind, &arm64, &elf, b"ca", 0).expect("image");
        let b = platform_image(&kind, &arm64, &elf, b"ca", 0).expect("image");
        assert_eq!(a.manifest.digest(), b.manifest.digest());
        let once = archive(&kind, "1", &[a], 0).expect("archive");
        let twice = archive(&kind, "1", &[b], 0).expect("archive");
        assert!(once == twice, "the archive is byte for byte the same");
    }
}
