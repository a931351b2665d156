//! The end-to-end test harness: boots the real initramfs under QEMU (TCG)
//! inside a private network namespace that holds a DHCP/DNS server
//! (dnsmasq), an NTP server (chronyd), an OCI registry over HTTP and
//! HTTPS, with test images built here from Debian's static busybox, and a
//! plain HTTP file server ([`TestNet::serve_file`], for
//! `b2c.extra_args_url`). [`NetOptions`] turns DHCP off for tests of static
//! network configuration. Nothing leaves the machine. Needs root.
//! Guests can have disks ([`BootOptions::with_disk`], images made and read
//! back by [`disk`]), can be cut off at a console line
//! ([`BootOptions::kill_when`]) or have keys pressed at one through QEMU's
//! monitor ([`BootOptions::monitor_when`]); [`TestNet::blob_downloads`]
//! counts what the registry served; [`TestNet::start_faulty_registry`]
//! adds a registry that rate-limits, dies and comes back ([`Faults`]);
//! [`TestNet::start_nfs`] an NFS server (NFS-Ganesha) exporting a store
//! that podman wrote ([`TestNet::podman_store`]); [`TestNet::start_nbd`]
//! Debian's nbd-server, which [`NbdServer::restart`] restarts.
//!
//! ```no_run
//! use qemu_tests::{BootOptions, TestNet};
//! let net = TestNet::start()?;
//! let boot = net.boot(&BootOptions::new(
//!     "hello",
//!     r#"b2c.run="--tls-verify=false docker://10.99.0.1:5000/b2c/busybox:latest true""#,
//! ))?;
//! assert_eq!(boot.status(), Some(0), "{boot}");
//! # Ok::<(), qemu_tests::Error>(())
//! ```
//!
//! Running, as root: `make e2e` (builds kernel and initramfs first), or
//! `cargo test -p qemu-tests --lib` for the harness's own tests (no kernel
//! needed) and `cargo test -p qemu-tests --test suite -- e2e::` (pulls,
//! images, TLS, clock), `pipeline::` (pipefail, services, post containers,
//! volumes, extra args, reboot), `network::` (static addresses), `cache::`
//! (`b2c.cache_device`), `signals::` (Ctrl-Alt-Del, a crash) and the other
//! modules of `tests/suite/` for the boots. Console
//! logs land in `target/qemu-tests/logs/<boot name>.log`; after a failed
//! test the services' logs are kept there too. Boots queue for a CPU slot
//! (`$B2C_QEMU_JOBS`, default one per two cores) so that parallel tests
//! do not starve each other into timeouts; a boot that mostly waits
//! ([`BootOptions::waits`]) may take the one slot kept for such boots.
//!
//! Facts this relies on: `/work/shared/design/TEST-HARNESS.md`.

mod arch;
mod ca;
pub mod disk;
mod faulty;
pub mod images;
mod nbd;
mod net;
mod nfs;
mod qemu;
#[cfg(test)]
mod selftest;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

pub use arch::Arch;
pub use ca::{ca_cert_path, issue_server_cert_with, make_ca};
pub use faulty::{Faults, FaultyRegistry, SeenRequest, FAULTY_REGISTRY};
pub use nbd::NbdServer;
pub use net::{
    count_blob_downloads, s3s_fs_binary, NetOptions, TestNet, FILE_SERVER, GATEWAY,
    HTTPS_FILE_SERVER, NETBOOT_SCRIPT_URL, REGISTRY_AUTH, REGISTRY_AUTH_PASSWORD,
    REGISTRY_AUTH_USER, REGISTRY_HTTP, REGISTRY_HTTPS, S3_ACCESS_KEY, S3_SECRET_KEY, S3_SERVER,
};
pub use nfs::{NfsServer, MOUNTD_PORT, NFS_PORT};
pub use qemu::{Boot, BootOptions, DiskBus, TCG_KERNEL_ARGS};

/// Where `initramfs_with_ca()` puts the test CA inside the initramfs; boot
/// with `b2c.ca_cert=` this path.
pub const CA_CERT_IN_INITRAMFS: &str = "/etc/b2c/ca.pem";

/// Everything here fails with a message that says what failed and, where
/// there is one, which log to read.
#[derive(Debug, Clone)]
pub struct Error(String);

impl Error {
    pub(crate) fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches "what we were doing" to io errors.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests lives inside the workspace")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"))
}

