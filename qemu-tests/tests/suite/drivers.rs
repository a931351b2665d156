//! End-to-end: which kernel modules a boot loads. Drivers come from the
//! modalias of the devices present and of those plugged in later
//! (hot-plug), filesystems only when the cache needs them, and
//! `b2c.modules` on request; what loads shows on the console, and so does
//! every storage or network device that no driver took. Every disk
//! controller and NIC QEMU emulates here is booted: each test would fail
//! without its driver, and `without_their_drivers_the_devices_are_named`
//! boots them all with an initramfs that lacks them.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

use crate::common;

use std::path::{Path, PathBuf};

use b2c_system::devices::NO_DRIVER;
use common::{
    assert_error_about, assert_verdict, boot, boot_on, boot_with, options, run_http, start_net,
};
use qemu_tests::disk;
use qemu_tests::images::BUSYBOX_IMAGE;
use qemu_tests::{Boot, BootOptions, DiskBus, NetOptions};

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
            .any(|l| l.contains("/ext4.ko.zst (")),
        "no debug line for ext4\n{boot}"
    );
}

#[test]
fn an_unknown_asked_module_is_named() {
    let boot = boot("drivers-unknown", "b2c.modules=nvidia b2c.run=docker://x/y");
    assert_error_about(&boot, &["nvidia"]);
    assert_verdict(&boot, 1);
}

/// A blank 1 GiB disk image, kept in `target/qemu-tests/disks/` for a
/// post-mortem.
fn blank_disk(name: &str) -> PathBuf {
    let dir = qemu_tests::output_dir().join("disks");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    disk::blank_disk(&dir, &common::disk_file(name), 1 << 30).unwrap_or_else(|e| panic!("{e}"))
}

/// The console's lines naming a device no driver took.
fn no_driver_lines(boot: &Boot) -> Vec<&str> {
    boot.lines()
        .filter(|line| line.contains("WARNING: ") && line.contains(NO_DRIVER))
        .collect()
}

/// The disk holds what `b2c.cache_device=auto` makes of a blank disk: a
/// GPT, one partition, an ext4 labelled B2C_CACHE in it.
fn assert_cache_on(image: &Path, boot: &Boot) {
    let table = disk::partition_table(image)
        .unwrap()
        .unwrap_or_else(|| panic!("no partition table on {}\n{boot}", image.display()));
    assert_eq!(table.kind, "gpt", "{table:?}\n{boot}");
    let [part] = &table.partitions[..] else {
        panic!("one partition expected: {table:?}\n{boot}");
    };
    let fs = disk::filesystem(image, part.offset())
        .unwrap()
        .unwrap_or_else(|| panic!("no filesystem in the partition\n{boot}"));
    assert_eq!(
        (fs.fstype.as_str(), fs.label.as_deref()),
        ("ext4", Some("B2C_CACHE")),
        "{boot}"
    );
}

#[test]
fn the_cache_goes_on_every_kind_of_disk() {
    let net = start_net(&NetOptions::default());
    let append = format!(
        "b2c.cache_device=auto {}",
        run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'")
    );
    // Each controller alone with its disk, so that `auto` can only take
    // that one (a blank disk: partitioned and formatted); its driver must
    // load (the USB stick's only once the bus is enumerated, by hot-plug)
    // for the cache to be there.
    let cases = [
        (DiskBus::Nvme, "nvme", "/dev/nvme0n1p1", "nvme"),
        (DiskBus::Ahci, "ahci", "/dev/sda1", "ahci"),
        (DiskBus::Usb, "usb", "/dev/sda1", "usb_storage"),
        (DiskBus::Sd, "sd", "/dev/mmcblk0p1", "mmc_block"),
        (
            DiskBus::VirtioScsi,
            "virtio-scsi",
            "/dev/sda1",
            "virtio_scsi",
        ),
    ];
    for (bus, name, partition, driver) in cases {
        let image = if bus == DiskBus::Sd {
            // QEMU's SD card erases block by block: mke2fs's discard of a
            // whole 1 GiB card takes minutes under TCG (seconds on real
            // cards). The card holds the cache already, as it does from
            // its second boot on: found by its label, mounted as it is.
            let dir = qemu_tests::output_dir().join("disks");
            disk::dos_disk_with_ext4(
                &dir,
                &common::disk_file("drivers-cache-sd"),
                1 << 30,
                256 << 20,
                "B2C_CACHE",
            )
            .unwrap_or_else(|e| panic!("{e}"))
        } else {
            blank_disk(&format!("drivers-cache-{name}"))
        };
        let mut opts = options(&format!("drivers-cache-{name}"), &append).with_disk_on(bus, &image);
        if bus == DiskBus::Nvme {
            // Devices nothing in the initramfs drives: an AMD PCnet NIC
            // and an LSI MegaRAID controller.
            opts.extra_qemu_args
                .extend(["-device", "pcnet", "-device", "megasas"].map(String::from));
        }
        let boot = boot_on(&net, &opts);
        assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
        assert_verdict(&boot, 0);
        assert_loaded(&boot, &[driver, "ext4"], &[]);
        if bus == DiskBus::Sd {
            let mounted = format!("cache: {partition} mounted on /storage");
            assert!(boot.has_line(&mounted), "no line {mounted:?}\n{boot}");
            let fs = disk::filesystem(&image, 2048 * disk::SECTOR).unwrap();
            assert_eq!(
                fs.and_then(|f| f.label).as_deref(),
                Some("B2C_CACHE"),
                "{boot}"
            );
        } else {
            let mounted = format!("cache: {partition} mounted on /storage (new)");
            assert!(boot.has_line(&mounted), "no line {mounted:?}\n{boot}");
            assert_cache_on(&image, &boot);
        }
        let missing = no_driver_lines(&boot);
        if bus == DiskBus::Nvme {
            assert_eq!(missing.len(), 2, "{missing:#?}\n{boot}");
            for id in [
                "PCI network device 1022:2000 (class 020000)",
                "PCI storage device 1000:0060 (class 010400)",
            ] {
                assert!(
                    missing.iter().any(|l| l.contains(id)),
                    "no line for {id}: {missing:#?}\n{boot}"
                );
            }
        } else {
            assert!(missing.is_empty(), "{missing:#?}\n{boot}");
        }
    }
}

