//! `cargo xtask kernel [--arch ARCH]`: our own kernel, built from
//! kernel-config/'s fragments with every driver b2c needs built in, so
//! that it boots with an initramfs that ships no module at all.
//!
//! The source is Debian's `linux-source` package (the same version as
//! Debian's stock kernel, with Debian's patches), unpacked once into
//! target/kernel-src/. Each architecture is configured and built out of
//! tree in target/own-kernel/build-ARCH/ (kept: changing a fragment then
//! rebuilds only what it touches), and what boot loaders and QEMU need is
//! copied to target/own-kernel/ARCH/.
//!
//! The configuration: a small base (`allnoconfig`, or `tinyconfig`),
//! kernel-config/common.config and kernel-config/ARCH.config merged onto it
//! with the kernel's scripts/kconfig/merge_config.sh, then `olddefconfig`.
//! merge_config and olddefconfig silently drop an option whose
//! dependencies are not met: [`missing_options`] compares the result with
//! every option the fragments ask for and the build fails, naming each one
//! that did not survive. That check is what keeps the fragments honest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use qemu_tests::Arch;

use crate::{run, workspace_root, Result};

/// The configuration the fragments are merged onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// Everything that can be off, off.
    Allnoconfig,
    /// allnoconfig with the kernel's tiny.config (size over speed, SLOB,
    /// EXPERT on); our fragments put SLUB back.
    Tinyconfig,
}

impl Base {
    fn parse(name: &str) -> Result<Base> {
        match name {
            "allnoconfig" => Ok(Base::Allnoconfig),
            "tinyconfig" => Ok(Base::Tinyconfig),
            other => Err(format!("unknown base {other}: allnoconfig or tinyconfig").into()),
        }
    }

    fn target(self) -> &'static str {
        match self {
            Base::Allnoconfig => "allnoconfig",
            Base::Tinyconfig => "tinyconfig",
        }
    }
}

#[derive(Debug)]
pub struct Options {
    pub arch: Arch,
    pub base: Base,
    /// Configure and check only; no build.
    pub check_only: bool,
    pub jobs: usize,
    /// The object tree is removed once the outputs are copied (it takes
    /// hundreds of MB; without it the next build starts from scratch).
    pub clean: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            arch: Arch::X86_64,
            base: Base::Allnoconfig,
            check_only: false,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clean: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--arch" => o.arch = Arch::parse(value()?)?,
                "--base" => o.base = Base::parse(value()?)?,
                "--check" => o.check_only = true,
                "--clean" => o.clean = true,
                "--jobs" | "-j" => {
                    o.jobs = value()?
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or("--jobs needs a number > 0")?
                }
                other => {
                    return Err(
                        format!("kernel: unknown option {other} (see `cargo xtask`)").into(),
                    )
                }
            }
        }
        Ok(o)
    }
}

/// The kernel's name for the architecture (`ARCH=`).
fn kernel_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64",
        Arch::Aarch64 => "arm64",
    }
}

/// The `make` targets to build, and the files they leave in the object
/// tree, copied to the output directory under the second name.
fn images(
    arch: Arch,
) -> (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
) {
    match arch {
        // vmlinux (the ELF with the PVH entry) is what QEMU boots fastest;
        // bzImage is what boot loaders load.
        Arch::X86_64 => (
            &["bzImage"],
            &[("vmlinux", "vmlinux"), ("arch/x86/boot/bzImage", "bzImage")],
        ),
        // arm64 kernels do not decompress themselves: QEMU, U-Boot's booti
        // and EFI load the Image as it is.
        Arch::Aarch64 => (&["Image"], &[("arch/arm64/boot/Image", "Image")]),
    }
}

fn own_dir() -> PathBuf {
    workspace_root().join("target/own-kernel")
}

/// Where the outputs of `arch` land: qemu-tests reads the same place.
pub fn out_dir(arch: Arch) -> PathBuf {
    own_dir().join(arch.name())
}

