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
//! When our own kernel is built (`cargo xtask kernel`), the floor and b2c
//! (with an initramfs without modules) also boot it, in the same rounds:
//! Debian's kernel with modules against ours with every driver built in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_tests::{Arch, BootOptions, TestNet};

use super::measure::{median, paired_median};
use crate::cpio::{Archive, Node};
use crate::initramfs::{self, Compression};
use crate::{kernel, run, Result};

/// The keys of the variants that boot our kernel.
pub const OWN_FLOOR: &str = "floor-own-kernel";
pub const OWN_B2C: &str = "b2c-own-kernel";

/// The image and the command every variant runs.
const IMAGE: &str = "10.99.0.1:5000/b2c/busybox:latest";
const HELLO: &str = "hello from the benchmark";

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
    /// The b2c console lines (uptime-stamped) of the median boot.
    pub timeline: Vec<String>,
}

impl Variant {
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }

    pub fn userland_median(&self) -> f64 {
        median(&self.userland)
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
}

impl BootResults {
    pub fn variant(&self, key: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.key == key)
    }
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

const BUSYBOX_INIT: &str = r#"#!/bin/sh
# boot2container's job for one image, as a busybox script: the baseline.
export PATH=/bin
fail() { echo "FAILED: $*"; echo "Execution is over, pipeline status: 1"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmp /tmp
for m in $(cat /etc/modules); do insmod "$m" || fail "insmod $m"; done
ip link set lo up
ip link set eth0 up || fail "no eth0"
udhcpc -i eth0 -f -q -n -t 30 -T 1 -s /etc/udhcpc.sh >/dev/null 2>&1 || fail "no DHCP lease"
repo=http://__REGISTRY__/v2/__REPO__
accept=application/vnd.oci.image.manifest.v1+json
manifest=$(wget -q -O - --header "Accept: $accept, application/vnd.oci.image.index.v1+json" "$repo/manifests/__TAG__") || fail manifest
# The test images are multi-arch indexes (compact JSON, sorted keys): amd64's manifest.
amd64=$(echo "$manifest" | sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)","mediaType":"[^"]*","platform":{"architecture":"amd64".*/\1/p')
if [ -n "$amd64" ]; then
  manifest=$(wget -q -O - --header "Accept: $accept" "$repo/manifests/$amd64") || fail "manifest $amd64"
fi
layer=$(echo "$manifest" | sed -n 's/.*"layers":\[{[^}]*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p')
[ -n "$layer" ] || fail "no layer in $manifest"
mkdir -p /tmp/c/rootfs
wget -q -O - "$repo/blobs/$layer" | tar -xzf - -C /tmp/c/rootfs || fail layer
cd /tmp/c && crun spec || fail "crun spec"
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/^\(\s*\)"sh"$/\1"echo", "__HELLO__"/' config.json
crun run --no-pivot hello
echo "Execution is over, pipeline status: $?"
poweroff -f
"#;

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
[ -n "$router" ] && ip route add default via "$router"
exit 0
"#;

const APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "ip", "udhcpc", "wget", "sed", "tar", "mkdir", "cat", "poweroff",
];

/// The busybox-script baseline: busybox, crun with its libraries, the
/// network modules, compressed as b2c's is.
pub fn busybox_initramfs(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let kernel = kernel::fetch(Arch::X86_64, false)?;
    let (registry, rest) = IMAGE.split_once('/').expect("host/repo:tag");
    let (repo, tag) = rest.rsplit_once(':').expect("repo:tag");
    let script = BUSYBOX_INIT
        .replace("__REGISTRY__", registry)
        .replace("__REPO__", repo)
        .replace("__TAG__", tag)
        .replace("__HELLO__", HELLO);
    for (name, text) in [("init", script.as_str()), ("udhcpc.sh", UDHCPC_SCRIPT)] {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut archive = Archive::for_init(&dir.join("init"))?;
    archive.add_file("etc/udhcpc.sh", &dir.join("udhcpc.sh"))?;
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
    initramfs::add_binary(&mut archive, "/usr/bin/crun")?;
    archive.add(
        "bin/crun",
        Node::Symlink {
            target: "/usr/bin/crun".into(),
        },
    );
    let index = b2c_system::modules::ModuleIndex::load(&kernel.modules)?;
    let files = index.load_order(&["virtio_pci".into(), "virtio_net".into()])?;
    let mut list = String::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        archive.add_file(&format!("lib/modules/{name}"), file)?;
        list.push_str(&format!("/lib/modules/{name}\n"));
    }
    std::fs::write(dir.join("modules"), list)?;
    archive.add_file("etc/modules", &dir.join("modules"))?;
    write_archive(&archive, &dir.join("busybox.cpio.zst"), Compression::Zstd)
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

/// What a boot of each variant appends to `console=ttyS0 panic=-1`.
pub fn b2c_append() -> String {
    format!(r#"b2c.run="--tls-verify=false docker://{IMAGE} echo {HELLO}""#)
}

/// From the kernel's `Run /init as init process` to its `reboot: Power
/// down`, by the kernel's own stamps.
fn userland_seconds(console: &str) -> Option<f64> {
    let stamp = |marker: &str| -> Option<f64> {
        let line = console.lines().find(|l| l.contains(marker))?;
        line.strip_prefix('[')?
            .split(']')
            .next()?
            .trim()
            .parse()
            .ok()
    };
    Some(stamp("reboot: Power down")? - stamp("Run /init as init process")?)
}

/// The b2c lines of a console: `[   1.234]: …` (the kernel's own stamps
/// have six decimals).
fn timeline(console: &str) -> Vec<String> {
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
            timeline: Vec::new(),
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
            consoles[i].push((secs, boot.console.clone()));
        }
    }
    for (v, runs) in variants.iter_mut().zip(consoles.iter_mut()) {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, console)) = runs.get(runs.len() / 2) {
            v.timeline = timeline(console);
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
        append: "console=ttyS0 panic=-1 (+ the variant's own options)".into(),
        variants,
    })
}
