//! Block device discovery from sysfs, and the choice of the cache device.
//!
//! Everything here reads a sysfs tree and a /dev tree given as [`Sys`], so
//! the choice `auto` makes is tested against fake trees: a test must never
//! let `auto` near the real disks of the machine it runs on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use b2c_system::info::human_bytes;

use crate::label;

/// Disks smaller than this are never taken by `auto` (a named device can be
/// any size): a cache this small is useless for container images, and what
/// is this small on a test machine is rather some firmware flash or a
/// virtual device than a disk meant for data.
pub const MIN_AUTO_DISK: u64 = 1 << 30;

/// Where the sysfs and the device nodes are: `/sys` and `/dev`, or fake
/// trees in tests.
#[derive(Debug, Clone)]
pub(crate) struct Sys {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc: PathBuf,
}

impl Sys {
    pub fn real() -> Self {
        Sys {
            sys: "/sys".into(),
            dev: "/dev".into(),
            proc: "/proc".into(),
        }
    }

    pub fn dev_path(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }

    /// What is in use now: the `major:minor` of mounted filesystems and the
    /// names of swap devices.
    fn in_use(&self) -> InUse {
        let mounts = std::fs::read_to_string(self.proc.join("self/mountinfo")).unwrap_or_default();
        let swaps = std::fs::read_to_string(self.proc.join("swaps")).unwrap_or_default();
        InUse {
            mounted: mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(2))
                .map(String::from)
                .collect(),
            swaps: swaps
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .filter_map(|p| Path::new(p).file_name()?.to_str().map(String::from))
                .collect(),
        }
    }
}

struct InUse {
    mounted: Vec<String>,
    swaps: Vec<String>,
}

impl InUse {
    /// Mounted, swapped on, or held by a stacked device (md, dm).
    fn check(&self, dir: &Path, name: &str) -> bool {
        let dev = read_trimmed(&dir.join("dev"));
        let held = std::fs::read_dir(dir.join("holders"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        held || self.swaps.iter().any(|s| s == name)
            || dev.is_some_and(|d| self.mounted.contains(&d))
    }
}

/// A whole disk of `/sys/block`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disk {
    pub name: String,
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    /// The disk or one of its partitions is mounted, swap, or part of a
    /// stacked device: never erased.
    pub in_use: bool,
    /// `device/model` (SCSI, ATA, virtio-scsi), for the console.
    pub model: Option<String>,
    /// Sorted by number.
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    pub name: String,
    pub number: u32,
    pub size: u64,
    pub in_use: bool,
}

impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, human_bytes(self.size))?;
        if let Some(model) = &self.model {
            write!(f, ", {model}")?;
        }
        if !self.partitions.is_empty() {
            let names: Vec<&str> = self.partitions.iter().map(|p| p.name.as_str()).collect();
            write!(f, ", partitions {}", names.join(" "))?;
        }
        write!(f, ")")
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// The name of partition `n` of `disk`, as the kernel makes it: a `p`
/// separates the number when the disk name ends with a digit.
pub(crate) fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// Devices `auto` never considers, neither to find a label on nor to
/// partition: virtual disks, optical and floppy drives, raw flash, eMMC boot
/// and RPMB areas, and stacked devices (device mapper, md, network block
/// devices) whose members are disks of their own.
pub(crate) fn skipped_by_auto(name: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md", "mtdblock",
    ];
    if PREFIXES.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb"))
}

