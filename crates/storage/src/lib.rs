//! The cache device (`b2c.cache_device`), swap (`b2c.swap`), extra
//! filesystems (`b2c.filesystem`, NFS included: [`nfs`]) and network block
//! devices (`b2c.nbd`: [`nbd`]).
//!
//! The cache is an ext4 filesystem labelled `B2C_CACHE`, found by reading
//! superblocks ourselves (no udev, no blkid in the initramfs), or made on a
//! new GPT partition covering a whole disk and formatted with the
//! initramfs' mke2fs. It is mounted at the caller's mount point.
//!
//! A cache that cannot be had is not a failed boot: [`setup_cache`] says
//! so with [`CacheSetup::Unavailable`] and why, and the caller decides (the
//! init runs the job with its images in RAM).
//!
//! Nothing mounted, swapped on or held by md/dm (per /proc/self/mountinfo,
//! /proc/swaps and sysfs `holders/`) is ever erased. Kernels built without
//! the GPT parser (no CONFIG_EFI_PARTITION, as some microVM kernels) work
//! too: the partition is read from the GPT by us and added with BLKPG, as
//! partx does.
//!
//! Child processes (mke2fs) are waited for through `b2c_system::reaper`.

mod disks;
mod format;
mod label;
#[cfg(test)]
mod loop_tests;
mod mount;
pub mod nbd;
pub mod nfs;
mod partition;
mod swap;
pub mod volume;

use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::{CacheDevice, Filesystem};

pub use disks::MIN_AUTO_DISK;
pub use label::{parse_label, read_label, LABEL};
pub use mount::mount_filesystem;
pub use swap::{setup_swap, SwapInfo, SWAP_FILE};

use disks::{Plan, Sys};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Device { path: PathBuf, what: String },
    #[error("cannot mount {src} on {target} as {fstype}: {source}")]
    Mount {
        src: String,
        target: PathBuf,
        fstype: String,
        source: nix::errno::Errno,
    },
    #[error("cannot write a partition table on {disk}: {source}")]
    Gpt {
        disk: PathBuf,
        source: gpt::GptError,
    },
    #[error("mke2fs {device} failed (exit code {code})")]
    Format { device: PathBuf, code: i32 },
    #[error(transparent)]
    System(#[from] b2c_system::Error),
    /// An NFS mount that failed, or that the server did not answer for
    /// as long as retries were allowed.
    #[error(
        "cannot mount {src}{}: {error}",
        if *transient {
            format!(
                " (gave up after {attempts} attempt{} in {} s)",
                if *attempts == 1 { "" } else { "s" },
                elapsed.as_secs()
            )
        } else {
            String::new()
        }
    )]
    Nfs {
        src: String,
        attempts: u32,
        elapsed: Duration,
        error: String,
        transient: bool,
    },
    /// A `b2c.nbd` device that could not be attached.
    #[error("b2c.nbd={device}: {what}")]
    Nbd { device: String, what: String },
    #[error("b2c.cache_device={0}: no b2c.filesystem has this name")]
    UnknownFilesystem(String),
    /// An error in the setup of `option`, which the message names.
    #[error("{option}: {error}")]
    Option {
        option: String,
        error: Box<StorageError>,
    },
}

impl StorageError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn context(self, option: String) -> Self {
        match self {
            already @ (StorageError::Option { .. }
            | StorageError::UnknownFilesystem(_)
            | StorageError::Nbd { .. }) => already,
            error => StorageError::Option {
                option,
                error: Box::new(error),
            },
        }
    }
}

/// What [`setup_cache`] found.
#[derive(Debug)]
pub enum CacheSetup {
    /// `b2c.cache_device=none`.
    NotAsked,
    Mounted(Cache),
    /// Asked for, but no cache could be had.
    Unavailable(Unavailable),
}

impl CacheSetup {
    pub fn mounted(self) -> Option<Cache> {
        match self {
            CacheSetup::Mounted(cache) => Some(cache),
            _ => None,
        }
    }
}

/// Why the cache asked for could not be had.
#[derive(Debug, thiserror::Error)]
#[error("{option}: {why}")]
pub struct Unavailable {
    /// The option as written (`b2c.cache_device=auto`).
    pub option: String,
    pub why: Why,
}

