//! `--init`: b2c itself, bound into the container at
//! [`crate::spec::INIT_IN_CONTAINER`], is the container's PID 1, as
//! podman's catatonit would be: it starts the command, forwards the
//! signals it gets to it, reaps every orphan, and exits as the command did
//! (128 + the signal when one killed it).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// The name podman gives its init in the container.
const NAME: &str = "podman-init";

/// When this process is `--init`'s init (its argv[0] is
/// `…/podman-init`): runs it, and returns the code to exit with.
pub fn run_if_invoked() -> Option<i32> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    if Path::new(&argv0).file_name()? != NAME {
        return None;
    }
    let mut command: Vec<OsString> = args.collect();
    if command.first().is_some_and(|a| a == "--") {
        command.remove(0);
    }
    Some(supervise(&command))
}

/// Runs `command` as the child of this process and supervises it; returns
/// its exit code. Call it before any other thread starts: every thread
/// must have the signals blocked, for the forwarder to receive them.
pub fn supervise(command: &[OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("{NAME}: no command to run");
        return 127;
    };
    let all = SigSet::all();
    if let Err(e) = all.thread_block() {
        eprintln!("{NAME}: cannot block signals: {e}");
    }
    // Outside a PID namespace of its own, orphans must still come here.
    if nix::unistd::getpid().as_raw() != 1 {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: sigprocmask is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => Pid::from_raw(child.id() as i32),
        Err(e) => {
            eprintln!("{NAME}: cannot run {}: {e}", program.to_string_lossy());
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    // Forwards what this process gets to the command; SIGCHLD stays
    // pending and means nothing: the loop below waits anyway.
    std::thread::spawn(move || loop {
        if let Ok(signal) = all.wait() {
            if signal != Signal::SIGCHLD {
                let _ = kill(child, signal);
            }
        }
    });
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => return 128 + signal as i32,
            // An orphan reaped, or a stop: go on.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("{NAME}: waiting for the command: {e}");
                return 1;
            }
        }
    }
}
