//! One sync of a volume with its bucket: list both ends, plan as `mc
//! mirror` does ([`super::mirror`]), then move the files, several at once,
//! each streamed. One console line per sync, a progress line every few
//! seconds on long ones.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use b2c_cmdline::VolumeOptions;
use b2c_system::info::human_bytes;
use futures_util::StreamExt;
use log::{info, warn};

use super::mirror::{self, Entry, MirrorFlags, MirrorPlan};
use super::s3::{Progress, S3Client, S3Error, ATTRS_HEADER};

/// Files in flight at once.
pub const CONCURRENCY: usize = 8;
/// How often a long sync says where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Downloads land in the target's directory under this prefix, then are
/// renamed into place: a cut-off pull leaves no half file under a real
/// name. Never pushed; removed when the volume is set up.
pub const PARTIAL_PREFIX: &str = ".b2c-pull-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Push,
    Pull,
}

impl Direction {
    fn verb(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Direction::Push => ("push", "pushed to", "pushing to"),
            Direction::Pull => ("pull", "pulled from", "pulling from"),
        }
    }
}

/// Where a volume syncs: a bucket (through its client) and a prefix.
pub struct Bucket<'a> {
    pub client: &'a S3Client,
    /// `ALIAS/BUCKET[/PREFIX]` as written, for messages.
    pub shown: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl<'a> Bucket<'a> {
    pub fn new(client: &'a S3Client, remote: &b2c_cmdline::Remote) -> Bucket<'a> {
        Bucket {
            client,
            shown: remote.to_string(),
            prefix: if remote.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", remote.prefix)
            },
        }
    }
}

/// How a push treats the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushMode {
    /// `mc mirror`: with the volume's remove flag.
    Mirror,
    /// `mc mirror --watch`: copies and overwrites, never removes.
    Watch,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub files: usize,
    pub bytes: u64,
    pub removed: usize,
    /// Differ at the destination, left alone (no `overwrite`).
    pub kept: usize,
    pub unchanged: usize,
    pub excluded: usize,
    pub elapsed: Duration,
}

/// Why a sync failed: the volume, the direction, where, and the first
/// error (never a key).
#[derive(Debug, thiserror::Error)]
#[error("volume {volume}: {verb} {remote} on {endpoint} failed: {reason}")]
pub struct SyncError {
    pub volume: String,
    pub verb: &'static str,
    pub remote: String,
    pub endpoint: String,
    pub reason: String,
    /// What had been moved before it failed.
    pub partial: SyncReport,
}

/// Pushes `dir` to `bucket` as `mc mirror` would, then logs one line.
pub async fn push(
    options: &VolumeOptions,
    dir: &Path,
    bucket: &Bucket<'_>,
    mode: PushMode,
) -> Result<SyncReport, SyncError> {
    sync(Direction::Push, options, dir, bucket, mode).await
}

/// Pulls `bucket` into `dir` as `mc mirror` would, then logs one line.
pub async fn pull(
    options: &VolumeOptions,
    dir: &Path,
    bucket: &Bucket<'_>,
) -> Result<SyncReport, SyncError> {
    sync(Direction::Pull, options, dir, bucket, PushMode::Mirror).await
}

