//! The cache on real block devices: loop devices over sparse images.
//!
//! They need root and /dev/loop-control; without them they say so and pass.
//! `auto` and `reset` run against a fake sysfs holding nothing but the loop
//! device (linked in under a disk's name), never against this machine's
//! disks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use b2c_cmdline::{CacheDevice, Swap, SwapSpace};

use crate::disks::Sys;
use crate::test_util::output;
use crate::{setup_cache, setup_cache_in, setup_swap, teardown, Cache, LABEL};

/// One loop test at a time: they share the loop devices and mke2fs is
/// not free on 2 cores.
static LOCK: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(10);

struct Loop {
    dir: tempfile::TempDir,
    dev: PathBuf,
}

impl Loop {
    /// A loop device with partition scanning over a sparse image of `mib`
    /// MiB, or `None` (with a note) where loop devices cannot be had.
    fn new(mib: u64) -> Option<Loop> {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
            eprintln!("skipped: loop devices need root and /dev/loop-control");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let (code, out) = output(
            Command::new("losetup")
                .args(["-f", "--show", "-P"])
                .arg(&img),
        );
        if code != 0 {
            eprintln!("skipped: losetup: {out}");
            return None;
        }
        Some(Loop {
            dev: PathBuf::from(out.trim()),
            dir,
        })
    }

    /// As after a reboot: the image on a new loop device, whose partitions
    /// the kernel scans anew.
    fn reattach(&mut self) {
        let (code, out) = output(Command::new("losetup").arg("-d").arg(&self.dev));
        assert_eq!(code, 0, "{out}");
        let img = self.dir.path().join("disk.img");
        let (code, out) = output(
            Command::new("losetup")
                .args(["-f", "--show", "-P"])
                .arg(&img),
        );
        assert_eq!(code, 0, "{out}");
        self.dev = PathBuf::from(out.trim());
    }

    fn name(&self) -> &str {
        self.dev.file_name().unwrap().to_str().unwrap()
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // After a failed assertion: leave nothing of the test behind.
        let _ = crate::swap::swapoff(&self.mnt().join(crate::SWAP_FILE));
        let _ = crate::swap::swapoff(&self.dev);
        let _ = nix::mount::umount2(&self.mnt(), nix::mount::MntFlags::MNT_DETACH);
        let _ = output(Command::new("losetup").arg("-d").arg(&self.dev));
    }
}

fn locked() -> std::sync::MutexGuard<'static, ()> {
    crate::test_util::init_log();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn blkid(dev: &Path, tag: &str) -> String {
    let (_, out) = output(
        Command::new("blkid")
            .args(["-p", "-o", "value", "-s", tag])
            .arg(dev),
    );
    out.trim().to_string()
}

/// The mount options and type of `target` in /proc/self/mountinfo.
fn mount_of(target: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.to_str().unwrap();
    info.lines()
        .find(|l| l.split_whitespace().nth(4) == Some(target))
        .map(String::from)
}

fn cache_on(dev: &Path, mnt: &Path) -> Cache {
    setup_cache(
        &CacheDevice::Device(dev.display().to_string()),
        &[],
        mnt,
        WAIT,
    )
    .unwrap()
    .mounted()
    .expect("a cache")
}

/// A fake sysfs and /dev holding only `lo`, named `sda` so that `auto`
/// considers it: its sysfs directory is the real one, linked.
fn only(lo: &Loop) -> Sys {
    let root = lo.dir.path().join("fake");
    let sys = Sys {
        sys: root.join("sys"),
        dev: root.join("dev"),
        proc: "/proc".into(),
    };
    std::fs::create_dir_all(sys.sys.join("block")).unwrap();
    std::fs::create_dir_all(&sys.dev).unwrap();
    let real = std::fs::canonicalize(Path::new("/sys/block").join(lo.name())).unwrap();
    std::os::unix::fs::symlink(real, sys.sys.join("block/sda")).unwrap();
    std::os::unix::fs::symlink(&lo.dev, sys.dev.join("sda")).unwrap();
    // Dangling until the kernel makes the partition.
    std::os::unix::fs::symlink(lo.part(1), sys.dev.join(format!("{}p1", lo.name()))).unwrap();
    sys
}

