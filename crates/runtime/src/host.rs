//! What the engine does to the host, behind a narrow trait: the real
//! [`System`] (files, overlayfs, crun through the reaper) and, in tests, a
//! fake that records calls, so that the engine's and the pipeline's logic
//! is tested without root, mounts or crun.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use b2c_oci::OverlayError;
use b2c_system::reaper::{self, ExitCode, Process};

use crate::servicelog::Follower;
use crate::stop::{self, Running};
use crate::user::UserError;

/// A container's overlay: its writable layer, overlayfs's work directory
/// and the merged root, all inside its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
}

impl OverlayDirs {
    pub fn in_bundle(bundle: &Path) -> OverlayDirs {
        OverlayDirs {
            upper: bundle.join("upper"),
            work: bundle.join("work"),
            rootfs: bundle.join("rootfs"),
        }
    }
}

/// The host operations of running containers.
pub trait Host {
    /// A container started in the background.
    type Process;

    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, content: &[u8]) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The image's layers, bottom → top, as one overlay at `dirs.rootfs`.
    fn mount_overlay(&self, layers: &[PathBuf], dirs: &OverlayDirs) -> Result<(), OverlayError>;
    /// A lazy unmount: a process of the container may still hold it.
    fn unmount(&self, path: &Path) -> io::Result<()>;
    /// The `(uid, gid)` of a `-u`/`User` spec, from the image's own
    /// /etc/passwd and /etc/group under `rootfs`.
    fn resolve_user(&self, spec: &str, rootfs: &Path)
        -> Result<(u32, u32), crate::user::UserError>;
    /// `crun run`, in the foreground; the exit code (128 + signal when
    /// killed).
    fn run(&self, bundle: &Path, id: &str) -> Result<ExitCode, b2c_system::Error>;
    /// `crun run` in the background, without stdin, its output (and
    /// crun's) going to the file `log`, replaced.
    fn spawn(
        &self,
        bundle: &Path,
        id: &str,
        log: &Path,
    ) -> Result<Self::Process, b2c_system::Error>;
    /// The last `lines` lines of a log written by a spawned container.
    fn log_tail(&self, log: &Path, lines: usize) -> io::Result<Vec<String>>;
    /// How a background container ended, if it did within `timeout`.
    fn wait_timeout(&self, process: &Self::Process, timeout: Duration) -> Option<ExitCode>;
    /// Signals every process of a container; best effort.
    fn kill(&self, id: &str, signal: &str);
}

/// The machine itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct System;

/// A background container of the real host: its `crun run`, its entry in
/// the list of what a stop request stops, and with `b2c.log=debug` the
/// follower of its log.
#[derive(Debug)]
pub struct Background {
    process: Process,
    _running: Running,
    _follower: Option<Follower>,
}

impl Host for System {
    type Process = Background;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn write(&self, path: &Path, content: &[u8]) -> io::Result<()> {
        std::fs::write(path, content)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn mount_overlay(&self, layers: &[PathBuf], dirs: &OverlayDirs) -> Result<(), OverlayError> {
        b2c_oci::mount_overlay(layers, &dirs.upper, &dirs.work, &dirs.rootfs)
    }

    fn unmount(&self, path: &Path) -> io::Result<()> {
        rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).map_err(io::Error::from)
    }

    fn resolve_user(&self, spec: &str, rootfs: &Path) -> Result<(u32, u32), UserError> {
        crate::user::resolve_user(spec, rootfs)
    }

    fn run(&self, bundle: &Path, id: &str) -> Result<ExitCode, b2c_system::Error> {
        // Ctrl-Alt-Del, SIGTERM…: whatever runs is stopped.
        stop::stop_on_request();
        let process = reaper::spawn(&mut crun(bundle, id))?;
        let _running = Running::add(id, process.pid());
        Ok(process.wait())
    }

    fn spawn(&self, bundle: &Path, id: &str, log: &Path) -> Result<Background, b2c_system::Error> {
        stop::stop_on_request();
        let file = std::fs::File::create(log).map_err(|e| b2c_system::Error::io(log, e))?;
        let err = file
            .try_clone()
            .map_err(|e| b2c_system::Error::io(log, e))?;
        // A background service must not steal the console's input from the
        // foreground container, nor write between its lines.
        let process = reaper::spawn(
            crun(bundle, id)
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(err),
        )?;
        let follower =
            log::log_enabled!(log::Level::Debug).then(|| Follower::start(id, log.to_path_buf()));
        Ok(Background {
            _running: Running::add(id, process.pid()),
            process,
            _follower: follower,
        })
    }

    fn log_tail(&self, log: &Path, lines: usize) -> io::Result<Vec<String>> {
        crate::servicelog::tail(log, lines)
    }

    fn wait_timeout(&self, service: &Background, timeout: Duration) -> Option<ExitCode> {
        service.process.wait_timeout(timeout)
    }

    fn kill(&self, id: &str, signal: &str) {
        crate::crun::kill(id, signal);
    }
}

