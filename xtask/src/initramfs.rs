//! `cargo xtask initramfs`: the static init, a static crun, busybox and
//! mke2fs (in a compressed tar the init unpacks at their first use), the
//! kernel modules b2c needs, in one reproducible compressed cpio.
//!
//! crun is built from Debian's source package ([`crate::crun`]). For
//! x86_64 (the default) the other binaries are the machine's own, as
//! `make deps` installed them. For another architecture (`--arch
//! aarch64`) the init is cross-built and the binaries come from that
//! architecture's Debian packages, downloaded and unpacked
//! ([`crate::apt`]), never installed; the modules come from that
//! architecture's Debian kernel (`cargo xtask kernel --debian --arch
//! aarch64`).

use std::path::{Path, PathBuf};
use std::process::Command;

use b2c_system::modules::ModuleIndex;
use qemu_tests::Arch;

use crate::cpio::{Archive, Node};
use crate::{apt, crun, kernel, run, run_output, workspace_root, Result};

pub const TARGET: &str = "x86_64-unknown-linux-musl";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Xz,
    None,
}

/// Which kernel modules the initramfs ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSet {
    /// `initramfs/modules.txt`, and `initramfs/modules-ARCH.txt` for what
    /// only one architecture has: the drivers of a CI farm's machines.
    Farm,
    /// `initramfs/modules-virtio.txt`: a virtual machine's, nothing more.
    Virtio,
    /// None at all: for a kernel of one's own, whose modules come in an
    /// archive of their own (`cargo xtask modules`).
    None,
    /// A list of one's own, in the format of modules.txt.
    File(PathBuf),
}

impl ModuleSet {
    pub fn parse(value: &str) -> ModuleSet {
        match value {
            "farm" => ModuleSet::Farm,
            "virtio" => ModuleSet::Virtio,
            "none" => ModuleSet::None,
            file => ModuleSet::File(PathBuf::from(file)),
        }
    }

    /// The module names (or aliases) of the set, for a kernel of `arch`.
    pub fn names(&self, arch: Arch) -> Result<Vec<String>> {
        match self {
            ModuleSet::Farm => {
                let mut names = manifest("modules.txt")?;
                names.extend(manifest(&format!("modules-{arch}.txt"))?);
                Ok(names)
            }
            ModuleSet::Virtio => manifest("modules-virtio.txt"),
            ModuleSet::None => Ok(Vec::new()),
            ModuleSet::File(path) => manifest_at(path),
        }
    }
}

#[derive(Debug)]
pub struct Options {
    pub ca_cert: Option<PathBuf>,
    pub compression: Compression,
    pub output: Option<PathBuf>,
    pub modules: ModuleSet,
    pub arch: Arch,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            ca_cert: None,
            compression: Compression::Zstd,
            output: None,
            modules: ModuleSet::Farm,
            arch: Arch::X86_64,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--ca-cert" => o.ca_cert = Some(PathBuf::from(value()?)),
                "--output" => o.output = Some(PathBuf::from(value()?)),
                "--modules" => o.modules = ModuleSet::parse(value()?),
                "--arch" => o.arch = Arch::parse(value()?)?,
                "--compression" => {
                    o.compression = match value()?.as_str() {
                        "zstd" => Compression::Zstd,
                        "xz" => Compression::Xz,
                        "none" => Compression::None,
                        c => {
                            return Err(format!("unknown compression {c}: zstd, xz or none").into())
                        }
                    }
                }
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        Ok(o)
    }
}

pub fn out_dir() -> PathBuf {
    out_dir_for(Arch::X86_64)
}

/// Where the initramfs of `arch` goes: x86_64's where it always was,
/// another architecture's in a directory of its own.
pub fn out_dir_for(arch: Arch) -> PathBuf {
    workspace_root()
        .join("target")
        .join(arch.initramfs_subdir())
}

/// Lines of a manifest in initramfs/, without comments and blanks.
fn manifest(name: &str) -> Result<Vec<String>> {
    manifest_at(&workspace_root().join("initramfs").join(name))
}