#[test]
fn a_blank_disk_is_partitioned_formatted_then_reused() {
    let _l = locked();
    let Some(lo) = Loop::new(64) else { return };
    let mnt = lo.mnt();

    let cache = cache_on(&lo.dev, &mnt);
    assert_eq!(cache.device, lo.part(1));
    assert!(cache.formatted);
    // One GPT partition from sector 2048 to the end, read back by the gpt
    // crate and by blkid.
    let disk = gpt::GptConfig::new()
        .only_valid_headers(true)
        .open(&lo.dev)
        .unwrap();
    let parts = disk.partitions();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[&1].first_lba, 2048);
    assert_eq!(parts[&1].last_lba, (64 << 20) / 512 - 34);
    assert_eq!(blkid(&lo.dev, "PTTYPE"), "gpt");
    // ext4, labelled, with the encrypt feature, mounted noatime.
    assert_eq!(blkid(&lo.part(1), "LABEL"), LABEL);
    assert_eq!(blkid(&lo.part(1), "TYPE"), "ext4");
    let (code, header) = output(Command::new("dumpe2fs").arg("-h").arg(lo.part(1)));
    assert_eq!(code, 0, "{header}");
    let features = header
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap();
    assert!(features.contains(" encrypt"), "{features}");
    let mount = mount_of(&mnt).expect("mounted");
    assert!(
        mount.contains("noatime") && mount.contains(" - ext4 "),
        "{mount}"
    );

    std::fs::write(mnt.join("kept"), b"from the first boot").unwrap();
    teardown(Some(&cache), None);
    assert_eq!(mount_of(&mnt), None);

    // The next boot: found by its label, not formatted.
    let again = cache_on(&lo.dev, &mnt);
    assert_eq!(again.device, lo.part(1));
    assert!(!again.formatted);
    assert_eq!(
        std::fs::read(mnt.join("kept")).unwrap(),
        b"from the first boot"
    );
    teardown(Some(&again), None);

    // Naming the labelled partition itself: used as is.
    let part = cache_on(&lo.part(1), &mnt);
    assert!(!part.formatted);
    assert!(mnt.join("kept").exists());
    teardown(Some(&part), None);
}

#[test]
fn the_cache_is_found_again_after_a_reboot() {
    let _l = locked();
    let Some(mut lo) = Loop::new(64) else { return };
    let mnt = lo.mnt();
    let cache = cache_on(&lo.dev, &mnt);
    std::fs::write(mnt.join("kept"), b"1").unwrap();
    teardown(Some(&cache), None);

    // Whether this kernel reads GPTs or not (then the partition is found
    // by reading the table ourselves), the cache is reused.
    lo.reattach();
    let again = cache_on(&lo.dev, &mnt);
    assert_eq!(again.device, lo.part(1));
    assert!(!again.formatted);
    assert!(mnt.join("kept").exists());
    teardown(Some(&again), None);
}

#[test]
fn auto_and_reset_on_a_fake_sysfs_holding_only_a_loop_device() {
    let _l = locked();
    // auto takes no disk under 1 GiB; the image is sparse.
    let Some(lo) = Loop::new(1100) else { return };
    let sys = only(&lo);
    let mnt = lo.mnt();
    let setup = |device: CacheDevice| {
        setup_cache_in(&sys, &device, &[], &mnt, WAIT)
            .unwrap()
            .mounted()
            .expect("a cache")
    };

    let first = setup(CacheDevice::Auto);
    assert!(first.formatted);
    assert_eq!(blkid(&lo.part(1), "LABEL"), LABEL);
    assert_eq!(blkid(&lo.dev, "PTTYPE"), "gpt");
    std::fs::write(mnt.join("kept"), b"1").unwrap();
    teardown(Some(&first), None);

    let second = setup(CacheDevice::Auto);
    assert!(!second.formatted);
    assert!(mnt.join("kept").exists());
    teardown(Some(&second), None);

    // reset: the same partition, reformatted; the partition table stays.
    let uuid = blkid(&lo.part(1), "PART_ENTRY_UUID");
    let reset = setup(CacheDevice::Reset);
    assert!(reset.formatted);
    assert!(!mnt.join("kept").exists());
    assert_eq!(blkid(&lo.part(1), "PART_ENTRY_UUID"), uuid);
    teardown(Some(&reset), None);
}