/// Every disk of `/sys/block` with its partitions, sorted by name.
pub(crate) fn scan(sys: &Sys) -> Vec<Disk> {
    let block = sys.sys.join("block");
    let Ok(entries) = std::fs::read_dir(&block) else {
        return Vec::new();
    };
    let in_use = sys.in_use();
    let mut disks: Vec<Disk> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some(read_disk(&block.join(&name), name, &in_use))
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

fn read_disk(dir: &Path, name: String, in_use: &InUse) -> Disk {
    // Partitions are subdirectories with a `partition` file holding their
    // number; sizes are in 512-byte units whatever the sector size.
    let mut partitions: Vec<Partition> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pname = e.file_name().into_string().ok()?;
            let pdir = dir.join(&pname);
            let number = read_u64(&pdir.join("partition"))?;
            Some(Partition {
                number: u32::try_from(number).ok()?,
                size: read_u64(&pdir.join("size")).unwrap_or(0) * 512,
                in_use: in_use.check(&pdir, &pname),
                name: pname,
            })
        })
        .collect();
    partitions.sort_by_key(|p| p.number);
    Disk {
        in_use: in_use.check(dir, &name) || partitions.iter().any(|p| p.in_use),
        size: read_u64(&dir.join("size")).unwrap_or(0) * 512,
        removable: read_u64(&dir.join("removable")) == Some(1),
        read_only: read_u64(&dir.join("ro")) == Some(1),
        model: read_trimmed(&dir.join("device/model")).filter(|m| !m.is_empty()),
        partitions,
        name,
    }
}

/// What to do to get a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A `B2C_CACHE` filesystem: mount it as it is.
    Use(PathBuf),
    /// A partition named by `b2c.cache_device=/dev/X`: mounted as it is,
    /// whatever filesystem and label it holds; formatted only when nothing
    /// mounts, with a warning naming it.
    Mount(PathBuf),
    /// Format this partition (or whole device) as the cache.
    Format(PathBuf),
    /// A new GPT over the whole disk, then format its one partition.
    Partition(Disk),
    /// A `B2C_CACHE` partition the kernel did not find (no GPT parser in
    /// it): tell it, then use it (or format it, for `reset`).
    Hidden { part: Hidden, format: bool },
}

/// A GPT partition unknown to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hidden {
    pub disk: String,
    pub number: u32,
    /// In bytes.
    pub start: u64,
    pub length: u64,
}

/// What holds a `B2C_CACHE` filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Node(PathBuf),
    Hidden(Hidden),
}

impl Found {
    fn plan(self, format: bool) -> Plan {
        match (self, format) {
            (Found::Node(dev), false) => Plan::Use(dev),
            (Found::Node(dev), true) => Plan::Format(dev),
            (Found::Hidden(part), format) => Plan::Hidden { part, format },
        }
    }
}

pub(crate) fn logical_block_size(sys: &Sys, disk: &str) -> u64 {
    read_u64(
        &sys.sys
            .join("block")
            .join(disk)
            .join("queue/logical_block_size"),
    )
    .filter(|s| *s == 4096)
    .unwrap_or(512)
}

/// The `B2C_CACHE` partition of the GPT of a disk on which the kernel
/// found no partition, read by us.
fn find_hidden(sys: &Sys, disk: &str) -> Option<Hidden> {
    let path = sys.dev_path(disk);
    let lb = logical_block_size(sys, disk);
    let sector = if lb == 4096 {
        gpt::disk::LogicalBlockSize::Lb4096
    } else {
        gpt::disk::LogicalBlockSize::Lb512
    };
    let table = gpt::GptConfig::new()
        .logical_block_size(sector)
        .open(&path)
        .ok()?;
    let mut f = std::fs::File::open(&path).ok()?;
    table
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used() && p.last_lba >= p.first_lba)
        .find(|(_, p)| {
            label::read_label_at(&mut f, p.first_lba * lb)
                .ok()
                .flatten()
                .as_deref()
                == Some(label::LABEL)
        })
        .map(|(number, p)| Hidden {
            disk: disk.to_string(),
            number: *number,
            start: p.first_lba * lb,
            length: (p.last_lba - p.first_lba + 1) * lb,
        })
}

