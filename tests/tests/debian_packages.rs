//! The Debian packages as a user meets them: `cross/debian.sh` packages the three static builds
//! (cargo-deb) into a signed apt repository; lintian finds nothing to say about them; and on two
//! clean Debian 12 roots (mmdebstrap, with systemd) in two network namespaces, `apt install`
//! from the repository over HTTP installs the coordinator on one and the agent on the other.
//! `systemd-analyze verify` checks the installed units there; the units' own commands start the
//! installed binaries there (the coordinator as an unprivileged user, as `DynamicUser=` runs it);
//! the agent joins the coordinator and is Ready. Purging removes what the packages installed.
//!
//! Ignored by a plain `cargo test`: it needs the three static builds of `cross/build.sh` and a
//! clean root that scripts/test.sh makes once with mmdebstrap:
//!   SPILLWAY_CROSS_TARGET=$CARGO_TARGET_DIR SPILLWAY_DEBIAN_ROOT=/var/cache/spillway/debian12-root.tar \
//!     cargo test -p spillway-tests --test debian_packages -- --ignored

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::netns::{FolderServer, Hosts};
use support::{output, repo, wait_until};

const ARCHES: [(&str, &str); 3] = [
    ("amd64", "x86_64-unknown-linux-gnu"),
    ("arm64", "aarch64-unknown-linux-gnu"),
    ("armhf", "armv7-unknown-linux-gnueabihf"),
];

fn env_path(name: &str) -> PathBuf {
    let p = PathBuf::from(
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} must be set (see this file's header)")),
    );
    assert!(p.exists(), "{name}={} does not exist", p.display());
    p
}

/// A clean root of Debian 12 (apt, systemd) in `dir`, from the cached mmdebstrap tarball.
fn clean_root(dir: &Path) -> PathBuf {
    let root = dir.to_owned();
    std::fs::create_dir_all(&root).unwrap();
    output(
        Command::new("tar")
            .arg("-xf")
            .arg(env_path("SPILLWAY_DEBIAN_ROOT"))
            .arg("-C")
            .arg(&root),
    );
    root
}

/// `ARGS` run by chroot in `root`, inside `netns`, with /proc, /sys and /dev mounted in the
/// namespace's own mount table (gone when the command ends). `user` runs it as that uid.
fn in_root(netns: &str, root: &Path, user: Option<u32>, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "sh", "-c"])
        .arg(
            "r=$1; u=$2; shift 2; mount -t proc proc \"$r/proc\" && mount --rbind /sys \"$r/sys\" \
             && mount --rbind /dev \"$r/dev\" \
             && if [ -n \"$u\" ]; then exec chroot --userspec=\"$u:$u\" \"$r\" \"$@\"; \
                else exec chroot \"$r\" \"$@\"; fi",
        )
        .arg("sh")
        .arg(root)
        .arg(user.map(|u| u.to_string()).unwrap_or_default())
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// A unit's `Key=` value.
fn setting(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_owned()
}

/// The command of a unit's `ExecStart=` and its `Environment=`, as systemd would run it.
fn exec_start(root: &Path, unit: &str) -> (Vec<String>, (String, String)) {
    let text = std::fs::read_to_string(root.join("lib/systemd/system").join(unit)).unwrap();
    let argv: Vec<String> = setting(&text, "ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let (k, v) = setting(&text, "Environment")
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .unwrap();
    (argv, (k, v))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn extract(deb: &Path, into: &Path) {
    output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into));
}

