//! Overlay assembly of unpacked layers, with the real overlayfs (root).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use b2c_oci::{mount_overlay, unpack_layer};
use common::Tb;

fn overlay_available() -> bool {
    let has = || {
        fs::read_to_string("/proc/filesystems")
            .map(|s| s.lines().any(|l| l.ends_with("\toverlay")))
            .unwrap_or(false)
    };
    if !has() {
        let _ = std::process::Command::new("modprobe")
            .arg("overlay")
            .status();
    }
    if !has() {
        eprintln!(
            "SKIPPED: this kernel has no overlayfs (not in /proc/filesystems, modprobe failed)"
        );
        return false;
    }
    true
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH) {
            eprintln!("unmounting {}: {e}", self.0.display());
        }
    }
}

fn layer(dir: &Path, tar: &[u8]) -> PathBuf {
    unpack_layer(tar, dir).unwrap();
    dir.to_path_buf()
}

fn mount(tmp: &Path, layers: &[PathBuf]) -> Mounted {
    let target = tmp.join("rootfs");
    mount_overlay(layers, &tmp.join("upper"), &tmp.join("work"), &target).unwrap();
    Mounted(target)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn merged_view_hides_whiteouts_and_opaque_dirs() {
    if !overlay_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bottom = layer(
        &t.join("l1"),
        &Tb::new()
            .file("etc/passwd", b"root")
            .file("etc/group", b"root")
            .file("var/lib/a", b"")
            .file("var/lib/b", b"")
            .file("tmp/x", b"")
            .finish(),
    );
    let top = layer(
        &t.join("l2"),
        &Tb::new()
            .file("etc/.wh.passwd", b"")
            .file("var/lib/.wh..wh..opq", b"")
            .file("var/lib/c", b"")
            .file("tmp/y", b"")
            .finish(),
    );
    let m = mount(t, &[bottom, top]);
    let root = &m.0;
    assert_eq!(names(&root.join("etc")), vec!["group"]);
    assert_eq!(names(&root.join("var/lib")), vec!["c"]);
    assert_eq!(names(&root.join("tmp")), vec!["x", "y"]);
    // Writes land in the upper directory, the layers stay untouched.
    fs::write(root.join("etc/group"), b"changed").unwrap();
    assert_eq!(fs::read(t.join("upper/etc/group")).unwrap(), b"changed");
    assert_eq!(fs::read(t.join("l1/etc/group")).unwrap(), b"root");
}

#[test]
fn a_single_layer_works() {
    if !overlay_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let only = layer(
        &tmp.path().join("l"),
        &Tb::new().file("hello", b"hi").finish(),
    );
    let m = mount(tmp.path(), &[only]);
    assert_eq!(fs::read(m.0.join("hello")).unwrap(), b"hi");
}

#[test]
fn many_layers_with_long_paths_fit() {
    if !overlay_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 120 layers of ~100-byte paths: ~12 KB of plain paths, far over the
    // one-page limit for mount options.
    let deep = tmp.path().join("a-rather-long-store-directory-name/layers");
    let layers: Vec<PathBuf> = (0..120)
        .map(|i| {
            layer(
                &deep.join(format!("sha256-{i:064}")),
                &Tb::new()
                    .file(&format!("f{i}"), b"")
                    .file("which", format!("{i}").as_bytes())
                    .finish(),
            )
        })
        .collect();
    let m = mount(tmp.path(), &layers);
    assert_eq!(names(&m.0).len(), 121);
    assert_eq!(fs::read_to_string(m.0.join("which")).unwrap(), "119");
}

#[test]
fn a_repeated_layer_is_fine() {
    if !overlay_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = layer(
        &t.join("a"),
        &Tb::new().file("f", b"a").file("only-a", b"").finish(),
    );
    let b = layer(
        &t.join("b"),
        &Tb::new().file("f", b"b").file("only-b", b"").finish(),
    );
    let m = mount(t, &[a.clone(), b, a]);
    assert_eq!(fs::read(m.0.join("f")).unwrap(), b"a");
    assert_eq!(names(&m.0), vec!["f", "only-a", "only-b"]);
}

#[test]
fn no_layers_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    assert!(matches!(
        mount_overlay(&[], &t.join("u"), &t.join("w"), &t.join("r")),
        Err(b2c_oci::OverlayError::NoLayers)
    ));
}
