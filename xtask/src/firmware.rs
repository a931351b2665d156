//! `cargo xtask firmware`: the firmware files the shipped drivers ask for
//! (`modinfo -F firmware`), taken from Debian's non-free-firmware
//! packages, in a cpio of their own that a boot loader loads after the
//! initramfs (`initrd b2c.cpio.zst b2c-firmware.cpio.zst`): the kernel
//! unpacks both into one root, and drivers find their files in
//! /lib/firmware as the kernel loads them itself.
//!
//! The machine's apt sources list `main` only, and they stay untouched:
//! apt runs with a sources file, package lists and cache of its own under
//! target/firmware/apt, for the `non-free-firmware` component of the same
//! Debian mirror and release.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use b2c_system::modules::ModuleIndex;

use crate::cpio::Archive;
use crate::initramfs::{self, Compression, ModuleSet};
use crate::{kernel, run, run_output, workspace_root, Result};

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
/// declare, for the kernel of `cargo xtask kernel`.
fn wanted_firmware(set: &ModuleSet) -> Result<BTreeSet<String>> {
    let kernel = kernel::fetch(false)?;
    let index = ModuleIndex::load(&kernel.modules)?;
    let mut names = BTreeSet::new();
    for file in index.load_order(&set.names()?)? {
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

/// The Debian mirror and release of the machine's own apt sources (deb822
/// `.sources` files or one-line `sources.list`), and the keyring that
/// signs them.
pub fn debian_archive() -> Result<(String, String, String)> {
    const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if f.extension().is_some_and(|e| e == "sources" || e == "list") {
                texts.push(std::fs::read_to_string(&f).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for text in &texts {
        if let Some(found) = archive_in(text) {
            return Ok((
                found.0,
                found.1,
                found.2.unwrap_or_else(|| KEYRING.to_string()),
            ));
        }
    }
    Err(
        "no Debian archive (a `deb` source with a suite such as bookworm) in /etc/apt: \
         cannot tell where non-free-firmware is"
            .into(),
    )
}

/// The first Debian archive (not the security one) of an apt sources
/// text: (URI, suite, Signed-By).
fn archive_in(text: &str) -> Option<(String, String, Option<String>)> {
    let is_archive = |uri: &str, suite: &str| {
        uri.contains("debian") && !uri.contains("security") && !suite.contains('-')
    };
    // deb822: stanzas separated by blank lines.
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        for uri in uris.split_whitespace() {
            if let Some(suite) = suites.split_whitespace().find(|s| is_archive(uri, s)) {
                return Some((uri.to_string(), suite.to_string(), field("Signed-By")));
            }
        }
    }
    // One-line format: deb [options] URI SUITE COMPONENTS...
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        let mut signed_by = None;
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if let Some(v) = w.trim_matches(['[', ']']).strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            if is_archive(uri, suite) {
                return Some((uri.to_string(), suite.to_string(), signed_by));
            }
        }
    }
    None
}

/// apt with a sources list, package lists and cache of its own: the
/// machine's configuration and package cache are never touched.
fn apt(program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, value) in [
        ("Dir::Etc::sourcelist", dir.join("sources.list")),
        ("Dir::Etc::sourceparts", PathBuf::from("-")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
        // Downloads land in our directory, which _apt may not enter.
        ("APT::Sandbox::User", PathBuf::from("root")),
    ] {
        cmd.arg("-o").arg(format!("{key}={}", value.display()));
    }
    cmd
}

/// Fetches the non-free-firmware packages that hold `wanted` and unpacks
/// them under `root`; returns the packages used.
fn fetch_packages(wanted: &BTreeSet<String>, root: &Path) -> Result<Vec<String>> {
    let dir = work_dir().join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let (uri, suite, keyring) = debian_archive()?;
    std::fs::write(
        dir.join("sources.list"),
        format!("deb [signed-by={keyring}] {uri} {suite} non-free-firmware\n"),
    )?;
    run(apt("apt-get", &dir).args(["-q", "update"]))?;
    // Which package has which file: the Contents index would say, but it
    // is 30 MB; the packages that hold NIC firmware are few and named.
    let packages: Vec<String> = manifest_packages()?;
    let debs = work_dir().join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs)?;
    run(apt("apt-get", &dir)
        .args(["-q", "download"])
        .args(&packages)
        .current_dir(&debs))?;
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let mut used = Vec::new();
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .collect();
    debs.sort();
    for deb in debs {
        let listing = run_output("dpkg-deb", &["-c", &deb.to_string_lossy()])?;
        let useful = listing.lines().any(|l| {
            wanted.iter().any(|w| {
                l.ends_with(&format!("/lib/firmware/{w}"))
                    || l.contains(&format!("/lib/firmware/{w} -> "))
            })
        });
        if useful {
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
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
    fn finds_the_debian_archive_in_either_format() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            archive_in(deb822),
            Some((
                "http://deb.debian.org/debian".into(),
                "bookworm".into(),
                Some("/usr/share/keyrings/debian-archive-keyring.gpg".into())
            ))
        );
        let security_first = "Types: deb\nURIs: http://security.debian.org/debian-security\n\
                              Suites: bookworm-security\n\nTypes: deb\n\
                              URIs: http://mirror.example/debian\nSuites: trixie\n";
        assert_eq!(
            archive_in(security_first).map(|a| (a.0, a.1)),
            Some(("http://mirror.example/debian".into(), "trixie".into()))
        );
        let one_line = "# deb-src http://x/debian bookworm main\n\
                        deb http://security.debian.org/debian-security bookworm-security main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            archive_in(one_line),
            Some((
                "http://mirror.example/debian".into(),
                "bookworm".into(),
                Some("/k.gpg".into())
            ))
        );
        assert_eq!(
            archive_in("deb https://packages.example/apt cloud-sdk main\n"),
            None
        );
    }

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
