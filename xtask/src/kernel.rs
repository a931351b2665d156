//! `cargo xtask kernel`: Debian's kernel, unpacked where QEMU and the
//! initramfs build can use it.
//!
//! Output (under target/kernel/): `vmlinux` (the uncompressed ELF with the
//! PVH entry: TCG boots it twice as fast as the bzImage), `vmlinuz`,
//! `release` (the version string) and `root/lib/modules/<release>` with a
//! complete modules.dep.

use std::path::{Path, PathBuf};

use crate::{run, run_output, workspace_root, Result};

pub struct Kernel {
    pub vmlinux: PathBuf,
    pub release: String,
    pub modules: PathBuf,
}

pub fn kernel_dir() -> PathBuf {
    workspace_root().join("target/kernel")
}

/// The kernel already fetched, if any.
pub fn existing() -> Option<Kernel> {
    let dir = kernel_dir();
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    let release = release.trim().to_string();
    let kernel = Kernel {
        vmlinux: dir.join("vmlinux"),
        modules: dir.join("root/lib/modules").join(&release),
        release,
    };
    (kernel.vmlinux.exists() && kernel.modules.join("modules.dep").exists()).then_some(kernel)
}

pub fn fetch(force: bool) -> Result<Kernel> {
    if !force {
        if let Some(k) = existing() {
            println!("kernel {} already in {}", k.release, kernel_dir().display());
            return Ok(k);
        }
    }
    let dir = kernel_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;

    // linux-image-amd64 is a metapackage: the real image is its dependency.
    let depends = run_output("apt-cache", &["depends", "linux-image-amd64"])?;
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
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or("apt-get download left no .deb")?;
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
    // The .deb ships no modules.dep.
    run(std::process::Command::new("depmod")
        .arg("-b")
        .arg(&root)
        .arg(&release))?;
    extract_vmlinux(&vmlinuz, &dir.join("vmlinux"))?;
    std::fs::copy(&vmlinuz, dir.join("vmlinuz"))?;
    std::fs::write(dir.join("release"), format!("{release}\n"))?;
    std::fs::remove_dir_all(&debs)?;
    println!("kernel {release} ready in {}", dir.display());
    existing().ok_or_else(|| "kernel extraction left an incomplete tree".into())
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
