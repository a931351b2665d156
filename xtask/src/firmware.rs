//! `cargo xtask firmware`: the firmware files the shipped drivers ask for
//! (`modinfo -F firmware`), taken from Debian's non-free-firmware
//! packages, in a cpio of their own that a boot loader loads after the
//! initramfs (`initrd b2c.cpio.zst b2c-firmware.cpio.zst`): the kernel
//! unpacks both into one root, and drivers find their files in
//! /lib/firmware as the kernel loads them itself.
//!
//! The machine's apt sources list `main` only, and they stay untouched:
//! apt runs with a sources file, package lists and cache of its own under
//! target/firmware/apt ([`crate::apt`]), for the `non-free-firmware`
//! component of the same Debian mirror and release.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use b2c_system::modules::ModuleIndex;
use qemu_tests::Arch;

use crate::apt::{self, Apt};
use crate::cpio::Archive;
use crate::initramfs::{self, Compression, ModuleSet};
use crate::{kernel, run_output, workspace_root, Result};

#[derive(Debug)]
pub struct Options {
    pub output: Option<PathBuf>,
    pub modules: ModuleSet,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            output: None,
            modules: ModuleSet::Farm,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--output" => o.output = Some(PathBuf::from(value()?)),
                "--modules" => o.modules = ModuleSet::parse(value()?),
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        Ok(o)
    }
}

fn work_dir() -> PathBuf {
    workspace_root().join("target/firmware")
}

/// The firmware names the modules of the set (and their dependencies)
/// declare, for the kernel of `cargo xtask kernel --debian`.
fn wanted_firmware(set: &ModuleSet) -> Result<BTreeSet<String>> {
    let kernel = kernel::fetch(Arch::X86_64, false)?;
    let index = ModuleIndex::load(&kernel.modules)?;
    let mut names = BTreeSet::new();
    for file in index.load_order(&set.names(Arch::X86_64)?)? {
        let out = run_output("modinfo", &["-F", "firmware", &file.to_string_lossy()])?;
        names.extend(
            out.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    Ok(names)
}

/// Fetches the non-free-firmware packages that hold `wanted` and unpacks
/// them under `root`; returns the packages used.
fn fetch_packages(wanted: &BTreeSet<String>, root: &Path) -> Result<Vec<String>> {
    let archive = apt::debian_archive()?;
    let apt = Apt::new(
        &work_dir().join("apt"),
        None,
        &archive.source_line(None, "non-free-firmware"),
    )?;
    apt.update()?;
    // Which package has which file: the Contents index would say, but it
    // is 30 MB; the packages that hold NIC firmware are few and named.
    let packages: Vec<String> = manifest_packages()?;
    let debs = apt.download(&packages, &work_dir().join("debs"))?;
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let mut used = Vec::new();
    for deb in debs {
        let listing = apt::listing(&deb)?;
        let useful = listing.lines().any(|l| {
            wanted.iter().any(|w| {
                l.ends_with(&format!("/lib/firmware/{w}"))
                    || l.contains(&format!("/lib/firmware/{w} -> "))
            })
        });
        if useful {
            apt::unpack(std::slice::from_ref(&deb), root)?;
            used.push(
                deb.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    Ok(used)
}

/// initramfs/firmware.txt: the Debian packages to look in.
fn manifest_packages() -> Result<Vec<String>> {
    let path = workspace_root().join("initramfs/firmware.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// The file a firmware name stands for under an unpacked root, following
/// symbolic links inside that root (Debian links some names to others,
/// absolute or relative).
fn resolve_in(root: &Path, name: &str) -> Option<PathBuf> {
    for base in ["lib/firmware", "usr/lib/firmware"] {
        let mut path = root.join(base).join(name);
        for _ in 0..16 {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(&path).ok()?;
                    path = if target.is_absolute() {
                        root.join(target.strip_prefix("/").ok()?)
                    } else {
                        path.parent()?.join(target)
                    };
                }
                Ok(m) if m.is_file() => return Some(path),
                _ => break,
            }
        }
    }
    None
}

pub fn build(o: &Options) -> Result<PathBuf> {
    let out = o
        .output
        .clone()
        .unwrap_or_else(|| initramfs::out_dir().join("b2c-firmware.cpio.zst"));
    let wanted = wanted_firmware(&o.modules)?;
    let root = work_dir().join("root");
    let packages = fetch_packages(&wanted, &root)?;
    let mut archive = Archive::default();
    let mut missing = Vec::new();
    let mut bytes = 0;
    for name in &wanted {
        match resolve_in(&root, name) {
            Some(file) => {
                bytes += std::fs::metadata(&file)?.len();
                archive.add_file(&format!("lib/firmware/{name}"), &file)?;
            }
            None => missing.push(name.as_str()),
        }
    }
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    let cpio = work_dir().join("firmware.cpio");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&cpio)?);
    archive.write(&mut file)?;
    std::io::Write::flush(&mut file)?;
    drop(file);
    let partial = out.with_extension("partial");
    initramfs::compress(&cpio, Compression::Zstd, &partial)?;
    std::fs::rename(&partial, &out)?;
    println!(
        "firmware {}: {} files ({:.2} MiB) from {}, {:.2} MiB compressed",
        out.display(),
        wanted.len() - missing.len(),
        bytes as f64 / (1024.0 * 1024.0),
        packages.join(", "),
        std::fs::metadata(&out)?.len() as f64 / (1024.0 * 1024.0),
    );
    if !missing.is_empty() {
        println!(
            "no Debian package of initramfs/firmware.txt has: {}",
            missing.join(", ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_links_resolve_inside_the_unpacked_root() {
        let root = tempfile::tempdir().unwrap();
        let fw = root.path().join("lib/firmware/rtl_nic");
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::write(fw.join("real.fw"), "x").unwrap();
        std::os::unix::fs::symlink("real.fw", fw.join("relative.fw")).unwrap();
        std::os::unix::fs::symlink("/lib/firmware/rtl_nic/real.fw", fw.join("absolute.fw"))
            .unwrap();
        for name in ["real.fw", "relative.fw", "absolute.fw"] {
            assert_eq!(
                resolve_in(root.path(), &format!("rtl_nic/{name}")),
                Some(fw.join("real.fw")),
                "{name}"
            );
        }
        assert_eq!(resolve_in(root.path(), "rtl_nic/none.fw"), None);
    }
}
