//! `b2c.swap`: a swap file on the cache, or a swap device.
//!
//! The swap signature is written here (no mkswap in the initramfs): the
//! first page of the area holds a version-1 header and ends with
//! `SWAPSPACE2`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use b2c_cmdline::{Swap, SwapSpace};

use crate::{disks, mount, Cache, StorageError};

/// The swap file, at the root of the cache.
pub const SWAP_FILE: &str = "swapfile";
const MAGIC: &[u8; 10] = b"SWAPSPACE2";
/// mkswap refuses fewer pages; so do we.
const MIN_PAGES: u64 = 10;

/// Swap in use, for [`crate::teardown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapInfo {
    /// The swap file or device given to swapon(2).
    pub path: PathBuf,
    /// A file we created: removed at teardown.
    pub is_file: bool,
    /// Usable size, header page included.
    pub bytes: u64,
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// The first page of a swap area of `pages` pages: boot bits left zero,
/// then the version-1 header (native endian, as the kernel reads it), and
/// the magic in the last 10 bytes.
pub(crate) fn swap_header(page_size: u64, pages: u64, uuid: [u8; 16]) -> Vec<u8> {
    let mut page = vec![0u8; page_size as usize];
    let last_page = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    page[1024..1028].copy_from_slice(&1u32.to_ne_bytes()); // version
    page[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    page[1032..1036].copy_from_slice(&0u32.to_ne_bytes()); // nr_badpages
    page[1036..1052].copy_from_slice(&uuid);
    let n = page.len();
    page[n - MAGIC.len()..].copy_from_slice(MAGIC);
    page
}

/// A random version-4 UUID for the swap area, from /dev/urandom (which
/// never blocks); all zeros, which the kernel accepts, if unreadable.
fn random_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut uuid))
        .is_err()
    {
        return [0u8; 16];
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn pages_of(bytes: u64, page: u64) -> Result<u64, String> {
    let pages = bytes / page;
    if pages < MIN_PAGES {
        return Err(format!(
            "{bytes} bytes is too small for swap (at least {} KiB)",
            MIN_PAGES * page / 1024
        ));
    }
    Ok(pages)
}

/// Creates a swap file of `bytes` (rounded down to whole pages): mode 600,
/// allocated with fallocate (or zeros where the filesystem cannot), with
/// its header. An older file at `path` is replaced.
pub(crate) fn create_swap_file(path: &Path, bytes: u64) -> Result<u64, StorageError> {
    let page = page_size();
    let pages = pages_of(bytes, page).map_err(|what| StorageError::Device {
        path: path.to_path_buf(),
        what,
    })?;
    let len = pages * page;
    let io_err = |e: io::Error| StorageError::io(path, e);
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    let fill = || -> io::Result<()> {
        match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => {
                let zeros = vec![0u8; 1 << 20];
                let mut left = len;
                let mut w = &f;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    w.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    };
    let written = fill().and_then(|()| {
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&swap_header(page, pages, random_uuid()))?;
        f.sync_all()
    });
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(io_err(e));
    }
    Ok(len)
}

/// Writes a swap header over the start of a device, sized to the device.
fn format_swap_device(path: &Path) -> Result<u64, StorageError> {
    let io_err = |e: io::Error| StorageError::io(path, e);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    let size = f.seek(SeekFrom::End(0)).map_err(io_err)?;
    let page = page_size();
    let pages = pages_of(size, page).map_err(|what| StorageError::Device {
        path: path.to_path_buf(),
        what,
    })?;
    f.seek(SeekFrom::Start(0)).map_err(io_err)?;
    f.write_all(&swap_header(page, pages, random_uuid()))
        .map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(pages * page)
}

