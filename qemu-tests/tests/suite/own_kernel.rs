//! End-to-end on our own kernel (`cargo xtask kernel`, from
//! kernel-config/): an initramfs without a single module boots it to the
//! status line, its drivers all built in. `make test-kernel` runs these
//! (x86_64, then arm64 with `B2C_ARCH=aarch64`) after building the
//! kernels. `make test` does not build them (it takes many minutes): it
//! runs these when they have been built, and otherwise they say they are
//! skipped.

use crate::common;

use std::path::PathBuf;

use b2c_system::devices::NO_DRIVER;
use common::{assert_verdict, boot_on, opt, run_http, start_net};
use qemu_tests::images::BUSYBOX_IMAGE;
use qemu_tests::{disk, Arch, Boot, BootOptions, DiskBus, NetOptions, REGISTRY_HTTP};

/// Boot options for our kernel with an initramfs that ships no module,
/// or `None` (the test then skips, saying why) when the kernel is not
/// built.
fn own_kernel_options(name: &str, append: &str) -> Option<(BootOptions, String)> {
    let arch = Arch::current();
    let Some((kernel, release)) = qemu_tests::own_kernel(arch) else {
        eprintln!(
            "SKIPPED: no kernel of our own at {}: build it with `make kernel-{arch}` \
             (`cargo xtask kernel --arch {arch}`), or run `make test-kernel`",
            arch.own_kernel_image().display()
        );
        return None;
    };
    // Not `options()`: Debian's kernel and the farm's initramfs, which it
    // requires, play no part here.
    let mut opts = BootOptions::new(name, append);
    opts.kernel = kernel;
    opts.initramfs =
        qemu_tests::initramfs_with_modules("none", &[]).unwrap_or_else(|e| panic!("{e}"));
    Some((opts, release))
}

/// The kernel that ran is ours, nothing was loaded (there is nothing to
/// load), and every device found its driver: they are built in, but those
/// of the PCI IDs `unbuilt` (`1022:2000`), each named on the console.
fn assert_all_built_in(boot: &Boot, release: &str, unbuilt: &[&str]) {
    assert!(
        boot.lines_containing(&format!("Linux version {release} "))
            .next()
            .is_some(),
        "not our kernel {release}\n{boot}"
    );
    assert!(
        boot.lines_containing("]: kernel modules: none for this kernel")
            .next()
            .is_some(),
        "{boot}"
    );
    assert!(
        boot.loaded_modules().is_empty(),
        "{:?}\n{boot}",
        boot.loaded_modules()
    );
    let missing: Vec<&str> = boot
        .lines()
        .filter(|l| l.contains("WARNING: ") && l.contains(NO_DRIVER))
        .collect();
    for id in unbuilt {
        assert!(
            missing.iter().any(|l| l.contains(id)),
            "{id} is not named: {missing:#?}\n{boot}"
        );
    }
    let unexpected: Vec<&&str> = missing
        .iter()
        .filter(|l| !unbuilt.iter().any(|id| l.contains(id)))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}\n{boot}");
}

#[test]
fn hello_on_our_kernel_without_modules() {
    let append = run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'");
    let Some((mut opts, release)) = own_kernel_options("own-kernel-hello", &append) else {
        return;
    };
    // A NIC our kernel has no driver for (AMD's PCnet): named on the
    // console, though with no module shipped its report is made beside
    // the boot rather than before the network.
    opts.extra_qemu_args
        .extend(["-device", "pcnet"].map(String::from));
    let boot = boot_on(&start_net(&NetOptions::default()), &opts);
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
    assert_all_built_in(&boot, &release, &["1022:2000"]);
    // Not the 16 NBD slots our kernel has built in.
    assert!(boot.has_line("]: block devices: none"), "{boot}");
    if let Some(at) = boot.status_at {
        println!(
            "our kernel {release}: status line {:.2} s after QEMU started",
            at.as_secs_f64()
        );
    }
}

/// What modules bring on Debian's kernel, built in here: an NVMe disk
/// partitioned and formatted ext4 for the cache, an fscrypt-encrypted
/// volume on it, overlayfs for the layers, QEMU's i6300ESB watchdog.
#[test]
fn cache_fscrypt_and_watchdog_on_our_kernel() {
    // 64 bytes, base64.
    let key = format!("{}AA==", "Zm9vYmFy".repeat(10) + "Zm9v");
    let append = format!(
        "b2c.cache_device=auto b2c.volume=\"secret,fscrypt_key={key}\" {}",
        opt(
            "b2c.run",
            &format!(
                "-v secret:/s --tls-verify=false docker://{REGISTRY_HTTP}/{BUSYBOX_IMAGE} \
                 sh -c 'echo SECRET-$((40+2)) > /s/f; cat /s/f'"
            )
        )
    );
    let Some((opts, release)) = own_kernel_options("own-kernel-cache", &append) else {
        return;
    };
    let dir = qemu_tests::output_dir().join("disks");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let image: PathBuf = disk::blank_disk(&dir, &common::disk_file("own-kernel-cache"), 1 << 30)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut opts = opts.with_disk_on(DiskBus::Nvme, &image);
    opts.extra_qemu_args
        .extend(["-device", "i6300esb"].map(String::from));
    let boot = boot_on(&start_net(&NetOptions::default()), &opts);
    assert!(boot.has_line("SECRET-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
    assert_all_built_in(&boot, &release, &[]);
    for line in [
        "cache: /dev/nvme0n1p1 mounted on /storage (new)",
        "volume secret: fscrypt-encrypted",
        "hardware watchdog",
    ] {
        assert!(
            boot.lines_containing(line).next().is_some(),
            "no line {line:?}\n{boot}"
        );
    }
}
