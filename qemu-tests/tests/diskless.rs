//! End-to-end: machines without a disk. A read-only NFS export of an
//! image store that podman wrote (`b2c.filesystem=…,type=nfs` +
//! `b2c.storage=additionalimagestores=…`): its images run by ID with no
//! download at all (read from the registry's access log), even when the
//! NFS server comes up after the boot asked for it.
//!
//! The NFS server is NFS-Ganesha (this host's kernel has no nfsd): see
//! `qemu-tests/src/nfs.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_verdict, boot_on, opt, options, start_net};
use qemu_tests::images::BUSYBOX_IMAGE;
use qemu_tests::NetOptions;

const BUSYBOX_REPO: &str = "b2c/busybox";
/// The gateway by a name the test network's DNS (dnsmasq) resolves: the
/// guest resolves it as mount.nfs would.
const NFS_HOST: &str = "registry.test";

/// Waits until the console log at `path` has a line containing `text`.
fn wait_for_line(path: &Path, text: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::fs::read_to_string(path).is_ok_and(|log| log.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The diskless line of CI farms, with the store on NFSv4.2 (the server
/// named, resolved by the boot's DNS): the service
/// and the job name their image by ID (full, and short for the job), the
/// boot waits for the NFS server, which starts only once b2c said it
/// cannot reach it yet, and nothing is downloaded.
#[test]
fn images_run_by_id_from_a_late_nfs_store_without_download() {
    let net = start_net(&NetOptions::default());
    let store = net
        .podman_store(&[BUSYBOX_IMAGE])
        .unwrap_or_else(|e| panic!("{e}"));
    let id = net
        .podman_image_id(BUSYBOX_IMAGE)
        .unwrap_or_else(|e| panic!("{e}"));
    // podman's own pull is in the log: count from here on.
    let before = net.blob_downloads(BUSYBOX_REPO);
    let append = [
        format!(
            "b2c.filesystem=publicimgstore,type=nfs,src={NFS_HOST}:/imagestore/public,opts=ro|vers=4.2|nolock"
        ),
        opt("b2c.storage", "additionalimagestores=publicimgstore"),
        opt(
            "b2c.run_service",
            &format!("--privileged --tls-verify=false --pid=host {id} sh -c 'echo service-up; sleep 600'"),
        ),
        opt(
            "b2c.run",
            &format!("--tls-verify=false {} sh -c 'echo DISKLESS-$((40+2))'", &id[..12]),
        ),
    ]
    .join(" ");
    let opts = options("diskless-nfs", &append);
    let log = qemu_tests::output_dir()
        .join("logs")
        .join(format!("{}.log", opts.name));
    let boot = std::thread::scope(|s| {
        let late = s.spawn(|| {
            // The server is started once the boot waits for it.
            let waiting = wait_for_line(&log, "cannot mount", Duration::from_secs(240));
            (
                waiting,
                waiting.then(|| net.start_nfs(&store, "/imagestore/public")),
            )
        });
        let boot = boot_on(&net, &opts);
        (boot, late.join().unwrap())
    });
    let (boot, (waited, server)) = boot;
    let _server = match server {
        Some(Ok(server)) => Some(server),
        Some(Err(e)) => panic!("{e}\n{boot}"),
        None => None,
    };
    assert!(waited, "b2c never said it waits for the NFS server\n{boot}");
    assert_verdict(&boot, 0);
    assert!(boot.has_line("DISKLESS-42"), "{boot}");
    assert!(
        boot.lines_containing("WARNING: b2c.filesystem=publicimgstore: cannot mount")
            .count()
            >= 1,
        "{boot}"
    );
    for line in [
        "image store publicimgstore: registry.test:/imagestore/public mounted on",
        "from image store publicimgstore: 1 layers, nothing downloaded",
    ] {
        assert!(
            boot.lines_containing(line).count() >= 1,
            "no {line:?}\n{boot}"
        );
    }
    assert_eq!(
        net.blob_downloads(BUSYBOX_REPO) - before,
        0,
        "blobs were downloaded\n{boot}"
    );
    assert!(boot.loaded_modules().contains(&"nfsv4"), "{boot}");
}
