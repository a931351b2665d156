//! Running a bundle with crun.

use std::path::{Path, PathBuf};
use std::process::Command;

use b2c_system::reaper::{self, ExitCode};

/// Where crun keeps its state: tmpfs, gone at power-off.
const CRUN_ROOT: &str = "/run/crun";

/// The crun binary: from `$B2C_CRUN` (tests), else the initramfs copy.
pub fn crun_binary() -> PathBuf {
    std::env::var_os("B2C_CRUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/crun"))
}

/// `crun run --no-pivot`: an initramfs root cannot be pivoted away from.
/// The container shares our console for its stdio. Returns its exit code
/// (128 + signal when it was killed).
pub fn run(bundle: &Path, id: &str) -> Result<ExitCode, b2c_system::Error> {
    reaper::run(
        Command::new(crun_binary())
            .args(["--root", CRUN_ROOT, "run", "--no-pivot", "--bundle"])
            .arg(bundle)
            .arg(id),
    )
}
