//! Boot time under QEMU TCG: from QEMU's start to the pipeline status line,
//! same kernel, same QEMU flags, same test network (the qemu-tests
//! harness: dnsmasq, chronyd and a registry with the busybox image, in a
//! private network namespace). Against two baselines built here:
//!
//! - the floor: a static init (C, musl) that prints the status line and
//!   powers off at once;
//! - a busybox shell-script init doing the same job as b2c for the hello
//!   image: modules, udhcpc, wget of the manifest and the layer, tar, crun.
//!
//! When our own kernel is built (`cargo xtask kernel`), the floor, the
//! busybox script and b2c (both with an initramfs without modules) also
//! boot it, in the same rounds: Debian's kernel with modules against ours
//! with every driver built in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_tests::{Arch, BootOptions, TestNet};

use super::measure::{median, paired_median};
use crate::cpio::{Archive, Node};
use crate::initramfs::{self, Compression};
use crate::{crun, kernel, run, Result};

/// The keys of the variants that boot our kernel.
pub const OWN_FLOOR: &str = "floor-own-kernel";
pub const OWN_B2C: &str = "b2c-own-kernel";
pub const OWN_BUSYBOX: &str = "busybox-own-kernel";

/// The image and the command every variant runs.
const IMAGE: &str = "10.99.0.1:5000/b2c/busybox:latest";
pub(super) const HELLO: &str = "hello from the benchmark";

#[derive(Debug, Clone, serde::Serialize)]
pub struct Variant {
    pub key: String,
    pub label: String,
    /// The kernel's release, e.g. `6.1.0-57-amd64` (Debian's) or
    /// `6.1.192-b2c` (ours).
    pub kernel: String,
    pub initramfs: PathBuf,
    pub compressed_bytes: u64,
    /// Boots: QEMU start → status line, seconds.
    pub seconds: Vec<f64>,
    /// Boots, by the guest's clock: the kernel starting /init → the
    /// kernel powering off. The init's own share, without QEMU's start,
    /// the kernel's boot and the initramfs unpacking.
    pub userland: Vec<f64>,
    /// Boots, by the guest's clock: the seconds of each of [`PHASES`].
    pub phases: Vec<[f64; 5]>,
    /// The b2c console lines (uptime-stamped) of the median boot.
    pub timeline: Vec<String>,
    /// The whole console of the median boot, for its chart and its
    /// phases (results.json has its b2c lines, above).
    #[serde(skip)]
    pub console: String,
}

