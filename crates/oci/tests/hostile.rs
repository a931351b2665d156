//! Pulls from a hostile registry (tests/common/hostile.rs): crafted
//! layers, manifests and tokens, and the faults of a bad network. Each
//! test is an attack or a fault that once got through; what b2c promises
//! about them is in the README's "Threat model and guarantees".
//!
//! The file descriptor limit of this test process is PID 1's (1024), so
//! that whatever runs out of descriptors at boot runs out here too.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use b2c_oci::{parse_reference, pull, LayerError, LayerStore, PullError, PullPolicy};
use b2c_oci::{RegistryOptions, RetryPolicy};
use common::hostile::{Content, Hostile, Reply, Script};
use common::{gzip, init_logging, Tb};
use serde_json::json;
use tar::{EntryType, Header};

/// PID 1's default limit: RLIMIT_NOFILE 1024.
fn pid1_fd_limit() {
    let limit = rustix::process::Rlimit {
        current: Some(1024),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
}

fn opts() -> RegistryOptions {
    common::quick_opts(3)
}

fn no_script() -> Script {
    Arc::new(|_| None)
}

/// Names in the store's `layers/` that are not committed layers.
fn leftovers(store: &LayerStore) -> Vec<String> {
    fs::read_dir(store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("sha256-"))
        .collect()
}

/// A file `levels` directories deep (GNU long names).
fn deep_tree(levels: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(4);
    h.set_mtime(common::MTIME);
    b.append_data(&mut h, format!("{}deep", "d/".repeat(levels)), &b"deep"[..])
        .unwrap();
    b.into_inner().unwrap()
}

/// Problem 1: a layer 1,100 levels deep with a wrong digest. Its cleanup
/// must not need a descriptor per level: with PID 1's 1,024 it failed,
/// left a `.tmp-*` behind, and every later `LayerStore::new` (every later
/// boot on that cache disk) failed. Eviction removes layers the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_tree_never_poisons_the_store() {
    init_logging();
    pid1_fd_limit();
    let deep = gzip(&deep_tree(1100));
    let mut content = Content::default();
    // The manifest names a digest the blob does not have.
    let liar = format!("sha256:{}", "1".repeat(64));
    let lying = content.image_with_blobs("lying", std::slice::from_ref(&deep), |m| {
        m["layers"][0]["digest"] = liar.clone().into();
    });
    content.add(
        &lying.blob_path(&liar),
        "application/octet-stream",
        deep.clone(),
    );
    let honest = content.image("honest", &[deep_tree(1100)]);
    let server = Hostile::start(content, no_script());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = LayerStore::new(&root).unwrap();

    let r = parse_reference(&format!("{}/lying:v1", server.host())).unwrap();
    let err = pull(&r, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(err.is_digest_mismatch(), "{err}");
    assert_eq!(leftovers(&store), Vec::<String>::new());
    // The next boot opens the store and pulls.
    let store = LayerStore::new(&root).unwrap();
    let r = parse_reference(&format!("{}/honest:v1", server.host())).unwrap();
    let pulled = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    let bottom = pulled.layers[0].join(format!("{}deep", "d/".repeat(1100)));
    assert!(fs::symlink_metadata(bottom).is_ok());

    // Evicting it (everything, nothing kept) removes it whole.
    let stats = store.evict(u64::MAX, &[]).unwrap();
    assert_eq!(stats.evicted.len(), 1);
    assert!(stats.bytes_freed > 0);
    assert_eq!(leftovers(&store), Vec::<String>::new());
    assert!(!store.contains(&honest.layer_digests[0].parse().unwrap()));
    LayerStore::new(&root).unwrap();
}

/// Problem 8: verify, then judge. A corrupt layer whose first member
/// "escapes" is a corrupt layer: the digest mismatch is what is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_reported_as_a_digest_mismatch() {
    init_logging();
    let evil = gzip(
        &Tb::new()
            .file("../escape", b"x")
            .file("big", &[7u8; 100_000])
            .finish(),
    );
    let mut content = Content::default();
    let liar = format!("sha256:{}", "2".repeat(64));
    let image = content.image_with_blobs("evil", std::slice::from_ref(&evil), |m| {
        m["layers"][0]["digest"] = liar.clone().into();
    });
    content.add(&image.blob_path(&liar), "application/octet-stream", evil);
    let server = Hostile::start(content, no_script());
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let r = parse_reference(&format!("{}/evil:v1", server.host())).unwrap();
    let err = pull(&r, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
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
    assert!(!err.to_string().contains("escape"), "{err}");
    assert_eq!(leftovers(&store), Vec::<String>::new());
}

fn reference(server: &Hostile, name: &str) -> b2c_oci::Reference {
    parse_reference(&format!("{}/{name}:v1", server.host())).unwrap()
}

async fn pull_from(server: &Hostile, name: &str, opts: &RegistryOptions) -> Result<(), PullError> {
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    // A hang guard, not a measure: every case here ends in seconds.
    tokio::time::timeout(
        Duration::from_secs(120),
        pull(&reference(server, name), opts, &store, PullPolicy::Always),
    )
    .await
    .expect("the pull hung")
    .map(drop)
}

fn layers(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| Tb::new().file(&format!("f{i}"), &[i as u8; 1000]).finish())
        .collect()
}

