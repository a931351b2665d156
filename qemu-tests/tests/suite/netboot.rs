//! End-to-end: a real netboot, as a farm's machines boot. No `-kernel`:
//! the BIOS runs the NIC's iPXE ROM (Debian's ipxe-qemu), which gets an
//! address and a boot file name from dnsmasq, fetches the iPXE script of
//! README.md over HTTP, and that script loads Debian's vmlinuz, the b2c
//! initramfs and the firmware archive from the test network's boot server
//! (`boot.example`, port 80), then boots them; the job runs to its status
//! line. The PXELINUX variant: the ROM gets `pxelinux.0` by TFTP instead,
//! which reads README.md's `pxelinux.cfg/default` and loads the same files
//! by TFTP. Only the job's options (the `b2c.*` words of the kernel line)
//! are the test's own.
//!
//! The helpers: `common/mod.rs`.

use crate::common;

use std::time::Duration;

use common::{assert_verdict, boot_on, options, run_http, start_net};
use qemu_tests::images::BUSYBOX_IMAGE;
use qemu_tests::{NetOptions, NETBOOT_SCRIPT_URL, TCG_KERNEL_ARGS};

/// The iPXE script of README.md: the indented block after `### iPXE`.
fn readme_ipxe_script() -> String {
    readme_block("\n### iPXE\n")
}

/// The PXELINUX configuration of README.md.
fn readme_pxelinux_config() -> String {
    readme_block("\n### SYSLINUX / PXELINUX\n")
}

