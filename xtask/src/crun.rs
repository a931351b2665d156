//! `cargo xtask crun [--arch A]`: crun built from Debian's own source
//! package, static and without systemd, for the initramfs.
//!
//! Debian's crun binary is dynamic, and through libsystemd it needs
//! libgcrypt, libgpg-error, liblz4, liblzma and libzstd: 1.27 MB of the
//! zstd initramfs for a cgroup manager b2c never uses (it runs `crun
//! --root /run/crun run --no-pivot` on cgroupfs, cgroup2), and loading
//! them cost 0.2 s of every `crun` start under TCG. This builds the same
//! version from bookworm's source package (`apt-get source`, with Debian's
//! patches applied by `dpkg-source -x`) with `--disable-systemd`, and
//! links glibc, libseccomp, libcap and libyajl statically from the
//! architecture's Debian -dev packages (unpacked, never installed).
//!
//! The result is kept by version and architecture under target/crun/:
//! only the first initramfs build of an architecture pays for it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use qemu_tests::Arch;

use crate::apt::{self, Apt};
use crate::{initramfs, kernel, run, workspace_root, Result};

/// The version of bookworm's crun source package, the one whose binary
/// the initramfs shipped before. Debian's archive keeps only a suite's
/// current version: when bookworm updates crun, the download fails with a
/// message saying so, and this moves to the new version (after the QEMU
/// tests).
pub const VERSION: &str = "1.8.1-1+deb12u1";

/// The -dev packages crun links statically: seccomp filters
/// (`--security-opt seccomp=`), capabilities, and the JSON parser of its
/// config.json.
const LIBRARY_PACKAGES: &[&str] = &["libseccomp-dev", "libcap-dev", "libyajl-dev"];

/// The static archives of [`LIBRARY_PACKAGES`], and the name the link
/// looks for: libyajl-dev calls its archive libyajl_s.a, which `-lyajl`
/// would not find.
const ARCHIVES: &[(&str, &str)] = &[
    ("libseccomp.a", "libseccomp.a"),
    ("libcap.a", "libcap.a"),
    ("libyajl_s.a", "libyajl.a"),
];

/// What crun's config.h must say: the features b2c's containers use
/// (flags.rs in the QEMU tests: seccomp, capabilities, device rules, which
/// need eBPF on cgroup2) and no systemd.
const REQUIRED: &[&str] = &["HAVE_SECCOMP", "HAVE_CAP", "HAVE_EBPF", "HAVE_YAJL"];
const FORBIDDEN: &[&str] = &["HAVE_SYSTEMD", "HAVE_DLOPEN", "HAVE_GCRYPT"];

fn crun_dir() -> PathBuf {
    workspace_root().join("target/crun").join(VERSION)
}

/// Where the built binary of `arch` is kept.
fn cached(arch: Arch) -> PathBuf {
    crun_dir().join(arch.name()).join("crun")
}

/// The static crun for `arch`: the one built before if its recipe is
/// the same, else built now (a few minutes).
pub fn binary(arch: Arch) -> Result<PathBuf> {
    let out = cached(arch);
    let recipe_file = out.with_file_name("recipe");
    let recipe = configure_args(arch, Path::new("SYSROOT")).join("\n");
    let up_to_date = |out: &Path| {
        out.is_file() && std::fs::read_to_string(&recipe_file).ok() == Some(recipe.clone())
    };
    if up_to_date(&out) {
        return Ok(out);
    }
    // Initramfs builds run concurrently (the QEMU tests build variants on
    // several threads): one builds, the others wait and take its result.
    let _lock = lock(&workspace_root().join("target/crun/lock"))?;
    if up_to_date(&out) {
        return Ok(out);
    }
    let started = Instant::now();
    build(arch, &out)?;
    std::fs::write(&recipe_file, &recipe)?;
    println!(
        "crun {VERSION} ({arch}) built in {:.0} s: {}, {} bytes, static",
        started.elapsed().as_secs_f64(),
        out.display(),
        std::fs::metadata(&out)?.len()
    );
    Ok(out)
}

/// `cargo xtask crun [--arch A] [--force]`.
pub fn command(args: &[String]) -> Result<()> {
    let arch = crate::arch_option(args)?;
    if args.iter().any(|a| a == "--force") {
        let _ = std::fs::remove_file(cached(arch));
    }
    let crun = binary(arch)?;
    println!("crun {VERSION} ({arch}): {}", crun.display());
    Ok(())
}

/// An exclusive flock(2) on `path`, held until the file is dropped.
fn lock(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(path.parent().unwrap())?;
    let file = std::fs::File::create(path)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(file)
}

