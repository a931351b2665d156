//! The results: one serializable record, rendered as markdown.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::bigboot::BigBootResults;
use super::boot::{BootResults, Variant, OWN_B2C, OWN_BUSYBOX, OWN_FLOOR, PHASES};
use super::image::LargeImage;
use super::measure::median;
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
        } else if name.ends_with("/tools.tar.zst") {
            "busybox and mke2fs with its libraries (zstd, unpacked at first use)"
        } else {
            "other"
        };
        *out.entry(group.to_string()).or_insert(0) += size;
    }
    Ok(out)
}

/// Where the guest's time went: the top-level spans of the boot's chart
/// (b2c-bootchart, as `b2c plot` reads a console), as (name, start,
/// duration).
fn phases(console: &str) -> Vec<(String, f64, f64)> {
    b2c_bootchart::parse(console).map_or_else(
        |_| Vec::new(),
        |t| {
            t.spans
                .iter()
                .map(|s| (s.name.clone(), s.start, s.duration()))
                .collect()
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn phases_are_the_charts_top_level_spans() {
        let console = include_str!("../../../crates/bootchart/tests/fixtures/layers.log");
        let p = super::phases(console);
        let names: Vec<&str> = p.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "kernel",
                "b2c start",
                "kernel modules",
                "network",
                "clock",
                "cache",
                "pull",
                "run-0",
                "run-1",
                "shutdown"
            ]
        );
        let (_, start, secs) = &p[6];
        assert!((start - 5.082).abs() < 1e-9 && (secs - 0.597).abs() < 1e-9);
        assert!(super::phases("no stamps").is_empty());
    }
}

#[cfg(test)]
mod big_boot_tests {
    use super::super::bigboot::{BigBootResults, BigVariant, ScriptRuns};

    const LAYERS: &str = include_str!("../../../crates/bootchart/tests/fixtures/layers.log");

    fn results(first: Vec<f64>, cached: Vec<f64>) -> BigBootResults {
        BigBootResults {
            image: "10.99.0.1:5000/bench/large:latest".into(),
            layers: 6,
            compressed_bytes: 125_000_000,
            unpacked_bytes: 373_000_000,
            files: 9398,
            disk_bytes: 4 << 30,
            command: "gcc --version".into(),
            runs: 2,
            variants: vec![BigVariant {
                key: "b2c-zstd".into(),
                label: "b2c (zstd -19)".into(),
                hello: vec![4.0, 5.0],
                first,
                cached,
                first_exit: vec![21.0, 23.0],
                hello_userland: vec![3.0, 3.5],
                first_userland: vec![18.0, 19.0],
                cached_userland: vec![3.25, 4.25],
                timeline: vec!["[   30.000]: Execution is over, pipeline status: 0".into()],
                console: LAYERS.into(),
                hello_console: LAYERS.replace("b2c.cache_device=auto", ""),
                cached_console: LAYERS.into(),
            }],
            script: ScriptRuns {
                label: "busybox script".into(),
                seconds: vec![40.0, 30.0],
                exit: vec![41.0, 31.0],
                userland: vec![37.0, 27.0],
                steps: vec![
                    ("network up".into(), vec![2.5, 2.7]),
                    ("6 layers unpacked".into(), vec![30.0, 31.0]),
                ],
            },
            charts: vec![("b2c-zstd".into(), "bigboot-b2c-zstd.svg".into())],
            round_seconds: vec![60.0, 70.0],
        }
    }

