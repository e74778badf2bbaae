//! Container images made by the tests (OCI image layouts written here, byte by byte, from
//! Debian's static busybox) and a real registry (Debian's `docker-registry`) on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// A tar layer: `files` are (path, mode, content); `links` are (path, target) symlinks.
pub fn layer(files: &[(&str, u32, Vec<u8>)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for path in files.iter().map(|f| f.0).chain(links.iter().map(|l| l.0)) {
        for dir in Path::new(path).ancestors().skip(1) {
            let dir = dir.display().to_string();
            if !dir.is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs.sort();
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("{d}/"), &[][..])
            .expect("dir");
    }
    for (path, mode, content) in files {
        let mut h = header(tar::EntryType::Regular, *mode, content.len() as u64);
        b.append_data(&mut h, path, &content[..]).expect("file");
    }
    for (path, target) in links {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, path, target).expect("link");
    }
    b.into_inner().expect("tar")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// A busybox root: the static binary, the applets the tests use, a user `app` (1000), and
/// `/etc/platform` saying which platform the image claims to be.
pub fn busybox_layer(platform: &str) -> Vec<u8> {
    busybox_layer_of(
        std::fs::read(BUSYBOX).expect("busybox-static is installed"),
        platform,
    )
}

/// The same root around another busybox binary (an arm64 one for an emulated board).
pub fn busybox_layer_of(busybox: Vec<u8>, platform: &str) -> Vec<u8> {
    let applets = [
        "sh",
        "cat",
        "sha256sum",
        "gzip",
        "gunzip",
        "sleep",
        "grep",
        "dd",
        "echo",
        "ls",
        "id",
        "head",
        "wc",
        "touch",
        "hostname",
        "mkdir",
        "rm",
        "sed",
        "true",
        "tr",
    ];
    let links: Vec<(String, &str)> = applets
        .iter()
        .map(|a| (format!("bin/{a}"), "busybox"))
        .collect();
    let links: Vec<(&str, &str)> = links.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    layer(
        &[
            ("bin/busybox", 0o755, busybox),
            (
                "etc/passwd",
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n".to_vec(),
            ),
            ("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n".to_vec()),
            ("etc/platform", 0o644, platform.as_bytes().to_vec()),
        ],
        &links,
    )
}

/// One platform's image: its gzipped layers and its config.
pub struct ImageSpec {
    pub os: &'static str,
    pub arch: &'static str,
    pub variant: Option<&'static str>,
    pub layers: Vec<Vec<u8>>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
}

impl ImageSpec {
    pub fn busybox(os: &'static str, arch: &'static str, variant: Option<&'static str>) -> Self {
        let platform = match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        };
        Self {
            os,
            arch,
            variant,
            layers: vec![gzip(&busybox_layer(&platform))],
            env: vec![
                "PATH=/bin".into(),
                "IMAGE_GREETING=hello from the image".into(),
            ],
            user: None,
            cmd: vec!["/bin/sh".into()],
            working_dir: "/".into(),
        }
    }
}

fn put(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let d = digest(bytes);
    let path = dir
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("blobs");
    std::fs::write(path, bytes).expect("blob");
    (d, bytes.len() as u64)
}

fn descriptor(media: &str, (digest, size): &(String, u64)) -> serde_json::Value {
    serde_json::json!({"mediaType": media, "digest": digest, "size": size})
}

/// Writes an OCI image layout at `dir` holding `images` under the name `tag` (a multi-platform
/// index when there are several). Returns the digest of each image manifest.
pub fn write_layout(dir: &Path, tag: &str, images: &[ImageSpec]) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("layout");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let mut manifests = Vec::new();
    for image in images {
        let layers: Vec<(String, u64)> = image.layers.iter().map(|l| put(dir, l)).collect();
        let diff_ids: Vec<String> = image
            .layers
            .iter()
            .map(|l| {
                let mut raw = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&l[..]), &mut raw)
                    .expect("gunzip");
                digest(&raw)
            })
            .collect();
        let mut config = serde_json::json!({
            "architecture": image.arch,
            "os": image.os,
            "config": {"Env": image.env, "Cmd": image.cmd, "WorkingDir": image.working_dir},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(v) = image.variant {
            config["variant"] = v.into();
        }
        if let Some(u) = &image.user {
            config["config"]["User"] = u.clone().into();
        }
        let config = put(dir, &serde_json::to_vec(&config).expect("config"));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
        });
        let manifest = put(dir, &serde_json::to_vec(&manifest).expect("manifest"));
        let mut platform = serde_json::json!({"os": image.os, "architecture": image.arch});
        if let Some(v) = image.variant {
            platform["variant"] = v.into();
        }
        manifests.push((manifest, platform));
    }
    let ref_name = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let top = if manifests.len() == 1 {
        let mut d = descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            &manifests[0].0,
        );
        d["annotations"] = ref_name;
        d
    } else {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests.iter().map(|(m, p)| {
                let mut d = descriptor("application/vnd.oci.image.manifest.v1+json", m);
                d["platform"] = p.clone();
                d
            }).collect::<Vec<_>>(),
        });
        let index = put(dir, &serde_json::to_vec(&index).expect("index"));
        let mut d = descriptor("application/vnd.oci.image.index.v1+json", &index);
        d["annotations"] = ref_name;
        d
    };
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("index.json");
    manifests.into_iter().map(|(m, _)| m.0).collect()
}

