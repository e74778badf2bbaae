//! `spillway flash` against card images made with Debian's sfdisk and mkfs.vfat and read back
//! with mtools and fsck.vfat (tools independent of the fatfs crate that writes them), and
//! against a real block device (a loop device). The agent binaries flashed here are stand-ins
//! with the right ELF header: flash copies bytes; the emulated board (pi_boot.rs) runs a real one.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use support::bin;
use support::board::{blank_card, mcopy_in, mdir, mtype};

/// A stand-in agent: an ELF header for `arch` (class, machine) and `size` bytes in all.
fn fake_agent(dir: &Path, triple: &str, class: u8, machine: u16, size: usize) -> PathBuf {
    let mut bytes = vec![0u8; size];
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4] = class;
    bytes[18..20].copy_from_slice(&machine.to_le_bytes());
    for (i, b) in bytes.iter_mut().enumerate().skip(64) {
        *b = (i % 251) as u8;
    }
    let path = dir.join(triple).join("spillway-agent");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, bytes).expect("agent");
    path
}

fn binaries(dir: &Path) -> PathBuf {
    let bins = dir.join("bins");
    fake_agent(&bins, "aarch64-unknown-linux-gnu", 2, 0xb7, 3 << 20);
    bins
}

fn flash(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(bin("spillway"));
    cmd.arg("flash")
        .args(args)
        .env_remove("SPILLWAY_COORDINATOR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run spillway");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn card_args<'a>(card: &'a Path, bins: &'a Path) -> Vec<&'a str> {
    vec![
        "--image",
        card.to_str().unwrap(),
        "--coordinator",
        "192.168.1.10:7443",
        "--join-token",
        "tok-123.secret",
        "--binaries",
        bins.to_str().unwrap(),
    ]
}

fn digest(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read")))
}

/// fsck.vfat over the boot partition, copied out of the card (fsck has no offset option).
fn fsck_boot(card: &Path) {
    let part = card.with_extension("boot");
    let status = Command::new("dd")
        .arg(format!("if={}", card.display()))
        .arg(format!("of={}", part.display()))
        .args(["bs=1M", "skip=4", "status=none"])
        .status()
        .expect("dd");
    assert!(status.success());
    let out = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&part)
        .output()
        .expect("fsck.vfat (dosfstools) is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fsck.vfat found problems:\n{text}");
}

#[test]
fn a_raspios_card_gets_the_agent_config_token_and_first_boot_script_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let card = dir.path().join("raspios.img");
    blank_card(&card, 40);
    let bins = binaries(dir.path());
    let mut args = card_args(&card, &bins);
    args.extend(["--hostname", "pi-shed"]);
    let (ok, out, err) = flash(&args, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("prepared for aarch64 (cmdline.txt systemd.run first boot)"),
        "{out}"
    );

    let cmdline = mtype(&card, "cmdline.txt").expect("cmdline");
    assert_eq!(cmdline.lines().count(), 1, "{cmdline}");
    assert!(cmdline.starts_with("console=serial0,115200 console=tty1 root=PARTUUID=5e1f0a11-02"));
    assert!(cmdline.trim_end().ends_with("systemd.run=/boot/firmware/spillway-firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"), "{cmdline}");
    let config = mtype(&card, "spillway-agent.toml").expect("config");
    assert!(config.contains("node_name = \"pi-shed\""), "{config}");
    assert!(
        config.contains(
            "[join]\ncoordinator = \"192.168.1.10:7443\"\ntoken_file = \"/etc/spillway/join-token\""
        ),
        "{config}"
    );
    assert_eq!(
        mtype(&card, "spillway-join-token").as_deref(),
        Some("tok-123.secret\n")
    );
    let script = mtype(&card, "spillway-firstrun.sh").expect("script");
    assert!(
        script.starts_with("#!/bin/sh") && script.contains("name=pi-shed"),
        "{script}"
    );
    // The binary reads back byte for byte with mtools.
    let back = dir.path().join("back");
    let status = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@4M", card.display()))
        .arg("::/spillway-agent")
        .arg(&back)
        .status()
        .expect("mcopy");
    assert!(status.success());
    assert_eq!(
        digest(&back),
        digest(&bins.join("aarch64-unknown-linux-gnu/spillway-agent"))
    );
    fsck_boot(&card);

    // Flashing again (another token) replaces our files and keeps one set of boot arguments.
    let mut again = card_args(&card, &bins);
    again[5] = "tok-456.other";
    let (ok, out, err) = flash(&again, &[]);
    assert!(ok, "{out}{err}");
    let cmdline = mtype(&card, "cmdline.txt").expect("cmdline");
    assert_eq!(cmdline.matches("systemd.run=").count(), 1, "{cmdline}");
    assert_eq!(
        mtype(&card, "spillway-join-token").as_deref(),
        Some("tok-456.other\n")
    );
    fsck_boot(&card);
}

