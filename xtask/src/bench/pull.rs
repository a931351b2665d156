//! Pull + unpack of the large image, cold: b2c, podman, skopeo + umoci,
//! and the floor (the same gzip layers untarred from local disk with
//! `tar`, all at once); then b2c and podman again on the same image in
//! zstd, at each level of [`super::image::ZSTD_LEVELS`]. Rounds interleave
//! the tools, so that whatever drifts on the machine drifts for all of
//! them.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::image::LargeImage;
use super::measure::{self, median, Measured};
use crate::Result;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolRuns {
    pub key: String,
    pub label: String,
    /// The zstd level of the image it pulled; `None`: the gzip image.
    pub zstd_level: Option<u32>,
    /// What was run, for the record.
    pub command: String,
    /// Wall time of each run, seconds.
    pub seconds: Vec<f64>,
    /// The `sync` right after each run: the write-back it left behind.
    pub sync_seconds: Vec<f64>,
    pub max_rss_kib: Vec<u64>,
    /// For multi-step tools: each step's times.
    pub steps: Vec<(String, Vec<f64>)>,
    /// Entries (files, dirs, links...) found in the result of the last run.
    pub entries: u64,
}

impl ToolRuns {
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }
    pub fn median_sync(&self) -> f64 {
        median(&self.sync_seconds)
    }
    pub fn peak_rss_kib(&self) -> u64 {
        self.max_rss_kib.iter().copied().max().unwrap_or(0)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PullResults {
    pub reference: String,
    pub cold_cache: bool,
    pub podman_driver: String,
    pub tools: Vec<ToolRuns>,
}

impl PullResults {
    pub fn tool(&self, key: &str) -> Option<&ToolRuns> {
        self.tools.iter().find(|t| t.key == key)
    }

    /// The zstd levels measured, in order.
    pub fn zstd_levels(&self) -> Vec<u32> {
        let mut levels: Vec<u32> = self.tools.iter().filter_map(|t| t.zstd_level).collect();
        levels.dedup();
        levels
    }
}

/// Where the large image is in the registry, in each compression.
pub struct References {
    pub gzip: String,
    /// (level, reference) of each zstd image.
    pub zstd: Vec<(u32, String)>,
}

struct Tool {
    key: String,
    label: String,
    zstd_level: Option<u32>,
    /// Each step is a set of commands run at the same time.
    steps: Vec<(String, Vec<Command>)>,
    /// Where it writes: emptied before each run.
    work: PathBuf,
    /// More of its state elsewhere, emptied with `work`.
    state: Option<PathBuf>,
    /// What to count entries in after a run.
    result: PathBuf,
}

impl Tool {
    fn clear(&self) -> Result<()> {
        super::remove_tree(&self.work)?;
        self.state.as_deref().map_or(Ok(()), super::remove_tree)
    }
}

/// A command as it would be typed, for the record.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `b2c pull` of `reference`, as `key`.
fn b2c_tool(key: String, b2c: &Path, reference: &str, work: &Path, zstd: Option<u32>) -> Tool {
    let w = work.join(&key);
    let mut c = Command::new(b2c);
    c.args([
        "pull",
        &format!("docker://{reference}"),
        "--tls-verify=false",
    ])
    .arg("--root")
    .arg(&w);
    Tool {
        key,
        label: "`b2c pull`".into(),
        zstd_level: zstd,
        steps: vec![("pull".into(), vec![c])],
        result: w.join("layers"),
        work: w,
        state: None,
    }
}

/// `podman pull` of `reference`, as `key`.
fn podman_tool(key: String, driver: &str, reference: &str, work: &Path, zstd: Option<u32>) -> Tool {
    let w = work.join(&key);
    let runroot = podman_runroot(&key);
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(w.join("root"))
        .arg("--runroot")
        .arg(&runroot)
        .args(["--storage-driver", driver])
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
        .args(["pull", "-q", "--tls-verify=false", reference]);
    Tool {
        key,
        label: format!("`podman pull` ({driver})"),
        zstd_level: zstd,
        steps: vec![("pull".into(), vec![c])],
        result: w.join(format!("root/{driver}")),
        work: w,
        state: Some(runroot),
    }
}

fn tools(
    image: &LargeImage,
    refs: &References,
    b2c: &Path,
    work: &Path,
    podman_driver: &str,
) -> Vec<Tool> {
    let reference = refs.gzip.as_str();
    let mut out = vec![
        b2c_tool("b2c".into(), b2c, reference, work, None),
        podman_tool("podman".into(), podman_driver, reference, work, None),
    ];

    let w = work.join("skopeo-umoci");
    let layout = format!("{}:{}", w.join("layout").display(), super::image::TAG);
    let mut copy = Command::new("skopeo");
    copy.args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{layout}"));
    let mut unpack = Command::new("umoci");
    unpack
        .args(["unpack", "--image", &layout])
        .arg(w.join("bundle"));
    out.push(Tool {
        key: "skopeo-umoci".into(),
        label: "`skopeo copy` + `umoci unpack`".into(),
        zstd_level: None,
        steps: vec![
            ("skopeo copy".into(), vec![copy]),
            ("umoci unpack".into(), vec![unpack]),
        ],
        result: w.join("bundle/rootfs"),
        work: w,
        state: None,
    });

    let w = work.join("floor");
    let tars = image
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut c = Command::new("sh");
            // Each layer into its own directory, as the layer stores do.
            c.arg("-c")
                .arg(r#"mkdir -p "$2" && exec tar -xzf "$1" -C "$2""#)
                .arg("tar")
                .arg(&l.blob)
                .arg(w.join(i.to_string()));
            c
        })
        .collect();
    out.push(Tool {
        key: "floor".into(),
        label: "floor: `tar -xzf` of the layer files, in parallel".into(),
        zstd_level: None,
        steps: vec![("untar".into(), tars)],
        result: w.clone(),
        work: w,
        state: None,
    });
    for (level, reference) in &refs.zstd {
        let l = Some(*level);
        out.push(b2c_tool(
            format!("b2c-zstd{level}"),
            b2c,
            reference,
            work,
            l,
        ));
        out.push(podman_tool(
            format!("podman-zstd{level}"),
            podman_driver,
            reference,
            work,
            l,
        ));
    }
    out
}

