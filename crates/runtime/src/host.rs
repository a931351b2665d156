//! What the engine does to the host, behind a narrow trait: the real
//! [`System`] (files, overlayfs, crun through the reaper, the console
//! relay) and, in tests, a fake that records calls, so that the engine's
//! and the pipeline's logic is tested without root, mounts or crun.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcessStdio};
use std::time::Duration;

use b2c_oci::OverlayError;
use b2c_system::reaper::{self, ExitCode, Process};
use log::warn;

use crate::console::{self, Relay, Stdio, Stream};
use crate::servicelog::Follower;
use crate::stop::{self, Running, StopPolicy};
use crate::user::{ResolvedUser, UserError};

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

/// One container to start with crun: its bundle, its crun id, its stdio
/// and how it is stopped.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub bundle: &'a Path,
    pub id: &'a str,
    pub stdio: Stdio,
    pub stop: StopPolicy,
    /// For a service without `-t`: the file its output (and crun's) goes
    /// to, replaced, instead of the console.
    pub log: Option<&'a Path>,
}

/// The host operations of running containers.
pub trait Host {
    /// A container started in the background.
    type Process;

    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, content: &[u8]) -> io::Result<()>;
    /// A host file, such as /etc/hosts, that a container's own copy
    /// starts from.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn exists(&self, path: &Path) -> bool;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// `-v …:U`: the tree at `path` chowned to the container's user.
    fn chown_tree(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// The image's layers, bottom → top, as one overlay at `dirs.rootfs`.
    fn mount_overlay(&self, layers: &[PathBuf], dirs: &OverlayDirs) -> Result<(), OverlayError>;
    /// A lazy unmount: a process of the container may still hold it.
    fn unmount(&self, path: &Path) -> io::Result<()>;
    /// The user of a `-u`/`User` spec and its `--group-add` groups, from
    /// the image's own /etc/passwd and /etc/group under `rootfs`.
    fn resolve_user(
        &self,
        spec: &str,
        groups: &[String],
        rootfs: &Path,
    ) -> Result<ResolvedUser, UserError>;
    /// b2c's own environment (`-e NAME`, `--env-host`, `--http-proxy`).
    fn environment(&self) -> Vec<(String, String)>;
    /// The init bound into `--init` containers: b2c itself.
    fn init_binary(&self) -> PathBuf;
    /// `crun run`, in the foreground; the exit code (128 + signal when
    /// killed).
    fn run(&self, launch: &Launch) -> Result<ExitCode, b2c_system::Error>;
    /// `crun run` in the background, without console input.
    fn spawn(&self, launch: &Launch) -> Result<Self::Process, b2c_system::Error>;
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
/// the list of what a stop request stops, and its console relay (`-t`).
pub struct Background {
    process: Process,
    _running: Running,
    relay: Option<Relay>,
    /// With `b2c.log=debug`: its log's lines, on the console as they come.
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

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn chown_tree(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        chown_tree(path, uid, gid)
    }

    fn mount_overlay(&self, layers: &[PathBuf], dirs: &OverlayDirs) -> Result<(), OverlayError> {
        b2c_oci::mount_overlay(layers, &dirs.upper, &dirs.work, &dirs.rootfs)
    }

    fn unmount(&self, path: &Path) -> io::Result<()> {
        rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).map_err(io::Error::from)
    }

    fn resolve_user(
        &self,
        spec: &str,
        groups: &[String],
        rootfs: &Path,
    ) -> Result<ResolvedUser, UserError> {
        crate::user::resolve_user(spec, groups, rootfs)
    }

    fn environment(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    fn init_binary(&self) -> PathBuf {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/init"))
    }

    fn run(&self, launch: &Launch) -> Result<ExitCode, b2c_system::Error> {
        // Ctrl-Alt-Del, SIGTERM…: whatever runs is stopped.
        stop::stop_on_request();
        let wiring = Wiring::prepare(launch, true).map_err(|e| spawn_error(launch, e))?;
        let mut cmd = crun(
            launch,
            wiring.console_socket.as_ref().map(|(p, _)| p.as_path()),
        );
        let wiring = wiring.apply(&mut cmd);
        let process = reaper::spawn(&mut cmd)?;
        // crun's copies of our pipe ends go with the command.
        drop(cmd);
        let _running = Running::add(launch.id, process.pid(), &launch.stop);
        let relay = match wiring.attach(&process) {
            Ok(relay) => relay,
            Err(e) => {
                // crun failed before handing the pty over: it says why.
                warn!("{}: no console for the container: {e}", launch.id);
                None
            }
        };
        let code = process.wait();
        if let Some((relay, _raw)) = relay {
            relay.finish();
        }
        Ok(code)
    }

    fn spawn(&self, launch: &Launch) -> Result<Background, b2c_system::Error> {
        stop::stop_on_request();
        let wiring = Wiring::prepare(launch, false).map_err(|e| spawn_error(launch, e))?;
        let mut cmd = crun(
            launch,
            wiring.console_socket.as_ref().map(|(p, _)| p.as_path()),
        );
        // A background service must not steal the console's input from the
        // foreground container.
        cmd.stdin(ProcessStdio::null());
        let wiring = wiring.apply(&mut cmd);
        let log = launch.log.filter(|_| !launch.stdio.tty);
        if let Some(log) = log {
            // Not between the foreground container's lines.
            let file = std::fs::File::create(log).map_err(|e| b2c_system::Error::io(log, e))?;
            let err = file
                .try_clone()
                .map_err(|e| b2c_system::Error::io(log, e))?;
            cmd.stdout(file).stderr(err);
        }
        let process = reaper::spawn(&mut cmd)?;
        drop(cmd);
        let follower = log
            .filter(|_| log::log_enabled!(log::Level::Debug))
            .map(|log| Follower::start(launch.id, log.to_path_buf()));
        let running = Running::add(launch.id, process.pid(), &launch.stop);
        let relay = match wiring.attach(&process) {
            Ok(relay) => relay.map(|(relay, _)| relay),
            Err(e) => {
                warn!("{}: no console for the service: {e}", launch.id);
                None
            }
        };
        Ok(Background {
            process,
            _running: running,
            relay,
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

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.finish();
        }
    }
}

fn spawn_error(launch: &Launch, source: io::Error) -> b2c_system::Error {
    b2c_system::Error::Spawn {
        program: format!("crun (console of {})", launch.id),
        source,
    }
}

fn crun(launch: &Launch, console_socket: Option<&Path>) -> Command {
    crate::crun::command(launch.bundle, launch.id, console_socket)
}

/// How a container's stdio reaches the console, before and after crun
/// starts: a console socket for `-t` (crun sends the pty master there),
/// else pipes (foreground containers only: a service keeps what it is
/// given).
struct Wiring {
    console_socket: Option<(PathBuf, UnixListener)>,
    /// The container's stdout and stderr when not a tty: ours, crun's.
    output: Option<OwnedFd>,
    output_theirs: Option<OwnedFd>,
    /// The container's stdin with `-i` and no tty: ours, crun's.
    input: Option<OwnedFd>,
    input_theirs: Option<OwnedFd>,
    stdio: Stdio,
    foreground: bool,
}

/// A started relay, and the console's raw mode while it lasts.
type Attached = (Relay, Option<console::RawConsole>);

impl Wiring {
    fn prepare(launch: &Launch, foreground: bool) -> io::Result<Wiring> {
        let stdio = launch.stdio;
        let mut wiring = Wiring {
            console_socket: None,
            output: None,
            output_theirs: None,
            input: None,
            input_theirs: None,
            stdio,
            foreground,
        };
        if stdio.tty {
            let path = launch.bundle.join("console.sock");
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            listener.set_nonblocking(true)?;
            wiring.console_socket = Some((path, listener));
        } else if foreground {
            // As under podman: no terminal unless -t.
            let (ours, theirs) = nix::unistd::pipe().map_err(io::Error::from)?;
            wiring.output = Some(ours);
            wiring.output_theirs = Some(theirs);
            if stdio.interactive {
                let (theirs, ours) = nix::unistd::pipe().map_err(io::Error::from)?;
                wiring.input = Some(ours);
                wiring.input_theirs = Some(theirs);
            }
        }
        Ok(wiring)
    }

    /// crun's stdio; crun's ends leave us with the command, so that the
    /// relay sees EOF once the container is gone.
    fn apply(mut self, cmd: &mut Command) -> Wiring {
        if self.stdio.tty {
            // The container's stdio is the pty; crun itself reads nothing.
            cmd.stdin(ProcessStdio::null());
        }
        if let Some(theirs) = self.output_theirs.take() {
            if let Ok(copy) = theirs.try_clone() {
                cmd.stdout(copy);
            }
            cmd.stderr(theirs);
        }
        if self.foreground && !self.stdio.tty {
            match self.input_theirs.take() {
                Some(theirs) => cmd.stdin(theirs),
                None => cmd.stdin(ProcessStdio::null()),
            };
        }
        self
    }

    /// Once crun runs: receives the pty master (`-t`), starts the relay.
    fn attach(self, process: &Process) -> io::Result<Option<Attached>> {
        let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
        if let Some((path, listener)) = self.console_socket {
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if process.wait_timeout(Duration::from_millis(20)).is_some() {
                            return Err(io::Error::other("crun ended before sending the pty"));
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            let master = console::receive_fd(&stream)?;
            let _ = std::fs::remove_file(path);
            let stdin = std::io::stdin();
            let mut raw = None;
            let input = if self.foreground && self.stdio.interactive {
                console::copy_window_size(stdin.as_fd(), master.as_fd());
                raw = console::RawConsole::enter(stdin.as_fd());
                Some(Stream {
                    from: stdin.as_fd().try_clone_to_owned()?,
                    to: master.try_clone()?,
                })
            } else {
                console::copy_window_size(stdin.as_fd(), master.as_fd());
                None
            };
            let relay = Relay::start(
                Stream {
                    from: master,
                    to: stdout,
                },
                input,
            )?;
            return Ok(Some((relay, raw)));
        }
        let Some(ours) = self.output else {
            return Ok(None);
        };
        let input = match self.input {
            Some(to) => Some(Stream {
                from: std::io::stdin().as_fd().try_clone_to_owned()?,
                to,
            }),
            None => None,
        };
        let relay = Relay::start(
            Stream {
                from: ours,
                to: stdout,
            },
            input,
        )?;
        Ok(Some((relay, None)))
    }
}

/// `chown -R`, without following symlinks.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
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
        /// Files of the host that `read` returns.
        pub host_files: BTreeMap<PathBuf, String>,
        /// b2c's environment.
        pub environment: Vec<(String, String)>,
        /// Services that ignore their stop signal.
        pub stubborn: BTreeSet<String>,
        /// Services signalled so far, by id.
        pub killed: RefCell<BTreeMap<String, Vec<String>>>,
        /// Every launch: (id, stdio, stop policy).
        pub launches: RefCell<Vec<(String, Stdio, StopPolicy)>>,
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

        fn launch(&self, verb: &str, launch: &Launch) -> Result<(), b2c_system::Error> {
            match launch.log {
                Some(log) => self.call(format!("{verb} {} > {}", launch.id, log.display())),
                None => self.call(format!("{verb} {}", launch.id)),
            }
            self.launches.borrow_mut().push((
                launch.id.to_string(),
                launch.stdio,
                launch.stop.clone(),
            ));
            if self.crun_fails.contains(launch.id) {
                return Err(b2c_system::Error::Spawn {
                    program: "crun".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            Ok(())
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

        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.host_files
                .get(path)
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
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

        fn chown_tree(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.call(format!("chown {uid}:{gid} {}", path.display()));
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

        fn resolve_user(
            &self,
            spec: &str,
            groups: &[String],
            _rootfs: &Path,
        ) -> Result<ResolvedUser, UserError> {
            crate::user::resolve_full(
                spec,
                groups,
                "root:x:0:0::/root:/bin/sh\nmesa:x:1000:1000::/home/mesa:/bin/sh\n",
                "root:x:0:\nvideo:x:44:\n",
            )
        }

        fn environment(&self) -> Vec<(String, String)> {
            self.environment.clone()
        }

        fn init_binary(&self) -> PathBuf {
            PathBuf::from("/init")
        }

        fn run(&self, launch: &Launch) -> Result<ExitCode, b2c_system::Error> {
            self.launch("run", launch)?;
            Ok(ExitCode(
                self.exit_codes.get(launch.id).copied().unwrap_or(0),
            ))
        }

        fn spawn(&self, launch: &Launch) -> Result<String, b2c_system::Error> {
            self.launch("spawn", launch)?;
            Ok(launch.id.to_string())
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
            } else if !signals.is_empty() && !self.stubborn.contains(id) {
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