/// Writes `docker save` output (the legacy layout: `<id>/layer.tar`, `<config>.json`,
/// `manifest.json` with `RepoTags`) for one busybox image.
pub fn write_docker_save(file: &Path, repo_tag: &str) {
    let image = ImageSpec::busybox("linux", host_arch(), None);
    let raw = busybox_layer("docker-save");
    let layer_id = hex::encode(Sha256::digest(&raw));
    let config = serde_json::json!({
        "architecture": image.arch, "os": "linux",
        "config": {"Env": image.env, "Cmd": image.cmd},
        "rootfs": {"type": "layers", "diff_ids": [digest(&raw)]},
    });
    let config = serde_json::to_vec(&config).expect("config");
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": [repo_tag], "Layers": [format!("{layer_id}/layer.tar")],
    }]);
    let mut b = tar::Builder::new(std::fs::File::create(file).expect("tarball"));
    for (name, bytes) in [
        (format!("{layer_id}/layer.tar"), raw),
        (config_name, config),
        (
            "manifest.json".to_owned(),
            serde_json::to_vec(&manifest).expect("manifest"),
        ),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        b.append_data(&mut h, name, &bytes[..]).expect("entry");
    }
    b.finish().expect("tar");
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A one-platform busybox image for this host, as an oci-archive named `name` written by skopeo
/// at `dir/busybox.tar` (its layout stays at `dir/layout`, tag `1`).
pub fn busybox_archive(dir: &Path, name: &str) -> PathBuf {
    let layout = dir.join("layout");
    write_layout(
        &layout,
        "1",
        &[ImageSpec::busybox("linux", host_arch(), None)],
    );
    let archive = dir.join("busybox.tar");
    skopeo_copy(
        &format!("oci:{}:1", layout.display()),
        &format!("oci-archive:{}:{name}", archive.display()),
        &[],
    );
    archive
}

/// `image` as an oci-archive named `name` at `dir/image.tar` (its layout in `dir/layout`).
pub fn image_archive(dir: &Path, name: &str, image: ImageSpec) -> PathBuf {
    let layout = dir.join("layout");
    write_layout(&layout, "1", &[image]);
    let archive = dir.join("image.tar");
    skopeo_copy(
        &format!("oci:{}:1", layout.display()),
        &format!("oci-archive:{}:{name}", archive.display()),
        &[],
    );
    archive
}

/// `skopeo copy` (Debian), the independent client that pushes our layouts.
pub fn skopeo_copy(from: &str, to: &str, extra: &[&str]) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .args([from, to])
        .output()
        .expect("skopeo is installed");
    assert!(
        out.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real distribution registry (Debian's `docker-registry`) on a loopback port.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    /// The bearer-token issuer of a token-auth registry.
    token_server: Option<Child>,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With `credentials`, every request needs HTTP basic auth (an htpasswd file with a bcrypt
    /// hash, as the registry requires).
    pub fn start_with(credentials: Option<(&str, &str)>) -> Self {
        Self::launch(credentials.map(|(u, p)| Auth::Basic(u, p)))
    }

    /// Token auth as Docker Hub and GHCR do it: the registry answers 401 with a Bearer challenge
    /// naming a token server (`token_server.py`, a test double: an issuer is not something Debian
    /// packages) that hands out signed JWTs for `user`/`password`.
    pub fn start_with_token(user: &str, password: &str) -> Self {
        Self::launch(Some(Auth::Token(user, password)))
    }

    fn launch(auth: Option<Auth<'_>>) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let port = super::free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut token_server = None;
        if let Some(Auth::Token(user, password)) = auth {
            let token_port = super::free_port();
            let cert = dir.path().join("issuer.pem");
            let child = Command::new("python3")
                .arg(super::repo("tests/tests/support/token_server.py"))
                .args([
                    &token_port.to_string(),
                    &cert.display().to_string(),
                    user,
                    password,
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("token.log")).expect("log"))
                .spawn()
                .expect("python3 with cryptography");
            let up = super::wait_until(Duration::from_secs(20), || {
                cert.exists() && std::net::TcpStream::connect(("127.0.0.1", token_port)).is_ok()
            });
            assert!(
                up,
                "token server did not start: {}",
                std::fs::read_to_string(dir.path().join("token.log")).unwrap_or_default()
            );
            token_server = Some(child);
            config.push_str(&format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: spillway-test-registry\n    issuer: spillway-test\n    rootcertbundle: {}\n",
                cert.display()
            ));
        }
        if let Some(Auth::Basic(user, password)) = auth {
            let hash = Command::new("python3")
                .args(["-W", "ignore", "-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))", password])
                .output()
                .expect("python3");
            let hash = String::from_utf8_lossy(&hash.stdout).trim().to_owned();
            assert!(hash.starts_with("$2"), "bcrypt hash: {hash}");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: spillway-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let child = Command::new("docker-registry")
            .args(["serve"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log"))
            .spawn()
            .expect("docker-registry is installed");
        let up = super::wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "registry did not start");
        Self {
            dir,
            port,
            child,
            token_server,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Writes `images` as an OCI layout (an index when there are several) and pushes it as
    /// `repo:1` with skopeo, logging in with `creds` (`user:password`) if given. Returns the
    /// digests of the image manifests.
    pub fn push(&self, repo: &str, images: &[ImageSpec], creds: Option<&str>) -> Vec<String> {
        let layout = self
            .dir
            .path()
            .join(format!("layout-{}", repo.replace('/', "-")));
        let digests = write_layout(&layout, "1", images);
        let mut extra = vec!["--all"];
        if let Some(creds) = creds {
            extra.extend(["--dest-creds", creds]);
        }
        skopeo_copy(
            &format!("oci:{}:1", layout.display()),
            &format!("docker://{}/{repo}:1", self.host()),
            &extra,
        );
        digests
    }

    /// The registry's stored copy of a blob (to corrupt it on purpose).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.token_server.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    Basic(&'a str, &'a str),
    Token(&'a str, &'a str),
}
