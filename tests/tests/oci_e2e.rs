//! The `oci` runtime end to end: real `spillway-agent` processes running container functions
//! with youki's libcontainer (we are root), images from a real registry (Debian's
//! `docker-registry` on loopback, pushed with `skopeo`) and from tarballs, limits enforced by
//! the kernel, and nothing left behind — not even by an agent killed with SIGKILL mid-job.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::containers::{assert_nothing_left, fdl, function, leftovers, reason, wait_finished};
use support::oci::{
    ImageSpec, Registry, busybox_archive, gzip, host_arch, layer, skopeo_copy, write_docker_save,
};
use support::{Node, files_under, wait_until};

/// Pushes a three-platform busybox image to `registry` as `repo:1`; returns the image layout's
/// manifest digests.
fn push_busybox(registry: &Registry, repo: &str) -> Vec<String> {
    registry.push(
        repo,
        &[
            ImageSpec::busybox("linux", "amd64", None),
            ImageSpec::busybox("linux", "arm64", None),
            ImageSpec::busybox("linux", "arm", Some("v7")),
        ],
        None,
    )
}

const PROBE_SH: &str = r#"#!/bin/sh
set -e
sha256sum "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$FILE_NAME.sha256"
gzip -c "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$FILE_NAME.gz"
{
  echo "user=$(id -u)"
  echo "hostname=$(hostname)"
  echo "greeting=$IMAGE_GREETING"
  echo "platform=$(cat /etc/platform)"
  echo "input=$TMP_INPUT_DIR"
  grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t'
  if touch /bin/written 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi
  if touch "$TMP_INPUT_DIR/written" 2>/dev/null; then echo input=rw; else echo input=ro; fi
  echo "net=$(ls /sys/class/net | tr '\n' ' ')"
} > "$TMP_OUTPUT_DIR/probe.txt"
# SCAR's name for the output folder.
echo "via SCAR's folder" > "/tmp/$REQUEST_ID/output/scar.txt"
"#;

#[test]
fn a_function_runs_in_a_container_pulled_from_a_registry_isolated_and_for_this_platform() {
    let registry = Registry::start();
    push_busybox(&registry, "tools/busybox");
    push_busybox(&registry, "tools/early");
    let image = format!("{}/tools/busybox:1", registry.host());
    let early = format!("{}/tools/early:1", registry.host());
    let mut node = Node::new("functions = [\"fn.yaml\"]\n");
    node.write("probe.sh", PROBE_SH);
    node.write(
        "fn.yaml",
        fdl(&[
            function("probe", &image, Some("probe.sh"), "      memory: 64Mi\n"),
            function(
                "early",
                &early,
                Some("probe.sh"),
                "      image_prefetch: true\n",
            ),
        ]),
    );
    node.start();
    // OSCAR's image_prefetch: pulled at deploy time, before any job asks for it.
    assert!(
        wait_until(Duration::from_secs(30), || node
            .agent_cli(&["images"])
            .1
            .contains(&early)),
        "{}",
        node.log()
    );
    assert!(
        !node.agent_cli(&["images"]).1.contains(&image),
        "only the prefetched image is pulled early"
    );
    let input: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    node.write("data/probe/in/photo.bin", &input);
    let (id, state) = wait_finished(&node, "probe/in/photo.bin", Duration::from_secs(120));
    assert_eq!(state, "Succeeded", "{}", node.agent_cli(&["logs", &id]).1);

    let out = |f: &str| std::fs::read(node.path(&format!("data/probe/out/{f}"))).expect(f);
    let hash = String::from_utf8(out("photo.bin.sha256")).expect("utf8");
    assert_eq!(
        hash.split_whitespace().next(),
        Some(hex::encode(Sha256::digest(&input)).as_str())
    );
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&out("photo.bin.gz")[..]),
        &mut unzipped,
    )
    .expect("gunzip");
    assert_eq!(unzipped, input, "gzip output is the input");
    assert_eq!(out("scar.txt"), b"via SCAR's folder\n");
    let probe = String::from_utf8(out("probe.txt")).expect("utf8");
    for want in [
        "user=0",
        "hostname=probe",
        "greeting=hello from the image",
        &format!("platform=linux/{}", host_arch()),
        "Seccomp:2",
        "NoNewPrivs:1",
        "rootfs=ro",
        "input=ro",
        // Its own namespace on the node's bridge (`network: outbound`, the default).
        "net=eth0 lo ",
    ] {
        assert!(
            probe.lines().any(|l| l == want || l.starts_with(want)),
            "missing `{want}` in:\n{probe}"
        );
    }
    let (ok, images, err) = node.agent_cli(&["images"]);
    assert!(ok, "{err}");
    assert!(
        images.contains(&image) && images.contains(&format!("linux/{}", host_arch())),
        "{images}"
    );
    assert_nothing_left(&node);

    // Another board's variant comes out of the same index.
    let other = Node::new("");
    for (platform, expect) in [
        ("linux/arm64", "linux/arm64"),
        ("linux/arm/v7", "linux/arm/v7"),
    ] {
        let (ok, out, err) = other.agent_cli(&["pull", &image, "--platform", platform]);
        assert!(ok && out.contains(expect), "{out}{err}");
        let roots = other.path("state/images/rootfs");
        let found = std::fs::read_dir(&roots)
            .expect("roots")
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path().join("etc/platform")).is_ok_and(|p| p == expect)
            });
        assert!(found, "no {expect} root unpacked");
    }
    let (ok, _, err) = other.agent_cli(&["pull", &image, "--platform", "linux/riscv64"]);
    assert!(
        !ok && err.contains("has no linux/riscv64 variant") && err.contains("linux/arm/v7"),
        "{err}"
    );
    node.stop();
}

