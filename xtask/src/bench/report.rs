//! The results: one serializable record, rendered as markdown.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::boot::{BootResults, OWN_B2C};
use super::image::LargeImage;
use super::pull::{PullResults, ToolRuns};
use super::volume::VolumeResults;
use super::Options;
use crate::initramfs::Built;
use crate::{run_output, Result};

const MB: f64 = 1e6;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, serde::Serialize)]
pub struct Sizes {
    /// Compressed initramfs by compression (`zst`, `xz`, `raw`).
    pub initramfs_bytes: BTreeMap<String, u64>,
    pub uncompressed_bytes: u64,
    pub init_stripped_bytes: u64,
    /// What the uncompressed archive is made of.
    pub breakdown: BTreeMap<String, u64>,
    /// arm64's initramfs (zstd), the farm's drivers from Debian's arm64
    /// kernel.
    pub arm64_bytes: Option<u64>,
    /// x86_64's without any module, for our kernel (zstd).
    pub no_modules_bytes: Option<u64>,
}

impl Sizes {
    pub fn measure(builds: &[Built]) -> Result<Sizes> {
        let mut initramfs_bytes = BTreeMap::new();
        let mut breakdown = BTreeMap::new();
        for b in builds {
            let ext = b
                .path
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            if ext == "raw" {
                breakdown = cpio_breakdown(&b.path)?;
            }
            initramfs_bytes.insert(ext, b.compressed_bytes);
        }
        Ok(Sizes {
            initramfs_bytes,
            uncompressed_bytes: builds.first().map_or(0, |b| b.uncompressed_bytes),
            init_stripped_bytes: builds.first().map_or(0, |b| b.init_bytes),
            breakdown,
            arm64_bytes: None,
            no_modules_bytes: None,
        })
    }

    fn zstd(&self) -> u64 {
        self.initramfs_bytes.get("zst").copied().unwrap_or(0)
    }
}

/// File sizes of an uncompressed cpio, by what they are for.
fn cpio_breakdown(cpio: &Path) -> Result<BTreeMap<String, u64>> {
    let listing = run_output("cpio", &["-itv", "--quiet", "-F", &cpio.to_string_lossy()])?;
    let mut out = BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[0].starts_with('-') {
            continue;
        }
        let size: u64 = f[4].parse().unwrap_or(0);
        let name = f[8];
        let group = if name == "init" {
            "init (b2c)"
        } else if name.starts_with("lib/modules/") {
            "kernel modules"
        } else if name.ends_with("/crun") {
            "crun"
        } else if name.ends_with("/busybox") {
            "busybox"
        } else if name.ends_with("/mke2fs") {
            "mke2fs"
        } else {
            "shared libraries and loader (crun, mke2fs)"
        };
        *out.entry(group.to_string()).or_insert(0) += size;
    }
    Ok(out)
}

/// Steps of a b2c boot, from its console lines: each step ends at the
/// first line containing its marker.
const PHASES: &[(&str, &str)] = &[
    ("kernel boot, initramfs unpacked, b2c started", "]: b2c "),
    ("kernel modules", "kernel modules"),
    ("network (DHCP)", "]: network: "),
    ("clock (SNTP)", "clock set"),
    ("until the pull starts", "]: pulling "),
    ("pull (manifest, config, layer)", "]: pulled "),
    ("container set up", "]: running "),
    ("container run (crun)", "exited with status"),
    ("status line", "Execution is over"),
];