#[derive(Debug, thiserror::Error)]
pub enum Why {
    /// No device to use: none appeared, or the one named is unusable.
    #[error("{0}")]
    NoDevice(String),
    /// Partitioning, formatting or mounting failed.
    #[error(transparent)]
    Failed(StorageError),
    /// It mounted, but overlayfs cannot use it for the layer store.
    #[error("{device} cannot hold the layer store: {problem}")]
    CannotHoldStore { device: String, problem: String },
}

/// A mounted cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub mountpoint: PathBuf,
    /// The partition (or device, or `b2c.filesystem` source) mounted.
    pub device: PathBuf,
    /// Formatted by this boot: it holds nothing from earlier boots.
    pub formatted: bool,
}

/// How `b2c.cache_device` reads on the command line, for messages.
fn option_text(device: &CacheDevice) -> String {
    format!("b2c.cache_device={device}")
}

/// The kernel modules, by modprobe name (`fs-<type>`), that
/// [`setup_cache`] may need to mount `device`: the caller loads them first,
/// as there is no modprobe helper for the kernel to ask. A `b2c.filesystem`
/// without `type=` is probed with what /proc/filesystems lists, so it
/// needs ext4 (the block filesystem we ship) loaded beforehand too.
pub fn filesystem_modules(device: &CacheDevice, filesystems: &[Filesystem]) -> Vec<String> {
    match device {
        CacheDevice::None => Vec::new(),
        CacheDevice::Auto | CacheDevice::Reset | CacheDevice::Device(_) => vec!["fs-ext4".into()],
        CacheDevice::Filesystem(name) => filesystems
            .iter()
            .find(|f| &f.name == name)
            .map_or_else(|| vec!["fs-ext4".into()], modules_of),
    }
}

