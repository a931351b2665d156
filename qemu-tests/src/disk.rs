//! Raw disk images for the guest ([`crate::BootOptions::with_disk`]) and
//! what is on them after a boot: read from the image file with
//! util-linux's `blkid -p` and `partx` (libblkid, independent of what the
//! guest used to write them) and e2fsprogs' `dumpe2fs`; no loop device,
//! no mount.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{run, Context, Error, Result};

pub const SECTOR: u64 = 512;

/// A sparse raw image of `size` bytes at `dir/name`: all zeroes, so no
/// partition table and no filesystem. Replaces any file of that name.
pub fn blank_disk(dir: &Path, name: &str, size: u64) -> Result<PathBuf> {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).context(|| format!("create {}", path.display()))?;
    file.set_len(size)
        .context(|| format!("size {} to {size} bytes", path.display()))?;
    Ok(path)
}

/// A disk of `size` bytes with a DOS partition table holding one Linux
/// partition (type 0x83) from sector 2048, `part_size` bytes long, with an
/// ext4 filesystem labelled `label` in it (by the host's `mke2fs`): a disk
/// that was in use for something else.
pub fn dos_disk_with_ext4(
    dir: &Path,
    name: &str,
    size: u64,
    part_size: u64,
    label: &str,
) -> Result<PathBuf> {
    const START: u64 = 2048;
    let sectors = part_size / SECTOR;
    if (START + sectors) * SECTOR > size || sectors > u32::MAX as u64 {
        return Err(Error::new(format!(
            "a {part_size}-byte partition does not fit a {size}-byte DOS disk"
        )));
    }
    let path = blank_disk(dir, name, size)?;
    let mut mbr = [0u8; 512];
    mbr[440..444].copy_from_slice(&0xb2c0_cace_u32.to_le_bytes()); // disk id
    let entry = &mut mbr[446..462];
    // Not bootable; CHS fields "beyond 8 GiB" (only LBA counts).
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[4] = 0x83;
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&(START as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
    write_at(&path, 0, &mbr)?;
    run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", label, "-E"])
            .arg(format!("offset={}", START * SECTOR))
            .arg(&path)
            .arg(format!("{}k", sectors * SECTOR / 1024)),
        "mke2fs",
    )?;
    Ok(path)
}

