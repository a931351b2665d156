//! `b2c`'s arguments as a user meets them: help, version, and the exit
//! status of wrong arguments (2) against a failed work (1).

mod common;

use common::b2c;

#[test]
fn help_names_the_commands() {
    for flag in ["--help", "-h", "help"] {
        let (code, out, err) = b2c(&[flag]);
        assert_eq!(code, 0, "{flag}: {out}{err}");
        assert!(err.is_empty(), "{flag}: {err}");
        assert!(out.contains("Usage: b2c <COMMAND>"), "{flag}: {out}");
        assert!(out.contains("\n  pull "), "{flag}: {out}");
        assert!(out.contains("\n  cmdline "), "{flag}: {out}");
    }
}

#[test]
fn pull_help_lists_every_option() {
    let (code, out, err) = b2c(&["pull", "--help"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.is_empty(), "{err}");
    for option in [
        "Usage: b2c pull [OPTIONS] --root <DIR> <IMAGE>",
        "--root <DIR>",
        "--tls-verify[=<BOOL>]",
        "--ca-cert <FILE>",
        "--rootfs <DIR>",
        "--copy",
        "--pull <POLICY>",
        "always",
        "missing",
        "never",
        "--debug",
    ] {
        assert!(out.contains(option), "{option}: {out}");
    }
    assert_eq!(b2c(&["help", "pull"]), (0, out, String::new()));

    let (code, short, _) = b2c(&["pull", "-h"]);
    assert_eq!(code, 0);
    assert!(short.contains("--tls-verify[=<BOOL>]"), "{short}");
}

#[test]
fn cmdline_help_says_where_the_line_comes_from() {
    let (code, out, err) = b2c(&["cmdline", "--help"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Usage: b2c cmdline [LINE]..."), "{out}");
    assert!(out.contains("/proc/cmdline"), "{out}");
    assert_eq!(b2c(&["help", "cmdline"]), (0, out, String::new()));
}

#[test]
fn version_is_the_package_version() {
    for flag in ["--version", "-V"] {
        assert_eq!(
            b2c(&[flag]),
            (
                0,
                format!("b2c {}\n", env!("CARGO_PKG_VERSION")),
                String::new()
            )
        );
    }
}

#[test]
fn wrong_arguments_exit_2_with_the_reason() {
    for (argv, reason) in [
        (&[][..], "Usage: b2c <COMMAND>"),
        (&["--bogus"], "unexpected argument '--bogus'"),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["pull", "alpine"], "--root <DIR>"),
        (&["pull", "--root", "/s"], "<IMAGE>"),
        (&["pull", "x", "--root", "/s", "--bogus"], "'--bogus'"),
        (&["pull", "x", "y", "--root", "/s"], "'y'"),
        (&["pull", "x", "--root", "/s", "--copy"], "--rootfs <DIR>"),
        (
            &["pull", "x", "--root", "/s", "--tls-verify=maybe"],
            "'maybe'",
        ),
        (
            &["pull", "x", "--root", "/s", "--tls-verify", "false"],
            "'false'",
        ),
        (
            &["pull", "x", "--root", "/s", "--pull=sometimes"],
            "'sometimes'",
        ),
    ] {
        let (code, out, err) = b2c(argv);
        assert_eq!(code, 2, "{argv:?}: {out}{err}");
        assert!(out.is_empty(), "{argv:?}: {out}");
        assert!(err.contains(reason), "{argv:?}: {err}");
        assert!(!err.contains("ERROR:"), "{argv:?}: {err}");
    }
}

#[test]
fn a_failed_pull_is_one_error_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let root = root.to_str().unwrap();
    let (code, out, err) = b2c(&[
        "pull",
        "alpine",
        "--root",
        root,
        "--ca-cert",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ERROR: /nonexistent/ca.pem: "), "{err}");
}

/// A directory that is not a store is never emptied: b2c refuses it
/// before anything else.
#[test]
fn a_root_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), "keep me").unwrap();
    let root = dir.path().to_str().unwrap();
    let (code, out, err) = b2c(&["pull", "alpine", "--root", root]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a b2c image store"), "{err}");
    assert!(dir.path().join("precious").exists());
}

#[test]
fn cmdline_prints_the_plan() {
    let (code, out, err) = b2c(&["cmdline", "b2c.run=alpine"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("plan:\n"), "{out}");
    assert!(out.contains("  - run run-0: alpine\n"), "{out}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn plot_charts_a_console_log_and_refuses_one_without_b2c_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    std::fs::write(
        &log,
        "[    0.000000] Linux version 6.1\n[    6.559]: b2c 0.1.0\n\
         [    8.438]: kernel modules: loaded virtio_net\n\
         [    9.155]: pulling a:1 from r\n[   10.073]: pulled a:1 (sha256:0) from r\n\
         [   10.129]: running run-0: a:1\n[   11.563]: run-0 exited with status 0\n\
         [   11.610]: Execution is over, pipeline status: 0\n",
    )
    .unwrap();
    let (code, out, err) = b2c(&["plot", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.starts_with("<svg ") && out.contains(">a:1</text>") && out.ends_with("</svg>\n"),
        "{out}"
    );
    // Two boots: the last one, unless told.
    let one = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, format!("{one}{}", one.replace("a:1", "b:2"))).unwrap();
    let (code, out, err) = b2c(&["plot", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(">b:2</text>") && !out.contains(">a:1</text>"));
    assert!(
        err.contains("2 b2c boots in it: drawing the last one"),
        "{err}"
    );
    let (code, out, _) = b2c(&["plot", "--boot", "1", log.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains(">a:1</text>"));
    let (code, _, err) = b2c(&["plot", "--boot", "3", log.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("there is no boot 3: the log holds 2"), "{err}");
    std::fs::write(&log, "[    0.000000] Linux version 6.1\n").unwrap();
    let (code, _, err) = b2c(&["plot", log.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("ERROR: ") && err.contains("no b2c console line"),
        "{err}"
    );
}
