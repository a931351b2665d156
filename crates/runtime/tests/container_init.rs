//! `--init`'s init, run as a process of its own (it blocks signals and
//! waits for any child, which a test thread must not do in a shared test
//! process): this test binary runs itself again with `B2C_INIT_COMMAND`.

use std::ffi::OsString;
use std::process::Command;

const CHILD: &str = "B2C_INIT_COMMAND";

/// In the re-run process: supervise the command and exit as it did.
#[test]
fn as_the_init_process() {
    let Ok(command) = std::env::var(CHILD) else {
        return;
    };
    let words: Vec<OsString> = command.split('\u{1f}').map(OsString::from).collect();
    std::process::exit(b2c_runtime::container_init::supervise(&words));
}

fn init(command: &[&str]) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "as_the_init_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, command.join("\u{1f}"))
        .status()
        .unwrap()
}

#[test]
fn exits_as_its_command_did() {
    assert_eq!(init(&["sh", "-c", "exit 3"]).code(), Some(3));
    assert_eq!(init(&["true"]).code(), Some(0));
    // Killed by a signal: 128 + its number, as podman reports it.
    assert_eq!(init(&["sh", "-c", "kill -TERM $$"]).code(), Some(128 + 15));
    assert_eq!(init(&["/no/such/program"]).code(), Some(127));
}

#[test]
fn orphans_do_not_keep_it_alive() {
    // The orphan is reaped (or left to run); the init ends with the command.
    let status = init(&["sh", "-c", "(sleep 0.2 &) ; exit 5"]);
    assert_eq!(status.code(), Some(5));
}
