//! Installing an agent as a newcomer would: a release made by `cross/release.sh` (tarball,
//! SHA256SUMS, its Ed25519 signature), served over HTTP from one host, and `install.sh` run on
//! another (network namespaces) that checks it, installs and joins. Every refusal leaves nothing
//! installed.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::netns::{FolderServer, Hosts};
use support::{Coordinator, bin, command_in, free_port, output, repo, wait_until};

/// A release of the binaries under test, signed with a fresh key: (its folder, the key's
/// public half). Binaries are stripped first, as release builds are.
fn release(dir: &Path) -> (PathBuf, PathBuf) {
    let bins = dir.join("bin/x86_64-unknown-linux-gnu");
    std::fs::create_dir_all(&bins).unwrap();
    for name in ["spillway", "spillway-agent"] {
        output(
            Command::new("strip")
                .arg("-o")
                .arg(bins.join(name))
                .arg(bin(name)),
        );
    }
    let key = dir.join("release.key");
    let script = repo("cross/release.sh");
    let run = |args: &[&str]| output(Command::new(&script).args(args));
    run(&["--new-key", key.to_str().unwrap()]);
    let archive_key = dir.join("archive-key");
    output(
        Command::new(repo("cross/debian.sh"))
            .arg("--new-key")
            .arg(&archive_key),
    );
    let out = dir.join("release");
    run(&[
        "--key",
        key.to_str().unwrap(),
        "--gnupg-home",
        archive_key.to_str().unwrap(),
        "--fast",
        "--bin",
        dir.join("bin").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    (out, dir.join("release.key.pub"))
}

/// `install.sh ARGS` in `netns` (if any): (success, stderr).
fn install(netns: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = command_in(netns, Path::new("sh"));
    let out = cmd
        .arg(repo("scripts/install.sh"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An agent config whose paths stay under `root` (the test's stand-in for `/`).
fn config(dir: &Path, root: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "node_name = \"{name}\"\ndata_root = \"{0}/var/lib/spillway/data\"\nstate_dir = \"{0}/var/lib/spillway/state\"\n",
            root.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn install_sh_fetches_a_signed_release_over_http_installs_and_joins_in_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let (release, pubkey) = release(dir.path());
    let hosts = Hosts::new();
    let c = Coordinator::on(Some(&hosts.c), &hosts.c_ip);
    let port = free_port();
    let _server = FolderServer::start(&hosts.c, &hosts.c_ip, port, &release);
    // The SBOM of the build is part of the signed release.
    let sums = std::fs::read_to_string(release.join("SHA256SUMS")).unwrap();
    let sbom_name = format!(
        "spillway-{}-linux-x86_64.cdx.json",
        env!("CARGO_PKG_VERSION")
    );
    assert!(sums.contains(&sbom_name), "{sums}");
    // So are the Debian packages, beside their signed apt repository.
    let version = env!("CARGO_PKG_VERSION");
    for package in ["spillway-agent", "spillway-coordinator"] {
        assert!(
            sums.contains(&format!("  {package}_{version}-1_amd64.deb\n")),
            "{sums}"
        );
    }
    assert!(release.join("apt/dists/stable/InRelease").is_file());
    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(release.join(&sbom_name)).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let crates: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for needed in [
        "rustls",
        "quinn",
        "wasmtime",
        "libcontainer",
        "spillway-agent",
    ] {
        assert!(crates.contains(&needed), "{needed} not in the SBOM");
    }
    let url = format!("http://{}:{port}", hosts.c_ip);
    assert!(wait_until(Duration::from_secs(10), || {
        command_in(Some(&hosts.a), Path::new("curl"))
            .args(["-fs", "-o", "/dev/null", &format!("{url}/SHA256SUMS")])
            .status()
            .is_ok_and(|s| s.success())
    }));

    let root = dir.path().join("board");
    let agent_toml = config(dir.path(), &root, "pi-new");
    let token = c.token();
    let (ok, err) = install(
        Some(&hosts.a),
        &[
            "--from",
            &url,
            "--pubkey",
            pubkey.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--config",
            agent_toml.to_str().unwrap(),
            "--coordinator",
            &c.quic(),
            "--token",
            &token,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("installed spillway-agent ") && err.contains("for x86_64"),
        "{err}"
    );
    assert!(err.contains("joined the mesh"), "{err}");
    assert!(err.contains("not started here"), "{err}");
    let installed = root.join("usr/local/bin/spillway-agent");
    for f in [
        "usr/local/bin/spillway-agent",
        "etc/systemd/system/spillway-agent.service",
        "etc/spillway/agent.toml",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    assert!(
        root.join("var/lib/spillway/state/identity/coordinator")
            .exists()
    );

    // The agent it installed runs and links as the node it joined as.
    let mut agent = command_in(Some(&hosts.a), &installed)
        .arg("--config")
        .arg(root.join("etc/spillway/agent.toml"))
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_until(Duration::from_secs(20), || {
        c.health("pi-new").as_deref() == Some("Ready")
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(ready, "{}", c.log());
}

#[test]
fn a_changed_tarball_a_foreign_key_or_a_forged_checksum_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (release, pubkey) = release(dir.path());
    let tarball = std::fs::read_dir(&release)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-linux-x86_64.tar.gz"))
        .unwrap();
    let copy = |name: &str| {
        let to = dir.path().join(name);
        output(Command::new("cp").arg("-r").arg(&release).arg(&to));
        to
    };
    let tarball_name = tarball.file_name().unwrap().to_owned();

    // One byte of the tarball changed (a bad mirror, a cut download).
    let changed = copy("changed");
    let mut bytes = std::fs::read(changed.join(&tarball_name)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(changed.join(&tarball_name), bytes).unwrap();
    // SHA256SUMS rewritten to match a changed tarball: its signature no longer verifies.
    let forged = copy("forged");
    std::fs::write(forged.join(&tarball_name), b"not the release").unwrap();
    output(
        Command::new("sh")
            .arg("-c")
            .arg("sha256sum -- *.tar.gz *.cdx.json install.sh > SHA256SUMS")
            .current_dir(&forged),
    );
    // A key the release was not signed with.
    let other = dir.path().join("other.key");
    output(Command::new(repo("cross/release.sh")).args(["--new-key", other.to_str().unwrap()]));
    let other_pub = dir.path().join("other.key.pub");

    for (from, key, why) in [
        (&changed, &pubkey, "does not match its SHA-256"),
        (&forged, &pubkey, "does not verify"),
        (&release, &other_pub, "does not verify"),
    ] {
        let root = dir.path().join("board");
        let (ok, err) = install(
            None,
            &[
                "--from",
                from.to_str().unwrap(),
                "--pubkey",
                key.to_str().unwrap(),
                "--root",
                root.to_str().unwrap(),
                "--no-start",
            ],
        );
        assert!(!ok, "installed from {}", from.display());
        assert!(
            err.contains(why) && err.contains("nothing was installed"),
            "{err}"
        );
        assert!(!root.exists(), "something was installed: {err}");
    }

    // Without a key to trust, or a machine it has no build for: refused before anything.
    let (ok, err) = install(None, &["--from", release.to_str().unwrap()]);
    assert!(!ok && err.contains("--pubkey FILE"), "{err}");
    let (ok, err) = install(
        None,
        &[
            "--from",
            release.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
            "--arch",
            "mips",
        ],
    );
    assert!(!ok && err.contains("no single tarball for mips"), "{err}");
}
