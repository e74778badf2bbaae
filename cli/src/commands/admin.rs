//! `spillway admin backup | restore`: the coordinator's state, encrypted under an operator
//! passphrase (see `spillway_coordinator::backup`).

use std::path::Path;

use anyhow::Context;
use spillway_coordinator::backup::{self, Manifest, Passphrase};

use crate::client::Client;

/// The passphrase from `file` (its first line), else `$SPILLWAY_BACKUP_PASSPHRASE`, checked.
fn passphrase(file: Option<&Path>) -> anyhow::Result<(String, Passphrase)> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the passphrase file {}", f.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => std::env::var("SPILLWAY_BACKUP_PASSPHRASE").map_err(|_| {
            anyhow::anyhow!(
                "a backup needs a passphrase: --passphrase-file FILE or $SPILLWAY_BACKUP_PASSPHRASE"
            )
        })?,
    };
    let checked = Passphrase::new(&text)?;
    Ok((text, checked))
}

/// Downloads a backup of the running coordinator into `output`, then reads it back whole
/// (decrypted, every file checked) before putting it in place.
pub async fn backup(
    c: &Client,
    output: &Path,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<()> {
    let (text, pass) = passphrase(passphrase_file)?;
    let folder = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output
        .file_name()
        .map_or_else(|| "backup".into(), |n| n.to_string_lossy().into_owned());
    let partial = folder.join(format!(".{name}.partial-{}", std::process::id()));
    let result = async {
        let mut file = create_private(&partial)?;
        let bytes = c
            .post_to_writer(
                "/v1/admin/backup",
                &spillway_api::BackupRequest { passphrase: text },
                &mut file,
            )
            .await?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let check = partial.clone();
        let manifest = tokio::task::spawn_blocking(move || -> anyhow::Result<Manifest> {
            let file = std::fs::File::open(&check)?;
            Ok(backup::inspect(std::io::BufReader::new(file), &pass)?)
        })
        .await??;
        std::fs::rename(&partial, output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        anyhow::Ok((bytes, manifest))
    }
    .await;
    let (bytes, manifest) = result.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    println!(
        "backup of coordinator `{}`: {} files ({} blobs), {} bytes of state, {} bytes encrypted, read back and checked -> {}",
        manifest.coordinator,
        manifest.files.len(),
        manifest.blobs(),
        manifest.bytes(),
        bytes,
        output.display()
    );
    Ok(())
}

/// Restores `file` into the state folder `state_dir`, the coordinator stopped.
pub fn restore(
    file: &Path,
    state_dir: &Path,
    passphrase_file: Option<&Path>,
    force: bool,
) -> anyhow::Result<()> {
    let (_, pass) = passphrase(passphrase_file)?;
    let input = std::fs::File::open(file)
        .with_context(|| format!("cannot read the backup {}", file.display()))?;
    let restored = backup::restore(std::io::BufReader::new(input), &pass, state_dir, force)?;
    let m = &restored.manifest;
    println!(
        "restored coordinator `{}` as it was at {} ms since the epoch: {} files ({} blobs, {} bytes) -> {}",
        m.coordinator,
        m.created_at_ms,
        m.files.len(),
        m.blobs(),
        m.bytes(),
        state_dir.display()
    );
    if let Some(aside) = &restored.moved_aside {
        println!("the folder's earlier content is in {}", aside.display());
    }
    println!(
        "start the coordinator on it (spillway serve, or systemctl start spillway-coordinator): agents reconnect with the certificates they have"
    );
    Ok(())
}

fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}
