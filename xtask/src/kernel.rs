//! `cargo xtask kernel --debian [--arch ARCH]`: Debian's kernel, unpacked where QEMU
//! and the initramfs build can use it.
//!
//! Output (under target/kernel/ for x86_64, target/kernel-aarch64/ for
//! arm64): the image QEMU boots fastest (x86_64: `vmlinux`, the
//! uncompressed ELF with the PVH entry, which TCG boots twice as fast as
//! the bzImage; arm64: `Image`, the uncompressed kernel QEMU's `-kernel`
//! loads as it is), `vmlinuz` (what boot loaders load), `release` (the
//! version string) and `root/lib/modules/<release>` with a complete
//! modules.dep.
//!
//! x86_64's comes from the machine's own apt configuration; arm64's from
//! the same Debian archives read for arm64 by an apt configuration of our
//! own ([`crate::apt`], shared with the arm64 initramfs's packages).

use std::path::{Path, PathBuf};

use qemu_tests::Arch;

use crate::apt::{self, Apt};
use crate::{run, run_output, workspace_root, Result};

pub struct Kernel {
    /// The image QEMU's `-kernel` boots.
    pub image: PathBuf,
    pub release: String,
    pub modules: PathBuf,
}

pub fn kernel_dir(arch: Arch) -> PathBuf {
    workspace_root().join("target").join(arch.kernel_subdir())
}

/// The kernel already fetched, if any.
pub fn existing(arch: Arch) -> Option<Kernel> {
    let dir = kernel_dir(arch);
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    let release = release.trim().to_string();
    let kernel = Kernel {
        image: dir.join(arch.kernel_file()),
        modules: dir.join("root/lib/modules").join(&release),
        release,
    };
    (kernel.image.exists() && kernel.modules.join("modules.dep").exists()).then_some(kernel)
}

/// apt for a foreign architecture's Debian packages (`main` of every
/// Debian archive the machine uses: the kernel's current version may be
/// in the security archive), under target/apt-ARCH.
pub fn foreign_apt(arch: Arch) -> Result<Apt> {
    let sources: String = apt::debian_archives()?
        .iter()
        .map(|a| a.source_line(Some(arch.debian()), "main"))
        .collect();
    Apt::new(
        &workspace_root().join(format!("target/apt-{}", arch.debian())),
        Some(arch.debian()),
        &sources,
    )
}

pub fn fetch(arch: Arch, force: bool) -> Result<Kernel> {
    if !force {
        if let Some(k) = existing(arch) {
            println!(
                "kernel {} already in {}",
                k.release,
                kernel_dir(arch).display()
            );
            return Ok(k);
        }
    }
    let dir = kernel_dir(arch);
    let _ = std::fs::remove_dir_all(&dir);
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;

    let metapackage = format!("linux-image-{}", arch.debian());
    let deb = match arch {
        Arch::X86_64 => {
            // A metapackage: the real image is its dependency.
            let depends = run_output("apt-cache", &["depends", &metapackage])?;
            let package = depends
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
                .ok_or("apt-cache knows no linux-image-amd64: run `apt-get update` first")?
                .to_string();
            println!("fetching {package}");
            run(std::process::Command::new("apt-get")
                .args(["download", "-q", &package])
                .current_dir(&debs))?;
            std::fs::read_dir(&debs)?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .ok_or("apt-get download left no .deb")?
        }
        Arch::Aarch64 => {
            let apt = foreign_apt(arch)?;
            apt.update()?;
            let package = apt.dependency_named(&metapackage, "linux-image-")?;
            println!("fetching {package} ({})", arch.debian());
            apt.download(&[package], &debs)?
                .pop()
                .ok_or("apt-get download left no .deb")?
        }
    };
    let root = dir.join("root");
    run(std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root))?;

    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or("the kernel package has no /boot/vmlinuz-*")?;
    let release = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    // The .deb ships no modules.dep. depmod reads any architecture's
    // modules.
    run(std::process::Command::new("depmod")
        .arg("-b")
        .arg(&root)
        .arg(&release))?;
    let image = dir.join(arch.kernel_file());
    match arch {
        Arch::X86_64 => extract_vmlinux(&vmlinuz, &image)?,
        Arch::Aarch64 => extract_image(&vmlinuz, &image)?,
    }
    std::fs::copy(&vmlinuz, dir.join("vmlinuz"))?;
    std::fs::write(dir.join("release"), format!("{release}\n"))?;
    std::fs::remove_dir_all(&debs)?;
    println!("kernel {release} ready in {}", dir.display());
    existing(arch).ok_or_else(|| "kernel extraction left an incomplete tree".into())
}

/// The bzImage carries the real kernel as an xz stream: find its magic and
/// decompress from there (trailing data after the stream is ignored).
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];
    let image = std::fs::read(vmlinuz)?;
    let offset = image
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or("no xz stream in vmlinuz (is the kernel compressed otherwise?)")?;
    let mut child = std::process::Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(out)?)
        .spawn()?;
    // xz stops reading at the end of the stream: the rest of the bzImage
    // then meets a closed pipe, which is expected.
    match std::io::Write::write_all(child.stdin.as_mut().unwrap(), &image[offset..]) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => drop(child.stdin.take()),
    }
    if !child.wait()?.success() {
        return Err("xz could not decompress the kernel".into());
    }
    Ok(())
}

/// arm64 kernels do not decompress themselves, so boot loaders and QEMU
/// load the `Image` as it is (U-Boot's `booti`, GRUB, `-kernel`). Debian
/// 12's arm64 vmlinuz is that Image already (with its EFI stub); other
/// releases gzip it (then U-Boot needs `unzip` first), so a gzipped one is
/// unpacked here.
fn extract_image(vmlinuz: &Path, out: &Path) -> Result<()> {
    let data = std::fs::read(vmlinuz)?;
    let image = if data.starts_with(&[0x1f, 0x8b]) {
        let mut image = Vec::new();
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(vmlinuz)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut image)?;
        if !child.wait()?.success() {
            return Err("gzip could not decompress the kernel".into());
        }
        image
    } else {
        data
    };
    // The arm64 boot protocol's header: magic "ARM\x64" at 0x38.
    if image.get(0x38..0x3c) != Some(&b"ARM\x64"[..]) {
        return Err(format!(
            "{}: not an arm64 Image, gzipped or not (compressed otherwise, e.g. EFI zboot?)",
            vmlinuz.display()
        )
        .into());
    }
    std::fs::write(out, image)?;
    Ok(())
}
