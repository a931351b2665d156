//! End-to-end: what happens around the `b2c.run` containers — pipefail,
//! post containers, services, named volumes, options fetched from
//! `b2c.extra_args_url`, containers that reboot or power off the machine,
//! and APPEND lines as CI farms write them.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

use crate::common;

use common::{assert_verdict, boot, boot_on, boot_with, img, opt, options, run_img, start_net};
use qemu_tests::{Boot, NetOptions, CA_CERT_IN_INITRAMFS, REGISTRY_HTTP};

/// A first container that fails with 5, then one that prints `SECOND-2`.
fn failing_then_printing() -> String {
    format!(
        "{} {}",
        run_img("sh -c 'exit 5'"),
        run_img("sh -c 'echo SECOND-$((1+1))'")
    )
}

#[test]
fn without_pipefail_every_container_runs() {
    let boot = boot("pipefail-off", &failing_then_printing());
    assert!(
        boot.has_line("SECOND-2"),
        "the second container did not run\n{boot}"
    );
    // The first failure is the status, even though later ones passed.
    assert_verdict(&boot, 5);
}

#[test]
fn pipefail_skips_the_containers_after_a_failure() {
    let boot = boot(
        "pipefail-on",
        &format!("b2c.pipefail {}", failing_then_printing()),
    );
    let second: Vec<&str> = boot.lines_containing("SECOND-2").collect();
    assert!(
        second.is_empty(),
        "the second container ran: {second:?}\n{boot}"
    );
    assert_verdict(&boot, 5);
}

#[test]
fn post_container_sees_the_status_and_cannot_change_it() {
    let post = opt(
        "b2c.post_container",
        &format!(
            "{} sh -c 'echo POST-$((1+1)):$B2C_PIPELINE_STATUS:$B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE; exit 3'",
            img()
        ),
    );
    let boot = boot(
        "post-container",
        &format!("{} {post}", run_img("sh -c 'exit 7'")),
    );
    assert_eq!(
        boot.after_marker("POST-2:"),
        ["7:7"],
        "the post container should run once and see status 7 and previous exit code 7\n{boot}"
    );
    // The post container's own failure (3) does not count.
    assert_verdict(&boot, 7);
}

#[test]
fn service_runs_beside_the_pipeline_and_is_stopped_at_the_end() {
    let service = opt(
        "b2c.run_service",
        &format!(
            "{} sh -c 'mkdir -p /www && echo SVC-$((2+3)) > /www/index.html && httpd -f -p 127.0.0.1:8081 -h /www'",
            img()
        ),
    );
    // Retried: the service may still be starting when this one runs; 30 s
    // without an answer fails the container, and so the test.
    let client = run_img(
        "sh -c 'for i in $(seq 30); do wget -q -O - http://127.0.0.1:8081/ && exit 0; sleep 1; done; exit 1'",
    );
    let boot = boot("service", &format!("{service} {client}"));
    assert!(
        boot.has_line("SVC-5"),
        "the b2c.run container did not reach the service over the host network\n{boot}"
    );
    // httpd -f never exits by itself: powering off means it was stopped.
    assert_verdict(&boot, 0);
}

#[test]
fn named_volume_is_shared_between_containers() {
    let append = format!(
        "{} {}",
        opt(
            "b2c.run",
            &format!("-v job:/job {} sh -c 'echo VOL-$((4+4)) > /job/f'", img())
        ),
        opt("b2c.run", &format!("-v job:/job {} cat /job/f", img())),
    );
    let boot = boot("named-volume", &append);
    assert!(
        boot.has_line("VOL-8"),
        "the second container did not see the first one's file\n{boot}"
    );
    assert_verdict(&boot, 0);
}

