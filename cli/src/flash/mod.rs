//! `spillway flash`: prepares an SD-card image (or a card) so that the board joins a mesh at its
//! first boot. Only the FAT boot partition is touched, through `fatfs` (no mounting, no loop
//! devices): the agent binary for the OS's architecture, its config with `[join]`, the join token
//! and a first-boot script started by `cmdline.txt` or cloud-init (see [`boot`]).
//!
//! Everything is read and decided before the first byte is written, so bad input (a compressed or
//! unpartitioned image, no room, no binary for the architecture) leaves the image untouched.

pub mod boot;
pub mod device;
pub mod disk;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use boot::{BootFiles, FirstBoot};
pub use disk::BootPartition;

/// Why a card was not (completely) prepared.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum FlashError {
    /// cannot open {path}: {reason}
    Open {
        path: PathBuf,
        reason: std::io::Error,
    },
    /// {path} is compressed ({kind}); nothing was written
    Compressed { path: String, kind: &'static str },
    /// {path} is not an SD-card image: {why}. Pass the whole card image (e.g. raspios-bookworm-arm64-lite.img); nothing was written
    NotADisk { path: String, why: String },
    /// {path} has no FAT boot partition (Raspberry Pi OS, Ubuntu and Debian images have one as partition 1); nothing was written
    NoBootPartition { path: String },
    /// partition {number} of {path} is not a readable FAT file system ({reason}); nothing was written
    NotFat {
        path: String,
        number: u32,
        reason: std::io::Error,
    },
    /// the boot partition of {path} has neither `cmdline.txt` nor cloud-init's `user-data`, so nothing would run at first boot: `spillway flash` knows Raspberry Pi OS, Ubuntu and Debian raspi images; nothing was written
    NoFirstBoot { path: String },
    /// cannot tell whether the OS on {path} is 64- or 32-bit (no `arm_64bit` in config.txt, no kernel8.img or kernel7.img): pass --arch aarch64 or --arch armv7; nothing was written
    UnknownArch { path: String },
    /// no {triple} agent in {dir}: build one with `cross/build.sh {triple}` and pass --binaries with the build's target folder (or a folder holding {triple}/spillway-agent); nothing was written
    NoBinary { triple: &'static str, dir: PathBuf },
    /// {path} is not a {triple} program (wrong --binaries folder?); nothing was written
    WrongBinary { path: PathBuf, triple: &'static str },
    /// the boot partition of {path} has {free} bytes free but Spillway's files need {needed}: remove unused files from it (e.g. other boards' kernels or overlays) or use a card image with a larger boot partition; nothing was written
    NoRoom {
        path: String,
        needed: u64,
        free: u64,
    },
    /// {0}
    Invalid(String),
    /// cannot write to {path}: {reason}. The boot partition may be partly updated: run `spillway flash` again
    Write {
        path: String,
        reason: std::io::Error,
    },
    /// refusing to write to {path}: {why}
    UnsafeDevice { path: PathBuf, why: String },
}

/// The two board architectures Spillway ships agents for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Aarch64,
    Armv7,
}

impl Arch {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "aarch64" | "arm64" | "arm64/v8" => Ok(Self::Aarch64),
            "armv7" | "armhf" | "arm" | "arm/v7" => Ok(Self::Armv7),
            other => Err(format!(
                "unknown architecture `{other}`: use aarch64 (64-bit OS) or armv7 (32-bit OS)"
            )),
        }
    }

    pub fn triple(self) -> &'static str {
        match self {
            Self::Aarch64 => "aarch64-unknown-linux-gnu",
            Self::Armv7 => "armv7-unknown-linux-gnueabihf",
        }
    }

    /// ELF class and `e_machine` of its programs.
    fn elf(self) -> (u8, u16) {
        match self {
            Self::Aarch64 => (2, 0xb7),
            Self::Armv7 => (1, 0x28),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Aarch64 => "aarch64",
            Self::Armv7 => "armv7",
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Wifi {
    pub ssid: String,
    pub password: String,
    /// ISO 3166 country code (the radio's regulatory domain).
    pub country: String,
}

#[derive(Debug, Clone, Default)]
pub struct FlashOptions {
    /// The coordinator's QUIC address as the board will reach it.
    pub coordinator: String,
    pub token: String,
    pub hostname: Option<String>,
    pub wifi: Option<Wifi>,
    /// Where `<triple>/spillway-agent` (or a cargo target folder's `<triple>/release/…`) lives.
    pub binaries: PathBuf,
    /// Overrides what the boot partition says.
    pub arch: Option<Arch>,
    /// Text of a base agent config (`--agent-config`).
    pub agent_config: Option<String>,
}

impl FlashOptions {
    /// Values end up in a shell script and a kernel command line: only plain ones pass.
    pub fn check(&self) -> Result<(), FlashError> {
        let bad = |m: String| Err(FlashError::Invalid(m));
        let (host, port) = self
            .coordinator
            .rsplit_once(':')
            .unwrap_or((&self.coordinator, ""));
        if host.is_empty()
            || port.parse::<u16>().is_err()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
        {
            return bad(format!(
                "--coordinator `{}` is not HOST:PORT (the address the board will use to reach the coordinator's QUIC port, 7443 by default)",
                self.coordinator
            ));
        }
        if let Some(name) = &self.hostname {
            let ok = !name.is_empty()
                && name.len() <= 63
                && !name.starts_with('-')
                && !name.ends_with('-')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return bad(format!(
                    "--hostname `{name}` is not a valid host name (letters, digits and inner hyphens, at most 63)"
                ));
            }
        }
        if self.token.trim().is_empty() || self.token.chars().any(char::is_whitespace) {
            return bad("the join token is empty or has spaces: pass the one `spillway token create` printed, or --new-token".into());
        }
        if let Some(w) = &self.wifi {
            if w.ssid.is_empty() || w.ssid.len() > 32 || w.ssid.contains('\n') {
                return bad(format!("--wifi `{}` is not an SSID (1–32 bytes)", w.ssid));
            }
            if !(8..=63).contains(&w.password.len()) || w.password.contains('\n') {
                return bad("the wifi password must have 8–63 characters (WPA2-PSK)".into());
            }
            if w.country.len() != 2 || !w.country.chars().all(|c| c.is_ascii_uppercase()) {
                return bad(format!(
                    "--wifi-country `{}` is not a two-letter country code such as GB or ES",
                    w.country
                ));
            }
        }
        Ok(())
    }
}

/// What `flash` did.
#[derive(Debug)]
pub struct Report {
    pub partition: BootPartition,
    pub arch: Arch,
    pub first_boot: FirstBoot,
    pub agent: PathBuf,
    /// Paths on the boot partition with their sizes.
    pub written: Vec<(String, u64)>,
    pub free_after: u64,
}

/// The agent binary for `arch` under `dir`, checked to be a program of that architecture.
pub fn find_agent(dir: &Path, arch: Arch) -> Result<PathBuf, FlashError> {
    let triple = arch.triple();
    let path = [
        dir.join(triple).join("spillway-agent"),
        // What `cross/build.sh` built last (any profile), then its release build.
        dir.join("bin").join(triple).join("spillway-agent"),
        dir.join(triple).join("release").join("spillway-agent"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| FlashError::NoBinary {
        triple,
        dir: dir.to_owned(),
    })?;
    let mut head = [0u8; 20];
    let ok = File::open(&path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head[..4] == *b"\x7fELF"
        && (head[4], u16::from_le_bytes([head[18], head[19]])) == arch.elf();
    if !ok {
        return Err(FlashError::WrongBinary { path, triple });
    }
    Ok(path)
}

/// A file to put on the boot partition.
struct Planned {
    path: String,
    bytes: Vec<u8>,
}

/// Prepares the card in `disk` (an image file or a block device opened read-write). `progress`
/// is told the total bytes to write, then each chunk written.
pub fn flash(
    disk: &File,
    name: &str,
    opts: &FlashOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, FlashError> {
    opts.check()?;
    let mut cursor = disk;
    let size = cursor
        .seek(SeekFrom::End(0))
        .map_err(|e| FlashError::NotADisk {
            path: name.to_owned(),
            why: e.to_string(),
        })?;
    let partition = disk::boot_partition(disk, size, name)?;
    let not_fat = |reason| FlashError::NotFat {
        path: name.to_owned(),
        number: partition.number,
        reason,
    };
    let slice = fscommon::StreamSlice::new(disk, partition.start, partition.start + partition.len)
        .map_err(not_fat)?;
    let options = fatfs::FsOptions::new().time_provider(&SystemClock);
    let fs = fatfs::FileSystem::new(slice, options).map_err(not_fat)?;
    let root = fs.root_dir();
    let read_text = |file: &str| -> Option<String> {
        let mut bytes = Vec::new();
        root.open_file(file).ok()?.read_to_end(&mut bytes).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    };
    let files = BootFiles {
        names: root
            .iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n != "." && n != "..")
            .collect(),
        config_txt: read_text("config.txt"),
    };
    let arch = match opts.arch.or_else(|| files.arch()) {
        Some(a) => a,
        None => {
            return Err(FlashError::UnknownArch {
                path: name.to_owned(),
            });
        }
    };
    let agent = find_agent(&opts.binaries, arch)?;
    let agent_bytes = std::fs::read(&agent).map_err(|reason| FlashError::Open {
        path: agent.clone(),
        reason,
    })?;

    // Everything decided here, before writing: the binary first (the largest, most likely to
    // fail), the trigger (cmdline.txt / user-data) last, so a half-written card never runs a
    // half-installed script.
    let first_boot = files.first_boot();
    let config =
        boot::agent_config(opts.agent_config.as_deref(), opts).map_err(FlashError::Invalid)?;
    let mut plan = vec![
        Planned {
            path: boot::AGENT.into(),
            bytes: agent_bytes,
        },
        Planned {
            path: boot::CONFIG.into(),
            bytes: config.into_bytes(),
        },
        Planned {
            path: boot::TOKEN.into(),
            bytes: format!("{}\n", opts.token.trim()).into_bytes(),
        },
    ];
    let invalid = |e: String| FlashError::Invalid(format!("{name}: {e}"));
    match first_boot {
        FirstBoot::KernelCommandLine => {
            let cmdline = read_text("cmdline.txt").ok_or_else(|| FlashError::NoFirstBoot {
                path: name.to_owned(),
            })?;
            let (cmdline, previous) = boot::cmdline_with_firstrun(&cmdline);
            if let Some(p) = &previous
                && !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
            {
                return Err(invalid(format!(
                    "cmdline.txt runs `{p}` at first boot; chaining a path with such characters is not supported"
                )));
            }
            plan.push(Planned {
                path: boot::SCRIPT.into(),
                bytes: boot::firstrun_script(opts, previous.as_deref()).into_bytes(),
            });
            plan.push(Planned {
                path: "cmdline.txt".into(),
                bytes: cmdline.into_bytes(),
            });
        }
        FirstBoot::CloudInit => {
            plan.push(Planned {
                path: boot::SCRIPT.into(),
                bytes: boot::firstrun_script(opts, None).into_bytes(),
            });
            if let Some(wifi) = &opts.wifi {
                let existing = read_text("network-config").unwrap_or_default();
                let text = boot::network_config_with_wifi(&existing, wifi).map_err(invalid)?;
                plan.push(Planned {
                    path: "network-config".into(),
                    bytes: text.into_bytes(),
                });
            }
            let existing = read_text("user-data").unwrap_or_default();
            let text = boot::user_data_with_firstrun(&existing, opts.hostname.as_deref())
                .map_err(invalid)?;
            plan.push(Planned {
                path: "user-data".into(),
                bytes: text.into_bytes(),
            });
        }
    }

    let stats = fs.stats().map_err(not_fat)?;
    let cluster = u64::from(stats.cluster_size());
    let free = u64::from(stats.free_clusters()) * cluster;
    let clusters = |n: u64| n.div_ceil(cluster) * cluster;
    let mut needed = 0;
    for p in &plan {
        let old = root
            .open_file(&p.path)
            .ok()
            .and_then(|mut f| f.seek(SeekFrom::End(0)).ok())
            .unwrap_or(0);
        needed = (needed + clusters(p.bytes.len() as u64)).saturating_sub(clusters(old));
    }
    if needed > free {
        return Err(FlashError::NoRoom {
            path: name.to_owned(),
            needed,
            free,
        });
    }

    let write_err = |reason| FlashError::Write {
        path: name.to_owned(),
        reason,
    };
    progress(Progress::Start(
        plan.iter().map(|p| p.bytes.len() as u64).sum(),
    ));
    let mut written = Vec::new();
    for p in &plan {
        let mut f = root.create_file(&p.path).map_err(write_err)?;
        f.truncate().map_err(write_err)?;
        for chunk in p.bytes.chunks(256 << 10) {
            f.write_all(chunk).map_err(write_err)?;
            progress(Progress::Wrote(chunk.len() as u64));
        }
        f.flush().map_err(write_err)?;
        written.push((p.path.clone(), p.bytes.len() as u64));
    }
    let free_after = fs
        .stats()
        .map(|s| u64::from(s.free_clusters()) * cluster)
        .unwrap_or(0);
    drop(root);
    fs.unmount().map_err(write_err)?;
    disk.sync_all().map_err(write_err)?;
    progress(Progress::Done);
    Ok(Report {
        partition,
        arch,
        first_boot,
        agent,
        written,
        free_after,
    })
}

/// File times from the system clock (UTC: boards have no real-time clock to disagree with).
#[derive(Debug)]
struct SystemClock;

impl fatfs::TimeProvider for SystemClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        let now = time::OffsetDateTime::now_utc();
        let n = |v: u8| u16::from(v);
        fatfs::DateTime {
            date: fatfs::Date {
                year: now.year().clamp(1980, 2107) as u16,
                month: u8::from(now.month()).into(),
                day: n(now.day()),
            },
            time: fatfs::Time {
                hour: n(now.hour()),
                min: n(now.minute()),
                sec: n(now.second()),
                millis: now.millisecond(),
            },
        }
    }
}

/// Writing progress, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Start(u64),
    Wrote(u64),
    Done,
}
