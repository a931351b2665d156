//! End-to-end: which kernel modules a boot loads. Drivers come from the
//! modalias of the devices present, filesystems only when the cache needs
//! them, and `b2c.modules` on request; what loads shows on the console.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

mod common;

use common::{assert_error_about, assert_verdict, boot, boot_with, run_http};
use qemu_tests::images::BUSYBOX_IMAGE;
use qemu_tests::Boot;

fn hello(name: &str, extra: &str, nic: Option<&str>) -> Boot {
    let append = format!(
        "{extra} {}",
        run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'")
    );
    boot_with(name, &append, |opts| {
        if let Some(nic) = nic {
            opts.nic = nic.into();
        }
    })
}

fn assert_loaded(boot: &Boot, wanted: &[&str], unwanted: &[&str]) {
    let loaded = boot.loaded_modules();
    for m in wanted {
        assert!(loaded.contains(m), "{m} not loaded: {loaded:?}\n{boot}");
    }
    for m in unwanted {
        assert!(!loaded.contains(m), "{m} loaded: {loaded:?}\n{boot}");
    }
}

#[test]
fn virtio_machine_gets_its_drivers_and_nothing_else() {
    let boot = hello("drivers-virtio", "", None);
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
    assert_loaded(
        &boot,
        &["virtio_pci", "virtio_net", "virtio_rng", "overlay"],
        // No such device; no cache, so no filesystem.
        &["e1000", "e1000e", "virtio_blk", "virtio_console", "ext4"],
    );
}

#[test]
fn intel_nic_is_found_by_its_pci_id() {
    // Only an e1000e NIC: the lease, and so the pull, needs its driver.
    let boot = hello("drivers-e1000e", "", Some("e1000e"));
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
    assert_loaded(&boot, &["e1000e"], &["e1000", "virtio_net", "ext4"]);
}

#[test]
fn asked_modules_load_with_their_dependencies() {
    let boot = hello("drivers-asked", "b2c.modules=ext4 b2c.log=debug", None);
    assert_verdict(&boot, 0);
    assert_loaded(&boot, &["jbd2", "mbcache", "ext4"], &[]);
    // b2c.log=debug, read after the logger started, shows each insmod.
    assert!(
        boot.lines_containing("]: insmod /lib/modules/")
            .any(|l| l.contains("/ext4.ko (")),
        "no debug line for ext4\n{boot}"
    );
}

#[test]
fn an_unknown_asked_module_is_named() {
    let boot = boot("drivers-unknown", "b2c.modules=nvidia b2c.run=docker://x/y");
    assert_error_about(&boot, &["nvidia"]);
    assert_verdict(&boot, 1);
}
