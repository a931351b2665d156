//! The image store as a cache across boots, against the real distribution
//! registry on loopback: what is downloaded is read from the registry's
//! access log, not only from what b2c says about itself.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_oci::{
    parse_reference, pull, Digest, ImageSource, LayerStore, PullError, PullPolicy, RegistryOptions,
};
use common::registry::{Image, Layout, Registry};
use common::{init_logging, logged, sha256, warnings, Tb};

fn opts() -> RegistryOptions {
    common::quick_opts(2)
}

fn layer(name: &str, content: &[u8]) -> Vec<u8> {
    Tb::new()
        .file(&format!("etc/{name}"), content)
        .file("bin/x", name.as_bytes())
        .finish()
}

/// Builds an image of these layers in its own layout and pushes it to
/// `dest` (`host/repo:tag`).
fn push(dir: &Path, name: &str, layers: &[Vec<u8>], dest: &str) -> Image {
    let layout = Layout::new(&dir.join(format!("oci-{name}")));
    let img = layout.image("amd64", layers);
    layout.tag(&[("v1", layout.manifest_desc(&img))]);
    layout.push("v1", dest, &[]);
    img
}

fn config_digest(img: &Image) -> String {
    img.manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn manifest_digest(img: &Image) -> String {
    sha256(img.manifest.to_string().as_bytes())
}

fn digests(v: &[String]) -> Vec<Digest> {
    v.iter().map(|d| d.parse().unwrap()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Names starting with `.` anywhere in the store's directories.
fn temporaries(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["layers", "blobs/sha256", "images", "used"] {
        for e in fs::read_dir(root.join(dir)).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_images_are_not_downloaded_again() {
    init_logging();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let host = reg.host();
    let dest = format!("{host}/test/cached:v1");
    let base = layer("base", b"base\n");
    let top = layer("top", b"top\n");
    let v1 = push(tmp.path(), "v1", &[base.clone(), top.clone()], &dest);
    let r = parse_reference(&dest).unwrap();
    let root = tmp.path().join("store");

    let store = LayerStore::new(&root).unwrap();
    let first = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    assert_eq!(first.source, ImageSource::Registry);
    assert_eq!(
        (first.stats.layers_downloaded, first.stats.layers_reused),
        (2, 0)
    );
    assert_eq!(first.manifest_digest, manifest_digest(&v1));
    assert_eq!(first.layer_digests, digests(&v1.layer_digests));
    let mut expected = v1.layer_digests.clone();
    expected.push(config_digest(&v1));
    assert_eq!(sorted(reg.blob_downloads()), sorted(expected));

    // The next boot: a new store object on the same disk. The registry is
    // asked for the manifest, and nothing else.
    drop(store);
    let store = LayerStore::new(&root).unwrap();
    let stored = store.stored_image(&r).expect("stored after the first pull");
    assert_eq!(stored.manifest_digest.to_string(), first.manifest_digest);
    assert_eq!(stored.layers, first.layer_digests);
    let manifests_before = reg
        .requests()
        .iter()
        .filter(|(_, p, _)| p.contains("/manifests/"))
        .count();
    let second = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    assert_eq!(reg.blob_downloads().len(), 3, "{:?}", reg.requests());
    let manifests_after = reg
        .requests()
        .iter()
        .filter(|(_, p, _)| p.contains("/manifests/"))
        .count();
    assert_eq!(manifests_after, manifests_before + 1);
    assert_eq!(second.source, ImageSource::Registry);
    assert_eq!(
        (second.stats.layers_downloaded, second.stats.layers_reused),
        (0, 2)
    );
    assert_eq!(second.layers, first.layers);
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert_eq!(
        second.config.config().as_ref().unwrap().cmd().as_deref(),
        Some(&["/bin/hello".to_string()][..])
    );
    assert_eq!(
        logged()
            .iter()
            .filter(|l| l.contains(&dest)
                && l.contains("up to date: 2 layers reused from the store, none downloaded"))
            .count(),
        1
    );

    // The tag moves to an image with one more layer: only that layer (and
    // the new config, which lists it) is downloaded.
    let extra = layer("extra", b"extra\n");
    let v2 = push(tmp.path(), "v2", &[base, top, extra], &dest);
    assert_eq!(v2.layer_digests[..2], v1.layer_digests[..]);
    let before = reg.blob_downloads().len();
    let third = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    let new_downloads = reg.blob_downloads()[before..].to_vec();
    assert_eq!(
        sorted(new_downloads),
        sorted(vec![v2.layer_digests[2].clone(), config_digest(&v2)])
    );
    assert_eq!(
        (third.stats.layers_downloaded, third.stats.layers_reused),
        (1, 2)
    );
    assert_eq!(third.manifest_digest, manifest_digest(&v2));
    assert_eq!(
        fs::read_to_string(third.layers[2].join("etc/extra")).unwrap(),
        "extra\n"
    );
    assert_eq!(third.layers[..2], first.layers[..]);
    let said: Vec<_> = logged()
        .into_iter()
        .filter(|l| l.starts_with(&format!("pulled {dest}")))
        .collect();
    assert!(
        said.last()
            .unwrap()
            .contains("3 layers, 1 downloaded, 2 reused from the store"),
        "{said:?}"
    );
    // The record follows the tag.
    let stored = store.stored_image(&r).unwrap();
    assert_eq!(stored.manifest_digest.to_string(), manifest_digest(&v2));
    assert_eq!(stored.layers.len(), 3);
    assert!(temporaries(&root).is_empty(), "{:?}", temporaries(&root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_an_unreachable_registry() {
    init_logging();
    let mut reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let host = reg.host();
    let dest = format!("{host}/test/offline:v1");
    let img = push(
        tmp.path(),
        "offline",
        &[layer("a", b"a\n"), layer("b", b"b\n")],
        &dest,
    );
    push(
        tmp.path(),
        "other",
        &[layer("o", b"o\n")],
        &format!("{host}/test/other:v1"),
    );
    let r = parse_reference(&dest).unwrap();
    let other = parse_reference(&format!("{host}/test/other:v1")).unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();

    // Never, with nothing stored: an error naming the option, and no
    // request at all.
    let err = pull(&r, &opts(), &store, PullPolicy::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotStored { .. }), "{err}");
    assert!(
        err.to_string().contains("--pull=never") && err.to_string().contains(&dest),
        "{err}"
    );
    assert!(reg.requests().is_empty(), "{:?}", reg.requests());

    // Missing, with nothing stored: pulled.
    let pulled = pull(&r, &opts(), &store, PullPolicy::Missing)
        .await
        .unwrap();
    assert_eq!(pulled.source, ImageSource::Registry);
    assert_eq!(pulled.stats.layers_downloaded, 2);
    // Missing, stored: the registry is not asked at all.
    let asked = reg.requests().len();
    let again = pull(&r, &opts(), &store, PullPolicy::Missing)
        .await
        .unwrap();
    assert_eq!(again.source, ImageSource::Store);
    assert_eq!(again.layers, pulled.layers);
    assert_eq!(reg.requests().len(), asked, "{:?}", reg.requests());
    // Pinned by the stored digest: no request either, even with Always.
    let pinned =
        parse_reference(&format!("{host}/test/offline@{}", manifest_digest(&img))).unwrap();
    pull(&pinned, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(
        reg.requests()
            .iter()
            .filter(|(_, p, _)| p.contains("/blobs/"))
            .count(),
        3,
        "layers of the pinned pull are shared: {:?}",
        reg.requests()
    );
    let pinned_again = pull(&pinned, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(pinned_again.source, ImageSource::Store);

    // The registry answers 404 for the tag: that is its word, not an
    // outage, and the stored copy is not used.
    let tag = reg
        .storage
        .join("docker/registry/v2/repositories/test/offline/_manifests/tags/v1");
    fs::remove_dir_all(&tag).unwrap();
    let err = pull(&r, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");

    // The registry is gone.
    reg.stop();
    let w = warnings().len();
    let offline = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    assert_eq!(offline.source, ImageSource::StoreOffline);
    assert_eq!(offline.layers, pulled.layers);
    assert_eq!(offline.manifest_digest, manifest_digest(&img));
    let said: Vec<_> = warnings()[w..]
        .iter()
        .filter(|l| l.contains(&dest))
        .cloned()
        .collect();
    let expected = format!(
        "registry {host} unreachable: using the stored image {dest} ({}, pulled 2",
        manifest_digest(&img)
    );
    assert!(
        said.iter()
            .any(|l| l.starts_with(&expected) && l.contains("refused")),
        "{said:?}"
    );
    // Missing and Never do not need it.
    for policy in [PullPolicy::Missing, PullPolicy::Never] {
        let p = pull(&r, &opts(), &store, policy).await.unwrap();
        assert_eq!(p.source, ImageSource::Store);
    }
    // Not stored and unreachable: the error, not a fallback.
    let err = pull(&other, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Unreachable { .. }), "{err}");
    let err = pull(&other, &opts(), &store, PullPolicy::Never)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--pull=never"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_writes_are_discarded_and_redone() {
    init_logging();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let dest = format!("{}/test/torn:v1", reg.host());
    let img = push(
        tmp.path(),
        "torn",
        &[layer("one", b"1\n"), layer("two", b"2\n")],
        &dest,
    );
    let r = parse_reference(&dest).unwrap();
    let root = tmp.path().join("store");
    let store = LayerStore::new(&root).unwrap();
    let first = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    let [l1, l2] = [0, 1].map(|i| img.layer_digests[i].parse::<Digest>().unwrap());

    // What a power cut leaves: a layer half unpacked under its temporary
    // name, a blob and a record half written under theirs, and a record
    // whose layer is gone (here removed behind the store's back).
    let half = root.join(format!("layers/.tmp-{}-99-0", l2.file_name()));
    fs::create_dir_all(half.join("etc")).unwrap();
    fs::write(half.join("etc/two"), b"2").unwrap();
    let manifest_hex = manifest_digest(&img)[7..].to_string();
    fs::write(
        root.join(format!("blobs/sha256/.tmp-{}-99-1", &manifest_hex[..19])),
        b"{\"schemaVe",
    )
    .unwrap();
    fs::write(root.join("images/.tmp-0123456789abcdef012-99-2"), b"{\"ref").unwrap();
    fs::remove_dir_all(store.layer_path(&l2)).unwrap();

    let store = LayerStore::new(&root).unwrap();
    assert!(temporaries(&root).is_empty(), "{:?}", temporaries(&root));
    assert!(store.stored_image(&r).is_none(), "a layer is missing");
    // Never does not use half an image.
    let err = pull(&r, &opts(), &store, PullPolicy::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotStored { .. }), "{err}");
    // Missing does not either: it pulls, and only the missing layer is
    // downloaded (the config is still in the store).
    let before = reg.blob_downloads().len();
    let redone = pull(&r, &opts(), &store, PullPolicy::Missing)
        .await
        .unwrap();
    assert_eq!(redone.source, ImageSource::Registry);
    assert_eq!(reg.blob_downloads()[before..], [l2.to_string()]);
    assert_eq!(
        (redone.stats.layers_downloaded, redone.stats.layers_reused),
        (1, 1)
    );
    assert_eq!(
        fs::read_to_string(store.layer_path(&l2).join("etc/two")).unwrap(),
        "2\n"
    );
    assert_eq!(redone.layers, first.layers);
    assert!(store.stored_image(&r).is_some());
    assert!(store.contains(&l1));

    // A manifest and a config damaged on disk are not trusted: the image
    // is not stored until they are fetched again and check out.
    let manifest_blob = root.join("blobs/sha256").join(&manifest_hex);
    let config_blob = root.join("blobs/sha256").join(&config_digest(&img)[7..]);
    let good_config = fs::read(&config_blob).unwrap();
    fs::write(&manifest_blob, b"{}").unwrap();
    fs::write(&config_blob, b"{\"architecture\":\"evil\"}").unwrap();
    assert!(store.stored_image(&r).is_none());
    let before = reg.blob_downloads().len();
    let repaired = pull(&r, &opts(), &store, PullPolicy::Missing)
        .await
        .unwrap();
    assert_eq!(repaired.source, ImageSource::Registry);
    assert_eq!(reg.blob_downloads()[before..], [config_digest(&img)]);
    assert_eq!(repaired.stats.layers_downloaded, 0);
    assert_eq!(
        sha256(&fs::read(&manifest_blob).unwrap()),
        manifest_digest(&img)
    );
    assert_eq!(fs::read(&config_blob).unwrap(), good_config);
    assert!(store.stored_image(&r).is_some());
    assert!(temporaries(&root).is_empty(), "{:?}", temporaries(&root));
}

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        common::registry::run(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH) {
            eprintln!("unmounting {}: {e}", self.0.display());
        }
    }
}

/// Bytes gzip cannot shrink (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_recently_used_layers_are_evicted() {
    init_logging();
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: mounting the small tmpfs needs root");
        return;
    }
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let cache = Tmpfs::mount(&tmp.path().join("cache"), "8m");
    let host = reg.host();
    const SIZE: usize = 1_200_000;
    let names = ["a", "b", "c", "d"];
    let mut refs = Vec::new();
    let mut layer_of = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let dest = format!("{host}/test/lru-{n}:v1");
        let img = push(tmp.path(), n, &[layer(n, &noise(i as u64, SIZE))], &dest);
        refs.push(parse_reference(&dest).unwrap());
        layer_of.push(img.layer_digests[0].parse::<Digest>().unwrap());
    }
    let store = LayerStore::new(cache.0.join("oci")).unwrap();
    // Used in the order a, b, c, d, then a again: b is the least recently
    // used, then c, then d.
    for i in [0, 1, 2, 3, 0] {
        let policy = if i == 0 {
            PullPolicy::Missing
        } else {
            PullPolicy::Always
        };
        pull(&refs[i], &opts(), &store, policy).await.unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(names
        .iter()
        .enumerate()
        .all(|(i, _)| store.stored_image(&refs[i]).is_some()));

    // Enough room already: nothing goes.
    let free = store.free_space().unwrap();
    let stats = store.evict(free, &[]).unwrap();
    assert!(stats.evicted.is_empty());

    // Room for one and a half layers more, while the pipeline needs c:
    // b goes, then d (c is kept, a was used last).
    let keep = store.stored_image(&refs[2]).unwrap().layers;
    assert_eq!(keep, [layer_of[2].clone()]);
    let want = free + SIZE as u64 * 3 / 2;
    let stats = store.evict(want, &keep).unwrap();
    assert_eq!(stats.evicted, [layer_of[1].clone(), layer_of[3].clone()]);
    assert!(stats.free_bytes >= want, "{stats:?}");
    assert!(stats.bytes_freed >= 2 * SIZE as u64, "{stats:?}");
    assert_eq!(
        sorted(stats.images_forgotten.clone()),
        sorted(vec![refs[1].whole(), refs[3].whole()])
    );
    for (i, kept) in [(0, true), (1, false), (2, true), (3, false)] {
        assert_eq!(store.contains(&layer_of[i]), kept, "{}", names[i]);
        assert_eq!(store.stored_image(&refs[i]).is_some(), kept, "{}", names[i]);
    }
    let evicted_lines: Vec<_> = logged()
        .into_iter()
        .filter(|l| l.starts_with("evicted layer ") && l.contains("last used 2"))
        .collect();
    for d in &stats.evicted {
        assert!(
            evicted_lines
                .iter()
                .any(|l| l.starts_with(&format!("evicted layer {d} (1.2 MB, last used"))),
            "{evicted_lines:?}"
        );
    }
    // The forgotten images' manifests and configs went with them; the
    // others' stayed.
    let blobs: HashSet<String> = fs::read_dir(cache.0.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs.len(), 4, "{blobs:?}");
    assert!(temporaries(&cache.0.join("oci")).is_empty());

    // Everything not kept is gone and it is still not enough: said, and
    // the kept layers stay.
    let w = warnings().len();
    let all = [layer_of[0].clone(), layer_of[2].clone()];
    let stats = store.evict(u64::MAX, &all).unwrap();
    assert!(stats.evicted.is_empty());
    assert!(
        warnings()[w..]
            .iter()
            .any(|l| l.contains("after evicting every layer the pipeline does not need")),
        "{:?}",
        warnings()
    );
    assert!(store.contains(&layer_of[0]) && store.contains(&layer_of[2]));

    // An evicted image comes back from the registry, in full.
    let back = pull(&refs[1], &opts(), &store, PullPolicy::Missing)
        .await
        .unwrap();
    assert_eq!(back.stats.layers_downloaded, 1);
    drop(store);
}
