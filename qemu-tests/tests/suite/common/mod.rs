//! What the end-to-end test files share: booting, the image they run, and
//! the verdict CI reads.
//!
//! Markers are computed by the guest's shell (`$((40+2))`) so that the
//! kernel's echo of its command line can never match them.

use qemu_tests::images::{BIG_FILE, BIG_IMAGE, BUSYBOX_IMAGE};
use qemu_tests::{Boot, BootOptions, NetOptions, TestNet, REGISTRY_HTTP};

/// Boot options for the default kernel and initramfs, which must exist:
/// a test without them fails (it does not skip), saying how to build them.
pub fn options(name: &str, append: &str) -> BootOptions {
    let opts = BootOptions::new(name, append);
    for path in [&opts.kernel, &opts.initramfs] {
        assert!(
            path.is_file(),
            "{} is missing: run `make initramfs` first",
            path.display()
        );
    }
    opts
}

pub fn start_net(net_options: &NetOptions) -> TestNet {
    TestNet::start_with(net_options).unwrap_or_else(|e| panic!("test network: {e}"))
}

pub fn boot_on(net: &TestNet, opts: &BootOptions) -> Boot {
    net.boot(opts).unwrap_or_else(|e| panic!("boot: {e}"))
}

/// One boot on a fresh default network.
pub fn boot(name: &str, append: &str) -> Boot {
    boot_with(name, append, |_| {})
}

pub fn boot_with(name: &str, append: &str, adjust: impl FnOnce(&mut BootOptions)) -> Boot {
    // Checked before `adjust`, which may build an initramfs from these.
    let mut opts = options(name, append);
    adjust(&mut opts);
    boot_on(&start_net(&NetOptions::default()), &opts)
}

/// The file name of a test's disk image `name` in
/// `target/qemu-tests/disks/`: `name.img` on x86_64, `name-ARCH.img` on
/// another architecture (as the console logs), so that the arm64 boots of
/// `make test` never share a disk with the x86_64 suite running beside
/// them.
pub fn disk_file(name: &str) -> String {
    match qemu_tests::Arch::current() {
        qemu_tests::Arch::X86_64 => format!("{name}.img"),
        arch => format!("{name}-{arch}.img"),
    }
}

/// The busybox image in the plain-HTTP registry, as the image part of a
/// `b2c.run` value.
pub fn img() -> String {
    format!("--tls-verify=false docker://{REGISTRY_HTTP}/{BUSYBOX_IMAGE}")
}

/// `key="value"`: one container option of the command line.
pub fn opt(key: &str, value: &str) -> String {
    format!(r#"{key}="{value}""#)
}

/// `b2c.run` of [`img`] with `command`.
pub fn run_img(command: &str) -> String {
    opt("b2c.run", &format!("{} {command}", img()))
}

/// `b2c.run` of an image in the plain-HTTP registry.
/// The big image pulled onto the cache (`b2c.cache_device=auto`), its
/// file's checksum printed after `SUM-42:`: what the power-cut tests
/// check a pull by.
pub fn big_image_on_auto_cache() -> String {
    format!(
        "b2c.cache_device=auto {}",
        run_http(
            BIG_IMAGE,
            &format!("sh -c 'echo SUM-$((40+2)):$(sha256sum {BIG_FILE})'"),
        )
    )
}

pub fn run_http(image: &str, command: &str) -> String {
    opt(
        "b2c.run",
        &format!("--tls-verify=false docker://{REGISTRY_HTTP}/{image} {command}"),
    )
}

/// The status line says `status`, and the guest then powered off cleanly.
pub fn assert_verdict(boot: &Boot, status: i32) {
    assert_eq!(boot.status(), Some(status), "pipeline status\n{boot}");
    assert!(boot.powered_off(), "no clean power-off\n{boot}");
}

/// An `ERROR:` line that mentions one of `words` (case-insensitive).
pub fn assert_error_about(boot: &Boot, words: &[&str]) {
    let errors = boot.error_lines();
    assert!(
        errors
            .iter()
            .any(|line| words.iter().any(|w| line.to_lowercase().contains(w))),
        "no ERROR line about {words:?}; errors: {errors:#?}\n{boot}"
    );
}