/// configure's arguments. `sysroot`: where the -dev packages are
/// unpacked; the recipe (what the cached binary was built with) names it
/// by a placeholder, so that it does not depend on the checkout's path.
fn configure_args(arch: Arch, sysroot: &Path) -> Vec<String> {
    let include = sysroot.join("usr/include");
    let lib = sysroot.join("static");
    let mut args = vec![
        // The point: no libsystemd and what it brings.
        "--disable-systemd".to_string(),
        // A static binary cannot dlopen: what crun would load so (the
        // krun and wasm handlers, seccomp notify plugins, libcriu) b2c
        // does not use.
        "--disable-dl".to_string(),
        "--disable-criu".to_string(),
        "--disable-shared".to_string(),
        // libgcrypt only caches seccomp filters; a machine with
        // libgcrypt20-dev would otherwise link it.
        "ac_cv_search_gcry_check_version=no".to_string(),
        // libocispec's JSON code is generated by python at build time;
        // Debian's, not one a version manager put first in PATH.
        "PYTHON=/usr/bin/python3".to_string(),
        // Debian's hardening flags, as its crun is built with
        // (`hardening=+all`); gc-sections drops what crun does not call
        // from the static libraries (about 120 KB).
        "CFLAGS=-O2 -fstack-protector-strong -Wformat -Werror=format-security \
         -ffunction-sections -fdata-sections"
            .to_string(),
        format!("CPPFLAGS=-D_FORTIFY_SOURCE=2 -I{}", include.display()),
        format!(
            "LDFLAGS=-Wl,-z,relro -Wl,-z,now -Wl,--gc-sections -L{}",
            lib.display()
        ),
        // Given, so that configure never asks the machine's pkg-config,
        // which knows the host's libraries, not the sysroot's.
        format!("YAJL_CFLAGS=-I{}", include.display()),
        "YAJL_LIBS=-lyajl".to_string(),
        format!(
            "PKG_CONFIG_LIBDIR={}",
            sysroot
                .join(format!("usr/lib/{}/pkgconfig", triplet(arch)))
                .display()
        ),
    ];
    if arch != Arch::X86_64 {
        args.push(format!("--host={}", triplet(arch)));
        args.push(format!("CC={}-gcc", triplet(arch)));
    }
    args
}

fn triplet(arch: Arch) -> String {
    format!("{}-linux-gnu", arch.name())
}

/// Builds crun for `arch` into `out`, in a fresh copy of the source.
fn build(arch: Arch, out: &Path) -> Result<()> {
    let source = source()?;
    let dir = out.parent().unwrap();
    let work = dir.join("build");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let sysroot = sysroot(arch, &work.join("sysroot"))?;
    let tree = work.join("crun");
    run(Command::new("cp").arg("-a").arg(&source).arg(&tree))?;
    let log_path = work.join("build.log");
    let log = std::fs::File::create(&log_path)?;
    println!(
        "building crun {VERSION} for {arch} from Debian's source (minutes; log: {})",
        log_path.display()
    );
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let make = |args: &[&str]| {
        let mut cmd = Command::new("make");
        cmd.current_dir(&tree).arg(format!("-j{jobs}")).args(args);
        cmd
    };
    let steps: Vec<Command> = vec![
        {
            let mut cmd = Command::new("./configure");
            cmd.current_dir(&tree).args(configure_args(arch, &sysroot));
            cmd
        },
        // `make crun` alone skips BUILT_SOURCES, and its objects include
        // libocispec's generated headers before a parallel make has
        // generated them: those first.
        make(&["git-version.h"]),
        make(&["-C", "libocispec"]),
        // -all-static: libtool's word for a link without any shared library.
        make(&["crun", "CRUN_LDFLAGS=-all-static"]),
    ];
    for mut step in steps {
        step.stdout(log.try_clone()?).stderr(log.try_clone()?);
        if let Err(e) = run(&mut step) {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "building crun: {e}\n{}\n(whole log: {})",
                tail.join("\n"),
                log_path.display()
            )
            .into());
        }
    }
    check_features(&std::fs::read_to_string(tree.join("config.h"))?)?;
    let partial = out.with_extension("partial");
    let strip = match arch {
        Arch::X86_64 => "strip".to_string(),
        _ => format!("{}-strip", triplet(arch)),
    };
    run(Command::new(strip)
        .arg("-o")
        .arg(&partial)
        .arg(tree.join("crun")))?;
    check_static(&partial)?;
    if arch == Arch::X86_64 {
        check_version(&partial)?;
    }
    std::fs::rename(&partial, out)?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Debian's crun source, unpacked with its patches, once per version.
fn source() -> Result<PathBuf> {
    let dir = crun_dir();
    let source = dir.join("source");
    if source.join("configure").is_file() {
        return Ok(source);
    }
    let sources: String = apt::debian_archives()?
        .iter()
        .map(|a| a.deb_src_line("main"))
        .collect();
    let apt = Apt::new(&workspace_root().join("target/apt-src"), None, &sources)?;
    apt.update_if_old()?;
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    // apt checks each file against the signed archive's Sources index.
    run(apt
        .command("apt-get")
        .args(["-q", "source", "--download-only"])
        .arg(format!("crun={VERSION}"))
        .current_dir(&download))
    .map_err(|e| {
        format!(
            "{e}: Debian's archive no longer has crun {VERSION}? Then bookworm has \
             updated it: set crun::VERSION (xtask/src/crun.rs) to the version it has"
        )
    })?;
    let partial = dir.join("source.partial");
    let _ = std::fs::remove_dir_all(&partial);
    // Applies debian/patches (two upstream fixes for chmod on symbolic
    // links, which Linux 6.6 and 6.1.55 refuse, in copy-up mounts). Its
    // warning that it cannot verify the uploader's signature is expected:
    // apt has checked the files against the archive's signed index.
    run(Command::new("dpkg-source")
        .args(["-x", "--no-copy"])
        .arg(download.join(format!("crun_{VERSION}.dsc")))
        .arg(&partial))?;
    std::fs::rename(&partial, &source)?;
    std::fs::remove_dir_all(&download)?;
    Ok(source)
}