impl Variant {
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }

    pub fn userland_median(&self) -> f64 {
        median(&self.userland)
    }

    /// The median of phase `i` of [`PHASES`] over the boots that mark it
    /// (NaN if none does).
    pub fn phase_median(&self, i: usize) -> f64 {
        let marked: Vec<f64> = self
            .phases
            .iter()
            .map(|p| p[i])
            .filter(|s| !s.is_nan())
            .collect();
        median(&marked)
    }

    /// How much longer than `other` this variant took, round by round
    /// (each round boots every variant once, one after the other).
    pub fn over(&self, other: &Variant) -> f64 {
        paired_median(&self.seconds, &other.seconds)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn userland_is_from_init_to_power_down() {
        let console = "[    1.500000] Run /init as init process\n\
                       [    1.938]: b2c 0.1.0\n\
                       [    2.750000] reboot: Power down\n";
        assert_eq!(super::userland_seconds(console), Some(1.25));
        assert_eq!(super::userland_seconds("no stamps"), None);
    }

    #[test]
    fn the_script_and_b2c_mark_the_same_links_of_the_chain() {
        let script = "[    2.000000] Run /init as init process\n\
                      script: modules loaded at 2.25 s\n\
                      script: network up at 2.50 s\n\
                      script: layer unpacked at 3.00 s\n\
                      hello\n\
                      script: container exited at 3.25 s\n\
                      [    3.500000] reboot: Power down\n";
        assert_eq!(super::phase_seconds(script), [0.25, 0.25, 0.5, 0.25, 0.25]);
        let b2c = "[    1.000000] Run /init as init process\n\
                   [    1.100]: b2c 0.1.0\n\
                   [    1.500]: kernel modules: loaded virtio_net\n\
                   [    1.625]: block devices: none\n\
                   [    1.875]: network: eth0: 10.99.0.41/24 by DHCP\n\
                   [    2.375]: pulled 10.99.0.1:5000/b2c/busybox:latest\n\
                   [    2.625]: run-0 exited with status 0\n\
                   [    2.750000] reboot: Power down\n";
        assert_eq!(super::phase_seconds(b2c), [0.625, 0.25, 0.5, 0.25, 0.125]);
        // A boot that stopped early marks what it reached.
        let cut = super::phase_seconds(&b2c[..b2c.find("[    2.375]").unwrap()]);
        assert_eq!(cut[..2], [0.625, 0.25]);
        assert!(cut[2..].iter().all(|s| s.is_nan()), "{cut:?}");
    }

    #[test]
    fn a_chart_for_each_variant_that_printed_b2c_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("boot-gone.svg"), "an earlier run's").unwrap();
        std::fs::write(dir.path().join("results.md"), "kept").unwrap();
        let variant = |key: &str, console: &str| super::Variant {
            key: key.into(),
            label: key.into(),
            kernel: String::new(),
            initramfs: "x".into(),
            compressed_bytes: 0,
            seconds: vec![],
            userland: vec![],
            phases: vec![],
            timeline: vec![],
            console: console.into(),
        };
        let mut boot = super::BootResults {
            kernel: String::new(),
            qemu: String::new(),
            append: String::new(),
            variants: vec![
                variant(
                    "floor",
                    "[    0.000000] Linux\nExecution is over, pipeline status: 0\n",
                ),
                variant("b2c-zstd", LAYERS),
                variant("../my build", LAYERS),
            ],
            charts: vec![],
        };
        boot.write_charts(dir.path()).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["boot-.._my_build.svg", "boot-b2c-zstd.svg", "results.md"]
        );
        let svg = std::fs::read_to_string(dir.path().join("boot-b2c-zstd.svg")).unwrap();
        assert!(svg.starts_with("<svg ") && svg.contains("10.99.0.1:5000/b2c/layers:latest"));
        assert_eq!(
            boot.charts,
            [
                ("b2c-zstd".to_string(), "boot-b2c-zstd.svg".to_string()),
                (
                    "../my build".to_string(),
                    "boot-.._my_build.svg".to_string()
                )
            ]
        );
    }

    /// `busybox sh -c SCRIPT` on the host, with stdin: the same shell
    /// as the guest's.
    fn busybox_sh(script: &str, stdin: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("busybox")
            .args(["sh", "-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{script}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn big_job() -> super::ScriptJob<'static> {
        super::ScriptJob {
            name: "busybox-big",
            image: "10.99.0.1:5000/bench/large:latest",
            command: &["gcc", "--version"],
            disk: Some("/dev/vda"),
            kernel_modules: true,
        }
    }

    #[test]
    fn scripts_are_valid_sh() {
        for job in [super::hello_job(), big_job()] {
            let script = super::busybox_script(&job);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("init");
            std::fs::write(&path, &script).unwrap();
            let status = std::process::Command::new("busybox")
                .args(["sh", "-n"])
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
            assert!(!script.contains("__"), "a placeholder left: {script}");
        }
    }

    #[test]
    fn the_hello_script_unpacks_one_layer_into_a_tmpfs() {
        let script = super::busybox_script(&super::hello_job());
        assert!(script.contains("repo=http://10.99.0.1:5000/v2/b2c/busybox\n"));
        assert!(script.contains("/manifests/latest\""));
        assert!(script.contains("| tar -xzf - -C /tmp/c/rootfs || fail layer\n"));
        assert!(script.contains(r#"\1"echo", "hello from the benchmark"/' config.json"#));
        assert!(!script.contains("mke2fs") && !script.contains("overlay"));
    }

    #[test]
    fn the_big_script_formats_the_disk_as_b2c_and_pulls_every_layer_at_once() {
        let script = super::busybox_script(&big_job());
        assert!(script.contains("repo=http://10.99.0.1:5000/v2/bench/large\n"));
        assert!(
            script.contains("/usr/sbin/mke2fs -t ext4 -O encrypt -L B2C_CACHE -F -q /dev/vda ||")
        );
        assert!(script.contains("mount -t ext4 -o noatime /dev/vda /cache ||"));
        assert!(script
            .contains("wget -q -O - \"$repo/blobs/$layer\" | tar -xzf - -C /cache/layers/$n &\n"));
        assert!(script.contains("for pid in $pids; do wait $pid || fail \"a layer\"; done"));
        assert!(script.contains("mount -t overlay overlay -o \"lowerdir=$lower,upperdir="));
        assert!(script.contains(r#"\1"gcc", "--version"/' config.json"#));
        assert!(script.contains(r#"'s/"readonly": true/"readonly": false/'"#));
    }

    /// The same arguments as b2c's own mke2fs call.
    #[test]
    fn mke2fs_arguments_are_b2cs() {
        let source = include_str!("../../../crates/storage/src/format.rs");
        for word in super::MKE2FS_ARGS.split(' ') {
            let quoted = format!("\"{word}\"");
            assert!(
                source.contains(&quoted) || word == "B2C_CACHE",
                "{word} is not in b2c's mke2fs arguments"
            );
        }
        assert!(source.contains("label::LABEL"));
    }

    #[test]
    fn layer_digests_in_order_from_compact_and_pretty_manifests() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": d('c'), "size": 1},
            "layers": [{"digest": d('1'), "size": 2}, {"digest": d('2'), "size": 3}],
        });
        let want = format!("{}\n{}\n", d('1'), d('2'));
        for text in [
            serde_json::to_string(&manifest).unwrap(),
            serde_json::to_string_pretty(&manifest).unwrap(),
        ] {
            assert_eq!(busybox_sh(super::LAYER_DIGESTS, &text), want, "{text}");
        }
    }

    #[test]
    fn the_amd64_manifest_of_an_index() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let descriptor = |c: char, arch: &str| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d(c),
                "size": 500,
                "platform": {"architecture": arch, "os": "linux"},
            })
        };
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [descriptor('a', "arm64"), descriptor('b', "amd64"), descriptor('c', "amd64")],
        });
        for text in [
            serde_json::to_string(&index).unwrap(),
            serde_json::to_string_pretty(&index).unwrap(),
        ] {
            assert_eq!(
                busybox_sh(super::PLATFORM_DIGEST, &text),
                format!("{}\n", d('b')),
                "{text}"
            );
        }
    }

    /// The sed of the script on what `crun spec` writes, with words that
    /// JSON, sed and sh each quote.
    #[test]
    fn crun_args_survive_sed_and_json() {
        let spec = "{\n\t\"process\": {\n\t\t\"terminal\": true,\n\t\t\"args\": [\n\t\t\t\"sh\"\n\t\t],\n\t\t\"cwd\": \"/\"\n\t}\n}\n";
        let words = ["/bin/sh", "-c", r#"echo "a&b" 'c' \d"#];
        let sed = format!(
            r#"sed -e 's/^\(\s*\)"sh"$/\1{}/'"#,
            super::crun_args(&words)
        );
        let out = busybox_sh(&sed, spec);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["process"]["args"], serde_json::json!(words));
    }

    const LAYERS: &str = include_str!("../../../crates/bootchart/tests/fixtures/layers.log");

    #[test]
    fn timeline_keeps_only_b2c_lines() {
        let console = "[    0.803041] pci 0000:00:01.1: BAR 0 [io  0x01f0-0x01f7]: legacy\n\
                       [    1.938]: b2c 0.1.0\n\
                       hello\n\
                       [   12.000]: Execution is over, pipeline status: 0\n";
        assert_eq!(
            super::timeline(console),
            [
                "[    1.938]: b2c 0.1.0",
                "[   12.000]: Execution is over, pipeline status: 0"
            ]
        );
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BootResults {
    pub kernel: String,
    pub qemu: String,
    pub append: String,
    pub variants: Vec<Variant>,
    /// The boot charts written next to results.md, by variant key.
    pub charts: Vec<(String, String)>,
}

impl BootResults {
    pub fn variant(&self, key: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.key == key)
    }

    /// Writes `boot-<variant>.svg` in `dir` for each variant whose median
    /// boot printed b2c lines (`b2c plot` of its console), after removing
    /// those of an earlier run. The baselines print none: they get none.
    pub fn write_charts(&mut self, dir: &Path) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("boot-") && name.ends_with(".svg") {
                std::fs::remove_file(dir.join(&name))?;
            }
        }
        self.charts.clear();
        for v in &self.variants {
            let Ok(timeline) = b2c_bootchart::parse(&v.console) else {
                continue;
            };
            let file = format!("boot-{}.svg", file_safe(&v.key));
            std::fs::write(dir.join(&file), b2c_bootchart::render_svg(&timeline))?;
            self.charts.push((v.key.clone(), file));
        }
        Ok(())
    }
}

