//! A merged copy of layers in overlayfs format, for where an overlay cannot
//! be mounted: what overlayfs would show, as plain files.
//!
//! The layers come from our own store, so they are trusted; the copy still
//! never writes through a symbolic link: every directory on the way is made
//! (or checked to be) a real directory first, and an existing last
//! component is removed before it is replaced. Everything overlayfs would
//! show is kept: owners, modes with their setuid and setgid bits (set after
//! the owner, since chown clears them), xattrs (file capabilities
//! included) and times.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copies `layers` (bottom → top) into `dest`, applying whiteouts (0/0
/// character devices) and opaque directories (`trusted.overlay.opaque=y`).
pub fn copy_merged(layers: &[PathBuf], dest: &Path) -> io::Result<()> {
    fs::create_dir_all(dest)?;
    for layer in layers {
        // Hard links stay hard links within a layer.
        let mut links = HashMap::new();
        copy_dir(layer, dest, &mut links)?;
    }
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            remove(&to)?;
            continue;
        }
        if ft.is_dir() {
            let existing = fs::symlink_metadata(&to).ok();
            if is_opaque(&from) || existing.as_ref().is_some_and(|m| !m.is_dir()) {
                remove(&to)?;
            }
            if fs::symlink_metadata(&to).is_err() {
                fs::create_dir(&to)?;
            }
            copy_dir(&from, &to, links)?;
            // After the content: creating entries changes a directory's mtime.
            metadata(&from, &to, &meta)?;
            continue;
        }
        remove(&to)?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            match links.get(&key) {
                Some(first) if meta.nlink() > 1 => fs::hard_link(first, &to)?,
                _ => {
                    fs::copy(&from, &to)?;
                    if meta.nlink() > 1 {
                        links.insert(key, to.clone());
                    }
                }
            }
        } else {
            // Devices, fifos, sockets: the same node.
            let kind = rustix::fs::FileType::from_raw_mode(meta.mode());
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &to,
                kind,
                rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
                meta.rdev(),
            )?;
        }
        metadata(&from, &to, &meta)?;
    }
    Ok(())
}

/// Owner first (chown clears setuid, setgid and file capabilities), then
/// the mode, the xattrs and the times.
fn metadata(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
    owner(to, meta)?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    copy_xattrs(from, to)?;
    let time = |secs, nsecs| rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nsecs,
    };
    let times = rustix::fs::Timestamps {
        last_access: time(meta.atime(), meta.atime_nsec()),
        last_modification: time(meta.mtime(), meta.mtime_nsec()),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        to,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Every xattr but overlayfs's own (the opaque marker is applied, not
/// copied). One the copy cannot hold (`security.*` as a user, a filesystem
/// without `user.*` on symlinks) is left out.
fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(from, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < 1 << 20 => {
                names.resize(names.len() * 4, 0)
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut value = vec![0u8; 64 << 10];
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr(from, name, &mut value) {
            Ok(len) => len,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::lsetxattr(to, name, &value[..len], rustix::fs::XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 8];
    matches!(
        rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut value),
        Ok(1) if value[0] == b'y'
    )
}

/// The layer's owners, when we may set them (root); a user's copy keeps
/// the user's own.
fn owner(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    match std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_layers_win_and_whiteouts_remove() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, out) = (t.path().join("1"), t.path().join("2"), t.path().join("o"));
        fs::create_dir_all(l1.join("etc/dir")).unwrap();
        fs::write(l1.join("etc/a"), "lower").unwrap();
        fs::write(l1.join("etc/gone"), "x").unwrap();
        fs::write(l1.join("etc/dir/old"), "x").unwrap();
        std::os::unix::fs::symlink("/", l1.join("escape")).unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::write(l2.join("etc/a"), "upper").unwrap();
        // The upper layer turns the lower symlink into a directory: its
        // file must land in the copy, not at /.
        fs::create_dir_all(l2.join("escape")).unwrap();
        fs::write(l2.join("escape/f"), "inside").unwrap();
        fs::write(l2.join("etc/h1"), "hard").unwrap();
        fs::hard_link(l2.join("etc/h1"), l2.join("etc/h2")).unwrap();
        let whiteout = rustix::fs::mknodat(
            rustix::fs::CWD,
            l2.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        );
        copy_merged(&[l1, l2], &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("etc/a")).unwrap(), "upper");
        assert_eq!(fs::read_to_string(out.join("etc/dir/old")).unwrap(), "x");
        assert_eq!(fs::read_to_string(out.join("escape/f")).unwrap(), "inside");
        assert!(!Path::new("/f").exists());
        let (h1, h2) = (
            fs::metadata(out.join("etc/h1")).unwrap(),
            fs::metadata(out.join("etc/h2")).unwrap(),
        );
        assert_eq!(h1.ino(), h2.ino());
        if whiteout.is_ok() {
            assert!(!out.join("etc/gone").exists());
        }
    }

    /// A capability set as the kernel stores it (VFS_CAP_REVISION_2,
    /// effective, CAP_NET_RAW permitted).
    const NET_RAW: [u8; 20] = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn setuid_bits_xattrs_capabilities_and_times_survive() {
        let t = tempfile::tempdir().unwrap();
        let (layer, out) = (t.path().join("l"), t.path().join("o"));
        fs::create_dir_all(layer.join("bin")).unwrap();
        let su = layer.join("bin/su");
        fs::write(&su, "#!/bin/sh\n").unwrap();
        std::os::unix::fs::lchown(&su, Some(1000), Some(1000)).unwrap();
        fs::set_permissions(&su, fs::Permissions::from_mode(0o6755)).unwrap();
        let ping = layer.join("bin/ping");
        fs::write(&ping, "ping").unwrap();
        let flags = rustix::fs::XattrFlags::empty();
        rustix::fs::setxattr(&ping, "security.capability", &NET_RAW, flags).unwrap();
        rustix::fs::setxattr(&ping, "user.note", b"kept", flags).unwrap();
        let old = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1_600_000_000,
                tv_nsec: 5,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1_600_000_000,
                tv_nsec: 5,
            },
        };
        let at = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
        for p in [&su, &ping, &layer.join("bin")] {
            rustix::fs::utimensat(rustix::fs::CWD, p, &old, at).unwrap();
        }
        copy_merged(&[layer], &out).unwrap();

        let m = fs::metadata(out.join("bin/su")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o6755, 1000, 1000));
        let mut v = [0u8; 64];
        let n = rustix::fs::getxattr(out.join("bin/ping"), "security.capability", &mut v).unwrap();
        assert_eq!(&v[..n], &NET_RAW);
        let n = rustix::fs::getxattr(out.join("bin/ping"), "user.note", &mut v).unwrap();
        assert_eq!(&v[..n], b"kept");
        for p in ["bin/su", "bin/ping", "bin"] {
            let m = fs::symlink_metadata(out.join(p)).unwrap();
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 5), "{p}");
        }
    }
}
