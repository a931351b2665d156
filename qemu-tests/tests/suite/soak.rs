//! Soak: 30 boots in a row on one cache disk, a third of them cut off
//! (QEMU killed: a power cut) at a random moment. Every boot that
//! completes must have run its job on verified content, and the cache's
//! disk use must stay bounded: whatever a cut boot left behind is cleaned
//! up, never piled up.
//!
//! Not part of `make test` (it took 8.5 minutes on 2 cores): `make soak`, or
//! `cargo test -p qemu-tests --test suite -- --ignored --nocapture soak::`.
//! `$B2C_SOAK_SEED` replays a run (the seed is printed).

use crate::common;

use std::time::Duration;

use common::{boot_on, options, start_net};
use qemu_tests::disk;
use qemu_tests::images::{self, BIG_FILE};
use qemu_tests::NetOptions;

const BOOTS: usize = 30;
/// The cache may grow this much past what the first complete boot left.
const SLACK: u64 = 32 << 20;

/// splitmix64: the same seed, the same kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[test]
#[ignore = "several minutes: make soak"]
fn thirty_boots_on_one_cache_with_power_cuts() {
    let seed = std::env::var("B2C_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    println!("soak: seed {seed} (B2C_SOAK_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let net = start_net(&NetOptions::default());
    net.push_big_image().unwrap_or_else(|e| panic!("{e}"));
    let expected = format!(
        "{} {BIG_FILE}",
        images::big_file_sha256().unwrap_or_else(|e| panic!("{e}"))
    );
    let dir = qemu_tests::output_dir().join("disks");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = disk::blank_disk(&dir, &common::disk_file("soak"), 2 << 30)
        .unwrap_or_else(|e| panic!("{e}"));
    let append = common::big_image_on_auto_cache();
    // Slow enough that early cuts land in the middle of the download.
    net.limit_download_rate(Some(10_000_000)).unwrap();

    let mut first_use = None;
    let mut report = Vec::new();
    for i in 0..BOOTS {
        let mut opts = options(&format!("soak-{i:02}"), &append).with_disk(&disk);
        let cut = i % 3 == 0;
        if cut {
            // Between the kernel's start and the job's end: a complete
            // boot takes 11 s or more here under TCG.
            opts.kill_after = Some(Duration::from_millis(2_000 + rng.next() % 10_000));
        }
        let boot = boot_on(&net, &opts);
        if boot.killed_on.is_some() {
            report.push(format!(
                "boot {i}: cut {}",
                boot.killed_on.as_deref().unwrap()
            ));
            continue;
        }
        assert_eq!(
            boot.after_marker("SUM-42:"),
            [expected.as_str()],
            "boot {i}: the job did not run on verified content\n{boot}"
        );
        assert_eq!(boot.status(), Some(0), "boot {i}\n{boot}");
        assert!(boot.powered_off(), "boot {i}\n{boot}");
        let table = disk::partition_table(&disk)
            .unwrap()
            .expect("a partition table");
        let used = disk::ext4_used_bytes(&disk, table.partitions[0].offset())
            .unwrap_or_else(|e| panic!("{e}"));
        let first = *first_use.get_or_insert(used);
        report.push(format!(
            "boot {i}: ran in {:.1} s, cache {} MiB used",
            boot.elapsed.as_secs_f64(),
            used >> 20
        ));
        assert!(
            used <= first + SLACK,
            "boot {i}: the cache grew from {} to {} MiB\n{}",
            first >> 20,
            used >> 20,
            report.join("\n")
        );
    }
    println!("soak (seed {seed}):\n{}", report.join("\n"));
    let completed = report.iter().filter(|l| l.contains("ran in")).count();
    assert!(completed >= BOOTS * 2 / 3, "{}", report.join("\n"));
}
