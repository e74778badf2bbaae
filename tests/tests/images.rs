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

/// A container of the coordinator image, run by crun as the image says (its user, entrypoint and
/// config) in network namespace `netns`, with a volume at /var/lib/spillway and, if given, a
/// config mounted over the image's. Killed and deleted on drop.
struct CoordinatorContainer {
    id: String,
    state: tempfile::TempDir,
    child: std::process::Child,
    volume: PathBuf,
}

impl CoordinatorContainer {
    fn run(bundle: &Path, netns: &str, env: &[&str], config: Option<&Path>) -> Self {
        let volume = bundle.with_extension("volume");
        std::fs::create_dir_all(&volume).unwrap();
        output(Command::new("chown").arg("65532:65532").arg(&volume));
        let path = bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        let vars = spec["process"]["env"].as_array_mut().unwrap();
        vars.extend(env.iter().map(|e| serde_json::Value::from(*e)));
        // The test's host, as a CNI plugin would give the container one.
        for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = format!("/var/run/netns/{netns}").into();
            }
        }
        let mounts = spec["mounts"].as_array_mut().unwrap();
        let bind = |source: &Path, destination: &str| {
            serde_json::json!({"destination": destination, "type": "bind",
                "source": source, "options": ["rbind", "rw"]})
        };
        mounts.push(bind(&volume, "/var/lib/spillway"));
        if let Some(config) = config {
            mounts.push(bind(config, "/etc/spillway/coordinator.toml"));
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let state = tempfile::tempdir().unwrap();
        let id = format!("spw-coordinator-{}-{netns}", std::process::id());
        let log = std::fs::File::create(bundle.with_extension("log")).unwrap();
        // crun refuses this host's hybrid cgroups: it runs in a mount namespace of its own
        // without the cgroup2 mount, as the OCI bench runs it.
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"")
            .arg("crun")
            .arg("--root")
            .arg(state.path())
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare and crun (Debian packages util-linux, crun)");
        Self {
            id,
            state,
            child,
            volume,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.volume.with_extension("log")).unwrap_or_default()
    }

    /// `spillway ARGS` from `netns` against the container's API at `url`, with the client
    /// config the coordinator wrote to its volume.
    fn cli(&self, netns: &str, url: &str, args: &[&str]) -> (bool, String, String) {
        let out = support::command_in(Some(netns), &support::bin("spillway"))
            .arg("--client-config")
            .arg(self.volume.join("client.toml"))
            .args(["--coordinator", url])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for CoordinatorContainer {
    fn drop(&mut self) {
        let crun = |args: &[&str]| {
            let _ = Command::new("crun")
                .arg("--root")
                .arg(self.state.path())
                .args(args)
                .output();
        };
        crun(&["kill", &self.id, "KILL"]);
        let _ = self.child.wait();
        crun(&["delete", "--force", &self.id]);
    }
}

#[test]
#[ignore = "needs the images of `cross/build.sh --images`"]
fn the_coordinator_image_serves_on_the_containers_interface_from_env_or_a_mounted_config() {
    let target = target();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    output(
        Command::new("tar")
            .arg("-xf")
            .arg(target.join("images/spillway-coordinator.oci.tar"))
            .arg("-C")
            .arg(&layout),
    );
    let unpack = |name: &str| {
        let bundle = dir.path().join(name);
        output(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!(
                    "{}:{}-amd64",
                    layout.display(),
                    env!("CARGO_PKG_VERSION")
                ))
                .arg(&bundle),
        );
        bundle
    };

    // The image's own config, with the environment naming the address the CLI uses.
    let hosts = support::netns::Hosts::new();
    let url = format!("https://{}:7480", hosts.c_ip);
    let first = CoordinatorContainer::run(
        &unpack("env"),
        &hosts.c,
        &[
            &format!("SPILLWAY_HTTP_TLS_NAMES={}", hosts.c_ip),
            "SPILLWAY_NAME=edge-coordinator",
        ],
        None,
    );
    // From the other host: HTTPS verified against the CA the coordinator made in its volume.
    let serving = support::wait_until(std::time::Duration::from_secs(30), || {
        first.cli(&hosts.a, &url, &["get", "nodes"]).0
    });
    assert!(
        serving,
        "the coordinator image did not serve {url}:\n{}",
        first.log()
    );
    let ca = output(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(first.volume.join("ca/ca.crt")),
    );
    assert!(ca.contains("edge-coordinator"), "{ca}");
    // Agents join over QUIC on the container's interface.
    let (ok, token, err) = first.cli(&hosts.a, &url, &["token", "create"]);
    assert!(ok, "{err}");
    let node = support::Node::new_named("joins-image", "");
    let quic = format!("{}:7443", hosts.c_ip);
    let (ok, out, err) = support::command_in(Some(&hosts.a), &support::bin("spillway-agent"))
        .arg("--config")
        .arg(node.path("agent.toml"))
        .args(["join", "--coordinator", &quic, "--token", token.trim()])
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert!(ok, "join over QUIC: {out}{err}\n{}", first.log());
    drop(first);

    // A config mounted over the image's: its listener is the one served.
    let config = dir.path().join("mounted.toml");
    std::fs::write(
        &config,
        "name = \"mounted\"\nstate_dir = \"/var/lib/spillway\"\n[quic]\nlisten = \"0.0.0.0:7443\"\n[http]\nlisten = \"0.0.0.0:8480\"\ntls_names = [\"spillway.lan\"]\n",
    )
    .unwrap();
    let second = CoordinatorContainer::run(
        &unpack("mounted"),
        &hosts.c,
        &[&format!(
            "SPILLWAY_HTTP_TLS_NAMES=spillway.lan,{}",
            hosts.c_ip
        )],
        Some(&config),
    );
    let url = format!("https://{}:8480", hosts.c_ip);
    let serving = support::wait_until(std::time::Duration::from_secs(30), || {
        second.cli(&hosts.a, &url, &["get", "nodes"]).0
    });
    assert!(
        serving,
        "the mounted config was not served on {url}:\n{}",
        second.log()
    );
    drop(second);

    // A misspelt variable stops it at once, saying which ones there are; nothing is written.
    let third = CoordinatorContainer::run(
        &unpack("typo"),
        &hosts.c,
        &["SPILLWAY_HTTP_LISTN=0.0.0.0:7480"],
        None,
    );
    let mut third = third;
    let status = third.child.wait().unwrap();
    assert_eq!(status.code(), Some(64), "{}", third.log());
    assert!(
        third.log().contains("SPILLWAY_HTTP_LISTN is not a setting"),
        "{}",
        third.log()
    );
    assert_eq!(std::fs::read_dir(&third.volume).unwrap().count(), 0);
}