fn phases(timeline: &[String]) -> Vec<(&'static str, f64)> {
    // A section header line starts with GitLab's marker, then `\r ESC[0K`.
    let stamp = |l: &str| -> Option<f64> {
        let l = l.rsplit("\x1b[0K").next()?;
        l.strip_prefix('[')?.split(']').next()?.trim().parse().ok()
    };
    let mut out = Vec::new();
    let mut prev = 0.0;
    for (name, marker) in PHASES {
        if let Some(t) = timeline
            .iter()
            .find(|l| l.contains(marker))
            .and_then(|l| stamp(l))
        {
            out.push((*name, t - prev));
            prev = t;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn phases_are_differences_between_markers() {
        let t: Vec<String> = [
            "[    2.000]: b2c 0.1.0",
            "[    2.500]: loaded 3 kernel modules",
            "[    2.600]: clock set from x",
            "\x1b[0Ksection_start:1:b2c_run-0\r\x1b[0K[    2.700]: running run-0: x",
            "[    3.000]: Execution is over, pipeline status: 0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = super::phases(&t);
        let names: Vec<&str> = p.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "kernel boot, initramfs unpacked, b2c started",
                "kernel modules",
                "clock (SNTP)",
                "container set up",
                "status line"
            ]
        );
        assert!((p[1].1 - 0.5).abs() < 1e-9 && (p[4].1 - 0.3).abs() < 1e-9);
    }
}

#[cfg(test)]
mod own_kernel_tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::super::boot::{BootResults, Variant, OWN_B2C, OWN_FLOOR};
    use super::{Machine, Results, Sizes};

    fn variant(key: &str, kernel: &str, seconds: &[f64]) -> Variant {
        Variant {
            key: key.into(),
            label: format!("{key} label"),
            kernel: kernel.into(),
            initramfs: PathBuf::new(),
            compressed_bytes: 1 << 20,
            seconds: seconds.to_vec(),
            userland: seconds.to_vec(),
            timeline: Vec::new(),
        }
    }

    fn results(variants: Vec<Variant>, arm64: Option<u64>) -> Results {
        let mut r = Results {
            command: "cargo xtask bench".into(),
            runs: 2,
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                memory: "4 GiB".into(),
                kernel: "6.1".into(),
                os: "Debian".into(),
                rustc: "rustc".into(),
                commit: "abc".into(),
                date: "today".into(),
            },
            sizes: Sizes {
                initramfs_bytes: BTreeMap::from([("zst".to_string(), 9_000_000)]),
                uncompressed_bytes: 18_000_000,
                init_stripped_bytes: 4_900_000,
                breakdown: BTreeMap::new(),
                arm64_bytes: arm64,
                no_modules_bytes: arm64.map(|_| 8_000_000),
            },
            image: None,
            pull: None,
            volume: None,
            boot: Some(BootResults {
                kernel: "6.1.0-57-amd64".into(),
                qemu: "QEMU emulator version 7.2".into(),
                append: String::new(),
                variants,
            }),
            targets: Vec::new(),
            total_seconds: 60.0,
        };
        r.targets = r.evaluate();
        r
    }

    #[test]
    fn our_kernel_gets_rows_a_target_and_sizes() {
        let debian = "6.1.0-57-amd64";
        let ours = "6.1.192-b2c";
        let r = results(
            vec![
                variant("floor", debian, &[3.0, 3.2]),
                variant("busybox", debian, &[7.0, 7.2]),
                variant("b2c-zstd", debian, &[6.0, 6.4]),
                variant(OWN_FLOOR, ours, &[2.0, 2.2]),
                variant(OWN_B2C, ours, &[5.0, 5.2]),
            ],
            Some(9_500_000),
        );
        let md = r.markdown();
        assert!(
            md.contains(&format!(
                "| {OWN_B2C} label | {ours} | 1.00 MiB | 5.10 s | +2.00 s |"
            )),
            "{md}"
        );
        assert!(
            md.contains(&format!("| {OWN_FLOOR} label | {ours} |")),
            "{md}"
        );
        assert!(md.contains("| initramfs arm64, zstd -19 | 9.50 MB"), "{md}");
        assert!(
            md.contains("| initramfs without modules (for our kernel), zstd -19 | 8.00 MB"),
            "{md}"
        );
        let target = r
            .targets
            .iter()
            .find(|t| t.target.contains("our kernel"))
            .expect("a target for our kernel");
        assert!(target.holds, "{target:?}");
        assert!(
            target.measured.starts_with("-1.10 s per round"),
            "{target:?}"
        );
    }

    #[test]
    fn without_our_kernel_nothing_is_said_of_it() {
        let r = results(vec![variant("b2c-zstd", "6.1.0-57-amd64", &[6.0])], None);
        let md = r.markdown();
        assert!(!md.contains("our kernel") && !md.contains("arm64"), "{md}");
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub holds: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub os: String,
    pub rustc: String,
    pub commit: String,
    pub date: String,
}

