//! Mounting the cache and `b2c.filesystem`s, and unmounting at the end.

use std::path::Path;
use std::time::Duration;

use b2c_cmdline::Filesystem;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::disks::{self, Sys};
use crate::nfs;
use crate::StorageError;

/// How long a `b2c.filesystem` whose source is a device node waits for it.
pub(crate) const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// Mounts the ext4 cache. `noatime`: the layer store reads a lot and
/// nothing needs access times.
pub(crate) fn mount_ext4(device: &Path, target: &Path) -> Result<(), StorageError> {
    mount(
        Some(device),
        target,
        Some("ext4"),
        MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|source| StorageError::Mount {
        src: device.display().to_string(),
        target: target.to_path_buf(),
        fstype: "ext4".into(),
        source,
    })
}

/// Splits mount options into mount(2) flags and the filesystem's own data,
/// as mount(8) does.
pub(crate) fn parse_options(opts: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        let (set, clear) = match opt {
            "defaults" | "rw" | "async" | "suid" | "dev" | "exec" | "loud" | "nomand" => {
                let clear = match opt {
                    "rw" => MsFlags::MS_RDONLY,
                    "async" => MsFlags::MS_SYNCHRONOUS,
                    "suid" => MsFlags::MS_NOSUID,
                    "dev" => MsFlags::MS_NODEV,
                    "exec" => MsFlags::MS_NOEXEC,
                    "loud" => MsFlags::MS_SILENT,
                    "nomand" => MsFlags::MS_MANDLOCK,
                    _ => MsFlags::empty(),
                };
                (MsFlags::empty(), clear)
            }
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            _ => {
                data.push(opt);
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    (flags, data.join(","))
}

/// The filesystem types the kernel can probe on a block device, in the
/// order of /proc/filesystems (the `nodev` ones need no device).
fn block_filesystems(proc_filesystems: &str) -> Vec<String> {
    proc_filesystems
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Mounts a `b2c.filesystem` at `target` (created if missing).
///
/// Without `type=`, the source must be a block device and each block
/// filesystem the kernel knows is tried in turn, as mount(8) does without
/// blkid. A source under /dev/ is waited for up to 10 s. `nfs` and `nfs4`
/// are mounted as mount.nfs would (see [`crate::nfs`]), retried while the
/// server cannot be reached.
pub fn mount_filesystem(fs: &Filesystem, target: &Path) -> Result<(), StorageError> {
    let option = format!("b2c.filesystem={}", fs.name);
    mount_filesystem_inner(fs, target).map_err(|e| e.context(option))
}

fn mount_filesystem_inner(fs: &Filesystem, target: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(target).map_err(|e| StorageError::io(target, e))?;
    if let Some(fstype) = fs.fstype.as_deref().filter(|t| nfs::is_nfs(t)) {
        let req = nfs::NfsRequest::parse(fstype, &fs.src, fs.opts.as_deref().unwrap_or(""))
            .map_err(|what| StorageError::Device {
                path: fs.src.clone().into(),
                what,
            })?;
        return nfs::mount(&req, target, &format!("b2c.filesystem={}", fs.name)).map(|_| ());
    }
    let src = Path::new(&fs.src);
    if fs.src.starts_with("/dev/") && !src.exists() {
        let sys = Sys::real();
        disks::wait_device(
            &sys,
            src,
            DEVICE_WAIT,
            &format!("b2c.filesystem={}", fs.name),
        );
    }
    let (flags, data) = parse_options(fs.opts.as_deref().unwrap_or(""));
    let mount_as = |fstype: &str| {
        log::debug!(
            "mount -t {fstype} -o {flags:?},{data} {} {}",
            fs.src,
            target.display()
        );
        mount(
            Some(fs.src.as_str()),
            target,
            Some(fstype),
            flags,
            Some(data.as_str()).filter(|d| !d.is_empty()),
        )
        .map_err(|source| StorageError::Mount {
            src: fs.src.clone(),
            target: target.to_path_buf(),
            fstype: fstype.to_string(),
            source,
        })
    };
    if let Some(fstype) = &fs.fstype {
        return mount_as(fstype);
    }
    let is_block = std::fs::metadata(src)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false);
    if !is_block {
        return Err(StorageError::Device {
            path: src.to_path_buf(),
            what: "not a block device: give its type= to mount it".into(),
        });
    }
    let known = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| StorageError::io("/proc/filesystems", e))?;
    let mut last = None;
    for fstype in block_filesystems(&known) {
        match mount_as(&fstype) {
            Ok(()) => {
                log::info!("{}: mounted as {fstype}", fs.src);
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| StorageError::Device {
        path: src.to_path_buf(),
        what: "the kernel knows no block filesystem".into(),
    }))
}

/// Mounts a block device at `target` with whatever filesystem it holds:
/// each block filesystem the kernel knows is tried in turn (`noatime`), as
/// mount(8) does without blkid. Returns the type that mounted.
pub(crate) fn mount_any(device: &Path, target: &Path) -> Result<String, StorageError> {
    let known = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| StorageError::io("/proc/filesystems", e))?;
    let tried = block_filesystems(&known);
    for fstype in &tried {
        match mount(
            Some(device),
            target,
            Some(fstype.as_str()),
            MsFlags::MS_NOATIME,
            None::<&str>,
        ) {
            Ok(()) => return Ok(fstype.clone()),
            Err(e) => log::debug!("{}: does not mount as {fstype}: {e}", device.display()),
        }
    }
    Err(StorageError::Device {
        path: device.to_path_buf(),
        what: format!(
            "holds no filesystem that mounts (tried {})",
            if tried.is_empty() {
                "nothing: the kernel knows no block filesystem".to_string()
            } else {
                tried.join(", ")
            }
        ),
    })
}

/// Checks that a mounted filesystem can hold the layer store: overlayfs
/// lower layers need `trusted.*` extended attributes (opaque directories)
/// and directory entries that carry their type (d_type).
pub(crate) fn check_layer_store_support(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".b2c-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&probe);
    let result = probe_support(&probe);
    let _ = std::fs::remove_dir_all(&probe);
    result
}

fn probe_support(probe: &Path) -> Result<(), String> {
    std::fs::create_dir(probe).map_err(|e| format!("cannot write to it: {e}"))?;
    let file = probe.join("f");
    std::fs::write(&file, b"").map_err(|e| format!("cannot write to it: {e}"))?;
    rustix::fs::setxattr(
        &file,
        "trusted.b2c.probe",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| format!("no trusted.* extended attributes ({e}), which overlayfs needs"))?;
    let fd = rustix::fs::open(
        probe,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("cannot read it: {e}"))?;
    let mut dir = rustix::fs::Dir::new(fd).map_err(|e| format!("cannot read it: {e}"))?;
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| format!("cannot read it: {e}"))?;
        if entry.file_name().to_bytes() == b"f" {
            return if entry.file_type() == rustix::fs::FileType::RegularFile {
                Ok(())
            } else {
                Err("directory entries without their type (d_type), which overlayfs needs".into())
            };
        }
    }
    Err("a file just written is missing from its directory".into())
}

