//! End-to-end: the two most demanding lines of the command-line corpus
//! (`crates/cmdline/tests/corpus/`) booted as far as the test network
//! allows. What is changed, and only that: the farm's gateway 10.42.0.1
//! is the test network's 10.99.0.1; the images are the test registry's
//! stand-ins (busybox with the programs the lines call, see
//! `images::CI_TOOLS_IMAGE`); the job's HTTP server is the test file
//! server, which serves the job's `install.tar.zst` (a plain tar here, as
//! busybox's tar has no zstd: `tar --zstd --extract` becomes `tar -x`);
//! CI-tron's extra initramfs with `/user/job.env` is appended to ours. The
//! boot is cut when `It's now safe to turn off your computer` appears, as
//! CI-tron cuts the power (the lines' `b2c.poweroff_delay=15` is for that).

use crate::common;

use std::path::PathBuf;

use common::{boot_on, options, start_net};
use qemu_tests::images::{CI_TELEGRAF_IMAGE, CI_TOOLS_IMAGE};
use qemu_tests::{
    Boot, NetOptions, TestNet, FILE_SERVER, REGISTRY_HTTP, S3_ACCESS_KEY, S3_SECRET_KEY,
};

const SAFE: &str = "It's now safe to turn off your computer";

/// The corpus file: its kernel command line and extra arguments.
fn corpus(name: &str) -> (String, Option<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/cmdline/tests/corpus")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let (main, extra) = match text.split_once("--- b2c.extra_args_url ---") {
        Some((m, e)) => (m.to_string(), Some(e.trim().to_string())),
        None => (text, None),
    };
    let cmdline = main
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    (cmdline, extra)
}

/// The substitutions of the module's documentation.
fn for_the_test_network(text: &str, images: &[(&str, &str)], job_url: &str) -> String {
    let mut text = text.replace(job_url, &format!("http://{FILE_SERVER}"));
    for (real, stand_in) in images {
        text = text.replace(real, &format!("{REGISTRY_HTTP}/{stand_in}"));
    }
    // SALAD's console is ours (console=ttyS0 comes first).
    text.replace("console=ttyS0,115200", "")
        .replace("console=ttyUSB0,115200", "")
        .replace("10.42.0.1", "10.99.0.1")
}

fn net_with_ci_images() -> TestNet {
    let net = start_net(&NetOptions::default());
    net.push_ci_images()
        .unwrap_or_else(|e| panic!("push the CI stand-ins: {e}"));
    net
}

fn boot_line(net: &TestNet, name: &str, append: &str, initramfs: Option<PathBuf>) -> Boot {
    let mut opts = options(name, append);
    if let Some(initramfs) = initramfs {
        opts.initramfs = initramfs;
    }
    opts.kill_when = Some(SAFE.into());
    // 10 s of waiting for a disk the machine does not have.
    opts.waits = true;
    boot_on(net, &opts)
}

