//! Formatting the cache with the initramfs' mke2fs (unpacked at first
//! use: [`b2c_system::tools`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use b2c_system::reaper;

use crate::{label, StorageError};

/// mke2fs: `$B2C_MKE2FS` (tests), else the initramfs copy (Debian's path,
/// see initramfs/binaries.txt), else `/sbin/mke2fs`.
pub(crate) fn mke2fs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("B2C_MKE2FS") {
        return path.into();
    }
    ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "/usr/sbin/mke2fs".into())
}

/// The mke2fs arguments for the cache: ext4 with the `encrypt` feature (for
/// fscrypt volumes), labelled `B2C_CACHE`; `-F` so that an existing
/// filesystem or a whole device does not make it ask; `-q` for a quiet
/// console.
pub(crate) fn mke2fs_args(device: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "-t",
        "ext4",
        "-O",
        "encrypt",
        "-L",
        label::LABEL,
        "-F",
        "-q",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(device.into());
    args
}

/// Formats `device` (a partition, a whole device or an image file) as the
/// cache. Runs mke2fs through the reaper; its errors go to the console.
pub(crate) fn format(device: &Path) -> Result<(), StorageError> {
    b2c_system::tools::ensure()?;
    let program = mke2fs_binary();
    let code = reaper::run(
        Command::new(&program)
            .args(mke2fs_args(device))
            .stdin(Stdio::null()),
    )?;
    if code.0 != 0 {
        return Err(StorageError::Format {
            device: device.to_path_buf(),
            code: code.0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let args: Vec<String> = mke2fs_args(Path::new("/dev/vda1"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            "-t ext4 -O encrypt -L B2C_CACHE -F -q /dev/vda1"
        );
    }

    #[test]
    fn a_failing_mke2fs_is_an_error_naming_the_device() {
        let dir = tempfile::tempdir().unwrap();
        // Far too small for an ext4 filesystem.
        let img = dir.path().join("tiny.img");
        std::fs::write(&img, [0u8; 4096]).unwrap();
        let e = format(&img).unwrap_err();
        assert!(e.to_string().contains("tiny.img"), "{e}");
    }
}
