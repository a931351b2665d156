//! End-to-end: boot the built initramfs under QEMU against the test
//! network and check what CI would read on the console. Needs the outputs
//! of `make initramfs` (they fail, not skip, without them).
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::{
    assert_error_about, assert_verdict, boot, boot_on, boot_with, opt, options, run_http, start_net,
};
use qemu_tests::images::{
    BUSYBOX_DOCKER_IMAGE, BUSYBOX_IMAGE, LAYERS_FILES, LAYERS_HARDLINK, LAYERS_IMAGE,
    LAYERS_SYMLINK, LAYERS_TREE, LAYERS_ZSTD_IMAGE,
};
use qemu_tests::{
    NetOptions, CA_CERT_IN_INITRAMFS, REGISTRY_AUTH, REGISTRY_AUTH_PASSWORD, REGISTRY_AUTH_USER,
    REGISTRY_HTTP, REGISTRY_HTTPS,
};

#[test]
fn hello() {
    let boot = boot(
        "hello",
        &run_http(BUSYBOX_IMAGE, "sh -c 'echo HELLO-$((40+2))'"),
    );
    assert!(boot.has_line("HELLO-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
}

#[test]
fn exit_code_is_the_pipeline_status() {
    let boot = boot("exit-code", &run_http(BUSYBOX_IMAGE, "sh -c 'exit 3'"));
    assert_verdict(&boot, 3);
}

#[test]
fn docker_schema2_image() {
    let boot = boot(
        "docker-schema2",
        &run_http(BUSYBOX_DOCKER_IMAGE, "sh -c 'echo DOCKER-$((40+2))'"),
    );
    assert!(boot.has_line("DOCKER-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
}

#[test]
fn https_with_the_test_ca() {
    let append = format!(
        r#"b2c.ca_cert={CA_CERT_IN_INITRAMFS} b2c.run="docker://{REGISTRY_HTTPS}/{BUSYBOX_IMAGE} sh -c 'echo TLS-$((40+2))'""#
    );
    let boot = boot_with("https-with-ca", &append, |opts| {
        opts.initramfs = qemu_tests::initramfs_with_ca().unwrap_or_else(|e| panic!("{e}"))
    });
    assert!(boot.has_line("TLS-42"), "no container output\n{boot}");
    assert_verdict(&boot, 0);
}

#[test]
fn https_without_the_ca_is_refused() {
    let append = format!(r#"b2c.run="docker://{REGISTRY_HTTPS}/{BUSYBOX_IMAGE} true""#);
    let boot = boot("https-without-ca", &append);
    assert_error_about(&boot, &["certificate", "tls"]);
    assert_verdict(&boot, 1);
}

/// The same layers, in gzip and in zstd (one zstd:chunked-shaped), merge
/// to the same tree: one boot, one container per image.
#[test]
fn layers_merge_with_whiteouts_and_links() {
    let files: Vec<&str> = LAYERS_FILES.iter().map(|(path, _)| *path).collect();
    let (a, b) = LAYERS_HARDLINK;
    let images = [(LAYERS_IMAGE, "GZ"), (LAYERS_ZSTD_IMAGE, "ZST")];
    let append: Vec<String> = images
        .iter()
        .map(|(image, tag)| {
            let script = format!(
                "find /data | sort | sed s/^/{tag}-TREE-$((40+2)):/; \
                 for f in {}; do echo {tag}-FILE-$((40+2)):$f:$(cat $f); done; \
                 echo {tag}-LINK-$((40+2)):$(readlink {}); \
                 echo {tag}-INODES-$((40+2)):$(stat -c %i {a} {b} | sort -u | wc -l)",
                files.join(" "),
                LAYERS_SYMLINK.0,
            );
            run_http(image, &format!("sh -c '{script}'"))
        })
        .collect();
    let boot = boot("layers", &append.join(" "));

    let expected: Vec<String> = LAYERS_FILES
        .iter()
        .map(|(path, content)| format!("{path}:{content}"))
        .collect();
    for (image, tag) in images {
        assert_eq!(
            boot.after_marker(&format!("{tag}-TREE-42:")),
            LAYERS_TREE,
            "merged tree of {image}\n{boot}"
        );
        assert_eq!(
            boot.after_marker(&format!("{tag}-FILE-42:")),
            expected,
            "file contents of {image}\n{boot}"
        );
        assert_eq!(
            boot.after_marker(&format!("{tag}-LINK-42:")),
            [LAYERS_SYMLINK.1],
            "symlink of {image}\n{boot}"
        );
        assert_eq!(
            boot.after_marker(&format!("{tag}-INODES-42:")),
            ["1"],
            "{a} and {b} should be one inode in {image}\n{boot}"
        );
    }
    assert_verdict(&boot, 0);
}

#[test]
fn clock_is_set_by_ntp_from_dhcp() {
    // The RTC says 2000: only NTP can bring the guest to this year.
    let host_year = String::from_utf8(
        std::process::Command::new("date")
            .args(["-u", "+%Y"])
            .output()
            .expect("run date")
            .stdout,
    )
    .expect("date prints ASCII");
    let boot = boot_with(
        "clock",
        &format!(
            "b2c.ntp_peer=auto {}",
            run_http(BUSYBOX_IMAGE, "sh -c 'echo YEAR-$((40+2)):$(date -u +%Y)'")
        ),
        |opts| opts.extra_qemu_args = vec!["-rtc".into(), "base=2000-01-01".into()],
    );
    assert_eq!(
        boot.after_marker("YEAR-42:"),
        [host_year.trim()],
        "guest year\n{boot}"
    );
    assert_verdict(&boot, 0);
}

#[test]
fn unreachable_registry_fails_the_setup() {
    // Nothing listens on 5999; retried for 5 s, not the default 2 minutes.
    let append = format!(
        r#"b2c.pull_retry=5s b2c.run="--tls-verify=false docker://10.99.0.1:5999/{BUSYBOX_IMAGE} true""#
    );
    let boot = boot_with("unreachable-registry", &append, |opts| {
        opts.timeout = Duration::from_secs(120)
    });
    assert!(!boot.error_lines().is_empty(), "no ERROR line\n{boot}");
    assert_verdict(&boot, 1);
}

#[test]
fn malformed_run_option_is_named() {
    let append = format!(r#"b2c.run="--no-such-flag docker://{REGISTRY_HTTP}/{BUSYBOX_IMAGE}""#);
    let boot = boot("malformed-run", &append);
    assert_error_about(&boot, &["b2c.run"]);
    assert_verdict(&boot, 1);
}

/// A registry that wants a password (HTTP Basic against an htpasswd
/// file), reached with `--creds` and with `--authfile URL` (podman's
/// auth.json), both given through `b2c.extra_args_url` as farms keep
/// secrets off the PXE line. An anonymous pull is denied, with an ERROR
/// that says how to give credentials. The password never reaches the
/// console.
#[test]
fn registry_credentials_from_creds_and_authfile() {
    let mut net = start_net(&NetOptions::default());
    net.start_auth_registry().unwrap_or_else(|e| panic!("{e}"));
    let user_pass = format!("{REGISTRY_AUTH_USER}:{REGISTRY_AUTH_PASSWORD}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&user_pass);
    let authfile = net
        .serve_file(
            "auth.json",
            &format!(r#"{{"auths": {{"{REGISTRY_AUTH}": {{"auth": "{encoded}"}}}}}}"#),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let image = |name: &str| format!("--tls-verify=false docker://{REGISTRY_AUTH}/{name}");
    let args = [
        opt(
            "b2c.run",
            &format!(
                "--creds {user_pass} {} sh -c 'echo CREDS-$((2*3))'",
                image(BUSYBOX_IMAGE)
            ),
        ),
        opt(
            "b2c.run",
            &format!(
                "--authfile {authfile} {} sh -c 'echo AUTHFILE-$((3*3))'",
                image(BUSYBOX_DOCKER_IMAGE)
            ),
        ),
        opt(
            "b2c.post_container",
            &format!("{} true", image(LAYERS_IMAGE)),
        ),
    ]
    .join("\n");
    let url = net
        .serve_file("args", &args)
        .unwrap_or_else(|e| panic!("{e}"));
    let boot = boot_on(
        &net,
        &options("registry-credentials", &format!("b2c.extra_args_url={url}")),
    );
    assert!(boot.has_line("CREDS-6"), "--creds did not pull\n{boot}");
    assert!(
        boot.has_line("AUTHFILE-9"),
        "--authfile did not pull\n{boot}"
    );
    let denied: Vec<&str> = boot
        .error_lines()
        .into_iter()
        .filter(|l| l.contains(LAYERS_IMAGE.split(':').next().unwrap()))
        .collect();
    assert!(
        denied
            .iter()
            .any(|l| l.contains("denied") && l.contains("--creds")),
        "the anonymous pull should be denied, naming --creds: {denied:#?}\n{boot}"
    );
    // A post container's failure does not count.
    assert_verdict(&boot, 0);
    for secret in [REGISTRY_AUTH_PASSWORD, encoded.as_str()] {
        assert!(
            !boot.console.contains(secret),
            "the password reached the console\n{boot}"
        );
    }
}