fn crun(bundle: &Path, id: &str) -> Command {
    crate::crun::command(bundle, id)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A host that records what the engine asks of it.

    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Calls, in order, as short strings (`mount /b/rootfs`, `run run-0`).
    #[derive(Default)]
    pub struct FakeHost {
        pub calls: RefCell<Vec<String>>,
        /// Every file written, kept after its directory is removed.
        pub files: RefCell<BTreeMap<PathBuf, Vec<u8>>>,
        pub dirs: RefCell<BTreeSet<PathBuf>>,
        pub mounted: RefCell<BTreeSet<PathBuf>>,
        /// Exit codes of `run`, by container id; 0 when not listed.
        pub exit_codes: BTreeMap<String, i32>,
        /// Container ids whose `run`/`spawn` fails to start.
        pub crun_fails: BTreeSet<String>,
        /// Paths that exist on the host (for `-v /host:/dst`).
        pub host_paths: BTreeSet<PathBuf>,
        /// Services that ignore SIGTERM.
        pub stubborn: BTreeSet<String>,
        /// Services signalled so far, by id.
        pub killed: RefCell<BTreeMap<String, Vec<String>>>,
        /// Services that exited by themselves, with this code, by id.
        pub exited: BTreeMap<String, i32>,
        /// What services wrote to their log, by id.
        pub service_logs: BTreeMap<String, String>,
    }

    impl FakeHost {
        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }

        fn call(&self, what: String) {
            self.calls.borrow_mut().push(what);
        }

        pub fn file(&self, path: &str) -> String {
            let files = self.files.borrow();
            String::from_utf8(files[Path::new(path)].clone()).unwrap()
        }
    }

    impl Host for FakeHost {
        type Process = String;

        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.dirs.borrow_mut().insert(path.to_path_buf());
            Ok(())
        }

        fn write(&self, path: &Path, content: &[u8]) -> io::Result<()> {
            self.files
                .borrow_mut()
                .insert(path.to_path_buf(), content.to_vec());
            Ok(())
        }

        fn exists(&self, path: &Path) -> bool {
            self.host_paths.contains(path) || self.dirs.borrow().contains(path)
        }

        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            assert!(
                !self.mounted.borrow().iter().any(|m| m.starts_with(path)),
                "{} removed while {:?} is mounted",
                path.display(),
                self.mounted.borrow()
            );
            self.call(format!("remove {}", path.display()));
            // Files stay in `files`: the tests read what was written.
            self.dirs.borrow_mut().retain(|d| !d.starts_with(path));
            Ok(())
        }

        fn mount_overlay(
            &self,
            layers: &[PathBuf],
            dirs: &OverlayDirs,
        ) -> Result<(), OverlayError> {
            if layers.is_empty() {
                return Err(OverlayError::NoLayers);
            }
            self.call(format!("mount {}", dirs.rootfs.display()));
            self.mounted.borrow_mut().insert(dirs.rootfs.clone());
            Ok(())
        }

        fn unmount(&self, path: &Path) -> io::Result<()> {
            self.call(format!("unmount {}", path.display()));
            self.mounted.borrow_mut().remove(path);
            Ok(())
        }

        fn resolve_user(&self, spec: &str, _rootfs: &Path) -> Result<(u32, u32), UserError> {
            crate::user::resolve_user_in(spec, "root:x:0:0::/root:/bin/sh\n", "root:x:0:\n")
        }

        fn run(&self, _bundle: &Path, id: &str) -> Result<ExitCode, b2c_system::Error> {
            self.call(format!("run {id}"));
            if self.crun_fails.contains(id) {
                return Err(b2c_system::Error::Spawn {
                    program: "crun".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            Ok(ExitCode(self.exit_codes.get(id).copied().unwrap_or(0)))
        }

        fn spawn(&self, bundle: &Path, id: &str, log: &Path) -> Result<String, b2c_system::Error> {
            self.call(format!("spawn {id} > {}", log.display()));
            let _ = bundle;
            if self.crun_fails.contains(id) {
                return Err(b2c_system::Error::Spawn {
                    program: "crun".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            Ok(id.to_string())
        }

        fn log_tail(&self, log: &Path, lines: usize) -> io::Result<Vec<String>> {
            let id = log.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let text = self.service_logs.get(id).ok_or(io::ErrorKind::NotFound)?;
            Ok(crate::servicelog::tail_of(text.as_bytes(), lines))
        }

        fn wait_timeout(&self, id: &String, _timeout: Duration) -> Option<ExitCode> {
            if let Some(code) = self.exited.get(id) {
                return Some(ExitCode(*code));
            }
            let killed = self.killed.borrow();
            let signals = killed.get(id)?;
            if signals.iter().any(|s| s == "KILL") {
                Some(ExitCode(137))
            } else if signals.iter().any(|s| s == "TERM") && !self.stubborn.contains(id) {
                Some(ExitCode(143))
            } else {
                None
            }
        }

        fn kill(&self, id: &str, signal: &str) {
            self.call(format!("kill {id} {signal}"));
            self.killed
                .borrow_mut()
                .entry(id.to_string())
                .or_default()
                .push(signal.to_string());
        }
    }
}
