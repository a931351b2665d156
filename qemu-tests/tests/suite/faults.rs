//! End-to-end: faults at boot that b2c must ride out, or end cleanly on.
//! Grouped into few boots (TCG boots are the expensive part of `make
//! test`): one boot meets a rate-limited registry that then dies in the
//! middle of a large pull and comes back 10 s later, with no NTP server;
//! one boot has no DHCP server at all.
//!
//! The late DHCP server is another test's (`b2c.dhcp_timeout`).
//! The helpers: `common/mod.rs`.

use crate::common;

use std::time::Duration;

use common::{assert_error_about, assert_verdict, boot_on, options, start_net};
use qemu_tests::images::{self, BIG_FILE, BIG_IMAGE};
use qemu_tests::{Faults, NetOptions, FAULTY_REGISTRY};

/// The registry answers 429 with `Retry-After: 5` to the first two
/// requests, then dies (SIGKILL) once 20 MB of the 60 MB image went to the
/// guest, and is started again 10 s later. The pull waits what it was
/// asked to, resumes the cut layer with `Range`, and the job checks the
/// content. The NTP server the line names does not exist: a warning, and
/// the job runs.
#[test]
fn a_registry_that_rate_limits_then_dies_and_no_ntp() {
    let net = start_net(&NetOptions::default());
    net.push_big_image().unwrap_or_else(|e| panic!("{e}"));
    let expected = images::big_file_sha256().unwrap_or_else(|e| panic!("{e}"));
    let registry = net
        .start_faulty_registry(Faults {
            too_many_requests: 2,
            retry_after: 5,
            kill_after_bytes: Some(20 << 20),
            down_for: Duration::from_secs(10),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let append = format!(
        r#"b2c.ntp_peer=10.99.0.1:1234 b2c.run="--tls-verify=false docker://{FAULTY_REGISTRY}/{BIG_IMAGE} sh -c 'echo SUM-$((40+2)):$(sha256sum {BIG_FILE})'""#
    );
    let mut opts = options("faults-registry", &append);
    opts.timeout = Duration::from_secs(300);
    // 10 s of Retry-After, 10 s of a registry down.
    opts.waits = true;
    let boot = boot_on(&net, &opts);

    assert_eq!(
        boot.after_marker("SUM-42:"),
        [format!("{expected} {BIG_FILE}")],
        "the big file\n{boot}"
    );
    assert_verdict(&boot, 0);
    let warnings: Vec<&str> = boot.lines_containing("WARNING: ").collect();
    assert!(
        warnings.iter().any(|l| l.contains("10.99.0.1:1234")),
        "no warning about the missing NTP server: {warnings:#?}\n{boot}"
    );
    let limited: Vec<&&str> = warnings
        .iter()
        .filter(|l| l.contains("HTTP 429") && l.contains("retrying in 5.0 s"))
        .collect();
    assert_eq!(limited.len(), 2, "{warnings:#?}\n{boot}");

    let events = registry.events();
    assert!(
        events.len() == 2
            && events[0].starts_with("killed the registry after")
            && events[1] == "registry started again",
        "{events:?}\n{boot}"
    );
    // After the restart, the cut layer was asked for from where it stopped.
    let resumed: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.line.contains("/blobs/") && r.range.is_some())
        .collect();
    assert!(
        resumed
            .iter()
            .any(|r| r.range.as_deref().is_some_and(|range| range != "bytes=0-")),
        "no Range request after the restart: {:#?}\n{boot}",
        registry.requests()
    );
    assert!(
        boot.lines_containing("resuming layer").next().is_some(),
        "{boot}"
    );
}

/// No DHCP server at all: the boot ends by itself, with an ERROR that says
/// what is missing, the status line, and a power-off.
#[test]
fn no_dhcp_server_at_all() {
    let net = start_net(&NetOptions {
        dhcp: false,
        ..Default::default()
    });
    // The default wait (70 s, a unit test's) would only make this longer:
    // what matters is that the wait ends the boot, and how.
    let append = format!("b2c.dhcp_timeout=5 {}", common::run_img("true"));
    let boot = boot_on(&net, &options("faults-no-dhcp", &append));
    assert_error_about(&boot, &["dhcp", "lease"]);
    assert_verdict(&boot, 1);
}

/// `b2c.timeout`: a job that runs longer is stopped (SIGTERM, SIGKILL 5 s
/// later: its shell ignores SIGTERM as a container's PID 1), no other
/// container starts, the status is 124 (as coreutils' `timeout`), with an
/// ERROR naming the option, and the machine powers off.
#[test]
fn a_long_job_times_out() {
    let img = common::img();
    let append = format!(
        r#"b2c.timeout=20s b2c.run="{img} sh -c 'echo STARTED-$((40+2)); sleep 600'" b2c.post_container="{img} echo POST-$((40+2))""#
    );
    let mut opts = options("faults-timeout", &append);
    // 20 s of a sleeping job, then 5 s until SIGKILL.
    opts.waits = true;
    let boot = boot_on(&start_net(&NetOptions::default()), &opts);
    assert_eq!(boot.after_marker("STARTED-42").len(), 1, "{boot}");
    assert!(
        boot.after_marker("POST-42").is_empty(),
        "a container started after the timeout\n{boot}"
    );
    assert_error_about(&boot, &["b2c.timeout"]);
    assert_verdict(&boot, 124);
}

/// The hardware watchdog (QEMU's i6300ESB) resets a machine whose kernel
/// hangs: here a panic with `panic=0`, which waits for ever. Without it,
/// QEMU would be killed at the test's timeout; with it, the reset ends
/// QEMU (`-no-reboot`) by itself.
#[test]
fn a_hung_kernel_is_reset_by_the_watchdog() {
    let append = format!(
        r#"panic=0 b2c.watchdog=10s b2c.run="{} sh -c 'echo c > /proc/sysrq-trigger'""#,
        common::img()
    );
    let mut opts = options("faults-watchdog", &append);
    opts.extra_qemu_args
        .extend(["-device".to_string(), "i6300esb".to_string()]);
    opts.timeout = Duration::from_secs(150);
    // 10 s of a hung kernel.
    opts.waits = true;
    let boot = boot_on(&start_net(&NetOptions::default()), &opts);
    assert!(
        boot.lines_containing("hardware watchdog")
            .any(|l| l.contains("armed")),
        "the watchdog was not armed\n{boot}"
    );
    assert!(
        boot.lines_containing("Kernel panic").next().is_some(),
        "no panic\n{boot}"
    );
    assert_eq!(boot.status(), None, "{boot}");
    assert!(boot.exited, "the hung machine was not reset\n{boot}");
}
