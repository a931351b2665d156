//! `b2c cmdline`: the plan of a good line, the error of a bad one.

mod common;

use common::b2c;

#[test]
fn a_good_line_prints_the_plan() {
    let (code, out, err) = b2c(&[
        "cmdline",
        r#"console=ttyS0 b2c.run="-ti --tls-verify=false docker://10.0.0.1:5000/mesa/test:42 ./run-tests" b2c.ntp_peer=auto b2c.frobnicate=1"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("  - pull 10.0.0.1:5000/mesa/test:42 (--pull=always)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            r#"  - run run-0: 10.0.0.1:5000/mesa/test:42 ["./run-tests"] [--tls-verify=false]"#
        ),
        "{out}"
    );
    assert!(out.contains("BootPlan {"), "{out}");
    assert_eq!(
        err.trim(),
        "WARNING: unknown option b2c.frobnicate is ignored"
    );
}

#[test]
fn words_are_joined_like_a_command_line() {
    let (code, out, _) = b2c(&["cmdline", "b2c.run=alpine:3", "b2c.pipefail"]);
    assert_eq!(code, 0);
    assert!(out.contains("  - run run-0: alpine:3\n"), "{out}");
    assert!(out.contains("b2c.pipefail"), "{out}");
}

#[test]
fn a_bad_line_names_the_option() {
    let (code, out, err) = b2c(&[
        "cmdline",
        r#"b2c.run="--bogus alpine:3" b2c.poweroff_delay=soon"#,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.starts_with("ERROR: invalid b2c.run="), "{err}");
    assert!(err.contains("--bogus"), "{err}");

    // A value boot2container would have taken only warns (B2C-OPTIONS'
    // leniency rule), as the boot's console would.
    let (code, out, err) = b2c(&["cmdline", "b2c.poweroff_delay=soon"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.starts_with("WARNING: invalid b2c.poweroff_delay="),
        "{err}"
    );
    assert!(out.contains("  - power off\n"), "{out}");
}

#[test]
fn a_bad_image_is_caught_before_any_boot() {
    let (code, out, err) = b2c(&["cmdline", "b2c.run=Foo/Bar", "b2c.post_container=oci:/x"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with("ERROR: b2c.run: image \"Foo/Bar\""),
        "{err}"
    );
}

/// A registry password given with `--creds` never shows: not in the plan,
/// not in its Debug dump, not in the error of the option that holds it.
#[test]
fn a_registry_password_is_never_shown() {
    let (code, out, err) = b2c(&[
        "cmdline",
        r#"b2c.run="--creds bob:s3cr3t --authfile http://10.0.0.1/auth.json registry.test/x:1""#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("s3cr3t") && !err.contains("s3cr3t"),
        "{out}{err}"
    );
    assert!(
        out.contains(
            "  - pull registry.test/x:1 (--pull=always, --creds bob:***, --authfile http://10.0.0.1/auth.json)\n"
        ),
        "{out}"
    );
    let (code, out, err) = b2c(&["cmdline", r#"b2c.run="--creds=bob:s3cr3t --bogus img""#]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("--bogus"), "{err}");
    assert!(
        !out.contains("s3cr3t") && !err.contains("s3cr3t"),
        "{out}{err}"
    );
}
