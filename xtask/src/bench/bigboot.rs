//! The large image booted under QEMU TCG with a cache disk: the image of
//! the pull benchmark ([`super::image::LargeImage`]: 6 gzip layers,
//! 373 MB unpacked) pushed to the test network's registry, pulled by b2c
//! onto a blank virtio disk (`b2c.cache_device=auto`, a fresh sparse
//! image each round: b2c partitions and formats it), booted again on the
//! same disk (the image is up to date: nothing is downloaded), and the
//! same job done by a busybox script on a blank disk of its own
//! ([`super::boot::busybox_script`] with a disk: mke2fs as b2c, every
//! layer `wget | tar -xz` at once into a directory of its own, overlayfs,
//! crun). Each round also boots the hello image, so that the big boots
//! are compared with a hello boot of the same round: this shared
//! machine's speed drifts between rounds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qemu_tests::{BootOptions, TestNet};

use super::boot::{self, Candidate};
use super::image::{self, LargeImage};
use super::measure::{median, paired_median, paired_ratio};
use crate::{run, Result};

/// Rounds when `--big-runs` does not say: a round is minutes of TCG.
pub const DEFAULT_RUNS: usize = 3;
const REPOSITORY: &str = "bench/large";
pub const IMAGE: &str = "10.99.0.1:5000/bench/large:latest";
/// The compiler driver of the image: its output proves that the layers
/// are stacked (`/usr/bin/gcc` is in one layer, what it links in others).
pub const COMMAND: &[&str] = &["gcc", "--version"];
const EXPECT: &str = "gcc (Debian";
/// Sparse; b2c's `auto` wants at least 1 GiB, and the image takes 0.4.
pub const DISK_BYTES: u64 = 4 << 30;
/// A first boot pulls 125 MB and writes 373 MB under TCG.
const TIMEOUT: Duration = Duration::from_secs(600);

/// The busybox script's job on the large image.
pub fn script_job() -> boot::ScriptJob<'static> {
    boot::ScriptJob {
        name: "busybox-big",
        image: IMAGE,
        command: COMMAND,
        disk: Some("/dev/vda"),
        kernel_modules: true,
    }
}

/// What each b2c boot appends to `console=ttyS0 panic=-1` and
/// [`qemu_tests::TCG_KERNEL_ARGS`].
pub fn b2c_append() -> String {
    format!(
        r#"b2c.cache_device=auto b2c.run="--tls-verify=false docker://{IMAGE} {}""#,
        COMMAND.join(" ")
    )
}

/// One b2c initramfs, round by round (seconds from QEMU's start to the
/// status line).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BigVariant {
    pub key: String,
    pub label: String,
    /// The hello image, no disk: [`super::boot`]'s boot.
    pub hello: Vec<f64>,
    /// The large image onto a blank disk.
    pub first: Vec<f64>,
    /// Again on the same disk: nothing downloaded.
    pub cached: Vec<f64>,
    /// The first boot until QEMU exited: after the power-off and the
    /// write-back before it.
    pub first_exit: Vec<f64>,
    /// By the guest's clock, the kernel starting /init → the kernel
    /// powering off ([`boot::userland_seconds`]): without QEMU's start and
    /// the kernel's boot, which vary most on a loaded machine.
    pub hello_userland: Vec<f64>,
    pub first_userland: Vec<f64>,
    pub cached_userland: Vec<f64>,
    /// The b2c console lines of the median first boot.
    pub timeline: Vec<String>,
    /// The whole console of the median first boot, for its chart and its
    /// phases.
    #[serde(skip)]
    pub console: String,
    /// The consoles of the median hello and cached boots, for their
    /// phases side by side.
    #[serde(skip)]
    pub hello_console: String,
    #[serde(skip)]
    pub cached_console: String,
}

impl BigVariant {
    /// First boot ÷ hello boot, round by round.
    pub fn first_to_hello(&self) -> f64 {
        paired_ratio(&self.first, &self.hello)
    }

    pub fn cached_to_hello(&self) -> f64 {
        paired_ratio(&self.cached, &self.hello)
    }

    /// Cached boot − hello boot, round by round.
    pub fn cached_over_hello(&self) -> f64 {
        paired_median(&self.cached, &self.hello)
    }

