//! An emulated Raspberry-Pi-class board: `qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 4
//! -m 2G` with Debian's arm64 kernel, booting an SD-card image prepared by `spillway flash`.
//!
//! What is real: the arm64 kernel (cgroup v2, namespaces, overlayfs, seccomp), the static
//! aarch64 agent, containers, the card's FAT boot partition and the network path to this
//! machine. What is not: the OS on the card. The initramfs (tests/pi/) is busybox playing
//! Raspberry Pi OS: it runs the kernel command line's `systemd.run=` script as systemd would, and
//! its `systemctl` is a test double that starts enabled units' `ExecStart=` (no systemd).
//!
//! The board's only network is qemu's user-mode one, in which this machine's loopback appears as
//! 10.0.2.2; the board is configured to talk to that address only (the coordinator and the
//! registry of the test). `restrict=on` cannot be used: it also cuts the UDP that QUIC needs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where this machine's loopback appears on the board.
pub const HOST_FROM_BOARD: &str = "10.0.2.2";

/// The board's kernel, modules and busybox (from `tests/pi/assets.sh`).
pub fn assets() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("SPILLWAY_PI_ASSETS").unwrap_or_else(|_| "/var/cache/spillway/pi".into()),
    );
    assert!(
        dir.join("ready").exists(),
        "no board assets in {}: run tests/pi/assets.sh {0} (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The static aarch64 agent to flash (`$SPILLWAY_AARCH64_AGENT`, set by scripts/test.sh).
pub fn aarch64_agent() -> PathBuf {
    let path = PathBuf::from(std::env::var("SPILLWAY_AARCH64_AGENT").expect(
        "SPILLWAY_AARCH64_AGENT must name a static aarch64 spillway-agent (scripts/test.sh builds one)",
    ));
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

/// Byte offset of the boot partition in the cards `blank_card` makes (Raspberry Pi OS's 4 MiB).
pub const BOOT_OFFSET: &str = "4M";

/// A card image like Raspberry Pi OS 64-bit's: MBR, a FAT32 boot partition at 4 MiB with
/// `cmdline.txt`, `config.txt` and `kernel8.img`, and a Linux root partition (left empty: the
/// emulated board runs from its initramfs).
pub fn blank_card(path: &Path, boot_mib: u64) {
    let sectors = boot_mib * 2048;
    super::output(
        Command::new("truncate")
            .arg("-s")
            .arg(format!("{}M", boot_mib + 4 + 16))
            .arg(path),
    );
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sfdisk (Debian fdisk) is installed");
    write!(
        sfdisk.stdin.take().expect("stdin"),
        "label: dos\nlabel-id: 0x5e1f0a11\nstart=8192, size={sectors}, type=c\nstart={}, type=83\n",
        8192 + sectors
    )
    .expect("sfdisk script");
    assert!(sfdisk.wait().expect("sfdisk").success(), "sfdisk failed");
    super::output(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-s", "1", "-n", "BOOTFS", "--offset", "8192"])
            .arg(path)
            .arg((sectors / 2).to_string()),
    );
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("cmdline.txt"),
        "console=serial0,115200 console=tty1 root=PARTUUID=5e1f0a11-02 rootfstype=ext4 fsck.repair=yes rootwait\n",
    )
    .expect("cmdline");
    std::fs::write(
        dir.path().join("config.txt"),
        "# Raspberry Pi OS\ndtparam=audio=on\n[all]\narm_64bit=1\n",
    )
    .expect("config");
    std::fs::write(dir.path().join("kernel8.img"), b"placeholder").expect("kernel");
    mcopy_in(
        path,
        &[
            dir.path().join("cmdline.txt"),
            dir.path().join("config.txt"),
            dir.path().join("kernel8.img"),
        ],
    );
}

pub fn mcopy_in(card: &Path, files: &[PathBuf]) {
    super::output(
        Command::new("mcopy")
            .arg("-o")
            .arg("-i")
            .arg(format!("{}@@{BOOT_OFFSET}", card.display()))
            .args(files)
            .arg("::/"),
    );
}

/// A file of the card's boot partition, read with mtools (independently of Spillway's fatfs).
pub fn mtype(card: &Path, file: &str) -> Option<String> {
    let out = Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@{BOOT_OFFSET}", card.display()))
        .arg(format!("::/{file}"))
        .output()
        .expect("mtools is installed");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The names in a folder of the card's boot partition (`mdir -b`).
pub fn mdir(card: &Path, dir: &str) -> Vec<String> {
    let out = Command::new("mdir")
        .arg("-b")
        .arg("-i")
        .arg(format!("{}@@{BOOT_OFFSET}", card.display()))
        .arg(format!("::/{dir}"))
        .output()
        .expect("mtools is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit('/').next().unwrap_or(l).to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The initramfs: busybox, the modules, and tests/pi's `init`, `board` and `systemctl`.
fn initramfs(assets: &Path, out: &Path) {
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    for d in ["bin", "sbin", "usr/bin", "lib/modules", "etc"] {
        std::fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    let copy = |from: PathBuf, to: &str| {
        std::fs::copy(&from, r.join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    };
    copy(assets.join("busybox"), "bin/busybox");
    let pi = super::repo("tests/pi");
    copy(pi.join("init"), "init");
    copy(pi.join("board"), "sbin/board");
    copy(pi.join("systemctl"), "usr/bin/systemctl");
    for m in std::fs::read_dir(assets.join("modules")).expect("modules") {
        let m = m.expect("entry").path();
        let name = m.file_name().expect("name").to_string_lossy().into_owned();
        copy(m, &format!("lib/modules/{name}"));
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(r.join("etc/group"), "root:x:0:\n").expect("group");
    let script = format!(
        "cd {} && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > {}",
        r.display(),
        out.display()
    );
    super::output(Command::new("sh").args(["-c", &script]));
}

/// A running emulated board; killed when dropped.
pub struct Board {
    child: Child,
    pub console: PathBuf,
    pub powered_on: Instant,
    _initrd: tempfile::TempDir,
}

impl Board {
    /// Powers on a board with `card` in its slot. Like the Pi's firmware, it passes the card's
    /// `cmdline.txt` to the kernel.
    pub fn boot(card: &Path, console: &Path) -> Self {
        let assets = assets();
        let initrd_dir = tempfile::tempdir().expect("tmp");
        let initrd = initrd_dir.path().join("initrd.gz");
        initramfs(&assets, &initrd);
        let cmdline = mtype(card, "cmdline.txt").expect("the card has a cmdline.txt");
        let log = std::fs::File::create(console).expect("console log");
        let powered_on = Instant::now();
        let child = Command::new("qemu-system-aarch64")
            .args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "4", "-m", "2G"])
            .args(["-nographic", "-no-reboot", "-monitor", "none"])
            .arg("-kernel")
            .arg(assets.join("vmlinuz"))
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!("{} console=ttyAMA0 rdinit=/init", cmdline.trim()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", card.display()))
            .args(["-netdev", "user,id=n0,restrict=off,ipv6=off"])
            .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
            .args(["-device", "virtio-rng-pci"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("qemu-system-aarch64 (Debian qemu-system-arm) is installed");
        Self {
            child,
            console: console.to_owned(),
            powered_on,
            _initrd: initrd_dir,
        }
    }

    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Whether qemu is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The agent's resident memory as the board's kernel reports it (`board` prints it every
    /// few seconds once the agent runs), in KiB: the last report.
    pub fn agent_rss_kib(&self) -> Option<u64> {
        self.console()
            .lines()
            .filter_map(|l| l.split("board: agent VmRSS ").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse().ok())
            .next_back()
    }

    /// Powers the board off (the card's file system was synced after the first-boot script).
    pub fn power_off(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node name flashed boards get.
pub const NODE: &str = "pi-emu";

/// A coordinator and a registry on this machine, and a card flashed to join them; the card
/// boots with `boot`. The registry holds an arm64 busybox image the board pulls via 10.0.2.2.
pub struct Testbed {
    pub work: tempfile::TempDir,
    pub coordinator: super::Coordinator,
    pub registry: super::oci::Registry,
    pub card: PathBuf,
    /// The image reference as the board sees it.
    pub image: String,
}

impl Testbed {
    /// Everything up to (not including) `spillway flash`, with `agent` as the board's binary.
    pub fn new(agent: &Path) -> Self {
        let work = tempfile::tempdir().expect("tmp");
        let w = work.path();
        let bins = w.join("bins/aarch64-unknown-linux-gnu");
        std::fs::create_dir_all(&bins).expect("bins");
        std::fs::copy(agent, bins.join("spillway-agent")).expect("agent");
        let card = w.join("card.img");
        blank_card(&card, 160);
        let coordinator = super::Coordinator::new();
        let registry = super::oci::Registry::start();
        let busybox = std::fs::read(assets().join("busybox")).expect("arm64 busybox");
        let mut spec = super::oci::ImageSpec::busybox("linux", "arm64", None);
        spec.layers = vec![super::oci::gzip(&super::oci::busybox_layer_of(
            busybox,
            "linux/arm64",
        ))];
        registry.push("board/checksum", &[spec], None);
        let image = format!("{HOST_FROM_BOARD}:{}/board/checksum:1", registry.port);
        std::fs::write(
            w.join("extra.toml"),
            format!(
                "[registries.\"{HOST_FROM_BOARD}:{}\"]\ninsecure = true\n[labels]\nboard = \"emulated\"\n",
                registry.port
            ),
        )
        .expect("extra");
        Self {
            work,
            coordinator,
            registry,
            card,
            image,
        }
    }

    /// `spillway flash` of the card with a fresh token: (success, stdout, stderr).
    pub fn flash(&self) -> (bool, String, String) {
        let w = self.work.path();
        self.coordinator.cli(&[
            "flash",
            "--image",
            self.card.to_str().expect("utf-8"),
            "--coordinator",
            &format!("{HOST_FROM_BOARD}:{}", self.coordinator.quic_port),
            "--new-token",
            "--label",
            "board=emulated",
            "--hostname",
            NODE,
            "--binaries",
            w.join("bins").to_str().expect("utf-8"),
            "--agent-config",
            w.join("extra.toml").to_str().expect("utf-8"),
        ])
    }

    pub fn boot(&self) -> Board {
        Board::boot(&self.card, &self.work.path().join("console.log"))
    }

    /// Time from power-on until `spillway get nodes` shows the board Ready.
    pub fn wait_ready(&self, board: &mut Board, timeout: Duration) -> Option<Duration> {
        let ready = super::wait_until(timeout, || {
            self.coordinator.health(NODE).as_deref() == Some("Ready") || !board.running()
        });
        (ready && self.coordinator.health(NODE).as_deref() == Some("Ready"))
            .then(|| board.powered_on.elapsed())
    }

    /// Applies `checksum`: a container function (the arm64 image) whose script writes the
    /// machine, the input's SHA-256, its cgroup, the memory limit and its seccomp state. It
    /// needs no network (`network: none`): the busybox OS on the card has no CNI plugins.
    pub fn deploy_checksum(&self) {
        let w = self.work.path();
        let fdl = w.join("functions.yaml");
        std::fs::write(
            &fdl,
            format!(
                "functions:\n  oscar:\n  - edge:\n      name: checksum\n      image: {}\n      script: checksum.sh\n      memory: 64Mi\n      network: none\n      timeout: 120\n      input: [{{storage_provider: minio.default, path: checksum/in}}]\n      output: [{{storage_provider: minio.default, path: checksum/out}}]\n",
                self.image
            ),
        )
        .expect("fdl");
        std::fs::write(
            w.join("checksum.sh"),
            "#!/bin/sh\nset -e\nname=$(basename \"$INPUT_FILE_PATH\")\n{ uname -m; sha256sum \"$INPUT_FILE_PATH\" | cut -d' ' -f1; cat /proc/self/cgroup; echo \"memory.max $(cat /sys/fs/cgroup/memory.max 2>&1)\"; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; } > \"$TMP_OUTPUT_DIR/$name.txt\"\n",
        )
        .expect("script");
        let (ok, _, err) = self
            .coordinator
            .cli(&["apply", "-f", fdl.to_str().expect("utf-8")]);
        assert!(ok, "apply failed: {err}");
    }

    /// `spillway invoke checksum` of `bytes` as `name` on the board, waiting for the job:
    /// (success, output of invoke, time taken).
    pub fn invoke(&self, name: &str, bytes: &[u8]) -> (bool, String, Duration) {
        let input = self.work.path().join(name);
        std::fs::write(&input, bytes).expect("input");
        let started = Instant::now();
        let (ok, out, err) = self.coordinator.cli(&[
            "invoke",
            "checksum",
            "--file",
            input.to_str().expect("utf-8"),
            "--node",
            NODE,
            "--wait",
            "--timeout",
            "240s",
        ]);
        (
            ok && out.contains("Succeeded"),
            out + &err,
            started.elapsed(),
        )
    }
}

impl Board {
    /// Seconds after power-on at which the board's console printed `marker (X s after power-on)`.
    pub fn console_time(&self, marker: &str) -> Option<f64> {
        let console = self.console();
        let rest = console.split(marker).nth(1)?;
        rest.trim_start_matches(" (")
            .split(' ')
            .next()?
            .parse()
            .ok()
    }
}