#[test]
fn memory_pids_and_timeout_limits_are_enforced_by_the_kernel() {
    // Offline this time: an oci-archive written by skopeo, loaded into the store.
    let tmp = tempfile::tempdir().expect("tmp");
    let archive = busybox_archive(tmp.path(), "localhost/busybox:1");
    let mut node =
        Node::new("functions = [\"fn.yaml\"]\n[oci]\npids_limit = 32\ntmp_size = \"512Mi\"\n");
    let (ok, out, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok && out.contains("localhost/busybox:1"), "{out}{err}");
    // tmpfs pages count against the container's memory cgroup.
    node.write(
        "hog.sh",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=300\necho survived > $TMP_OUTPUT_DIR/x\n",
    );
    node.write(
        "forks.sh",
        "i=0\nwhile [ $i -lt 80 ]; do sleep 20 & i=$((i+1)); echo \"spawned $i\" >&2; done\n",
    );
    node.write("forever.sh", "echo started\nsleep 1000\n");
    let image = "localhost/busybox:1";
    node.write(
        "fn.yaml",
        fdl(&[
            function("hog", image, Some("hog.sh"), "      memory: 32Mi\n"),
            function("forks", image, Some("forks.sh"), ""),
            function("forever", image, Some("forever.sh"), "").replace("timeout: 30", "timeout: 2"),
        ]),
    );
    node.start();
    for f in ["hog", "forks", "forever"] {
        node.write(&format!("data/{f}/in/go"), f);
    }
    let (id, state) = wait_finished(&node, "hog/in/go", Duration::from_secs(60));
    assert_eq!(state, "Failed");
    let why = reason(&node, &id);
    assert!(why.starts_with("out of memory (limit 32Mi)"), "{why}");
    assert!(!node.path("data/hog/out/x").exists());

    // busybox sh gives up when fork fails: the job fails, and says why.
    let (id, state) = wait_finished(&node, "forks/in/go", Duration::from_secs(60));
    assert_eq!(state, "Failed");
    assert!(
        reason(&node, &id).contains("can't fork"),
        "{}",
        reason(&node, &id)
    );
    let (_, log, _) = node.agent_cli(&["logs", &id]);
    let spawned = log
        .lines()
        .filter_map(|l| l.strip_prefix("spawned ")?.parse::<u32>().ok())
        .max()
        .expect("some processes started");
    assert!(
        (10..32).contains(&spawned),
        "{spawned} processes started under a limit of 32"
    );

    let started = std::time::Instant::now();
    let (id, state) = wait_finished(&node, "forever/in/go", Duration::from_secs(60));
    assert_eq!(state, "Failed");
    assert!(
        reason(&node, &id).starts_with("timed out after 2s"),
        "{}",
        reason(&node, &id)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_nothing_left(&node);
    node.stop();
}

#[test]
fn an_agent_killed_mid_job_leaves_no_container_cgroup_mount_or_network_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let archive = tmp.path().join("busybox.tar");
    write_docker_save(&archive, "localhost/busybox:saved");
    let mut node = Node::new("functions = [\"fn.yaml\"]\n[defaults]\nmax_attempts = 1\n");
    let (ok, out, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok && out.contains("localhost/busybox:saved"), "{out}{err}");
    node.write("forever.sh", "echo started\nsleep 1000\n");
    node.write(
        "fn.yaml",
        fdl(&[function(
            "forever",
            "localhost/busybox:saved",
            Some("forever.sh"),
            "",
        )]),
    );
    node.start();
    node.write("data/forever/in/go", "x");
    assert!(
        wait_until(Duration::from_secs(30), || leftovers(&node)
            .iter()
            .any(|l| l.starts_with("cgroup"))),
        "the container never started: {}",
        node.log()
    );
    node.kill9();
    let left = leftovers(&node);
    assert!(
        left.iter().any(|l| l.starts_with("address lease"))
            && left.iter().any(|l| l.starts_with("iptables rule"))
            && left.iter().any(|l| l.starts_with("network namespace file")),
        "a SIGKILLed agent cannot clean up its container's network; the test would prove nothing: {left:?}"
    );
    node.start();
    assert!(
        wait_until(Duration::from_secs(20), || leftovers(&node).is_empty()),
        "left behind after restart: {:?}",
        leftovers(&node)
    );
    assert!(
        node.log()
            .contains("removed containers left running by a previous agent")
            && node
                .log()
                .contains("released container networks left by a previous agent"),
        "{}",
        node.log()
    );
    // No process of the job survived either.
    let alive = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .any(|p| {
            std::fs::read(p.path().join("environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(b"TMP_OUTPUT_DIR=/tmp/spillway/output"))
                    && {
                        std::fs::read_link(p.path().join("root"))
                            .is_ok_and(|r| r.starts_with(node.dir.path()))
                    }
            })
        });
    assert!(!alive, "a process of the killed job is still running");
    node.stop();
}

