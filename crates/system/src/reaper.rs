//! The one owner of `waitpid(-1)`.
//!
//! As PID 1 we inherit every orphan of the system and must reap them, or
//! they stay zombies forever. A single thread collects every child; whoever
//! started a process asks the reaper for that pid's status. Nothing else may
//! call `wait`, or the two would steal statuses from each other.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};

use crate::Error;

/// How a child ended, in shell terms: its exit code, or 128 + signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub i32);

#[derive(Default)]
struct State {
    /// Statuses collected but not yet asked for. Orphans we never asked
    /// about are dropped when the map grows, see `record`.
    exited: HashMap<i32, ExitCode>,
    /// Pids someone waits for: their statuses are kept until taken.
    wanted: std::collections::HashSet<i32>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a status is recorded.
    exited: Condvar,
    /// Signalled when a child is started, to wake a reaper with none.
    spawned: Condvar,
}

static REAPER: OnceLock<Arc<Shared>> = OnceLock::new();
const THREAD_NAME: &str = "reaper";

fn shared() -> &'static Arc<Shared> {
    REAPER.get_or_init(|| {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            exited: Condvar::new(),
            spawned: Condvar::new(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || reap_forever(&s))
            .expect("cannot start the reaper thread");
        shared
    })
}

fn reap_forever(s: &Shared) {
    loop {
        // Peek first, and reap only while holding the state lock: `spawn`
        // holds it across the fork, and when the exec fails std waits for
        // that child itself (its fork path, taken because of the pre_exec
        // hook). Reaping it first would make std panic.
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(peeked) => {
                let Some(pid) = peeked.pid() else { continue };
                let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
                let code = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => ExitCode(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => ExitCode(128 + sig as i32),
                    // Taken by std (a failed exec) in the meantime.
                    _ => continue,
                };
                record(&mut st, pid.as_raw(), code);
                s.exited.notify_all();
            }
            Err(Errno::EINTR) => {}
            Err(_) => {
                // ECHILD: nobody to wait for until something is spawned.
                // The timeout covers children started behind our back.
                let guard = s.state.lock().unwrap_or_else(|e| e.into_inner());
                let _ = s.spawned.wait_timeout(guard, Duration::from_millis(500));
            }
        }
    }
}

fn record(st: &mut State, pid: i32, code: ExitCode) {
    st.exited.insert(pid, code);
    // Reaped orphans nobody asked about must not pile up for hours.
    if st.exited.len() > 1024 {
        let State { exited, wanted } = st;
        exited.retain(|pid, _| wanted.contains(pid));
    }
}

/// Starts the reaper thread. Call early in PID 1; idempotent.
pub fn start() {
    shared();
}

/// A started child whose status comes from the reaper.
#[derive(Debug)]
pub struct Process {
    pid: i32,
}

impl Process {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits up to `timeout`; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitCode> {
        let s = shared();
        let deadline = std::time::Instant::now() + timeout;
        let mut st = s.state.lock().unwrap();
        loop {
            // Left in place for `wait`, which consumes it.
            if let Some(code) = st.exited.get(&self.pid) {
                return Some(*code);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            st = s.exited.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Blocks until the process ended.
    pub fn wait(self) -> ExitCode {
        let s = shared();
        let mut st = s.state.lock().unwrap();
        loop {
            if let Some(code) = st.exited.remove(&self.pid) {
                st.wanted.remove(&self.pid);
                return code;
            }
            st = s.exited.wait(st).unwrap();
        }
    }
}

/// Starts `cmd`; its status must be taken with [`Process::wait`], never
/// with std's `Child::wait`. The child starts with no signal blocked.
pub fn spawn(cmd: &mut Command) -> Result<Process, Error> {
    let s = shared();
    let program = cmd.get_program().to_string_lossy().into_owned();
    // std hands the parent's signal mask down as it is, and PID 1 blocks
    // the stop signals (see `signals`): a shell, crun and the containers
    // would otherwise start deaf to SIGTERM and SIGINT.
    // SAFETY: sigprocmask is async-signal-safe and SigSet::empty()
    // allocates nothing, as code between fork and exec must.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
    // Hold the lock across the fork so the reaper cannot record (and
    // possibly prune) the status before the pid is marked as wanted.
    let mut st = s.state.lock().unwrap();
    let child: Child = cmd
        .spawn()
        .map_err(|e| Error::Spawn { program, source: e })?;
    let pid = child.id() as i32;
    st.wanted.insert(pid);
    drop(st);
    // Dropping a std Child neither waits nor kills: the reaper owns it.
    drop(child);
    s.spawned.notify_all();
    Ok(Process { pid })
}

/// Whether `pid`, started by [`spawn`], has ended and its status is not
/// taken yet. Never blocks for long: for code that stops processes it did
/// not start and must not wait on them.
pub fn has_exited(pid: i32) -> bool {
    let s = shared();
    let st = s.state.lock().unwrap_or_else(|e| e.into_inner());
    st.exited.contains_key(&pid)
}

/// Whether the reaper can still serve this thread: false on the reaper's
/// own thread, or when its lock stays taken (by a thread that crashed
/// holding it). For a panic hook, before it runs commands.
pub fn usable() -> bool {
    if std::thread::current().name() == Some(THREAD_NAME) {
        return false;
    }
    let s = shared();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match s.state.try_lock() {
            Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => return true,
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(std::sync::TryLockError::WouldBlock) => return false,
        }
    }
}

/// Runs `cmd` to completion.
pub fn run(cmd: &mut Command) -> Result<ExitCode, Error> {
    Ok(spawn(cmd)?.wait())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_reach_the_right_waiter() {
        start();
        let a = spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        let b = spawn(Command::new("sh").args(["-c", "sleep 0.2; exit 5"])).unwrap();
        let c = spawn(Command::new("sh").args(["-c", "kill -9 $$"])).unwrap();
        // Wait out of order: a status collected early must be kept.
        assert_eq!(b.wait(), ExitCode(5));
        assert_eq!(a.wait(), ExitCode(3));
        assert_eq!(c.wait(), ExitCode(128 + 9));
        assert_eq!(run(&mut Command::new("true")).unwrap(), ExitCode(0));
        let slow = spawn(Command::new("sh").args(["-c", "sleep 0.3; exit 4"])).unwrap();
        assert_eq!(slow.wait_timeout(Duration::from_millis(10)), None);
        assert_eq!(slow.wait_timeout(Duration::from_secs(5)), Some(ExitCode(4)));
        assert_eq!(slow.wait(), ExitCode(4));
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        start();
        let e = spawn(&mut Command::new("/nonexistent/crun")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/crun"), "{e}");
    }
}