/// The first `B2C_CACHE` filesystem: partitions in disk-name and partition
/// order; a disk without partitions counts itself, then the partitions of
/// a GPT the kernel did not read.
fn find_labelled<'a>(sys: &Sys, disks: impl IntoIterator<Item = &'a Disk>) -> Option<Found> {
    disks.into_iter().find_map(|d| {
        if d.partitions.is_empty() {
            let dev = sys.dev_path(&d.name);
            if label::is_cache(&dev) {
                return Some(Found::Node(dev));
            }
            return find_hidden(sys, &d.name).map(Found::Hidden);
        }
        d.partitions
            .iter()
            .map(|p| sys.dev_path(&p.name))
            .find(|dev| label::is_cache(dev))
            .map(Found::Node)
    })
}

/// Why a disk is not taken by `auto`, or `None` when it may be.
fn unsuitable(disk: &Disk) -> Option<&'static str> {
    if disk.removable {
        Some("removable")
    } else if disk.read_only {
        Some("read-only")
    } else if disk.in_use {
        Some("in use")
    } else if disk.size < MIN_AUTO_DISK {
        Some("smaller than 1 GiB")
    } else {
        None
    }
}

/// The choice of `auto` (and `reset`) among `disks`: the first `B2C_CACHE`
/// filesystem, else the first suitable disk. `Err` says why there is none.
pub(crate) fn plan_auto(sys: &Sys, disks: &[Disk], reset: bool) -> Result<Plan, String> {
    let considered: Vec<&Disk> = disks.iter().filter(|d| !skipped_by_auto(&d.name)).collect();
    if let Some(found) = find_labelled(sys, considered.iter().copied()) {
        return Ok(found.plan(reset));
    }
    if let Some(disk) = considered.iter().find(|d| unsuitable(d).is_none()) {
        return Ok(Plan::Partition((*disk).clone()));
    }
    if considered.is_empty() {
        return Err("no disk found".into());
    }
    let why: Vec<String> = considered
        .iter()
        .map(|d| format!("{} is {}", d.name, unsuitable(d).unwrap_or("unsuitable")))
        .collect();
    Err(format!(
        "no {} partition and no usable disk ({})",
        label::LABEL,
        why.join(", ")
    ))
}

/// The device a path names, resolved through symbolic links.
pub(crate) enum Node {
    Disk(Disk),
    Partition(Partition),
}

pub(crate) fn lookup(sys: &Sys, device: &Path) -> Option<Node> {
    let real = std::fs::canonicalize(device).ok()?;
    let name = real.file_name()?.to_str()?;
    for disk in scan(sys) {
        if disk.name == name {
            return Some(Node::Disk(disk));
        }
        if let Some(p) = disk.partitions.into_iter().find(|p| p.name == name) {
            return Some(Node::Partition(p));
        }
    }
    None
}

const IN_USE: &str =
    "in use (mounted, swap, or part of a RAID or device-mapper device): not erasing it";

/// The choice for a named device: a partition is mounted as it is, whatever
/// its label (and formatted only if nothing mounts); a disk gives its
/// `B2C_CACHE` partition, else is partitioned.
pub(crate) fn plan_device(sys: &Sys, device: &Path) -> Result<Plan, String> {
    match lookup(sys, device) {
        None => Err("not a disk or partition known to the kernel".into()),
        Some(Node::Partition(p)) => {
            let dev = sys.dev_path(&p.name);
            if label::is_cache(&dev) {
                Ok(Plan::Use(dev))
            } else if p.in_use {
                Err(IN_USE.into())
            } else {
                Ok(Plan::Mount(dev))
            }
        }
        Some(Node::Disk(disk)) => {
            if let Some(found) = find_labelled(sys, [&disk]) {
                Ok(found.plan(false))
            } else if disk.in_use {
                Err(IN_USE.into())
            } else {
                Ok(Plan::Partition(disk))
            }
        }
    }
}

/// How long `auto` waits for more disks when it found a disk to partition
/// but no `B2C_CACHE` partition: the one with the label may be on a disk
/// that is still being probed.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