#[test]
fn bad_images_are_refused_with_the_reason_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let bins = binaries(d);
    let good = d.join("good.img");
    blank_card(&good, 40);

    let gz = d.join("raspios.img.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -1 -c {} > {}", good.display(), gz.display()))
        .status()
        .expect("gzip");
    assert!(status.success());
    let bare = d.join("bare-fat.img");
    let status = Command::new("mkfs.vfat")
        .args(["-C", bare.to_str().unwrap(), "8192"])
        .output()
        .expect("mkfs.vfat");
    assert!(status.status.success());
    let truncated = d.join("truncated.img");
    std::fs::write(&truncated, &std::fs::read(&good).expect("read")[..20 << 20]).expect("write");
    let garbage = d.join("garbage.img");
    std::fs::write(&garbage, vec![0x5au8; 1 << 20]).expect("write");
    // A boot partition too small for the agent (FAT16, 16 MiB; the stand-in agent is 20 MiB).
    let small = d.join("small.img");
    std::fs::write(&small, []).expect("create");
    let big_bins = d.join("big-bins");
    fake_agent(&big_bins, "aarch64-unknown-linux-gnu", 2, 0xb7, 20 << 20);
    {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "truncate -s 40M {0} && printf 'label: dos\\nstart=8192, size=32768, type=e\\n' | sfdisk -q {0} && mkfs.vfat -F 16 --offset 8192 {0} 16384  >/dev/null 2>&1 && echo 'root=x rootwait' > {1}/cmdline.txt && echo 'arm_64bit=1' > {1}/config.txt && mcopy -i {0}@@4M {1}/cmdline.txt {1}/config.txt ::/",
                small.display(),
                d.display()
            ))
            .status()
            .expect("sh");
        assert!(status.success());
    }
    // A 32-bit Raspberry Pi OS card, with only an aarch64 agent at hand.
    let armhf = d.join("armhf.img");
    blank_card(&armhf, 40);
    std::fs::write(d.join("config.txt"), "dtparam=audio=on\n").expect("config");
    std::fs::write(d.join("kernel7l.img"), "k").expect("kernel");
    mcopy_in(&armhf, &[d.join("config.txt"), d.join("kernel7l.img")]);
    Command::new("mdel")
        .arg("-i")
        .arg(format!("{}@@4M", armhf.display()))
        .arg("::/kernel8.img")
        .status()
        .expect("mdel");
    // An x86_64 program where the aarch64 agent should be.
    let wrong = d.join("wrong-bins");
    fake_agent(&wrong, "aarch64-unknown-linux-gnu", 2, 0x3e, 1 << 20);

    let cases: Vec<(&Path, &Path, &str)> = vec![
        (&gz, &bins, "is compressed (gzip: gunzip it first)"),
        (&bare, &bins, "bare FAT file system, not a partitioned card"),
        (&truncated, &bins, "an incomplete download or copy"),
        (&garbage, &bins, "no MBR or GPT partition table"),
        (&small, &big_bins, "Spillway's files need"),
        (&armhf, &bins, "no armv7-unknown-linux-gnueabihf agent"),
        (&good, &wrong, "is not a aarch64-unknown-linux-gnu program"),
    ];
    for (image, bins, expected) in cases {
        let before = digest(image);
        let (ok, out, err) = flash(&card_args(image, bins), &[]);
        assert!(!ok, "{} was accepted: {out}", image.display());
        assert!(err.contains(expected), "{}: {err}", image.display());
        assert!(
            err.contains("nothing was written"),
            "{}: {err}",
            image.display()
        );
        assert_eq!(digest(image), before, "{} was changed", image.display());
    }
    // Options that would end up in a shell script or kernel command line are checked first.
    for (flag, value, expected) in [
        ("--hostname", "pi;reboot", "is not a valid host name"),
        (
            "--coordinator",
            "http://c:7480",
            "needs --coordinator HOST:PORT",
        ),
        ("--arch", "riscv64", "unknown architecture"),
    ] {
        let mut args = card_args(&good, &bins);
        if flag == "--coordinator" {
            args[3] = value;
        } else {
            args.extend([flag, value]);
        }
        let before = digest(&good);
        let (ok, _, err) = flash(&args, &[]);
        assert!(!ok && err.contains(expected), "{flag} {value}: {err}");
        assert_eq!(digest(&good), before);
    }
}

