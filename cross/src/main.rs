//! `spillway-image`: Spillway's own container images, for every board at once, without a Docker
//! daemon. For `agent` or `coordinator` it writes an `oci-archive` (a tarred OCI image layout)
//! holding an image index over linux/amd64, linux/arm64 and linux/arm/v7, one minimal image each:
//! the static binary from `cross/build.sh`, Debian's CA bundle, `/etc/passwd` and `/etc/group`.
//! The coordinator runs as an unprivileged user (65532); the agent as root, since it creates
//! containers. Layers are reproducible: sorted entries, fixed owners and times
//! (`$SOURCE_DATE_EPOCH`, else 0), gzip without a timestamp.
//!
//!   spillway-image agent --binaries /var/cache/spillway/target --out spillway-agent.oci.tar
//!   skopeo copy --all oci-archive:spillway-agent.oci.tar:0.1.0 docker://registry/spillway-agent:0.1.0

mod layout;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Build Spillway's multi-platform OCI images as an oci-archive"
)]
struct Args {
    /// Which image.
    component: Component,
    /// Folder with TRIPLE/release/BINARY (the target folder of cross/build.sh) or TRIPLE/BINARY.
    #[arg(long)]
    binaries: PathBuf,
    /// The oci-archive to write.
    #[arg(long)]
    out: PathBuf,
    /// Tag of the image (its `ref.name` in the archive).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// CA certificates for the image (HTTPS registries, cloud backends).
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    ca_bundle: PathBuf,
    /// Platforms to include.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linux/amd64,linux/arm64,linux/arm/v7"
    )]
    platforms: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Component {
    Agent,
    Coordinator,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spillway-image: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let ca = std::fs::read(&args.ca_bundle).with_context(|| {
        format!(
            "cannot read the CA bundle {} (Debian: apt-get install ca-certificates)",
            args.ca_bundle.display()
        )
    })?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let image = match args.component {
        Component::Agent => layout::ImageKind::agent(),
        Component::Coordinator => layout::ImageKind::coordinator(),
    };
    let mut built = Vec::new();
    for platform in &args.platforms {
        let target = layout::Target::parse(platform)?;
        let binary = target.find(&args.binaries, image.binary)?;
        let bytes =
            std::fs::read(&binary).with_context(|| format!("cannot read {}", binary.display()))?;
        layout::check_static_elf(&bytes, &target)
            .with_context(|| format!("{} cannot go into the {platform} image", binary.display()))?;
        built.push(layout::platform_image(&image, &target, &bytes, &ca, epoch)?);
    }
    let archive = layout::archive(&image, &args.tag, &built, epoch)?;
    std::fs::write(&args.out, &archive)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "{}: {} ({} platforms: {}), {:.1} MiB",
        args.out.display(),
        image.name,
        built.len(),
        args.platforms.join(", "),
        archive.len() as f64 / 1048576.0
    );
    Ok(())
}
