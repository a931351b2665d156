//! Running a command and measuring it: wall time and peak RSS (from
//! wait4's rusage, so it covers the process and the children it waited
//! for), with the page cache dropped first for cold runs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub wall: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

/// Waits for a child with wait4, returning its exit status and peak RSS.
fn wait4(child: &Child) -> Result<(i32, u64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall; both out-pointers are valid for the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        return Err(format!("wait4({pid}): {}", std::io::Error::last_os_error()).into());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, usage.ru_maxrss as u64))
}

/// Runs the commands at the same time; the wall time ends when the last
/// one exits, the RSS is the largest. Output goes to `log` (appended).
pub fn run_parallel(cmds: &mut [Command], log: &std::path::Path) -> Result<Measured> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let start = Instant::now();
    let mut children = Vec::new();
    for cmd in cmds.iter_mut() {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out.try_clone()?)
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
        children.push(child);
    }
    let mut rss = 0;
    let mut failed = None;
    for (child, cmd) in children.iter().zip(cmds.iter()) {
        let (code, kib) = wait4(child)?;
        rss = rss.max(kib);
        if code != 0 && failed.is_none() {
            failed = Some(format!("{cmd:?} exited with {code}; see {}", log.display()));
        }
    }
    let wall = start.elapsed();
    if let Some(f) = failed {
        return Err(f.into());
    }
    Ok(Measured {
        wall,
        max_rss_kib: rss,
    })
}

pub fn run(cmd: &mut Command, log: &std::path::Path) -> Result<Measured> {
    run_parallel(std::slice::from_mut(cmd), log)
}

/// Writes back dirty pages and drops the page cache, dentries and inodes,
/// so the next run reads from the disk. Returns false where the kernel
/// refuses (then every run is warm-cache alike).
pub fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// The time `sync` takes right after a run: the write-back the run left
/// behind.
pub fn sync_time() -> Duration {
    let start = Instant::now();
    // SAFETY: as above.
    unsafe { libc::sync() };
    start.elapsed()
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of the differences `a[i] - b[i]` of runs made in the same
/// round: on a shared machine whose load drifts between rounds, this
/// compares like with like where `median(a) - median(b)` would not.
pub fn paired_median(a: &[f64], b: &[f64]) -> f64 {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    median(&diffs)
}

/// `a[i] / b[i]` of runs made in the same round.
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// The median of [`ratios`]: as [`paired_median`], for a target set as
/// a ratio.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(&ratios(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_rounds() {
        // a takes twice b's time in every round, however loaded it was.
        let a = [4.0, 10.0, 5.0];
        let b = [2.0, 5.0, 2.5];
        assert_eq!(ratios(&a, &b), [2.0, 2.0, 2.0]);
        assert_eq!(paired_ratio(&a, &b), 2.0);
        assert_eq!(paired_ratio(&[3.0, 1.0, 8.0], &[1.0, 1.0, 2.0]), 3.0);
        assert!(paired_ratio(&[], &[]).is_nan());
    }

    #[test]
    fn paired_median_compares_rounds() {
        // b is always 1 s faster, whatever the round's load.
        let a = [3.0, 5.0, 3.5];
        let b = [2.0, 4.0, 2.5];
        assert_eq!(paired_median(&a, &b), 1.0);
        assert!(paired_median(&[], &[]).is_nan());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn measures_a_command() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let m = run(Command::new("sleep").arg("0.1"), log.path()).unwrap();
        assert!(m.wall >= Duration::from_millis(100));
        assert!(m.max_rss_kib > 0);
        assert!(run(&mut Command::new("false"), log.path()).is_err());
    }
}