/// `auto`/`reset`, waiting up to `wait` for disks to appear: a labelled
/// partition is taken as soon as it shows up; a disk to partition only once
/// the set of block devices has not changed for `settle`.
pub(crate) fn wait_auto(
    sys: &Sys,
    reset: bool,
    wait: Duration,
    settle: Duration,
) -> Result<Plan, String> {
    let start = Instant::now();
    let mut seen: Option<Vec<String>> = None;
    let mut stable_since = start;
    let mut said = false;
    loop {
        let disks = scan(sys);
        let names: Vec<String> = disks
            .iter()
            .flat_map(|d| {
                std::iter::once(d.name.clone()).chain(d.partitions.iter().map(|p| p.name.clone()))
            })
            .collect();
        if seen.as_ref() != Some(&names) {
            seen = Some(names);
            stable_since = Instant::now();
        }
        let plan = plan_auto(sys, &disks, reset);
        let out_of_time = start.elapsed() >= wait;
        match plan {
            Ok(Plan::Partition(_)) if stable_since.elapsed() >= settle || out_of_time => {
                return plan
            }
            Ok(Plan::Partition(_)) => {}
            Ok(_) => return plan,
            Err(_) if out_of_time => return plan,
            Err(_) => {
                if !said {
                    log::info!(
                        "b2c.cache_device: waiting up to {}s for a disk",
                        wait.as_secs()
                    );
                    said = true;
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Waits up to `wait` for a named device to exist and be known to sysfs.
pub(crate) fn wait_device(sys: &Sys, device: &Path, wait: Duration, option: &str) -> bool {
    let start = Instant::now();
    let mut said = false;
    loop {
        if lookup(sys, device).is_some() {
            return true;
        }
        if start.elapsed() >= wait {
            return false;
        }
        if !said {
            log::info!(
                "{option}: waiting up to {}s for {}",
                wait.as_secs(),
                device.display()
            );
            said = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits for partition `number` of `disk` to be known to sysfs and to have
/// its device node.
pub(crate) fn wait_partition(
    sys: &Sys,
    disk: &str,
    number: u32,
    wait: Duration,
) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        let found = scan(sys)
            .into_iter()
            .find(|d| d.name == disk)
            .and_then(|d| d.partitions.into_iter().find(|p| p.number == number))
            .map(|p| sys.dev_path(&p.name))
            .filter(|dev| dev.exists());
        if found.is_some() || start.elapsed() >= wait {
            return found;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake /sys/block and /dev: directories and plain files.

    use super::*;

    /// A major number of its own for each fake disk.
    fn major(disk: &str) -> u32 {
        disk.bytes().map(u32::from).sum()
    }

    pub struct Tree {
        pub dir: tempfile::TempDir,
        pub sys: Sys,
    }

    impl Tree {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let sys = Sys {
                sys: dir.path().join("sys"),
                dev: dir.path().join("dev"),
                proc: dir.path().join("proc"),
            };
            std::fs::create_dir_all(sys.proc.join("self")).unwrap();
            std::fs::create_dir_all(sys.sys.join("block")).unwrap();
            std::fs::create_dir_all(&sys.dev).unwrap();
            Tree { dir, sys }
        }

        /// A disk of `gib` GiB; its device node is an empty file.
        pub fn disk(&self, name: &str, gib: u64, removable: bool) -> &Self {
            let d = self.sys.sys.join("block").join(name);
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::write(d.join("size"), format!("{}\n", gib * 2 * 1024 * 1024)).unwrap();
            std::fs::write(d.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
            std::fs::write(d.join("ro"), "0\n").unwrap();
            std::fs::write(d.join("device/model"), "FAKE DISK       \n").unwrap();
            std::fs::write(d.join("dev"), format!("{}:0\n", major(name))).unwrap();
            std::fs::write(self.sys.dev_path(name), b"").unwrap();
            self
        }

        /// Partition `n` of `disk`, holding an ext filesystem labelled
        /// `label` when given.
        pub fn partition(&self, disk: &str, n: u32, label: Option<&str>) -> &Self {
            let name = partition_name(disk, n);
            let d = self.sys.sys.join("block").join(disk).join(&name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("partition"), format!("{n}\n")).unwrap();
            std::fs::write(d.join("size"), "2048\n").unwrap();
            std::fs::write(d.join("dev"), format!("{}:{n}\n", major(disk))).unwrap();
            self.filesystem(&name, label);
            self
        }

        /// Writes a superblock (or nothing) into a device node.
        pub fn filesystem(&self, name: &str, label: Option<&str>) -> &Self {
            let mut bytes = vec![0u8; 1024];
            if let Some(label) = label {
                bytes.extend(crate::label::superblock_with_label(label.as_bytes()));
            }
            std::fs::write(self.sys.dev_path(name), bytes).unwrap();
            self
        }

        pub fn dev(&self, name: &str) -> PathBuf {
            self.sys.dev_path(name)
        }

        /// Mounts partition `n` of `disk` in the fake /proc/self/mountinfo.
        pub fn mounted(&self, disk: &str, n: u32) -> &Self {
            let line = format!(
                "29 1 {}:{n} / /mnt rw,relatime shared:1 - ext4 /dev/x rw\n",
                major(disk)
            );
            let path = self.sys.proc.join("self/mountinfo");
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&line);
            std::fs::write(path, text).unwrap();
            self
        }

        pub fn swap(&self, name: &str) -> &Self {
            std::fs::write(
                self.sys.proc.join("swaps"),
                format!("Filename Type Size Used Priority\n/dev/{name} partition 1 0 -2\n"),
            )
            .unwrap();
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Tree;
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(partition_name("sda", 1), "sda1");
        assert_eq!(partition_name("vdb", 3), "vdb3");
        assert_eq!(partition_name("nvme0n1", 1), "nvme0n1p1");
        assert_eq!(partition_name("mmcblk0", 1), "mmcblk0p1");
        assert_eq!(partition_name("loop7", 2), "loop7p2");
    }

    #[test]
    fn skipped_names() {
        for name in [
            "loop0",
            "ram0",
            "zram0",
            "sr0",
            "fd0",
            "nbd3",
            "dm-0",
            "md127",
            "mtdblock0",
            "mmcblk0boot0",
            "mmcblk0rpmb",
        ] {
            assert!(skipped_by_auto(name), "{name}");
        }
        for name in ["sda", "vda", "nvme0n1", "mmcblk0", "hda", "xvda"] {
            assert!(!skipped_by_auto(name), "{name}");
        }
    }

    #[test]
    fn scan_reads_disks_and_partitions() {
        let t = Tree::new();
        t.disk("vdb", 2, false)
            .disk("sda", 4, true)
            .partition("sda", 2, None)
            .partition("sda", 1, Some("other"));
        let disks = scan(&t.sys);
        assert_eq!(disks.len(), 2);
        let sda = &disks[0];
        assert_eq!(sda.name, "sda");
        assert_eq!(sda.size, 4 << 30);
        assert!(sda.removable);
        assert_eq!(sda.model.as_deref(), Some("FAKE DISK"));
        let parts: Vec<(&str, u32, u64)> = sda
            .partitions
            .iter()
            .map(|p| (p.name.as_str(), p.number, p.size))
            .collect();
        assert_eq!(parts, [("sda1", 1, 1 << 20), ("sda2", 2, 1 << 20)]);
        assert_eq!(disks[1].name, "vdb");
        assert!(!disks[1].removable);
        assert_eq!(
            sda.to_string(),
            "sda (4.0 GiB, FAKE DISK, partitions sda1 sda2)"
        );
    }

    #[test]
    fn auto_prefers_the_labelled_partition() {
        let t = Tree::new();
        t.disk("nvme0n1", 100, false)
            .partition("nvme0n1", 1, Some("rootfs"))
            .disk("sdb", 8, false)
            .partition("sdb", 1, None)
            .partition("sdb", 2, Some("B2C_CACHE"))
            .partition("sdb", 3, Some("B2C_CACHE"));
        let disks = scan(&t.sys);
        assert_eq!(
            plan_auto(&t.sys, &disks, false),
            Ok(Plan::Use(t.dev("sdb2")))
        );
        assert_eq!(
            plan_auto(&t.sys, &disks, true),
            Ok(Plan::Format(t.dev("sdb2")))
        );
    }

    #[test]
    fn auto_finds_a_label_on_a_removable_disk_and_a_whole_disk() {
        let t = Tree::new();
        t.disk("sda", 100, false)
            .disk("sdc", 1, true)
            .filesystem("sdc", Some("B2C_CACHE"));
        let disks = scan(&t.sys);
        assert_eq!(
            plan_auto(&t.sys, &disks, false),
            Ok(Plan::Use(t.dev("sdc")))
        );
    }

    #[test]
    fn auto_partitions_the_first_suitable_disk() {
        let t = Tree::new();
        t.disk("loop0", 10, false)
            .disk("zram0", 10, false)
            .disk("sr0", 10, false)
            .disk("mmcblk0boot0", 10, false)
            .disk("sda", 16, true)
            .disk("vda", 0, false)
            .disk("vdb", 20, false)
            .partition("vdb", 1, Some("data"))
            .disk("vdc", 20, false);
        // A labelled loop device is not a cache either.
        t.filesystem("loop0", Some("B2C_CACHE"));
        let disks = scan(&t.sys);
        let Ok(Plan::Partition(disk)) = plan_auto(&t.sys, &disks, false) else {
            panic!("{:?}", plan_auto(&t.sys, &disks, false));
        };
        assert_eq!(disk.name, "vdb");
        assert_eq!(plan_auto(&t.sys, &disks, true), Ok(Plan::Partition(disk)));
    }

    #[test]
    fn auto_without_a_usable_disk_says_why() {
        let t = Tree::new();
        assert_eq!(
            plan_auto(&t.sys, &scan(&t.sys), false),
            Err("no disk found".into())
        );
        t.disk("loop0", 10, false)
            .disk("sda", 16, true)
            .disk("vda", 0, false);
        let err = plan_auto(&t.sys, &scan(&t.sys), false).unwrap_err();
        assert_eq!(
            err,
            "no B2C_CACHE partition and no usable disk (sda is removable, vda is smaller than 1 GiB)"
        );
    }

    #[test]
    fn wait_auto_returns_at_once_on_a_label_and_settles_otherwise() {
        let t = Tree::new();
        t.disk("sda", 2, false)
            .partition("sda", 1, Some("B2C_CACHE"));
        let start = Instant::now();
        let plan = wait_auto(
            &t.sys,
            false,
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        assert_eq!(plan, Ok(Plan::Use(t.dev("sda1"))));
        assert!(start.elapsed() < Duration::from_secs(5));

        let t = Tree::new();
        t.disk("sda", 2, false);
        let plan = wait_auto(
            &t.sys,
            false,
            Duration::from_secs(10),
            Duration::from_millis(300),
        );
        assert!(matches!(plan, Ok(Plan::Partition(d)) if d.name == "sda"));

        // Nothing at all: gives up after `wait`.
        let t = Tree::new();
        let plan = wait_auto(&t.sys, false, Duration::from_millis(300), SETTLE);
        assert_eq!(plan, Err("no disk found".into()));
    }

    #[test]
    fn a_late_disk_with_the_label_wins_over_partitioning() {
        let t = Tree::new();
        t.disk("sda", 2, false);
        let sys = t.sys.clone();
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let t = Tree {
                dir: tempfile::tempdir().unwrap(),
                sys,
            };
            t.disk("sdb", 2, false)
                .partition("sdb", 1, Some("B2C_CACHE"));
        });
        let plan = wait_auto(
            &t.sys,
            false,
            Duration::from_secs(10),
            Duration::from_secs(2),
        );
        later.join().unwrap();
        assert_eq!(plan, Ok(Plan::Use(t.dev("sdb1"))));
    }

    #[test]
    fn disks_in_use_are_never_erased() {
        let t = Tree::new();
        t.disk("sda", 100, false)
            .partition("sda", 1, Some("rootfs"))
            .mounted("sda", 1)
            .disk("sdb", 100, false)
            .partition("sdb", 1, None)
            .partition("sdb", 2, None)
            .swap("sdb2")
            .disk("sdc", 100, false)
            .partition("sdc", 1, None);
        std::fs::create_dir_all(t.sys.sys.join("block/sdc/sdc1/holders/md0")).unwrap();
        let disks = scan(&t.sys);
        assert!(disks.iter().all(|d| d.in_use), "{disks:?}");
        assert!(disks[1].partitions[1].in_use && !disks[1].partitions[0].in_use);
        assert_eq!(
            plan_auto(&t.sys, &disks, false),
            Err("no B2C_CACHE partition and no usable disk (sda is in use, sdb is in use, sdc is in use)".into())
        );
        // Named: the disk and the busy partition are refused, the free one taken.
        assert!(plan_device(&t.sys, &t.dev("sda"))
            .unwrap_err()
            .starts_with("in use"));
        assert!(plan_device(&t.sys, &t.dev("sdb2"))
            .unwrap_err()
            .starts_with("in use"));
        assert_eq!(
            plan_device(&t.sys, &t.dev("sdb1")),
            Ok(Plan::Mount(t.dev("sdb1")))
        );
        // A disk without a `dev` match elsewhere is free.
        t.disk("sdd", 100, false);
        assert!(matches!(
            plan_auto(&t.sys, &scan(&t.sys), false),
            Ok(Plan::Partition(d)) if d.name == "sdd"
        ));
    }

    #[test]
    fn a_gpt_partition_the_kernel_did_not_find() {
        let t = Tree::new();
        t.disk("sda", 100, false).disk("sdb", 2, false);
        // sdb's node holds a GPT and, in its partition, the labelled
        // superblock; sysfs lists no partition, as under a kernel without
        // CONFIG_EFI_PARTITION.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(t.dev("sdb"))
            .unwrap();
        f.set_len(4 << 20).unwrap();
        let (first, last) =
            crate::partition::write_gpt(&mut f, gpt::disk::LogicalBlockSize::Lb512).unwrap();
        use std::io::{Seek, SeekFrom, Write};
        f.seek(SeekFrom::Start(first * 512 + 1024)).unwrap();
        f.write_all(&crate::label::superblock_with_label(b"B2C_CACHE"))
            .unwrap();
        drop(f);
        let hidden = Hidden {
            disk: "sdb".into(),
            number: 1,
            start: 1 << 20,
            length: (last - first + 1) * 512,
        };
        let disks = scan(&t.sys);
        assert_eq!(
            plan_auto(&t.sys, &disks, false),
            Ok(Plan::Hidden {
                part: hidden.clone(),
                format: false
            })
        );
        assert_eq!(
            plan_auto(&t.sys, &disks, true),
            Ok(Plan::Hidden {
                part: hidden.clone(),
                format: true
            })
        );
        assert_eq!(
            plan_device(&t.sys, &t.dev("sdb")),
            Ok(Plan::Hidden {
                part: hidden,
                format: false
            })
        );
        // Without the label, that disk is just a disk.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.dev("sdb"))
            .unwrap();
        f.seek(SeekFrom::Start(first * 512 + 1024)).unwrap();
        f.write_all(&[0u8; 1024]).unwrap();
        assert!(
            matches!(plan_auto(&t.sys, &scan(&t.sys), false), Ok(Plan::Partition(d)) if d.name == "sda")
        );
    }

    #[test]
    fn this_machines_mounted_disk_is_in_use() {
        // Reads the real sysfs and plans; executes nothing.
        let sys = Sys::real();
        let disks = scan(&sys);
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = info
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap()
            .to_string();
        let dev_of = |dir: PathBuf| read_trimmed(&dir.join("dev"));
        let block = sys.sys.join("block");
        if let Some(d) = disks.iter().find(|d| {
            dev_of(block.join(&d.name)).as_ref() == Some(&root)
                || d.partitions
                    .iter()
                    .any(|p| dev_of(block.join(&d.name).join(&p.name)).as_ref() == Some(&root))
        }) {
            assert!(d.in_use, "{d:?} holds / but is not in use");
        }
        if let Ok(Plan::Partition(d)) = plan_auto(&sys, &disks, false) {
            assert!(!d.in_use);
        }
    }

    #[test]
    fn named_devices() {
        let t = Tree::new();
        t.disk("sda", 2, true)
            .partition("sda", 1, None)
            .partition("sda", 2, Some("B2C_CACHE"))
            .disk("sdb", 2, false)
            .partition("sdb", 1, Some("home"))
            .disk("nvme0n1", 2, false)
            .partition("nvme0n1", 1, Some("x"))
            .partition("nvme0n1", 2, Some("B2C_CACHE"));
        // A partition: the cache when labelled; otherwise mounted as it is
        // whatever it holds, never planned for a format.
        assert_eq!(
            plan_device(&t.sys, &t.dev("sda2")),
            Ok(Plan::Use(t.dev("sda2")))
        );
        assert_eq!(
            plan_device(&t.sys, &t.dev("sda1")),
            Ok(Plan::Mount(t.dev("sda1")))
        );
        t.partition("nvme0n1", 3, Some("DATA"));
        assert_eq!(
            plan_device(&t.sys, &t.dev("nvme0n1p3")),
            Ok(Plan::Mount(t.dev("nvme0n1p3")))
        );
        // A disk: its labelled partition, else a new partition table.
        assert_eq!(
            plan_device(&t.sys, &t.dev("nvme0n1")),
            Ok(Plan::Use(t.dev("nvme0n1p2")))
        );
        let Ok(Plan::Partition(d)) = plan_device(&t.sys, &t.dev("sdb")) else {
            panic!()
        };
        assert_eq!(d.name, "sdb");
        // Through a symbolic link, as /dev/disk/by-id/… would be.
        let link = t.dir.path().join("by-id");
        std::os::unix::fs::symlink(t.dev("sda2"), &link).unwrap();
        assert_eq!(plan_device(&t.sys, &link), Ok(Plan::Use(t.dev("sda2"))));
        // Names auto skips are fine when named.
        t.disk("loop3", 1, false)
            .partition("loop3", 1, Some("B2C_CACHE"));
        assert_eq!(
            plan_device(&t.sys, &t.dev("loop3")),
            Ok(Plan::Use(t.dev("loop3p1")))
        );
        // Unknown to sysfs.
        assert!(plan_device(&t.sys, &t.dev("sdz")).is_err());
        assert!(!wait_device(
            &t.sys,
            &t.dev("sdz"),
            Duration::from_millis(200),
            "test"
        ));
        assert!(wait_device(&t.sys, &t.dev("sdb1"), Duration::ZERO, "test"));
        assert_eq!(
            wait_partition(&t.sys, "nvme0n1", 2, Duration::ZERO),
            Some(t.dev("nvme0n1p2"))
        );
        assert_eq!(
            wait_partition(&t.sys, "sdb", 2, Duration::from_millis(200)),
            None
        );
    }
}
