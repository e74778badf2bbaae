//! `spillway-agent pull | load | images`: the node's image store from the command line.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use spillway_agent::AgentConfig;
use spillway_agent::image::{ImageStore, Platform, PullProgress, archive, pull};
use spillway_proto::quantity::Bytes;

fn open(config: &AgentConfig) -> anyhow::Result<Arc<ImageStore>> {
    Ok(Arc::new(ImageStore::open(config.images_dir())?))
}

fn platform(config: &AgentConfig, text: Option<&str>) -> anyhow::Result<Platform> {
    match text {
        Some(t) => Platform::parse(t).map_err(anyhow::Error::msg),
        None => Ok(config.oci.platform.clone()),
    }
}

/// A bar per layer on a terminal; silent otherwise (logs and CI stay readable).
struct Bar(ProgressBar);

impl PullProgress for Bar {
    fn layer(&mut self, index: usize, count: usize, digest: &str, size: u64) {
        let short = digest.trim_start_matches("sha256:");
        self.0.set_length(size);
        self.0.set_position(0);
        self.0.set_message(format!(
            "layer {}/{count} {}",
            index + 1,
            &short[..short.len().min(12)]
        ));
    }
    fn advance(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn unpacking(&mut self) {
        self.0.set_message("unpacking");
    }
}

pub fn pull(config: &AgentConfig, image: &str, platform_text: Option<&str>) -> anyhow::Result<()> {
    let store = open(config)?;
    let platform = platform(config, platform_text)?;
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut progress = Bar(bar.clone());
    let record = runtime.block_on(pull::pull(
        &store,
        image,
        &config.oci.registries,
        &platform,
        &mut progress,
    ));
    bar.finish_and_clear();
    let record = record?;
    println!(
        "pulled {} ({}, {}, id {})",
        record
            .references
            .iter()
            .next()
            .map_or(image, String::as_str),
        record.platform,
        Bytes(record.size),
        record.short_id()
    );
    Ok(())
}

pub fn load(
    config: &AgentConfig,
    file: &Path,
    tag: Option<&str>,
    platform_text: Option<&str>,
) -> anyhow::Result<()> {
    let store = open(config)?;
    let platform = platform(config, platform_text)?;
    for record in archive::import(&store, file, tag, &platform)? {
        let names: Vec<&str> = record.references.iter().map(String::as_str).collect();
        println!(
            "loaded {} ({}, {}, id {})",
            if names.is_empty() {
                "(unnamed)".to_owned()
            } else {
                names.join(", ")
            },
            record.platform,
            Bytes(record.size),
            record.short_id()
        );
    }
    Ok(())
}

pub fn list(config: &AgentConfig) -> anyhow::Result<()> {
    let store = open(config)?;
    let records = store.records();
    if records.is_empty() {
        println!("no images (pull one: spillway-agent pull IMAGE)");
        return Ok(());
    }
    println!(
        "{:<52} {:<12} {:<14} {:>10}  LAST USED",
        "REFERENCE", "ID", "PLATFORM", "SIZE"
    );
    let total: u64 = records.iter().map(|r| r.size).sum();
    for r in &records {
        let ago = std::time::Duration::from_secs(now().saturating_sub(r.last_used));
        let names: Vec<&str> = r.references.iter().map(String::as_str).collect();
        let name = if names.is_empty() {
            "<none>".to_owned()
        } else {
            names.join(",")
        };
        println!(
            "{:<52} {:<12} {:<14} {:>10}  {} ago",
            name,
            r.short_id(),
            r.platform,
            Bytes(r.size).to_string(),
            humantime::format_duration(std::time::Duration::from_secs(ago.as_secs() / 60 * 60))
        );
    }
    println!(
        "{} images, {} of {} allowed (oci.image_store_max)",
        records.len(),
        Bytes(total),
        config.oci.image_store_max
    );
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