    pub fn first_to_script(&self, script: &ScriptRuns) -> f64 {
        paired_ratio(&self.first, &script.seconds)
    }

    /// Cached − hello round by round, by the guest's clock.
    pub fn cached_over_hello_userland(&self) -> f64 {
        paired_median(&self.cached_userland, &self.hello_userland)
    }
}

/// The busybox script on the large image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScriptRuns {
    pub label: String,
    pub seconds: Vec<f64>,
    /// Until QEMU exited: `poweroff -f` syncs first.
    pub exit: Vec<f64>,
    /// /init → power-off by the guest's clock, as [`BigVariant`]'s.
    pub userland: Vec<f64>,
    /// The script's own `script: WHAT at UPTIME s` lines, by step: the
    /// uptime of each, one per round.
    pub steps: Vec<(String, Vec<f64>)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BigBootResults {
    pub image: String,
    pub layers: usize,
    pub compressed_bytes: u64,
    pub unpacked_bytes: u64,
    pub files: u64,
    pub disk_bytes: u64,
    pub command: String,
    pub runs: usize,
    pub variants: Vec<BigVariant>,
    pub script: ScriptRuns,
    /// The first boots' charts written next to results.md, by variant key.
    pub charts: Vec<(String, String)>,
    /// Wall time of each round, all its boots.
    pub round_seconds: Vec<f64>,
}

impl BigBootResults {
    pub fn variant(&self, key: &str) -> Option<&BigVariant> {
        self.variants.iter().find(|v| v.key == key)
    }

    /// Writes `bigboot-<variant>.svg` in `dir`, the chart of each
    /// variant's median first boot, after removing those of an earlier
    /// run.
    pub fn write_charts(&mut self, dir: &Path) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("bigboot-") && name.ends_with(".svg") {
                std::fs::remove_file(dir.join(&name))?;
            }
        }
        self.charts.clear();
        for v in &self.variants {
            let Ok(timeline) = b2c_bootchart::parse(&v.console) else {
                continue;
            };
            let file = format!("bigboot-{}.svg", boot::file_safe(&v.key));
            std::fs::write(dir.join(&file), b2c_bootchart::render_svg(&timeline))?;
            self.charts.push((v.key.clone(), file));
        }
        Ok(())
    }
}

/// The script's `script: WHAT at UPTIME s` lines, in order.
pub fn script_steps(console: &str) -> Vec<(String, f64)> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("script: ")?;
            let (what, at) = rest.rsplit_once(" at ")?;
            Some((what.to_string(), at.strip_suffix(" s")?.parse().ok()?))
        })
        .collect()
}

/// One boot that must run its job to status 0, printing `expect`.
fn boot_ok(net: &TestNet, opts: &BootOptions, expect: &str) -> Result<qemu_tests::Boot> {
    let boot = net.boot(opts)?;
    if boot.status_at.is_none()
        || boot.status() != Some(0)
        || !boot.exited
        || !boot.console.contains(expect)
    {
        return Err(format!(
            "{}: the boot did not run its job to status 0 (expected {expect:?} on the console): see {}",
            opts.name,
            boot.log_path.display()
        )
        .into());
    }
    Ok(boot)
}

fn options(
    name: &str,
    initramfs: &Path,
    append: &str,
    disk: Option<&Path>,
    kernel: &Path,
) -> BootOptions {
    let mut opts = BootOptions::new(name, append);
    opts.initramfs = initramfs.to_path_buf();
    opts.kernel = kernel.to_path_buf();
    opts.timeout = TIMEOUT;
    match disk {
        Some(disk) => opts.with_disk(disk),
        None => opts,
    }
}

/// A blank sparse disk at `path`, replacing the last round's.
fn blank_disk(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().ok_or("a disk path has a parent")?;
    let name = path.file_name().ok_or("a disk path has a name")?;
    Ok(qemu_tests::disk::blank_disk(
        dir,
        &name.to_string_lossy(),
        DISK_BYTES,
    )?)
}

fn secs(boot: &qemu_tests::Boot) -> f64 {
    boot.status_at.map_or(f64::NAN, |d| d.as_secs_f64())
}

