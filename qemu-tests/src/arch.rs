//! The architectures b2c is built and booted for, and what differs between
//! them for QEMU and the build (`cargo xtask … --arch`).

use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// `x86_64`/`amd64` or `aarch64`/`arm64`.
    pub fn parse(name: &str) -> Result<Arch> {
        match name {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(Error::new(format!(
                "unknown architecture {other}: x86_64 (amd64) or aarch64 (arm64)"
            ))),
        }
    }

    /// `$B2C_ARCH`, else x86_64: which architecture the QEMU tests boot.
    pub fn from_env() -> Result<Arch> {
        match std::env::var("B2C_ARCH") {
            Ok(name) if !name.is_empty() => Arch::parse(&name),
            _ => Ok(Arch::X86_64),
        }
    }

    /// [`Self::from_env`] for the tests: a `$B2C_ARCH` they cannot boot is
    /// a failure, not a silent x86_64.
    pub fn current() -> Arch {
        Arch::from_env().unwrap_or_else(|e| panic!("$B2C_ARCH: {e}"))
    }

    /// The kernel's and Rust's name: `x86_64`, `aarch64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's and OCI's name: `amd64`, `arm64`.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The static musl target the init is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Where `cargo xtask kernel --debian` puts this architecture's kernel, in the
    /// target directory: x86_64's stays where it always was.
    pub fn kernel_subdir(self) -> &'static str {
        match self {
            Arch::X86_64 => "kernel",
            Arch::Aarch64 => "kernel-aarch64",
        }
    }

    /// The kernel file in [`Self::kernel_subdir`] QEMU boots fastest:
    /// x86_64's uncompressed vmlinux (PVH entry), arm64's uncompressed
    /// `Image`.
    pub fn kernel_file(self) -> &'static str {
        match self {
            Arch::X86_64 => "vmlinux",
            Arch::Aarch64 => "Image",
        }
    }

    /// Where `cargo xtask initramfs` writes by default, in the target
    /// directory.
    pub fn initramfs_subdir(self) -> &'static str {
        match self {
            Arch::X86_64 => "initramfs",
            Arch::Aarch64 => "initramfs/aarch64",
        }
    }

    /// The kernel the QEMU tests boot by default.
    pub fn kernel_image(self) -> PathBuf {
        crate::target_dir()
            .join(self.kernel_subdir())
            .join(self.kernel_file())
    }

    /// Our own kernel, built from kernel-config/ by `cargo xtask kernel`
    /// (every driver built in), whether built or not: `vmlinux` or
    /// `Image` as [`Self::kernel_file`] names Debian's.
    pub fn own_kernel_image(self) -> PathBuf {
        crate::target_dir()
            .join("own-kernel")
            .join(self.name())
            .join(self.kernel_file())
    }

    /// The initramfs the QEMU tests boot by default.
    pub fn initramfs(self) -> PathBuf {
        crate::target_dir()
            .join(self.initramfs_subdir())
            .join("b2c.cpio.zst")
    }

    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The Debian package of [`Self::qemu`].
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm",
        }
    }

    /// The machine QEMU emulates, after `-accel tcg`.
    pub fn qemu_machine(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &[],
            // pauth-impdef: TCG emulates pointer authentication with
            // QARMA, which costs much of a boot; the implementation-defined
            // algorithm is as good for a guest that only signs and checks
            // its own pointers.
            Arch::Aarch64 => &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
        }
    }

    /// The serial console's name in the guest.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.name()).unwrap(), arch);
            assert_eq!(Arch::parse(arch.debian()).unwrap(), arch);
        }
        assert!(Arch::parse("riscv64").is_err());
    }

    #[test]
    fn kernels_by_name() {
        let own = crate::kernel_named("own", Arch::Aarch64);
        assert!(
            own.ends_with("own-kernel/aarch64/Image"),
            "{}",
            own.display()
        );
        assert!(crate::kernel_named("own", Arch::X86_64).ends_with("own-kernel/x86_64/vmlinux"));
        for debian in ["", "debian"] {
            assert!(crate::kernel_named(debian, Arch::X86_64).ends_with("kernel/vmlinux"));
        }
        assert_eq!(
            crate::kernel_named("/boot/vmlinuz", Arch::X86_64),
            PathBuf::from("/boot/vmlinuz")
        );
    }
}