#[test]
fn a_cloud_init_card_gets_a_runcmd_the_hostname_and_wifi_and_keeps_its_users() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let card = d.join("ubuntu.img");
    blank_card(&card, 40);
    std::fs::write(d.join("user-data"), "#cloud-config\nusers:\n  - name: ubuntu\n    lock_passwd: false\nruncmd:\n  - [touch, /tmp/hello]\n").expect("ud");
    std::fs::write(d.join("meta-data"), "instance-id: pi\n").expect("md");
    std::fs::write(
        d.join("network-config"),
        "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
    )
    .expect("nc");
    mcopy_in(
        &card,
        &[
            d.join("user-data"),
            d.join("meta-data"),
            d.join("network-config"),
        ],
    );
    let bins = binaries(d);
    let mut args = card_args(&card, &bins);
    args.extend([
        "--hostname",
        "pi-7",
        "--wifi",
        "home net",
        "--wifi-country",
        "ES",
    ]);
    let (ok, out, err) = flash(&args, &[("SPILLWAY_WIFI_PASSWORD", "correct horse")]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("cloud-init"), "{out}");
    let ud = mtype(&card, "user-data").expect("user-data");
    assert!(ud.starts_with("#cloud-config\n"), "{ud}");
    let ud: serde_json::Value = serde_saphyr::from_str(&ud).expect("yaml");
    assert_eq!(ud["users"][0]["name"], "ubuntu");
    assert_eq!(ud["hostname"], "pi-7");
    assert_eq!(
        ud["runcmd"],
        serde_json::json!([
            ["touch", "/tmp/hello"],
            ["sh", "/boot/firmware/spillway-firstrun.sh", "--now"]
        ])
    );
    let nc: serde_json::Value =
        serde_saphyr::from_str(&mtype(&card, "network-config").expect("nc")).expect("yaml");
    assert_eq!(nc["ethernets"]["eth0"]["dhcp4"], true);
    assert_eq!(
        nc["wifis"]["wlan0"]["access-points"]["home net"]["password"],
        "correct horse"
    );
    // cmdline.txt is left alone on cloud-init cards.
    assert!(
        !mtype(&card, "cmdline.txt")
            .expect("cmdline")
            .contains("systemd.run")
    );
    // A wifi without its password is refused before anything is written.
    let before = digest(&card);
    let (ok, _, err) = flash(&args, &[]);
    assert!(!ok && err.contains("--wifi needs a password"), "{err}");
    assert_eq!(digest(&card), before);
}

#[test]
fn a_gpt_card_is_prepared_through_its_basic_data_partition() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let card = d.join("gpt.img");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "truncate -s 64M {0} && printf 'label: gpt\\nstart=8192, size=81920, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\\nstart=90112, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\\n' | sfdisk -q {0} && mkfs.vfat -F 32 -s 1 --offset 8192 {0} 40960 >/dev/null 2>&1 && printf 'root=x\\n' > {1}/cmdline.txt && printf 'arm_64bit=1\\n' > {1}/config.txt && mcopy -i {0}@@4M {1}/cmdline.txt {1}/config.txt ::/",
            card.display(),
            d.display()
        ))
        .status()
        .expect("sh");
    assert!(status.success());
    let bins = binaries(d);
    let (ok, out, err) = flash(&card_args(&card, &bins), &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("boot partition 1 prepared for aarch64"),
        "{out}"
    );
    let names = mdir(&card, "");
    for f in [
        "spillway-agent",
        "spillway-agent.toml",
        "spillway-join-token",
        "spillway-firstrun.sh",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} missing: {names:?}");
    }
    fsck_boot(&card);
}