/// Mesa's CI-tron job (`.ci-tron-b2c-job-v1` with Mesa's variables): the
/// options come from b2c.extra_args_url; telegraf runs as a service with
/// `--pid=host`; machine registration runs with `-ti`; the job container
/// gets a named volume as its working directory, `--env`, `--env-file`
/// from the extra initramfs, `--entrypoint bash` and `-euc -o pipefail`.
#[test]
fn mesa_ci_tron_job() {
    let net = net_with_ci_images();
    let (cmdline, extra) = corpus("01-mesa-ci-tron-b2c-job.txt");
    let images = [
        (
            "10.42.0.1:8002/gfx-ci/ci-tron/telegraf:latest",
            CI_TELEGRAF_IMAGE,
        ),
        (
            "10.42.0.1:8002/gfx-ci/ci-tron/machine-registration:latest",
            CI_TOOLS_IMAGE,
        ),
        (
            "10.42.0.1:8002/mesa/mesa/debian/x86_64_test-vk:2025-01-01",
            CI_TOOLS_IMAGE,
        ),
    ];
    let job_url = "http://10.42.0.1:8005/jobs/123";
    // The job's results volume mirrors a bucket of the gateway's S3 server:
    // the test network's, with its keys.
    let extra = for_the_test_network(&extra.unwrap(), &images, job_url)
        .replace("tar --zstd --extract", "tar -x")
        .replace("AKIAJOB123456EXAMPLE", S3_ACCESS_KEY)
        .replace("wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY", S3_SECRET_KEY);
    let mut net = net;
    net.start_s3().unwrap_or_else(|e| panic!("s3: {e}"));
    net.s3_bucket("job-123456");
    net.serve_file("b2c-extra-args", &extra).unwrap();
    // What Mesa's init-stage2.sh prints as the verdict CI-tron matches
    // (`hwci: mesa: exit_code: 0`), after the facts the test checks.
    let stage2 = "#!/bin/sh\n\
        for i in $(seq 100); do [ -f /dev/shm/telegraf ] && break; sleep 0.1; done\n\
        cat /dev/shm/telegraf\n\
        echo \"job: $PWD $https_proxy $MESA_JOB_VAR $(id -u) $(ls -d install)\"\n\
        echo 'hwci: mesa: exit_code: 0'\n";
    net.serve_file(
        "install.tar.zst",
        &tar_of(&[("install/common/init-stage2.sh", stage2)]),
    )
    .unwrap();
    let initramfs = qemu_tests::initramfs_with_files(
        "b2c-ci-tron-job-env",
        &[("user/job.env", "MESA_JOB_VAR=from-job-env\nCI_JOB_ID=123\n")],
    )
    .unwrap();
    let append = for_the_test_network(&cmdline, &images, job_url);
    let boot = boot_line(&net, "corpus-mesa-ci-tron", &append, Some(initramfs));

    // The service saw the host's PID 1: b2c.
    assert!(
        boot.has_line("telegraf stand-in: PID 1 is /init"),
        "the telegraf service did not run with --pid=host\n{boot}"
    );
    let mars = boot.after_marker("machine-registration stand-in: ");
    assert!(
        mars.len() == 1
            && mars[0].starts_with("setup --tags amdgpu:codename:NAVI21: stdout /dev/pts/"),
        "machine registration should run its command on a pty: {mars:?}\n{boot}"
    );
    assert_eq!(
        boot.after_marker("job: "),
        [format!(
            "/builds/mesa/mesa http://{FILE_SERVER} from-job-env 0 install"
        )],
        "the job container's directory, environment and env file\n{boot}"
    );
    assert!(boot.has_line("hwci: mesa: exit_code: 0"), "{boot}");
    assert_eq!(boot.status(), Some(0), "{boot}");
    assert!(boot.has_line(SAFE), "{boot}");
}

/// valve-infra's job with an artifact-collecting post container: a named
/// volume written by the job and read by the post container, `-e`.
#[test]
fn valve_infra_job_with_artifact_reaper() {
    let net = net_with_ci_images();
    let (cmdline, _) = corpus("14-valve-infra-gitlab-trigger.txt");
    let images = [
        (
            "10.42.0.1:8001/mupuf/valve-infra/machine_registration:latest",
            CI_TOOLS_IMAGE,
        ),
        ("10.42.0.1:8004/mesa/mesa:123456", CI_TOOLS_IMAGE),
        (
            "10.42.0.1:8001/mupuf/valve-infra/artifact-reaper:latest",
            CI_TOOLS_IMAGE,
        ),
    ];
    let append = for_the_test_network(&cmdline, &images, "http://unused");
    let boot = boot_line(&net, "corpus-valve-infra", &append, None);
    let mars = boot.after_marker("machine-registration stand-in: ");
    assert!(
        mars.len() == 1 && mars[0].starts_with("check : stdout /dev/pts/"),
        "{mars:?}\n{boot}"
    );
    assert_eq!(
        boot.after_marker("artifact-reaper stand-in: "),
        ["job 123456: junit.xml"],
        "the post container should read what the job left in the volume\n{boot}"
    );
    assert_eq!(boot.status(), Some(0), "{boot}");
    assert!(boot.has_line(SAFE), "{boot}");
}

/// A tar archive of text files, as text (tar headers are ASCII).
fn tar_of(files: &[(&str, &str)]) -> String {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o755);
        header.set_size(content.len() as u64);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    String::from_utf8(builder.into_inner().unwrap()).expect("an ASCII archive")
}
