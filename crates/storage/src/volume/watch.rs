//! `push_on=changes` (`mc mirror --watch`): inotify on the volume's
//! directories; once writes settle, what changed is pushed (copies and
//! overwrites, never removals).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use b2c_cmdline::{Remote, VolumeOptions};
use log::{debug, warn};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::s3::S3Client;
use super::sync::{self, Bucket, PushMode};

/// A push starts once no file was closed for this long...
const QUIET: Duration = Duration::from_millis(500);
/// ...or this long after the first change, under constant writes.
const AT_MOST: Duration = Duration::from_secs(5);

pub struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub fn start(
        options: VolumeOptions,
        dir: PathBuf,
        client: Arc<S3Client>,
        remote: Remote,
    ) -> std::io::Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        watch_tree(&inotify, &dir);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let thread_stop = stop.clone();
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name("volume-watch".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    let fd = inotify.as_fd();
                    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                    if !matches!(nix::poll::poll(&mut fds, 200u16), Ok(n) if n > 0) {
                        continue;
                    }
                    let Ok(events) = inotify.read_events() else {
                        continue;
                    };
                    let mut changed = false;
                    for ev in events {
                        if ev.mask.contains(AddWatchFlags::IN_ISDIR)
                            && ev
                                .mask
                                .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                        {
                            // A new directory: watch it, and what it holds.
                            // Its path is not known from the event alone:
                            // watch the whole tree again (watches are
                            // deduplicated by the kernel).
                            watch_tree(&inotify, &thread_dir);
                            changed = true;
                        } else if ev
                            .mask
                            .intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO)
                        {
                            changed = true;
                        }
                    }
                    if changed && tx.send(()).is_err() {
                        break;
                    }
                }
            })?;
        let task_stop = stop.clone();
        let task = tokio::spawn(async move {
            let bucket = Bucket::new(&client, &remote);
            while rx.recv().await.is_some() {
                // Let the writes settle.
                let first = tokio::time::Instant::now();
                loop {
                    match tokio::time::timeout(QUIET, rx.recv()).await {
                        Ok(Some(())) if first.elapsed() < AT_MOST => continue,
                        _ => break,
                    }
                }
                if task_stop.load(Ordering::Relaxed) {
                    break;
                }
                debug!("volume {}: changes: pushing", options.name);
                if let Err(e) = sync::push(&options, &dir, &bucket, PushMode::Watch).await {
                    warn!("{e} (it is pushed again at pipeline_end)");
                }
            }
        });
        Ok(Watcher { stop, task })
    }

    /// Stops watching; a push in progress completes first.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread ends within its poll timeout and drops the sender,
        // which ends the task once its push is done.
        if let Err(e) = self.task.await {
            warn!("volume watcher: {e}");
        }
    }
}

/// Watches `dir` and every directory below it.
fn watch_tree(inotify: &Inotify, dir: &Path) {
    let flags = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_ONLYDIR;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Err(e) = inotify.add_watch(&d, flags) {
            debug!("cannot watch {}: {e}", d.display());
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}
