//! `cargo xtask bench`: b2c against what people use today, side by side,
//! in one run on one machine. Writes target/bench/results.md and
//! results.json and prints the table.
//!
//! - pull + unpack, cold, of a large multi-layer image served by a local
//!   registry: `b2c pull` vs `podman pull` vs `skopeo copy` + `umoci
//!   unpack` vs the floor (`tar -xzf` of the same layer files); and b2c
//!   vs podman on the same image in zstd (levels 3 and 19);
//! - push and pull of a volume (1,000 files, 200 MiB) to and from an S3
//!   server on loopback (s3s-fs): `b2c volume` vs `rclone sync`;
//! - boot under QEMU TCG to the status line: b2c vs a static init that
//!   powers off at once (the floor) vs a busybox script doing the same job;
//! - boot of the large image under QEMU TCG with a cache disk: b2c's first
//!   boot on a blank disk and its cached boot, against its hello boot and
//!   a busybox script pulling the same image onto the same kind of disk;
//! - on our own kernel too, when `cargo xtask kernel` has built it: the
//!   floor and b2c with an initramfs without modules;
//! - sizes of the initramfs (zstd, xz, none; arm64's with zstd) and of
//!   the init;
//! - peak RSS of the pulls.
//!
//! Next to results.md, `boot-<variant>.svg`: the chart of the median boot
//! of each b2c variant (`b2c plot` of its console), and `bigboot-<variant>.svg`:
//! the median first boot of the large image.

mod bigboot;
mod boot;
mod deps;
mod image;
mod measure;
mod pull;
mod registry;
mod report;
mod volume;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use qemu_tests::Arch;

use crate::initramfs::{self, Compression};
use crate::{kernel, run, workspace_root, Result};

pub const USAGE: &str =
    "  bench [OPTIONS]           b2c against podman, skopeo+umoci, tar, a busybox
                            script and a static init: pull, boot, size, memory;
                            writes target/bench/results.{md,json} and prints them,
                            and a boot chart per b2c variant (boot-<variant>.svg)
      --runs N              runs of each measurement (default 7; medians)
      --quick               one run each, no xz initramfs
      --no-pull, --no-volume, --no-boot, --no-big-boot
                            leave out the pull, the volume, the (hello) boot or
                            the large-image boot benchmark
      --big-runs N          rounds of the large-image boot (default 3, 1 with
                            --quick; each round is minutes of TCG)
      --initramfs LABEL=PATH  also boot this b2c initramfs (e.g. a patched
                            build) side by side with the others
      --no-arm64            leave out the arm64 initramfs's size (its first
                            cross build takes about 10 minutes)
";

#[derive(Debug)]
struct Options {
    runs: usize,
    quick: bool,
    pull: bool,
    volume: bool,
    boot: bool,
    big_boot: bool,
    /// Rounds of the large-image boot.
    big_runs: Option<usize>,
    arm64: bool,
    /// More b2c initramfs images to boot: (label, path).
    extra: Vec<(String, PathBuf)>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            runs: 7,
            quick: false,
            pull: true,
            volume: true,
            boot: true,
            big_boot: true,
            big_runs: None,
            arm64: true,
            extra: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => {
                    o.quick = true;
                    o.runs = 1;
                }
                // After --quick, --runs still sets the number of runs.
                "--runs" => {
                    o.runs = it
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--runs needs a number > 0")?
                }
                "--no-pull" => o.pull = false,
                "--no-volume" => o.volume = false,
                "--no-boot" => o.boot = false,
                "--no-big-boot" => o.big_boot = false,
                "--big-runs" => {
                    o.big_runs = Some(
                        it.next()
                            .and_then(|n| n.parse().ok())
                            .filter(|n| *n > 0)
                            .ok_or("--big-runs needs a number > 0")?,
                    )
                }
                "--no-arm64" => o.arm64 = false,
                "--initramfs" => {
                    let v = it.next().ok_or("--initramfs needs LABEL=PATH")?;
                    let (label, path) = v
                        .split_once('=')
                        .ok_or_else(|| format!("--initramfs {v}: expected LABEL=PATH"))?;
                    let path = std::fs::canonicalize(path)
                        .map_err(|e| format!("--initramfs {path}: {e}"))?;
                    o.extra.push((label.to_string(), path));
                }
                other => return Err(format!("bench: unknown option {other}").into()),
            }
        }
        Ok(o)
    }

    /// Rounds of the large-image boot: `--big-runs`, else as many as the
    /// other measurements up to [`bigboot::DEFAULT_RUNS`].
    fn big_runs(&self) -> usize {
        self.big_runs
            .unwrap_or_else(|| self.runs.min(bigboot::DEFAULT_RUNS))
    }
}