fn build_dir(arch: Arch) -> PathBuf {
    own_dir().join(format!("build-{}", arch.name()))
}

/// kernel-config/common.config then kernel-config/ARCH.config: later
/// values win, as in merge_config.sh.
pub fn fragments(arch: Arch) -> Vec<PathBuf> {
    let dir = workspace_root().join("kernel-config");
    vec![
        dir.join("common.config"),
        dir.join(format!("{}.config", arch.name())),
    ]
}

/// A `make` in the kernel's source tree for `arch`, out of tree. The
/// environment of an outer make (`make kernel` runs us) is dropped: its
/// MAKEFLAGS would carry our Makefile's `ARCH=aarch64` into the kernel's
/// make, where ARCH means something else; so is a `KCONFIG_CONFIG` that
/// would point the configuration elsewhere.
fn kmake(src: &Path, arch: Arch) -> Command {
    let mut cmd = Command::new("make");
    cmd.current_dir(src)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env_remove("ARCH")
        .env_remove("CROSS_COMPILE")
        .env_remove("KCONFIG_CONFIG")
        .arg(format!("O={}", build_dir(arch).display()))
        .arg(format!("ARCH={}", kernel_arch(arch)));
    if arch == Arch::Aarch64 {
        // Debian's gcc-aarch64-linux-gnu (`make deps`).
        cmd.arg("CROSS_COMPILE=aarch64-linux-gnu-");
    }
    cmd
}

/// Debian's kernel source, unpacked once into target/kernel-src/ from
/// `/usr/src/linux-source-*.tar.xz` (the `linux-source` package), again
/// only when the package brought a new tarball.
pub fn source_tree() -> Result<PathBuf> {
    let mut tarballs: Vec<PathBuf> = std::fs::read_dir("/usr/src")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("linux-source-") && n.ends_with(".tar.xz")
            })
        })
        .collect();
    // The newest version: linux-source-6.1 before a later 6.12.
    tarballs.sort_by_key(|p| version_key(&p.to_string_lossy()));
    let tarball = tarballs.pop().ok_or(
        "no /usr/src/linux-source-*.tar.xz: install Debian's kernel source (`make deps-kernel`, or apt-get install linux-source)",
    )?;
    let name = tarball
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tar.xz")
        .to_string();
    let meta = std::fs::metadata(&tarball)?;
    // The package replaces the tarball in place at a new Debian revision:
    // its size and time say whether the tree is the one unpacked.
    let stamp = format!(
        "{} {} {:?}\n",
        tarball.display(),
        meta.len(),
        meta.modified()?
    );
    let root = workspace_root().join("target/kernel-src");
    let tree = root.join(&name);
    let stamp_file = root.join(format!("{name}.unpacked"));
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
        && tree.join("Makefile").is_file()
    {
        return Ok(tree);
    }
    println!("kernel: unpacking {} ...", tarball.display());
    let partial = root.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&partial))?;
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::rename(partial.join(&name), &tree)?;
    std::fs::remove_dir_all(&partial)?;
    // The object trees were configured from the old source.
    for arch in Arch::ALL {
        let _ = std::fs::remove_dir_all(build_dir(arch));
    }
    std::fs::write(&stamp_file, stamp)?;
    Ok(tree)
}

/// Sorts version strings by their numbers: 6.1 < 6.12.
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// An option's value as a .config states it: `y`, `m`, `"-b2c"`, `n` for
/// `# CONFIG_X is not set`.
type Values = BTreeMap<String, String>;

/// The options a .config or a fragment sets, by name (without the
/// `CONFIG_` prefix); a later line wins.
pub fn parse_config(text: &str) -> Values {
    let mut out = Values::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# CONFIG_") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                out.insert(name.to_string(), "n".into());
            }
        } else if let Some(rest) = line.strip_prefix("CONFIG_") {
            if let Some((name, value)) = rest.split_once('=') {
                out.insert(name.to_string(), value.to_string());
            }
        }
    }
    out
}