/// Unmounts `target`; when busy, syncs it and detaches it lazily. Warns
/// rather than failing: this runs on the way to power-off.
pub(crate) fn unmount(target: &Path) {
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(Errno::EBUSY) => {
            if let Ok(dir) = std::fs::File::open(target) {
                let _ = rustix::fs::syncfs(&dir);
            }
            log::warn!(
                "{} is still in use: detaching it lazily (its data is synced)",
                target.display()
            );
            if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
                log::warn!("cannot unmount {}: {e}", target.display());
            }
        }
        Err(e) => log::warn!("cannot unmount {}: {e}", target.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options("ro,noatime,vers=4.2,nodev,proto=tcp");
        assert_eq!(
            flags,
            MsFlags::MS_RDONLY | MsFlags::MS_NOATIME | MsFlags::MS_NODEV
        );
        assert_eq!(data, "vers=4.2,proto=tcp");
        let (flags, data) = parse_options("ro,rw,defaults,,size=1G");
        assert_eq!(flags, MsFlags::empty());
        assert_eq!(data, "size=1G");
        let (flags, _) = parse_options("rbind");
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(parse_options(""), (MsFlags::empty(), String::new()));
    }

    #[test]
    fn block_filesystems_from_proc() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tvfat\nnodev\toverlay\n\tbtrfs\n";
        assert_eq!(block_filesystems(text), ["ext4", "vfat", "btrfs"]);
    }

    #[test]
    fn layer_store_support_of_the_test_filesystem() {
        // /tmp or wherever the tests run: tmpfs and ext4 both qualify, and
        // the probe leaves nothing behind.
        let dir = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(check_layer_store_support(dir.path()), Ok(()));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_type_needs_a_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem {
            name: "share".into(),
            fstype: None,
            src: "10.0.0.1:/srv".into(),
            opts: None,
        };
        let e = mount_filesystem(&fs, &dir.path().join("mnt")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b2c.filesystem=share: 10.0.0.1:/srv: not a block device: give its type= to mount it"
        );
    }
}