#[test]
fn bad_images_fail_their_jobs_with_reasons_and_leave_nothing() {
    let open = Registry::start();
    push_busybox(&open, "tools/busybox");
    // An image whose layer only it has (registries share blobs between repositories)...
    let mut own = ImageSpec::busybox("linux", host_arch(), None);
    own.layers = vec![gzip(&layer(
        &[("data/only-here", 0o644, vec![42; 4096])],
        &[],
    ))];
    let digests = open.push("tools/corrupt", &[own], None);
    // ...damaged in the registry's storage: one byte flipped.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(open.blob_file(&digests[0])).expect("manifest blob"))
            .expect("manifest");
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_owned();
    let blob = open.blob_file(&layer_digest);
    let mut bytes = std::fs::read(&blob).expect("layer blob");
    bytes[40] ^= 0xff;
    std::fs::write(&blob, bytes).expect("corrupt");

    let locked = Registry::start_with(Some(("edge", "s3cret")));
    push_busybox_with_creds(&locked, "edge:s3cret");

    // An image without a shell: one static file.
    let mut shell_less = ImageSpec::busybox("linux", host_arch(), None);
    shell_less.layers = vec![gzip(&layer(
        &[("app/readme", 0o644, b"no shell here".to_vec())],
        &[],
    ))];
    open.push("tools/noshell", &[shell_less], None);

    let down = format!("127.0.0.1:{}", support::free_port());
    let config = format!(
        "functions = [\"fn.yaml\"]\n[registries.\"{}\"]\nusername = \"edge\"\npassword = \"wrong\"\n",
        locked.host()
    );
    let mut node = Node::new(&config);
    node.write("ok.sh", "echo fine > $TMP_OUTPUT_DIR/ok\n");
    node.write("notool.sh", "nosuchtool --help\n");
    node.write(
        "fn.yaml",
        fdl(&[
            function(
                "missing",
                &format!("{}/nothing/here:1", open.host()),
                Some("ok.sh"),
                "",
            ),
            function(
                "down",
                &format!("{down}/tools/busybox:1"),
                Some("ok.sh"),
                "",
            ),
            function(
                "wrongpw",
                &format!("{}/tools/busybox:1", locked.host()),
                Some("ok.sh"),
                "",
            ),
            function(
                "corrupt",
                &format!("{}/tools/corrupt:1", open.host()),
                Some("ok.sh"),
                "",
            ),
            function(
                "noshell",
                &format!("{}/tools/noshell:1", open.host()),
                Some("ok.sh"),
                "",
            ),
            function(
                "notool",
                &format!("{}/tools/busybox:1", open.host()),
                Some("notool.sh"),
                "",
            ),
        ]),
    );
    node.start();
    let expected = [
        ("missing", "was not found in its registry"),
        ("down", "cannot reach registry"),
        ("wrongpw", "refused access"),
        ("corrupt", "is corrupt"),
        ("noshell", "has no /bin/sh"),
        (
            "notool",
            "exited with status 127: a command it runs is not in image",
        ),
    ];
    for (f, _) in expected {
        node.write(&format!("data/{f}/in/go"), f);
    }
    for (f, want) in expected {
        let (id, state) = wait_finished(&node, &format!("{f}/in/go"), Duration::from_secs(90));
        assert_eq!(state, "Failed", "{f}");
        let why = reason(&node, &id);
        assert!(why.contains(want), "{f}: `{why}` should say `{want}`");
    }
    assert_nothing_left(&node);
    // The corrupt layer was not kept: every stored blob belongs to a stored image.
    let blobs = files_under(&node.path("state/images/blobs/sha256"));
    assert!(
        !blobs.iter().any(|b| layer_digest.ends_with(b.as_str())),
        "the corrupt layer was stored"
    );
    node.stop();

    // The right password opens the locked registry.
    let config = format!(
        "functions = [\"fn.yaml\"]\n[registries.\"{}\"]\nusername = \"edge\"\npassword_file = \"pw\"\n",
        locked.host()
    );
    let mut node = Node::new(&config);
    node.write("pw", "s3cret\n");
    node.write("ok.sh", "echo fine > $TMP_OUTPUT_DIR/ok\n");
    node.write(
        "fn.yaml",
        fdl(&[function(
            "locked",
            &format!("{}/tools/busybox:1", locked.host()),
            Some("ok.sh"),
            "",
        )]),
    );
    node.start();
    node.write("data/locked/in/go", "x");
    let (id, state) = wait_finished(&node, "locked/in/go", Duration::from_secs(60));
    assert_eq!(state, "Succeeded", "{:?}", node.agent_cli(&["logs", &id]));
    node.stop();
}