fn manifest_at(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// The static init for `arch`: cross-built for another architecture with
/// the C compiler and linker .cargo/config.toml names (Debian's
/// gcc-aarch64-linux-gnu, for ring).
pub(crate) fn build_init(arch: Arch) -> Result<PathBuf> {
    let target = arch.rust_target();
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", target, "-p", "init"]))?;
    Ok(workspace_root().join(format!("target/{target}/release/init")))
}

/// A dynamic binary with the shared libraries and loader it needs, at the
/// paths the loader looks for them.
pub(crate) fn add_binary(archive: &mut Archive, binary: &str) -> Result<()> {
    let path = Path::new(binary);
    if !path.exists() {
        return Err(format!("{binary} is missing: run `make deps`").into());
    }
    archive.add_file(binary, path)?;
    let ldd = run_output("ldd", &[binary]).unwrap_or_default();
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|w| w.starts_with('/')),
        };
        if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
            // Read through symlinks: the archive gets the file at the name
            // the loader asks for.
            archive.add_file(lib, Path::new(lib))?;
        }
    }
    Ok(())
}

/// busybox and mke2fs with their libraries (initramfs/binaries.txt) and
/// links (initramfs/symlinks.txt), as the zstd tar that the init unpacks
/// at their first use (`b2c_system::tools`): needed on few boots, they
/// would cost the kernel's decompression of ~5 MiB on every one.
fn tools(arch: Arch, work: &Path) -> Result<PathBuf> {
    let mut tools = Archive::default();
    add_binaries(&mut tools, arch, work)?;
    for line in manifest("symlinks.txt")? {
        let (path, target) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("initramfs/symlinks.txt: {line:?} is not PATH TARGET"))?;
        tools.add(
            path,
            Node::Symlink {
                target: target.trim().to_string(),
            },
        );
    }
    let tar = work.join("tools.tar");
    tools.write_tar(std::io::BufWriter::new(std::fs::File::create(&tar)?))?;
    let out = work.join("tools.tar.zst");
    compress(&tar, Compression::Zstd, &out)?;
    Ok(out)
}

/// The binaries of initramfs/binaries.txt (`PATH PACKAGE` lines) with
/// what they need: the machine's own for x86_64, else unpacked from
/// `arch`'s Debian packages.
fn add_binaries(archive: &mut Archive, arch: Arch, work: &Path) -> Result<()> {
    let mut binaries = Vec::new();
    for line in manifest("binaries.txt")? {
        let mut words = line.split_whitespace();
        let (Some(path), Some(package)) = (words.next(), words.next()) else {
            return Err(format!("initramfs/binaries.txt: {line:?} is not PATH PACKAGE").into());
        };
        binaries.push((path.to_string(), package.to_string()));
    }
    if arch == Arch::X86_64 {
        for (path, _) in &binaries {
            add_binary(archive, path)?;
        }
        return Ok(());
    }
    let apt = kernel::foreign_apt(arch)?;
    apt.update_if_old()?;
    let packages: Vec<String> = binaries.iter().map(|(_, p)| p.clone()).collect();
    let packages = apt.with_dependencies(&packages)?;
    let debs_dir = workspace_root().join(format!("target/apt-{}/debs", arch.debian()));
    let debs = apt.download(&packages, &debs_dir)?;
    let root = work.join("packages");
    apt::unpack(&debs, &root)?;
    for (path, package) in &binaries {
        let file = usr_merged(&root, path)
            .ok_or_else(|| format!("the {} package {package} has no {path}", arch.debian()))?;
        add_foreign_binary(archive, arch, &root, path, &file)?;
    }
    Ok(())
}

/// `path` (absolute) under an unpacked `root`, found where Debian's
/// packages may put it before /usr was merged (/sbin/mke2fs for
/// /usr/sbin/mke2fs, and the other way), through the root's symbolic
/// links.
fn usr_merged(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    let other = match rel.strip_prefix("usr/") {
        Some(rest) => rest.to_string(),
        None => format!("usr/{rel}"),
    };
    [rel.to_string(), other]
        .iter()
        .find_map(|candidate| resolve_in_root(root, candidate))
}

