//! Finding the FAT boot partition of an SD-card image or card: MBR (Raspberry Pi OS, Ubuntu) or
//! GPT, parsed with `mbrman` and `gpt`; nothing is mounted.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::FlashError;

/// Where the boot partition lies, in bytes from the start of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootPartition {
    /// 1-based, as `fdisk -l` and `/dev/sdX1` number it.
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

/// MBR partition types that hold FAT file systems.
const MBR_FAT: [u8; 7] = [0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e, 0xef];
const MBR_PROTECTIVE: u8 = 0xee;

/// The first FAT partition of `disk` (`size` bytes long). Refuses compressed files, bare file
/// systems and partitions that run past the end of the file (a truncated download).
pub fn boot_partition(disk: &File, size: u64, name: &str) -> Result<BootPartition, FlashError> {
    let mut head = [0u8; 512];
    let mut reader = disk;
    reader
        .seek(SeekFrom::Start(0))
        .and_then(|_| reader.read_exact(&mut head))
        .map_err(|_| FlashError::NotADisk {
            path: name.to_owned(),
            why: format!("it is only {size} bytes long"),
        })?;
    if let Some(kind) = compressed(&head) {
        return Err(FlashError::Compressed {
            path: name.to_owned(),
            kind,
        });
    }
    // A FAT boot sector also ends in 55 aa; its BPB names the FAT type where an MBR has code.
    if &head[82..87] == b"FAT32" || &head[54..59] == b"FAT16" || &head[54..59] == b"FAT12" {
        return Err(FlashError::NotADisk {
            path: name.to_owned(),
            why: "it holds a bare FAT file system, not a partitioned card".into(),
        });
    }
    if head[510..512] != [0x55, 0xaa] {
        return Err(FlashError::NotADisk {
            path: name.to_owned(),
            why: "it has no MBR or GPT partition table".into(),
        });
    }
    let mbr = mbrman::MBR::read_from(&mut reader, 512).map_err(|e| FlashError::NotADisk {
        path: name.to_owned(),
        why: format!("its MBR is unreadable ({e})"),
    })?;
    let found = if mbr.iter().any(|(_, p)| p.sys == MBR_PROTECTIVE) {
        gpt_boot(disk, name)?
    } else {
        mbr.iter()
            .find(|(_, p)| p.is_used() && MBR_FAT.contains(&p.sys))
            .map(|(i, p)| BootPartition {
                number: i as u32,
                start: u64::from(p.starting_lba) * 512,
                len: u64::from(p.sectors) * 512,
            })
    };
    let part = found.ok_or_else(|| FlashError::NoBootPartition {
        path: name.to_owned(),
    })?;
    if part.start + part.len > size {
        return Err(FlashError::NotADisk {
            path: name.to_owned(),
            why: format!(
                "partition {} ends at byte {} but the file has {size} bytes (an incomplete download or copy?)",
                part.number,
                part.start + part.len
            ),
        });
    }
    Ok(part)
}

fn gpt_boot(disk: &File, name: &str) -> Result<Option<BootPartition>, FlashError> {
    let size = gpt::disk::LogicalBlockSize::Lb512;
    let table = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(size)
        .open_from_device(disk)
        .map_err(|e| FlashError::NotADisk {
            path: name.to_owned(),
            why: format!("its GPT is unreadable ({e})"),
        })?;
    // Microsoft basic data is what Raspberry Pi and most tools give FAT partitions; EFI system
    // partitions are FAT too. `open_fat` checks the file system itself.
    let fat_types = [gpt::partition_types::BASIC, gpt::partition_types::EFI];
    for (number, p) in table.partitions() {
        if fat_types.contains(&p.part_type_guid)
            && let (Ok(start), Ok(len)) = (p.bytes_start(size), p.bytes_len(size))
        {
            return Ok(Some(BootPartition {
                number: *number,
                start,
                len,
            }));
        }
    }
    Ok(None)
}

/// Names a compressed file by its magic bytes (users often pass the download as it came).
fn compressed(head: &[u8]) -> Option<&'static str> {
    match head {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some("xz: unxz it first"),
        [0x1f, 0x8b, ..] => Some("gzip: gunzip it first"),
        [b'P', b'K', 3, 4, ..] => Some("zip: unzip it first"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd: unzstd it first"),
        _ => None,
    }
}