/// Every kernel module the storage of `plan` may need: `nbd` for
/// `b2c.nbd`, the cache's filesystem, the image stores', and those of the `b2c.filesystem`s that
/// volumes mount.
pub fn storage_modules(plan: &b2c_cmdline::BootPlan) -> Vec<String> {
    let storage = &plan.storage;
    let mut out = Vec::new();
    if !storage.nbds.is_empty() {
        out.push("nbd".to_string());
    }
    out.extend(filesystem_modules(
        &storage.cache_device,
        &storage.filesystems,
    ));
    for store in &storage.image_stores {
        out.extend(modules_of(&store.filesystem));
    }
    let named = plan
        .volumes
        .iter()
        .filter_map(|v| v.options.filesystem.as_deref());
    for name in named {
        if let Some(fs) = storage.filesystems.iter().find(|f| f.name == name) {
            out.extend(modules_of(fs));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|m| seen.insert(m.clone()));
    out
}

/// The kernel modules that mounting `fs` needs: `fs-<type>` (ext4 when it
/// has no type), and for NFS the client of each version it may use.
pub fn modules_of(fs: &Filesystem) -> Vec<String> {
    match fs.fstype.as_deref() {
        None => vec!["fs-ext4".into()],
        Some(t) if nfs::is_nfs(t) => {
            nfs::NfsRequest::parse(t, &fs.src, fs.opts.as_deref().unwrap_or(""))
                .map_or_else(|_| vec!["fs-nfs".into()], |r| r.kernel_modules())
        }
        Some(t) => vec![format!("fs-{t}")],
    }
}

/// Finds, creates or formats the cache and mounts it at `mountpoint`.
///
/// - `auto`: the first partition labelled `B2C_CACHE` (or whole disk
///   without partitions); else the first non-removable disk of at least
///   [`MIN_AUTO_DISK`] (by name; loop, ram, zram, optical, floppy, md, dm,
///   nbd, raw flash and eMMC boot areas never count) gets a new GPT with one
///   partition from 1 MiB to its end, formatted. Disks are waited for up to
///   `wait`; a disk is partitioned only after no new block device showed up
///   for 2 s.
/// - `reset`: the same, but a labelled partition found is reformatted.
/// - `/dev/X`: waited for up to `wait`. A partition is mounted as it is,
///   whatever filesystem and label it holds; only one that holds nothing
///   that mounts is formatted, after a warning naming it. A whole disk
///   gives its labelled partition, or is repartitioned.
/// - a `b2c.filesystem` name: that filesystem, mounted at `mountpoint`.
///
/// A labelled partition that does not mount is reformatted, with a warning.
/// The mounted filesystem must support `trusted.*` xattrs and d_type (the
/// layer store's overlayfs needs them).
///
/// [`CacheSetup::Unavailable`] when no cache could be had (no disk, a
/// device that cannot be used, a failed mke2fs or mount). `Err` only for an
/// unknown `b2c.filesystem` name or a mount point that cannot be created.
pub fn setup_cache(
    device: &CacheDevice,
    filesystems: &[Filesystem],
    mountpoint: &Path,
    wait: Duration,
) -> Result<CacheSetup, StorageError> {
    setup_cache_in(&Sys::real(), device, filesystems, mountpoint, wait)
}

pub(crate) fn setup_cache_in(
    sys: &Sys,
    device: &CacheDevice,
    filesystems: &[Filesystem],
    mountpoint: &Path,
    wait: Duration,
) -> Result<CacheSetup, StorageError> {
    let option = option_text(device);
    let unavailable = |why| {
        Ok(CacheSetup::Unavailable(Unavailable {
            option: option.clone(),
            why,
        }))
    };
    let plan = match device {
        CacheDevice::None => return Ok(CacheSetup::NotAsked),
        CacheDevice::Filesystem(name) => {
            let fs = filesystems
                .iter()
                .find(|f| &f.name == name)
                .ok_or_else(|| StorageError::UnknownFilesystem(name.clone()))?;
            return match mount_named(fs, mountpoint) {
                Ok(cache) => Ok(CacheSetup::Mounted(cache)),
                Err(why) => unavailable(why),
            };
        }
        CacheDevice::Auto | CacheDevice::Reset => {
            disks::wait_auto(sys, *device == CacheDevice::Reset, wait, disks::SETTLE)
        }
        CacheDevice::Device(dev) => {
            let path = Path::new(dev);
            if disks::wait_device(sys, path, wait, &option) {
                disks::plan_device(sys, path).map_err(|e| format!("{}: {e}", path.display()))
            } else {
                Err(format!(
                    "{} did not appear within {}s",
                    path.display(),
                    wait.as_secs()
                ))
            }
        }
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(why) => return unavailable(Why::NoDevice(why)),
    };
    std::fs::create_dir_all(mountpoint).map_err(|e| StorageError::io(mountpoint, e))?;
    match execute(sys, plan, mountpoint, wait, &option) {
        Ok(cache) => match usable(cache) {
            Ok(cache) => Ok(CacheSetup::Mounted(cache)),
            Err(why) => unavailable(why),
        },
        Err(e) => unavailable(Why::Failed(e)),
    }
}

/// Unmounts a cache overlayfs cannot use for the layer store.
fn usable(cache: Cache) -> Result<Cache, Why> {
    match mount::check_layer_store_support(&cache.mountpoint) {
        Ok(()) => Ok(cache),
        Err(problem) => {
            mount::unmount(&cache.mountpoint);
            Err(Why::CannotHoldStore {
                device: cache.device.display().to_string(),
                problem: problem.to_string(),
            })
        }
    }
}

fn mount_named(fs: &Filesystem, mountpoint: &Path) -> Result<Cache, Why> {
    mount_filesystem(fs, mountpoint).map_err(Why::Failed)?;
    usable(Cache {
        mountpoint: mountpoint.to_path_buf(),
        device: PathBuf::from(&fs.src),
        formatted: false,
    })
}

fn format_and_mount(device: &Path, mountpoint: &Path) -> Result<Cache, StorageError> {
    format::format(device)?;
    mount::mount_ext4(device, mountpoint)?;
    Ok(Cache {
        mountpoint: mountpoint.to_path_buf(),
        device: device.to_path_buf(),
        formatted: true,
    })
}

fn use_or_reformat(
    device: PathBuf,
    mountpoint: &Path,
    option: &str,
) -> Result<Cache, StorageError> {
    match mount::mount_ext4(&device, mountpoint) {
        Ok(()) => Ok(Cache {
            mountpoint: mountpoint.to_path_buf(),
            device,
            formatted: false,
        }),
        Err(e) => {
            log::warn!(
                "{option}: {e}: reformatting {}, its cached data is lost",
                device.display()
            );
            format_and_mount(&device, mountpoint)
        }
    }
}

/// A partition the user named: whatever it holds is used when it mounts
/// (never erased for its label); a partition with nothing that mounts is
/// formatted, after a WARNING that names it.
fn mount_or_format(
    device: PathBuf,
    mountpoint: &Path,
    option: &str,
) -> Result<Cache, StorageError> {
    match mount::mount_any(&device, mountpoint) {
        Ok(fstype) => {
            let label = match label::read_label(&device) {
                Ok(Some(l)) if !l.is_empty() => format!(", labelled {l}"),
                _ => String::new(),
            };
            log::info!(
                "{option}: {} mounted as it is ({fstype}{label})",
                device.display()
            );
            Ok(Cache {
                mountpoint: mountpoint.to_path_buf(),
                device,
                formatted: false,
            })
        }
        Err(e) => {
            let held = match label::read_label(&device) {
                Ok(Some(_)) => "its ext filesystem does not mount",
                _ => "it holds no filesystem that mounts",
            };
            log::warn!(
                "{option}: formatting {} as ext4 labelled {LABEL}: {held} ({e}); anything \
                 it held is lost",
                device.display()
            );
            format_and_mount(&device, mountpoint)
        }
    }
}

fn execute(
    sys: &Sys,
    plan: Plan,
    mountpoint: &Path,
    wait: Duration,
    option: &str,
) -> Result<Cache, StorageError> {
    match plan {
        Plan::Use(device) => use_or_reformat(device, mountpoint, option),
        Plan::Mount(device) => mount_or_format(device, mountpoint, option),
        Plan::Format(device) => {
            log::info!(
                "{option}: erasing {} to format it as ext4 labelled {LABEL}",
                device.display()
            );
            format_and_mount(&device, mountpoint)
        }
        Plan::Hidden { part, format } => {
            let device = partition::attach(sys, &part, wait)?;
            if format {
                log::info!(
                    "{option}: erasing {} to format it as ext4 labelled {LABEL}",
                    device.display()
                );
                format_and_mount(&device, mountpoint)
            } else {
                use_or_reformat(device, mountpoint, option)
            }
        }
        Plan::Partition(disk) => {
            log::info!(
                "{option}: erasing the whole disk {disk}: one GPT partition, ext4 labelled {LABEL}"
            );
            let part = partition::partition_disk(sys, &disk, wait)?;
            format_and_mount(&part, mountpoint)
        }
    }
}

/// Mounts the `b2c.filesystem` of an image store (`b2c.storage`) on
/// `mountpoint`, read-only whatever its options say: b2c never writes to a
/// store that other machines read. NFS is retried while the server cannot
/// be reached (see [`nfs`]).
pub fn mount_image_store(fs: &Filesystem, mountpoint: &Path) -> Result<(), StorageError> {
    let opts = match fs.opts.as_deref() {
        Some(o) if !o.is_empty() => format!("{o},ro"),
        _ => "ro".to_string(),
    };
    let read_only = Filesystem {
        opts: Some(opts),
        ..fs.clone()
    };
    mount_filesystem(&read_only, mountpoint)
}

/// Undoes [`setup_cache`] and [`setup_swap`] on the way to power-off: swap
/// off and its file removed, everything synced, the cache unmounted (lazily
/// if still busy). Best effort: problems are warnings.
pub fn teardown(cache: Option<&Cache>, swap: Option<&SwapInfo>) {
    if let Some(swap) = swap {
        swap::teardown_swap(swap);
    }
    nix::unistd::sync();
    if let Some(cache) = cache {
        mount::unmount(&cache.mountpoint);
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Commands in tests go through the reaper too: its thread's
    //! waitpid(-1) would steal the status from std's `Command::output`.

    use std::process::{Command, Stdio};

    struct Stderr;

    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            eprintln!("{}: {}", record.level(), record.args());
        }
        fn flush(&self) {}
    }

    /// Log lines on stderr, shown for failing tests.
    pub fn init_log() {
        if log::set_logger(&Stderr).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    }

    /// Exit code and stdout+stderr.
    pub fn output(cmd: &mut Command) -> (i32, String) {
        let out = tempfile::tempfile().unwrap();
        let code = b2c_system::reaper::run(
            cmd.stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out.try_clone().unwrap()),
        )
        .unwrap();
        use std::io::{Read, Seek};
        let mut out = out;
        out.rewind().unwrap();
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        (code.0, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::fake::Tree;

    #[test]
    fn filesystem_modules_follow_the_cache_device() {
        let fs = |name: &str, fstype: Option<&str>| Filesystem {
            name: name.into(),
            fstype: fstype.map(Into::into),
            src: if fstype == Some("nfs") {
                "10.0.0.1:/srv".into()
            } else {
                "/dev/sda1".into()
            },
            opts: None,
        };
        let filesystems = [fs("nfs", Some("nfs")), fs("data", None)];
        let modules = |device| filesystem_modules(&device, &filesystems);
        assert!(modules(CacheDevice::None).is_empty());
        assert_eq!(modules(CacheDevice::Auto), ["fs-ext4"]);
        assert_eq!(modules(CacheDevice::Reset), ["fs-ext4"]);
        assert_eq!(modules(CacheDevice::Device("/dev/vda".into())), ["fs-ext4"]);
        assert_eq!(
            modules(CacheDevice::Filesystem("nfs".into())),
            ["fs-nfs", "nfsv3", "nfsv4"]
        );
        assert_eq!(modules(CacheDevice::Filesystem("data".into())), ["fs-ext4"]);
    }

    #[test]
    fn none_and_unknown_filesystems() {
        let t = Tree::new();
        let mnt = t.dir.path().join("storage");
        let got = setup_cache_in(&t.sys, &CacheDevice::None, &[], &mnt, Duration::ZERO);
        assert!(matches!(got, Ok(CacheSetup::NotAsked)), "{got:?}");
        let e = setup_cache_in(
            &t.sys,
            &CacheDevice::Filesystem("nfs".into()),
            &[],
            &mnt,
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b2c.cache_device=nfs: no b2c.filesystem has this name"
        );
        assert!(!mnt.exists());
    }

    #[test]
    fn no_disk_is_no_cache_not_an_error() {
        let t = Tree::new();
        let mnt = t.dir.path().join("storage");
        for device in [
            CacheDevice::Auto,
            CacheDevice::Reset,
            CacheDevice::Device(t.dev("sdz").display().to_string()),
        ] {
            let got = setup_cache_in(&t.sys, &device, &[], &mnt, Duration::from_millis(100));
            match got {
                Ok(CacheSetup::Unavailable(u)) => {
                    assert!(matches!(u.why, Why::NoDevice(_)), "{u}");
                    assert!(u.to_string().starts_with("b2c.cache_device="), "{u}");
                }
                other => panic!("{device:?}: {other:?}"),
            }
        }
        // Only removable or small disks: still no cache, nothing touched.
        t.disk("sda", 8, true).disk("vda", 0, false);
        let got = setup_cache_in(
            &t.sys,
            &CacheDevice::Auto,
            &[],
            &mnt,
            Duration::from_millis(100),
        );
        assert!(matches!(got, Ok(CacheSetup::Unavailable(_))), "{got:?}");
        assert_eq!(std::fs::metadata(t.dev("sda")).unwrap().len(), 0);
    }

    #[test]
    fn error_messages_name_the_option() {
        let e = StorageError::Format {
            device: "/dev/vda1".into(),
            code: 1,
        }
        .context("b2c.swap".into());
        assert_eq!(
            e.to_string(),
            "b2c.swap: mke2fs /dev/vda1 failed (exit code 1)"
        );
        assert_eq!(
            option_text(&CacheDevice::Device("/dev/sdb".into())),
            "b2c.cache_device=/dev/sdb"
        );
    }
}