impl Machine {
    fn probe() -> Machine {
        let out = |p: &str, a: &[&str]| run_output(p, a).unwrap_or_default().trim().to_string();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let memory = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| format!("{:.1} GiB", kib / MIB))
            .unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let dirty = !out("git", &["status", "--porcelain"]).is_empty();
        let commit = format!(
            "{}{}",
            out("git", &["rev-parse", "--short", "HEAD"]),
            if dirty { " (+ local changes)" } else { "" }
        );
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory,
            kernel: out("uname", &["-r"]),
            os,
            rustc: out("rustc", &["--version"]),
            commit,
            date: out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Results {
    pub command: String,
    pub runs: usize,
    pub machine: Machine,
    pub sizes: Sizes,
    pub image: Option<LargeImage>,
    pub pull: Option<PullResults>,
    pub volume: Option<VolumeResults>,
    pub boot: Option<BootResults>,
    pub targets: Vec<Target>,
    pub total_seconds: f64,
}

fn mb(bytes: u64) -> String {
    format!(
        "{:.2} MB ({:.2} MiB)",
        bytes as f64 / MB,
        bytes as f64 / MIB
    )
}

/// A table of tools, each against `b2c`'s median.
fn tool_rows<'a>(s: &mut String, tools: impl IntoIterator<Item = &'a ToolRuns>, b2c: f64) {
    let _ = writeln!(
        s,
        "| tool | median | × b2c | runs (s) | then `sync` | peak RSS |\n|---|---|---|---|---|---|"
    );
    for t in tools {
        let _ = writeln!(
            s,
            "| {} | {:.2} s | {:.2} | {} | {:.2} s | {:.0} MiB |",
            t.label,
            t.median(),
            t.median() / b2c,
            runs_list(&t.seconds),
            t.median_sync(),
            t.peak_rss_kib() as f64 / 1024.0
        );
    }
}