/// A variant key (`--initramfs LABEL=…` chooses it) as a file name: no
/// `/`, nothing a shell would trip on.
pub(super) fn file_safe(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

const FLOOR_C: &str = r#"
#include <sys/reboot.h>
#include <unistd.h>
int main(void) {
    static const char line[] = "Execution is over, pipeline status: 0\n";
    write(1, line, sizeof line - 1);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
"#;

/// The floor: a static init that prints the status line and powers off.
pub fn floor_initramfs(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let src = dir.join("floor.c");
    std::fs::write(&src, FLOOR_C)?;
    let init = dir.join("floor-init");
    run(Command::new("musl-gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&init)
        .arg(&src))?;
    let archive = Archive::for_init(&init)?;
    write_archive(&archive, &dir.join("floor.cpio"), Compression::None)
}

/// What a busybox-script baseline does: boot2container's job for one
/// image, written in busybox sh as a farm admin would write it.
pub struct ScriptJob<'a> {
    /// Names its files in the baselines' directory.
    pub name: &'a str,
    /// `host:port/repository:tag`, pulled over plain HTTP.
    pub image: &'a str,
    /// What it runs in the image with crun.
    pub command: &'a [&'a str],
    /// `None`: the image's first layer is unpacked into a tmpfs (the hello
    /// image has one). A disk (`/dev/vda`): it is formatted as b2c formats
    /// its cache, every layer is streamed into a directory of its own on
    /// it, all at once, and overlayfs stacks them, as b2c does.
    pub disk: Option<&'a str>,
    /// The network's (and the disk's) modules from Debian's kernel,
    /// insmodded first; false for our kernel, which has them built in.
    pub kernel_modules: bool,
}

/// The hello image's job, the baseline of the hello boot.
pub fn hello_job() -> ScriptJob<'static> {
    ScriptJob {
        name: "busybox",
        image: IMAGE,
        command: &["echo", HELLO],
        disk: None,
        kernel_modules: true,
    }
}

