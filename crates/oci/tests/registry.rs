//! Pulls from the real distribution registry (Debian's docker-registry) on
//! loopback, over HTTP and over HTTPS with a CA made by openssl here. Images
//! are built by the test as OCI layouts and pushed with skopeo.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use b2c_oci::{
    parse_reference, pull, LayerError, LayerStore, Proxy, PullError, PullPolicy, RegistryOptions,
    RetryPolicy, Trust,
};
use common::registry::{free_port, Image, Layout, Registry};
use common::{init_logging, logged, sha256, warnings, Codec, Tb};
use serde_json::json;

fn base_layer(tag: &str) -> Vec<u8> {
    Tb::new()
        .file("etc/os-release", format!("ID=test-{tag}\n").as_bytes())
        .file("etc/motd", b"hello\n")
        .file_mode("bin/hello", b"#!/bin/sh\necho hi\n", 0o755, 0, 0)
        .file("var/lib/old", b"")
        .finish()
}

fn top_layer(tag: &str) -> Vec<u8> {
    Tb::new()
        .file("etc/.wh.motd", b"")
        .file("var/lib/.wh..wh..opq", b"")
        .file("var/lib/new", tag.as_bytes())
        .finish()
}

fn insecure() -> RegistryOptions {
    RegistryOptions {
        tls_verify: false,
        ..RegistryOptions::default()
    }
}

fn retries_logged(image: &str) -> Vec<String> {
    logged()
        .into_iter()
        .filter(|l| l.contains(image) && l.contains("retrying"))
        .collect()
}

fn check_unpacked(layers: &[PathBuf], tag: &str) {
    assert_eq!(layers.len(), 2);
    assert_eq!(
        fs::read_to_string(layers[0].join("etc/os-release")).unwrap(),
        format!("ID=test-{tag}\n")
    );
    assert_eq!(
        fs::metadata(layers[0].join("bin/hello")).unwrap().mode() & 0o777,
        0o755
    );
    let wh = fs::symlink_metadata(layers[1].join("etc/motd")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        fs::read_to_string(layers[1].join("var/lib/new")).unwrap(),
        tag
    );
}