pub(crate) fn write_at(path: &Path, offset: u64, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .context(|| format!("open {}", path.display()))?;
    file.write_all_at(data, offset)
        .context(|| format!("write {}", path.display()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// As libblkid names it: `gpt`, `dos`…
    pub kind: String,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1 for what the guest calls `/dev/vda1`.
    pub number: u32,
    /// In 512-byte sectors.
    pub start: u64,
    pub sectors: u64,
    /// `0x83` (DOS) or a GUID in lower case (GPT).
    pub kind: String,
}

impl Partition {
    /// Where it starts, in bytes: the `offset` for [`filesystem`].
    pub fn offset(&self) -> u64 {
        self.start * SECTOR
    }

    /// The sector after its last one.
    pub fn end(&self) -> u64 {
        self.start + self.sectors
    }
}

/// The partition table of `image`, `None` if it has none.
pub fn partition_table(image: &Path) -> Result<Option<PartitionTable>> {
    let Some(probe) = blkid(image, 0)? else {
        return Ok(None);
    };
    let Some(kind) = value(&probe, "PTTYPE") else {
        return Ok(None);
    };
    let out = run(
        Command::new("partx")
            .args(["-P", "-o", "NR,START,SECTORS,TYPE"])
            .arg(image),
        "partx",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut partitions = Vec::new();
    for line in text.lines() {
        let pairs = parse_pairs(line);
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::new(format!("partx: no {name} in {line:?}")))
        };
        let number = |name: &str| -> Result<u64> {
            field(name)?
                .parse()
                .map_err(|_| Error::new(format!("partx: bad {name} in {line:?}")))
        };
        partitions.push(Partition {
            number: number("NR")? as u32,
            start: number("START")?,
            sectors: number("SECTORS")?,
            kind: field("TYPE")?.to_lowercase(),
        });
    }
    Ok(Some(PartitionTable { kind, partitions }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// `ext4`, `vfat`…
    pub fstype: String,
    pub label: Option<String>,
    /// New with each mkfs: tells a reformatted filesystem from a reused one.
    pub uuid: Option<String>,
}

/// The filesystem that starts `offset` bytes into `image` (0: on the whole
/// disk; [`Partition::offset`]: in a partition), `None` if none is found.
pub fn filesystem(image: &Path, offset: u64) -> Result<Option<Filesystem>> {
    let Some(probe) = blkid(image, offset)? else {
        return Ok(None);
    };
    Ok(value(&probe, "TYPE").map(|fstype| Filesystem {
        fstype,
        label: value(&probe, "LABEL"),
        uuid: value(&probe, "UUID"),
    }))
}

/// `dumpe2fs -h` of the ext2/3/4 filesystem `offset` bytes into `image`.
fn superblock(image: &Path, offset: u64) -> Result<String> {
    let out = run(
        Command::new("dumpe2fs")
            .arg("-h")
            .arg(format!("{}?offset={offset}", image.display())),
        "dumpe2fs -h",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The features of the ext2/3/4 filesystem `offset` bytes into `image`
/// (`has_journal`, `encrypt`…), from its superblock.
pub fn ext4_features(image: &Path, offset: u64) -> Result<Vec<String>> {
    let text = superblock(image, offset)?;
    let features = text
        .lines()
        .find_map(|line| line.strip_prefix("Filesystem features:"))
        .ok_or_else(|| Error::new(format!("dumpe2fs: no features line in:\n{text}")))?;
    Ok(features.split_whitespace().map(String::from).collect())
}

/// The bytes in use in the ext2/3/4 filesystem `offset` bytes into
/// `image`, from its superblock: exact after a clean unmount.
pub fn ext4_used_bytes(image: &Path, offset: u64) -> Result<u64> {
    let text = superblock(image, offset)?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| Error::new(format!("dumpe2fs: no {name} line in:\n{text}")))
    };
    let (blocks, free, size) = (
        field("Block count:")?,
        field("Free blocks:")?,
        field("Block size:")?,
    );
    Ok(blocks.saturating_sub(free) * size)
}

/// `blkid -p -o export` at `offset`: `None` when nothing is recognised
/// (blkid's exit status 2).
fn blkid(image: &Path, offset: u64) -> Result<Option<Vec<(String, String)>>> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", "--offset"])
        .arg(offset.to_string())
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .context(|| "cannot run blkid".to_string())?;
    match out.status.code() {
        Some(0) => Ok(Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )),
        Some(2) => Ok(None),
        _ => Err(Error::new(format!(
            "blkid -p {} at {offset} failed ({}): {}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

fn value(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// `NR="1" START="2048" TYPE="0x83"`: partx's `-P` output (values are
/// quoted, with `\x` escapes for odd bytes, never for ours).
fn parse_pairs(line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = line.trim();
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        pairs.push((key.trim().to_string(), value.to_string()));
        rest = tail;
    }
    pairs
}

/// `debugfs -R COMMAND` on the ext4 `offset` bytes into `image`: its
/// output (read-only; for what the guest left on its disk).
pub fn debugfs(image: &Path, offset: u64, command: &str) -> Result<String> {
    let out = run(
        Command::new("debugfs")
            .arg("-R")
            .arg(command)
            .arg(format!("{}?offset={offset}", image.display())),
        "debugfs",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn blank_disk_is_sparse_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let disk = blank_disk(dir.path(), "blank.img", 64 * MIB).unwrap();
        let meta = std::fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 64 * MIB);
        assert_eq!(std::os::unix::fs::MetadataExt::blocks(&meta), 0, "sparse");
        assert_eq!(partition_table(&disk).unwrap(), None);
        assert_eq!(filesystem(&disk, 0).unwrap(), None);
        assert_eq!(filesystem(&disk, 2048 * SECTOR).unwrap(), None);
    }

    #[test]
    fn dos_disk_has_its_partition_and_labelled_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dos_disk_with_ext4(dir.path(), "dos.img", 256 * MIB, 100 * MIB, "DATA").unwrap();
        let table = partition_table(&disk).unwrap().expect("a partition table");
        assert_eq!(
            table,
            PartitionTable {
                kind: "dos".into(),
                partitions: vec![Partition {
                    number: 1,
                    start: 2048,
                    sectors: 100 * MIB / SECTOR,
                    kind: "0x83".into(),
                }],
            }
        );
        let part = &table.partitions[0];
        assert_eq!(part.end(), 2048 + 204800);
        let fs = filesystem(&disk, part.offset())
            .unwrap()
            .expect("a filesystem");
        assert_eq!(
            (fs.fstype.as_str(), fs.label.as_deref()),
            ("ext4", Some("DATA"))
        );
        assert_eq!(fs.uuid.as_ref().map(String::len), Some(36), "{fs:?}");
        let again =
            dos_disk_with_ext4(dir.path(), "dos2.img", 256 * MIB, 100 * MIB, "DATA").unwrap();
        assert_ne!(
            filesystem(&again, part.offset()).unwrap().unwrap().uuid,
            fs.uuid,
            "each mkfs makes a new UUID"
        );
        // The table, not a filesystem, is what the whole disk holds.
        assert_eq!(filesystem(&disk, 0).unwrap(), None);
        let features = ext4_features(&disk, part.offset()).unwrap();
        assert!(features.iter().any(|f| f == "has_journal"), "{features:?}");
        assert!(
            dos_disk_with_ext4(dir.path(), "small.img", 10 * MIB, 10 * MIB, "X").is_err(),
            "the partition starts at 1 MiB, so 10 MiB do not fit"
        );
    }

    /// A GPT the way the guest is to write one (one partition from sector
    /// 2048 to the last usable sector), built here byte by byte, so that
    /// the reading side is checked on what libblkid accepts as a GPT.
    #[test]
    fn gpt_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let size = 64 * MIB;
        let disk = blank_disk(dir.path(), "gpt.img", size).unwrap();
        let total = size / SECTOR;
        let last_usable = total - 34;
        write_gpt(&disk, total, 2048, last_usable);
        let table = partition_table(&disk).unwrap().expect("a partition table");
        assert_eq!(table.kind, "gpt");
        assert_eq!(
            table.partitions,
            [Partition {
                number: 1,
                start: 2048,
                sectors: last_usable - 2048 + 1,
                kind: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
            }]
        );
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        crc.sum()
    }

    fn write_gpt(disk: &Path, total: u64, first: u64, last: u64) {
        let mut pmbr = [0u8; 512];
        pmbr[446 + 4] = 0xee;
        pmbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        pmbr[446 + 12..446 + 16].copy_from_slice(&((total - 1) as u32).to_le_bytes());
        pmbr[510..].copy_from_slice(&[0x55, 0xaa]);
        write_at(disk, 0, &pmbr).unwrap();

        let mut entries = vec![0u8; 128 * 128];
        // Linux filesystem data, mixed-endian on disk.
        entries[..16].copy_from_slice(&[
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ]);
        entries[16..32].copy_from_slice(&[0x11; 16]);
        entries[32..40].copy_from_slice(&first.to_le_bytes());
        entries[40..48].copy_from_slice(&last.to_le_bytes());
        let entries_crc = crc32(&entries);
        let header = |my_lba: u64, other_lba: u64, entries_lba: u64| {
            let mut h = vec![0u8; 92];
            h[..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my_lba.to_le_bytes());
            h[32..40].copy_from_slice(&other_lba.to_le_bytes());
            h[40..48].copy_from_slice(&34u64.to_le_bytes());
            h[48..56].copy_from_slice(&(total - 34).to_le_bytes());
            h[56..72].copy_from_slice(&[0x22; 16]);
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
            let crc = crc32(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        write_at(disk, SECTOR, &header(1, total - 1, 2)).unwrap();
        write_at(disk, 2 * SECTOR, &entries).unwrap();
        write_at(disk, (total - 33) * SECTOR, &entries).unwrap();
        write_at(
            disk,
            (total - 1) * SECTOR,
            &header(total - 1, 1, total - 33),
        )
        .unwrap();
    }

    #[test]
    fn partx_pairs() {
        assert_eq!(
            parse_pairs(r#"NR="1" START="2048" SECTORS="204800" TYPE="0x83""#),
            [
                ("NR".to_string(), "1".to_string()),
                ("START".into(), "2048".into()),
                ("SECTORS".into(), "204800".into()),
                ("TYPE".into(), "0x83".into()),
            ]
        );
        assert!(parse_pairs("").is_empty());
    }
}