async fn sync(
    direction: Direction,
    options: &VolumeOptions,
    dir: &Path,
    bucket: &Bucket<'_>,
    mode: PushMode,
) -> Result<SyncReport, SyncError> {
    let start = Instant::now();
    let (_, done_verb, doing_verb) = direction.verb();
    let fail = |reason: String, partial: SyncReport| SyncError {
        volume: options.name.clone(),
        verb: match direction {
            Direction::Push => "push to",
            Direction::Pull => "pull from",
        },
        remote: bucket.shown.clone(),
        endpoint: bucket.client.endpoint().to_string(),
        reason,
        partial,
    };
    let local = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || list_local(&dir))
            .await
            .map_err(|e| fail(format!("listing the volume: {e}"), SyncReport::default()))?
            .map_err(|e| fail(format!("listing the volume: {e}"), SyncReport::default()))?
    };
    let remote: Vec<Entry> = bucket
        .client
        .list(&bucket.prefix)
        .await
        .map_err(|e| fail(e.to_string(), SyncReport::default()))?
        .into_iter()
        .filter_map(|o| {
            let path = o.key.strip_prefix(&bucket.prefix)?.to_string();
            Some(Entry {
                path,
                size: o.size,
                mtime: o.last_modified,
            })
        })
        .collect();
    let flags = MirrorFlags {
        overwrite: options.overwrite,
        remove: options.remove && mode == PushMode::Mirror,
        exclude: &options.exclude,
    };
    let plan = match direction {
        Direction::Push => mirror::plan(&local, &remote, flags),
        Direction::Pull => {
            let mut plan = mirror::plan(&remote, &local, flags);
            // Keys that cannot be files here are refused, not written.
            let unsafe_paths: Vec<String> = plan
                .transfers()
                .filter(|e| !safe_relative(&e.path))
                .map(|e| e.path.clone())
                .collect();
            for path in &unsafe_paths {
                warn!(
                    "volume {}: object {path:?} is not a usable file name: not pulled",
                    options.name
                );
            }
            plan.copy.retain(|e| safe_relative(&e.path));
            plan.overwrite.retain(|e| safe_relative(&e.path));
            plan
        }
    };
    let mut report = SyncReport {
        kept: plan.differ_kept.len(),
        unchanged: plan.unchanged,
        excluded: plan.excluded,
        ..SyncReport::default()
    };
    let moved = transfer(direction, options, dir, bucket, &plan, doing_verb).await;
    report.files = moved.files;
    report.bytes = moved.bytes;
    if let Some(e) = moved.error {
        report.elapsed = start.elapsed();
        return Err(fail(e, report));
    }
    // Removals once every copy is done: nothing is lost if it stops here.
    for path in &plan.remove {
        let removed = match direction {
            Direction::Push => bucket
                .client
                .delete(&format!("{}{path}", bucket.prefix))
                .await
                .map_err(|e| e.to_string()),
            Direction::Pull => std::fs::remove_file(dir.join(path))
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| format!("removing {path}: {e}")),
        };
        match removed {
            Ok(()) => report.removed += 1,
            Err(e) => {
                report.elapsed = start.elapsed();
                return Err(fail(e, report));
            }
        }
    }
    report.elapsed = start.elapsed();
    info!(
        "volume {}: {done_verb} {}: {}",
        options.name, bucket.shown, report
    );
    Ok(report)
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} files, {}, {} removed",
            self.files,
            human_bytes(self.bytes),
            self.removed
        )?;
        if self.kept > 0 {
            write!(f, ", {} differing kept (no overwrite)", self.kept)?;
        }
        if self.excluded > 0 {
            write!(f, ", {} excluded", self.excluded)?;
        }
        write!(f, ", {} unchanged, in {secs:.1} s", self.unchanged)?;
        if self.bytes > 0 && secs > 0.0 {
            write!(f, " ({}/s)", human_bytes((self.bytes as f64 / secs) as u64))?;
        }
        Ok(())
    }
}

struct Moved {
    files: usize,
    bytes: u64,
    error: Option<String>,
}

/// Moves every file of the plan, [`CONCURRENCY`] at a time; the first
/// failure that would fail every other transfer too (server down, keys
/// refused) stops the rest.
async fn transfer(
    direction: Direction,
    options: &VolumeOptions,
    dir: &Path,
    bucket: &Bucket<'_>,
    plan: &MirrorPlan,
    doing_verb: &str,
) -> Moved {
    let total_files = plan.copy.len() + plan.overwrite.len();
    let total_bytes = plan.bytes();
    let progress = Progress::default();
    let files_done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error = std::sync::Mutex::new(None::<String>);
    let shared = Shared {
        stop: &stop,
        files_done: &files_done,
        first_error: &first_error,
    };
    let started = Instant::now();
    {
        let mut entries: Vec<Entry> = plan.transfers().cloned().collect();
        // Largest first: a large file started last would leave its one
        // stream to run alone at the end, the other slots idle.
        entries.sort_by_key(|e| std::cmp::Reverse(e.size));
        let all = futures_util::stream::iter(entries)
            .map(|entry| {
                one(
                    direction,
                    options,
                    dir,
                    bucket,
                    entry,
                    progress.clone(),
                    &shared,
                )
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>();
        let mut all = std::pin::pin!(all);
        loop {
            tokio::select! {
                _ = &mut all => break,
                _ = tokio::time::sleep(PROGRESS_EVERY) => info!(
                    "volume {}: {doing_verb} {}: {} of {}, {} of {total_files} files, {:.0} s",
                    options.name,
                    bucket.shown,
                    human_bytes(progress.bytes()),
                    human_bytes(total_bytes),
                    files_done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64(),
                ),
            }
        }
    }
    let files = files_done.load(Ordering::Relaxed);
    // Bytes of files done: a failed transfer's partial bytes do not count.
    let bytes = if files == total_files {
        total_bytes
    } else {
        progress.bytes().min(total_bytes)
    };
    Moved {
        files,
        bytes,
        error: first_error.into_inner().unwrap_or_else(|p| p.into_inner()),
    }
}

struct Shared<'s> {
    stop: &'s AtomicBool,
    files_done: &'s AtomicUsize,
    first_error: &'s std::sync::Mutex<Option<String>>,
}

async fn one(
    direction: Direction,
    options: &VolumeOptions,
    dir: &Path,
    bucket: &Bucket<'_>,
    entry: Entry,
    progress: Progress,
    shared: &Shared<'_>,
) {
    let entry = &entry;
    if shared.stop.load(Ordering::Relaxed) {
        return;
    }
    let result = match direction {
        Direction::Push => push_one(options, dir, bucket, entry, &progress).await,
        Direction::Pull => pull_one(options, dir, bucket, entry, &progress).await,
    };
    match result {
        Ok(()) => {
            shared.files_done.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            if e.fatal {
                shared.stop.store(true, Ordering::Relaxed);
            }
            let mut first = shared.first_error.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(e.message);
            } else {
                warn!("volume {}: {}", options.name, e.message);
            }
        }
    }
}

