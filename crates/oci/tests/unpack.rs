//! Layer unpacking: overlayfs format, metadata, replacement rules, hostile
//! archives, and the verify-then-commit store. Runs as root (chown, mknod,
//! trusted.* xattrs).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use b2c_oci::{unpack_layer, Digest, LayerError, LayerStore, UnpackError};
use common::{gzip, sha256, Codec, Tb, CODECS, MTIME};
use tar::EntryType;

fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<b2c_oci::UnpackStats, UnpackError>) {
    let dir = tempfile::tempdir().unwrap();
    let r = unpack_layer(tar, dir.path());
    (dir, r)
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

fn is_whiteout(path: &Path) -> bool {
    let m = fs::symlink_metadata(path).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

#[test]
fn files_dirs_links_nodes_and_metadata() {
    let tar = Tb::new()
        .dir("./")
        .dir("etc/")
        .file_mode("etc/hostname", b"box\n", 0o640, 1234, 5678)
        .file_mode("bin/su", b"#!", 0o4755, 0, 0)
        .symlink("bin/sh", "/bin/busybox")
        .file("bin/busybox", b"ELF")
        .hardlink("bin/ls", "bin/busybox")
        .hardlink("bin/sh2", "/bin/sh")
        .node("dev/null", EntryType::Char, 1, 3)
        .node("dev/sda", EntryType::Block, 8, 0)
        .node("run/fifo", EntryType::Fifo, 0, 0)
        .pax(&[
            ("SCHILY.xattr.user.test", b"v1"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("mtime", b"1700000000.5"),
        ])
        .file("usr/bin/ping", b"ping")
        .finish();
    for codec in CODECS {
        let (d, r) = unpack(&codec.compress(&tar));
        let stats = r.unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!(stats.bytes, 4 + 2 + 3 + 4);
        check_files_dirs_links_nodes_and_metadata(d.path());
    }
}

fn check_files_dirs_links_nodes_and_metadata(p: &Path) {
    let m = fs::metadata(p.join("etc/hostname")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o640));
    assert_eq!(m.mtime(), MTIME as i64);
    assert_eq!(fs::read(p.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(
        fs::metadata(p.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    // Implicit parents exist; directory mtimes survive their children.
    assert!(p.join("usr/bin").is_dir());
    assert_eq!(fs::metadata(p.join("etc")).unwrap().mtime(), MTIME as i64);

    assert_eq!(
        fs::read_link(p.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    let a = fs::metadata(p.join("bin/busybox")).unwrap();
    let b = fs::metadata(p.join("bin/ls")).unwrap();
    assert_eq!(a.ino(), b.ino());
    // A hard link to a symlink links the symlink itself, not its target.
    let sh2 = fs::symlink_metadata(p.join("bin/sh2")).unwrap();
    assert!(sh2.file_type().is_symlink());

    let null = fs::symlink_metadata(p.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o640);
    assert!(fs::symlink_metadata(p.join("dev/sda"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(fs::symlink_metadata(p.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());

    let ping = p.join("usr/bin/ping");
    assert_eq!(xattr(&ping, "user.test").as_deref(), Some(&b"v1"[..]));
    assert_eq!(xattr(&ping, "trusted.overlay.redirect"), None);
    let m = fs::metadata(&ping).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 500_000_000));
}

#[test]
fn whiteouts_become_overlayfs_whiteouts() {
    let tar = Tb::new()
        .file("etc/.wh.passwd", b"")
        .file(".wh.tmp", b"")
        .dir("var/")
        .file("var/.wh..wh..opq", b"")
        .file("var/new", b"x")
        .file("opt/deep/.wh..wh..opq", b"")
        .file(".wh..wh.plnk", b"")
        // A whiteout does not hide a member of its own layer.
        .file("keep", b"k")
        .file(".wh.keep", b"")
        .finish();
    let mut blobs = vec![tar.clone()];
    blobs.extend(CODECS.map(|c| c.compress(&tar)));
    for blob in blobs {
        let (d, r) = unpack(&blob);
        assert_eq!(r.unwrap().whiteouts, 5);
        check_whiteouts(d.path());
    }
}

fn check_whiteouts(p: &Path) {
    assert!(is_whiteout(&p.join("etc/passwd")));
    assert!(is_whiteout(&p.join("tmp")));
    assert!(!p.join("etc/.wh.passwd").exists());
    assert_eq!(
        xattr(&p.join("var"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!p.join("var/.wh..wh..opq").exists());
    assert_eq!(fs::read(p.join("var/new")).unwrap(), b"x");
    assert_eq!(
        xattr(&p.join("opt/deep"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!p.join(".wh..wh.plnk").exists() && !p.join("plnk").exists());
    assert_eq!(fs::read(p.join("keep")).unwrap(), b"k");
}

#[test]
fn later_members_replace_earlier_ones() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::write(&target, b"outside").unwrap();
    let tar = Tb::new()
        // file → dir
        .file("a", b"file")
        .dir("a/")
        .file("a/inner", b"1")
        // dir with content → file
        .dir("b/")
        .file("b/x", b"x")
        .file("b", b"now a file")
        // symlink to outside → file: the file must not be written through
        .symlink("c", target.to_str().unwrap())
        .file("c", b"inside")
        // symlink → dir
        .symlink("d", "a")
        .dir("d/")
        // file → symlink, file → file
        .file("e", b"1")
        .symlink("e", "a")
        .file("f", b"old")
        .file("f", b"new")
        .finish();
    let (d, r) = unpack(&tar);
    r.unwrap();
    let p = d.path();
    assert!(p.join("a").is_dir());
    assert_eq!(fs::read(p.join("a/inner")).unwrap(), b"1");
    assert_eq!(fs::read(p.join("b")).unwrap(), b"now a file");
    assert!(!fs::symlink_metadata(p.join("c"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(p.join("c")).unwrap(), b"inside");
    assert_eq!(fs::read(&target).unwrap(), b"outside");
    assert!(fs::symlink_metadata(p.join("d")).unwrap().is_dir());
    assert!(fs::symlink_metadata(p.join("e"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(p.join("f")).unwrap(), b"new");
}

/// A directory outside the layer with one file in it, and a check that
/// neither changed.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret"), b"secret").unwrap();
        Outside { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn s(&self) -> String {
        self.path().to_str().unwrap().to_string()
    }

    fn assert_untouched(&self) {
        let names: Vec<_> = fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec!["secret"],
            "something was written outside the layer"
        );
        let secret = self.path().join("secret");
        let m = fs::symlink_metadata(&secret).unwrap();
        assert!(m.is_file());
        assert_eq!(m.nlink(), 1, "a hard link to the outside was made");
        assert_eq!(fs::read(&secret).unwrap(), b"secret");
        assert_eq!(xattr(self.path(), "trusted.overlay.opaque"), None);
    }
}

fn relative_to_root(dest: &Path, abs: &Path) -> PathBuf {
    dest.join(abs.strip_prefix("/").unwrap())
}

#[test]
fn hostile_dotdot_is_refused() {
    let o = Outside::new();
    // dest is a sibling of the outside directory: ../NAME/secret reaches it.
    let parent = o.path().parent().unwrap();
    let dest = tempfile::tempdir_in(parent).unwrap();
    let name = o.path().file_name().unwrap().to_str().unwrap();
    for evil in [
        format!("../{name}/secret"),
        format!("a/../../{name}/new"),
        format!("../{name}/.wh.secret"),
        format!("./../{name}/.wh..wh..opq"),
    ] {
        let tar = Tb::new().file(&evil, b"pwned").finish();
        let r = unpack_layer(&tar[..], dest.path());
        assert!(
            matches!(r, Err(UnpackError::Escape { .. })),
            "{evil}: {r:?}"
        );
        o.assert_untouched();
    }
    let tar = Tb::new().file("x/.wh...", b"").finish();
    assert!(matches!(
        unpack_layer(&tar[..], dest.path()),
        Err(UnpackError::Invalid { .. })
    ));
}

#[test]
fn hostile_absolute_paths_are_confined() {
    let o = Outside::new();
    let tar = Tb::new()
        .file(&format!("{}/new", o.s()), b"pwned")
        .file(&format!("{}/secret", o.s()), b"pwned")
        .file(&format!("{}/.wh.secret", o.s()), b"")
        .finish();
    let (d, r) = unpack(&tar);
    r.unwrap();
    o.assert_untouched();
    let inside = relative_to_root(d.path(), o.path());
    assert_eq!(fs::read(inside.join("new")).unwrap(), b"pwned");
    assert_eq!(fs::read(inside.join("secret")).unwrap(), b"pwned");
}

#[test]
fn hostile_symlinked_parents_are_confined() {
    let o = Outside::new();
    // The symlink's target does not exist inside the layer: refused (as
    // Docker does), nothing written anywhere.
    let tar = Tb::new()
        .symlink("evil", &o.s())
        .file("evil/new", b"pwned")
        .finish();
    let (_d, r) = unpack(&tar);
    assert!(matches!(r, Err(UnpackError::Fs { .. })), "{r:?}");
    o.assert_untouched();

    // It does exist inside: followed, inside.
    let tar = Tb::new()
        .dir(&format!("{}/", o.s()))
        .symlink("evil", &o.s())
        .file("evil/new", b"pwned")
        .file("evil/secret", b"pwned")
        .symlink("up", "../../../../../../../../..")
        .file(&format!("up{}/new2", o.s()), b"pwned")
        .symlink("evil2", &o.s())
        .file("evil2/.wh.gone", b"")
        .file("evil2/.wh..wh..opq", b"")
        .finish();
    let (d, r) = unpack(&tar);
    r.unwrap();
    o.assert_untouched();
    let inside = relative_to_root(d.path(), o.path());
    assert_eq!(fs::read(inside.join("new")).unwrap(), b"pwned");
    assert_eq!(fs::read(inside.join("secret")).unwrap(), b"pwned");
    assert_eq!(fs::read(inside.join("new2")).unwrap(), b"pwned");
    assert!(is_whiteout(&inside.join("gone")));
    assert_eq!(
        xattr(&inside, "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // The symlinks themselves are kept as they are: they are only
    // dangerous on the host, never inside the container.
    assert_eq!(fs::read_link(d.path().join("evil")).unwrap(), o.path());
}

#[test]
fn hostile_hard_links_are_refused() {
    let o = Outside::new();
    let parent = o.path().parent().unwrap();
    let name = o.path().file_name().unwrap().to_str().unwrap();
    let cases = [
        (
            Tb::new()
                .hardlink("h", &format!("../{name}/secret"))
                .finish(),
            true,
        ),
        (
            Tb::new()
                .hardlink("h", &format!("{}/secret", o.s()))
                .finish(),
            false,
        ),
        (
            Tb::new()
                .symlink("l", &o.s())
                .hardlink("h", "l/secret")
                .finish(),
            false,
        ),
        (
            Tb::new()
                .symlink("s", &format!("{}/secret", o.s()))
                .hardlink("h", "s")
                .file("h", b"rewrite")
                .finish(),
            false,
        ),
    ];
    for (i, (tar, escape)) in cases.iter().enumerate() {
        let dest = tempfile::tempdir_in(parent).unwrap();
        let r = unpack_layer(&tar[..], dest.path());
        if *escape {
            assert!(
                matches!(r, Err(UnpackError::Escape { .. })),
                "case {i}: {r:?}"
            );
        }
        // Otherwise: either an error (target not found inside) or a link
        // to something inside; never the outside file.
        o.assert_untouched();
    }
}

/// A layer of 2 MB, many of the decoder's and the unpacker's buffers,
/// comes out whole, also with 300 KB of junk after the compressed stream;
/// a cut one fails.
#[test]
fn a_large_layer_comes_out_whole() {
    let mut tb = Tb::new();
    let files: Vec<(String, Vec<u8>)> = (0..40u32)
        .map(|i| {
            let data = (0..50_000u32)
                .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 13) as u8)
                .collect();
            (format!("d/f{i}"), data)
        })
        .collect();
    for (path, data) in &files {
        tb.file(path, data);
    }
    let tar = tb.finish();
    for codec in CODECS {
        let mut blob = codec.compress(&tar);
        let (d, r) = unpack(&blob);
        assert_eq!(r.unwrap().entries, 40, "{codec:?}");
        for (path, data) in &files {
            assert!(
                fs::read(d.path().join(path)).unwrap() == *data,
                "{codec:?} {path}"
            );
        }
        let (_d, r) = unpack(&blob[..blob.len() * 3 / 4]);
        assert!(matches!(r, Err(UnpackError::Read(_))), "{codec:?}: {r:?}");
        blob.extend_from_slice(&[0xff; 300_000]);
        let (d, r) = unpack(&blob);
        assert_eq!(r.unwrap().entries, 40, "{codec:?}");
        assert!(fs::read(d.path().join("d/f39")).unwrap() == files[39].1);
    }
}

#[test]
fn truncated_and_garbage_archives_fail() {
    let tar = Tb::new().file("a", &[7u8; 4000]).finish();
    let gz = gzip(&tar);
    let (_d, r) = unpack(&gz[..gz.len() / 2]);
    assert!(matches!(r, Err(UnpackError::Read(_))), "{r:?}");
    let (_d, r) = unpack(&tar[..1000]);
    assert!(matches!(r, Err(UnpackError::Read(_))), "{r:?}");
    // Cut in the middle of the one frame, and inside zstd:chunked's last
    // data frame (what follows it, its table of contents, is not read).
    let z = Codec::Zstd(3).compress(&tar);
    let (_d, r) = unpack(&z[..z.len() / 2]);
    assert!(matches!(r, Err(UnpackError::Read(_))), "{r:?}");
    let z = Codec::ZstdChunked.compress(&tar);
    let toc = z
        .windows(4)
        .position(|w| w == [0x50, 0x2a, 0x4d, 0x18])
        .unwrap();
    let (_d, r) = unpack(&z[..toc - 5]);
    assert!(matches!(r, Err(UnpackError::Read(_))), "{r:?}");
    let (_d, r) = unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]);
    assert!(matches!(r, Err(UnpackError::Read(_))), "{r:?}");
    // A frame that asks for a window beyond 128 MiB is refused before any
    // of it is allocated: a registry cannot make a pull take 2 GiB.
    let mut e = ::zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    e.window_log(31).unwrap();
    e.long_distance_matching(true).unwrap();
    e.write_all(&tar).unwrap();
    let (_d, r) = unpack(&e.finish().unwrap());
    match r {
        Err(UnpackError::Read(e)) => assert!(e.to_string().contains("too much memory"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Padding after the compressed stream is tolerated (the digest guards
    // the blob, not the compressor's trailer).
    for mut padded in [gz.clone(), Codec::Zstd(3).compress(&tar)] {
        padded.extend_from_slice(&[0u8; 1024]);
        let (d, r) = unpack(&padded);
        r.unwrap();
        assert_eq!(fs::read(d.path().join("a")).unwrap().len(), 4000);
    }
    // An empty layer is a valid layer.
    let (_d, r) = unpack(&Tb::new().finish());
    assert_eq!(r.unwrap().entries, 0);
}

fn store_entries(store: &LayerStore) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn store_commits_only_verified_layers() {
    let tar = Tb::new()
        .file("etc/os-release", &[b'x'; 10_000])
        .file("bin/true", b"")
        .finish();
    for codec in CODECS {
        commits_only_verified_layers(&tar, codec);
    }
}

fn commits_only_verified_layers(tar: &[u8], codec: Codec) {
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("layers")).unwrap();
    let blob = codec.compress(tar);
    let digest: Digest = sha256(&blob).parse().unwrap();

    // One byte changed, anywhere: the decompressor may or may not notice, the digest
    // does, and nothing is committed.
    for pos in [blob.len() / 2, blob.len() - 1, 20] {
        let mut bad = blob.clone();
        bad[pos] ^= 0x55;
        let r = store.unpack_verified(&digest, Some(blob.len() as u64), &bad[..]);
        match r {
            Err(LayerError::DigestMismatch { expected, .. }) => assert_eq!(expected, digest),
            other => panic!("{codec:?}, byte {pos}: {other:?}"),
        }
        assert!(!store.contains(&digest));
        assert!(
            store_entries(&store).is_empty(),
            "{:?}",
            store_entries(&store)
        );
    }

    // A stream cut short: the digest tells, nothing is committed.
    let r = store.unpack_verified(&digest, Some(blob.len() as u64), &blob[..blob.len() - 7]);
    assert!(
        matches!(r, Err(LayerError::DigestMismatch { .. })),
        "{codec:?}: {r:?}"
    );
    assert!(store_entries(&store).is_empty());

    // More bytes than the descriptor announces: stopped, not committed.
    let r = store.unpack_verified(&digest, Some(blob.len() as u64 - 1), &blob[..]);
    assert!(matches!(r, Err(LayerError::TooLarge { .. })), "{r:?}");
    assert!(store_entries(&store).is_empty());

    let stats = store
        .unpack_verified(&digest, Some(blob.len() as u64), &blob[..])
        .unwrap();
    assert_eq!(stats.bytes, 10_000);
    assert!(store.contains(&digest));
    assert_eq!(store_entries(&store), vec![digest.file_name()]);
    let layer = store.layer_path(&digest);
    assert_eq!(
        fs::read(layer.join("etc/os-release")).unwrap().len(),
        10_000
    );
    assert_eq!(
        fs::metadata(&layer).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn store_removes_leftovers_of_an_interrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    // A store of this format, as an earlier boot left it.
    LayerStore::new(&root).unwrap();
    let layers = root.join("layers");
    fs::create_dir_all(layers.join(".tmp-sha256-0123-1-0/usr/bin")).unwrap();
    fs::write(layers.join(".tmp-sha256-0123-1-0/usr/bin/x"), b"partial").unwrap();
    std::os::unix::fs::symlink("/etc", layers.join(".tmp-sha256-0123-1-0/etc")).unwrap();
    fs::create_dir_all(layers.join("sha256-keep")).unwrap();
    // A blob and a record cut short by a power cut.
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    fs::write(root.join("blobs/sha256/.tmp-0123-1-1"), b"{\"sche").unwrap();
    fs::create_dir_all(root.join("images")).unwrap();
    fs::write(root.join("images/.tmp-4567-1-2"), b"{\"refer").unwrap();
    let store = LayerStore::new(&root).unwrap();
    assert_eq!(store_entries(&store), vec!["sha256-keep"]);
    for dir in ["blobs/sha256", "images"] {
        assert_eq!(fs::read_dir(root.join(dir)).unwrap().count(), 0, "{dir}");
    }
    assert!(Path::new("/etc/passwd").exists());
}
