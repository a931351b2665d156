//! End-to-end: `b2c.minio` and `b2c.volume`, against a real S3 server
//! (s3s-fs, checking SigV4, on 10.99.0.1:9000 in the test namespace; each
//! object is a plain file under [`TestNet::s3_bucket`], so what the job
//! pushed is compared byte for byte).
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{assert_verdict, boot_on, img, opt, options, start_net};
use qemu_tests::disk::{self, SECTOR};
use qemu_tests::{
    Boot, BootOptions, NetOptions, TestNet, FILE_SERVER, S3_ACCESS_KEY, S3_SECRET_KEY, S3_SERVER,
};

const GIB: u64 = 1 << 30;

fn minio(secret: &str) -> String {
    format!("b2c.minio=\"gateway,http://{S3_SERVER},{S3_ACCESS_KEY},{secret}\"")
}

fn net_with_s3() -> TestNet {
    let mut net = start_net(&NetOptions::default());
    net.start_s3().unwrap_or_else(|e| panic!("s3: {e}"));
    net
}

/// `b2c.run` of the busybox image with `-v VOLUME:DEST` and `command`.
fn run_with(volume: &str, command: &str) -> String {
    opt("b2c.run", &format!("-v {volume} {} {command}", img()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// Files of a bucket (s3s-fs's hidden sidecars left out), sorted.
fn objects(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The secret reaches the console only in the kernel's own echo of its
/// command line (`quiet`/`loglevel` are the farm's business); b2c's echo
/// shows `***`.
fn assert_no_secret(boot: &Boot, secret: &str) {
    let leaks: Vec<&str> = boot
        .lines()
        .filter(|l| l.contains(secret))
        .filter(|l| !l.contains("] Command line:") && !l.contains("] Kernel command line:"))
        .collect();
    assert!(
        leaks.is_empty(),
        "the secret key is on the console: {leaks:#?}\n{boot}"
    );
    let echo = boot
        .lines()
        .find(|l| l.contains("kernel command line:"))
        .unwrap_or_else(|| panic!("no command line echo\n{boot}"));
    assert!(echo.contains(&format!("{S3_SERVER},***,***")), "{echo}");
}

/// The shape of a real CI-tron line: inputs pulled at pipeline_start,
/// results pushed as they change (a file written mid-job is in the bucket
/// while the job still runs), overwrite + remove + excludes, deleted at
/// the end.
#[test]
fn the_real_line_pulls_inputs_pushes_changes_and_results_then_expires() {
    let net = net_with_s3();
    let bucket = net.s3_bucket("job-4242");
    std::fs::write(bucket.join("input.txt"), "from the farm\n").unwrap();
    std::fs::write(bucket.join("stale.txt"), "old\n").unwrap();
    std::fs::create_dir_all(bucket.join("install")).unwrap();
    std::fs::write(bucket.join("install/old"), "kept: excluded\n").unwrap();
    let go = format!("http://{FILE_SERVER}/go");
    // The job: reads its input, writes results (some excluded), deletes
    // an input, writes mid.txt, then waits until the test saw mid.txt in
    // the bucket.
    let script = format!(
        "sh -c 'cat /results/input.txt; echo result-$((40+2)) > /results/out.txt; \
         mkdir -p /results/install; echo x > /results/install/bin; echo c > /results/a.shader_cache; \
         rm /results/stale.txt; echo mid-$((40+2)) > /results/mid.txt; \
         until wget -q -O /dev/null {go}; do sleep 1; done; echo job done'"
    );
    let append = format!(
        "{} b2c.volume=\"job-4242-results,mirror=gateway/job-4242,pull_on=pipeline_start,\
         push_on=changes,overwrite,exclude=install/*,exclude=*.shader_cache,remove,\
         expiration=pipeline_end,preserve\" {}",
        minio(S3_SECRET_KEY),
        run_with("job-4242-results:/results", &script)
    );
    let mut opts = options("volumes-real-line", &append);
    opts.timeout = Duration::from_secs(240);
    let over = std::sync::atomic::AtomicBool::new(false);
    let boot = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            // Until the guest pushed mid.txt, or the boot is over.
            let mid = bucket.join("mid.txt");
            while !over.load(std::sync::atomic::Ordering::Relaxed) {
                if mid.exists() {
                    net.serve_file("go", "go").unwrap();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        });
        let boot = boot_on(&net, &opts);
        over.store(true, std::sync::atomic::Ordering::Relaxed);
        (boot, watcher.join().unwrap())
    });
    let (boot, mid_seen) = boot;
    assert!(
        mid_seen,
        "mid.txt never reached the bucket while the job ran\n{boot}"
    );
    assert!(
        boot.has_line("from the farm"),
        "the input was not pulled\n{boot}"
    );
    assert!(boot.has_line("job done"), "{boot}");
    assert_verdict(&boot, 0);
    assert_eq!(read(&bucket.join("out.txt")), "result-42\n", "{boot}");
    assert_eq!(read(&bucket.join("mid.txt")), "mid-42\n");
    assert_eq!(
        objects(&bucket),
        ["input.txt", "install/old", "mid.txt", "out.txt"],
        "stale.txt removed, excluded files neither pushed nor removed\n{boot}"
    );
    assert!(
        boot.lines_containing("volume job-4242-results: pulled from gateway/job-4242: 2 files")
            .next()
            .is_some(),
        "{boot}"
    );
    assert!(
        boot.lines_containing("volume job-4242-results: pushed to gateway/job-4242:")
            .next()
            .is_some(),
        "{boot}"
    );
    assert!(
        boot.has_line("volume job-4242-results: deleted (expiration=pipeline_end)"),
        "{boot}"
    );
    assert!(
        boot.lines_containing("not supported yet").next().is_none(),
        "{boot}"
    );
    assert_no_secret(&boot, S3_SECRET_KEY);
}

fn disk_path(name: &str) -> PathBuf {
    let dir = qemu_tests::output_dir().join("disks");
    std::fs::create_dir_all(&dir).unwrap();
    disk::blank_disk(&dir, &common::disk_file(name), GIB).unwrap()
}

/// The cache partition of a disk that `auto` formatted.
fn cache_offset(disk: &Path) -> u64 {
    let table = disk::partition_table(disk)
        .unwrap()
        .expect("a partition table");
    table.partitions[0].start * SECTOR
}

/// Wrong keys: a clear error, the data kept. Server down at the final
/// push: retries, an ERROR, the volume kept despite its expiration. The
/// next boot pushes it.
#[test]
fn nothing_is_lost_when_the_final_push_fails() {
    let mut net = net_with_s3();
    let bucket = net.s3_bucket("job-7");
    let disk = disk_path("volumes-owed");
    let volume = "b2c.volume=res,mirror=gateway/job-7,push_on=pipeline_end,expiration=pipeline_end";
    let job = run_with(
        "res:/res",
        "sh -c 'echo result-$((40+2)) > /res/result.txt'",
    );
    let boot_with = |net: &TestNet, name: &str, secret: &str, job: &str| {
        let append = format!("b2c.cache_device=auto {} {volume} {job}", minio(secret));
        boot_on(net, &options(name, &append).with_disk(&disk))
    };

    let wrong = "wrong-secret-5150";
    let first = boot_with(&net, "volumes-owed-1", wrong, &job);
    assert_verdict(&first, 1);
    common::assert_error_about(&first, &["volume res: push to gateway/job-7"]);
    common::assert_error_about(&first, &["403"]);
    assert!(
        first
            .lines_containing("kept despite expiration=pipeline_end")
            .next()
            .is_some(),
        "{first}"
    );
    assert_no_secret(&first, wrong);
    assert!(objects(&bucket).is_empty());
    let offset = cache_offset(&disk);
    let kept = disk::debugfs(&disk, offset, "cat /volumes/res/result.txt").unwrap();
    assert_eq!(kept, "result-42\n", "the volume is kept on the cache");

    net.stop_s3();
    // Its pushes retry for half a minute: a boot that mostly waits.
    let second = boot_on(
        &net,
        &BootOptions {
            waits: true,
            ..options(
                "volumes-owed-2",
                &format!(
                    "b2c.cache_device=auto {} {volume} {}",
                    minio(S3_SECRET_KEY),
                    "b2c.run=\"--tls-verify=false docker://10.99.0.1:5000/b2c/busybox:latest true\"",
                ),
            )
            .with_disk(&disk)
        },
    );
    assert_verdict(&second, 1);
    assert!(
        second.lines_containing("retrying").next().is_some(),
        "the push was retried\n{second}"
    );
    common::assert_error_about(&second, &["volume res: push to gateway/job-7"]);

    net.start_s3().unwrap();
    let third = boot_with(
        &net,
        "volumes-owed-3",
        S3_SECRET_KEY,
        "b2c.run=\"--tls-verify=false docker://10.99.0.1:5000/b2c/busybox:latest true\"",
    );
    assert_verdict(&third, 0);
    assert!(
        third.has_line("volume res: pushing what an earlier boot could not push"),
        "{third}"
    );
    assert_eq!(read(&bucket.join("result.txt")), "result-42\n", "{third}");
    assert!(
        third.has_line("volume res: deleted (expiration=pipeline_end)"),
        "{third}"
    );
}

/// An fscrypt volume: names and contents unreadable on the disk without
/// the key, readable by the next boot that has it.
#[test]
fn an_fscrypt_volume_is_encrypted_at_rest_and_readable_with_its_key() {
    let net = net_with_s3();
    let bucket = net.s3_bucket("traces");
    std::fs::write(bucket.join("trace-input.bin"), "TRACE-INPUT-CONTENT\n").unwrap();
    let disk = disk_path("volumes-fscrypt");
    let key: String = {
        // 64 bytes, base64.
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s: String = (0..84).map(|i| T[(i * 7 + 3) % 64] as char).collect();
        s.push_str("AA==");
        s
    };
    let volume = format!(
        "b2c.volume=\"traces,mirror=gateway/traces,pull_on=pipeline_start,fscrypt_key={key}\""
    );
    let boot = |name: &str, job: &str| {
        let append = format!(
            "b2c.cache_device=auto {} {volume} {job}",
            minio(S3_SECRET_KEY)
        );
        boot_on(&net, &options(name, &append).with_disk(&disk))
    };
    let first = boot(
        "volumes-fscrypt-1",
        &run_with(
            "traces:/t",
            "sh -c 'cat /t/trace-input.bin; echo SECRET-$((40+2))-RESULT > /t/secret-result.txt'",
        ),
    );
    assert_verdict(&first, 0);
    assert!(first.has_line("TRACE-INPUT-CONTENT"), "{first}");
    assert!(
        first
            .lines_containing("volume traces: fscrypt-encrypted")
            .next()
            .is_some(),
        "{first}"
    );
    let offset = cache_offset(&disk);
    let listing = disk::debugfs(&disk, offset, "ls -l /volumes/traces").unwrap();
    assert!(
        !listing.contains("secret-result") && !listing.contains("trace-input"),
        "names are encrypted on the disk: {listing}"
    );
    for plain in ["SECRET-42-RESULT", "TRACE-INPUT-CONTENT"] {
        let found = std::process::Command::new("grep")
            .args(["-aqF", plain])
            .arg(&disk)
            .status()
            .unwrap();
        assert_eq!(found.code(), Some(1), "{plain} is in clear on the disk");
    }
    let second = boot(
        "volumes-fscrypt-2",
        &run_with("traces:/t", "cat /t/secret-result.txt"),
    );
    assert_verdict(&second, 0);
    assert!(second.has_line("SECRET-42-RESULT"), "{second}");
}

/// b2c's peak resident memory over a whole boot that pushes a 200 MiB
/// file: about 6 MiB measured (the image pull, then 4 parts of 16 MiB in
/// flight, each read from the file 256 KiB at a time). Holding the file
/// would take 200 MiB, holding the 4 parts in flight whole 64 MiB: the
/// bound sits well under both, with room for allocator and runtime
/// differences.
const HWM_BOUND_KIB: u64 = 32 << 10;

/// `sha256sum`'s hex digest of a file of the host.
fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf).unwrap() {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    hex::encode(hasher.finalize())
}

/// What the guest's `sha256sum … | sed s/^/sum-$((40+2)):/` printed: file
/// name (without its directory) → digest.
fn guest_sums(boot: &Boot) -> std::collections::BTreeMap<String, String> {
    boot.after_marker("sum-42:")
        .into_iter()
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let digest = words.next()?.to_string();
            let name = words.next()?.rsplit('/').next()?.to_string();
            Some((name, digest))
        })
        .collect()
}