/// A registry that wants a Bearer token from its own `/token`, and
/// answers it with `token` (a JSON document).
fn token_script(port: Arc<std::sync::OnceLock<u16>>, token: serde_json::Value) -> Script {
    Arc::new(move |req| {
        let port = port.get().unwrap();
        let challenge =
            format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"hostile\"");
        if req.path.starts_with("/token") {
            return Some(Reply::json(200, token.clone()));
        }
        let authorized = req.header("authorization") == Some("Bearer good");
        (!authorized).then(|| {
            Reply::status(
                401,
                &[
                    ("WWW-Authenticate", challenge.as_str()),
                    ("Content-Type", "application/json"),
                ],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#,
            )
        })
    })
}

/// Problems 2 and 8: a token is checked before it becomes a header (a
/// `\n` in it made oci-client panic, which ends PID 1), a malformed token
/// is not "denied access", and a pull learns how to authenticate once,
/// not once per layer (20,005 requests for 10,000 layers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_asked_for_once() {
    init_logging();
    let mut content = Content::default();
    content.image("tokened", &layers(5));
    for (token, says) in [
        (json!({"token": "abc\ndef"}), "byte 3 is \"\\\\n\""),
        (json!({"token": "ok\u{1b}[2J"}), "byte 2"),
        (json!({"nothing": "here"}), "no token in it"),
        (json!("not an object"), "malformed token"),
    ] {
        let port = Arc::new(std::sync::OnceLock::new());
        let server = Hostile::start(content.clone(), token_script(port.clone(), token));
        port.set(server.port).unwrap();
        let err = pull_from(&server, "tokened", &opts()).await.unwrap_err();
        assert!(matches!(err, PullError::Registry { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("malformed token") && msg.contains(says),
            "{msg}"
        );
        assert!(
            !msg.contains("denied") && !msg.chars().any(char::is_control),
            "{msg}"
        );
    }

    let port = Arc::new(std::sync::OnceLock::new());
    let server = Hostile::start(
        content,
        token_script(port.clone(), json!({"token": "good"})),
    );
    port.set(server.port).unwrap();
    pull_from(&server, "tokened", &opts()).await.unwrap();
    let requests = server.requests();
    let pings = requests.iter().filter(|r| r.path == "/v2/").count();
    let tokens = requests
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .count();
    let blobs = requests
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    let manifests = requests
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    // The TLS attempt first is no request the server can read; then the
    // manifest without a token (401), one token, the manifest again, the
    // config and the 5 layers: no GET /v2/.
    assert_eq!(
        (pings, manifests, tokens, blobs),
        (0, 2, 1, 6),
        "{requests:#?}"
    );
    let token_request = requests
        .iter()
        .find(|r| r.path.starts_with("/token"))
        .unwrap();
    assert!(
        token_request
            .path
            .contains("scope=repository%3Atokened%3Apull"),
        "{token_request:?}"
    );
}

/// An open registry serves the manifest to the first request: no `GET
/// /v2/` before it (podman's way), one round trip less on every pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_registry_is_asked_for_the_manifest_first() {
    init_logging();
    let mut content = Content::default();
    content.image("open", &layers(2));
    let server = Hostile::start(content, no_script());
    pull_from(&server, "open", &opts()).await.unwrap();
    let requests = server.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert!(paths[0].ends_with("/open/manifests/v1"), "{paths:#?}");
    assert_eq!(
        paths.iter().filter(|p| p.contains("/manifests/")).count(),
        1,
        "{paths:#?}"
    );
    assert!(!paths.contains(&"/v2/"), "{paths:#?}");
}

