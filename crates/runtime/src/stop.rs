//! Stopping the containers that run when the machine must stop: on a stop
//! request (Ctrl-Alt-Del, SIGTERM…, see `b2c_system::signals`) or after a
//! crash of b2c. The engine registers here every container it runs, in
//! the foreground or as a service, for as long as its `crun run` lives.

use std::sync::{Mutex, MutexGuard, Once, TryLockError};
use std::time::{Duration, Instant};

use b2c_system::{reaper, signals};
use log::{info, warn};

use crate::crun;

/// How long a container gets between SIGTERM and SIGKILL when the machine
/// stops.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(100);

/// How a container is stopped: podman's `--stop-signal` and
/// `--stop-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPolicy {
    /// As crun names it: `TERM`, `INT`, `RTMIN+3`.
    pub signal: String,
    /// Between the signal and SIGKILL; the stopper's own grace when None.
    pub timeout: Option<Duration>,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            signal: "TERM".into(),
            timeout: None,
        }
    }
}

impl StopPolicy {
    pub fn of(args: &b2c_cmdline::ContainerArgs) -> StopPolicy {
        StopPolicy {
            signal: args
                .stop_signal
                .map_or_else(|| "TERM".to_string(), b2c_cmdline::signal_name),
            timeout: args.stop_timeout.map(Duration::from_secs),
        }
    }

    /// The time to wait after the signal: the container's, else `grace`.
    pub fn grace(&self, grace: Duration) -> Duration {
        self.timeout.unwrap_or(grace)
    }
}

/// A running container: crun id, the pid of its `crun run`, how it stops.
type Entry = (String, i32, StopPolicy);

/// The containers running now.
static RUNNING: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// [`RUNNING`] without waiting for long: a panic hook may call this while
/// the crashed thread holds the lock. None when it stays taken.
fn running(patience: Duration) -> Option<MutexGuard<'static, Vec<Entry>>> {
    let deadline = Instant::now() + patience;
    loop {
        match RUNNING.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// A container in [`RUNNING`], for as long as this lives.
#[derive(Debug)]
pub(crate) struct Running {
    id: String,
}

impl Running {
    pub(crate) fn add(id: &str, pid: i32, policy: &StopPolicy) -> Running {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push((
            id.to_string(),
            pid,
            policy.clone(),
        ));
        // A request that came just before the line above found nothing to
        // stop (the signal thread records the request before it looks).
        if signals::requested().is_some() {
            let id = id.to_string();
            let policy = policy.clone();
            std::thread::spawn(move || stop(&id, pid, &policy, STOP_GRACE));
        }
        Running { id: id.to_string() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _, _)| *id != self.id);
    }
}

/// On the first stop request, stop every running container. Registered
/// once, however many engines there are.
pub(crate) fn stop_on_request() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        signals::on_request(|_| {
            // Not on the signal thread: it must stay free to log later
            // signals while the containers take their time.
            std::thread::spawn(|| stop_running(STOP_GRACE));
        })
    });
}

/// Stops every running container, all at the same time: its stop signal
/// (SIGTERM unless `--stop-signal`), SIGKILL after its `--stop-timeout`,
/// else `grace`. Returns once they ended, or after about twice `grace`.
/// Safe from a panic hook once `reaper::usable()` said so: it only waits
/// a moment for a lock.
pub fn stop_running(grace: Duration) {
    let Some(running) = running(Duration::from_secs(1)).map(|r| r.clone()) else {
        warn!("cannot stop the containers: their list stays locked");
        return;
    };
    std::thread::scope(|scope| {
        for (id, pid, policy) in &running {
            let thread =
                std::thread::Builder::new().spawn_scoped(scope, || stop(id, *pid, policy, grace));
            if thread.is_err() {
                stop(id, *pid, policy, grace);
            }
        }
    });
}

/// The stop signal, then SIGKILL after the grace, until the container's
/// `crun run` ended.
fn stop(id: &str, pid: i32, policy: &StopPolicy, grace: Duration) {
    let grace = policy.grace(grace);
    let ended = || {
        reaper::has_exited(pid)
            || running(POLL).is_some_and(|r| !r.iter().any(|(other, _, _)| other == id))
    };
    let signal_until_ended = |signal: &str, deadline: Instant| {
        // crun may still be creating the container: try until it takes.
        while !ended() && !crun::try_kill(id, signal) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        while !ended() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    };
    if ended() {
        return;
    }
    let signal = &policy.signal;
    info!(
        "stopping {id}: SIG{signal}, SIGKILL after {} s",
        grace.as_secs_f64()
    );
    signal_until_ended(signal, Instant::now() + grace);
    if ended() {
        return;
    }
    info!("{id} ignored SIG{signal}: killing it");
    signal_until_ended("KILL", Instant::now() + grace);
    if !ended() {
        warn!("{id} is still running after SIGKILL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use b2c_system::reaper::ExitCode;

    /// Two "containers" (plain shells) and a fake crun that signals them
    /// by the pid files written here; the one that ignores SIGTERM is
    /// killed after the grace.
    #[test]
    fn stops_what_runs_term_first_then_kill() {
        let dir = tempfile::tempdir().unwrap();
        let crun = dir.path().join("crun");
        // Called as: crun --root ROOT kill --all ID SIGNAL
        std::fs::write(
            &crun,
            format!(
                "#!/bin/sh\n[ \"$3\" = kill ] || exit 2\nkill -\"$6\" \"$(cat {}/\"$5\".pid)\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&crun, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Only this test runs crun in this test binary.
        std::env::set_var("B2C_CRUN", &crun);

        let start = |id: &str, script: &str| {
            let process = reaper::spawn(Command::new("sh").args(["-c", script])).unwrap();
            std::fs::write(
                dir.path().join(format!("{id}.pid")),
                process.pid().to_string(),
            )
            .unwrap();
            let running = Running::add(id, process.pid(), &StopPolicy::default());
            (process, running)
        };
        let (polite, a) = start("polite", "trap 'exit 3' TERM; while :; do sleep 0.05; done");
        let (stubborn, b) = start("stubborn", "trap '' TERM; while :; do sleep 0.05; done");
        // Let both shells set their traps.
        std::thread::sleep(Duration::from_millis(300));

        stop_running(Duration::from_millis(500));
        assert_eq!(polite.wait_timeout(Duration::ZERO), Some(ExitCode(3)));
        assert_eq!(
            stubborn.wait_timeout(Duration::ZERO),
            Some(ExitCode(128 + 9))
        );
        // Gone from the list once their owners let go.
        drop((a, b));
        assert!(running(POLL).unwrap().is_empty());
    }
}