/// A file of an unpacked root, following symbolic links (absolute ones
/// taken as inside the root).
fn resolve_in_root(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = root.join(rel.trim_start_matches('/'));
    for _ in 0..16 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&path).ok()?;
                path = match target.strip_prefix("/") {
                    Ok(inside) => root.join(inside),
                    Err(_) => path.parent()?.join(target),
                };
            }
            Ok(m) if m.is_file() => return Some(path),
            _ => return None,
        }
    }
    None
}

/// A dynamic binary of another architecture at `path` with its loader and
/// shared libraries (and theirs), taken from the unpacked `root`: ldd
/// cannot run it, so its ELF headers say what it needs. The libraries go
/// to /lib/TRIPLET, where the loader looks without an ld.so.cache.
fn add_foreign_binary(
    archive: &mut Archive,
    arch: Arch,
    root: &Path,
    path: &str,
    file: &Path,
) -> Result<()> {
    let triplet = format!("{}-linux-gnu", arch.name());
    let lib_dirs = [
        format!("lib/{triplet}"),
        format!("usr/lib/{triplet}"),
        "lib".to_string(),
        "usr/lib".to_string(),
    ];
    archive.add_file(path, file)?;
    let mut pending = vec![file.to_path_buf()];
    let mut added = std::collections::BTreeSet::new();
    while let Some(elf) = pending.pop() {
        let (interpreter, needed) = elf_dependencies(&elf)?;
        if let Some(interp) = interpreter {
            let found = resolve_in_root(root, &interp)
                .ok_or_else(|| format!("{}: no loader {interp} in the packages", elf.display()))?;
            archive.add_file(&interp, &found)?;
            // libc needs the loader by name: the one already loaded, at
            // the interpreter's path, is it.
            if let Some(name) = Path::new(&interp).file_name() {
                added.insert(name.to_string_lossy().into_owned());
            }
        }
        for name in needed {
            if !added.insert(name.clone()) {
                continue;
            }
            let found = lib_dirs
                .iter()
                .find_map(|dir| resolve_in_root(root, &format!("{dir}/{name}")))
                .ok_or_else(|| {
                    format!(
                        "{} needs {name}, which no package unpacked has (a dependency apt does not know?)",
                        elf.display()
                    )
                })?;
            archive.add_file(&format!("lib/{triplet}/{name}"), &found)?;
            pending.push(found);
        }
    }
    Ok(())
}

/// The program interpreter and the DT_NEEDED libraries of an ELF file,
/// as binutils' readelf (which reads every architecture's) shows them.
pub(crate) fn elf_dependencies(elf: &Path) -> Result<(Option<String>, Vec<String>)> {
    let elf = elf.to_string_lossy();
    let headers = run_output("readelf", &["--wide", "--program-headers", &elf])?;
    // "      [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]"
    let interpreter = headers.lines().find_map(|l| {
        let (_, rest) = l.split_once("program interpreter: ")?;
        Some(rest.trim_end_matches(']').to_string())
    });
    let dynamic = run_output("readelf", &["--wide", "--dynamic", &elf])?;
    // " 0x0000000000000001 (NEEDED)  Shared library: [libc.so.6]"
    let needed = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let (_, rest) = l.split_once('[')?;
            Some(rest.trim_end_matches(']').to_string())
        })
        .collect();
    Ok((interpreter, needed))
}

/// The modules of the set and everything they need, with a modules.dep
/// made for exactly that set.
fn add_modules(
    archive: &mut Archive,
    kernel: &kernel::Kernel,
    set: &ModuleSet,
    arch: Arch,
    work: &Path,
) -> Result<usize> {
    let wanted = set.names(arch)?;
    if wanted.is_empty() {
        return Ok(0);
    }
    let stage = work.join("modules");
    let staged = stage_modules(&kernel.modules, &kernel.release, &wanted, true, &stage)?;
    archive.add_tree(&format!("lib/modules/{}", kernel.release), &staged.dir)?;
    Ok(staged.count)
}

/// What [`stage_modules`] made.
pub(crate) struct Staged {
    /// `STAGE/lib/modules/RELEASE`.
    pub dir: PathBuf,
    /// Module files in it.
    pub count: usize,
    /// Names the kernel has built in.
    pub built_in: Vec<String>,
    /// Names the kernel has neither as a module nor built in.
    pub absent: Vec<String>,
}