pub fn bench_dir() -> PathBuf {
    workspace_root().join("target/bench")
}

/// `rm -rf`, also of what podman's overlay driver may leave mounted.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            let prefix = path.to_string_lossy().into_owned();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|t| t.starts_with(&prefix))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = Command::new("umount").arg("-l").arg(t).status();
            }
            std::fs::remove_dir_all(path)
                .map_err(|e| format!("cannot remove {}: {first}; then {e}", path.display()).into())
        }
    }
}

/// The `b2c` command, built like the init (static musl, the release
/// profile): the pull it runs is the boot's, down to the allocator. Built
/// after the init, it reuses all of the init's compiled dependencies.
fn build_cli() -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["build", "--release", "-q", "--target", initramfs::TARGET])
        .args(["-p", "b2c"]))?;
    Ok(workspace_root().join(format!("target/{}/release/b2c", initramfs::TARGET)))
}

pub fn run_bench(args: &[String]) -> Result<()> {
    let start = Instant::now();
    let o = Options::parse(args)?;
    if unsafe { libc::geteuid() } != 0 {
        return Err("bench needs root (podman storage, drop_caches, network namespaces)".into());
    }
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let logs = dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;

    deps::ensure()?;
    kernel::fetch(Arch::X86_64, false)?;
    println!("bench: building the initramfs and the b2c command (release, static musl) ...");
    let initramfs_dir = dir.join("initramfs");
    std::fs::create_dir_all(&initramfs_dir)?;
    let compressions: &[(Compression, &str)] = if o.quick {
        &[(Compression::Zstd, "zst"), (Compression::None, "raw")]
    } else {
        &[
            (Compression::Zstd, "zst"),
            (Compression::Xz, "xz"),
            (Compression::None, "raw"),
        ]
    };
    let mut builds = Vec::new();
    for (c, ext) in compressions {
        builds.push(initramfs::build(&initramfs::Options {
            ca_cert: None,
            compression: *c,
            output: Some(initramfs_dir.join(format!("b2c.cpio.{ext}"))),
            modules: initramfs::ModuleSet::Farm,
            arch: Arch::X86_64,
        })?);
    }
    let arm64 = if o.arm64 {
        Some(initramfs::build(&initramfs::Options {
            ca_cert: None,
            compression: Compression::Zstd,
            output: Some(initramfs_dir.join("b2c-aarch64.cpio.zst")),
            modules: initramfs::ModuleSet::Farm,
            arch: Arch::Aarch64,
        })?)
    } else {
        None
    };
    // Our kernel, when built: b2c boots it with no module at all.
    let own_kernel = qemu_tests::own_kernel(Arch::X86_64);
    let no_modules = match own_kernel {
        Some(_) => Some(initramfs::build(&initramfs::Options {
            ca_cert: None,
            compression: Compression::Zstd,
            output: Some(initramfs_dir.join("b2c-no-modules.cpio.zst")),
            modules: initramfs::ModuleSet::None,
            arch: Arch::X86_64,
        })?),
        None => {
            println!("bench: no kernel of our own (`cargo xtask kernel`): booting Debian's only");
            None
        }
    };
    let cli = build_cli()?;
    let mut sizes = report::Sizes::measure(&builds)?;
    sizes.arm64_bytes = arm64.as_ref().map(|b| b.compressed_bytes);
    sizes.no_modules_bytes = no_modules.as_ref().map(|b| b.compressed_bytes);

    let pull = if o.pull {
        let image = image::get()?;
        println!("bench: starting a registry on loopback and pushing the image ...");
        let registry = registry::Registry::start(&dir.join("registry"))?;
        let refs = pull::References {
            gzip: registry.push(&image.layout, image::TAG, "bench/large:latest")?,
            zstd: image
                .zstd
                .iter()
                .map(|z| {
                    let name = format!("bench/{}:latest", z.tag);
                    Ok((z.level, registry.push(&image.layout, &z.tag, &name)?))
                })
                .collect::<Result<_>>()?,
        };
        let results = pull::bench(&image, &refs, &cli, o.runs, &dir.join("work"), &logs)?;
        drop(registry);
        Some((image, results))
    } else {
        None
    };

    let volume = if o.volume {
        println!("bench: volume push and pull, b2c and rclone, against s3s-fs on loopback ...");
        Some(volume::bench(&cli, o.runs, &dir.join("volume"), &logs)?)
    } else {
        None
    };

    let base = dir.join("baselines");
    let b2c_zstd = builds
        .iter()
        .find(|b| b.path.extension().is_some_and(|e| e == "zst"))
        .map(|b| b.path.clone())
        .ok_or("no zstd initramfs was built")?;
    let boot = if o.boot {
        let floor = boot::floor_initramfs(&base)?;
        let mut candidates = vec![
            boot::Candidate {
                key: "floor".into(),
                label: "floor: static init, powers off at once".into(),
                initramfs: floor.clone(),
                append: String::new(),
                kernel: None,
            },
            boot::Candidate {
                key: "busybox".into(),
                label: "busybox script: udhcpc, wget, tar, crun (zstd)".into(),
                initramfs: boot::busybox_initramfs(&base, &boot::hello_job())?,
                append: String::new(),
                kernel: None,
            },
        ];
        for b in &builds {
            let (key, what) = match b.path.extension().and_then(|e| e.to_str()) {
                Some("zst") => ("b2c-zstd", "zstd -19"),
                Some("xz") => ("b2c-xz", "xz -9"),
                _ => ("b2c-none", "uncompressed"),
            };
            candidates.push(boot::Candidate {
                key: key.into(),
                label: format!("b2c ({what})"),
                initramfs: b.path.clone(),
                append: boot::b2c_append(),
                kernel: None,
            });
        }
        if let (Some((image, release)), Some(bare)) = (&own_kernel, &no_modules) {
            let kernel = Some((image.clone(), release.clone()));
            candidates.push(boot::Candidate {
                key: boot::OWN_FLOOR.into(),
                label: format!("floor, our kernel {release}"),
                initramfs: floor.clone(),
                append: String::new(),
                kernel: kernel.clone(),
            });
            candidates.push(boot::Candidate {
                key: boot::OWN_BUSYBOX.into(),
                label: format!("busybox script (zstd), our kernel {release}, no modules"),
                initramfs: boot::busybox_initramfs(&base, &boot::hello_job_own_kernel())?,
                append: String::new(),
                kernel: kernel.clone(),
            });
            candidates.push(boot::Candidate {
                key: boot::OWN_B2C.into(),
                label: format!("b2c (zstd -19), our kernel {release}, no modules"),
                initramfs: bare.path.clone(),
                append: boot::b2c_append(),
                kernel,
            });
        }
        candidates.extend(extra_candidates(&o.extra));
        let mut results = boot::bench(&candidates, o.runs)?;
        results.write_charts(&dir)?;
        Some(results)
    } else {
        None
    };

    // The zstd initramfs (the default) and the ones given with
    // --initramfs: the others differ only in what the kernel unpacks,
    // which the hello boot measures.
    let big_boot = if o.big_boot {
        let image = image::get_gzip()?;
        let mut candidates = vec![boot::Candidate {
            key: "b2c-zstd".into(),
            label: "b2c (zstd -19)".into(),
            initramfs: b2c_zstd.clone(),
            append: boot::b2c_append(),
            kernel: None,
        }];
        candidates.extend(extra_candidates(&o.extra));
        let script = boot::busybox_initramfs(&base, &bigboot::script_job())?;
        let mut results = bigboot::bench(
            &candidates,
            &script,
            &image,
            o.big_runs(),
            &dir.join("bigboot"),
        )?;
        results.write_charts(&dir)?;
        Some(results)
    } else {
        None
    };

    let results = report::Results::new(
        &o,
        sizes,
        pull,
        volume,
        boot,
        big_boot,
        start.elapsed().as_secs_f64(),
    );
    let md = results.markdown();
    std::fs::write(dir.join("results.md"), &md)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("\n{md}");
    println!(
        "bench: wrote {} and {} ({:.1} min)",
        dir.join("results.md").display(),
        dir.join("results.json").display(),
        start.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// The boots of the initramfs images given with `--initramfs`.
fn extra_candidates(extra: &[(String, PathBuf)]) -> impl Iterator<Item = boot::Candidate> + '_ {
    extra.iter().map(|(label, path)| boot::Candidate {
        key: label.clone(),
        label: format!("{label} ({})", path.display()),
        initramfs: path.clone(),
        append: boot::b2c_append(),
        kernel: None,
    })
}