/// Boots, round by round: the script, then for each b2c variant its
/// hello boot, its first boot and its cached boot. Disk images go in
/// `work` (removed at the end).
pub fn bench(
    variants: &[Candidate],
    script_initramfs: &Path,
    image: &LargeImage,
    runs: usize,
    work: &Path,
) -> Result<BigBootResults> {
    std::fs::create_dir_all(work)?;
    println!("bench: big boot: starting the test network and pushing the large image ...");
    let net = TestNet::start()?;
    run(net
        .command("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{}", image.layout.display(), image::TAG))
        .arg(format!("docker://{IMAGE}")))?;
    let kernel = qemu_tests::default_kernel();
    let mut results: Vec<BigVariant> = variants
        .iter()
        .map(|c| BigVariant {
            key: c.key.clone(),
            label: c.label.clone(),
            hello: Vec::new(),
            first: Vec::new(),
            cached: Vec::new(),
            first_exit: Vec::new(),
            hello_userland: Vec::new(),
            first_userland: Vec::new(),
            cached_userland: Vec::new(),
            timeline: Vec::new(),
            console: String::new(),
            hello_console: String::new(),
            cached_console: String::new(),
        })
        .collect();
    let mut script = ScriptRuns {
        label: "busybox script: mke2fs, wget | tar -xz of every layer at once, overlayfs, crun"
            .into(),
        seconds: Vec::new(),
        exit: Vec::new(),
        userland: Vec::new(),
        steps: Vec::new(),
    };
    // (seconds, console) of each boot, by variant: the median's console
    // is kept.
    let mut consoles: Vec<[Vec<(f64, String)>; 3]> = vec![Default::default(); variants.len()];
    let userland = |b: &qemu_tests::Boot| boot::userland_seconds(&b.console).unwrap_or(f64::NAN);
    let mut round_seconds = Vec::new();
    let disk = work.join("disk.img");
    let progress = |round: usize, what: &str, key: &str, boot: &qemu_tests::Boot| {
        println!(
            "bench: big boot {}/{runs} {what:<7} {key:<12} {:6.2} s to the status line, {:6.2} s to QEMU's exit",
            round + 1,
            secs(boot),
            boot.elapsed.as_secs_f64()
        );
    };
    for round in 0..runs {
        let start = Instant::now();
        let opts = options(
            &format!("bigboot-script-{round}"),
            script_initramfs,
            "",
            Some(&blank_disk(&disk)?),
            &kernel,
        );
        let b = boot_ok(&net, &opts, EXPECT)?;
        progress(round, "script", "busybox", &b);
        script.seconds.push(secs(&b));
        script.exit.push(b.elapsed.as_secs_f64());
        script.userland.push(userland(&b));
        for (what, at) in script_steps(&b.console) {
            match script.steps.iter_mut().find(|(w, _)| *w == what) {
                Some((_, v)) => v.push(at),
                None => script.steps.push((what, vec![at])),
            }
        }
        for (i, c) in variants.iter().enumerate() {
            let v = &mut results[i];
            let name = |what: &str| format!("bigboot-{}-{what}-{round}", c.key);
            let opts = options(&name("hello"), &c.initramfs, &c.append, None, &kernel);
            let b = boot_ok(&net, &opts, &format!("\n{}", boot::HELLO))?;
            progress(round, "hello", &c.key, &b);
            v.hello.push(secs(&b));
            v.hello_userland.push(userland(&b));
            consoles[i][0].push((secs(&b), b.console.clone()));

            let append = b2c_append();
            let disk = blank_disk(&disk)?;
            let opts = options(&name("first"), &c.initramfs, &append, Some(&disk), &kernel);
            let b = boot_ok(&net, &opts, EXPECT)?;
            progress(round, "first", &c.key, &b);
            v.first.push(secs(&b));
            v.first_exit.push(b.elapsed.as_secs_f64());
            v.first_userland.push(userland(&b));
            consoles[i][1].push((secs(&b), b.console.clone()));

            let downloads = net.blob_downloads(REPOSITORY);
            let opts = options(&name("cached"), &c.initramfs, &append, Some(&disk), &kernel);
            let b = boot_ok(&net, &opts, EXPECT)?;
            progress(round, "cached", &c.key, &b);
            let again = net.blob_downloads(REPOSITORY) - downloads;
            if again > 0 || !b.console.contains(" is up to date: ") {
                return Err(format!(
                    "{}: the boot on the cached disk downloaded {again} blobs, or did not find \
                     the image up to date: see {}",
                    c.key,
                    b.log_path.display()
                )
                .into());
            }
            v.cached.push(secs(&b));
            v.cached_userland.push(userland(&b));
            consoles[i][2].push((secs(&b), b.console.clone()));
        }
        round_seconds.push(start.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_file(&disk);
    for (v, [hello, first, cached]) in results.iter_mut().zip(consoles) {
        v.hello_console = median_console(hello);
        v.console = median_console(first);
        v.cached_console = median_console(cached);
        v.timeline = boot::timeline(&v.console);
    }
    Ok(BigBootResults {
        image: IMAGE.into(),
        layers: image.layers.len(),
        compressed_bytes: image.compressed(),
        unpacked_bytes: image.unpacked_bytes,
        files: image.files,
        disk_bytes: DISK_BYTES,
        command: COMMAND.join(" "),
        runs,
        variants: results,
        script,
        charts: Vec::new(),
        round_seconds,
    })
}

/// The console of the median boot of `runs`, (seconds, console) each.
fn median_console(mut runs: Vec<(f64, String)>) -> String {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mid = runs.len() / 2;
    runs.into_iter()
        .nth(mid)
        .map(|(_, c)| c)
        .unwrap_or_default()
}

impl ScriptRuns {
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_console() {
        let runs = |v: &[(f64, &str)]| v.iter().map(|(s, c)| (*s, c.to_string())).collect();
        assert_eq!(
            median_console(runs(&[(9.0, "c"), (1.0, "a"), (5.0, "b")])),
            "b"
        );
        assert_eq!(median_console(runs(&[])), "");
    }

    #[test]
    fn script_steps_from_its_console() {
        let console = "[    1.2] Run /init as init process\n\
                       script: modules loaded at 2.31 s\n\
                       insmod: can't insert 'crc32c-intel.ko': No such device\n\
                       script: 6 layers unpacked at 40.50 s\n\
                       script: broken at x s\n\
                       Execution is over, pipeline status: 0\n";
        assert_eq!(
            script_steps(console),
            [
                ("modules loaded".to_string(), 2.31),
                ("6 layers unpacked".to_string(), 40.5)
            ]
        );
    }

    #[test]
    fn ratios_of_a_variant_are_per_round() {
        let v = BigVariant {
            key: "b2c-zstd".into(),
            label: "b2c".into(),
            hello: vec![4.0, 8.0, 5.0],
            first: vec![20.0, 32.0, 30.0],
            cached: vec![5.0, 8.5, 6.5],
            first_exit: vec![],
            hello_userland: vec![3.0, 3.5, 3.2],
            first_userland: vec![],
            cached_userland: vec![3.5, 4.5, 3.3],
            timeline: vec![],
            console: String::new(),
            hello_console: String::new(),
            cached_console: String::new(),
        };
        assert!((v.cached_over_hello_userland() - 0.5).abs() < 1e-9);
        assert_eq!(v.first_to_hello(), 5.0);
        assert_eq!(v.cached_over_hello(), 1.0);
        assert_eq!(v.cached_to_hello(), 1.25);
        let script = ScriptRuns {
            label: "s".into(),
            seconds: vec![40.0, 40.0, 50.0],
            exit: vec![],
            userland: vec![],
            steps: vec![],
        };
        assert_eq!(v.first_to_script(&script), 0.6);
    }

    #[test]
    fn b2c_and_the_script_do_the_same_job() {
        let append = b2c_append();
        assert_eq!(
            append,
            "b2c.cache_device=auto b2c.run=\"--tls-verify=false \
             docker://10.99.0.1:5000/bench/large:latest gcc --version\""
        );
        let script = boot::busybox_script(&script_job());
        assert!(script.contains("repo=http://10.99.0.1:5000/v2/bench/large\n"));
        assert!(script.contains("/manifests/latest\""));
        assert!(script.contains(r#""gcc", "--version""#));
    }
}