    #[test]
    fn targets_from_the_rounds() {
        // Round by round: first ÷ script 0.5 and 0.8; cached − hello 0.5 and 1.0.
        let t = super::big_boot_targets(&results(vec![20.0, 24.0], vec![4.5, 6.0]));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].measured, "0.65× (medians 22.00 s vs 35.00 s)");
        assert!(t[0].holds);
        assert_eq!(
            t[1].measured,
            "+0.75 s (medians 5.25 s vs 4.50 s); by the guest's clock, /init → power-off: +0.50 s"
        );
        assert!(t[1].holds);
        let t = super::big_boot_targets(&results(vec![36.0, 27.0], vec![6.0, 6.5]));
        assert_eq!(t[0].measured, "0.90× (medians 31.50 s vs 35.00 s)");
        assert!(!t[0].holds);
        assert!(t[1]
            .measured
            .starts_with("+1.75 s (medians 6.25 s vs 4.50 s);"));
        assert!(!t[1].holds);
        let mut none = results(vec![], vec![]);
        none.variants[0].key = "mine".into();
        assert!(
            super::big_boot_targets(&none).is_empty(),
            "the default initramfs only"
        );
    }

    #[test]
    fn section_has_a_row_per_round_and_the_medians() {
        let mut s = String::new();
        super::big_boot_section(&mut s, &results(vec![20.0, 24.0], vec![4.5, 6.0]));
        assert!(s.starts_with("\n#### Boot under QEMU TCG, large image, cache disk\n"));
        assert!(s.contains("(6 gzip layers: 125 MB compressed, 373 MB and 9398 files unpacked)"));
        assert!(s.contains("a blank sparse 4 GiB virtio disk"));
        assert!(s.contains("2 round(s); a round took 65 s (median), 2.2 min in all."));
        assert!(s.contains(
            "| 1 | 4.00 s | 20.00 s | 5.00 | 4.50 s | 1.12 | +0.50 s | 40.00 s | 0.50 |\n\
             | 2 | 5.00 s | 24.00 s | 4.80 | 6.00 s | 1.20 | +1.00 s | 30.00 s | 0.80 |\n\
             | median | 4.50 s | 22.00 s | 4.90 | 5.25 s | 1.16 | +0.75 s | 35.00 s | 0.65 |\n"
        ));
        assert!(s.contains("b2c's first boot 22.00 s, the script 36.00 s (medians)"));
        assert!(s.contains("network up at 2.60 s, 6 layers unpacked at 30.50 s."));
        assert!(s.contains(
            "hello 3.25 s, first boot 18.50 s, cached boot 3.75 s, busybox script 32.00 s; \
             cached − hello, round by round: +0.50 s."
        ));
        assert!(s.contains("| step | hello | cached boot |\n|---|---|---|\n| kernel | "));
        assert!(s.contains("| pull | 5.08 s | 0.60 s |"));
        assert!(s.contains("[b2c-zstd](bigboot-b2c-zstd.svg)"));
        assert!(s.ends_with("```\n[   30.000]: Execution is over, pipeline status: 0\n```\n"));
    }
}

#[cfg(test)]
mod own_kernel_tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::super::boot::{BootResults, Variant, OWN_B2C, OWN_BUSYBOX, OWN_FLOOR};
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
            phases: Vec::new(),
            timeline: Vec::new(),
            console: String::new(),
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
                charts: Vec::new(),
            }),
            big_boot: None,
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

    /// The floor, the busybox script and b2c on Debian's kernel and on
    /// ours, in that order.
    fn both_kernels() -> Results {
        let debian = "6.1.0-57-amd64";
        let ours = "6.1.192-b2c";
        results(
            vec![
                variant("floor", debian, &[3.0, 3.2]),
                variant("busybox", debian, &[4.5, 4.6]),
                variant("b2c-zstd", debian, &[4.3, 4.4]),
                variant(OWN_FLOOR, ours, &[1.0, 1.2]),
                variant(OWN_BUSYBOX, ours, &[2.4, 2.6]),
                variant(OWN_B2C, ours, &[1.9, 2.1]),
            ],
            None,
        )
    }

    #[test]
    fn issue_16s_boot_targets_are_judged_on_each_kernel() {
        let mut r = both_kernels();
        // By the guest's clock.
        r.boot.as_mut().unwrap().variants[2].userland = vec![1.3, 1.5];
        r.boot.as_mut().unwrap().variants[5].userland = vec![0.8, 1.0];
        r.targets = r.evaluate();
        let find = |name: &str| {
            r.targets
                .iter()
                .find(|t| t.target == name)
                .unwrap_or_else(|| panic!("no target {name:?} in {:#?}", r.targets))
        };
        let t = find("boot overhead over the floor ≤ 1.0 s (TCG, hello image)");
        assert!(
            !t.holds && t.measured.starts_with("1.25 s per round"),
            "{t:?}"
        );
        let t = find("boot at least 0.3 s faster than the busybox script's, per round");
        assert!(!t.holds && t.measured.starts_with("-0.20 s"), "{t:?}");
        let t = find("b2c's own time, /init → power-off, ≤ 1.0 s");
        assert!(!t.holds && t.measured.starts_with("1.40 s"), "{t:?}");
        let t = find("boot overhead over the floor ≤ 1.0 s (TCG, hello image, our kernel)");
        assert!(
            t.holds && t.measured.starts_with("0.90 s per round"),
            "{t:?}"
        );
        let t = find("boot at least 0.3 s faster than the busybox script's, per round, our kernel");
        assert!(t.holds && t.measured.starts_with("-0.50 s"), "{t:?}");
        let t = find("b2c's own time, /init → power-off, ≤ 1.0 s, our kernel");
        assert!(t.holds && t.measured.starts_with("0.90 s"), "{t:?}");
    }

    #[test]
    fn the_script_and_b2c_are_compared_link_by_link_on_each_kernel() {
        let mut r = both_kernels();
        let boot = r.boot.as_mut().unwrap();
        boot.variants[1].phases = vec![[0.2, 0.25, 0.3, 0.3, 0.05]; 2];
        boot.variants[2].phases = vec![
            [0.4, 0.1, 0.4, 0.2, 0.05],
            [0.5, 0.2, f64::NAN, f64::NAN, f64::NAN],
        ];
        boot.variants[4].phases = vec![[0.1, 0.2, 0.3, 0.3, 0.05]];
        boot.variants[5].phases = vec![[0.12, 0.12, 0.33, 0.25, 0.01]];
        let md = r.markdown();
        for row in [
            "| phase | script | b2c | script, our kernel | b2c, our kernel |",
            "| `/init` → drivers loaded | 0.20 s | 0.45 s | 0.10 s | 0.12 s |",
            // A boot that did not reach a mark leaves it to the others.
            "| → image pulled | 0.30 s | 0.40 s | 0.30 s | 0.33 s |",
        ] {
            assert!(md.contains(row), "{row}\n{md}");
        }
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
    pub big_boot: Option<BigBootResults>,
    pub targets: Vec<Target>,
    pub total_seconds: f64,
}