/// A machine cut off in the middle of its final push, then booted again
/// on the same disk: that boot pushes the owed volume before anything
/// else, and the bucket ends byte-identical to what the job wrote. The
/// test holds the push in its middle by freezing the S3 server once the
/// first objects have arrived (however fast this host is), and QEMU is
/// killed at the push's progress line, which comes while it waits.
#[test]
fn a_push_cut_off_by_a_power_cut_is_completed_by_the_next_boot() {
    const FILES: usize = 48;
    let net = net_with_s3();
    let bucket = net.s3_bucket("job-9");
    let disk = disk_path("volumes-cut");
    let append = |job: &str| {
        format!(
            "b2c.cache_device=auto {} b2c.volume=res,mirror=gateway/job-9,push_on=pipeline_end {job}",
            minio(S3_SECRET_KEY)
        )
    };
    // Random content: a write that never reached the disk cannot pass
    // for it. The checksums go to the console for the comparison.
    let job = run_with(
        "res:/res",
        &format!(
            "sh -c 'cd /res && for i in $(seq {FILES}); do head -c 1048576 /dev/urandom > r$i.bin; \
             done && sha256sum r*.bin | sed s/^/sum-$((40+2)):/'"
        ),
    );
    let mut opts = options("volumes-cut-1", &append(&job)).with_disk(&disk);
    opts.timeout = Duration::from_secs(300);
    opts.kill_when = Some("volume res: pushing to gateway/job-9:".into());
    let over = std::sync::atomic::AtomicBool::new(false);
    let (first, paused_at) = std::thread::scope(|scope| {
        let freezer = scope.spawn(|| {
            while !over.load(std::sync::atomic::Ordering::Relaxed) {
                let arrived = objects(&bucket).len();
                if arrived > 0 {
                    net.pause_s3(true).unwrap();
                    return Some(arrived);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        let boot = boot_on(&net, &opts);
        over.store(true, std::sync::atomic::Ordering::Relaxed);
        (boot, freezer.join().unwrap())
    });
    let at_the_cut = objects(&bucket).len();
    net.pause_s3(false).unwrap();
    assert!(paused_at.is_some(), "no object ever arrived\n{first}");
    assert!(
        first.killed_on.is_some(),
        "QEMU was not cut off in the middle of the push\n{first}"
    );
    assert!(
        at_the_cut < FILES,
        "the push was over before the cut: {at_the_cut} objects\n{first}"
    );
    let written = guest_sums(&first);
    assert_eq!(written.len(), FILES, "the job's checksums\n{first}");

    let second = boot_on(
        &net,
        &options("volumes-cut-2", &append(&run_with("res:/res", "true"))).with_disk(&disk),
    );
    assert_verdict(&second, 0);
    let position = |text: &str| {
        second
            .lines()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no line with {text:?}\n{second}"))
    };
    assert!(
        position("volume res: pushing what an earlier boot could not push")
            < position("running run-0"),
        "the owed push comes before the job\n{second}"
    );
    assert_eq!(
        objects(&bucket),
        written.keys().cloned().collect::<Vec<_>>(),
        "{second}"
    );
    for (name, digest) in &written {
        assert_eq!(
            &sha256_file(&bucket.join(name)),
            digest,
            "{name} in the bucket is not what the job wrote\n{second}"
        );
    }
    println!(
        "cut after {at_the_cut} of {FILES} objects ({} when the server was frozen)",
        paused_at.unwrap()
    );
}

/// A 200 MiB result pushed with bounded memory: in parts, each streamed
/// from the file. After the push (at container_end), a post container in
/// b2c's PID namespace reads PID 1's peak resident memory (VmHWM); the
/// object in the bucket has the file's size and checksum.
#[test]
fn a_200_mib_file_is_pushed_with_bounded_memory() {
    const SIZE: u64 = 200 << 20;
    let net = net_with_s3();
    let bucket = net.s3_bucket("big");
    let disk = disk_path("volumes-big");
    let job = run_with(
        "res:/res",
        &format!(
            "sh -c 'head -c {SIZE} /dev/urandom > /res/big.bin && sha256sum /res/big.bin | sed s/^/sum-$((40+2)):/'"
        ),
    );
    let post = opt(
        "b2c.post_container",
        &format!(
            "--pid=host {} sh -c 'grep VmHWM /proc/1/status | sed s/^/hwm-$((40+2)):/'",
            img()
        ),
    );
    let append = format!(
        "b2c.cache_device=auto {} b2c.volume=res,mirror=gateway/big,push_on=container_end {job} {post}",
        minio(S3_SECRET_KEY)
    );
    let mut opts = options("volumes-big", &append).with_disk(&disk);
    opts.timeout = Duration::from_secs(400);
    let boot = boot_on(&net, &opts);
    assert_verdict(&boot, 0);
    let pushed = boot
        .lines_containing("volume res: pushed to gateway/big: 1 files, 200.0 MiB")
        .next()
        .unwrap_or_else(|| panic!("no push of the file\n{boot}"));
    let written = guest_sums(&boot);
    let big = bucket.join("big.bin");
    assert_eq!(
        std::fs::metadata(&big).map(|m| m.len()).ok(),
        Some(SIZE),
        "{boot}"
    );
    assert_eq!(Some(&sha256_file(&big)), written.get("big.bin"), "{boot}");
    let hwm_kib: u64 = boot
        .after_marker("hwm-42:")
        .first()
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM line\n{boot}"));
    println!("{pushed}\nb2c's VmHWM: {hwm_kib} kB");
    assert!(
        hwm_kib < HWM_BOUND_KIB,
        "b2c's peak resident memory is {hwm_kib} kB\n{boot}"
    );
}