/// Our own corner of the target dir: logs, images, the test CA.
pub fn output_dir() -> PathBuf {
    target_dir().join("qemu-tests")
}

/// `$B2C_KERNEL`: a kernel image, or `own` for ours
/// ([`Arch::own_kernel_image`]), or `debian` (the default): what `cargo
/// xtask kernel --debian` fetches, for [`Arch::current`].
pub fn default_kernel() -> PathBuf {
    kernel_named(
        &std::env::var("B2C_KERNEL").unwrap_or_default(),
        Arch::current(),
    )
}

/// A kernel by the names `$B2C_KERNEL` and `cargo xtask qemu --kernel`
/// take: `own`, `debian` (or nothing), or a path.
pub fn kernel_named(name: &str, arch: Arch) -> PathBuf {
    match name {
        "" | "debian" => arch.kernel_image(),
        "own" => arch.own_kernel_image(),
        path => PathBuf::from(path),
    }
}

/// Our own kernel for `arch` and its release (`6.1.192-b2c`), when
/// `cargo xtask kernel` has built it.
pub fn own_kernel(arch: Arch) -> Option<(PathBuf, String)> {
    let image = arch.own_kernel_image();
    let release = std::fs::read_to_string(image.with_file_name("release")).ok()?;
    image.is_file().then(|| (image, release.trim().to_string()))
}

/// `$B2C_INITRAMFS`, else what `cargo xtask initramfs` builds for
/// [`Arch::current`].
pub fn default_initramfs() -> PathBuf {
    std::env::var_os("B2C_INITRAMFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Arch::current().initramfs())
}

/// `$B2C_FIRMWARE`, else what `cargo xtask firmware` builds: the
/// firmware cpio a boot loader loads after the initramfs.
pub fn default_firmware() -> PathBuf {
    std::env::var_os("B2C_FIRMWARE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("initramfs/b2c-firmware.cpio.zst"))
}

/// The default initramfs plus the test CA at [`CA_CERT_IN_INITRAMFS`],
/// built once per process by `cargo xtask initramfs --ca-cert`, for
/// [`Arch::current`].
pub fn initramfs_with_ca() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let ca = ca_cert_path()?;
            let arch = Arch::current();
            let output = match arch {
                Arch::X86_64 => output_dir().join("b2c-ca.cpio.zst"),
                arch => output_dir().join(format!("b2c-ca-{arch}.cpio.zst")),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            run(
                Command::new(cargo)
                    .current_dir(workspace_dir())
                    .args(["xtask", "initramfs", "--arch", arch.name(), "--ca-cert"])
                    .arg(&ca)
                    .arg("--output")
                    .arg(&output),
                "cargo xtask initramfs --ca-cert",
            )?;
            Ok(output)
        })
        .clone()
}

/// The default initramfs followed by a second, uncompressed archive with
/// `files` (path, content; their directories made too), as CI-tron boots
/// boot2container with job files (`/user/job.env`) in an extra archive:
/// the kernel unpacks both. Written to `target/qemu-tests/<name>.cpio`.
pub fn initramfs_with_files(name: &str, files: &[(&str, &str)]) -> Result<PathBuf> {
    let base = default_initramfs();
    let mut data = std::fs::read(&base).context(|| format!("read {}", base.display()))?;
    // Each archive starts on a 4-byte boundary; the kernel skips zeros.
    data.resize(data.len().next_multiple_of(4), 0);
    let mut entries: Vec<(String, u32, &[u8])> = Vec::new();
    for (path, content) in files {
        let mut dir = String::new();
        for part in path
            .split('/')
            .filter(|p| !p.is_empty())
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            dir = if dir.is_empty() {
                part.to_string()
            } else {
                format!("{dir}/{part}")
            };
            if !entries.iter().any(|(p, _, _)| *p == dir) {
                entries.push((dir.clone(), 0o040755, b""));
            }
        }
        entries.push((
            path.trim_start_matches('/').to_string(),
            0o100644,
            content.as_bytes(),
        ));
    }
    entries.push(("TRAILER!!!".to_string(), 0, b""));
    for (ino, (path, mode, content)) in entries.iter().enumerate() {
        let fields = [
            ino as u32 + 1,
            *mode,
            0,
            0,
            1,
            0,
            content.len() as u32,
            0,
            0,
            0,
            0,
            path.len() as u32 + 1,
            0,
        ];
        data.extend_from_slice(b"070701");
        for f in fields {
            data.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        data.extend_from_slice(path.as_bytes());
        data.push(0);
        data.resize(data.len().next_multiple_of(4), 0);
        data.extend_from_slice(content);
        data.resize(data.len().next_multiple_of(4), 0);
    }
    let out = output_dir().join(format!("{name}.cpio"));
    std::fs::create_dir_all(output_dir()).context(|| "create the output dir".to_string())?;
    std::fs::write(&out, data).context(|| format!("write {}", out.display()))?;
    Ok(out)
}