/// `[key](file), …`: the charts written next to results.md.
fn chart_links(charts: &[(String, String)]) -> String {
    charts
        .iter()
        .map(|(key, file)| format!("[{key}]({file})"))
        .collect::<Vec<_>>()
        .join(", ")
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

/// The busybox script against b2c, link by link of the boot's chain
/// ([`PHASES`]), on each kernel that both booted.
fn phase_table(s: &mut String, b: &BootResults) {
    let columns: Vec<(&str, &Variant)> = [
        ("script", "busybox"),
        ("b2c", "b2c-zstd"),
        ("script, our kernel", OWN_BUSYBOX),
        ("b2c, our kernel", OWN_B2C),
    ]
    .into_iter()
    .filter_map(|(name, key)| Some((name, b.variant(key)?)))
    .filter(|(_, v)| !v.phases.is_empty())
    .collect();
    if columns.len() < 2 {
        return;
    }
    let _ = writeln!(
        s,
        "\nLink by link, the busybox script against b2c (medians of every boot, by the \
         guest's clock: the script's `at` lines, b2c's stamps; before its image is pulled \
         b2c has also set the clock):\n\n| phase | {} |\n|---|{}",
        columns
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len())
    );
    for (i, phase) in PHASES.iter().enumerate() {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, v)| match v.phase_median(i) {
                m if m.is_nan() => "–".to_string(),
                // The script's last `at` line and the kernel's power-off
                // are stamped by two readers of one clock: a few ms
                // either way.
                m if m < 0.0 && m > -0.01 => "0.00 s".to_string(),
                m => format!("{m:.2} s"),
            })
            .collect();
        let _ = writeln!(s, "| {phase} | {} |", cells.join(" | "));
    }
}

/// Issue 16's boot targets for one kernel (`kernel`: what the target
/// names add): per round, over the floor ≤ 1.0 s and at least 0.3 s below
/// the busybox script; by the guest's clock, /init → power-off ≤ 1.0 s.
fn boot_targets(b2c: &Variant, floor: &Variant, script: &Variant, kernel: &str) -> Vec<Target> {
    let over = b2c.over(floor);
    let vs_script = b2c.over(script);
    let own = b2c.userland_median();
    vec![
        Target {
            target: format!("boot overhead over the floor ≤ 1.0 s (TCG, hello image{kernel})"),
            measured: format!(
                "{over:.2} s per round (medians {:.2} s vs {:.2} s)",
                b2c.median(),
                floor.median()
            ),
            holds: over <= 1.0,
        },
        Target {
            target: format!(
                "boot at least 0.3 s faster than the busybox script's, per round{kernel}"
            ),
            measured: format!(
                "{vs_script:+.2} s (over the floor: {over:.2} s vs {:.2} s)",
                script.over(floor)
            ),
            holds: vs_script <= -0.3,
        },
        Target {
            target: format!("b2c's own time, /init → power-off, ≤ 1.0 s{kernel}"),
            measured: format!(
                "{own:.2} s (the busybox script's: {:.2} s)",
                script.userland_median()
            ),
            holds: own <= 1.0,
        },
    ]
}

