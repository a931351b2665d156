//! cargo xtask: build and boot the b2c initramfs.

mod apt;
mod bench;
mod busybox;
mod cpio;
mod crun;
mod firmware;
mod initramfs;
mod kernel;
mod modules;
mod own_kernel;
mod qemu;

use std::path::PathBuf;
use std::process::Command;

use qemu_tests::Arch;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "\
usage: cargo xtask <command>

  kernel [OPTIONS]          build our kernel from kernel-config/ (every driver
                            b2c needs built in, no modules) out of Debian's
                            linux-source into target/own-kernel/ARCH/; fails
                            naming every fragment option that did not survive
      --arch A              x86_64 (default) or aarch64 (cross-built)
      --check               configure and check only, no build (seconds)
      --base B              allnoconfig (default) or tinyconfig
      --jobs N              make -jN (default: one per core)
      --clean               remove the object tree afterwards (the next
                            build then starts from scratch)
  kernel --debian [--arch A] [--force]
                            fetch Debian's kernel, which the initramfs's modules
                            and the QEMU tests use, into target/kernel/ (x86_64)
                            or target/kernel-aarch64/ (--arch aarch64)
  initramfs [OPTIONS]       build target/initramfs/b2c.cpio.<compression>
      --arch A              x86_64 (default) or aarch64: cross-built, with arm64
                            Debian's busybox, mke2fs and kernel modules, in
                            target/initramfs/aarch64/
      --ca-cert FILE        ship FILE as /etc/b2c/ca.pem (use with b2c.ca_cert=/etc/b2c/ca.pem)
      --compression C       zstd (default), xz or none
      --output FILE         write the compressed archive there instead
      --modules SET         the kernel modules shipped: farm (default,
                            initramfs/modules.txt), virtio (a VM's only,
                            initramfs/modules-virtio.txt), none (for a kernel whose
                            modules come from `xtask modules`) or a FILE
  crun [--arch A] [--force]
                            build crun static and without systemd from Debian's
                            source package (what the initramfs ships), kept in
                            target/crun/VERSION/ARCH/crun; --force builds it again
  firmware [OPTIONS]        build target/initramfs/b2c-firmware.cpio.zst: the
                            firmware the shipped drivers declare, from Debian's
                            non-free-firmware packages (initramfs/firmware.txt),
                            to load after the initramfs
      --modules SET         the drivers whose firmware to take (as for initramfs)
      --output FILE         write it there instead
  modules --kernel-modules DIR [OPTIONS]
                            build target/initramfs/b2c-modules-VERSION.cpio.zst
                            from another kernel's /lib/modules/VERSION (DIR), to
                            load after the initramfs (built with --modules none)
      --modules SET         which drivers (as for initramfs; those that kernel
                            lacks are listed and skipped)
      --compression C       zstd (default) or none
      --output FILE         write it there instead
  busybox --arch A [--output FILE]
                            Debian's static busybox for A, from its arm64 or amd64
                            package (for the QEMU tests' multi-arch images), in
                            target/apt-ARCH/busybox
  qemu [--arch A] [--kernel K] [--initramfs F] [--disk IMG]... [--big-image] [-- ARGS...]
                            boot it under QEMU on a private test network
                            (DHCP, NTP, registry with test images), with
                            ARGS appended to the kernel command line and
                            each IMG (a raw disk image) as a virtio disk;
                            --big-image also serves b2c/big:latest (65 MB);
                            --arch aarch64 boots the arm64 build with
                            qemu-system-aarch64 -M virt; --kernel own boots
                            our kernel (`kernel`), debian Debian's (the
                            default), or a file; --initramfs another archive
                            (e.g. `initramfs --modules none --output F`)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Not among the kernel arguments after `qemu --`.
    let mut own = args.iter().take_while(|a| *a != "--");
    if own.any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}{}", bench::USAGE);
        return;
    }
    let result = match args.first().map(String::as_str) {
        Some("kernel") if args.iter().any(|a| a == "--debian") => arch_option(&args[1..])
            .and_then(|arch| kernel::fetch(arch, args.iter().any(|a| a == "--force")))
            .map(|_| ()),
        Some("kernel") => {
            own_kernel::Options::parse(&args[1..]).and_then(|o| own_kernel::build(&o))
        }
        Some("initramfs") => initramfs::Options::parse(&args[1..])
            .and_then(|o| initramfs::build(&o))
            .map(|_| ()),
        Some("crun") => crun::command(&args[1..]),
        Some("firmware") => firmware::Options::parse(&args[1..])
            .and_then(|o| firmware::build(&o))
            .map(|_| ()),
        Some("modules") => modules::Options::parse(&args[1..])
            .and_then(|o| modules::build(&o))
            .map(|_| ()),
        Some("busybox") => arch_option(&args[1..])
            .and_then(|arch| busybox::fetch(arch, path_option(&args[1..], "--output")))
            .map(|_| ()),
        Some("qemu") => qemu::run(&args[1..]),
        Some("bench") => bench::run_bench(&args[1..]),
        _ => {
            eprint!("{USAGE}{}", bench::USAGE);
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}

/// The value of `--arch` among a command's options (x86_64 without one).
fn arch_option(args: &[String]) -> Result<Arch> {
    match args.iter().position(|a| a == "--arch") {
        Some(i) => Ok(Arch::parse(args.get(i + 1).ok_or("--arch needs a value")?)?),
        None => Ok(Arch::X86_64),
    }
}

fn path_option(args: &[String], name: &str) -> Option<PathBuf> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(PathBuf::from)
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}").into());
    }
    Ok(())
}

pub fn run_output(program: &str, args: &[&str]) -> Result<String> {
    command_output(Command::new(program).args(args))
}

/// What `cmd` printed, or an error with what it printed on stderr.
pub fn command_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