/// With `--tls-verify=false`, HTTPS and plain HTTP are asked at once; a
/// registry that served the manifest over plain HTTP is used without
/// waiting for the HTTPS attempt, which can only fail on that port. Here
/// the handshake is swallowed: waiting for it would take the 5 s connect
/// timeout (the handshake is part of the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_that_served_the_manifest_does_not_wait_for_https() {
    init_logging();
    let mut content = Content::default();
    content.image("plain", &layers(1));
    let server = Hostile::start_stalling_tls(content, no_script());
    let started = std::time::Instant::now();
    pull_from(&server, "plain", &opts()).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "waited for HTTPS: {took:?}"
    );
}

/// Problem 3: nothing a registry sends is read without a bound. An endless
/// manifest took 1.55 GB, an endless token answer 3 GB; a 50 MB manifest
/// was accepted. Podman's bounds: 4 MiB for manifests and configs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_huge_answers_are_refused() {
    init_logging();
    let mut content = Content::default();
    let image = content.image("endless", &layers(1));
    let manifest_path = image.manifest_path("v1");
    let config_path = image.blob_path(&image.config_digest);
    let endless = |ctype: &str| Reply::Endless {
        status: 200,
        content_type: ctype.into(),
    };
    let cases: Vec<(&str, Script, &str)> = vec![
        (
            "an endless manifest",
            Arc::new({
                let p = manifest_path.clone();
                move |r| (r.path == p).then(|| endless(common::hostile::OCI_MANIFEST))
            }),
            "the manifest is larger than 4194304 bytes",
        ),
        (
            "a 50 MB manifest",
            Arc::new({
                let p = manifest_path.clone();
                move |r| {
                    (r.path == p).then(|| {
                        let mut m =
                            br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","x":""#
                                .to_vec();
                        m.resize(50 << 20, b'a');
                        m.extend_from_slice(b"\"}");
                        Reply::status(200, &[("Content-Type", common::hostile::OCI_MANIFEST)], &m)
                    })
                }
            }),
            "the manifest is larger than 4194304 bytes",
        ),
        (
            "an endless config",
            Arc::new({
                let p = config_path.clone();
                move |r| (r.path == p).then(|| endless("application/octet-stream"))
            }),
            "the config is larger than",
        ),
        (
            "an endless error body",
            Arc::new({
                let p = manifest_path.clone();
                move |r| {
                    (r.path == p).then(|| Reply::Endless {
                        status: 404,
                        content_type: "text/plain".into(),
                    })
                }
            }),
            "HTTP 404 Not Found: AAAA",
        ),
    ];
    for (what, script, says) in cases {
        let server = Hostile::start(content.clone(), script);
        let err = pull_from(&server, "endless", &opts()).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(says), "{what}: {msg}");
        assert!(msg.len() < 1000, "{what}: {} bytes of message", msg.len());
        // Refused at the bound, plus what the sockets held.
        let sent: u64 = [&manifest_path, &config_path]
            .iter()
            .map(|p| server.bytes_sent(p))
            .sum();
        assert!(sent < 60 << 20, "{what}: {sent} bytes sent");
    }

    // An endless token answer.
    let port = Arc::new(std::sync::OnceLock::new());
    let inner = token_script(port.clone(), json!({"token": "good"}));
    let script: Script = Arc::new(move |r| {
        if r.path.starts_with("/token") {
            return Some(endless("application/json"));
        }
        inner(r)
    });
    let server = Hostile::start(content, script);
    port.set(server.port).unwrap();
    let err = pull_from(&server, "endless", &opts()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the token answer is larger than 1048576 bytes"),
        "{err}"
    );
}

