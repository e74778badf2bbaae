//! Spillway's own multi-platform images (`cross/build.sh --images`), checked by independent tools
//! and pulled back by the agent's own image puller: `skopeo inspect` reads the index (amd64,
//! arm64, arm/v7), `umoci unpack` each platform's image, `skopeo copy --all` pushes the archive to
//! Debian's docker-registry on loopback, and `spillway-agent pull --platform P` gets every
//! platform back; the binaries inside are the ones `cross/build.sh` built.
//!
//! Ignored by a plain `cargo test` (it needs the three static builds); scripts/test.sh runs it
//! after `cross/build.sh … --images`, which leaves the binaries in `$CARGO_TARGET_DIR/bin/TRIPLE/`
//! and the archives in `$CARGO_TARGET_DIR/images/`:
//!   SPILLWAY_CROSS_TARGET=$CARGO_TARGET_DIR cargo test -p spillway-tests --test images -- --ignored

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::oci::{Registry, skopeo_copy};
use support::{Node, output};

const PLATFORMS: [(&str, &str, &str); 3] = [
    ("linux/amd64", "amd64", "x86_64-unknown-linux-gnu"),
    ("linux/arm64", "arm64", "aarch64-unknown-linux-gnu"),
    ("linux/arm/v7", "armv7", "armv7-unknown-linux-gnueabihf"),
];

fn target() -> PathBuf {
    let dir =
        PathBuf::from(std::env::var("SPILLWAY_CROSS_TARGET").expect(
            "SPILLWAY_CROSS_TARGET must name the target folder of `cross/build.sh --images`",
        ));
    assert!(
        dir.join("images/spillway-agent.oci.tar").is_file(),
        "no images in {}: run cross/build.sh --images",
        dir.display()
    );
    dir
}

/// Where `cross/build.sh` put `binary` for `triple` (whatever profile it built).
fn built(target: &Path, triple: &str, binary: &str) -> PathBuf {
    target.join("bin").join(triple).join(binary)
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read") == std::fs::read(b).expect("read")
}

/// The archive's index, each platform unpacked by umoci: the right binary, owner and user.
fn check_archive(target: &Path, component: &str, binary: &str, user: &str) -> String {
    let archive = target.join(format!("images/spillway-{component}.oci.tar"));
    let tag = env!("CARGO_PKG_VERSION");
    let raw = output(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}:{tag}", archive.display())),
    );
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            match p["variant"].as_str() {
                Some(v) => format!(
                    "{}/{}/{v}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
                None => format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
            }
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);

    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(&layout).expect("mkdir");
    output(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    for (platform, suffix, triple) in PLATFORMS {
        let bundle = dir.path().join(suffix);
        output(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:{tag}-{suffix}", layout.display()))
                .arg(&bundle),
        );
        let inside = bundle.join("rootfs/usr/local/bin").join(binary);
        let built = built(target, triple, binary);
        assert!(
            same_file(&inside, &built),
            "{platform}: {} differs from {}",
            inside.display(),
            built.display()
        );
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(bundle.join("config.json")).expect("config"),
        )
        .expect("runtime config");
        let uid = config["process"]["user"]["uid"].as_u64();
        assert_eq!(
            uid.map(|u| u.to_string()).as_deref(),
            Some(user),
            "{platform}"
        );
        assert!(
            bundle
                .join("rootfs/etc/ssl/certs/ca-certificates.crt")
                .is_file()
        );
        let passwd = std::fs::read_to_string(bundle.join("rootfs/etc/passwd")).expect("passwd");
        assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    }
    // The amd64 image's binary runs here, from inside the unpacked image.
    let version = output(
        Command::new(dir.path().join("amd64/rootfs/usr/local/bin").join(binary)).arg("--version"),
    );
    assert!(version.contains(tag), "{version}");
    archive.display().to_string()
}

#[test]
#[ignore = "needs the three static builds and images of `cross/build.sh --images`"]
fn the_multi_platform_images_validate_push_and_pull_back_with_the_agents_puller() {
    let target = target();
    let agent_archive = check_archive(&target, "agent", "spillway-agent", "0");
    check_archive(&target, "coordinator", "spillway", "65532");

    let registry = Registry::start();
    let tag = env!("CARGO_PKG_VERSION");
    let reference = format!("{}/spillway/agent:{tag}", registry.host());
    skopeo_copy(
        &format!("oci-archive:{agent_archive}:{tag}"),
        &format!("docker://{reference}"),
        &["--all"],
    );
    let node = Node::new("");
    for (platform, _, triple) in PLATFORMS {
        let (ok, out, err) = node.agent_cli(&["pull", &reference, "--platform", platform]);
        assert!(ok, "pull --platform {platform}: {out}{err}");
        let (ok, list, err) = node.agent_cli(&["images"]);
        assert!(ok && list.contains(platform), "{list}{err}");
        // The store's unpacked root holds exactly the binary cross/build.sh made.
        let built = built(&target, triple, "spillway-agent");
        let found = support::files_under(&node.path("state/images/rootfs"))
            .into_iter()
            .filter(|f| f.ends_with("usr/local/bin/spillway-agent"))
            .any(|f| same_file(&node.path("state/images/rootfs").join(&f), &built));
        assert!(
            found,
            "{platform}: the pulled image does not hold {}",
            built.display()
        );
    }
}
