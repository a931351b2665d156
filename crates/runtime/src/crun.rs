//! How crun is called.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use b2c_system::reaper::{self, ExitCode};

/// Where crun keeps its state: tmpfs, gone at power-off.
const CRUN_ROOT: &str = "/run/crun";

/// The crun binary: from `$B2C_CRUN` (tests), else the initramfs copy.
pub fn crun_binary() -> PathBuf {
    std::env::var_os("B2C_CRUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/crun"))
}

/// Makes the crun binary read-only where it lies, with a bind mount of it
/// onto itself. crun guards against a container overwriting it through
/// `/proc/self/exe` (CVE-2019-5736) by copying itself to a read-only
/// place and executing itself again unless it already runs from one: on
/// an initramfs that second start, with its shared libraries loaded again,
/// cost ~0.2 s of every container under TCG. The mount gives the same
/// protection once per boot.
pub fn make_read_only() -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let crun = crun_binary();
    mount(
        Some(&crun),
        &crun,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    mount(
        None::<&str>,
        &crun,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )?;
    Ok(())
}

/// `crun run --no-pivot`: an initramfs root cannot be pivoted away from.
/// With a console socket (`-t`), crun sends the pty master there.
pub(crate) fn command(bundle: &Path, id: &str, console_socket: Option<&Path>) -> Command {
    let mut cmd = Command::new(crun_binary());
    cmd.args(["--root", CRUN_ROOT, "run", "--no-pivot"]);
    if let Some(socket) = console_socket {
        cmd.arg("--console-socket").arg(socket);
    }
    cmd.arg("--bundle").arg(bundle).arg(id);
    cmd
}

/// Sends a signal to a container's processes. Best effort: the container
/// may have exited already. Returns whether crun could.
pub fn kill(id: &str, signal: &str) -> bool {
    signal_all(id, signal, Stdio::inherit())
}

/// [`kill`] without crun's complaints, for retries: while crun is still
/// creating the container, "container does not exist" is expected.
pub fn try_kill(id: &str, signal: &str) -> bool {
    signal_all(id, signal, Stdio::null())
}

fn signal_all(id: &str, signal: &str, stderr: Stdio) -> bool {
    let kill = reaper::run(
        Command::new(crun_binary())
            .args(["--root", CRUN_ROOT, "kill", "--all", id, signal])
            .stderr(stderr),
    );
    matches!(kill, Ok(ExitCode(0)))
}