/// Copies the modules `names` stand for (with what they need) from `src`
/// (a kernel's `/lib/modules/RELEASE`) to `stage/lib/modules/RELEASE`,
/// compressed modules unpacked, and indexes them with depmod, keeping the
/// indexes b2c reads. `strict`: a name the kernel lacks is an error, else
/// it is reported and skipped (another kernel's configuration).
pub(crate) fn stage_modules(
    src: &Path,
    release: &str,
    names: &[String],
    strict: bool,
    stage: &Path,
) -> Result<Staged> {
    let index = ModuleIndex::load(src)?;
    let builtin = std::fs::read_to_string(src.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |name: &str| {
        let name = name.replace('-', "_");
        builtin
            .lines()
            .any(|l| b2c_system::modules::module_name(l) == name)
    };
    let (mut kept, mut built_in, mut absent) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        if !index.resolve(name).is_empty() {
            kept.push(name.clone());
        } else if is_builtin(name) {
            built_in.push(name.clone());
        } else if strict {
            return Err(format!("{}: no module {name} in this kernel", src.display()).into());
        } else {
            absent.push(name.clone());
        }
    }
    let files = index.load_order(&kept)?;
    let _ = std::fs::remove_dir_all(stage);
    let dest = stage.join("lib/modules").join(release);
    std::fs::create_dir_all(&dest)?;
    for file in &files {
        let rel = file.strip_prefix(src)?;
        let (unpacked, tool) = match rel.extension().and_then(|e| e.to_str()) {
            Some("xz") => (rel.with_extension(""), Some("xz")),
            Some("zst") => (rel.with_extension(""), Some("zstd")),
            Some("gz") => (rel.with_extension(""), Some("gzip")),
            _ => (rel.to_path_buf(), None),
        };
        let to = dest.join(&unpacked);
        std::fs::create_dir_all(to.parent().unwrap())?;
        match tool {
            None => {
                std::fs::copy(file, &to)?;
            }
            Some(tool) => run(Command::new(tool)
                .args(["-d", "-c", "-q"])
                .arg(file)
                .stdout(std::fs::File::create(&to)?))?,
        }
        // Each module as .ko.zst: the kernel unpacks a smaller archive
        // at every boot (under TCG, unpacking the farm's 17 MB of plain
        // modules cost more than loading the few a machine needs), and b2c
        // decompresses only the modules it loads. depmod reads them as
        // they are.
        compress_module(&to)?;
    }
    // depmod orders its output by modules.order; builtin keeps modprobe
    // names of built-in modules resolvable.
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if let Ok(text) = std::fs::read(src.join(f)) {
            let text = String::from_utf8_lossy(&text)
                .replace(".ko.xz", ".ko")
                .replace(".ko.zst", ".ko")
                .replace(".ko.gz", ".ko");
            std::fs::write(dest.join(f), text)?;
        }
    }
    run(Command::new("depmod").arg("-b").arg(stage).arg(release))?;
    // What b2c reads (and busybox modprobe, for b2c.shell); the binary
    // indexes, symbols and the whole kernel's modules.order are kmod's.
    for entry in std::fs::read_dir(&dest)? {
        let path = entry?.path();
        let keep = [
            "modules.dep",
            "modules.softdep",
            "modules.alias",
            "modules.builtin",
        ];
        if path.is_file() && !keep.iter().any(|k| path.ends_with(k)) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(Staged {
        dir: dest,
        count: files.len(),
        built_in,
        absent,
    })
}

