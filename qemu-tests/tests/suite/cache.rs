//! End-to-end: `b2c.cache_device`. Pulled layers are kept on an ext4
//! partition labelled `B2C_CACHE` (mounted at /storage), so that a reboot
//! downloads only what changed and a registry outage does not stop a
//! machine that already has its image. Each test has one TestNet and one
//! disk image, reused across its boots; the images are kept in
//! `target/qemu-tests/disks/` for a post-mortem.
//!
//! Downloads are counted in the registry's access log
//! ([`TestNet::blob_downloads`]); what the guest wrote to its disk is read
//! back from the image file ([`qemu_tests::disk`]).
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

use crate::common;

use std::path::{Path, PathBuf};

use common::{assert_verdict, boot_on, options, run_http, start_net};
use qemu_tests::disk::{self, Partition, SECTOR};
use qemu_tests::images::{self, BIG_FILE, BIG_IMAGE, BUSYBOX_IMAGE};
use qemu_tests::{Boot, NetOptions, TestNet, REGISTRY_HTTP};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const LABEL: &str = "B2C_CACHE";
/// The repository of [`BUSYBOX_IMAGE`], as the registry log names it.
const BUSYBOX_REPO: &str = "b2c/busybox";
/// Printed by the container: `CACHE-42`.
const MARKER: &str = "CACHE-42";

/// Where a test's disk image lives: replaced by each run, kept after it.
fn disk_path(name: &str) -> PathBuf {
    let dir = qemu_tests::output_dir().join("disks");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir.join(common::disk_file(name))
}