/// A fragment's option the final configuration does not have.
#[derive(Debug, PartialEq, Eq)]
pub struct Missing {
    pub name: String,
    pub wanted: String,
    /// The final value; `None` when the option is not in the .config at
    /// all (its dependencies are not met, or it does not exist in this
    /// kernel).
    pub got: Option<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CONFIG_{}={}: ", self.name, self.wanted)?;
        match self.got.as_deref() {
            None => write!(
                f,
                "absent (its dependencies are not met, or no such option in this kernel)"
            ),
            Some("n") => write!(f, "is not set (a dependency is off, or it was overridden)"),
            Some(v) => write!(f, "became {v}"),
        }
    }
}

/// Every option `wanted` (the merged fragments) sets that `config` does
/// not have with that value. An option wanted off (`is not set`) may be
/// absent from `config`: that is off too.
pub fn missing_options(wanted: &Values, config: &Values) -> Vec<Missing> {
    wanted
        .iter()
        .filter_map(|(name, want)| {
            let got = config.get(name);
            let ok = match (want.as_str(), got.map(String::as_str)) {
                ("n", None | Some("n")) => true,
                (w, Some(g)) => w == g,
                (_, None) => false,
            };
            (!ok).then(|| Missing {
                name: name.clone(),
                wanted: want.clone(),
                got: got.cloned(),
            })
        })
        .collect()
}

/// The merged fragments of `arch`, as merge_config.sh merges them.
fn wanted(arch: Arch) -> Result<Values> {
    let mut all = Values::new();
    for f in fragments(arch) {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        all.extend(parse_config(&text));
    }
    Ok(all)
}