/// The hello image's job on our kernel: no module to load.
pub fn hello_job_own_kernel() -> ScriptJob<'static> {
    ScriptJob {
        name: OWN_BUSYBOX,
        kernel_modules: false,
        ..hello_job()
    }
}

const SCRIPT_HEAD: &str = r#"#!/bin/sh
# boot2container's job for one image, as a busybox script: the baseline.
export PATH=/bin:/usr/sbin:/usr/bin
fail() { echo "FAILED: $*"; echo "Execution is over, pipeline status: 1"; poweroff -f; }
# Where the time went, by the guest's clock, for the bench's report.
at() { read up idle < /proc/uptime; echo "script: $* at $up s"; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmp /tmp
# A second word marks a soft dependency, which may fail (crc32c-intel
# beside crc32c-generic).
while read m optional; do insmod "$m" || [ -n "$optional" ] || fail "insmod $m"; done < /etc/modules
at "modules loaded"
ip link set lo up
ip link set eth0 up || fail "no eth0"
udhcpc -i eth0 -f -q -n -t 30 -T 1 -s /etc/udhcpc.sh >/dev/null 2>&1 || fail "no DHCP lease"
at "network up"
repo=http://__REGISTRY__/v2/__REPO__
accept=application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json
manifest=$(wget -q -O - --header "Accept: $accept" "$repo/manifests/__TAG__") || fail manifest
# A multi-platform image (the test images are): this machine's manifest.
case "$manifest" in *'"manifests"'*)
    digest=$(echo "$manifest" | __PLATFORM_DIGEST__)
    [ -n "$digest" ] || fail "no amd64 image in $manifest"
    manifest=$(wget -q -O - --header "Accept: $accept" "$repo/manifests/$digest") || fail manifest ;;
