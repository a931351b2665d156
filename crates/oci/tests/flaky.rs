//! Retries against a deliberately unreliable registry: a minimal HTTP/1.1
//! server in the test that answers 503 (or 429) once, cuts a blob in the
//! middle once, ignores `Range` (so oci-client's own verifying stream is
//! used), and fails one blob for good.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use b2c_oci::{parse_reference, pull, LayerStore, PullError, PullPolicy, RegistryOptions};
use common::{gzip, init_logging, logged, sha256, Tb};
use serde_json::json;

struct Blob {
    content_type: &'static str,
    data: Vec<u8>,
}

/// Serves `routes` (path → blob); `faults` decides, per request, whether
/// to misbehave: returns Some(status) for an error answer, Some(0) to cut
/// the body in half.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Faults = Arc<dyn Fn(&str, usize) -> Option<u16> + Send + Sync>;

impl Server {
    fn start(routes: HashMap<String, Blob>, faults: Faults) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            conn.set_nonblocking(false).unwrap();
                            serve(conn, &routes, &faults, &hits);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    routes: &HashMap<String, Blob>,
    faults: &Faults,
    hits: &Mutex<HashMap<String, usize>>,
) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        // A TLS ClientHello (tls_verify=false tries HTTPS first): hang up,
        // as a plain HTTP server would after answering 400.
        if head.len() == 1 && !head[0].is_ascii_alphabetic() {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let n = {
        let mut hits = hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let respond = |conn: &mut TcpStream, status: &str, ctype: &str, body: &[u8], send: usize| {
        let digest = sha256(body);
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
             Docker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(&body[..send]);
    };
    if path == "/v2/" {
        return respond(&mut conn, "200 OK", "application/json", b"{}", 2);
    }
    let Some(blob) = routes.get(&path) else {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#;
        return respond(
            &mut conn,
            "404 Not Found",
            "application/json",
            body,
            body.len(),
        );
    };
    match faults(&path, n) {
        None => respond(
            &mut conn,
            "200 OK",
            blob.content_type,
            &blob.data,
            blob.data.len(),
        ),
        Some(0) => respond(
            &mut conn,
            "200 OK",
            blob.content_type,
            &blob.data,
            blob.data.len() / 2,
        ),
        Some(code) => respond(&mut conn, &format!("{code} Oops"), "text/plain", b"oops", 4),
    }
}

fn image(routes: &mut HashMap<String, Blob>, name: &str, layers: &[Vec<u8>]) -> Vec<String> {
    let mut add = |content_type, data: Vec<u8>| {
        let digest = sha256(&data);
        routes.insert(
            format!("/v2/test/{name}/blobs/{digest}"),
            Blob { content_type, data },
        );
        digest
    };
    let config = json!({"architecture": "amd64", "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": []}})
    .to_string()
    .into_bytes();
    let config_len = config.len();
    let config_digest = add("application/octet-stream", config);
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for l in layers {
        let gz = gzip(l);
        let len = gz.len();
        let d = add("application/octet-stream", gz);
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": d, "size": len}),
        );
        digests.push(d);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_len},
        "layers": descs,
    })
    .to_string()
    .into_bytes();
    routes.insert(
        format!("/v2/test/{name}/manifests/v1"),
        Blob {
            content_type: "application/vnd.oci.image.manifest.v1+json",
            data: manifest,
        },
    );
    digests
}

fn opts() -> RegistryOptions {
    common::quick_opts(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    init_logging();
    let mut routes = HashMap::new();
    let big = Tb::new().file("big", &vec![1u8; 300_000]).finish();
    let flaky = image(
        &mut routes,
        "flaky",
        &[Tb::new().file("a", b"a").finish(), big],
    );
    let broken = image(&mut routes, "broken", &[Tb::new().file("b", b"b").finish()]);
    let cut = format!("/v2/test/flaky/blobs/{}", flaky[1]);
    let dead = format!("/v2/test/broken/blobs/{}", broken[0]);
    let faults: Faults = Arc::new(move |path: &str, n: usize| {
        if path == "/v2/test/flaky/manifests/v1" && n == 1 {
            Some(503)
        } else if path == cut && n == 1 {
            Some(0)
        } else if path == dead {
            Some(500)
        } else {
            None
        }
    });
    let server = Server::start(routes, faults);
    let host = format!("127.0.0.1:{}", server.port);
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();

    let r = parse_reference(&format!("{host}/test/flaky:v1")).unwrap();
    let pulled = pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    assert_eq!(
        std::fs::read(pulled.layers[1].join("big")).unwrap().len(),
        300_000
    );
    let retries: Vec<String> = logged()
        .into_iter()
        .filter(|l| l.contains("test/flaky:v1") && l.contains("retrying"))
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(
        retries.iter().any(|l| l.contains("manifest")),
        "{retries:?}"
    );
    assert!(
        retries.iter().any(|l| l.contains(&flaky[1][..19])),
        "{retries:?}"
    );
    // The interrupted attempt left nothing behind.
    let names: Vec<_> = std::fs::read_dir(store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("sha256-")), "{names:?}");

    // A blob that keeps failing with 500: retried, then reported with the
    // layer digest.
    let r = parse_reference(&format!("{host}/test/broken:v1")).unwrap();
    let err = pull(&r, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PullError::Unreachable { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&broken[0]), "{err}");

    // An unknown repository: 404, not retried.
    let r = parse_reference(&format!("{host}/test/none:v1")).unwrap();
    let err = pull(&r, &opts(), &store, PullPolicy::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_is_retried() {
    init_logging();
    let mut routes = HashMap::new();
    let layers = image(
        &mut routes,
        "limited",
        &[Tb::new().file("l", b"l").finish()],
    );
    let blob = format!("/v2/test/limited/blobs/{}", layers[0]);
    let faults: Faults = Arc::new(move |path: &str, n: usize| {
        let first = n == 1;
        if first && (path == "/v2/test/limited/manifests/v1" || path == blob) {
            Some(429)
        } else {
            None
        }
    });
    let server = Server::start(routes, faults);
    let tmp = tempfile::tempdir().unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let r = parse_reference(&format!("127.0.0.1:{}/test/limited:v1", server.port)).unwrap();
    pull(&r, &opts(), &store, PullPolicy::Always).await.unwrap();
    let retries: Vec<String> = logged()
        .into_iter()
        .filter(|l| l.contains("test/limited:v1") && l.contains("retrying"))
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries.iter().all(|l| l.contains("429")), "{retries:?}");
}
