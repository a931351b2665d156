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

/// The cgroup the containers' cgroups go in (`linux.cgroupsPath`).
pub(crate) const CGROUP_PARENT: &str = "b2c";

/// Where cgroup2 is mounted ([`b2c_system::mounts::mount_early`]).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Readies what every container's start needs, before the first one:
/// crun read-only ([`make_read_only`]) and the containers' parent cgroup
/// ([`prepare_cgroup_parent`]).
pub fn prepare() -> std::io::Result<()> {
    prepare_cgroup_parent(Path::new(CGROUP_ROOT));
    make_read_only()
}

/// Creates [`CGROUP_PARENT`] with every available controller enabled in
/// the root's and its own `cgroup.subtree_control`, as crun would when it
/// starts the first container: creating a controller's state for a new
/// cgroup is slow under TCG (~35 ms of the first container's start), and
/// done here it waits for nothing. Best effort: crun does it anyway, and
/// reports what fails.
fn prepare_cgroup_parent(root: &Path) {
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let all: Vec<&str> = available.split_whitespace().collect();
    let parent = root.join(CGROUP_PARENT);
    if let Err(e) = std::fs::create_dir_all(&parent) {
        log::debug!("{}: {e}", parent.display());
        return;
    }
    for dir in [root, &parent] {
        let control = dir.join("cgroup.subtree_control");
        let enable = |controllers: &[&str]| {
            let line: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
            std::fs::write(&control, line.join(" "))
        };
        // As crun: +cpu fails (EINVAL) while a realtime process runs.
        let done = enable(&all).or_else(|_| {
            let no_cpu: Vec<&str> = all.iter().copied().filter(|c| *c != "cpu").collect();
            enable(&no_cpu)
        });
        if let Err(e) = done {
            log::debug!("{}: {e}", control.display());
        }
    }
}

/// Where [`make_read_only`] mounts the ramfs it copies crun into, for the
/// moment of the copy.
const RAMFS_DIR: &str = "/run/b2c-crun";

/// Puts crun where it need not copy itself before each container: a
/// read-only ramfs, bind-mounted over [`crun_binary`].
///
/// crun guards against a container overwriting it through
/// `/proc/self/exe` (CVE-2019-5736): unless it runs from a sealed memfd or
/// from a read-only filesystem, it copies itself into a memfd and executes
/// that copy, loading itself twice per container (and its 1.5 MB copy
/// under TCG). Making the initramfs's file read-only is not enough: the
/// initramfs is tmpfs, whose files answer `F_GET_SEALS` (unsealed), and
/// crun trusts that answer before it looks at the mount. A ramfs file has
/// no seals, so crun goes on to see the read-only mount. The protection
/// is the same, paid once per boot.
pub fn make_read_only() -> std::io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let crun = crun_binary();
    let crun = crun.as_path();
    let dir = Path::new(RAMFS_DIR);
    std::fs::create_dir_all(dir)?;
    mount(
        Some("ramfs"),
        dir,
        Some("ramfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )?;
    let copy = dir.join("crun");
    let done = std::fs::copy(crun, &copy).and_then(|_| {
        mount(
            Some(&copy),
            crun,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        mount(
            None::<&str>,
            crun,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(std::io::Error::from)
    });
    // The bind mount keeps the ramfs alive; its own mount point goes.
    let _ = umount2(dir, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(dir);
    done
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_cgroup_gets_every_available_controller() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        prepare_cgroup_parent(root.path());
        for dir in [root.path().to_path_buf(), root.path().join("b2c")] {
            assert_eq!(
                std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
                "+cpuset +cpu +io +memory +pids",
                "{}",
                dir.display()
            );
        }
    }
}
