//! End-to-end: the ends that do not come from the pipeline itself. A
//! Ctrl-Alt-Del pressed (through QEMU's monitor) while a container runs
//! stops the boot in order; a crash of b2c (`b2c.debug_panic`, a test
//! aid) ends it as any failure does, with the end options of the command
//! line and of `b2c.extra_args_url`.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

use crate::common;

use common::{boot_on, boot_with, img, opt, options, run_img, start_net};
use qemu_tests::{Boot, NetOptions};

/// The index of the first console line containing `text`.
fn line_of(boot: &Boot, text: &str) -> Option<usize> {
    boot.lines().position(|line| line.contains(text))
}

/// Asserts that each text appears, on lines in this order.
fn assert_in_order(boot: &Boot, texts: &[&str]) {
    let positions: Vec<Option<usize>> = texts.iter().map(|t| line_of(boot, t)).collect();
    let in_order = positions.iter().all(Option::is_some) && positions.is_sorted();
    assert!(
        in_order,
        "expected these lines in this order: {texts:#?}\nfound at: {positions:?}\n{boot}"
    );
}

/// The guest's uptime stamp of b2c's line containing `text`.
fn stamp_of(boot: &Boot, text: &str) -> f64 {
    let line = boot
        .lines()
        .find(|line| line.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?}\n{boot}"));
    line.trim_start()
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]: "))
        .and_then(|(stamp, _)| stamp.trim().parse().ok())
        .unwrap_or_else(|| panic!("no uptime stamp on {line:?}"))
}

/// A service that exits on SIGTERM (as its namespace's PID 1, a shell
/// ignores a SIGTERM it has no trap for).
fn service() -> String {
    opt(
        "b2c.run_service",
        &format!(
            "{} sh -c 'trap exit TERM; while :; do sleep 1; done'",
            img()
        ),
    )
}

#[test]
fn ctrl_alt_del_stops_the_containers_then_reboots() {
    let append = format!(
        "{} {} {} {}",
        service(),
        // Waits in `wait`, so that its trap runs at once: without one it
        // would be killed only after the grace.
        run_img("sh -c 'trap exit TERM; echo STARTED-$((2+3)); sleep 600 & wait'"),
        run_img("sh -c 'echo SECOND-$((1+1))'"),
        opt(
            "b2c.post_container",
            &format!("{} sh -c 'echo POST-$((1+2))'", img())
        ),
    );
    let boot = boot_with("ctrl-alt-del", &append, |o| {
        o.monitor_when = vec![
            ("STARTED-5".into(), "sendkey ctrl-alt-delete".into()),
            // Pressed again while stopping: it must change nothing.
            (
                "Ctrl-Alt-Del (SIGINT): stopping".into(),
                "sendkey ctrl-alt-delete".into(),
            ),
        ];
    });
    assert!(
        boot.rebooted(),
        "expected `Rebooting the computer` and QEMU's exit\n{boot}"
    );
    assert_in_order(
        &boot,
        &[
            "STARTED-5",
            "Ctrl-Alt-Del (SIGINT): stopping the containers, then rebooting",
            "run-0 exited with status",
            "Execution is over, pipeline status: ",
            "Rebooting the computer",
        ],
    );
    assert!(
        boot.has_line("Ctrl-Alt-Del (SIGINT): ignored, already stopping (then rebooting)"),
        "the second Ctrl-Alt-Del was not reported as ignored\n{boot}"
    );
    assert!(
        line_of(&boot, "stopping service-0").is_some(),
        "the service was not stopped\n{boot}"
    );
    // The stopped container's exit code is the status, as any failure's:
    // 0 would mean that its `sleep 600` ran to the end.
    let status = boot.status();
    assert!(
        status.is_some_and(|s| s != 0),
        "expected the killed container's status, got {status:?}\n{boot}"
    );
    for not_run in ["SECOND-2", "POST-3"] {
        assert!(
            !boot.has_line(not_run),
            "{not_run}: a container ran after Ctrl-Alt-Del\n{boot}"
        );
    }
}

#[test]
fn a_crash_ends_like_any_failure_with_the_end_options() {
    let net = start_net(&NetOptions::default());
    // The end options come from b2c.extra_args_url: the crash must use
    // the merged ones.
    let url = net
        .serve_file(
            "end-options",
            &format!(
                "{}\nb2c.poweroff_delay=2\n",
                opt(
                    "b2c.shutdown_cmd",
                    "echo SHUTDOWN-CMD-$((6*7)); poweroff -f"
                )
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let append = format!(
        "b2c.debug_panic=pipeline b2c.shell b2c.extra_args_url={url} {} {}",
        service(),
        run_img("sh -c 'echo RAN-$((3+4))'"),
    );
    let mut opts = options("crash", &append);
    opts.answer = Some((
        "starting a shell on the console".into(),
        "echo SHELL-$((5*5)); exit\n".into(),
    ));
    let boot = boot_on(&net, &opts);

    assert_eq!(boot.status(), Some(1), "pipeline status\n{boot}");
    assert!(boot.powered_off(), "no clean power-off\n{boot}");
    assert!(
        !boot.has_line("RAN-7"),
        "a container ran after the crash\n{boot}"
    );
    assert_in_order(
        &boot,
        &[
            "ERROR: b2c crashed: ",
            "stopping service-0",
            "Execution is over, pipeline status: 1",
            "SHELL-25",
            "It's now safe to turn off your computer",
            "waiting 2.0 s before the end",
            "SHUTDOWN-CMD-42",
        ],
    );
    let crash = boot
        .lines_containing("ERROR: b2c crashed: ")
        .next()
        .unwrap();
    assert!(
        crash.contains("b2c.debug_panic=pipeline"),
        "the panic's message is not on the crash line: {crash:?}"
    );
    // By the guest's clock: the delay was slept.
    let waited = stamp_of(&boot, "running \"echo SHUTDOWN-CMD")
        - stamp_of(&boot, "waiting 2.0 s before the end");
    assert!(
        waited >= 2.0,
        "b2c.poweroff_delay=2, but the command ran {waited:.3} s after\n{boot}"
    );
}