/// Writes an MBR with one Linux partition from sector 2048 on, through the
/// loop device (its page cache must see it), and has the kernel read it.
fn write_mbr(dev: &Path, sectors: u32) {
    use std::io::{Seek, SeekFrom, Write};
    let mut entry = [0u8; 16];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    f.seek(SeekFrom::Start(446)).unwrap();
    f.write_all(&entry).unwrap();
    f.seek(SeekFrom::Start(510)).unwrap();
    f.write_all(&[0x55, 0xAA]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let (code, out) = output(Command::new("blockdev").arg("--rereadpt").arg(dev));
    assert_eq!(code, 0, "{out}");
    // A kernel without the MBR parser (CONFIG_MSDOS_PARTITION): as partx.
    let part = PathBuf::from(format!("{}p1", dev.display()));
    if !part.exists() {
        let (code, out) = output(Command::new("partx").arg("-a").arg(dev));
        assert_eq!(code, 0, "{out}");
    }
    assert!(part.exists());
}

fn mke2fs_data(part: &Path) {
    let (code, out) = output(
        Command::new(crate::format::mke2fs_binary())
            .args(["-q", "-F", "-L", "data"])
            .arg(part),
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_unrelated_partition_table_is_replaced_when_the_disk_is_named() {
    let _l = locked();
    let Some(lo) = Loop::new(64) else { return };
    write_mbr(&lo.dev, 32 * 2048);
    mke2fs_data(&lo.part(1));
    assert_eq!(blkid(&lo.dev, "PTTYPE"), "dos");

    let cache = cache_on(&lo.dev, &lo.mnt());
    assert!(cache.formatted);
    assert_eq!(cache.device, lo.part(1));
    assert_eq!(blkid(&lo.dev, "PTTYPE"), "gpt");
    assert_eq!(blkid(&lo.part(1), "LABEL"), LABEL);
    // The new partition covers the disk, not the old 32 MiB.
    let size: u64 = std::fs::read_to_string(format!("/sys/block/{0}/{0}p1/size", lo.name()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(size, (64 << 20) / 512 - 34 - 2048 + 1);
    teardown(Some(&cache), None);
}

#[test]
fn a_named_partition_is_mounted_as_it_is_whatever_its_label() {
    let _l = locked();
    let Some(lo) = Loop::new(64) else { return };
    write_mbr(&lo.dev, 60 * 2048);
    mke2fs_data(&lo.part(1));
    let uuid = blkid(&lo.part(1), "UUID");
    // What the user keeps there: a file on the DATA filesystem.
    let mnt = lo.mnt();
    std::fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(
        Some(&lo.part(1)),
        &mnt,
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(mnt.join("kept"), b"user data").unwrap();
    nix::mount::umount2(&mnt, nix::mount::MntFlags::empty()).unwrap();

    let cache = cache_on(&lo.part(1), &mnt);
    assert!(!cache.formatted);
    assert_eq!(cache.device, lo.part(1));
    assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), b"user data");
    teardown(Some(&cache), None);
    // Not reformatted, not relabelled; the partition table left alone.
    assert_eq!(blkid(&lo.part(1), "UUID"), uuid);
    assert_eq!(blkid(&lo.part(1), "LABEL"), "data");
    assert_eq!(blkid(&lo.dev, "PTTYPE"), "dos");
}

#[test]
fn a_named_partition_holding_nothing_that_mounts_is_formatted() {
    let _l = locked();
    let Some(lo) = Loop::new(64) else { return };
    write_mbr(&lo.dev, 60 * 2048);

    let cache = cache_on(&lo.part(1), &lo.mnt());
    assert!(cache.formatted);
    assert_eq!(blkid(&lo.part(1), "LABEL"), LABEL);
    // The partition table is left alone.
    assert_eq!(blkid(&lo.dev, "PTTYPE"), "dos");
    teardown(Some(&cache), None);
}

#[test]
fn a_labelled_partition_that_does_not_mount_is_reformatted() {
    let _l = locked();
    let Some(lo) = Loop::new(64) else { return };
    let mnt = lo.mnt();
    let cache = cache_on(&lo.dev, &mnt);
    std::fs::write(mnt.join("kept"), b"1").unwrap();
    teardown(Some(&cache), None);

    // Break the superblock's checksum; the label still reads.
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(lo.part(1))
            .unwrap();
        let mut byte = [0u8; 1];
        f.seek(SeekFrom::Start(1024 + 0x3FC)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(1024 + 0x3FC)).unwrap();
        f.write_all(&[byte[0] ^ 0xFF]).unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(
        crate::read_label(&lo.part(1)).unwrap().as_deref(),
        Some(LABEL)
    );

    let again = cache_on(&lo.dev, &mnt);
    assert!(again.formatted);
    assert!(!mnt.join("kept").exists());
    teardown(Some(&again), None);
}

fn in_proc_swaps(path: &Path) -> bool {
    std::fs::read_to_string("/proc/swaps")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(path.to_str().unwrap()))
}

#[test]
fn a_swap_file_on_the_cache_until_teardown() {
    let _l = locked();
    let Some(lo) = Loop::new(64) else { return };
    let cache = cache_on(&lo.dev, &lo.mnt());
    let swap = Swap {
        space: SwapSpace::File { bytes: 16 << 20 },
        // Leave this machine's swappiness alone.
        swappiness: None,
    };
    let info = match setup_swap(&swap, Some(&cache)) {
        Ok(info) => info.expect("swap"),
        Err(e) if e.to_string().contains("Operation not permitted") => {
            eprintln!("skipped: swapon is not permitted here: {e}");
            teardown(Some(&cache), None);
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(info.path, lo.mnt().join("swapfile"));
    assert!(info.is_file);
    assert_eq!(info.bytes, 16 << 20);
    assert!(
        in_proc_swaps(&info.path),
        "{}",
        std::fs::read_to_string("/proc/swaps").unwrap()
    );

    teardown(Some(&cache), Some(&info));
    assert!(!in_proc_swaps(&info.path));
    assert_eq!(mount_of(&lo.mnt()), None);
    // The file is gone from the cache.
    let again = cache_on(&lo.dev, &lo.mnt());
    assert!(!lo.mnt().join("swapfile").exists());
    teardown(Some(&again), None);
}

#[test]
fn a_swap_device() {
    let _l = locked();
    let Some(lo) = Loop::new(16) else { return };
    let swap = Swap {
        space: SwapSpace::Device(lo.dev.display().to_string()),
        swappiness: None,
    };
    let info = match setup_swap(&swap, None) {
        Ok(info) => info.expect("swap"),
        Err(e) if e.to_string().contains("Operation not permitted") => {
            eprintln!("skipped: swapon is not permitted here: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(!info.is_file);
    assert!(in_proc_swaps(&lo.dev));
    teardown(None, Some(&info));
    assert!(!in_proc_swaps(&lo.dev));
    assert!(lo.dev.exists());
}

#[test]
fn fscrypt_volumes_on_the_cache() {
    use crate::volume::fscrypt::{encrypt_dir, is_encrypted, Encrypted, FscryptError};
    let _l = locked();
    let Some(lo) = Loop::new(256) else { return };
    let cache = cache_on(&lo.dev, &lo.mnt());
    let key = |byte: u8| {
        let b64 = {
            // 64 bytes of `byte`, base64.
            let raw = [byte; 64];
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for c in raw.chunks(3) {
                let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..4 {
                    s.push(if i <= c.len() {
                        T[(n >> (18 - 6 * i) & 63) as usize] as char
                    } else {
                        '='
                    });
                }
            }
            s
        };
        b2c_cmdline::parse_volume(&format!("v,fscrypt_key={b64}"))
            .unwrap()
            .0
            .fscrypt_key
            .unwrap()
    };
    let dir = cache.mountpoint.join("volumes/v");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(!is_encrypted(&dir).unwrap());
    assert_eq!(encrypt_dir(&dir, &key(1), false).unwrap(), Encrypted::New);
    std::fs::write(dir.join("secret.txt"), b"plain").unwrap();
    assert!(is_encrypted(&dir).unwrap());
    assert_eq!(
        encrypt_dir(&dir, &key(1), false).unwrap(),
        Encrypted::AsBefore
    );
    assert_eq!(std::fs::read(dir.join("secret.txt")).unwrap(), b"plain");
    // Another key: refused, unless asked to start over.
    let e = encrypt_dir(&dir, &key(2), false).unwrap_err();
    assert!(matches!(e, FscryptError::OtherKey(_)), "{e}");
    assert_eq!(
        encrypt_dir(&dir, &key(2), true).unwrap(),
        Encrypted::Emptied
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    // An unencrypted volume that gets a key is emptied first (a policy
    // needs an empty directory), as boot2container does.
    let plain = cache.mountpoint.join("volumes/p");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("old"), b"x").unwrap();
    assert_eq!(
        encrypt_dir(&plain, &key(3), false).unwrap(),
        Encrypted::Emptied
    );
    teardown(Some(&cache), None);
}
