//! End-to-end: machines without a disk. A read-only NFS export of an
//! image store that podman wrote (`b2c.filesystem=…,type=nfs` +
//! `b2c.storage=additionalimagestores=…`): its images run by ID with no
//! download at all (read from the registry's access log), even when the
//! NFS server comes up after the boot asked for it. A cache and a swap on
//! network block devices (`b2c.nbd`), whose server restarts mid-job.
//!
//! The NFS server is NFS-Ganesha (this host's kernel has no nfsd): see
//! `qemu-tests/src/nfs.rs`.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_verdict, boot_on, opt, options, start_net};
use qemu_tests::images::{BUSYBOX_IMAGE, LAYERS_IMAGE};
use qemu_tests::NetOptions;

const BUSYBOX_REPO: &str = "b2c/busybox";
const LAYERS_REPO: &str = "b2c/layers";
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
/// named, resolved by the boot's DNS), and the export mounted over NFSv3
/// too, as a volume: the service
/// and the job name their image by ID (full, and short for the job), the
/// boot waits for the NFS server, which starts only once b2c said it
/// cannot reach it yet, and nothing is downloaded.
#[test]
fn images_run_by_id_from_a_late_nfs_store_without_download() {
    let net = start_net(&NetOptions::default());
    let store = net
        .podman_store(&[BUSYBOX_IMAGE, LAYERS_IMAGE])
        .unwrap_or_else(|e| panic!("{e}"));
    let id = net
        .podman_image_id(BUSYBOX_IMAGE)
        .unwrap_or_else(|e| panic!("{e}"));
    // podman's own pull is in the log: count from here on.
    let before = net.blob_downloads(BUSYBOX_REPO);
    let before_layers = net.blob_downloads(LAYERS_REPO);
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
        // The same export over NFSv3 (the kernel asks the server's
        // rpcbind for the ports; nolock added by b2c), as a volume.
        format!(
            "b2c.filesystem=v3export,type=nfs,src={NFS_HOST}:{},opts=vers=3",
            store.display()
        ),
        "b2c.volume=v3vol,filesystem=v3export".to_string(),
        opt(
            "b2c.run",
            &format!(
                "--tls-verify=false -v v3vol:/v3 {} sh -c 'echo V3-$((40+2)) $(ls /v3)'",
                &id[..12]
            ),
        ),
        // By name, as podman recorded it: layers with whiteouts and an
        // opaque directory, read over NFS.
        opt(
            "b2c.post_container",
            &format!(
                "--tls-verify=false docker://{}/{LAYERS_IMAGE} sh -c 'echo LAYERS-$((40+2)) $(ls /data/dir) $(ls /data)'",
                qemu_tests::REGISTRY_HTTP
            ),
        ),
    ]
    .join(" ");
    let opts = options("diskless-nfs", &append);
    let log = qemu_tests::output_dir()
        .join("logs")
        .join(format!("{}.log", opts.name));
    let boot = std::thread::scope(|s| {
        let late = s.spawn(|| {
            // The server is started once the boot waits for it, a few
            // attempts later.
            let waiting = wait_for_line(&log, "cannot mount", Duration::from_secs(240));
            std::thread::sleep(Duration::from_secs(5));
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
    assert_eq!(
        net.blob_downloads(LAYERS_REPO) - before_layers,
        0,
        "blobs were downloaded\n{boot}"
    );
    // Whiteouts (character devices 0/0) cross NFS: gone.txt and olddir
    // are hidden. Extended attributes do not: the opaque directory shows
    // the lower layers' files too (the README says so).
    assert_eq!(
        boot.after_marker("LAYERS-42"),
        [" new.txt old.txt sub dir hard keep.txt link replaced.txt"],
        "{boot}"
    );
    assert!(boot.loaded_modules().contains(&"nfsv4"), "{boot}");
    assert!(boot.loaded_modules().contains(&"nfsv3"), "{boot}");
    assert!(
        boot.lines_containing("b2c.filesystem=v3export: ")
            .any(|l| l.ends_with("(NFSv3)")),
        "{boot}"
    );
    let v3 = boot.after_marker("V3-42");
    assert!(
        v3.len() == 1 && v3[0].contains(" overlay-images ") && v3[0].contains(" overlay-layers"),
        "the export over NFSv3: {v3:?}\n{boot}"
    );
}

/// A cache and a swap on network block devices (Debian's nbd-server, one
/// per port as CI farms run it; the cache with two connections), the
/// swap's server up only once b2c said it cannot reach it, and the
/// cache's server restarted while the job writes to it: the kernel holds
/// the I/O, b2c connects again and hands the new socket over, the job
/// finishes.
#[test]
fn cache_and_swap_on_nbd_survive_a_server_restart() {
    let net = start_net(&NetOptions::default());
    let cache = net.dir().join("cache.img");
    let swap = net.dir().join("swap.img");
    for (file, size) in [(&cache, 2u64 << 30), (&swap, 256 << 20)] {
        std::fs::File::create(file)
            .and_then(|f| f.set_len(size))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    let cache_server = net
        .start_nbd(40123, "cache", &cache)
        .unwrap_or_else(|e| panic!("{e}"));

    let job = "grep -q /dev/nbd1 /proc/swaps && echo SWAP-$((40+2)); \
               echo WRITING-$((40+2)); i=0; while [ $i -lt 20 ]; do \
               dd if=/dev/urandom of=/tmp/f$i bs=64k count=16 conv=fsync 2>/dev/null || exit 3; \
               i=$((i+1)); sleep 1; done; cat /tmp/f* | wc -c; echo NBD-$((40+2))";
    let append = [
        "b2c.nbd=/dev/nbd0,host=registry.test,port=40123,connections=2,name=cache".to_string(),
        "b2c.nbd=/dev/nbd1,host=10.99.0.1,port=40124,name=swap".to_string(),
        "b2c.cache_device=/dev/nbd0 b2c.swap=/dev/nbd1".to_string(),
        opt(
            "b2c.run",
            &format!(
                "--tls-verify=false docker://{}/{BUSYBOX_IMAGE} sh -c '{job}'",
                qemu_tests::REGISTRY_HTTP
            ),
        ),
    ]
    .join(" ");
    let mut opts = options("diskless-nbd", &append);
    // A job of 20 one-second sleeps, a server away for 5 s.
    opts.waits = true;
    let log = qemu_tests::output_dir()
        .join("logs")
        .join(format!("{}.log", opts.name));
    let (boot, restarted) = std::thread::scope(|s| {
        let restart = s.spawn(|| {
            let mut server = cache_server;
            // The swap's server comes up once the boot waits for it.
            if !wait_for_line(
                &log,
                "b2c.nbd=/dev/nbd1: cannot reach",
                Duration::from_secs(240),
            ) {
                return (server, None, Ok(false));
            }
            let swap_server = match net.start_nbd(40124, "swap", &swap) {
                Ok(started) => started,
                Err(e) => return (server, None, Err(e)),
            };
            if !wait_for_line(&log, "WRITING-42", Duration::from_secs(300)) {
                return (server, Some(swap_server), Ok(false));
            }
            std::thread::sleep(Duration::from_secs(2));
            server.stop();
            // The gateway is away for a while.
            std::thread::sleep(Duration::from_secs(5));
            let started = server.restart(&net).map(|()| true);
            (server, Some(swap_server), started)
        });
        let boot = boot_on(&net, &opts);
        (boot, restart.join().unwrap())
    });
    let (_server, _swap_server, restarted) = restarted;
    assert!(
        restarted.unwrap_or_else(|e| panic!("{e}\n{boot}")),
        "the job never started writing\n{boot}"
    );
    assert_verdict(&boot, 0);
    for marker in ["SWAP-42", "NBD-42"] {
        assert!(boot.has_line(marker), "no {marker}\n{boot}");
    }
    for line in [
        "b2c.nbd=/dev/nbd0: attached to registry.test:40123 export cache",
        "b2c.nbd=/dev/nbd1: attached to 10.99.0.1:40124 export swap",
        "cache: /dev/nbd0p1 mounted on /storage",
        "b2c.nbd=/dev/nbd0: a connection to registry.test:40123 died",
        "b2c.nbd=/dev/nbd0: reconnected to registry.test:40123",
    ] {
        assert!(
            boot.lines_containing(line).count() >= 1,
            "no {line:?}\n{boot}"
        );
    }
    assert!(boot.loaded_modules().contains(&"nbd"), "{boot}");
}

/// An image store whose server never answers (`retry=0`: one attempt, as
/// mount.nfs takes it): an ERROR naming the options, the container whose
/// image is an ID fails, and one whose image has a name is pulled.
#[test]
fn a_store_that_cannot_mount_is_an_error_and_names_are_pulled() {
    let net = start_net(&NetOptions::default());
    let id = "0123456789abcdef".repeat(4);
    let append = [
        format!("b2c.filesystem=deadstore,type=nfs4,src={NFS_HOST}:/nothing,opts=ro|retry=0"),
        opt("b2c.storage", "additionalimagestores=deadstore"),
        opt("b2c.run", &format!("{id} true")),
        opt(
            "b2c.post_container",
            &format!(
                "--tls-verify=false docker://{}/{BUSYBOX_IMAGE} sh -c 'echo PULLED-$((40+2))'",
                qemu_tests::REGISTRY_HTTP
            ),
        ),
    ]
    .join(" ");
    let boot = boot_on(&net, &options("diskless-nfs-down", &append));
    assert_verdict(&boot, 1);
    assert!(boot.has_line("PULLED-42"), "{boot}");
    let errors = boot.error_lines();
    for text in [
        "ERROR: b2c.storage: additionalimagestores=deadstore: b2c.filesystem=deadstore: cannot \
         mount registry.test:/nothing (gave up after 1 attempt in ",
        "s): ECONNREFUSED",
        format!("ERROR: cannot pull image ID {id} is in none of the image stores (deadstore)")
            .as_str(),
    ] {
        assert!(
            errors.iter().any(|l| l.contains(text)),
            "no ERROR with {text:?}: {errors:#?}\n{boot}"
        );
    }
}