/// A busybox image for this host, pushed as `tools/busybox:1` to a registry that wants `creds`.
fn push_busybox_with_creds(registry: &Registry, creds: &str) {
    let image = ImageSpec::busybox("linux", host_arch(), None);
    registry.push("tools/busybox", &[image], Some(creds));
}

#[test]
fn tarballs_load_offline_and_broken_ones_change_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let saved = tmp.path().join("saved.tar");
    write_docker_save(&saved, "localhost/tools:saved");
    let mut node = Node::new("functions = [\"fn.yaml\"]\n");
    let (ok, out, err) = node.agent_cli(&["load", &saved.display().to_string()]);
    assert!(ok && out.contains("localhost/tools:saved"), "{out}{err}");

    // A truncated copy of an oci-archive: refused, and the store is as it was.
    let archive = busybox_archive(tmp.path(), "localhost/busybox:1");
    let whole = std::fs::read(&archive).expect("archive");
    let cut = tmp.path().join("cut.tar");
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).expect("cut");
    let before = files_under(&node.path("state/images"));
    let (ok, _, err) = node.agent_cli(&["load", &cut.display().to_string()]);
    assert!(!ok && err.contains("truncated or corrupt"), "{err}");
    assert_eq!(
        files_under(&node.path("state/images")),
        before,
        "a failed import changed the store"
    );
    // An image for another board is refused before it could fail as "exec format error".
    let other = if host_arch() == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let (ok, _, err) =
        node.agent_cli(&["load", &archive.display().to_string(), "--platform", other]);
    assert!(
        !ok && err.contains(&format!("has no {other} variant")),
        "{err}"
    );
    // Not a tarball at all, and one without a name.
    let (ok, _, err) = node.agent_cli(&["load", &node.path("agent.toml").display().to_string()]);
    assert!(!ok && err.contains("cannot import"), "{err}");
    let unnamed = tmp.path().join("unnamed.tar");
    skopeo_copy(
        &format!("oci:{}:1", tmp.path().join("layout").display()),
        &format!("oci-archive:{}", unnamed.display()),
        &[],
    );
    let (ok, _, err) = node.agent_cli(&["load", &unnamed.display().to_string()]);
    assert!(!ok && err.contains("--tag"), "{err}");
    let (ok, out, err) = node.agent_cli(&[
        "load",
        &unnamed.display().to_string(),
        "--tag",
        "localhost/named:2",
    ]);
    assert!(ok && out.contains("localhost/named:2"), "{out}{err}");

    node.write("ok.sh", "cat $INPUT_FILE_PATH > $TMP_OUTPUT_DIR/copy\n");
    node.write(
        "fn.yaml",
        fdl(&[function(
            "saved",
            "localhost/tools:saved",
            Some("ok.sh"),
            "",
        )]),
    );
    node.start();
    node.write("data/saved/in/go", "offline");
    let (id, state) = wait_finished(&node, "saved/in/go", Duration::from_secs(60));
    assert_eq!(state, "Succeeded", "{}", node.agent_cli(&["logs", &id]).1);
    assert_eq!(
        std::fs::read_to_string(node.path("data/saved/out/copy")).expect("copy"),
        "offline"
    );
    let (_, list, _) = node.agent_cli(&["images"]);
    assert!(
        list.contains("localhost/tools:saved") && list.contains("localhost/named:2"),
        "{list}"
    );
    node.stop();
}