/// Problem 4: 429 is retried after the registry's `Retry-After` (a rate
/// limit ended the boot at once, and oci-client never saw the header), and
/// says 429; 5xx is ridden out for as long as the policy's time allows,
/// not 3 times in 6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_outages_are_ridden_out() {
    init_logging();
    let mut content = Content::default();
    let image = content.image("limited", &layers(2));
    let manifest = image.manifest_path("v1");
    let blob = image.blob_path(&image.layer_digests[1]);
    let script: Script = Arc::new(move |r| {
        let busy = Reply::status(
            429,
            &[("Retry-After", "1")],
            br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        );
        match () {
            _ if r.path == manifest && r.n <= 2 => Some(busy),
            _ if r.path == blob && r.n <= 6 => Some(Reply::status(503, &[], b"down")),
            _ => None,
        }
    });
    let server = Hostile::start(content, script);
    let patient = RegistryOptions {
        retry: RetryPolicy {
            attempts: 100,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            give_up_after: Some(Duration::from_secs(30)),
        },
        ..opts()
    };
    pull_from(&server, "limited", &patient).await.unwrap();
    let retries = common::warnings();
    let limited: Vec<_> = retries
        .iter()
        .filter(|l| l.contains("limited:v1: fetching the manifest"))
        .collect();
    assert_eq!(limited.len(), 2, "{retries:#?}");
    assert!(
        limited.iter().all(|l| l.contains("HTTP 429")
            && l.contains("TOOMANYREQUESTS")
            && l.contains("retrying in 1.0 s")),
        "{limited:#?}"
    );
    let outage = retries
        .iter()
        .filter(|l| l.contains("limited:v1: layer") && l.contains("503"))
        .count();
    assert_eq!(outage, 6, "{retries:#?}");

    // For good: reported once the time is up, with the attempts made.
    let mut content = Content::default();
    let image = content.image("down", &layers(1));
    let manifest = image.manifest_path("v1");
    let server = Hostile::start(
        content,
        Arc::new(move |r| (r.path == manifest).then(|| Reply::status(500, &[], b"oops"))),
    );
    let brief = RegistryOptions {
        retry: RetryPolicy {
            give_up_after: Some(Duration::from_millis(500)),
            ..patient.retry.clone()
        },
        ..opts()
    };
    let err = pull_from(&server, "down", &brief).await.unwrap_err();
    match &err {
        PullError::Unreachable { attempts, .. } => assert!(*attempts > 3, "{err}"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

/// Problem 4: a layer download cut in the middle resumes where it stopped
/// (`Range`), instead of starting again from byte 0, 3 tries in all; and
/// from a registry that ignores `Range`, what was already received is
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_download_resumes_with_range() {
    init_logging();
    let big: Vec<u8> = (0..400_000u32).flat_map(|i| i.to_le_bytes()).collect();
    for ignores_range in [false, true] {
        let mut content = Content::default();
        let image = content.image("cut", &[Tb::new().file("big", &big).finish()]);
        let blob = image.blob_path(&image.layer_digests[0]);
        let data = content_of(&content, &blob);
        let len = data.len();
        let b = blob.clone();
        let script: Script = Arc::new(move |r| {
            if r.path != b {
                return None;
            }
            let answer = if ignores_range {
                Reply::status(200, &[], &data)
            } else {
                Reply::content(r, "application/octet-stream", &data)
            };
            Some(match r.n {
                1 => answer.cut(len / 3),
                // A stall after more: the minimum-progress rule ends it.
                2 => answer.stall_after(if ignores_range {
                    2 * (len / 3)
                } else {
                    len / 3
                }),
                _ => answer,
            })
        });
        let server = Hostile::start(content, script);
        let opts = RegistryOptions {
            min_progress: b2c_oci::MinProgress {
                bytes: 1,
                window: Duration::from_secs(1),
            },
            ..opts()
        };
        pull_from(&server, "cut", &opts).await.unwrap();
        let starts: Vec<_> = server
            .requests()
            .iter()
            .filter(|r| r.path == blob)
            .map(|r| r.range_start())
            .collect();
        assert_eq!(
            starts,
            [None, Some(len as u64 / 3), Some(2 * (len as u64 / 3))],
            "ignores Range: {ignores_range}"
        );
        if !ignores_range {
            assert_eq!(server.bytes_sent(&blob), len as u64);
        }
        assert!(common::logged()
            .iter()
            .any(|l| l.contains("resuming layer")));
    }
}

fn content_of(content: &Content, path: &str) -> Vec<u8> {
    let req = common::hostile::Request {
        method: "GET".into(),
        path: path.into(),
        headers: vec![],
        n: 1,
    };
    match content.answer(&req) {
        Reply::Full { body, .. } => body,
        _ => unreachable!(),
    }
}

/// Problem 6: a registry sending 1 byte every 50 ms kept the boot alive
/// for ever. Less than the minimum progress in a window is a stall: the
/// attempt fails, and the retries are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_is_a_stall() {
    init_logging();
    let mut content = Content::default();
    let image = content.image("trickle", &layers(1));
    let blob = image.blob_path(&image.layer_digests[0]);
    let data = content_of(&content, &blob);
    let b = blob.clone();
    let script: Script = Arc::new(move |r| {
        (r.path == b).then(|| Reply::Trickle {
            body: data.clone(),
            every: Duration::from_millis(50),
        })
    });
    let server = Hostile::start(content, script);
    let opts = RegistryOptions {
        min_progress: b2c_oci::MinProgress {
            bytes: 1024,
            window: Duration::from_secs(1),
        },
        ..opts()
    };
    let err = pull_from(&server, "trickle", &opts).await.unwrap_err();
    assert!(
        matches!(err, PullError::Unreachable { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("stalled"), "{err}");
    // Resumed each time from what had arrived.
    let starts: Vec<_> = server
        .requests()
        .iter()
        .filter(|r| r.path == blob)
        .map(|r| r.range_start().is_some())
        .collect();
    assert_eq!(starts, [false, true, true]);
}

/// Problem 5: what a server says is bounded and escaped before it reaches
/// a message (a 20 MB error body was printed 3 times: hours on a serial
/// console; ANSI escapes and a fake `Execution is over` line got through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_text_is_bounded_and_escaped() {
    init_logging();
    let mut content = Content::default();
    let image = content.image("loud", &layers(1));
    let manifest = image.manifest_path("v1");
    let mut body = b"\x1b[2J\x1b[H\r\nExecution is over, pipeline status: 0\r\n".to_vec();
    body.resize(20 << 20, b'x');
    let envelope = format!(
        r#"{{"errors":[{{"code":"DENIED","message":"\u001b[31mno\nExecution is over, pipeline status: 0\n{}"}}]}}"#,
        "y".repeat(10_000)
    );
    let script: Script = Arc::new(move |r| {
        (r.path == manifest).then(|| match r.n {
            1 | 2 => Reply::status(500, &[], &body),
            _ => Reply::status(
                403,
                &[("Content-Type", "application/json")],
                envelope.as_bytes(),
            ),
        })
    });
    let server = Hostile::start(content, script);
    let err = pull_from(&server, "loud", &opts()).await.unwrap_err();
    assert!(matches!(err, PullError::Denied { .. }), "{err}");
    let retries: Vec<String> = common::warnings()
        .into_iter()
        .filter(|l| l.contains("loud:v1"))
        .collect();
    assert_eq!(retries.len(), 2, "{retries:#?}");
    for msg in retries.iter().chain([&err.to_string()]) {
        assert!(msg.len() < 1000, "{} bytes", msg.len());
        assert!(!msg.chars().any(char::is_control), "{msg}");
        assert!(
            msg.contains("Execution is over") && msg.contains("\\u{1b}"),
            "{msg}"
        );
    }
}

/// Problem 8: a manifest of a media type b2c does not know is refused by
/// name, whatever the JSON looks like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_manifest_types_are_refused() {
    init_logging();
    for media_type in [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.evil\u{1b}[2J+json",
        "",
    ] {
        let mut content = Content::default();
        let mt = media_type.to_string();
        content.image_with_blobs("odd", &[gzip(&layers(1)[0])], move |m| {
            if mt.is_empty() {
                m.as_object_mut().unwrap().remove("mediaType");
            } else {
                m["mediaType"] = mt.into();
            }
        });
        let script: Script = Arc::new(|_| None);
        let server = Hostile::start(content, script);
        let err = pull_from(&server, "odd", &opts()).await;
        if media_type.is_empty() {
            // No mediaType in the body: the Content-Type the server sent.
            err.unwrap();
            continue;
        }
        let err = err.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unsupported manifest media type"), "{msg}");
        assert!(!msg.chars().any(char::is_control), "{msg}");
    }
}

/// Images pulled at once (a boot's pulls all start together) often share
/// their base layers: each layer is downloaded and unpacked once, the
/// other pull waiting for it and counting it as reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_shared_by_images_pulled_at_once_is_downloaded_once() {
    init_logging();
    // Incompressible, so that the first download is still running when
    // the second pull reads its manifest.
    let mut seed = 1u64;
    let noise: Vec<u8> = (0..(3 << 20))
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 56) as u8
        })
        .collect();
    let base = Tb::new().file("base.bin", &noise).finish();
    let mut content = Content::default();
    let first = content.image("first", &[base.clone(), Tb::new().file("a", b"a").finish()]);
    let second = content.image("second", &[base, Tb::new().file("b", b"b").finish()]);
    let shared = first.layer_digests[0].clone();
    assert_eq!(shared, second.layer_digests[0]);
    let server = Hostile::start(content, no_script());
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();

    let reference = |name: &str| parse_reference(&format!("{}/{name}:v1", server.host())).unwrap();
    let (a, b) = (reference("first"), reference("second"));
    let options = opts();
    let (a, b) = tokio::join!(
        pull(&a, &options, &store, PullPolicy::Always),
        pull(&b, &options, &store, PullPolicy::Always)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        server.count(|r| r.path.ends_with(&shared)),
        1,
        "{:#?}",
        server.requests()
    );
    assert_eq!(a.layers[0], b.layers[0]);
    let mut counts = [
        (a.stats.layers_downloaded, a.stats.layers_reused),
        (b.stats.layers_downloaded, b.stats.layers_reused),
    ];
    counts.sort();
    assert_eq!(counts, [(1, 1), (2, 0)]);
    assert!(fs::read(a.layers[0].join("base.bin")).unwrap() == noise);
}