/// A loop device is a real block device: flash refuses it while a partition is mounted, refuses
/// a partition instead of the disk, and asks for --yes without a terminal.
#[test]
fn a_card_device_is_refused_while_mounted_and_written_when_free() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let card = d.join("card.img");
    blank_card(&card, 40);
    let bins = binaries(d);
    let out = Command::new("losetup")
        .args(["--find", "--show", "--partscan"])
        .arg(&card)
        .output()
        .expect("losetup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loop_dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    struct Detach(String, PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.1).status();
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mnt");
    let _detach = Detach(loop_dev.clone(), mnt.clone());
    // No udev here: partitions are added with partx if the scan did not, and the partition's
    // device node is made from what sysfs says.
    let _ = Command::new("partx").args(["-a", &loop_dev]).output();
    let name = loop_dev.trim_start_matches("/dev/");
    let node = |n: u32| {
        let sys = PathBuf::from(format!("/sys/class/block/{name}/{name}p{n}/dev"));
        assert!(
            support::wait_until(std::time::Duration::from_secs(5), || sys.exists()),
            "the kernel did not scan {loop_dev}'s partitions"
        );
        let numbers = std::fs::read_to_string(&sys).expect("dev");
        let (major, minor) = numbers.trim().split_once(':').expect("major:minor");
        let path = d.join(format!("{name}p{n}")).display().to_string();
        let status = Command::new("mknod")
            .args([path.as_str(), "b", major, minor])
            .status()
            .expect("mknod");
        assert!(status.success());
        path
    };
    let part = node(1);
    // The root partition, as a desktop mounts it when the card goes in (this kernel may lack
    // vfat, so the ext4 one is the mounted one).
    let root = node(2);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", &root])
        .output()
        .expect("mkfs.ext4");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device_args = |dev: &str| -> Vec<String> {
        [
            "--device",
            dev,
            "--coordinator",
            "192.168.1.10:7443",
            "--join-token",
            "tok-1.s",
            "--binaries",
            bins.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        flash(&args, &[])
    };
    let status = Command::new("mount")
        .arg(&root)
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(status.success());
    let mut yes = device_args(&loop_dev);
    yes.push("--yes".into());
    let (ok, _, err) = run(yes.clone());
    assert!(
        !ok && err.contains("is mounted on") && err.contains(mnt.to_str().unwrap()),
        "{err}"
    );
    let status = Command::new("umount").arg(&mnt).status().expect("umount");
    assert!(status.success());

    let mut on_part = device_args(&part);
    on_part.push("--yes".into());
    let (ok, _, err) = run(on_part);
    assert!(!ok && err.contains("pass the whole card"), "{err}");
    let (ok, _, err) = run(device_args(&loop_dev));
    assert!(!ok && err.contains("pass --yes"), "{err}");
    let (ok, _, err) = run(device_args(card.to_str().unwrap()));
    assert!(!ok && err.contains("not a block device"), "{err}");

    let (ok, out, err) = run(yes);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("about to change the boot partition of"),
        "{err}"
    );
    // Written through the device, visible in the image file behind it.
    assert_eq!(
        mtype(&card, "spillway-join-token").as_deref(),
        Some("tok-1.s\n")
    );

    // --image with --device: the image is copied onto the card first, then prepared there.
    let fresh = d.join("fresh.img");
    blank_card(&fresh, 40);
    std::fs::write(d.join("config.txt"), "arm_64bit=1\n# fresh image\n").expect("config");
    mcopy_in(&fresh, &[d.join("config.txt")]);
    let fresh_before = digest(&fresh);
    let mut both = device_args(&loop_dev);
    both.extend([
        "--image".into(),
        fresh.display().to_string(),
        "--yes".into(),
    ]);
    let (ok, out, err) = run(both);
    assert!(ok, "{out}{err}");
    assert!(err.contains("ERASE") && err.contains("copied"), "{err}");
    assert!(
        mtype(&card, "config.txt")
            .expect("config")
            .contains("# fresh image")
    );
    assert!(
        mtype(&card, "cmdline.txt")
            .expect("cmdline")
            .contains("systemd.run=")
    );
    assert_eq!(
        digest(&fresh),
        fresh_before,
        "the source image is not modified"
    );
    // An image larger than the card is refused before the card is touched.
    let big = d.join("big.img");
    blank_card(&big, 120);
    let card_before = digest(&card);
    let mut too_big = device_args(&loop_dev);
    too_big.extend(["--image".into(), big.display().to_string(), "--yes".into()]);
    let (ok, _, err) = run(too_big);
    assert!(!ok && err.contains("does not fit"), "{err}");
    assert_eq!(digest(&card), card_before);
}