/// podman's runtime state (locks, mounts): its overlay driver refuses a
/// runroot longer than 50 characters, which a checkout's target/ easily
/// is, so it lives under /tmp.
fn podman_runroot(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("b2c-bench-podman-{}-{what}", std::process::id()))
}

/// Whether podman can use overlay storage here; else vfs.
fn podman_driver(work: &Path, logs: &Path) -> String {
    let w = work.join("podman-probe");
    let _ = super::remove_tree(&w);
    let ok = measure::run(
        Command::new("podman")
            .arg("--root")
            .arg(w.join("root"))
            .arg("--runroot")
            .arg(podman_runroot("probe"))
            .args(["--storage-driver", "overlay", "info"]),
        &logs.join("podman-probe.log"),
    )
    .is_ok();
    let _ = super::remove_tree(&w);
    let _ = super::remove_tree(&podman_runroot("probe"));
    if ok {
        "overlay".into()
    } else {
        println!(
            "bench: podman cannot use overlay storage here (see {}): using vfs",
            logs.join("podman-probe.log").display()
        );
        "vfs".into()
    }
}

fn count_entries(dir: &Path) -> u64 {
    crate::run_output("find", &[&dir.to_string_lossy()])
        .map(|o| o.lines().count() as u64)
        .unwrap_or(0)
}

pub fn bench(
    image: &LargeImage,
    refs: &References,
    b2c: &Path,
    runs: usize,
    work: &Path,
    logs: &Path,
) -> Result<PullResults> {
    std::fs::create_dir_all(work)?;
    std::fs::create_dir_all(logs)?;
    let driver = podman_driver(work, logs);
    let mut tools = tools(image, refs, b2c, work, &driver);
    let mut results: Vec<ToolRuns> = tools
        .iter()
        .map(|t| ToolRuns {
            key: t.key.clone(),
            label: t.label.clone(),
            zstd_level: t.zstd_level,
            command: t
                .steps
                .iter()
                .map(|(_, cmds)| describe(&cmds[0]))
                .collect::<Vec<_>>()
                .join(" && "),
            seconds: Vec::new(),
            sync_seconds: Vec::new(),
            max_rss_kib: Vec::new(),
            steps: t
                .steps
                .iter()
                .map(|(n, _)| (n.clone(), Vec::new()))
                .collect(),
            entries: 0,
        })
        .collect();
    let mut cold = true;
    for round in 0..runs {
        for (tool, res) in tools.iter_mut().zip(results.iter_mut()) {
            tool.clear()?;
            std::fs::create_dir_all(&tool.work)?;
            cold &= measure::drop_caches();
            let log = logs.join(format!("pull-{}-{round}.log", tool.key));
            let _ = std::fs::remove_file(&log);
            let mut total = 0.0;
            let mut rss = 0;
            for (i, (_, cmds)) in tool.steps.iter_mut().enumerate() {
                let m: Measured = measure::run_parallel(cmds, &log)?;
                total += m.wall.as_secs_f64();
                rss = rss.max(m.max_rss_kib);
                res.steps[i].1.push(m.wall.as_secs_f64());
            }
            let sync = measure::sync_time().as_secs_f64();
            res.seconds.push(total);
            res.sync_seconds.push(sync);
            res.max_rss_kib.push(rss);
            println!(
                "bench: pull {}/{runs} {:<14} {total:6.2} s (+ sync {sync:.2} s), peak RSS {:.0} MiB",
                round + 1,
                tool.key,
                rss as f64 / 1024.0
            );
            if round + 1 == runs {
                res.entries = count_entries(&tool.result);
            }
        }
    }
    for tool in &tools {
        tool.clear()?;
    }
    Ok(PullResults {
        reference: refs.gzip.clone(),
        cold_cache: cold,
        podman_driver: driver,
        tools: results,
    })
}