#[test]
#[ignore = "needs the three static builds of cross/build.sh and a clean Debian root (scripts/test.sh)"]
fn packages_pass_lintian_install_from_the_apt_repository_and_their_units_run_and_join() {
    let target = env_path("SPILLWAY_CROSS_TARGET");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("archive-key");
    let script = repo("cross/debian.sh");
    output(Command::new(&script).arg("--new-key").arg(&key));
    let out = dir.path().join("debian");
    output(
        Command::new(&script)
            .arg("--bin")
            .arg(target.join("bin"))
            .arg("--out")
            .arg(&out)
            .arg("--gnupg-home")
            .arg(&key)
            .arg("--fast"),
    );

    // Six packages, each holding exactly the static binary cross/build.sh made for its
    // architecture, its unit, and its config as a conffile.
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    let mut debs = Vec::new();
    for (arch, triple) in ARCHES {
        for (package, binary, conffile) in [
            (
                "spillway-agent",
                "spillway-agent",
                "/etc/spillway/agent.toml",
            ),
            (
                "spillway-coordinator",
                "spillway",
                "/etc/spillway/coordinator.toml",
            ),
        ] {
            let deb = out.join(format!("{package}_{version}_{arch}.deb"));
            assert!(deb.is_file(), "{} was not made", deb.display());
            let fields = output(Command::new("dpkg-deb").arg("-f").arg(&deb).args([
                "Package",
                "Architecture",
                "Version",
            ]));
            assert_eq!(
                fields,
                format!("Package: {package}\nArchitecture: {arch}\nVersion: {version}\n")
            );
            let unpacked = dir.path().join(format!("unpacked-{package}-{arch}"));
            extract(&deb, &unpacked);
            assert_eq!(
                std::fs::read(unpacked.join("usr/bin").join(binary)).unwrap(),
                std::fs::read(target.join("bin").join(triple).join(binary)).unwrap(),
                "{package} {arch}: usr/bin/{binary} is not the static build"
            );
            assert_eq!(
                std::fs::read_to_string(
                    unpacked.join(format!("usr/lib/systemd/system/{package}.service"))
                )
                .unwrap(),
                std::fs::read_to_string(repo(&format!("configs/systemd/{package}.service")))
                    .unwrap()
            );
            let control = dir.path().join(format!("control-{package}-{arch}"));
            output(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
            assert_eq!(
                std::fs::read_to_string(control.join("conffiles"))
                    .unwrap()
                    .trim(),
                conffile
            );
            debs.push(deb);
        }
    }

    // lintian, Debian's package checker: no error and no warning (overrides say why).
    let lintian = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--fail-on", "error,warning"])
        .args(&debs)
        .output()
        .expect("lintian (Debian package lintian)");
    assert!(
        lintian.status.success(),
        "lintian:\n{}{}",
        String::from_utf8_lossy(&lintian.stdout),
        String::from_utf8_lossy(&lintian.stderr)
    );

    // The repository, served over HTTP from the coordinator's host.
    let hosts = Hosts::new();
    let port = support::free_port();
    let _http = FolderServer::start(&hosts.c, &hosts.c_ip, port, &out.join("apt"));
    let repo_url = format!("http://{}:{port}", hosts.c_ip);
    let server = clean_root(&dir.path().join("server"));
    let board = clean_root(&dir.path().join("board"));
    let apt = |netns: &str, root: &Path, args: &[&str]| {
        let o = in_root(netns, root, None, args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for (netns, root) in [(&hosts.c, &server), (&hosts.a, &board)] {
        // Only Spillway's repository, trusted through its key alone (signed-by).
        std::fs::copy(
            out.join("apt/spillway-archive-keyring.gpg"),
            root.join("usr/share/keyrings/spillway.gpg"),
        )
        .unwrap();
        std::fs::write(
            root.join("etc/apt/sources.list"),
            format!("deb [signed-by=/usr/share/keyrings/spillway.gpg] {repo_url} stable main\n"),
        )
        .unwrap();
        for other in std::fs::read_dir(root.join("etc/apt/sources.list.d")).unwrap() {
            std::fs::remove_file(other.unwrap().path()).unwrap();
        }
        assert!(wait_until(Duration::from_secs(10), || {
            in_root(netns, root, None, &["apt-get", "-q", "update"])
                .output()
                .is_ok_and(|o| o.status.success())
        }));
    }
    let said = apt(
        &hosts.c,
        &server,
        &["apt-get", "install", "-y", "-q", "spillway-coordinator"],
    );
    assert!(said.contains("spillway token create"), "{said}");
    let said = apt(
        &hosts.a,
        &board,
        &["apt-get", "install", "-y", "-q", "spillway-agent"],
    );
    assert!(
        said.contains("spillway-agent --config /etc/spillway/agent.toml join"),
        "{said}"
    );

    // Installed where the units look; the coordinator enabled, the agent left for after `join`.
    // (The links point into the root, at /lib/…: look at the links, not through them.)
    let wants = "etc/systemd/system/multi-user.target.wants";
    let linked = |root: &Path, unit: &str| root.join(wants).join(unit).symlink_metadata().is_ok();
    assert!(linked(&server, "spillway-coordinator.service"));
    assert!(!linked(&board, "spillway-agent.service"));
    for (root, unit) in [
        (&server, "spillway-coordinator.service"),
        (&board, "spillway-agent.service"),
    ] {
        let verify = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(unit)
            .output()
            .unwrap();
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "{unit}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    // The coordinator's unit command, run as a user of its own that owns only the
    // StateDirectory (what DynamicUser= and StateDirectory= give it).
    let (argv, env) = exec_start(&server, "spillway-coordinator.service");
    let state = server.join("var/lib/spillway-coordinator");
    std::fs::create_dir_all(&state).unwrap();
    output(Command::new("chown").arg("61234:61234").arg(&state));
    let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let _coordinator = Running(
        in_root(&hosts.c, &server, Some(61234), &argv)
            .env(&env.0, &env.1)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let coordinator_log = || std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    // Root's `spillway` on the coordinator's host finds the service's client config by itself.
    let cli = |args: &[&str]| in_root(&hosts.c, &server, None, args).output().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || cli(&[
            "spillway", "get", "nodes"
        ])
        .status
        .success()),
        "the packaged coordinator did not serve:\n{}",
        coordinator_log()
    );
    let token = cli(&["spillway", "token", "create"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();

    // The user names the board in the conffile, joins, then the unit's command runs the agent.
    let conf = board.join("etc/spillway/agent.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("# node_name = "), "{text}");
    std::fs::write(
        &conf,
        text.replace("# node_name = ", "node_name = \"pi-packaged\" # "),
    )
    .unwrap();
    let quic = format!("{}:7443", hosts.c_ip);
    apt(
        &hosts.a,
        &board,
        &[
            "spillway-agent",
            "--config",
            "/etc/spillway/agent.toml",
            "join",
            "--coordinator",
            &quic,
            "--token",
            &token,
        ],
    );
    let (argv, env) = exec_start(&board, "spillway-agent.service");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let agent_log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let agent = Running(
        in_root(&hosts.a, &board, None, &argv)
            .env(&env.0, &env.1)
            .stdout(Stdio::null())
            .stderr(agent_log)
            .spawn()
            .unwrap(),
    );
    let ready = wait_until(Duration::from_secs(30), || {
        let o = cli(&["spillway", "-o", "json", "get", "nodes"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|v| {
            v.as_array()
                .into_iter()
                .flatten()
                .any(|n| n["name"] == "pi-packaged" && n["health"] == "Ready")
        })
    });
    drop(agent);
    assert!(
        ready,
        "the packaged agent did not become Ready:\n{}\n{}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap(),
        coordinator_log()
    );

    // Purging takes the binary, the unit and the conffile; the agent's state stays (it is data).
    apt(
        &hosts.a,
        &board,
        &["apt-get", "purge", "-y", "-q", "spillway-agent"],
    );
    for gone in [
        "usr/bin/spillway-agent",
        "usr/lib/systemd/system/spillway-agent.service",
        "etc/spillway/agent.toml",
    ] {
        assert!(
            !board.join(gone).exists(),
            "{gone} is still there after purge"
        );
    }
    assert!(board.join("var/lib/spillway/state").is_dir());
}