esac
"#;

/// The digest of the amd64 manifest of an image index on stdin: one
/// descriptor a line, the first that names amd64.
const PLATFORM_DIGEST: &str = r#"tr -d '\n ' | sed 's/},{/}\n{/g' | grep '"architecture":"amd64"' | grep -o 'sha256:[0-9a-f]\{64\}' | head -n 1"#;

const SCRIPT_TMPFS: &str = r#"layer=$(echo "$manifest" | sed -n 's/.*"layers":\[{[^}]*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p')
[ -n "$layer" ] || fail "no layer in $manifest"
mkdir -p /tmp/c/rootfs
wget -q -O - "$repo/blobs/$layer" | tar -xzf - -C /tmp/c/rootfs || fail layer
at "layer unpacked"
"#;

/// The layer digests of a manifest on stdin, bottom first: whatever
/// follows `"layers"` (the config's digest comes before it in the
/// registry's compact JSON, and in a pretty-printed one).
const LAYER_DIGESTS: &str =
    r#"tr -d '\n' | sed 's/.*"layers"[^[]*\[//' | grep -o 'sha256:[0-9a-f]\{64\}'"#;

const SCRIPT_DISK: &str = r#"mkdir -p /cache
# The full path: this busybox runs its own applets first, and its
# mke2fs is not e2fsprogs'.
/usr/sbin/mke2fs __MKE2FS_ARGS__ __DISK__ || fail "mke2fs __DISK__"
mount -t ext4 -o noatime __DISK__ /cache || fail "mount __DISK__"
at "disk formatted and mounted"
layers=$(echo "$manifest" | __LAYER_DIGESTS__)
[ -n "$layers" ] || fail "no layers in $manifest"
# Every layer at once, each streamed from the registry into a directory
# of its own; overlayfs stacks them (the top layer first in lowerdir).
n=0; pids=; lower=
for layer in $layers; do
    mkdir -p /cache/layers/$n
    wget -q -O - "$repo/blobs/$layer" | tar -xzf - -C /cache/layers/$n &
    pids="$pids $!"
    lower="/cache/layers/$n${lower:+:$lower}"
    n=$((n + 1))
done
for pid in $pids; do wait $pid || fail "a layer"; done
at "$n layers unpacked"
mkdir -p /cache/upper /cache/work /tmp/c/rootfs
mount -t overlay overlay -o "lowerdir=$lower,upperdir=/cache/upper,workdir=/cache/work" /tmp/c/rootfs || fail overlay
"#;

const SCRIPT_RUN: &str = r#"cd /tmp/c && crun spec || fail "crun spec"
sed -i -e 's/"terminal": true/"terminal": false/'__READONLY__ -e 's/^\(\s*\)"sh"$/\1__ARGS__/' config.json
crun run --no-pivot hello
status=$?
at "container exited"
echo "Execution is over, pipeline status: $status"
poweroff -f
"#;