#[test]
fn where_overlayfs_is_refused_a_job_runs_on_the_shared_root_read_only() {
    // A ',' in the state folder's path cannot be said in overlayfs' mount options.
    let tmp = tempfile::tempdir().expect("tmp");
    let archive = tmp.path().join("busybox.tar");
    write_docker_save(&archive, "localhost/busybox:saved");
    let mut node = Node::new_named("odd,path", "functions = [\"fn.yaml\"]\n");
    let (ok, out, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok, "{out}{err}");
    node.write(
        "ok.sh",
        "cat $INPUT_FILE_PATH > $TMP_OUTPUT_DIR/copy\nif touch /bin/written 2>/dev/null; then echo rw; else echo ro; fi > $TMP_OUTPUT_DIR/root\n",
    );
    node.write(
        "fn.yaml",
        fdl(&[function(
            "shared",
            "localhost/busybox:saved",
            Some("ok.sh"),
            "",
        )]),
    );
    node.start();
    node.write("data/shared/in/go", "still works");
    let (id, state) = wait_finished(&node, "shared/in/go", Duration::from_secs(60));
    assert_eq!(state, "Succeeded", "{:?}", node.agent_cli(&["logs", &id]));
    assert_eq!(
        std::fs::read_to_string(node.path("data/shared/out/copy")).expect("copy"),
        "still works"
    );
    assert_eq!(
        std::fs::read_to_string(node.path("data/shared/out/root")).expect("root"),
        "ro\n"
    );
    assert!(node.log().contains("overlayfs refused"), "{}", node.log());
    let roots = node.path("state/images/rootfs");
    let shared = std::fs::read_dir(&roots)
        .expect("roots")
        .flatten()
        .next()
        .expect("a root")
        .path();
    assert!(
        !shared.join("bin/written").exists(),
        "the shared root was written to"
    );
    assert_nothing_left(&node);
    node.stop();
}