fn cstring(path: &Path) -> std::ffi::CString {
    // Paths from the command line or under the mount point: no NUL inside.
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

pub(crate) fn swapon(path: &Path) -> Result<(), StorageError> {
    let c = cstring(path);
    // SAFETY: a valid NUL-terminated path; flags 0.
    if unsafe { libc::swapon(c.as_ptr(), 0) } != 0 {
        return Err(StorageError::Device {
            path: path.to_path_buf(),
            what: format!("swapon: {}", io::Error::last_os_error()),
        });
    }
    Ok(())
}

pub(crate) fn swapoff(path: &Path) -> io::Result<()> {
    let c = cstring(path);
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::swapoff(c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn set_swappiness(file: &Path, value: u8) -> Result<(), StorageError> {
    std::fs::write(file, format!("{value}\n")).map_err(|e| StorageError::io(file, e))
}

/// Sets up `b2c.swap`. A swap file needs the cache: without one this warns
/// and returns `Ok(None)`. A swap device is waited for up to 10 s and gets
/// a new swap signature. `swappiness=` is applied once swap is on.
pub fn setup_swap(swap: &Swap, cache: Option<&Cache>) -> Result<Option<SwapInfo>, StorageError> {
    setup_swap_in(swap, cache, Path::new("/proc/sys/vm/swappiness"))
        .map_err(|e| e.context("b2c.swap".into()))
}

pub(crate) fn setup_swap_in(
    swap: &Swap,
    cache: Option<&Cache>,
    swappiness_file: &Path,
) -> Result<Option<SwapInfo>, StorageError> {
    let info = match &swap.space {
        SwapSpace::File { bytes } => {
            let Some(cache) = cache else {
                log::warn!(
                    "b2c.swap: a swap file lives on the cache, and there is none (check b2c.cache_device): running without swap"
                );
                return Ok(None);
            };
            let path = cache.mountpoint.join(SWAP_FILE);
            let bytes = create_swap_file(&path, *bytes)?;
            if let Err(e) = swapon(&path) {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            SwapInfo {
                path,
                is_file: true,
                bytes,
            }
        }
        SwapSpace::Device(dev) => {
            let path = PathBuf::from(dev);
            if !disks::wait_device(&disks::Sys::real(), &path, mount::DEVICE_WAIT, "b2c.swap") {
                return Err(StorageError::Device {
                    path,
                    what: "no such disk or partition".into(),
                });
            }
            log::info!("b2c.swap: erasing {} to use it as swap", path.display());
            let bytes = format_swap_device(&path)?;
            swapon(&path)?;
            SwapInfo {
                path,
                is_file: false,
                bytes,
            }
        }
    };
    log::info!(
        "swap: {} on {}",
        b2c_system::info::human_bytes(info.bytes),
        info.path.display()
    );
    if let Some(value) = swap.swappiness {
        set_swappiness(swappiness_file, value)?;
    }
    Ok(Some(info))
}

/// Swap off, and the swap file removed. Best effort.
pub(crate) fn teardown_swap(swap: &SwapInfo) {
    if let Err(e) = swapoff(&swap.path) {
        log::warn!("cannot turn off swap on {}: {e}", swap.path.display());
    }
    if swap.is_file {
        if let Err(e) = std::fs::remove_file(&swap.path) {
            log::warn!("cannot remove {}: {e}", swap.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        let uuid = *b"0123456789abcdef";
        let h = swap_header(4096, 2560, uuid);
        assert_eq!(h.len(), 4096);
        assert!(h[..1024].iter().all(|b| *b == 0));
        assert_eq!(&h[1024..1028], &1u32.to_le_bytes());
        assert_eq!(&h[1028..1032], &2559u32.to_le_bytes());
        assert_eq!(&h[1032..1036], &[0; 4]);
        assert_eq!(&h[1036..1052], &uuid);
        assert!(h[1052..4086].iter().all(|b| *b == 0));
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        // 64 KiB pages (arm64, ppc64): the magic moves to their end.
        let h = swap_header(65536, 10, [0; 16]);
        assert_eq!(&h[65526..], b"SWAPSPACE2");
    }

    #[test]
    fn random_uuids_are_version_4() {
        let u = random_uuid();
        assert_eq!(u[6] >> 4, 4);
        assert_eq!(u[8] >> 6, 2);
        assert_ne!(u, random_uuid());
    }

    #[test]
    fn swap_file_on_a_plain_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SWAP_FILE);
        std::fs::write(&path, b"an older file").unwrap();
        let page = page_size();
        let len = create_swap_file(&path, 16 * page + 100).unwrap();
        assert_eq!(len, 16 * page);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), len);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[page as usize - 10..page as usize], b"SWAPSPACE2");
        assert_eq!(&bytes[1028..1032], &15u32.to_ne_bytes());
        // blkid agrees that it is swap.
        let (code, out) = crate::test_util::output(
            std::process::Command::new("blkid")
                .args(["-p", "-o", "export"])
                .arg(&path),
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("TYPE=swap"), "{out}");
        assert!(create_swap_file(&path, 4 * page).is_err());
    }

    #[test]
    fn a_swap_file_needs_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let swappiness = dir.path().join("swappiness");
        let swap = Swap {
            space: SwapSpace::File { bytes: 1 << 30 },
            swappiness: Some(10),
        };
        assert_eq!(setup_swap_in(&swap, None, &swappiness).unwrap(), None);
        assert!(!swappiness.exists());
    }

    #[test]
    fn swappiness_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("swappiness");
        set_swappiness(&file, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "42\n");
    }
}