/// `module` replaced by `module.zst` (zstd -19), taken from a cache of
/// earlier builds by the module's content when it is there: zstd -19 of
/// a hundred modules took half of a build (20–30 s), and the QEMU tests
/// build several initramfs variants.
fn compress_module(module: &Path) -> Result<()> {
    use sha2::Digest;
    let data = std::fs::read(module)?;
    let cache = workspace_root().join("target/modules-zst");
    let cached = cache.join(format!(
        "{}.ko.zst",
        hex::encode(sha2::Sha256::digest(&data))
    ));
    let mut out = module.as_os_str().to_os_string();
    out.push(".zst");
    if !cached.is_file() {
        std::fs::create_dir_all(&cache)?;
        // Unique: builds of other outputs may run at the same time.
        let partial = cache.join(format!(
            "{}.partial-{}",
            cached.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        run(Command::new("zstd")
            .args(["-q", "-19", "-T1", "-f", "-o"])
            .arg(&partial)
            .arg(module))?;
        std::fs::rename(&partial, &cached)?;
    }
    std::fs::copy(&cached, &out)?;
    std::fs::remove_file(module)?;
    Ok(())
}

pub(crate) fn compress(cpio: &Path, compression: Compression, out: &Path) -> Result<()> {
    let mut cmd = match compression {
        Compression::Zstd => {
            let mut c = Command::new("zstd");
            c.args(["-q", "-f", "-19", "-T1", "-o"]).arg(out).arg(cpio);
            c
        }
        // The kernel's xz decoder knows CRC32 but not the default CRC64.
        Compression::Xz => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"xz -9 -T1 --check=crc32 -c "$1" > "$2""#)
                .arg("xz")
                .arg(cpio)
                .arg(out);
            c
        }
        Compression::None => {
            std::fs::copy(cpio, out)?;
            return Ok(());
        }
    };
    run(&mut cmd)
}

/// What [`build`] made.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: PathBuf,
    pub compressed_bytes: u64,
    /// The cpio archive before compression.
    pub uncompressed_bytes: u64,
    pub init_bytes: u64,
}

pub fn build(o: &Options) -> Result<Built> {
    let ext = match o.compression {
        Compression::Zstd => "cpio.zst",
        Compression::Xz => "cpio.xz",
        Compression::None => "cpio.raw",
    };
    let out = o
        .output
        .clone()
        .unwrap_or_else(|| out_dir_for(o.arch).join(format!("b2c.{ext}")));
    // Everything made on the way sits beside the output, so that builds
    // of different outputs can run at the same time.
    let sibling = |suffix: &str| {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        out.with_file_name(name)
    };
    let work = sibling(".work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    // Debian's kernel only for its modules: an initramfs without any
    // (for a kernel of one's own) needs none fetched.
    let kernel = if o.modules.names(o.arch)?.is_empty() {
        None
    } else {
        Some(kernel::fetch(o.arch, false)?)
    };
    let init = build_init(o.arch)?;
    let init_size = std::fs::metadata(&init)?.len();
    let mut archive = Archive::for_init(&init)?;
    for dir in ["proc", "sys", "run", "tmp", "etc", "storage"] {
        archive.add(dir, Node::Dir { mode: 0o755 });
    }
    archive.add_file("usr/bin/crun", &crun::binary(o.arch)?)?;
    archive.add_file(
        b2c_system::tools::ARCHIVE.trim_start_matches('/'),
        &tools(o.arch, &work)?,
    )?;
    let modules = match &kernel {
        Some(kernel) => add_modules(&mut archive, kernel, &o.modules, o.arch, &work)?,
        None => 0,
    };
    if let Some(ca) = &o.ca_cert {
        archive.add_file("etc/b2c/ca.pem", ca)?;
    }

    let cpio_path = sibling(".cpio-partial");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&cpio_path)?);
    let size = archive.write(&mut file)?;
    std::io::Write::flush(&mut file)?;
    drop(file);
    let compressed = sibling(".partial");
    compress(&cpio_path, o.compression, &compressed)?;
    std::fs::remove_file(&cpio_path)?;
    std::fs::remove_dir_all(&work)?;
    std::fs::rename(&compressed, &out)?;
    let built = Built {
        compressed_bytes: std::fs::metadata(&out)?.len(),
        uncompressed_bytes: size,
        init_bytes: init_size,
        path: out,
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "initramfs {}: {:.2} MiB compressed, {:.2} MiB uncompressed, init {:.2} MiB stripped, {modules} kernel modules ({}, {})",
        built.path.display(),
        mib(built.compressed_bytes),
        mib(built.uncompressed_bytes),
        mib(built.init_bytes),
        kernel
            .as_ref()
            .map_or("for any kernel".to_string(), |k| format!("kernel {}", k.release)),
        o.arch,
    );
    Ok(built)
}
