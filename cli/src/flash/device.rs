//! Safety checks before writing to a block device: whole disks only, nothing on them mounted,
//! used as swap or held by LVM/RAID/dm-crypt (which also rules out the disk this system runs
//! from), and a confirmation naming the disk.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::FlashError;

/// What the kernel says about a disk and its partitions.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    /// Kernel name, e.g. `sdb`, `mmcblk0`, `loop3`.
    pub name: String,
    /// `major:minor` of the disk and of each partition, with the partitions' names.
    pub devices: Vec<(String, String)>,
    /// Partitions (or the disk) that another block device sits on (LVM, RAID, dm-crypt).
    pub held_by: Vec<(String, String)>,
    pub size: u64,
    pub model: String,
    pub removable: bool,
}

/// Reads `/sys/class/block` for `path`; refuses files, partitions and unknown devices.
pub fn inspect(path: &Path) -> Result<Disk, FlashError> {
    let refuse = |why: String| FlashError::UnsafeDevice {
        path: path.to_owned(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read it ({e})")))?;
    if !meta.file_type().is_block_device() {
        return Err(refuse(
            "it is not a block device (for an image file use --image alone)".into(),
        ));
    }
    let (major, minor) = (
        nix::sys::stat::major(meta.rdev()),
        nix::sys::stat::minor(meta.rdev()),
    );
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let sys =
        std::fs::canonicalize(&sys).map_err(|e| refuse(format!("{} ({e})", sys.display())))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if sys.join("partition").exists() {
        let disk = sys
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(refuse(format!(
            "it is partition {name}; pass the whole card, /dev/{disk}"
        )));
    }
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut devices = vec![(name.clone(), read(sys.join("dev")))];
    let mut held_by = Vec::new();
    let mut parts = vec![sys.clone()];
    if let Ok(entries) = std::fs::read_dir(&sys) {
        for e in entries.flatten() {
            let p = e.path();
            if p.join("partition").exists() {
                devices.push((
                    e.file_name().to_string_lossy().into_owned(),
                    read(p.join("dev")),
                ));
                parts.push(p);
            }
        }
    }
    for p in &parts {
        if let Ok(holders) = std::fs::read_dir(p.join("holders")) {
            for h in holders.flatten() {
                let part = p.file_name().map(|n| n.to_string_lossy().into_owned());
                held_by.push((
                    part.unwrap_or_default(),
                    h.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
    }
    Ok(Disk {
        path: path.to_owned(),
        size: read(sys.join("size")).parse::<u64>().unwrap_or(0) * 512,
        model: read(sys.join("device/model")),
        removable: read(sys.join("removable")) == "1",
        name,
        devices,
        held_by,
    })
}

/// Refuses a disk that is in use. `mountinfo` is `/proc/self/mountinfo`, `swaps` `/proc/swaps`.
pub fn check_unused(disk: &Disk, mountinfo: &str, swaps: &str) -> Result<(), FlashError> {
    let mut uses = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if let (Some(dev), Some(point)) = (fields.get(2), fields.get(4))
            && let Some((part, _)) = disk.devices.iter().find(|(_, d)| d == dev)
        {
            uses.push(format!(
                "{part} is mounted on {}",
                point.replace("\\040", " ")
            ));
        }
    }
    for line in swaps.lines().skip(1) {
        let source = line.split_whitespace().next().unwrap_or("");
        if let Some((part, _)) = disk
            .devices
            .iter()
            .find(|(name, _)| source == format!("/dev/{name}"))
        {
            uses.push(format!("{part} is used as swap"));
        }
    }
    for (part, holder) in &disk.held_by {
        uses.push(format!(
            "{part} is in use by {holder} (LVM, RAID or dm-crypt)"
        ));
    }
    if uses.is_empty() {
        return Ok(());
    }
    Err(FlashError::UnsafeDevice {
        path: disk.path.clone(),
        why: format!(
            "{}. Unmount it first (e.g. `umount /dev/{}*`); a disk this system runs from is never written",
            uses.join(", "),
            disk.name
        ),
    })
}

/// One line naming the disk, for the confirmation prompt.
pub fn describe(disk: &Disk) -> String {
    format!(
        "{} ({}{:.1} GB{})",
        disk.path.display(),
        if disk.model.is_empty() {
            String::new()
        } else {
            format!("{}, ", disk.model)
        },
        disk.size as f64 / 1e9,
        if disk.removable { ", removable" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> Disk {
        Disk {
            path: "/dev/sdb".into(),
            name: "sdb".into(),
            devices: vec![
                ("sdb".into(), "8:16".into()),
                ("sdb1".into(), "8:17".into()),
                ("sdb2".into(), "8:18".into()),
            ],
            held_by: Vec::new(),
            size: 32_000_000_000,
            model: "SD Card".into(),
            removable: true,
        }
    }

    const MOUNTINFO: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        40 22 8:18 / /media/pi/rootfs rw,nosuid shared:2 - ext4 /dev/sdb2 rw\n";

    #[test]
    fn a_card_with_a_mounted_partition_is_refused_with_the_mount_point() {
        let err = check_unused(&card(), MOUNTINFO, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sdb2 is mounted on /media/pi/rootfs"), "{err}");
        assert!(err.contains("umount /dev/sdb*"), "{err}");
    }

    #[test]
    fn the_system_disk_is_refused_because_its_root_is_mounted() {
        let mut sda = card();
        sda.path = "/dev/sda".into();
        sda.devices = vec![("sda".into(), "8:0".into()), ("sda1".into(), "8:1".into())];
        let err = check_unused(&sda, MOUNTINFO, "").unwrap_err().to_string();
        assert!(err.contains("sda1 is mounted on /"), "{err}");
    }

    #[test]
    fn swap_and_device_mapper_holders_count_as_in_use() {
        let swaps = "Filename Type Size Used Priority\n/dev/sdb2 partition 1024 0 -2\n";
        let err = check_unused(&card(), "", swaps).unwrap_err().to_string();
        assert!(err.contains("sdb2 is used as swap"), "{err}");
        let mut held = card();
        held.held_by.push(("sdb2".into(), "dm-0".into()));
        assert!(check_unused(&held, "", "").is_err());
    }

    #[test]
    fn an_unused_card_passes() {
        let unrelated = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        check_unused(&card(), unrelated, "Filename Type\n").expect("unused");
        assert_eq!(describe(&card()), "/dev/sdb (SD Card, 32.0 GB, removable)");
    }
}