/// The first indented block after `heading` in README.md, unindented.
fn readme_block(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(qemu_tests::workspace_dir().join("README.md")).expect("README.md");
    let section = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
        .1;
    section
        .lines()
        .skip_while(|l| !l.starts_with("    "))
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .filter_map(|l| l.strip_prefix("    "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The script with the job's options (from the first ` b2c.` of the
/// kernel line, iPXE's `kernel` or PXELINUX's `APPEND`, to its end)
/// replaced by `job`.
fn with_job(script: &str, job: &str) -> String {
    script
        .lines()
        .map(|line| {
            let kernel_line =
                line.starts_with("kernel ") || line.trim_start().starts_with("APPEND ");
            match line.split_once(" b2c.") {
                Some((before, _)) if kernel_line => format!("{before} {job}\n"),
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

#[test]
fn the_readme_ipxe_script_is_what_is_tested() {
    let script = readme_ipxe_script();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    for line in [
        "initrd http://boot.example/b2c.cpio.zst",
        "initrd http://boot.example/b2c-firmware.cpio.zst",
        "boot",
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "no {line:?} in\n{script}"
        );
    }
    let job = with_job(&script, "b2c.run=\"docker://x/y\"");
    let kernel = job.lines().find(|l| l.starts_with("kernel ")).unwrap();
    assert_eq!(
        kernel,
        "kernel http://boot.example/vmlinuz console=ttyS0,115200 b2c.run=\"docker://x/y\""
    );
}

#[test]
fn the_readme_pxelinux_config_is_what_is_tested() {
    let config = readme_pxelinux_config();
    assert!(config.starts_with("DEFAULT b2c\n"), "{config}");
    assert!(
        config
            .lines()
            .any(|l| l.trim() == "INITRD b2c.cpio.zst,b2c-firmware.cpio.zst"),
        "{config}"
    );
    let job = with_job(&config, "b2c.run=\"docker://x/y\"");
    assert!(
        job.lines()
            .any(|l| l == "    APPEND console=ttyS0,115200 b2c.run=\"docker://x/y\""),
        "{job}"
    );
}

#[test]
fn pxelinux_boots_the_readme_config_over_tftp() {
    let vmlinuz = qemu_tests::target_dir().join("kernel/vmlinuz");
    let firmware = qemu_tests::default_firmware();
    let pxelinux = std::path::Path::new("/usr/lib/PXELINUX/pxelinux.0");
    let ldlinux = std::path::Path::new("/usr/lib/syslinux/modules/bios/ldlinux.c32");
    for file in [&vmlinuz, &firmware] {
        assert!(
            file.is_file(),
            "{} is missing: run `make initramfs firmware`",
            file.display()
        );
    }
    for file in [pxelinux, ldlinux] {
        assert!(
            file.is_file(),
            "{} is missing: install pxelinux and syslinux-common (`make deps`)",
            file.display()
        );
    }
    let net = start_net(&NetOptions {
        netboot: true,
        pxelinux: true,
        ..Default::default()
    });
    // What every boot of the harness adds under TCG (qemu.rs).
    let job = format!(
        "{} {TCG_KERNEL_ARGS}",
        run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'")
    );
    let mut opts = options("netboot-pxelinux", "");
    let config = net.dir().join("pxelinux-default");
    std::fs::write(&config, with_job(&readme_pxelinux_config(), &job)).unwrap();
    for (name, file) in [
        ("pxelinux.0", pxelinux.to_path_buf()),
        ("ldlinux.c32", ldlinux.to_path_buf()),
        ("pxelinux.cfg/default", config),
        ("vmlinuz", vmlinuz),
        ("b2c.cpio.zst", opts.initramfs.clone()),
        ("b2c-firmware.cpio.zst", firmware),
    ] {
        net.serve_boot_file(name, &file)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    opts.netboot = true;
    opts.nic = "e1000".into();
    // TFTP moves a block at a time, through an emulated NIC under TCG.
    opts.timeout = Duration::from_secs(600);
    let boot = boot_on(&net, &opts);
    // PXELINUX's own words around the README's APPEND line: it was the
    // boot loader, and it loaded both archives.
    assert!(
        boot.lines_containing("]: kernel command line: ").any(|l| l
            .contains("BOOT_IMAGE=vmlinuz console=ttyS0,115200 b2c.run=")
            && l.ends_with("initrd=b2c.cpio.zst,b2c-firmware.cpio.zst")),
        "{boot}"
    );
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
}

#[test]
fn ipxe_boots_the_readme_script_over_http() {
    let vmlinuz = qemu_tests::target_dir().join("kernel/vmlinuz");
    let firmware = qemu_tests::default_firmware();
    for file in [&vmlinuz, &firmware] {
        assert!(
            file.is_file(),
            "{} is missing: run `make initramfs firmware`",
            file.display()
        );
    }
    let rom = std::path::Path::new("/usr/lib/ipxe/qemu/efi-e1000.rom");
    assert!(
        rom.is_file(),
        "{} is missing: install ipxe-qemu (`make deps`)",
        rom.display()
    );
    let net = start_net(&NetOptions {
        netboot: true,
        ..Default::default()
    });
    // What every boot of the harness adds under TCG (qemu.rs).
    let job = format!(
        "{} {TCG_KERNEL_ARGS}",
        run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'")
    );
    let mut opts = options("netboot-ipxe", "");
    let script = with_job(&readme_ipxe_script(), &job);
    let served = [
        ("boot.ipxe", None),
        ("vmlinuz", Some(vmlinuz)),
        ("b2c.cpio.zst", Some(opts.initramfs.clone())),
        ("b2c-firmware.cpio.zst", Some(firmware)),
    ];
    for (name, file) in &served {
        let url = match file {
            Some(file) => net.serve_boot_file(name, file),
            None => {
                let path = net.dir().join(name);
                std::fs::write(&path, &script).unwrap();
                net.serve_boot_file(name, &path)
            }
        }
        .unwrap_or_else(|e| panic!("{e}"));
        if *name == "boot.ipxe" {
            assert_eq!(url, NETBOOT_SCRIPT_URL);
        }
    }
    opts.netboot = true;
    // An Intel NIC: its iPXE ROM boots the machine, e1000 drives it then.
    opts.nic = "e1000".into();
    // The downloads go through an emulated NIC and the bzImage unpacks
    // itself under TCG.
    opts.timeout = Duration::from_secs(400);
    let boot = boot_on(&net, &opts);
    let log = net.boot_server_log();
    for (name, _) in &served {
        assert!(
            log.lines().any(|l| l.contains(&format!("/{name}"))),
            "the boot server never served {name}:\n{log}\n{boot}"
        );
    }
    // The kernel line is the README's: its console option came through.
    assert!(
        boot.lines_containing("]: kernel command line: ")
            .any(|l| l.contains("console=ttyS0,115200 b2c.run=")),
        "{boot}"
    );
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
}