struct OneError {
    message: String,
    fatal: bool,
}

impl From<S3Error> for OneError {
    fn from(e: S3Error) -> OneError {
        OneError {
            fatal: e.is_fatal(),
            message: e.to_string(),
        }
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> OneError {
    OneError {
        message: format!("{what} {}: {e}", path.display()),
        fatal: false,
    }
}

async fn push_one(
    options: &VolumeOptions,
    dir: &Path,
    bucket: &Bucket<'_>,
    entry: &Entry,
    progress: &Progress,
) -> Result<(), OneError> {
    let path = dir.join(&entry.path);
    let attrs = if options.preserve {
        let meta = std::fs::metadata(&path).map_err(|e| io_error("reading", &path, e))?;
        Some(mc_attrs(&meta))
    } else {
        None
    };
    let key = format!("{}{}", bucket.prefix, entry.path);
    bucket
        .client
        .upload(&key, &path, entry.size, attrs.as_deref(), progress)
        .await?;
    Ok(())
}

async fn pull_one(
    options: &VolumeOptions,
    dir: &Path,
    bucket: &Bucket<'_>,
    entry: &Entry,
    progress: &Progress,
) -> Result<(), OneError> {
    let dest = dir.join(&entry.path);
    let parent = dest.parent().unwrap_or(dir).to_path_buf();
    create_dirs_beneath(dir, &parent).map_err(|e| io_error("creating", &parent, e))?;
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let partial = parent.join(format!(
        "{PARTIAL_PREFIX}{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let key = format!("{}{}", bucket.prefix, entry.path);
    let got = match bucket.client.download(&key, &partial, progress).await {
        Ok(got) => got,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    let finish = || -> std::io::Result<()> {
        let file = std::fs::File::options().write(true).open(&partial)?;
        let attrs = got
            .attrs
            .as_deref()
            .filter(|_| options.preserve)
            .map(parse_mc_attrs);
        // mtime: the preserved one, else the object's: a file pulled and
        // not touched since is not pushed back as "newer".
        // (The listing's time, which later comparisons use, rather than
        // the GET's Last-Modified, which has whole seconds only.)
        let mtime = attrs.as_ref().and_then(|a| a.mtime).unwrap_or(entry.mtime);
        file.set_times(
            std::fs::FileTimes::new()
                .set_modified(mtime)
                .set_accessed(attrs.as_ref().and_then(|a| a.atime).unwrap_or(mtime)),
        )?;
        if let Some(a) = &attrs {
            use std::os::unix::fs::PermissionsExt;
            if let Some(mode) = a.mode {
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if a.uid.is_some() || a.gid.is_some() {
                std::os::unix::fs::fchown(&file, a.uid, a.gid)?;
            }
        }
        drop(file);
        std::fs::rename(&partial, &dest)
    };
    finish().map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        io_error("writing", &dest, e)
    })
}

/// Creates `target` and its parents below `root`, refusing to go through
/// a symlink (a volume's content is the job's: it must not send a pull
/// elsewhere).
fn create_dirs_beneath(root: &Path, target: &Path) -> std::io::Result<()> {
    let rel = target.strip_prefix(root).map_err(std::io::Error::other)?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    at.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A key's relative path that can be a file beneath the volume: no empty,
/// `.` or `..` component.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(PARTIAL_PREFIX))
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The regular files of `dir`, recursively, by relative path. Symlinks
/// and special files are not synced (`mc mirror` skips them too);
/// leftovers of a cut-off pull are ignored.
pub fn list_local(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.is_empty() => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                warn!("{}: not a UTF-8 name, not synced", entry.path().display());
                continue;
            };
            if name.starts_with(PARTIAL_PREFIX) {
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push((entry.path(), child));
            } else if meta.is_file() {
                out.push(Entry {
                    path: child,
                    size: meta.len(),
                    mtime: meta.modified()?,
                });
            }
        }
    }
    Ok(out)
}

/// Removes what a cut-off pull left in `dir`.
pub fn remove_partials(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with(PARTIAL_PREFIX)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `mc mirror -a`'s attributes: `atime:S#N/gid:G/mode:M/mtime:S#N/uid:U`.
pub fn mc_attrs(meta: &std::fs::Metadata) -> String {
    format!(
        "atime:{}#{}/gid:{}/mode:{}/mtime:{}#{}/uid:{}",
        meta.atime(),
        meta.atime_nsec(),
        meta.gid(),
        meta.mode(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.uid()
    )
}

/// What [`mc_attrs`] (or mc itself) stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

pub fn parse_mc_attrs(value: &str) -> Attrs {
    let mut a = Attrs::default();
    let time = |v: &str| {
        let (s, n) = v.split_once('#').unwrap_or((v, "0"));
        let s: u64 = s.trim().parse().ok()?;
        let n: u32 = n.trim().parse().ok().filter(|n| *n < 1_000_000_000)?;
        Some(UNIX_EPOCH + Duration::new(s, n))
    };
    for field in value.split('/') {
        let Some((k, v)) = field.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "mode" => a.mode = v.parse().ok(),
            "uid" => a.uid = v.parse().ok(),
            "gid" => a.gid = v.parse().ok(),
            "mtime" => a.mtime = time(v),
            "atime" => a.atime = time(v),
            _ => {}
        }
    }
    a
}

/// For tests: the header name, so that a test server's stored metadata
/// can be checked.
pub const PRESERVE_HEADER: &str = ATTRS_HEADER;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_in_mc_format() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let meta = std::fs::metadata(&f).unwrap();
        let shown = mc_attrs(&meta);
        let a = parse_mc_attrs(&shown);
        assert_eq!(a.mode, Some(meta.mode()));
        assert_eq!(a.mtime, Some(meta.modified().unwrap()));
        assert_eq!(a.uid, Some(meta.uid()));
        // What mc writes, with uname/gname and ctime, parses too.
        let a = parse_mc_attrs(
            "atime:1600000000#5/ctime:1600000001#0/gid:0/gname:root/mode:33261/mtime:1600000002/uid:1000/uname:u",
        );
        assert_eq!(a.mode, Some(0o100755));
        assert_eq!(a.uid, Some(1000));
        assert_eq!(
            a.mtime,
            Some(UNIX_EPOCH + Duration::from_secs(1_600_000_002))
        );
        assert_eq!(a.atime, Some(UNIX_EPOCH + Duration::new(1_600_000_000, 5)));
        assert_eq!(parse_mc_attrs("garbage"), Attrs::default());
    }

    #[test]
    fn local_listing_skips_partials_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/c"), b"123").unwrap();
        std::fs::write(d.join("top"), b"").unwrap();
        std::fs::write(d.join(format!("a/{PARTIAL_PREFIX}1-2")), b"half").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let mut got: Vec<(String, u64)> = list_local(d)
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.size))
            .collect();
        got.sort();
        assert_eq!(got, [("a/b/c".to_string(), 3), ("top".to_string(), 0)]);
        remove_partials(d);
        assert!(!d.join(format!("a/{PARTIAL_PREFIX}1-2")).exists());
        assert!(list_local(&d.join("missing")).unwrap().is_empty());
    }

    #[test]
    fn keys_that_cannot_be_files_beneath_the_volume() {
        for ok in ["a", "a/b", "a.b/c..d", ".hidden"] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in ["", "/a", "a//b", "../x", "a/../../x", "a/.", "./a", "a/"] {
            assert!(!safe_relative(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", dir.path().join("out")).unwrap();
        assert!(create_dirs_beneath(dir.path(), &dir.path().join("out/x")).is_err());
        create_dirs_beneath(dir.path(), &dir.path().join("in/x")).unwrap();
        assert!(dir.path().join("in/x").is_dir());
    }
}
