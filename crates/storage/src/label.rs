//! The volume label of an ext2/3/4 filesystem, read from its superblock.
//!
//! There is no udev or blkid in the initramfs: finding the `B2C_CACHE`
//! partition means reading 1 KiB of every candidate ourselves.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// The label of the cache filesystem, as boot2container names it.
pub const LABEL: &str = "B2C_CACHE";

/// The primary superblock starts 1 KiB into the filesystem.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
/// How much of the superblock we need: `s_volume_name` ends at 136.
pub(crate) const SUPERBLOCK_PREFIX: usize = 136;
const MAGIC_OFFSET: usize = 56;
const MAGIC: u16 = 0xEF53;
const LABEL_OFFSET: usize = 120;
const LABEL_LEN: usize = 16;

/// The label of the superblock `sb` (the bytes from offset 1024 of the
/// device on). `None` when it is not an ext filesystem; `Some("")` for an
/// ext filesystem without a label.
pub fn parse_label(sb: &[u8]) -> Option<String> {
    let magic = sb.get(MAGIC_OFFSET..MAGIC_OFFSET + 2)?;
    if u16::from_le_bytes([magic[0], magic[1]]) != MAGIC {
        return None;
    }
    let raw = sb.get(LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN)?;
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// The ext label of a device (or image file); `Ok(None)` when it holds no
/// ext filesystem, including when it is too small to hold one.
pub fn read_label(device: &Path) -> io::Result<Option<String>> {
    read_label_at(&mut File::open(device)?, 0)
}

/// The ext label of the filesystem starting `start` bytes into `f`.
pub(crate) fn read_label_at(f: &mut File, start: u64) -> io::Result<Option<String>> {
    f.seek(SeekFrom::Start(start + SUPERBLOCK_OFFSET))?;
    let mut sb = [0u8; SUPERBLOCK_PREFIX];
    match f.read_exact(&mut sb) {
        Ok(()) => Ok(parse_label(&sb)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the device holds an ext filesystem labelled `B2C_CACHE`.
/// Unreadable devices (no medium, I/O errors) are not.
pub(crate) fn is_cache(device: &Path) -> bool {
    match read_label(device) {
        Ok(label) => label.as_deref() == Some(LABEL),
        Err(e) => {
            log::debug!("{}: cannot read a superblock: {e}", device.display());
            false
        }
    }
}

#[cfg(test)]
pub(crate) fn superblock_with_label(label: &[u8]) -> Vec<u8> {
    let mut sb = vec![0u8; 1024];
    sb[MAGIC_OFFSET..MAGIC_OFFSET + 2].copy_from_slice(&MAGIC.to_le_bytes());
    sb[LABEL_OFFSET..LABEL_OFFSET + label.len()].copy_from_slice(label);
    sb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_superblock_bytes() {
        assert_eq!(
            parse_label(&superblock_with_label(b"B2C_CACHE")),
            Some("B2C_CACHE".into())
        );
        // All 16 bytes used: no terminating NUL.
        assert_eq!(
            parse_label(&superblock_with_label(b"0123456789abcdef")),
            Some("0123456789abcdef".into())
        );
        assert_eq!(
            parse_label(&superblock_with_label(b"")),
            Some(String::new())
        );
        // Wrong magic (byte-swapped), or too short to hold one.
        let mut other = superblock_with_label(b"B2C_CACHE");
        other[MAGIC_OFFSET..MAGIC_OFFSET + 2].copy_from_slice(&[0xEF, 0x53]);
        assert_eq!(parse_label(&other), None);
        assert_eq!(parse_label(&[0u8; 1024]), None);
        assert_eq!(parse_label(&superblock_with_label(b"X")[..100]), None);
    }

    #[test]
    fn labels_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let mut bytes = vec![0u8; 1024];
        bytes.extend(superblock_with_label(LABEL.as_bytes()));
        std::fs::write(&img, &bytes).unwrap();
        assert_eq!(read_label(&img).unwrap().as_deref(), Some(LABEL));
        assert!(is_cache(&img));
        std::fs::write(&img, [0u8; 1500]).unwrap();
        assert_eq!(read_label(&img).unwrap(), None);
        std::fs::write(&img, [0u8; 10]).unwrap();
        assert_eq!(read_label(&img).unwrap(), None);
        assert!(!is_cache(&dir.path().join("missing")));
    }

    #[test]
    fn label_of_a_real_mke2fs_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        crate::format::format(&img).unwrap();
        assert_eq!(read_label(&img).unwrap().as_deref(), Some(LABEL));
    }
}