fn blank_disk(name: &str, size: u64) -> PathBuf {
    let path = disk_path(name);
    disk::blank_disk(path.parent().unwrap(), &common::disk_file(name), size)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A disk that held something else: a DOS partition table with one
/// 100 MiB Linux partition from sector 2048, holding an ext4 labelled
/// `DATA`.
fn used_disk(name: &str) -> PathBuf {
    let path = disk_path(name);
    let disk = disk::dos_disk_with_ext4(
        path.parent().unwrap(),
        &common::disk_file(name),
        GIB,
        100 * MIB,
        "DATA",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let table = disk::partition_table(&disk).unwrap().expect("a table");
    assert_eq!(table.kind, "dos");
    assert_eq!(data_fs(&disk).label.as_deref(), Some("DATA"));
    disk
}

/// The ext4 of the used disk's first partition.
fn data_fs(disk: &Path) -> disk::Filesystem {
    disk::filesystem(disk, 2048 * SECTOR)
        .unwrap()
        .expect("a filesystem at sector 2048")
}

/// `b2c.cache_device=<cache>`, then a busybox container that prints
/// [`MARKER`].
fn busybox_append(cache: &str) -> String {
    format!(
        "b2c.cache_device={cache} {}",
        run_http(BUSYBOX_IMAGE, "sh -c 'echo CACHE-$((40+2))'")
    )
}

/// Boots with `disk` (if any) as /dev/vda.
fn boot_with_disk(net: &TestNet, name: &str, append: &str, disk: Option<&Path>) -> Boot {
    let mut opts = options(name, append);
    if let Some(disk) = disk {
        opts = opts.with_disk(disk);
    }
    boot_on(net, &opts)
}

/// The container ran, the pipeline passed and the machine powered off.
fn assert_ran(boot: &Boot) {
    assert!(boot.has_line(MARKER), "the container did not run\n{boot}");
    assert_verdict(boot, 0);
}

/// The disk is what `auto` makes of a whole disk: a GPT with one
/// partition from sector 2048 to the end, holding an ext4 labelled
/// `B2C_CACHE`. Returns the partition.
fn assert_cache_disk(disk: &Path, boot: &Boot) -> Partition {
    let table = disk::partition_table(disk)
        .unwrap()
        .unwrap_or_else(|| panic!("no partition table on {}\n{boot}", disk.display()));
    assert_eq!(table.kind, "gpt", "{table:?}\n{boot}");
    let [part] = &table.partitions[..] else {
        panic!("one partition expected: {table:?}\n{boot}");
    };
    let sectors = std::fs::metadata(disk).unwrap().len() / SECTOR;
    // A GPT keeps its last 33 sectors for the backup table; "to the end"
    // may still be rounded down to a 1 MiB boundary.
    let last_usable_end = sectors - 33;
    assert_eq!(part.start, 2048, "{table:?}\n{boot}");
    assert!(
        part.end() <= last_usable_end && part.end() + 2048 > last_usable_end,
        "the partition should reach the end of the disk ({sectors} sectors): {table:?}\n{boot}"
    );
    assert_cache_fs(disk, part.offset(), boot);
    part.clone()
}

/// An ext4 labelled `B2C_CACHE` starts `offset` bytes into `disk`;
/// returns it.
fn assert_cache_fs(disk: &Path, offset: u64, boot: &Boot) -> disk::Filesystem {
    let fs = disk::filesystem(disk, offset)
        .unwrap()
        .unwrap_or_else(|| panic!("no filesystem at byte {offset}\n{boot}"));
    assert_eq!(
        (fs.fstype.as_str(), fs.label.as_deref()),
        ("ext4", Some(LABEL)),
        "{fs:?}\n{boot}"
    );
    fs
}

#[test]
fn auto_cache_survives_reboots_and_registry_outages() {
    let mut net = start_net(&NetOptions::default());
    let disk = blank_disk("cache-auto", GIB);
    let append = busybox_append("auto");

    let first = boot_with_disk(&net, "cache-auto-1", &append, Some(&disk));
    assert_ran(&first);
    // Found by modalias; ext4 asked for by the storage phase, not shipped
    // blindly.
    let loaded = first.loaded_modules();
    assert!(
        loaded.contains(&"virtio_blk") && loaded.contains(&"ext4"),
        "{loaded:?}\n{first}"
    );
    let part = assert_cache_disk(&disk, &first);
    let pulled = net.blob_downloads(BUSYBOX_REPO);
    assert!(
        pulled > 0,
        "the first boot downloaded nothing?\n{}",
        net.registry_log()
    );
    // Formatted as boot2container does, for fscrypt volumes.
    let features = disk::ext4_features(&disk, part.offset()).unwrap();

    let second = boot_with_disk(&net, "cache-auto-2", &append, Some(&disk));
    assert_ran(&second);
    assert_eq!(
        net.blob_downloads(BUSYBOX_REPO),
        pulled,
        "the second boot downloaded blobs it had on its disk\n{second}"
    );
    assert_cache_disk(&disk, &second);

    net.stop_registry();
    // Retried for 5 s, not the default 2 minutes, before the stored image.
    let offline = format!("b2c.pull_retry=5s {append}");
    let third = boot_with_disk(&net, "cache-auto-no-registry", &offline, Some(&disk));
    assert_ran(&third);
    let digest = images::manifest_digest(BUSYBOX_IMAGE).unwrap();
    // The init names images by `sha256:` and 12 hex digits or more.
    let short = &digest[..19];
    let warnings: Vec<&str> = third.lines_containing("WARNING: ").collect();
    assert!(
        warnings.iter().any(|line| line.contains(short)),
        "no WARNING naming the stored image {short}: {warnings:#?}\n{third}"
    );

    assert!(
        features.iter().any(|f| f == "encrypt"),
        "the cache's ext4 lacks the encrypt feature: {features:?}"
    );
}

#[test]
fn reset_reformats_the_cache() {
    let net = start_net(&NetOptions::default());
    let disk = blank_disk("cache-reset", GIB);

    let first = boot_with_disk(&net, "cache-reset-1", &busybox_append("auto"), Some(&disk));
    assert_ran(&first);
    let part = assert_cache_disk(&disk, &first);
    let before = assert_cache_fs(&disk, part.offset(), &first);
    let pulled = net.blob_downloads(BUSYBOX_REPO);
    assert!(pulled > 0, "{}", net.registry_log());

    let reset = boot_with_disk(&net, "cache-reset-2", &busybox_append("reset"), Some(&disk));
    assert_ran(&reset);
    assert!(
        net.blob_downloads(BUSYBOX_REPO) > pulled,
        "after a reset the layers must be downloaded again\n{reset}"
    );
    let part = assert_cache_disk(&disk, &reset);
    let after = assert_cache_fs(&disk, part.offset(), &reset);
    assert_ne!(
        before.uuid, after.uuid,
        "reset should make a new filesystem\n{reset}"
    );
}

#[test]
fn power_cut_mid_download_is_recovered() {
    let net = start_net(&NetOptions::default());
    net.push_big_image().unwrap_or_else(|e| panic!("{e}"));
    let expected = images::big_file_sha256().unwrap_or_else(|e| panic!("{e}"));
    let disk = blank_disk("cache-power-cut", GIB);
    let append = common::big_image_on_auto_cache();

    // The init prints `pulling <image>: X / Y MB` every 2 s while layers
    // come in: the first such line is a moment in the middle of the
    // download, provided that it lasts longer than 2 s. Unhindered, it
    // takes ~3 s here under TCG: capped at 10 MB/s, it takes 6 s or more
    // on any host.
    net.limit_download_rate(Some(10_000_000)).unwrap();
    let image = format!("{REGISTRY_HTTP}/{BIG_IMAGE}");
    let mut opts = options("cache-power-cut-1", &append).with_disk(&disk);
    opts.kill_when = Some(format!("pulling {image}: "));
    let cut = boot_on(&net, &opts);
    net.limit_download_rate(None).unwrap();
    let line = cut
        .killed_on
        .as_deref()
        .unwrap_or_else(|| panic!("no download progress line to cut the power on\n{cut}"));
    let (done, total) =
        progress(line).unwrap_or_else(|| panic!("cannot read the progress in {line:?}\n{cut}"));
    assert!(
        done < total,
        "the power was cut after the download ({line:?}): this test needs it in the middle\n{cut}"
    );

    let after = boot_with_disk(&net, "cache-power-cut-2", &append, Some(&disk));
    assert_eq!(
        after.after_marker("SUM-42:"),
        // `echo $(…)` squeezes sha256sum's two spaces into one.
        [format!("{expected} {BIG_FILE}")],
        "the big file after the power cut\n{after}"
    );
    assert_verdict(&after, 0);
    assert_cache_disk(&disk, &after);
}

/// `12.3` and `62.9` from `…: 12.3 / 62.9 MB`.
fn progress(line: &str) -> Option<(f64, f64)> {
    let (_, numbers) = line.trim_end().strip_suffix(" MB")?.rsplit_once(": ")?;
    let (done, total) = numbers.split_once(" / ")?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

#[test]
fn auto_repartitions_a_disk_without_a_cache_partition() {
    let net = start_net(&NetOptions::default());
    let disk = used_disk("cache-auto-used-disk");

    // As documented, `auto` takes the first non-removable disk when no
    // partition is labelled B2C_CACHE: the DOS table and the DATA
    // filesystem on it are destroyed.
    let boot = boot_with_disk(
        &net,
        "cache-auto-used-disk",
        &busybox_append("auto"),
        Some(&disk),
    );
    assert_ran(&boot);
    assert_cache_disk(&disk, &boot);
}

/// boot2container mounts a named partition as it is, whatever its label:
/// a filesystem that mounts is never erased because it is not labelled
/// `B2C_CACHE`.
#[test]
fn a_named_partition_is_mounted_as_it_is_then_reused() {
    let net = start_net(&NetOptions::default());
    let disk = used_disk("cache-named-partition");
    let data = data_fs(&disk);
    let table = disk::partition_table(&disk).unwrap().expect("a table");
    let append = busybox_append("/dev/vda1");

    let first = boot_with_disk(&net, "cache-named-partition-1", &append, Some(&disk));
    assert_ran(&first);
    assert!(
        first
            .lines_containing("/dev/vda1 mounted as it is (ext4, labelled DATA)")
            .next()
            .is_some(),
        "no console line saying that the partition was mounted as it is\n{first}"
    );
    assert_eq!(
        disk::partition_table(&disk).unwrap().as_ref(),
        Some(&table),
        "the partition table changed\n{first}"
    );
    assert_eq!(
        data_fs(&disk),
        data,
        "the DATA filesystem was formatted or relabelled\n{first}"
    );
    let pulled = net.blob_downloads(BUSYBOX_REPO);
    assert!(pulled > 0, "{}", net.registry_log());

    // The images stored on it by the first boot are used.
    let second = boot_with_disk(&net, "cache-named-partition-2", &append, Some(&disk));
    assert_ran(&second);
    assert_eq!(
        net.blob_downloads(BUSYBOX_REPO),
        pulled,
        "the second boot downloaded blobs it had in its cache\n{second}"
    );
    assert_eq!(data_fs(&disk), data, "{second}");
}

#[test]
fn no_disk_means_a_warning_and_images_in_ram() {
    let net = start_net(&NetOptions::default());
    let mut opts = options("cache-no-disk", &busybox_append("auto"));
    // 10 s of waiting for a disk.
    opts.waits = true;
    let boot = boot_on(&net, &opts);
    assert_ran(&boot);
    let warnings: Vec<&str> = boot.lines_containing("WARNING: ").collect();
    assert!(
        warnings.iter().any(|line| {
            let line = line.to_lowercase();
            line.contains("disk") || line.contains("block device")
        }),
        "no WARNING about the missing disk: {warnings:#?}\n{boot}"
    );
}

#[test]
fn progress_lines_are_read() {
    assert_eq!(
        progress("[   9.100]: pulling 10.99.0.1:5000/b2c/big:latest: 12.3 / 62.9 MB"),
        Some((12.3, 62.9))
    );
    assert_eq!(
        progress("pulling 10.99.0.1:5000/b2c/big:latest from x"),
        None
    );
}