#[test]
fn dhcp_and_a_pull_over_every_emulated_nic() {
    let net = start_net(&NetOptions::default());
    let append = run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'");
    // The only NIC of the machine: without its driver, no lease, no pull.
    for (nic, driver) in [
        ("e1000", "e1000"),
        ("rtl8139", "8139cp"),
        ("vmxnet3", "vmxnet3"),
    ] {
        let mut opts = options(&format!("drivers-nic-{nic}"), &append);
        opts.nic = nic.into();
        let boot = boot_on(&net, &opts);
        assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
        assert_verdict(&boot, 0);
        assert_loaded(&boot, &[driver], &["virtio_net"]);
        assert!(
            boot.lines_containing("]: DHCP: got 10.99.0.")
                .next()
                .is_some(),
            "no lease\n{boot}"
        );
        let missing = no_driver_lines(&boot);
        assert!(missing.is_empty(), "{missing:#?}\n{boot}");
    }
}

#[test]
fn a_usb_nic_plugged_in_after_start_gets_its_driver_and_a_lease() {
    let append = run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'");
    let boot = boot_with("drivers-usb-net-hotplug", &append, |opts| {
        // No NIC at start: an xHCI controller with nothing on it. The
        // USB NIC is plugged in once b2c has loaded the drivers of the
        // devices present; the network phase waits for its link.
        opts.nic = "none".into();
        opts.extra_qemu_args
            .extend(["-device", "qemu-xhci,id=hotxhci"].map(String::from));
        opts.monitor_when.push((
            "]: kernel modules: loaded ".into(),
            "device_add usb-net,netdev=n0,bus=hotxhci.0,id=hotnic".into(),
        ));
    });
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
    let hotplugged: Vec<&str> = boot
        .lines_containing("]: kernel modules: loaded ")
        .filter(|l| l.contains(" for usb "))
        .collect();
    assert!(
        hotplugged.iter().any(|l| l.contains("cdc_ether")),
        "cdc_ether was not loaded by hot-plug: {hotplugged:#?}\n{boot}"
    );
    assert!(
        boot.lines_containing("]: DHCP: got 10.99.0.")
            .next()
            .is_some(),
        "no lease\n{boot}"
    );
}