#[test]
fn extra_args_url_adds_containers_and_options() {
    let net = start_net(&NetOptions::default());
    // Newlines are allowed between options in the fetched text.
    let url = net
        .serve_file(
            "args",
            &format!(
                "{}\nb2c.hostname=from-url\n",
                run_img("sh -c 'echo EXTRA-$((3*3)):$(hostname)'")
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let boot = boot_on(
        &net,
        &options("extra-args-url", &format!("b2c.extra_args_url={url}")),
    );
    let http_log = net.file_server_log();
    assert_eq!(
        boot.after_marker("EXTRA-9:"),
        ["from-url"],
        "the fetched container should run with the fetched hostname\n{boot}\n\
         --- file server log ---\n{http_log}"
    );
    // The kernel's own echo has `b2c.extra_args_url` but never the keys
    // that only the fetched text holds.
    let told: Vec<&str> = boot
        .lines_containing("b2c.extra_args_url")
        .filter(|line| line.contains("b2c.run") && line.contains("b2c.hostname"))
        .collect();
    assert!(
        !told.is_empty(),
        "no console line says which options came from b2c.extra_args_url\n{boot}"
    );
    assert_verdict(&boot, 0);
}

#[test]
fn https_extra_args_wait_for_the_clock() {
    // The RTC says 2000, when the test CA and the server's certificate were
    // not valid yet: the fetch works only if NTP set the clock first, as
    // boot2container does.
    let net = start_net(&NetOptions::default());
    net.serve_file(
        "args-tls",
        &run_img("sh -c 'echo TLS-ARGS-$((3*3)):$(date -u +%Y)'"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut opts = options(
        "extra-args-https-clock",
        &format!(
            "b2c.ntp_peer=auto b2c.ca_cert={CA_CERT_IN_INITRAMFS} b2c.extra_args_url={}",
            net.https_url("args-tls")
        ),
    );
    opts.initramfs = qemu_tests::initramfs_with_ca().unwrap_or_else(|e| panic!("{e}"));
    opts.extra_qemu_args = vec!["-rtc".into(), "base=2000-01-01".into()];
    let boot = boot_on(&net, &opts);
    let year = boot.after_marker("TLS-ARGS-9:");
    assert!(
        year.len() == 1 && year[0] != "2000",
        "the fetched container should run, after the clock was set: {year:?}\n{boot}"
    );
    assert_verdict(&boot, 0);
}

/// A container that calls reboot(2) in its PID namespace is killed by
/// SIGHUP (exit 129) for a reboot, SIGINT (130) for a power-off.
fn container_calls(command: &str, name: &str) -> Boot {
    boot(name, &run_img(command))
}

#[test]
fn container_reboot_reboots_the_machine() {
    let boot = container_calls("reboot -f", "container-reboot");
    assert!(
        boot.rebooted(),
        "expected `Rebooting the computer` and QEMU's exit\n{boot}"
    );
    assert!(!boot.powered_off(), "took the power-off path\n{boot}");
    // B2C-OPTIONS.md: the status is the first failing b2c.run exit code,
    // and a reboot request is exit code 129.
    assert_eq!(boot.status(), Some(129), "pipeline status\n{boot}");
}

#[test]
fn container_poweroff_powers_the_machine_off() {
    let boot = container_calls("poweroff -f", "container-poweroff");
    assert!(!boot.rebooted(), "took the reboot path\n{boot}");
    assert!(boot.powered_off(), "no clean power-off\n{boot}");
    // As for a reboot: 130 is the first failing exit code.
    assert_eq!(boot.status(), Some(130), "pipeline status\n{boot}");
}

/// A Mesa-CI-style line: the old `b2c.container` name, `-ti`, an
/// `--entrypoint`, `--dns=none`, a volume, and options this machine
/// cannot fully honour (no disk for the cache).
#[test]
fn real_world_line_with_entrypoint_and_cache_device() {
    let append = format!(
        "{} b2c.ntp_peer=10.99.0.1 b2c.pipefail b2c.cache_device=auto b2c.poweroff_delay=1",
        opt(
            "b2c.container",
            &format!(
                "-ti --dns=none -v tmp:/mnt/tmp --tls-verify=false --entrypoint=/bin/sh \
                 docker://{REGISTRY_HTTP}/b2c/busybox:latest -c 'echo hi-$((1+1))'"
            )
        )
    );
    // 10 s of waiting for a disk the machine does not have.
    let boot = boot_with("real-world-entrypoint", &append, |opts| opts.waits = true);
    assert!(boot.has_line("hi-2"), "no container output\n{boot}");
    let warnings: Vec<&str> = boot
        .lines_containing("WARNING: ")
        .filter(|line| line.contains("cache_device"))
        .collect();
    assert!(
        !warnings.is_empty(),
        "no WARNING about b2c.cache_device (there is no disk)\n{boot}"
    );
    assert_verdict(&boot, 0);
}

/// A CI-tron-style line: a job container leaves a file in a named volume,
/// the post container (e.g. an artifact uploader) reads it.
#[test]
fn real_world_line_with_job_volume_and_post_container() {
    let append = format!(
        "{} {} b2c.hostname=dut-7",
        opt(
            "b2c.run",
            &format!(
                "-v job:/job -e CI_JOB_ID=123 {} sh -c 'echo $CI_JOB_ID > /job/id'",
                img()
            )
        ),
        opt(
            "b2c.post_container",
            &format!(
                "-v job:/job {} sh -c 'echo JOB-$((5+5)):$(cat /job/id):$(hostname)'",
                img()
            )
        ),
    );
    let boot = boot("real-world-post-container", &append);
    assert_eq!(
        boot.after_marker("JOB-10:"),
        ["123:dut-7"],
        "the post container should read the job's id and run on the host name\n{boot}"
    );
    assert_verdict(&boot, 0);
}

/// `b2c.shell`: after a failure, a shell on the console; the boot ends
/// when it exits. `b2c.shutdown_cmd` then replaces the power-off, and
/// when it returns b2c powers off by itself.
#[test]
fn rescue_shell_then_shutdown_command() {
    let append = format!(
        "b2c.shell {} {}",
        run_img("sh -c 'exit 4'"),
        opt("b2c.shutdown_cmd", "echo SHUTDOWN-CMD-$((6*7))")
    );
    let boot = boot_with("rescue-shell", &append, |o| {
        o.answer = Some((
            "starting a shell on the console".into(),
            "echo SHELL-$((5*5)); exit\n".into(),
        ));
    });
    assert_verdict(&boot, 4);
    let status = boot.lines().position(|l| l.contains("pipeline status: 4"));
    let shell = boot.lines().position(|l| l.ends_with("SHELL-25"));
    let command = boot.lines().position(|l| l.ends_with("SHUTDOWN-CMD-42"));
    assert!(
        status < shell && shell < command && command.is_some(),
        "expected the status line, then the shell's output, then the shutdown command's\n{boot}"
    );
    assert!(
        boot.powered_off(),
        "no power-off after the command returned\n{boot}"
    );
}

/// boot2container's pipeline as real jobs use it, in one boot:
/// - a service runs detached: its output goes to its log, shown by
///   `b2c.log=debug` (`service-0: …`) and, when it fails, its end
///   (`service-0| …`), never raw;
/// - an image that cannot be pulled fails its container (status 1), not
///   the boot: the next container and the post container run;
/// - `/container` is `/storage` (`-v /container/tmp:/tmp`, old lines);
/// - `B2C_PIPELINE_FAILED_BY` is the whole option value;
/// - `b2c.shutdown_cmd` sees the `B2C_PIPELINE_*` variables, as the
///   bootloop job whose CI matches `^JOB_RESULT=0`;
/// - GitLab sections fold the setup and frame each container, and the
///   status line stays a line of its own.
#[test]
fn boot2container_pipeline_semantics() {
    let missing = format!("--tls-verify=false docker://{REGISTRY_HTTP}/b2c/no-such-image:1 true");
    let append = [
        opt(
            "b2c.run_service",
            &format!("{} sh -c 'echo SVC-LOG-$((3*3)); exit 7'", img()),
        ),
        opt("b2c.run", &missing),
        opt(
            "b2c.run",
            &format!("-v /container/tmp:/tmp {} sh -c 'echo kept > /tmp/f'", img()),
        ),
        opt(
            "b2c.post_container",
            &format!(
                "-v /storage/tmp:/t {} sh -c 'echo POST-$((2+2)):$(cat /t/f):$B2C_PIPELINE_STATUS:$B2C_PIPELINE_FAILED_BY'",
                img()
            ),
        ),
        opt(
            "b2c.shutdown_cmd",
            "echo JOB_RESULT=$B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE; poweroff -f",
        ),
        "b2c.log=debug".to_string(),
    ]
    .join(" ");
    let boot = boot("b2c-pipeline-semantics", &append);

    // The missing image: an ERROR, and its container failed with status 1.
    assert!(
        boot.lines_containing("ERROR: cannot run run-0 (")
            .any(|l| l.contains("could not be pulled")),
        "{boot}"
    );
    assert_eq!(
        boot.after_marker("POST-4:"),
        [format!("kept:1:{missing}")],
        "the post container should see run-1's file through /container and the whole value \
         of the failed option\n{boot}"
    );
    assert_verdict(&boot, 1);
    // The shutdown command printed the last container's exit code.
    assert!(
        boot.lines().any(|l| l == "JOB_RESULT=0"),
        "no line `JOB_RESULT=0` from b2c.shutdown_cmd\n{boot}"
    );

    // The service's line: never raw on the console; shown as it came by
    // b2c.log=debug (`service-0: `), and as the end of its log once it
    // failed (`service-0| `).
    let service: Vec<&str> = boot.lines_containing("SVC-LOG-9").collect();
    let followed = service
        .iter()
        .filter(|l| l.ends_with("]: service-0: SVC-LOG-9"));
    let tail = service
        .iter()
        .filter(|l| l.ends_with("]: service-0| SVC-LOG-9"));
    assert!(
        followed.count() == 1 && tail.count() == 1 && service.len() == 2,
        "the service's output should reach the console only through b2c: {service:#?}\n{boot}"
    );
    assert!(
        boot.lines_containing("WARNING: service service-0 (")
            .any(|l| l.contains("exited with status 7")),
        "{boot}"
    );

    let sections = gitlab_sections(&boot);
    for (name, collapsed) in [
        ("b2c_network", true),
        ("b2c_clock", true),
        ("b2c_cache", true),
        ("b2c_pull", true),
        ("b2c_services", true),
        ("b2c_run-0", false),
        ("b2c_run-1", false),
        ("b2c_post-0", false),
    ] {
        assert!(
            sections.contains(&(name.to_string(), collapsed)),
            "no section {name} (collapsed: {collapsed}) in {sections:?}\n{boot}"
        );
    }
    // CI's lines: whole lines of their own, never sharing one with a marker.
    for line in [
        "Execution is over, pipeline status: 1",
        "It's now safe to turn off your computer",
    ] {
        let found: Vec<&str> = boot.lines_containing(line).collect();
        assert!(
            found.len() == 1 && found[0].starts_with('[') && found[0].ends_with(line),
            "{line:?}: {found:?}\n{boot}"
        );
    }
}

/// The GitLab sections of a console, checked well formed (GitLab's
/// documented markers, each start closed by its end, nested properly), as
/// (name, collapsed), in order of their start.
fn gitlab_sections(boot: &Boot) -> Vec<(String, bool)> {
    const ESC: &str = "\x1b[0K";
    let mut open: Vec<String> = Vec::new();
    let mut all = Vec::new();
    for line in boot.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{ESC}section_start:")) {
            let (marker, header) = rest
                .split_once(&format!("\r{ESC}"))
                .unwrap_or_else(|| panic!("bad start marker {line:?}\n{boot}"));
            let (ts, name) = marker.split_once(':').unwrap();
            assert!(ts.parse::<u64>().is_ok(), "{line:?}");
            assert!(header.starts_with('['), "no stamped header: {line:?}");
            let (name, collapsed) = match name.strip_suffix("[collapsed=true]") {
                Some(name) => (name, true),
                None => (name, false),
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
                "{line:?}"
            );
            open.push(name.to_string());
            all.push((name.to_string(), collapsed));
        } else if let Some(rest) = line.strip_prefix(&format!("{ESC}section_end:")) {
            let marker = rest
                .strip_suffix(&format!("\r{ESC}"))
                .unwrap_or_else(|| panic!("bad end marker {line:?}\n{boot}"));
            let (ts, name) = marker.split_once(':').unwrap();
            assert!(ts.parse::<u64>().is_ok(), "{line:?}");
            assert_eq!(open.pop().as_deref(), Some(name), "{line:?}\n{boot}");
        } else {
            assert!(
                !line.contains("section_"),
                "a marker inside a line: {line:?}"
            );
        }
    }
    assert!(open.is_empty(), "sections left open: {open:?}\n{boot}");
    all
}