/// `make BASE`, the fragments merged, `make olddefconfig`, and the check:
/// an error listing every option that did not survive.
fn configure(src: &Path, o: &Options) -> Result<()> {
    let build = build_dir(o.arch);
    std::fs::create_dir_all(&build)?;
    run(kmake(src, o.arch).arg("-s").arg(o.base.target()))?;
    // -m: merge only; olddefconfig then resolves the result once, with
    // the same defaults a plain merge_config.sh would get from
    // alldefconfig.
    run(Command::new(src.join("scripts/kconfig/merge_config.sh"))
        .current_dir(src)
        .env_remove("KCONFIG_CONFIG")
        .arg("-m")
        .arg("-O")
        .arg(&build)
        .arg(build.join(".config"))
        .args(fragments(o.arch))
        .stdout(std::process::Stdio::null()))?;
    run(kmake(src, o.arch).arg("-s").arg("olddefconfig"))?;
    let config = parse_config(&std::fs::read_to_string(build.join(".config"))?);
    let missing = missing_options(&wanted(o.arch)?, &config);
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|m| format!("  {m}")).collect();
        return Err(format!(
            "{} option(s) of {} did not survive the configuration ({}): add what they depend on to the fragments (`make O={} ARCH={} menuconfig`, then `/NAME`, shows the dependencies)\n{}",
            missing.len(),
            fragments(o.arch)
                .iter()
                .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" + "),
            build.join(".config").display(),
            build.display(),
            kernel_arch(o.arch),
            list.join("\n")
        )
        .into());
    }
    let modules: Vec<&String> = config
        .iter()
        .filter(|(_, v)| *v == "m")
        .map(|(k, _)| k)
        .collect();
    println!(
        "kernel: {} configured from {} + kernel-config/: every option of the fragments is set ({} built in{})",
        o.arch,
        o.base.target(),
        config.values().filter(|v| *v == "y").count(),
        if modules.is_empty() {
            String::new()
        } else {
            // Defaults of options nobody asked for: modules are not built,
            // so these stay out.
            format!(
                "; left as modules, not built: {}",
                modules
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(())
}

/// Configures, checks and (unless `--check`) builds; the outputs land in
/// [`out_dir`].
pub fn build(o: &Options) -> Result<()> {
    let started = Instant::now();
    let src = source_tree()?;
    configure(&src, o)?;
    if o.check_only {
        return Ok(());
    }
    let (targets, files) = images(o.arch);
    println!(
        "kernel: building {} for {} with make -j{} (minutes; the object tree {} is kept for the next build)",
        targets.join(" "),
        o.arch,
        o.jobs,
        build_dir(o.arch).display()
    );
    let build_started = Instant::now();
    run(kmake(&src, o.arch)
        .arg("-s")
        .arg(format!("-j{}", o.jobs))
        .args(targets))?;
    let build_seconds = build_started.elapsed().as_secs_f64();
    let out = kmake(&src, o.arch)
        .arg("-s")
        .arg("kernelrelease")
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "make kernelrelease failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let release = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Replaced as a whole, so that a half-copied directory never looks
    // like a kernel to the tests.
    let out = out_dir(o.arch);
    let partial = own_dir().join(format!("{}.partial", o.arch.name()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    for (from, to) in files {
        std::fs::copy(build_dir(o.arch).join(from), partial.join(to))?;
    }
    std::fs::copy(build_dir(o.arch).join(".config"), partial.join("config"))?;
    std::fs::copy(
        build_dir(o.arch).join("System.map"),
        partial.join("System.map"),
    )?;
    std::fs::write(partial.join("release"), format!("{release}\n"))?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&partial, &out)?;
    if o.clean {
        std::fs::remove_dir_all(build_dir(o.arch))?;
    }
    println!(
        "kernel {release} ({}) ready in {}: built in {:.1} min ({:.1} min with the configuration)",
        o.arch,
        out.display(),
        build_seconds / 60.0,
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_fragment_lines_win() {
        let v = parse_config(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_LOCALVERSION=\"-b2c\"\n\
             # a comment\nCONFIG_A=m\n",
        );
        assert_eq!(v["A"], "m");
        assert_eq!(v["B"], "n");
        assert_eq!(v["LOCALVERSION"], "\"-b2c\"");
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn the_check_names_what_did_not_survive() {
        let wanted = parse_config(
            "CONFIG_KEPT=y\nCONFIG_DROPPED=y\nCONFIG_DEMOTED=y\n\
             CONFIG_OFF=y\n# CONFIG_UNWANTED is not set\n# CONFIG_GONE is not set\n",
        );
        let config = parse_config(
            "CONFIG_KEPT=y\nCONFIG_DEMOTED=m\n# CONFIG_OFF is not set\nCONFIG_UNWANTED=y\n",
        );
        let missing = missing_options(&wanted, &config);
        let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
        // Sorted by name; GONE wanted off and absent is fine.
        assert_eq!(names, ["DEMOTED", "DROPPED", "OFF", "UNWANTED"]);
        assert_eq!(
            missing[1].to_string(),
            "CONFIG_DROPPED=y: absent (its dependencies are not met, or no such option in this kernel)"
        );
        assert_eq!(missing[0].to_string(), "CONFIG_DEMOTED=y: became m");
    }

    #[test]
    fn the_fragments_parse() {
        for arch in Arch::ALL {
            let w = wanted(arch).unwrap();
            assert_eq!(w["LOCALVERSION"], "\"-b2c\"", "{arch}");
            assert_eq!(w["OVERLAY_FS"], "y", "{arch}");
            assert!(
                w.values().all(|v| v != "m"),
                "{arch}: modules are not built"
            );
        }
    }

    #[test]
    fn versions_sort_by_number() {
        let mut v = vec!["linux-source-6.12.tar.xz", "linux-source-6.1.tar.xz"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v, ["linux-source-6.1.tar.xz", "linux-source-6.12.tar.xz"]);
    }
}
