//! `spillway flash`: options to [`crate::flash`], a fresh token when asked, the device checks
//! and confirmation, the image copy to a card, and progress bars.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::client::Client;
use crate::flash::{self, FlashError, FlashOptions, Progress, device};
use spillway_api::{TokenCreated, TokenRequest};

/// What the command line asked for.
#[derive(Debug)]
pub struct FlashArgs {
    pub image: Option<PathBuf>,
    pub device: Option<PathBuf>,
    pub options: FlashOptions,
    /// Create a token through the coordinator's API instead of `options.token`.
    pub new_token: Option<Duration>,
    /// Labels and cluster id of the new token: the node's, as the operator decides them.
    pub labels: Vec<String>,
    pub cluster_id: Option<String>,
    pub yes: bool,
}

pub async fn run(
    client: impl FnOnce() -> anyhow::Result<Client>,
    mut args: FlashArgs,
) -> anyhow::Result<()> {
    if args.image.is_none() && args.device.is_none() {
        bail!("say what to prepare: --image FILE (a card image) and/or --device /dev/sdX (a card)");
    }
    // Checked before a token is spent on it.
    let mut probe = args.options.clone();
    if args.new_token.is_some() {
        probe.token = "placeholder".into();
    }
    probe.check()?;
    if let Some(dev) = &args.device {
        let disk = device::inspect(dev)?;
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        device::check_unused(&disk, &read("/proc/self/mountinfo"), &read("/proc/swaps"))?;
        confirm(&disk, args.image.as_deref(), args.yes)?;
    }
    if let Some(ttl) = args.new_token {
        let created: TokenCreated = client()?
            .post(
                "/v1/tokens",
                &TokenRequest {
                    ttl_secs: ttl.as_secs().max(1),
                    description: format!(
                        "spillway flash{}",
                        args.options
                            .hostname
                            .as_deref()
                            .map(|h| format!(" {h}"))
                            .unwrap_or_default()
                    ),
                    count: None,
                    node: None,
                    labels: (!args.labels.is_empty())
                        .then(|| super::membership::parse_labels(&args.labels))
                        .transpose()?,
                    cluster_id: args.cluster_id.clone(),
                },
            )
            .await?;
        eprintln!(
            "created a join token for this card (single use, expires in {})",
            humantime::format_duration(ttl)
        );
        args.options.token = created.token;
    }
    tokio::task::block_in_place(|| prepare(&args))
}

fn prepare(args: &FlashArgs) -> anyhow::Result<()> {
    let target = match (&args.image, &args.device) {
        (Some(image), Some(dev)) => {
            copy_image(image, dev)?;
            dev.clone()
        }
        (Some(image), None) => image.clone(),
        (None, Some(dev)) => dev.clone(),
        (None, None) => unreachable!("checked by run"),
    };
    let name = target.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target)
        .map_err(|reason| FlashError::Open {
            path: target.clone(),
            reason,
        })?;
    let bar = bar("writing");
    let report = flash::flash(&file, &name, &args.options, &mut |p| match p {
        Progress::Start(total) => bar.set_length(total),
        Progress::Wrote(n) => bar.inc(n),
        Progress::Done => bar.finish_and_clear(),
    })?;
    println!(
        "{name}: boot partition {} prepared for {} ({} first boot), agent from {}",
        report.partition.number,
        report.arch,
        match report.first_boot {
            flash::boot::FirstBoot::CloudInit => "cloud-init",
            flash::boot::FirstBoot::KernelCommandLine => "cmdline.txt systemd.run",
        },
        report.agent.display()
    );
    for (path, size) in &report.written {
        println!("  wrote {path} ({size} bytes)");
    }
    println!(
        "  {} MiB left on the boot partition. Put the card in the board and power it on: it joins {} at first boot (spillway get nodes).",
        report.free_after >> 20,
        args.options.coordinator
    );
    Ok(())
}

/// Names the disk and waits for its name to be typed back (or `--yes`).
fn confirm(disk: &device::Disk, image: Option<&Path>, yes: bool) -> anyhow::Result<()> {
    let what = match image {
        Some(image) => format!(
            "ERASE {} and write {} onto it",
            device::describe(disk),
            image.display()
        ),
        None => format!("change the boot partition of {}", device::describe(disk)),
    };
    if yes {
        eprintln!("spillway flash: about to {what} (--yes given)");
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "about to {what}: not on a terminal to confirm, so nothing was written; pass --yes to go ahead"
        );
    }
    eprint!(
        "About to {what}.\nType the device name ({}) to go on: ",
        disk.name
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != disk.name && answer.trim() != disk.path.to_string_lossy() {
        bail!("not confirmed; nothing was written");
    }
    Ok(())
}

/// Copies a whole card image onto a card, then makes sure it is on the card.
fn copy_image(image: &Path, dev: &Path) -> anyhow::Result<()> {
    let mut src =
        std::fs::File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    // Refuse what flash would refuse before erasing the card.
    let size = src.metadata()?.len();
    flash::disk::boot_partition(&src, size, &image.display().to_string())?;
    // That read moved the file's position.
    std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(0))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .with_context(|| format!("cannot open {} for writing (run as root)", dev.display()))?;
    let room = std::io::Seek::seek(&mut dst, std::io::SeekFrom::End(0))?;
    if size > room {
        bail!(
            "{} ({} MiB) does not fit on {} ({} MiB); nothing was written",
            image.display(),
            size >> 20,
            dev.display(),
            room >> 20
        );
    }
    std::io::Seek::seek(&mut dst, std::io::SeekFrom::Start(0))?;
    let bar = bar("copying");
    bar.set_length(size);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])
            .with_context(|| format!("cannot write to {}", dev.display()))?;
        bar.inc(n as u64);
    }
    dst.sync_all()
        .with_context(|| format!("cannot flush {}", dev.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "copied {} ({} MiB) to {}",
        image.display(),
        size >> 20,
        dev.display()
    );
    Ok(())
}

fn bar(what: &'static str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what);
    bar
}