fn volume_section(s: &mut String, v: &VolumeResults) {
    let _ = writeln!(s, "\n#### Volume push and pull (S3)\n");
    let _ = writeln!(
        s,
        "A volume of {} files, {:.0} MiB (999 of 1 KiB to 250 KB in 10 directories, one \
         of {:.0} MiB that goes up in parts), synced with s3s-fs on loopback over HTTP \
         (SigV4 checked, objects stored as files): `b2c volume` (the boot's sync: 8 files \
         at once, parts of 16 MiB above 64 MiB, 4 at once) against {}, given the same \
         parallelism and part sizes, without checksums (b2c computes none), times from \
         the listing (`--use-server-modtime`, as b2c; not `--fast-list`, whose empty \
         `delimiter=` s3s-fs answers with an empty listing). Each push goes to an empty bucket, each pull into an empty \
         directory, {}.\n",
        v.files,
        v.bytes as f64 / MIB,
        v.large_file_bytes as f64 / MIB,
        v.rclone,
        if v.cold_cache {
            "with the page cache dropped before each run"
        } else {
            "warm page cache (dropping it was refused here)"
        }
    );
    for (way, key) in [("Push", "push-b2c"), ("Pull", "pull-b2c")] {
        let b2c = v.tool(key).map_or(f64::NAN, |t| t.median());
        let tools: Vec<ToolRuns> = v
            .tools
            .iter()
            .filter(|t| t.key.starts_with(&way.to_lowercase()))
            .cloned()
            .collect();
        let _ = writeln!(s, "{way}:\n");
        tool_rows(s, &tools, b2c);
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Commands: {}.",
        v.tools
            .iter()
            .map(|t| format!("`{}`", t.command))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

fn runs_list(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Results {
    pub fn new(
        o: &Options,
        sizes: Sizes,
        pull: Option<(LargeImage, PullResults)>,
        volume: Option<VolumeResults>,
        boot: Option<BootResults>,
        total_seconds: f64,
    ) -> Results {
        let mut command = "cargo xtask bench".to_string();
        if o.quick {
            command.push_str(" --quick");
        }
        // Only when it is not what the options above imply.
        if o.runs != if o.quick { 1 } else { 7 } {
            command.push_str(&format!(" --runs {}", o.runs));
        }
        if !o.pull {
            command.push_str(" --no-pull");
        }
        if !o.volume {
            command.push_str(" --no-volume");
        }
        if !o.boot {
            command.push_str(" --no-boot");
        }
        if !o.arm64 {
            command.push_str(" --no-arm64");
        }
        for (label, path) in &o.extra {
            command.push_str(&format!(" --initramfs {label}={}", path.display()));
        }
        let (image, pull) = match pull {
            Some((i, p)) => (Some(i), Some(p)),
            None => (None, None),
        };
        let mut r = Results {
            command,
            runs: o.runs,
            machine: Machine::probe(),
            sizes,
            image,
            pull,
            volume,
            boot,
            targets: Vec::new(),
            total_seconds,
        };
        r.targets = r.evaluate();
        r
    }

    fn evaluate(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let mut add = |target: &str, measured: String, holds: bool| {
            t.push(Target {
                target: target.into(),
                measured,
                holds,
            })
        };
        if let Some(p) = &self.pull {
            if let (Some(b), Some(podman), Some(floor)) =
                (p.tool("b2c"), p.tool("podman"), p.tool("floor"))
            {
                let speedup = podman.median() / b.median();
                add(
                    "pull ≥ 2× faster than `podman pull`",
                    format!(
                        "{speedup:.2}× ({:.2} s vs {:.2} s)",
                        b.median(),
                        podman.median()
                    ),
                    speedup >= 2.0,
                );
                let to_floor = b.median() / floor.median();
                add(
                    "pull within 1.3× of the floor (`tar -xzf`, layers in parallel)",
                    format!(
                        "{to_floor:.2}× ({:.2} s vs {:.2} s)",
                        b.median(),
                        floor.median()
                    ),
                    to_floor <= 1.3,
                );
                let rss = b.peak_rss_kib() * 1024;
                add(
                    "peak RSS of the large pull ≤ 64 MB",
                    mb(rss),
                    rss as f64 <= 64.0 * MB,
                );
                for level in p.zstd_levels() {
                    if let Some(z) = p.tool(&format!("b2c-zstd{level}")) {
                        let ratio = z.median() / b.median();
                        add(
                            &format!("zstd -{level} pull ≤ 0.5× the gzip pull (b2c, same image)"),
                            format!("{ratio:.2}× ({:.2} s vs {:.2} s)", z.median(), b.median()),
                            ratio <= 0.5,
                        );
                    }
                }
            }
        }
        if let Some(v) = &self.volume {
            for (way, b2c, rclone) in [
                ("push", "push-b2c", "push-rclone"),
                ("pull", "pull-b2c", "pull-rclone"),
            ] {
                if let (Some(b), Some(r)) = (v.tool(b2c), v.tool(rclone)) {
                    let ratio = b.median() / r.median();
                    add(
                        &format!("volume {way} (1,000 files, 200 MiB) ≤ `rclone sync`'s time"),
                        format!("{ratio:.2}× ({:.2} s vs {:.2} s)", b.median(), r.median()),
                        ratio <= 1.0,
                    );
                }
            }
        }
        if let Some(boot) = &self.boot {
            if let (Some(b), Some(floor), Some(bb)) = (
                boot.variant("b2c-zstd"),
                boot.variant("floor"),
                boot.variant("busybox"),
            ) {
                let over = b.over(floor);
                let bb_over = bb.over(floor);
                add(
                    "boot overhead over the floor ≤ 1.5 s (TCG, hello image)",
                    format!(
                        "{over:.2} s (medians {:.2} s vs {:.2} s)",
                        b.median(),
                        floor.median()
                    ),
                    over <= 1.5,
                );
                let vs_bb = b.over(bb);
                add(
                    "boot overhead lower than the busybox script's",
                    format!(
                        "{over:.2} s vs {bb_over:.2} s; b2c − busybox per round: {vs_bb:+.2} s; \
                         /init → power-off: {:.2} s vs {:.2} s",
                        b.userland_median(),
                        bb.userland_median()
                    ),
                    vs_bb < 0.0,
                );
            }
        }
        if let Some(boot) = &self.boot {
            if let (Some(own), Some(debian)) = (boot.variant(OWN_B2C), boot.variant("b2c-zstd")) {
                let over = own.over(debian);
                add(
                    "b2c on our kernel, no modules, boots no slower than on Debian's with modules",
                    format!(
                        "{over:+.2} s per round (medians {:.2} s vs {:.2} s; kernel {} vs {})",
                        own.median(),
                        debian.median(),
                        own.kernel,
                        debian.kernel
                    ),
                    over <= 0.0,
                );
            }
        }
        let z = self.sizes.zstd();
        add(
            "initramfs ≤ 10 MB compressed, crun and the farm's drivers included (zstd)",
            mb(z),
            z as f64 <= 10.0 * MB,
        );
        let init = self.sizes.init_stripped_bytes;
        add("init ≤ 5 MB stripped", mb(init), init as f64 <= 5.0 * MB);
        t
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "### Results of `{}`\n", self.command);
        let _ = writeln!(
            s,
            "{} ({} cores), {} RAM, {}, Linux {}; {}; b2c {}; {}. \
             Medians of {} run(s) each; the whole run took {:.1} min.\n",
            m.cpu,
            m.cores,
            m.memory,
            m.os,
            m.kernel,
            m.rustc,
            m.commit,
            m.date,
            self.runs,
            self.total_seconds / 60.0
        );
        let _ = writeln!(s, "| target | measured | holds |\n|---|---|---|");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                t.target,
                t.measured,
                if t.holds { "yes" } else { "**no**" }
            );
        }
        if let (Some(p), Some(img)) = (&self.pull, &self.image) {
            self.pull_section(&mut s, p, img);
        }
        if let Some(v) = &self.volume {
            volume_section(&mut s, v);
        }
        if let Some(b) = &self.boot {
            self.boot_section(&mut s, b);
        }
        self.size_section(&mut s);
        s
    }

    fn pull_section(&self, s: &mut String, p: &PullResults, img: &LargeImage) {
        let _ = writeln!(s, "\n#### Pull + unpack, cold\n");
        let _ = writeln!(
            s,
            "Debian {} minbase + build-essential (debootstrap, slimmed), {} gzip layers: \
             {:.0} MB compressed, {:.0} MB and {} files unpacked; served by the \
             distribution registry on loopback over HTTP; every tool starts from an \
             empty store, {}.\n",
            img.suite,
            img.layers.len(),
            img.compressed() as f64 / MB,
            img.unpacked_bytes as f64 / MB,
            img.files,
            if p.cold_cache {
                "with the page cache dropped before each run"
            } else {
                "warm page cache (dropping it was refused here)"
            }
        );
        let b2c = p.tool("b2c").map_or(f64::NAN, |t| t.median());
        tool_rows(s, p.tools.iter().filter(|t| t.zstd_level.is_none()), b2c);
        for t in p.tools.iter().filter(|t| t.steps.len() > 1) {
            let steps: Vec<String> = t
                .steps
                .iter()
                .map(|(n, v)| format!("{n} {:.2} s", super::measure::median(v)))
                .collect();
            let _ = writeln!(s, "\n{}: {}.", t.label, steps.join(", "));
        }
        let _ = writeln!(
            s,
            "\nEntries written (files, directories, links; the layer stores keep one \
             directory per layer, umoci one merged tree): {}.",
            p.tools
                .iter()
                .map(|t| format!("{} {}", t.key, t.entries))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Self::zstd_section(s, p, img);
    }

    /// The same image in zstd: b2c against its own gzip pull and against
    /// podman's pull of the same zstd image.
    fn zstd_section(s: &mut String, p: &PullResults, img: &LargeImage) {
        let Some(gzip) = p.tool("b2c") else { return };
        if img.zstd.is_empty() {
            return;
        }
        let _ = writeln!(s, "\n#### Pull + unpack, cold, zstd layers\n");
        let sizes: Vec<String> = img
            .zstd
            .iter()
            .map(|z| {
                format!(
                    "{:.0} MB at `zstd -{}`",
                    z.compressed() as f64 / MB,
                    z.level
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "The same image, each layer decompressed and compressed again with zstd \
             (`tar+zstd`, one frame per layer, with its checksum, as podman pushes \
             them): {} (gzip: {:.0} MB). Same registry, same rounds, same cold start; \
             \"× b2c gzip\" compares with `b2c pull` of the gzip image above.\n",
            sizes.join(", "),
            img.compressed() as f64 / MB
        );
        let _ = writeln!(
            s,
            "| image | tool | median | × b2c gzip | runs (s) | then `sync` | peak RSS |\n\
             |---|---|---|---|---|---|---|"
        );
        let row = |s: &mut String, image: &str, t: &super::pull::ToolRuns| {
            let _ = writeln!(
                s,
                "| {image} | {} | {:.2} s | {:.2} | {} | {:.2} s | {:.0} MiB |",
                t.label,
                t.median(),
                t.median() / gzip.median(),
                runs_list(&t.seconds),
                t.median_sync(),
                t.peak_rss_kib() as f64 / 1024.0
            );
        };
        row(s, "gzip -6", gzip);
        for level in p.zstd_levels() {
            for t in p.tools.iter().filter(|t| t.zstd_level == Some(level)) {
                row(s, &format!("zstd -{level}"), t);
            }
        }
        for level in p.zstd_levels() {
            let b2c = p.tool(&format!("b2c-zstd{level}"));
            if let (Some(b), Some(podman)) = (b2c, p.tool(&format!("podman-zstd{level}"))) {
                let _ = writeln!(
                    s,
                    "\nzstd -{level}: `podman pull` takes {:.2}× the time of `b2c pull`.",
                    podman.median() / b.median()
                );
            }
        }
    }

    fn boot_section(&self, s: &mut String, b: &BootResults) {
        let _ = writeln!(s, "\n#### Boot under QEMU TCG, hello image\n");
        let _ = writeln!(
            s,
            "Wall time from QEMU's start to the `Execution is over, pipeline status: 0` \
             line: {}, kernel {} (`-kernel vmlinux`, PVH entry) unless the row names another, `-accel tcg -smp 2 -m 1024`, \
             virtio-net on a tap in a private network namespace with dnsmasq, chronyd and \
             the registry (the qemu-tests harness). Each variant pulls \
             `b2c/busybox:latest` over HTTP and runs `echo` in it with crun, except the \
             floor.\n",
            b.qemu, b.kernel
        );
        let floor = b.variant("floor");
        let _ = writeln!(
            s,
            "\"Over the floor\" is the median of the differences with the floor's boot of \
             the same round: this shared machine's speed drifts between rounds.\n\n\
             \"/init → power-off\" is by the guest's clock: the init's own time, without \
             QEMU's start, the kernel's boot and the unpacking of the initramfs.\n\n\
             | init | kernel | initramfs | median | over the floor | /init → power-off | runs (s) |\n\
             |---|---|---|---|---|---|---|"
        );
        for v in &b.variants {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} MiB | {:.2} s | {:+.2} s | {:.2} s | {} |",
                v.label,
                v.kernel,
                v.compressed_bytes as f64 / MIB,
                v.median(),
                floor.map_or(f64::NAN, |f| v.over(f)),
                v.userland_median(),
                runs_list(&v.seconds)
            );
        }
        if let Some(v) = b.variant("b2c-zstd") {
            let phases = phases(&v.timeline);
            if !phases.is_empty() {
                let _ = writeln!(
                    s,
                    "\nWhere the guest's time goes in the median b2c (zstd) boot, from its \
                     console stamps (uptime; the kernel's early clock is coarse, so the \
                     first row is approximate):\n\n| step | time |\n|---|---|"
                );
                for (name, secs) in phases {
                    let _ = writeln!(s, "| {name} | {secs:.2} s |");
                }
            }
            let _ = writeln!(
                s,
                "\nb2c's own lines in the median zstd boot (uptime-stamped):\n\n```"
            );
            for l in &v.timeline {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "```");
        }
    }

    fn size_section(&self, s: &mut String) {
        let z = &self.sizes;
        let _ = writeln!(s, "\n#### Size\n\n| | size |\n|---|---|");
        for (ext, name) in [
            ("zst", "zstd -19"),
            ("xz", "xz -9"),
            ("raw", "uncompressed"),
        ] {
            if let Some(b) = z.initramfs_bytes.get(ext) {
                let _ = writeln!(s, "| initramfs, {name} | {} |", mb(*b));
            }
        }
        if let Some(b) = z.arm64_bytes {
            let _ = writeln!(s, "| initramfs arm64, zstd -19 | {} |", mb(b));
        }
        if let Some(b) = z.no_modules_bytes {
            let _ = writeln!(
                s,
                "| initramfs without modules (for our kernel), zstd -19 | {} |",
                mb(b)
            );
        }
        let _ = writeln!(
            s,
            "| init (static musl, stripped) | {} |",
            mb(z.init_stripped_bytes)
        );
        let _ = writeln!(
            s,
            "\nWhat the uncompressed initramfs holds:\n\n| part | size |\n|---|---|"
        );
        let mut parts: Vec<_> = z.breakdown.iter().collect();
        parts.sort_by_key(|(_, b)| std::cmp::Reverse(**b));
        for (name, b) in parts {
            let _ = writeln!(s, "| {name} | {} |", mb(*b));
        }
    }
}