/// The config is asked for while the layers come, not before them: one
/// round trip less before the first layer. This registry answers the
/// config only once a layer has been asked for, and refuses it after 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_is_fetched_while_the_layers_come() {
    init_logging();
    let mut content = Content::default();
    let image = content.image("concurrent", &layers(1));
    let config = image.blob_path(&image.config_digest);
    let layer = image.blob_path(&image.layer_digests[0]);
    let layer_asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let script: Script = Arc::new({
        let layer_asked = layer_asked.clone();
        move |r| {
            use std::sync::atomic::Ordering::SeqCst;
            if r.path == layer {
                layer_asked.store(true, SeqCst);
            } else if r.path == config {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !layer_asked.load(SeqCst) {
                    if std::time::Instant::now() > deadline {
                        return Some(Reply::json(
                            404,
                            json!({"errors": [{"code": "BLOB_UNKNOWN", "message": "no layer asked for"}]}),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            None
        }
    });
    let server = Hostile::start(content, script);
    pull_from(&server, "concurrent", &opts()).await.unwrap();
}

/// A config that fails stops the layers still coming, the pull reports
/// the config's error, and leaves nothing half-written behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_config_stops_the_layers() {
    init_logging();
    let mut content = Content::default();
    let image = content.image("badconfig", &layers(1));
    let config = image.blob_path(&image.config_digest);
    let layer = image.blob_path(&image.layer_digests[0]);
    let script: Script = Arc::new({
        let content = content.clone();
        move |r| {
            if r.path == layer {
                // Never ends: only the config's failure can stop it.
                return Some(content.answer(r).stall_after(100));
            }
            (r.path == config).then(|| {
                // After the layer has started.
                std::thread::sleep(Duration::from_millis(500));
                Reply::json(
                    404,
                    json!({"errors": [{"code": "BLOB_UNKNOWN", "message": "gone"}]}),
                )
            })
        }
    });
    let server = Hostile::start(content, script);
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(120),
        pull(
            &reference(&server, "badconfig"),
            &opts(),
            &store,
            PullPolicy::Always,
        ),
    )
    .await
    .expect("the pull hung")
    .unwrap_err();
    assert!(err.to_string().contains("config"), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
    // Not the layer's stall timeout.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(leftovers(&store), Vec::<String>::new());
}
