//! A new GPT with one partition over a whole disk, and the kernel told.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition_types;

use crate::disks::{self, Disk, Hidden, Sys};
use crate::{label, StorageError};

/// The partition starts 1 MiB into the disk: sector 2048 of a 512-byte
/// sector disk, as boot2container's, and aligned for any disk.
pub(crate) const START_BYTES: u64 = 1 << 20;

/// The GPT partition name of the cache partition.
pub(crate) const PARTITION_NAME: &str = label::LABEL;

/// Writes a protective MBR and a GPT holding one Linux filesystem partition
/// from 1 MiB to the end of `dev` (a disk or an image file), after zeroing
/// that first MiB so no older partition table or filesystem signature is
/// left. Returns the partition's first and last sector.
pub(crate) fn write_gpt(
    dev: &mut File,
    sector: LogicalBlockSize,
) -> Result<(u64, u64), gpt::GptError> {
    let size = dev.seek(SeekFrom::End(0))?;
    let lb = sector.as_u64();
    let first = START_BYTES / lb;
    // Room for the MBR, both headers and both 128-entry tables, and some.
    if size / lb < first + 2 * 34 + 8 {
        return Err(gpt::GptError::NotEnoughSpace);
    }
    dev.seek(SeekFrom::Start(0))?;
    dev.write_all(&vec![0u8; START_BYTES as usize])?;

    let sectors = size / lb;
    ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(dev)
        .map_err(|e| gpt::GptError::Io(io::Error::other(e.to_string())))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(sector)
        .create_from_device(&mut *dev, None)?;
    let last = disk.header().last_usable;
    if last <= first {
        return Err(gpt::GptError::NotEnoughSpace);
    }
    disk.add_partition_at(
        PARTITION_NAME,
        1,
        first,
        last - first + 1,
        partition_types::LINUX_FS,
        0,
    )?;
    disk.write()?;
    dev.sync_all()?;
    Ok((first, last))
}

fn sector_size(dev: &File, sys: &Sys, disk: &str) -> LogicalBlockSize {
    let bytes = rustix::fs::ioctl_blksszget(dev)
        .ok()
        .map(u64::from)
        .or_else(|| {
            std::fs::read_to_string(
                sys.sys
                    .join("block")
                    .join(disk)
                    .join("queue/logical_block_size"),
            )
            .ok()?
            .trim()
            .parse()
            .ok()
        });
    match bytes {
        Some(4096) => LogicalBlockSize::Lb4096,
        _ => LogicalBlockSize::Lb512,
    }
}

// BLKRRPART = _IO(0x12, 95): re-read the partition table.
nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Asks the kernel to re-read the partition table of `dev`. It refuses with
/// EBUSY while a partition is in use; retry briefly in case the last user
/// is just closing it.
fn reread_partitions(dev: &File) -> nix::Result<()> {
    let mut tries = 0;
    loop {
        // SAFETY: BLKRRPART takes no argument; the fd is open.
        match unsafe { blkrrpart(dev.as_raw_fd()) } {
            Err(nix::errno::Errno::EBUSY) if tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other.map(drop),
        }
    }
}

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

const BLKPG_ADD_PARTITION: libc::c_int = 1;
// BLKPG = _IO(0x12, 105), whose argument is a pointer all the same.
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

/// Tells the kernel about partition `number` ourselves, as partx does: for
/// kernels built without the GPT parser (CONFIG_EFI_PARTITION).
fn add_partition(dev: &File, number: u32, start: u64, length: u64) -> nix::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_ADD_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the partition it points to outlive the call.
    unsafe { blkpg(dev.as_raw_fd(), &arg) }.map(drop)
}

/// How long the kernel gets to show the partitions it read: it reads them
/// during BLKRRPART, so this only covers the device node's creation.
const SCAN_WAIT: Duration = Duration::from_secs(2);

/// Erases `disk` with a new partition table and returns the device node of
/// its new partition, once the kernel has created it.
pub(crate) fn partition_disk(
    sys: &Sys,
    disk: &Disk,
    wait: Duration,
) -> Result<PathBuf, StorageError> {
    let path = sys.dev_path(&disk.name);
    let io_err = |e: io::Error| StorageError::io(&path, e);
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err)?;
    let sector = sector_size(&dev, sys, &disk.name);
    let (first, last) = write_gpt(&mut dev, sector).map_err(|source| StorageError::Gpt {
        disk: path.clone(),
        source,
    })?;
    log::debug!(
        "{}: GPT written, partition 1 from sector {first} to {last}",
        path.display()
    );
    reread_partitions(&dev).map_err(|e| StorageError::Device {
        path: path.clone(),
        what: format!("the kernel cannot re-read its partition table: {e}"),
    })?;
    if let Some(part) = disks::wait_partition(sys, &disk.name, 1, SCAN_WAIT.min(wait)) {
        return Ok(part);
    }
    let lb = sector.as_u64();
    add_partition(&dev, 1, first * lb, (last - first + 1) * lb).map_err(|e| {
        StorageError::Device {
            path: path.clone(),
            what: format!(
                "the kernel found no partition in the new table, and adding it failed: {e}"
            ),
        }
    })?;
    log::info!(
        "{}: this kernel does not read GPT partition tables (no CONFIG_EFI_PARTITION): partition 1 added by hand",
        path.display()
    );
    drop(dev);
    disks::wait_partition(sys, &disk.name, 1, wait).ok_or_else(|| StorageError::Device {
        path: path.clone(),
        what: format!(
            "partition {} did not appear after the new partition table",
            disks::partition_name(&disk.name, 1)
        ),
    })
}