#[test]
fn a_token_auth_registry_serves_the_right_credentials_and_refuses_wrong_ones() {
    let registry = Registry::start_with_token("edge", "t0ken");
    push_busybox_with_creds(&registry, "edge:t0ken");
    let image = format!("{}/tools/busybox:1", registry.host());
    let right = Node::new(&format!(
        "[registries.\"{}\"]\nusername = \"edge\"\npassword = \"t0ken\"\n",
        registry.host()
    ));
    let (ok, out, err) = right.agent_cli(&["pull", &image]);
    assert!(ok && out.contains("pulled"), "{out}{err}");
    let wrong = Node::new(&format!(
        "[registries.\"{}\"]\nusername = \"edge\"\npassword = \"nope\"\n",
        registry.host()
    ));
    let (ok, _, err) = wrong.agent_cli(&["pull", &image]);
    assert!(!ok && err.contains("refused access"), "{err}");
    let anonymous = Node::new("");
    let (ok, _, err) = anonymous.agent_cli(&["pull", &image]);
    assert!(!ok && err.contains("refused access"), "{err}");
}

#[test]
fn the_checksum_example_builds_its_image_with_umoci_and_runs_as_documented() {
    let tmp = tempfile::tempdir().expect("tmp");
    let archive = tmp.path().join("checksum.tar");
    let built =
        std::process::Command::new(support::repo("configs/examples/checksum/make-image.sh"))
            .arg(&archive)
            .output()
            .expect("make-image.sh");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut node = Node::new("functions = [\"functions.yaml\"]\n");
    for f in ["functions.yaml", "checksum.sh"] {
        node.write(
            f,
            std::fs::read(support::repo(&format!("configs/examples/checksum/{f}"))).expect(f),
        );
    }
    let (ok, out, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok && out.contains("localhost/checksum:1"), "{out}{err}");
    node.start();
    let input: Vec<u8> = (0..50_000u32).map(|i| (i % 97) as u8).collect();
    node.write("data/files/in/reading.bin", &input);
    let (id, state) = wait_finished(&node, "files/in/reading.bin", Duration::from_secs(60));
    let (_, log, _) = node.agent_cli(&["logs", &id]);
    assert_eq!(state, "Succeeded", "{log}");
    assert!(
        log.contains("reading.bin: 50000 bytes checksummed and compressed"),
        "{log}"
    );
    let hash =
        std::fs::read_to_string(node.path("data/files/out/reading.bin.sha256")).expect("hash");
    assert!(
        hash.starts_with(&hex::encode(Sha256::digest(&input))),
        "{hash}"
    );
    assert!(node.path("data/files/out/reading.bin.gz").exists());
    node.stop();
}