/// The -dev packages of `arch` unpacked into `root`, their static
/// archives in `root/static` under the names the link asks for. Returns
/// `root`.
fn sysroot(arch: Arch, root: &Path) -> Result<PathBuf> {
    let apt = kernel::foreign_apt(arch)?;
    apt.update_if_old()?;
    let packages: Vec<String> = LIBRARY_PACKAGES.iter().map(|p| p.to_string()).collect();
    let debs_dir = workspace_root().join(format!("target/apt-{}/crun-debs", arch.debian()));
    let debs = apt.download(&packages, &debs_dir)?;
    apt::unpack(&debs, root)?;
    let static_dir = root.join("static");
    std::fs::create_dir_all(&static_dir)?;
    let lib = root.join(format!("usr/lib/{}", triplet(arch)));
    for (from, to) in ARCHIVES {
        std::fs::copy(lib.join(from), static_dir.join(to))
            .map_err(|e| format!("{}: {e}", lib.join(from).display()))?;
    }
    Ok(root.to_path_buf())
}

/// Fails unless crun's config.h defines every [`REQUIRED`] feature and
/// none of the [`FORBIDDEN`] ones: configure quietly leaves out what it
/// does not find.
fn check_features(config_h: &str) -> Result<()> {
    let defined = |name: &str| {
        config_h
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..] == ["#define", name, "1"])
    };
    let missing: Vec<&str> = REQUIRED.iter().copied().filter(|f| !defined(f)).collect();
    let unwanted: Vec<&str> = FORBIDDEN.iter().copied().filter(|f| defined(f)).collect();
    if !missing.is_empty() || !unwanted.is_empty() {
        return Err(format!(
            "crun's configure found the wrong features: missing {missing:?}, unwanted {unwanted:?}"
        )
        .into());
    }
    Ok(())
}

/// Fails unless `binary` is a static executable: no program interpreter,
/// no shared library.
fn check_static(binary: &Path) -> Result<()> {
    let (interpreter, needed) = initramfs::elf_dependencies(binary)?;
    if interpreter.is_some() || !needed.is_empty() {
        return Err(format!(
            "{} is not static: interpreter {interpreter:?}, libraries {needed:?}",
            binary.display()
        )
        .into());
    }
    Ok(())
}

/// Runs the x86_64 binary: it starts, says its version, and has no
/// systemd.
fn check_version(binary: &Path) -> Result<()> {
    let out = Command::new(binary).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let upstream = VERSION.split('-').next().unwrap_or(VERSION);
    if !out.status.success()
        || !text.contains(&format!("crun version {upstream}"))
        || text.contains("+SYSTEMD")
    {
        return Err(format!("{} --version said: {text}", binary.display()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_read_from_config_h() {
        let good = "#define HAVE_CAP 1\n#define HAVE_EBPF 1\n/* #undef HAVE_SYSTEMD */\n\
                    #define HAVE_SECCOMP 1\n#define HAVE_YAJL 1\n/* #undef HAVE_DLOPEN */\n";
        assert!(check_features(good).is_ok());
        let systemd = format!("{good}#define HAVE_SYSTEMD 1\n");
        assert!(check_features(&systemd)
            .unwrap_err()
            .to_string()
            .contains("unwanted [\"HAVE_SYSTEMD\"]"));
        let no_seccomp = good.replace("#define HAVE_SECCOMP 1\n", "");
        assert!(check_features(&no_seccomp)
            .unwrap_err()
            .to_string()
            .contains("missing [\"HAVE_SECCOMP\"]"));
    }

    #[test]
    fn arm64_is_cross_built_without_systemd_against_its_sysroot() {
        let args = configure_args(Arch::Aarch64, Path::new("/s"));
        for wanted in [
            "--host=aarch64-linux-gnu",
            "CC=aarch64-linux-gnu-gcc",
            "--disable-systemd",
            "YAJL_CFLAGS=-I/s/usr/include",
            "PKG_CONFIG_LIBDIR=/s/usr/lib/aarch64-linux-gnu/pkgconfig",
        ] {
            assert!(args.iter().any(|a| a == wanted), "{wanted} not in {args:?}");
        }
        assert!(args
            .iter()
            .any(|a| a.starts_with("LDFLAGS=") && a.ends_with(" -L/s/static")));
        let native = configure_args(Arch::X86_64, Path::new("/s"));
        assert!(!native
            .iter()
            .any(|a| a.starts_with("--host") || a.starts_with("CC=")));
    }
}
