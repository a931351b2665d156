//! What the benchmarks need from Debian, installed when missing.

use std::process::Command;

use crate::{run, Result};

/// Debian packages: the comparison points, the image build, the registry,
/// QEMU and what the initramfs and the baselines are made of.
pub const PACKAGES: &[&str] = &[
    "podman",
    "skopeo",
    "umoci",
    "rclone",
    "debootstrap",
    "docker-registry",
    "qemu-system-x86",
    "crun",
    "busybox-static",
    "e2fsprogs",
    "musl-tools",
    "dnsmasq-base",
    "chrony",
    "iproute2",
    "openssl",
    "cpio",
    "kmod",
    "gzip",
    "tar",
    "xz-utils",
    "zstd",
    "ca-certificates",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("install ok installed"))
}

pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        println!("bench: installing {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing))?;
    }
    let targets =
        crate::run_output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !targets.lines().any(|t| t == "x86_64-unknown-linux-musl") {
        run(Command::new("rustup").args(["target", "add", "x86_64-unknown-linux-musl"]))?;
    }
    Ok(())
}
