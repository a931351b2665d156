//! `cargo xtask modules --kernel-modules DIR`: the drivers b2c ships,
//! taken from another kernel's `/lib/modules/VERSION` tree (a farm's own
//! build, another distribution's), in an archive a boot loader loads after
//! the initramfs. b2c looks for the modules of the kernel it runs on
//! (`/lib/modules/$(uname -r)`) in the merged tree, so one initramfs boots
//! any kernel its modules archive was made for.

use std::path::{Path, PathBuf};

use crate::cpio::Archive;
use qemu_tests::Arch;

use crate::initramfs::{self, Compression, ModuleSet};
use crate::{workspace_root, Result};

#[derive(Debug)]
pub struct Options {
    pub kernel_modules: PathBuf,
    pub modules: ModuleSet,
    pub output: Option<PathBuf>,
    pub compression: Compression,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut kernel_modules = None;
        let mut o = Options {
            kernel_modules: PathBuf::new(),
            modules: ModuleSet::Farm,
            output: None,
            compression: Compression::Zstd,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--kernel-modules" => kernel_modules = Some(PathBuf::from(value()?)),
                "--modules" => o.modules = ModuleSet::parse(value()?),
                "--output" => o.output = Some(PathBuf::from(value()?)),
                "--compression" => {
                    o.compression = match value()?.as_str() {
                        "zstd" => Compression::Zstd,
                        "none" => Compression::None,
                        c => return Err(format!("unknown compression {c}: zstd or none").into()),
                    }
                }
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        o.kernel_modules = kernel_modules
            .ok_or("--kernel-modules DIR is needed: a kernel's /lib/modules/VERSION")?;
        Ok(o)
    }
}

/// The kernel release a `/lib/modules/VERSION` directory is for.
fn release_of(dir: &Path) -> Result<String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: not a /lib/modules/VERSION directory", dir.display()).into())
}

pub fn build(o: &Options) -> Result<PathBuf> {
    let release = release_of(&o.kernel_modules)?;
    let out = o
        .output
        .clone()
        .unwrap_or_else(|| initramfs::out_dir().join(format!("b2c-modules-{release}.cpio.zst")));
    let work = workspace_root().join("target/modules").join(&release);
    let staged = initramfs::stage_modules(
        &o.kernel_modules,
        &release,
        &o.modules.names(Arch::X86_64)?,
        false,
        &work.join("stage"),
    )?;
    let mut archive = Archive::default();
    archive.add_tree(&format!("lib/modules/{release}"), &staged.dir)?;
    let cpio = work.join("modules.cpio");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&cpio)?);
    archive.write(&mut file)?;
    std::io::Write::flush(&mut file)?;
    drop(file);
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    let partial = out.with_extension("partial");
    initramfs::compress(&cpio, o.compression, &partial)?;
    std::fs::rename(&partial, &out)?;
    println!(
        "modules {}: {} modules for kernel {release}, {:.2} MiB",
        out.display(),
        staged.count,
        std::fs::metadata(&out)?.len() as f64 / (1024.0 * 1024.0)
    );
    if !staged.built_in.is_empty() {
        println!("built into that kernel: {}", staged.built_in.join(", "));
    }
    if !staged.absent.is_empty() {
        println!(
            "neither a module nor built into that kernel (their devices will get no driver): {}",
            staged.absent.join(", ")
        );
    }
    Ok(out)
}
