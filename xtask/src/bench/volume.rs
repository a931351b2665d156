//! Push and pull of a volume (1,000 files, 200 MiB) to and from one
//! s3s-fs on loopback: `b2c volume` (a boot's sync, from the b2c command)
//! against `rclone sync`, set to b2c's parallelism and part sizes. Rounds
//! interleave the tools, every run starts cold (page cache dropped) into
//! an empty destination.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::measure::{self, Measured};
use super::pull::{describe, ToolRuns};
use crate::Result;

/// Files of the volume: 999 of 1 KiB to 250 KB in 10 directories, and
/// one large enough to go up in parts (over b2c's 64 MiB threshold).
pub const FILES: usize = 1000;
/// The whole volume.
pub const BYTES: u64 = 200 << 20;
const ACCESS_KEY: &str = "b2c-bench";
const SECRET_KEY: &str = "b2c-bench-secret";
/// rclone's remote, configured through the environment.
const REMOTE: &str = "b2cbench";
/// rclone as b2c syncs: 8 files at once, parts of 16 MiB above 64 MiB, 4
/// parts at once; the time from the listing as b2c takes it
/// (`--use-server-modtime`, no HEAD per object); no checksums, which b2c
/// does not compute either. Not `--fast-list`: its listing sends an empty
/// `delimiter=`, to which s3s-fs 0.14 answers an empty bucket; rclone then
/// lists each of the 11 directories.
const RCLONE_FLAGS: &[&str] = &[
    "--transfers",
    "8",
    "--checkers",
    "8",
    "--s3-upload-cutoff",
    "64M",
    "--s3-chunk-size",
    "16M",
    "--s3-upload-concurrency",
    "4",
    "--s3-disable-checksum",
    "--ignore-checksum",
    "--use-server-modtime",
    "--s3-no-check-bucket",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeResults {
    pub files: usize,
    pub bytes: u64,
    /// The one file that goes up in parts.
    pub large_file_bytes: u64,
    pub cold_cache: bool,
    pub rclone: String,
    /// `push-b2c`, `push-rclone`, `pull-b2c`, `pull-rclone`.
    pub tools: Vec<ToolRuns>,
}

impl VolumeResults {
    pub fn tool(&self, key: &str) -> Option<&ToolRuns> {
        self.tools.iter().find(|t| t.key == key)
    }
}

/// s3s-fs on 127.0.0.1, stopped (by its pid) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(root: &Path, log: &Path) -> Result<Server> {
        let binary = qemu_tests::s3s_fs_binary().map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| format!("cannot start s3s-fs: {e}"))?;
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("s3s-fs did not start: see {}", log.display()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Relative path and size of each file of the volume.
fn layout() -> Vec<(String, u64)> {
    // 7919 is prime to 999: (i * 7919) % 999 takes every value once.
    let mut files: Vec<(String, u64)> = (0..FILES as u64 - 1)
        .map(|i| {
            (
                format!("results-{}/r{i:03}.bin", i % 10),
                1024 + (i * 7919 % 999) * 250,
            )
        })
        .collect();
    let small: u64 = files.iter().map(|(_, s)| s).sum();
    files.push(("trace.bin".into(), BYTES - small));
    files
}

/// Writes the volume once (pseudo-random, incompressible bytes); kept in
/// target/bench/volume/data for later runs.
fn make_volume(dir: &Path) -> Result<()> {
    // Beside it, not in it: it would be synced too.
    let stamp = dir.with_extension("complete");
    if stamp.exists() {
        return Ok(());
    }
    println!(
        "bench: writing the volume ({FILES} files, {} MiB) ...",
        BYTES >> 20
    );
    super::remove_tree(dir)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for (rel, size) in layout() {
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            for chunk in buf[..n].chunks_mut(8) {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        out.flush()?;
    }
    std::fs::write(&stamp, b"")?;
    Ok(())
}

/// Regular files and their bytes below `dir`, hidden names (s3s-fs's
/// sidecars, rclone's partials) left out.
fn tally(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => {
                    files += 1;
                    bytes += m.len();
                }
                _ => {}
            }
        }
    }
    (files, bytes)
}

fn b2c_command(b2c: &Path, server: &Server, push: bool, dir: &Path, bucket: &str) -> Command {
    let mut c = Command::new(b2c);
    c.args(["volume", if push { "push" } else { "pull" }])
        .arg(dir)
        .arg(format!("bench,mirror={REMOTE}/{bucket},overwrite,remove"))
        // The keys through the environment, as a farm would pass them.
        .env(
            "B2C_MINIO",
            format!("{REMOTE},{},{ACCESS_KEY},{SECRET_KEY}", server.url),
        );
    c
}