/// Tells the kernel about a `B2C_CACHE` partition it did not find itself
/// (no GPT parser) and returns its device node.
pub(crate) fn attach(sys: &Sys, part: &Hidden, wait: Duration) -> Result<PathBuf, StorageError> {
    let path = sys.dev_path(&part.disk);
    let dev = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
    log::info!(
        "{}: this kernel does not read GPT partition tables (no CONFIG_EFI_PARTITION): adding partition {} by hand",
        path.display(),
        part.number
    );
    add_partition(&dev, part.number, part.start, part.length).map_err(|e| {
        StorageError::Device {
            path: path.clone(),
            what: format!("cannot add partition {}: {e}", part.number),
        }
    })?;
    drop(dev);
    disks::wait_partition(sys, &part.disk, part.number, wait).ok_or_else(|| StorageError::Device {
        path: path.clone(),
        what: format!("partition {} did not appear", part.number),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Whether `len` bytes of `path` from `from` on are zeros.
    fn zeros(path: &Path, from: u64, len: usize) -> bool {
        use std::io::Read;
        let mut f = File::open(path).unwrap();
        f.seek(SeekFrom::Start(from)).unwrap();
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).unwrap();
        buf.iter().all(|b| *b == 0)
    }

    fn image(bytes: u64, fill: u8) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![fill; bytes as usize]).unwrap();
        (dir, path)
    }

    fn open_rw(path: &Path) -> std::fs::File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    fn check_table(path: &Path, sector: LogicalBlockSize) {
        let lb = sector.as_u64();
        let size = std::fs::metadata(path).unwrap().len();
        let disk = gpt::GptConfig::new()
            .logical_block_size(sector)
            .only_valid_headers(true)
            .open(path)
            .unwrap();
        let parts = disk.partitions();
        assert_eq!(parts.len(), 1);
        let p = &parts[&1];
        assert_eq!(p.first_lba, START_BYTES / lb);
        assert_eq!(p.last_lba, disk.header().last_usable);
        // The partition runs to the backup table: 32 sectors of entries and
        // the backup header for 512-byte sectors.
        let tail = if lb == 512 { 33 } else { 5 };
        assert_eq!(p.last_lba, size / lb - 1 - tail);
        assert_eq!(p.part_type_guid, partition_types::LINUX_FS);
        assert_eq!(p.name, PARTITION_NAME);
        // The protective MBR covers the disk.
        let mbr = ProtectiveMBR::from_disk(&mut File::open(path).unwrap(), sector).unwrap();
        let rec = mbr.partition(0).unwrap();
        assert_eq!(rec.os_type, 0xEE);
        assert_eq!(rec.lb_start, 1);
    }

    #[test]
    fn gpt_over_a_blank_image() {
        let (_d, path) = image(64 << 20, 0);
        let mut f = open_rw(&path);
        let (first, last) = write_gpt(&mut f, LogicalBlockSize::Lb512).unwrap();
        assert_eq!(first, 2048);
        assert_eq!(last, (64 << 20) / 512 - 34);
        check_table(&path, LogicalBlockSize::Lb512);
    }

    #[test]
    fn gpt_over_old_data_wipes_the_first_mib() {
        // Garbage everywhere, as a disk that held something else.
        let (_d, path) = image(32 << 20, 0x5a);
        let mut f = open_rw(&path);
        write_gpt(&mut f, LogicalBlockSize::Lb512).unwrap();
        check_table(&path, LogicalBlockSize::Lb512);
        // Between the primary table (sector 34) and the partition: zeros.
        assert!(zeros(&path, 34 * 512, (2048 - 34) * 512));
        assert!(label::read_label(&path).unwrap().is_none());
    }

    #[test]
    fn gpt_with_4k_sectors() {
        let (_d, path) = image(32 << 20, 0);
        let mut f = open_rw(&path);
        let (first, _) = write_gpt(&mut f, LogicalBlockSize::Lb4096).unwrap();
        assert_eq!(first, 256);
        check_table(&path, LogicalBlockSize::Lb4096);
    }

    #[test]
    fn too_small_for_a_partition() {
        let (_d, path) = image(1 << 20, 0);
        let mut f = open_rw(&path);
        assert!(matches!(
            write_gpt(&mut f, LogicalBlockSize::Lb512),
            Err(gpt::GptError::NotEnoughSpace)
        ));
    }

    #[test]
    fn blkid_sees_the_table() {
        let (_d, path) = image(16 << 20, 0);
        let mut f = open_rw(&path);
        write_gpt(&mut f, LogicalBlockSize::Lb512).unwrap();
        let (code, out) = crate::test_util::output(
            std::process::Command::new("blkid")
                .args(["-p", "-o", "export"])
                .arg(&path),
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("PTTYPE=gpt"), "{out}");
    }
}