#[test]
fn without_their_drivers_the_devices_are_named() {
    // Only what a virtio NIC needs: every disk controller and the other
    // NICs are left without a driver.
    let initramfs = qemu_tests::initramfs_with_modules(
        "virtio-net-only",
        &["virtio_pci", "virtio_net", "virtio_rng", "overlay"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let append = run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'");
    let images: Vec<(DiskBus, PathBuf)> = [
        (DiskBus::Nvme, "nvme"),
        (DiskBus::Ahci, "ahci"),
        (DiskBus::Usb, "usb"),
        (DiskBus::Sd, "sd"),
        (DiskBus::VirtioScsi, "virtio-scsi"),
    ]
    .into_iter()
    .map(|(bus, name)| (bus, blank_disk(&format!("drivers-missing-{name}"))))
    .collect();
    let boot = boot_with("drivers-missing", &append, |opts| {
        opts.initramfs = initramfs;
        for (bus, image) in &images {
            *opts = std::mem::replace(opts, BootOptions::new("", "")).with_disk_on(*bus, image);
        }
        opts.extra_qemu_args.extend(
            [
                "-device", "e1000", "-device", "rtl8139", "-device", "vmxnet3",
            ]
            .map(String::from),
        );
    });
    // The boot itself goes on, over the virtio NIC.
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
    assert!(boot.has_line("]: block devices: none"), "{boot}");
    let missing = no_driver_lines(&boot);
    for id in [
        "PCI storage device 1b36:0010 (class 010802)",
        "PCI storage device 8086:2922 (class 010601)",
        "PCI USB controller 1b36:000d (class 0c0330)",
        "PCI storage device 1b36:0007 (class 080501)",
        "virtio storage device virtio id 8",
        "PCI network device 8086:100e (class 020000)",
        "PCI network device 10ec:8139 (class 020000)",
        "PCI network device 15ad:07b0 (class 020000)",
    ] {
        assert!(
            missing.iter().any(|l| l.contains(id)),
            "no line for {id}: {missing:#?}\n{boot}"
        );
    }
    assert_eq!(missing.len(), 8, "{missing:#?}\n{boot}");
}

#[test]
fn a_driver_finds_its_firmware_in_the_appended_cpio() {
    let firmware = qemu_tests::default_firmware();
    assert!(
        firmware.is_file(),
        "{} is missing: run `cargo xtask firmware` (or `make firmware`)",
        firmware.display()
    );
    // QEMU's i82551 (an Intel 8255x NIC, driven by e100) has the PCI
    // revision (0x0f) for which e100 must load the microcode
    // e100/d102e_ucode.bin (Debian's firmware-misc-nonfree) before the
    // NIC comes up; Debian's kernel logs each firmware file loaded or
    // missing.
    const FILE: &str = "e100/d102e_ucode.bin";
    let net = start_net(&NetOptions::default());
    let append = run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'");
    let mut opts = options("drivers-firmware", &append);
    opts.nic = "i82551".into();
    opts.extra_initrds.push(firmware);
    let with = boot_on(&net, &opts);
    assert!(with.has_line("HELLO-42"), "no container output\n{with}");
    assert_verdict(&with, 0);
    assert_loaded(&with, &["e100"], &[]);
    assert!(
        with.lines_containing(&format!("firmware: direct-loading firmware {FILE}"))
            .next()
            .is_some(),
        "e100 did not load {FILE}\n{with}"
    );

    // The same boot without the firmware cpio: the kernel says so, and
    // the NIC never comes up.
    opts.name = "drivers-firmware-missing".into();
    opts.extra_initrds.clear();
    let without = boot_on(&net, &opts);
    assert!(!without.has_line("HELLO-42"), "{without}");
    assert_verdict(&without, 1);
    assert!(
        without
            .lines_containing(&format!("firmware: failed to load {FILE}"))
            .next()
            .is_some(),
        "no failed firmware load without the firmware cpio\n{without}"
    );
}

/// `archive` (an uncompressed newc cpio) without the module indexes:
/// the modules of a kernel appended as they are, without depmod.
fn without_module_indexes(archive: &Path) -> PathBuf {
    let dir = qemu_tests::output_dir().join("modules-without-index");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(archive)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    };
    sh(
        r#"cpio -idm --quiet < "$1" && rm lib/modules/*/modules.* && find lib | cpio -o -H newc --quiet > ../b2c-modules-no-index.cpio"#,
    );
    let out = dir.with_file_name("b2c-modules-no-index.cpio");
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

#[test]
fn any_kernel_with_its_modules_appended_and_none_at_all() {
    // An initramfs without any module, as for a kernel of one's own, and
    // the modules of the running kernel in an archive of their own, made
    // from its /lib/modules/VERSION by `cargo xtask modules`.
    let bare = qemu_tests::initramfs_with_modules("none", &[]).unwrap_or_else(|e| panic!("{e}"));
    let modules = qemu_tests::modules_archive().unwrap_or_else(|e| panic!("{e}"));
    let net = start_net(&NetOptions::default());
    let append = run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'");
    let mut opts = options("drivers-kernel-modules", &append);
    opts.initramfs = bare;
    opts.extra_initrds.push(modules.clone());
    let appended = boot_on(&net, &opts);
    assert!(
        appended.has_line("HELLO-42"),
        "no container output\n{appended}"
    );
    assert_verdict(&appended, 0);
    assert_loaded(&appended, &["virtio_pci", "virtio_net", "overlay"], &[]);

    // The same modules without modules.dep and friends: b2c indexes them
    // from their .modinfo at boot.
    opts.name = "drivers-kernel-modules-no-index".into();
    opts.extra_initrds = vec![without_module_indexes(&modules)];
    let indexed = boot_on(&net, &opts);
    assert!(
        indexed.has_line("HELLO-42"),
        "no container output\n{indexed}"
    );
    assert_verdict(&indexed, 0);
    assert_loaded(&indexed, &["virtio_pci", "virtio_net", "overlay"], &[]);
    assert!(
        indexed
            .lines_containing("has no modules.dep: indexed its")
            .next()
            .is_some(),
        "no line about the index made at boot\n{indexed}"
    );

    // No module at all: the boot says so, names the NIC no driver took,
    // and ends cleanly without a network.
    opts.name = "drivers-kernel-no-modules".into();
    opts.extra_initrds.clear();
    // 10 s of waiting for a network link.
    opts.waits = true;
    let none = boot_on(&net, &opts);
    assert!(
        none.lines_containing("]: kernel modules: none for this kernel")
            .next()
            .is_some(),
        "{none}"
    );
    let missing = no_driver_lines(&none);
    assert!(
        missing
            .iter()
            .any(|l| l.contains("PCI network device 1af4:1000")),
        "{missing:#?}\n{none}"
    );
    assert_error_about(&none, &["network", "link"]);
    assert_verdict(&none, 1);
}