/// `b2c.insecure_registry` entries and `b2c.registry_mirror` pairs, as a
/// boot parses them.
fn registries(insecure: &[&str], mirrors: &[(&str, &str)]) -> b2c_cmdline::Registries {
    let mut r = b2c_cmdline::Registries::default();
    for entry in insecure {
        r.add_insecure(entry).unwrap();
    }
    for (registry, mirror) in mirrors {
        r.add_mirror(&format!("{registry}={mirror}")).unwrap();
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_over_http_and_reuses_layers() {
    init_logging();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(&tmp.path().join("oci"));

    // An OCI manifest, the same image converted to Docker v2s2 by skopeo,
    // and a multi-platform index whose arm64 entry must not be chosen.
    let img = layout.image("amd64", &[base_layer("oci"), top_layer("oci")]);
    let arm = layout.image("arm64", &[base_layer("arm"), top_layer("arm")]);
    let amd = layout.image("amd64", &[base_layer("idx"), top_layer("idx")]);
    let mut arm_desc = layout.manifest_desc(&arm);
    arm_desc["platform"] = json!({"os": "linux", "architecture": "arm64"});
    let mut amd_desc = layout.manifest_desc(&amd);
    amd_desc["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm_desc, amd_desc],
    });
    let index_desc = layout.descriptor(
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    layout.tag(&[("v1", layout.manifest_desc(&img)), ("multi", index_desc)]);
    let host = reg.host();
    layout.push("v1", &format!("{host}/test/x:v1"), &[]);
    layout.push(
        "v1",
        &format!("{host}/test/docker:v1"),
        &["--format", "v2s2"],
    );
    layout.push("multi", &format!("{host}/test/multi:v1"), &["--all"]);

    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let reference = parse_reference(&format!("docker://{host}/test/x:v1")).unwrap();
    let pulled = pull(&reference, &insecure(), &store, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&pulled.layers, "oci");
    assert_eq!(
        pulled.layers[0],
        store.layer_path(&img.layer_digests[0].parse().unwrap())
    );
    assert!(pulled.manifest_digest.starts_with("sha256:"));
    let cfg = pulled.config.config().as_ref().unwrap();
    assert_eq!(cfg.cmd().as_deref(), Some(&["/bin/hello".to_string()][..]));

    // Second pull: the layers are already in the store and are not
    // downloaded again (a marker in a layer directory survives).
    fs::write(pulled.layers[0].join("marker"), b"").unwrap();
    let again = pull(&reference, &insecure(), &store, PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(again.layers, pulled.layers);
    assert!(again.layers[0].join("marker").exists());

    // Docker v2 schema 2 media types.
    let r = parse_reference(&format!("{host}/test/docker:v1")).unwrap();
    let docker = pull(&r, &insecure(), &store, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&docker.layers, "oci");

    // Index → the linux/amd64 manifest.
    let r = parse_reference(&format!("{host}/test/multi:v1")).unwrap();
    let multi = pull(&r, &insecure(), &store, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&multi.layers, "idx");
    // Again: the index is unchanged, so nothing more is fetched.
    let again = pull(&r, &insecure(), &store, PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(again.layers, multi.layers);
    assert_eq!(again.manifest_digest, multi.manifest_digest);
    assert_eq!(
        (again.stats.layers_downloaded, again.stats.layers_reused),
        (0, 2)
    );
    let stored = store.stored_image(&r).unwrap();
    assert_eq!(stored.digest, sha256(index.to_string().as_bytes()));
    assert_eq!(stored.manifest_digest.to_string(), multi.manifest_digest);

    // Missing tag: fails at once, naming the image and the registry.
    let r = parse_reference(&format!("{host}/test/x:nope")).unwrap();
    let err = pull(&r, &insecure(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("test/x:nope") && err.to_string().contains(&host),
        "{err}"
    );
    assert!(
        retries_logged("test/x:nope").is_empty(),
        "a 404 must not be retried"
    );

    // Verification on, plain HTTP registry: a TLS error, not retried.
    let err = pull(
        &reference,
        &RegistryOptions::default(),
        &store,
        PullPolicy::Always,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PullError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("--tls-verify=false"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_zstd_chunked_layers_unpack_as_gzip_ones_do() {
    init_logging();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(&tmp.path().join("oci"));
    let links = Tb::new()
        .file_mode("bin/hello", b"#!/bin/sh\necho hi\n", 0o755, 0, 0)
        .symlink("bin/sh", "hello")
        .hardlink("bin/hi", "bin/hello")
        .file_mode("bin/su", b"#!", 0o4755, 0, 0)
        .finish();
    let layers = [base_layer("zst"), links, top_layer("zst")];
    let mut tags = vec![];
    for (tag, codecs) in [
        ("gzip", [Codec::Gzip(1); 3]),
        ("zstd", [Codec::Zstd(3); 3]),
        ("chunked", [Codec::ZstdChunked; 3]),
        (
            "mixed",
            [Codec::Zstd(3), Codec::Gzip(1), Codec::ZstdChunked],
        ),
    ] {
        let img = layout.image_with("amd64", &layers, &codecs);
        tags.push((tag, layout.manifest_desc(&img)));
    }
    layout.tag(&tags);
    let host = reg.host();
    for (tag, _) in &tags {
        layout.push(tag, &format!("{host}/test/zst:{tag}"), &[]);
    }

    for (tag, _) in &tags {
        // A store each, so that every layer is downloaded and unpacked.
        let store = LayerStore::new(tmp.path().join("store").join(tag)).unwrap();
        let r = parse_reference(&format!("{host}/test/zst:{tag}")).unwrap();
        let pulled = pull(&r, &insecure(), &store, PullPolicy::Always)
            .await
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(pulled.stats.layers_downloaded, 3, "{tag}");
        let l = &pulled.layers;
        check_unpacked(&[l[0].clone(), l[2].clone()], "zst");
        assert_eq!(
            fs::read_link(l[1].join("bin/sh")).unwrap(),
            Path::new("hello")
        );
        let hello = fs::metadata(l[1].join("bin/hello")).unwrap();
        let hi = fs::metadata(l[1].join("bin/hi")).unwrap();
        assert_eq!(hello.ino(), hi.ino(), "{tag}");
        assert_eq!(
            fs::metadata(l[1].join("bin/su")).unwrap().mode() & 0o7777,
            0o4755
        );
        let mut opaque = [0u8; 4];
        let n = rustix::fs::lgetxattr(l[2].join("var/lib"), "trusted.overlay.opaque", &mut opaque)
            .unwrap();
        assert_eq!(&opaque[..n], b"y", "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_not_committed() {
    init_logging();
    for codec in [Codec::Gzip(1), Codec::Zstd(3)] {
        corrupted_blob_is_not_committed_as(codec).await;
    }
}

async fn corrupted_blob_is_not_committed_as(codec: Codec) {
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(&tmp.path().join("oci"));
    let big = Tb::new().file("data", &vec![42u8; 200_000]).finish();
    let img = layout.image_with("amd64", &[base_layer("bad"), big], &[codec; 2]);
    layout.tag(&[("v1", layout.manifest_desc(&img))]);
    layout.push("v1", &format!("{}/test/bad:v1", reg.host()), &[]);

    // Flip one byte of the stored layer blob.
    let blob = reg.blob_path(&img.layer_digests[1]);
    let mut data = fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&blob, data).unwrap();

    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let r = parse_reference(&format!("{}/test/bad:v1", reg.host())).unwrap();
    let err = pull(&r, &insecure(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    match &err {
        PullError::Layer {
            digest,
            source: LayerError::DigestMismatch { .. },
            ..
        } => assert_eq!(digest, &img.layer_digests[1]),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains(&img.layer_digests[1]), "{err}");
    assert!(!store.contains(&img.layer_digests[1].parse().unwrap()));
    let leftovers: Vec<_> = fs::read_dir(store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_needs_the_ca() {
    init_logging();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    qemu_tests::make_ca(t, "ca", "b2c test CA").unwrap();
    let (cert, key) =
        qemu_tests::issue_server_cert_with(t, t, "ca", "IP:127.0.0.1,DNS:localhost").unwrap();
    let reg = Registry::start(Some((&cert, &key)));

    let layout = Layout::new(&t.join("oci"));
    let img = layout.image("amd64", &[base_layer("tls"), top_layer("tls")]);
    layout.tag(&[("v1", layout.manifest_desc(&img))]);
    layout.push("v1", &format!("{}/test/tls:v1", reg.host()), &[]);
    let r = parse_reference(&format!("{}/test/tls:v1", reg.host())).unwrap();

    // Without the CA: a certificate error that says what to do, at once.
    let store = LayerStore::new(t.join("store")).unwrap();
    let err = pull(&r, &RegistryOptions::default(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Certificate {
                clock_suspect: false,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("could not be verified") && msg.contains("b2c.ca_cert"),
        "{msg}"
    );
    assert!(
        msg.contains("--tls-verify=false") && msg.contains(&reg.host()),
        "{msg}"
    );
    assert!(
        retries_logged("test/tls:v1").is_empty(),
        "certificate errors are not retried"
    );

    // With it.
    let opts = RegistryOptions {
        trust: Trust::bundled()
            .with_pem("ca.pem", &fs::read(t.join("ca.pem")).unwrap())
            .unwrap(),
        ..RegistryOptions::default()
    };
    let pulled = pull(&r, &opts, &store, PullPolicy::Always).await.unwrap();
    check_unpacked(&pulled.layers, "tls");

    // --tls-verify=false: HTTPS without verification works too.
    let store2 = LayerStore::new(t.join("store2")).unwrap();
    let pulled = pull(&r, &insecure(), &store2, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&pulled.layers, "tls");

    // Through a proxy: a CONNECT tunnel, the certificate still verified.
    let proxy = TinyProxy::start();
    let via_proxy = RegistryOptions {
        proxy: Proxy {
            https: Some(proxy_url(proxy.port)),
            ..Proxy::default()
        },
        ..opts
    };
    let store3 = LayerStore::new(t.join("store3")).unwrap();
    let pulled = pull(&r, &via_proxy, &store3, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&pulled.layers, "tls");
    let heads = proxy.heads();
    assert!(!heads.is_empty());
    for h in &heads {
        assert!(h.starts_with(&format!("CONNECT {} ", reg.host())), "{h}");
        assert!(
            h.to_ascii_lowercase()
                .contains("proxy-authorization: basic am9lomh1bnrlcji="),
            "{h}"
        );
    }
    no_credentials_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_retried_then_reported() {
    init_logging();
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let port = free_port(); // nothing listens there any more
    let r = parse_reference(&format!("127.0.0.1:{port}/test/x:v1")).unwrap();
    let opts = RegistryOptions {
        tls_verify: false,
        retry: RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..RegistryOptions::default()
    };
    let err = pull(&r, &opts, &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PullError::Unreachable { attempts: 3, .. }),
        "{err}"
    );
    let retries = retries_logged(&format!("127.0.0.1:{port}/test/x:v1"));
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries[1].contains("attempt 3/3"), "{retries:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("refused"),
        "{msg}"
    );
}

/// Builds an image whose files say `tag`, pushes it to each destination
/// (`host/repo:tag`), and returns it.
fn push_image(dir: &Path, tag: &str, dests: &[String]) -> Image {
    let layout = Layout::new(&dir.join(format!("oci-{tag}")));
    let img = layout.image("amd64", &[base_layer(tag), top_layer(tag)]);
    layout.tag(&[("v1", layout.manifest_desc(&img))]);
    for d in dests {
        layout.push("v1", d, &[]);
    }
    img
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        first_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

fn logged_with(needles: &[&str]) -> Vec<String> {
    logged()
        .into_iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serves_while_the_origin_is_down() {
    init_logging();
    let mirror = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let m = mirror.host();
    let img = push_image(
        tmp.path(),
        "mirrored",
        &[format!("{m}/test/m:v1"), format!("{m}/hub/cache/test/m:v1")],
    );
    // Nothing listens on the origin: only the mirror can serve.
    let origin = format!("127.0.0.1:{}", free_port());
    let opts = |mirror: String| RegistryOptions {
        registries: registries(&[&m], &[(&origin, &mirror)]),
        retry: fast_retries(),
        ..RegistryOptions::default()
    };
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let r = parse_reference(&format!("{origin}/test/m:v1")).unwrap();
    let pulled = pull(&r, &opts(m.clone()), &store, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&pulled.layers, "mirrored");
    assert_eq!(pulled.served_by, m);
    assert_eq!(pulled.reference, format!("{origin}/test/m:v1"));
    let served = logged_with(&["pulled", &format!("{origin}/test/m:v1"), "from mirror", &m]);
    assert_eq!(served.len(), 1, "{:?}", logged());

    // A mirror with a path prefix, and a reference pinned by digest.
    let store = LayerStore::new(tmp.path().join("store2")).unwrap();
    let digest = sha256(img.manifest.to_string().as_bytes());
    let r = parse_reference(&format!("{origin}/test/m@{digest}")).unwrap();
    let pulled = pull(
        &r,
        &opts(format!("{m}/hub/cache")),
        &store,
        PullPolicy::Always,
    )
    .await
    .unwrap();
    check_unpacked(&pulled.layers, "mirrored");
    assert_eq!(pulled.manifest_digest, digest);
    assert!(
        warnings().iter().all(|w| !w.contains(&origin)),
        "{:?}",
        warnings()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_failures_fall_back_to_the_origin() {
    init_logging();
    let origin = Registry::start(None);
    let empty = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let o = origin.host();
    push_image(tmp.path(), "origin", &[format!("{o}/test/fb:v1")]);
    let dead = format!("127.0.0.1:{}", free_port());
    let opts = RegistryOptions {
        // Host alone: every port of 127.0.0.1.
        registries: registries(
            &["127.0.0.1"],
            &[
                (&o, &dead),
                (&o, &empty.host()),
                ("other.test", "never.test"),
            ],
        ),
        retry: fast_retries(),
        ..RegistryOptions::default()
    };
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let r = parse_reference(&format!("{o}/test/fb:v1")).unwrap();
    let pulled = pull(&r, &opts, &store, PullPolicy::Always).await.unwrap();
    check_unpacked(&pulled.layers, "origin");
    assert_eq!(pulled.served_by, o);

    let w: Vec<_> = warnings()
        .into_iter()
        .filter(|w| w.contains("test/fb:v1") && w.contains("falling back"))
        .collect();
    assert_eq!(w.len(), 2, "{w:?}");
    // The dead mirror: refused, then the next mirror.
    assert!(
        w[0].contains(&format!("mirror {dead} (of {o})"))
            && w[0].contains("refused")
            && w[0].contains(&format!("next mirror {}", empty.host())),
        "{w:?}"
    );
    // The mirror without the image: not found, then the registry.
    assert!(
        w[1].contains(&format!("mirror {} (of {o})", empty.host()))
            && w[1].contains("not found")
            && w[1].ends_with(&format!("falling back to the registry {o}")),
        "{w:?}"
    );
    let served = logged_with(&["pulled", &format!("{o}/test/fb:v1"), &format!("from {o}:")]);
    assert_eq!(served.len(), 1, "{:?}", logged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serving_a_bad_layer_is_an_error() {
    init_logging();
    let origin = Registry::start(None);
    let mirror = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let (o, m) = (origin.host(), mirror.host());
    let img = push_image(
        tmp.path(),
        "corrupt",
        &[format!("{o}/test/bad:v1"), format!("{m}/test/bad:v1")],
    );
    let blob = mirror.blob_path(&img.layer_digests[0]);
    let mut data = fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&blob, data).unwrap();

    let opts = RegistryOptions {
        registries: registries(&["127.0.0.1"], &[(&o, &m)]),
        retry: fast_retries(),
        ..RegistryOptions::default()
    };
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let r = parse_reference(&format!("{o}/test/bad:v1")).unwrap();
    let err = pull(&r, &opts, &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(err.is_digest_mismatch(), "{err}");
    assert!(
        matches!(
            &err,
            PullError::Layer {
                source: LayerError::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    // The origin, which has a good copy, was not asked.
    assert!(
        warnings().iter().all(|w| !w.contains("test/bad:v1")),
        "{:?}",
        warnings()
    );
    assert!(logged_with(&["pulling", &format!("{o}/test/bad:v1 from {o}")]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_registry_entry_allows_plain_http() {
    init_logging();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let host = reg.host();
    push_image(tmp.path(), "insecure", &[format!("{host}/test/ins:v1")]);
    let r = parse_reference(&format!("{host}/test/ins:v1")).unwrap();
    let opts = |entry: &str| RegistryOptions {
        registries: registries(&[entry], &[]),
        ..RegistryOptions::default()
    };

    // Exact host:port, with verification on.
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let pulled = pull(&r, &opts(&host), &store, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&pulled.layers, "insecure");
    let said = logged_with(&[&host, "insecure by b2c.insecure_registry"]);
    assert_eq!(said.len(), 1, "once per pull: {said:?}");
    assert_eq!(
        logged_with(&[&host, "plain HTTP (b2c.insecure_registry)"]).len(),
        1
    );

    // Host alone: any port.
    let store = LayerStore::new(tmp.path().join("store2")).unwrap();
    pull(&r, &opts("127.0.0.1"), &store, PullPolicy::Always)
        .await
        .unwrap();

    // Another port of the same host is not covered.
    let other = format!("127.0.0.1:{}", reg.port.wrapping_add(1));
    let err = pull(&r, &opts(&other), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Tls { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("b2c.insecure_registry={host}")),
        "{err}"
    );
}

/// A proxy for tests: `CONNECT` tunnels and absolute-form forwarding, to
/// loopback only. Records each connection's request head.
struct TinyProxy {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TinyProxy {
    fn start() -> TinyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (heads, stop) = (heads.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let heads = heads.clone();
                            std::thread::spawn(move || proxy_conn(conn, &heads));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TinyProxy {
            port,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_conn(mut conn: TcpStream, heads: &Mutex<Vec<String>>) {
    conn.set_nonblocking(false).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    heads.lock().unwrap().push(text.clone());
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let authority = if method == "CONNECT" {
        target
    } else {
        let rest = target.strip_prefix("http://").unwrap_or("");
        rest.split('/').next().unwrap_or("")
    };
    assert!(authority.starts_with("127.0.0.1:"), "{text}");
    let Ok(mut up) = TcpStream::connect(authority) else {
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if method == "CONNECT" {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap();
    } else {
        // The registry (Go's net/http) takes absolute-form requests as is.
        up.write_all(&head).unwrap();
    }
    let (mut c2, mut u2) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut u2, &mut c2);
        let _ = c2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut conn, &mut up);
    let _ = up.shutdown(Shutdown::Write);
    let _ = t.join();
}

const PROXY_USER: &str = "joe";
const PROXY_PASSWORD: &str = "hunter2";

fn proxy_url(port: u16) -> String {
    format!("http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}")
}

fn no_credentials_logged() {
    let leaks: Vec<_> = logged()
        .into_iter()
        .filter(|l| l.contains(PROXY_PASSWORD))
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_are_used_and_their_credentials_hidden() {
    init_logging();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let host = reg.host();
    push_image(tmp.path(), "proxied", &[format!("{host}/test/px:v1")]);
    let r = parse_reference(&format!("{host}/test/px:v1")).unwrap();
    let opts = |port: u16, no_proxy: Option<&str>| RegistryOptions {
        registries: registries(&[&host], &[]),
        proxy: Proxy {
            http: Some(proxy_url(port)),
            https: Some(proxy_url(port)),
            no_proxy: no_proxy.map(String::from),
        },
        retry: fast_retries(),
        ..RegistryOptions::default()
    };

    // A proxy nobody listens on: the pull fails, and says which proxy.
    let dead = free_port();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let err = pull(&r, &opts(dead, None), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Unreachable { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "through proxy http://127.0.0.1:{dead}, from b2c.proxy"
        )),
        "{msg}"
    );
    assert!(
        !msg.contains(PROXY_PASSWORD) && !msg.contains(PROXY_USER),
        "{msg}"
    );

    // The same proxy, bypassed by no_proxy: direct, and it works.
    pull(
        &r,
        &opts(dead, Some("localhost,127.0.0.0/8")),
        &store,
        PullPolicy::Always,
    )
    .await
    .unwrap();

    // A working proxy: plain-HTTP requests are forwarded to it, with the
    // credentials in Proxy-Authorization.
    let proxy = TinyProxy::start();
    let store = LayerStore::new(tmp.path().join("store2")).unwrap();
    let pulled = pull(&r, &opts(proxy.port, None), &store, PullPolicy::Always)
        .await
        .unwrap();
    check_unpacked(&pulled.layers, "proxied");
    let heads = proxy.heads();
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with(&format!("GET http://{host}/v2/"))),
        "{heads:?}"
    );
    // base64("joe:hunter2")
    assert!(
        heads.iter().all(|h| h
            .to_ascii_lowercase()
            .contains("proxy-authorization: basic am9lomh1bnrlcji=")),
        "{heads:?}"
    );
    no_credentials_logged();
}