/// An initramfs that ships only `modules` (and what they need; none at
/// all when empty), uncompressed, built once per process and name by `cargo xtask
/// initramfs --modules FILE` for [`Arch::current`]: a machine without some
/// drivers. Variants of different names build at the same time.
pub fn initramfs_with_modules(name: &str, modules: &[&str]) -> Result<PathBuf> {
    type Built = Arc<OnceLock<Result<PathBuf>>>;
    static BUILT: Mutex<Vec<(String, Built)>> = Mutex::new(Vec::new());
    let cell = {
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        match built.iter().find(|(n, _)| n == name) {
            Some((_, cell)) => cell.clone(),
            None => {
                let cell = Built::default();
                built.push((name.to_string(), cell.clone()));
                cell
            }
        }
    };
    cell.get_or_init(|| build_initramfs_with_modules(name, modules))
        .clone()
}

fn build_initramfs_with_modules(name: &str, modules: &[&str]) -> Result<PathBuf> {
    let dir = output_dir();
    std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
    let list = dir.join(format!("modules-{name}.txt"));
    std::fs::write(&list, modules.join("\n") + "\n")
        .context(|| format!("write {}", list.display()))?;
    let arch = Arch::current();
    let output = match arch {
        Arch::X86_64 => dir.join(format!("b2c-{name}.cpio")),
        arch => dir.join(format!("b2c-{name}-{arch}.cpio")),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        Command::new(cargo)
            .current_dir(workspace_dir())
            .args(["xtask", "initramfs", "--arch", arch.name()])
            .args(["--compression", "none", "--modules"])
            .arg(&list)
            .arg("--output")
            .arg(&output),
        "cargo xtask initramfs --modules",
    )?;
    Ok(output)
}

/// The modules archive `cargo xtask modules --kernel-modules DIR` makes
/// (uncompressed) for the kernel of `cargo xtask kernel --debian`, built once per
/// process: what a boot loader appends for a kernel of one's own.
pub fn modules_archive() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let kernel = target_dir().join("kernel");
            let release = std::fs::read_to_string(kernel.join("release")).context(|| {
                "no target/kernel/release: run `cargo xtask kernel --debian`".to_string()
            })?;
            let dir = kernel.join("root/lib/modules").join(release.trim());
            let output = output_dir().join("b2c-modules.cpio");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            run(
                Command::new(cargo)
                    .current_dir(workspace_dir())
                    .args([
                        "xtask",
                        "modules",
                        "--compression",
                        "none",
                        "--kernel-modules",
                    ])
                    .arg(&dir)
                    .arg("--output")
                    .arg(&output),
                "cargo xtask modules",
            )?;
            Ok(output)
        })
        .clone()
}

/// Runs a command to completion; a non-zero exit is an error carrying the
/// end of its stderr.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(Error(format!(
            "{what} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        )));
    }
    Ok(out)
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn read_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Fails up front, naming the Debian package, rather than halfway
/// through a start with an obscure exec error.
pub(crate) fn check_host() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::new(
            "qemu-tests need root (network namespaces, tap devices)",
        ));
    }
    const TOOLS: &[(&str, &str)] = &[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("htpasswd", "apache2-utils"),
        ("dnsmasq", "dnsmasq-base"),
        ("chronyd", "chrony"),
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("openssl", "openssl"),
    ];
    let arch = Arch::current();
    let missing: Vec<String> = TOOLS
        .iter()
        .chain([&(arch.qemu(), arch.qemu_package())])
        .filter(|(tool, _)| find_in_path(tool).is_none())
        .map(|(tool, package)| format!("{tool} (Debian package {package})"))
        .collect();
    if !missing.is_empty() {
        return Err(Error(format!("missing tools: {}", missing.join(", "))));
    }
    images::check_busybox()
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}
