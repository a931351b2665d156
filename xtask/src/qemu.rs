//! `cargo xtask qemu -- ARGS`: boot the initramfs under QEMU on the private
//! test network of the qemu-tests harness (DHCP, DNS, NTP and a registry
//! with the test images at 10.99.0.1:5000), with ARGS appended to the
//! kernel command line. The console is shown as it comes. `--arch aarch64`
//! boots the arm64 kernel and initramfs with qemu-system-aarch64;
//! `--kernel own` our kernel (`cargo xtask kernel`) instead of Debian's.

use std::time::Duration;

use qemu_tests::{Arch, BootOptions, TestNet};

use crate::Result;

pub fn run(args: &[String]) -> Result<()> {
    let ours: Vec<&String> = args.iter().take_while(|a| *a != "--").collect();
    let mut disks = Vec::new();
    let mut big = false;
    let mut arch = Arch::current();
    let mut kernel = None;
    let mut initramfs = None;
    let mut it = ours.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--big-image" => big = true,
            "--arch" => arch = Arch::parse(it.next().ok_or("--arch needs a value")?)?,
            "--kernel" => kernel = Some(it.next().ok_or("--kernel needs own, debian or a file")?),
            "--initramfs" => initramfs = Some(it.next().ok_or("--initramfs needs a file")?),
            "--disk" => disks.push(
                it.next()
                    .ok_or("--disk needs a disk image file")?
                    .to_string(),
            ),
            other => return Err(format!("qemu: unknown option {other} (see `cargo xtask`)").into()),
        }
    }
    let append = args
        .iter()
        .skip_while(|a| *a != "--")
        .skip(1)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let mut opts = BootOptions::new("xtask-qemu", &append);
    if arch != opts.arch {
        opts.arch = arch;
        opts.kernel = arch.kernel_image();
        opts.initramfs = arch.initramfs();
    }
    if let Some(name) = kernel {
        opts.kernel = qemu_tests::kernel_named(name, arch);
    }
    if let Some(path) = initramfs {
        opts.initramfs = path.into();
    }
    for (what, path) in [("kernel", &opts.kernel), ("initramfs", &opts.initramfs)] {
        if !path.exists() {
            return Err(format!(
                "no {what} at {}: run `make initramfs ARCH={arch}` (or `cargo xtask kernel --debian --arch {arch}` and `cargo xtask initramfs --arch {arch}`; `make kernel-{arch}` for our own kernel, `--kernel own`)",
                path.display()
            )
            .into());
        }
    }
    println!("starting the test network (dnsmasq, chronyd, registry) ...");
    let net = TestNet::start()?;
    if big {
        println!(
            "pushing {} (60 MiB layer) ...",
            qemu_tests::images::BIG_IMAGE
        );
        net.push_big_image()?;
    }
    println!(
        "registry: http://{} and https://{} (images: {})",
        net.registry_http(),
        net.registry_https(),
        qemu_tests::images::IMAGES
            .iter()
            .map(|i| i.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    opts.echo = true;
    for disk in &disks {
        opts = opts.with_disk(disk);
    }
    opts.timeout = Duration::from_secs(3600);
    let boot = net.boot(&opts)?;
    if let Some(at) = boot.status_at {
        println!("\nstatus line {:.2} s after QEMU started", at.as_secs_f64());
    }
    println!(
        "QEMU {} after {:.1} s; console saved in {}",
        if boot.exited { "exited" } else { "was stopped" },
        boot.elapsed.as_secs_f64(),
        boot.log_path.display()
    );
    match boot.status() {
        Some(0) => Ok(()),
        Some(n) => Err(format!("pipeline status {n}").into()),
        None => Err("no pipeline status line on the console".into()),
    }
}