fn rclone_command(server: &Server, push: bool, dir: &Path, bucket: &str, config: &Path) -> Command {
    let mut c = Command::new("rclone");
    let remote = format!("{REMOTE}:{bucket}");
    let (from, to) = if push {
        (dir.display().to_string(), remote)
    } else {
        (remote, dir.display().to_string())
    };
    let var = |k: &str| format!("RCLONE_CONFIG_{}_{k}", REMOTE.to_uppercase());
    c.args(["sync", &from, &to])
        .args(RCLONE_FLAGS)
        .env("RCLONE_CONFIG", config)
        .env(var("TYPE"), "s3")
        .env(var("PROVIDER"), "Other")
        .env(var("ACCESS_KEY_ID"), ACCESS_KEY)
        .env(var("SECRET_ACCESS_KEY"), SECRET_KEY)
        .env(var("ENDPOINT"), &server.url)
        // This machine's environment names a CA bundle rclone fails to
        // load (LoadCustomCABundleError); the server is plain HTTP.
        .env_remove("AWS_CA_BUNDLE");
    c
}

pub fn bench(b2c: &Path, runs: usize, work: &Path, logs: &Path) -> Result<VolumeResults> {
    let data = work.join("data");
    make_volume(&data)?;
    let root = work.join("s3");
    super::remove_tree(&root)?;
    std::fs::create_dir_all(root.join("pull"))?;
    let server = Server::start(&root, &logs.join("s3s-fs.log"))?;
    let config = work.join("rclone.conf");
    std::fs::write(&config, b"")?;
    let rclone = crate::run_output("rclone", &["version"])
        .map_err(|e| format!("{e} (Debian package rclone)"))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    // What every pull starts from, put there once by b2c.
    measure::run(
        &mut b2c_command(b2c, &server, true, &data, "pull"),
        &logs.join("volume-fill.log"),
    )?;
    let pulled = work.join("pulled");
    let pushed = root.join("push");
    // (key, label, push?, the command, where it writes)
    let mut tools: Vec<(&str, &str, bool, Command, PathBuf)> = vec![
        (
            "push-b2c",
            "`b2c volume push`",
            true,
            b2c_command(b2c, &server, true, &data, "push"),
            pushed.clone(),
        ),
        (
            "push-rclone",
            "`rclone sync` to the bucket",
            true,
            rclone_command(&server, true, &data, "push", &config),
            pushed.clone(),
        ),
        (
            "pull-b2c",
            "`b2c volume pull`",
            false,
            b2c_command(b2c, &server, false, &pulled, "pull"),
            pulled.clone(),
        ),
        (
            "pull-rclone",
            "`rclone sync` from the bucket",
            false,
            rclone_command(&server, false, &pulled, "pull", &config),
            pulled.clone(),
        ),
    ];
    let mut results: Vec<ToolRuns> = tools
        .iter()
        .map(|(key, label, _, cmd, _)| ToolRuns {
            key: key.to_string(),
            label: label.to_string(),
            command: describe(cmd),
            seconds: Vec::new(),
            sync_seconds: Vec::new(),
            max_rss_kib: Vec::new(),
            steps: Vec::new(),
            entries: 0,
            zstd_level: None,
        })
        .collect();
    let mut cold = true;
    for round in 0..runs {
        for ((key, _, push, cmd, dest), res) in tools.iter_mut().zip(results.iter_mut()) {
            super::remove_tree(dest)?;
            std::fs::create_dir_all(&*dest)?;
            cold &= measure::drop_caches();
            let log = logs.join(format!("volume-{key}-{round}.log"));
            let _ = std::fs::remove_file(&log);
            let m: Measured = measure::run(cmd, &log)?;
            let sync = measure::sync_time().as_secs_f64();
            let (files, bytes) = tally(dest);
            if (files, bytes) != (FILES, BYTES) {
                return Err(format!(
                    "{key}: {files} files, {bytes} bytes in {} after the {}; see {}",
                    dest.display(),
                    if *push { "push" } else { "pull" },
                    log.display()
                )
                .into());
            }
            res.seconds.push(m.wall.as_secs_f64());
            res.sync_seconds.push(sync);
            res.max_rss_kib.push(m.max_rss_kib);
            res.entries = files as u64;
            println!(
                "bench: volume {}/{runs} {key:<12} {:6.2} s (+ sync {sync:.2} s), peak RSS {:.0} MiB",
                round + 1,
                m.wall.as_secs_f64(),
                m.max_rss_kib as f64 / 1024.0
            );
        }
    }
    drop(server);
    super::remove_tree(&root)?;
    super::remove_tree(&pulled)?;
    Ok(VolumeResults {
        files: FILES,
        bytes: BYTES,
        large_file_bytes: layout().iter().map(|(_, s)| *s).max().unwrap_or(0),
        cold_cache: cold,
        rclone,
        tools: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_is_a_thousand_files_of_200_mib_with_one_in_parts() {
        let l = layout();
        assert_eq!(l.len(), FILES);
        assert_eq!(l.iter().map(|(_, s)| s).sum::<u64>(), BYTES);
        let big = l.iter().map(|(_, s)| *s).max().unwrap();
        assert!(big > 64 << 20, "{big}");
        let mut names: Vec<&str> = l.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FILES);
    }
}