/// The issue's targets for the large image, on the default initramfs.
fn big_boot_targets(b: &BigBootResults) -> Vec<Target> {
    let Some(v) = b.variant("b2c-zstd") else {
        return Vec::new();
    };
    let to_script = v.first_to_script(&b.script);
    let over = v.cached_over_hello();
    vec![
        Target {
            target: "large image: first boot ≤ 0.8× the busybox script's (TCG, blank cache disk)"
                .into(),
            measured: format!(
                "{to_script:.2}× (medians {:.2} s vs {:.2} s)",
                median(&v.first),
                b.script.median()
            ),
            holds: to_script <= 0.8,
        },
        Target {
            target: "large image: cached boot ≤ hello boot + 1.0 s (TCG)".into(),
            measured: format!(
                "{over:+.2} s (medians {:.2} s vs {:.2} s); by the guest's clock, \
                 /init → power-off: {:+.2} s",
                median(&v.cached),
                median(&v.hello),
                v.cached_over_hello_userland()
            ),
            holds: over <= 1.0,
        },
    ]
}

fn big_boot_section(s: &mut String, b: &BigBootResults) {
    let _ = writeln!(s, "\n#### Boot under QEMU TCG, large image, cache disk\n");
    let _ = writeln!(
        s,
        "The image of the pull benchmark ({} gzip layers: {:.0} MB compressed, {:.0} MB and \
         {} files unpacked), pushed to the registry of the boot's test network (HTTP), \
         and `{}` run in it with crun; QEMU and kernel as above, `-m 1024`, a blank \
         sparse {:.0} GiB virtio disk. Each round boots, one after the other:\n\n\
         - the busybox script: `mke2fs` of the whole disk with b2c's arguments, the \
         manifest by `wget`, then every layer at once, each `wget -O - | tar -xzf -` \
         into a directory of its own on the disk (busybox's gzip; no digest is \
         checked), overlayfs stacking them under a writable upper layer on the disk, \
         `crun run`;\n\
         - for each b2c initramfs: the hello boot (the busybox image, no disk, as \
         above), the first boot on a blank disk (`b2c.cache_device=auto`: b2c \
         partitions and formats it, pulls with digests checked, syncs each layer), \
         and the cached boot on the same disk (the manifest is asked for, the image is \
         up to date: no blob downloaded, checked in the registry's log).\n\n\
         Times from QEMU's start to the status line. Ratios and differences are the \
         medians of each round's: this shared machine's speed drifts between rounds. \
         {} round(s); a round took {:.0} s (median), {:.1} min in all.\n",
        b.layers,
        b.compressed_bytes as f64 / MB,
        b.unpacked_bytes as f64 / MB,
        b.files,
        b.command,
        b.disk_bytes as f64 / (1024.0 * MIB),
        b.runs,
        median(&b.round_seconds),
        b.round_seconds.iter().sum::<f64>() / 60.0,
    );
    for v in &b.variants {
        let _ = writeln!(
            s,
            "{}:\n\n| round | hello | first boot | first ÷ hello | cached boot | cached ÷ hello \
             | cached − hello | busybox script | first ÷ script |\n\
             |---|---|---|---|---|---|---|---|---|",
            v.label
        );
        for i in 0..v.first.len() {
            let (h, f, c) = (v.hello[i], v.first[i], v.cached[i]);
            let script = b.script.seconds.get(i).copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "| {} | {h:.2} s | {f:.2} s | {:.2} | {c:.2} s | {:.2} | {:+.2} s | {script:.2} s | {:.2} |",
                i + 1,
                f / h,
                c / h,
                c - h,
                f / script
            );
        }
        let _ = writeln!(
            s,
            "| median | {:.2} s | {:.2} s | {:.2} | {:.2} s | {:.2} | {:+.2} s | {:.2} s | {:.2} |\n",
            median(&v.hello),
            median(&v.first),
            v.first_to_hello(),
            median(&v.cached),
            v.cached_to_hello(),
            v.cached_over_hello(),
            b.script.median(),
            v.first_to_script(&b.script)
        );
        let _ = writeln!(
            s,
            "Until QEMU exited (the power-off, after the write-back: b2c syncs each layer \
             as it commits it, the script's `poweroff -f` syncs before powering off): \
             b2c's first boot {:.2} s, the script {:.2} s (medians).\n",
            median(&v.first_exit),
            median(&b.script.exit)
        );
        let _ = writeln!(
            s,
            "By the guest's clock, from the kernel's `Run /init` to its `reboot: Power \
             down` (without QEMU's start and the kernel's boot; medians): hello {:.2} s, \
             first boot {:.2} s, cached boot {:.2} s, busybox script {:.2} s; cached − \
             hello, round by round: {:+.2} s.\n",
            median(&v.hello_userland),
            median(&v.first_userland),
            median(&v.cached_userland),
            median(&b.script.userland),
            v.cached_over_hello_userland()
        );
    }
    if !b.script.steps.is_empty() {
        let steps: Vec<String> = b
            .script
            .steps
            .iter()
            .map(|(what, at)| format!("{what} at {:.2} s", median(at)))
            .collect();
        let _ = writeln!(
            s,
            "The script's steps by the guest's clock (uptime, medians of the rounds): {}.\n",
            steps.join(", ")
        );
    }
    if let Some(v) = b.variants.first() {
        let phases = phases(&v.console);
        if !phases.is_empty() {
            let _ = writeln!(
                s,
                "Where the guest's time goes in the median first boot of {}, from its console \
                 stamps:\n\n| step | from | time |\n|---|---|---|",
                v.label
            );
            for (name, start, secs) in phases {
                let _ = writeln!(s, "| {name} | {start:.2} s | {secs:.2} s |");
            }
            let _ = writeln!(s);
        }
    }
    if let Some(v) = b.variants.first() {
        let (hello, cached) = (phases(&v.hello_console), phases(&v.cached_console));
        if !cached.is_empty() {
            let _ = writeln!(
                s,
                "The median cached boot against the median hello boot of {}, step by \
                 step:\n\n| step | hello | cached boot |\n|---|---|---|",
                v.label
            );
            let mut names: Vec<&str> = hello.iter().map(|(n, _, _)| n.as_str()).collect();
            for (n, _, _) in &cached {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
            let time = |p: &[(String, f64, f64)], name: &str| {
                p.iter()
                    .find(|(n, _, _)| n == name)
                    .map_or("–".to_string(), |(_, _, secs)| format!("{secs:.2} s"))
            };
            for name in names {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} |",
                    time(&hello, name),
                    time(&cached, name)
                );
            }
            let _ = writeln!(s);
        }
    }
    if !b.charts.is_empty() {
        let _ = writeln!(
            s,
            "The median first boot of each b2c initramfs as a chart (`b2c plot` of its \
             console), next to this file: {}.\n",
            chart_links(&b.charts)
        );
    }
    if let Some(v) = b.variants.first() {
        let _ = writeln!(s, "b2c's own lines in that boot (uptime-stamped):\n\n```");
        for l in &v.timeline {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(s, "```");
    }
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
        big_boot: Option<BigBootResults>,
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
        if !o.big_boot {
            command.push_str(" --no-big-boot");
        } else if let Some(n) = o.big_runs {
            command.push_str(&format!(" --big-runs {n}"));
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
            big_boot,
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
            for (b2c, floor, script, kernel) in [
                ("b2c-zstd", "floor", "busybox", ""),
                (OWN_B2C, OWN_FLOOR, OWN_BUSYBOX, ", our kernel"),
            ] {
                if let (Some(b), Some(floor), Some(bb)) =
                    (boot.variant(b2c), boot.variant(floor), boot.variant(script))
                {
                    for t in boot_targets(b, floor, bb, kernel) {
                        add(&t.target, t.measured, t.holds);
                    }
                }
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
        if let Some(b) = &self.big_boot {
            for target in big_boot_targets(b) {
                add(&target.target, target.measured, target.holds);
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
        if let Some(b) = &self.big_boot {
            big_boot_section(&mut s, b);
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
                .map(|(n, v)| format!("{n} {:.2} s", median(v)))
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
        if !b.charts.is_empty() {
            let _ = writeln!(
                s,
                "\nThe median boot of each b2c variant as a chart (`b2c plot` of its \
                 console), next to this file: {}.",
                chart_links(&b.charts)
            );
        }
        phase_table(s, b);
        if let Some(v) = b.variant("b2c-zstd") {
            let phases = phases(&v.console);
            if !phases.is_empty() {
                let _ = writeln!(
                    s,
                    "\nWhere the guest's time goes in the median b2c (zstd) boot, from its \
                     console stamps (uptime; the kernel's early clock is coarse, so the \
                     first row is approximate; the gaps between rows are b2c's own work \
                     between phases):\n\n| step | from | time |\n|---|---|---|"
                );
                for (name, start, secs) in phases {
                    let _ = writeln!(s, "| {name} | {start:.2} s | {secs:.2} s |");
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