/// The mke2fs arguments b2c formats its cache with
/// (crates/storage/src/format.rs), so that both sides write the same
/// filesystem.
const MKE2FS_ARGS: &str = "-t ext4 -O encrypt -L B2C_CACHE -F -q";

/// The command as the JSON array items of crun's `args`, escaped for a
/// sed replacement inside single quotes.
fn crun_args(command: &[&str]) -> String {
    command
        .iter()
        .map(|w| {
            let json = w.replace('\\', "\\\\").replace('"', "\\\"");
            let sed = json
                .replace('\\', "\\\\")
                .replace('/', "\\/")
                .replace('&', "\\&");
            format!("\"{}\"", sed.replace('\'', r"'\''"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The init script of a busybox baseline.
pub fn busybox_script(job: &ScriptJob) -> String {
    let (registry, rest) = job.image.split_once('/').expect("host/repo:tag");
    let (repo, tag) = rest.rsplit_once(':').expect("repo:tag");
    let pull = match job.disk {
        None => SCRIPT_TMPFS.to_string(),
        Some(disk) => SCRIPT_DISK
            .replace("__MKE2FS_ARGS__", MKE2FS_ARGS)
            .replace("__DISK__", disk)
            .replace("__LAYER_DIGESTS__", LAYER_DIGESTS),
    };
    // The overlay has an upper layer, as b2c's containers do: the root
    // is writable, as in b2c.
    let readonly = match job.disk {
        None => "",
        Some(_) => r#" -e 's/"readonly": true/"readonly": false/'"#,
    };
    let run = SCRIPT_RUN
        .replace("__READONLY__", readonly)
        .replace("__ARGS__", &crun_args(job.command));
    format!("{SCRIPT_HEAD}{pull}{run}")
        .replace("__PLATFORM_DIGEST__", PLATFORM_DIGEST)
        .replace("__REGISTRY__", registry)
        .replace("__REPO__", repo)
        .replace("__TAG__", tag)
}

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
[ -n "$router" ] && ip route add default via "$router"
exit 0
"#;

const APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "ip", "udhcpc", "wget", "sed", "tar", "mkdir", "cat", "poweroff",
    "tr", "grep", "head",
];

/// A busybox-script baseline: busybox, the initramfs's static crun (the
/// same runtime as b2c's, so that only the init differs), the network
/// modules, with a disk also mke2fs and the ext4, virtio-blk and overlay
/// modules (none for our kernel); compressed as b2c's is.
pub fn busybox_initramfs(dir: &Path, job: &ScriptJob) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let init = dir.join(format!("{}-init", job.name));
    let udhcpc = dir.join("udhcpc.sh");
    for (path, text) in [
        (&init, busybox_script(job)),
        (&udhcpc, UDHCPC_SCRIPT.to_string()),
    ] {
        std::fs::write(path, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut archive = Archive::for_init(&init)?;
    archive.add_file("etc/udhcpc.sh", &udhcpc)?;
    for d in ["proc", "sys", "tmp", "run"] {
        archive.add(d, Node::Dir { mode: 0o755 });
    }
    archive.add_file("bin/busybox", Path::new("/bin/busybox"))?;
    for applet in APPLETS {
        archive.add(
            &format!("bin/{applet}"),
            Node::Symlink {
                target: "busybox".into(),
            },
        );
    }
    archive.add_file("usr/bin/crun", &crun::binary(Arch::X86_64)?)?;
    archive.add(
        "bin/crun",
        Node::Symlink {
            target: "/usr/bin/crun".into(),
        },
    );
    let mut wanted = vec!["virtio_pci".to_string(), "virtio_net".into()];
    if job.disk.is_some() {
        initramfs::add_binary(&mut archive, "/usr/sbin/mke2fs")?;
        // What b2c loads for a cache on a virtio disk.
        wanted.extend(["virtio_blk".into(), "fs-ext4".into(), "overlay".into()]);
    }
    let mut list = String::new();
    if job.kernel_modules {
        let kernel = kernel::fetch(Arch::X86_64, false)?;
        let index = b2c_system::modules::ModuleIndex::load(&kernel.modules)?;
        for step in index.plan(&wanted)? {
            let name = step
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            archive.add_file(&format!("lib/modules/{name}"), &step.path)?;
            list.push_str(&format!(
                "/lib/modules/{name}{}\n",
                if step.optional { " optional" } else { "" }
            ));
        }
    }
    let modules = dir.join(format!("{}-modules", job.name));
    std::fs::write(&modules, list)?;
    archive.add_file("etc/modules", &modules)?;
    write_archive(
        &archive,
        &dir.join(format!("{}.cpio.zst", job.name)),
        Compression::Zstd,
    )
}

fn write_archive(archive: &Archive, out: &Path, compression: Compression) -> Result<PathBuf> {
    let cpio = out.with_extension("raw");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&cpio)?);
    archive.write(&mut file)?;
    std::io::Write::flush(&mut file)?;
    drop(file);
    if compression == Compression::None {
        std::fs::rename(&cpio, out)?;
    } else {
        initramfs::compress(&cpio, compression, out)?;
        std::fs::remove_file(&cpio)?;
    }
    Ok(out.to_path_buf())
}

/// What a boot of each variant appends to `console=ttyS0 panic=-1`
/// and [`qemu_tests::TCG_KERNEL_ARGS`].
pub fn b2c_append() -> String {
    format!(r#"b2c.run="--tls-verify=false docker://{IMAGE} echo {HELLO}""#)
}

/// The uptime a console line starts with: `[    1.500000] …` (the
/// kernel's) or `[    1.938]: …` (b2c's).
fn line_stamp(line: &str) -> Option<f64> {
    line.strip_prefix('[')?
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The stamp of the first line of `console` containing `marker`.
fn stamp_of(console: &str, marker: &str) -> Option<f64> {
    line_stamp(console.lines().find(|l| l.contains(marker))?)
}

/// From the kernel's `Run /init as init process` to its `reboot: Power
/// down`, by the kernel's own stamps.
pub(super) fn userland_seconds(console: &str) -> Option<f64> {
    Some(stamp_of(console, "reboot: Power down")? - stamp_of(console, "Run /init as init process")?)
}

/// The links of the hello boot's chain, from `/init` to the power-off,
/// which the busybox script's `at` lines and b2c's stamps both mark.
pub const PHASES: [&str; 5] = [
    "`/init` → drivers loaded",
    "→ network up (DHCP)",
    "→ image pulled",
    "→ container exited",
    "→ power-off",
];

/// How long each of [`PHASES`] took in one boot, by the guest's clock;
/// NaN where a mark is missing.
pub(super) fn phase_seconds(console: &str) -> [f64; 5] {
    // The script's lines: `script: network up at 3.12 s`.
    let script = |what: &str| {
        console.lines().find_map(|l| {
            let (done, at) = l.split_once("script: ")?.1.split_once(" at ")?;
            done.ends_with(what)
                .then(|| at.trim_end_matches(" s").trim().parse().ok())?
        })
    };
    let marks: [Option<f64>; 4] = if console.contains("script: ") {
        [
            "modules loaded",
            "network up",
            "unpacked",
            "container exited",
        ]
        .map(script)
    } else {
        // b2c lists the block devices once the drivers are loaded.
        [
            "]: block devices: ",
            "]: network: ",
            "]: pulled ",
            " exited with status ",
        ]
        .map(|m| stamp_of(console, m))
    };
    let all = [stamp_of(console, "Run /init as init process")]
        .into_iter()
        .chain(marks)
        .chain([stamp_of(console, "reboot: Power down")])
        .collect::<Vec<_>>();
    let mut out = [f64::NAN; 5];
    for (i, pair) in all.windows(2).enumerate() {
        if let [Some(from), Some(to)] = pair {
            out[i] = to - from;
        }
    }
    out
}

/// The b2c lines of a console: `[   1.234]: …` (the kernel's own stamps
/// have six decimals).
pub(super) fn timeline(console: &str) -> Vec<String> {
    console
        .lines()
        .filter(|l| {
            l.strip_prefix('[')
                .and_then(|rest| rest.split_once("]: "))
                .and_then(|(stamp, _)| stamp.trim_start().split_once('.'))
                .is_some_and(|(secs, frac)| {
                    frac.len() == 3
                        && [secs, frac]
                            .iter()
                            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .map(String::from)
        .collect()
}

pub struct Candidate {
    pub key: String,
    pub label: String,
    pub initramfs: PathBuf,
    pub append: String,
    /// Our kernel (image, release) instead of Debian's.
    pub kernel: Option<(PathBuf, String)>,
}

pub fn bench(candidates: &[Candidate], runs: usize) -> Result<BootResults> {
    println!("bench: starting the test network (dnsmasq, chronyd, registry) ...");
    let net = TestNet::start()?;
    let kernel = qemu_tests::default_kernel();
    let kernel_release = kernel::existing(Arch::X86_64)
        .map(|k| k.release)
        .unwrap_or_default();
    let mut variants: Vec<Variant> = candidates
        .iter()
        .map(|c| Variant {
            key: c.key.clone(),
            label: c.label.clone(),
            kernel: c
                .kernel
                .as_ref()
                .map_or(kernel_release.clone(), |(_, r)| r.clone()),
            compressed_bytes: std::fs::metadata(&c.initramfs).map_or(0, |m| m.len()),
            initramfs: c.initramfs.clone(),
            seconds: Vec::new(),
            userland: Vec::new(),
            phases: Vec::new(),
            timeline: Vec::new(),
            console: String::new(),
        })
        .collect();
    let mut consoles: Vec<Vec<(f64, String)>> = vec![Vec::new(); candidates.len()];
    for round in 0..runs {
        for (i, c) in candidates.iter().enumerate() {
            let mut opts = BootOptions::new(&format!("bench-{}-{round}", c.key), &c.append);
            opts.initramfs = c.initramfs.clone();
            opts.kernel = c
                .kernel
                .as_ref()
                .map_or(kernel.clone(), |(image, _)| image.clone());
            opts.timeout = Duration::from_secs(120);
            let boot = net.boot(&opts)?;
            let at = boot.status_at.ok_or_else(|| {
                format!(
                    "{}: no status line; console: {}",
                    c.key,
                    boot.log_path.display()
                )
            })?;
            if boot.status() != Some(0)
                || (!c.key.starts_with("floor") && !boot.console.contains(&format!("\n{HELLO}")))
            {
                return Err(format!(
                    "{}: the boot did not run the hello container: see {}",
                    c.key,
                    boot.log_path.display()
                )
                .into());
            }
            let secs = at.as_secs_f64();
            println!(
                "bench: boot {}/{runs} {:<12} {secs:6.2} s to the status line",
                round + 1,
                c.key
            );
            variants[i].seconds.push(secs);
            variants[i]
                .userland
                .push(userland_seconds(&boot.console).unwrap_or(f64::NAN));
            variants[i].phases.push(phase_seconds(&boot.console));
            consoles[i].push((secs, boot.console.clone()));
        }
    }
    for (v, runs) in variants.iter_mut().zip(consoles.iter_mut()) {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, console)) = runs.get(runs.len() / 2) {
            v.timeline = timeline(console);
            v.console = console.clone();
        }
    }
    let qemu = crate::run_output("qemu-system-x86_64", &["--version"])
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(BootResults {
        kernel: kernel_release,
        qemu,
        append: format!(
            "console=ttyS0 panic=-1 {} (+ the variant's own options)",
            qemu_tests::TCG_KERNEL_ARGS
        ),
        variants,
        charts: Vec::new(),
    })
}
