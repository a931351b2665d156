//! The initramfs's seldom needed programs: busybox (the shell of
//! `b2c.shell` and of the shutdown commands) and mke2fs with its shared
//! libraries. They ship as one zstd tar, unpacked into / the first time
//! one of them is needed: at every boot the kernel would otherwise
//! decompress their ~5 MiB before starting the init, which waits on it.

use std::path::Path;
use std::sync::Mutex;

use crate::Error;

/// Where `cargo xtask initramfs` puts them.
pub const ARCHIVE: &str = "/usr/lib/b2c/tools.tar.zst";

/// Unpacks [`ARCHIVE`] into / once; without it (an initramfs built
/// otherwise, or already unpacked), there is nothing to do.
pub fn ensure() -> Result<(), Error> {
    static UNPACKED: Mutex<bool> = Mutex::new(false);
    let mut unpacked = UNPACKED.lock().unwrap_or_else(|e| e.into_inner());
    if !*unpacked {
        let archive = Path::new(ARCHIVE);
        if archive.exists() {
            unpack_into(archive, Path::new("/"))?;
            // The root is RAM: the programs are there now, the archive is
            // not needed any more.
            let _ = std::fs::remove_file(archive);
        }
        *unpacked = true;
    }
    Ok(())
}

/// Unpacks the zstd tar `archive` into `root`, keeping modes and links.
pub fn unpack_into(archive: &Path, root: &Path) -> Result<(), Error> {
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let decoder = zstd::Decoder::new(file).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(decoder);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    tar.unpack(root).map_err(|e| Error::io(archive, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn archive(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("tools.tar.zst");
        let file = std::fs::File::create(&path).unwrap();
        let mut tar = tar::Builder::new(zstd::Encoder::new(file, 3).unwrap().auto_finish());
        let mut header = tar::Header::new_gnu();
        let body = b"#!/bin/sh\necho hi\n";
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, "bin/busybox", &body[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "bin/sh", "busybox").unwrap();
        tar.into_inner().unwrap();
        path
    }

    #[test]
    fn the_programs_come_out_executable_with_their_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        unpack_into(&archive(dir.path()), &root).unwrap();
        let busybox = root.join("bin/busybox");
        let mode = std::fs::metadata(&busybox).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            std::fs::read(root.join("bin/sh")).unwrap(),
            std::fs::read(&busybox).unwrap()
        );
    }

    #[test]
    fn a_broken_archive_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tools.tar.zst");
        std::fs::write(&path, b"not zstd").unwrap();
        let e = unpack_into(&path, dir.path()).unwrap_err().to_string();
        assert!(e.contains("tools.tar.zst"), "{e}");
    }
}
