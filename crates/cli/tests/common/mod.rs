//! Running the built `b2c` as a user would.

use std::process::Command;

/// The exit status, stdout and stderr of `b2c ARGS`.
pub fn b2c(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_b2c"))
        .args(args)
        .output()
        .expect("run b2c");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
