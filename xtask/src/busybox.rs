//! `cargo xtask busybox --arch A`: Debian's static busybox for an
//! architecture, unpacked from its busybox-static package (never
//! installed): the QEMU tests build each test image for every
//! architecture, and the machine has only its own busybox.

use std::path::PathBuf;

use qemu_tests::Arch;

use crate::{apt, kernel, workspace_root, Result};

pub fn fetch(arch: Arch, output: Option<PathBuf>) -> Result<PathBuf> {
    let dir = workspace_root().join(format!("target/apt-{}", arch.debian()));
    let out = output.unwrap_or_else(|| dir.join("busybox"));
    let apt = kernel::foreign_apt(arch)?;
    apt.update_if_old()?;
    // Apart from the initramfs's packages: a download there keeps only
    // the packages it was asked for.
    let debs = apt.download(&["busybox-static".to_string()], &dir.join("busybox-deb"))?;
    let root = dir.join("busybox-root");
    let _ = std::fs::remove_dir_all(&root);
    apt::unpack(&debs, &root)?;
    let partial = out.with_extension("partial");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(root.join("bin/busybox"), &partial)?;
    std::fs::rename(&partial, &out)?;
    std::fs::remove_dir_all(&root)?;
    println!("busybox ({}) in {}", arch.debian(), out.display());
    Ok(out)
}
