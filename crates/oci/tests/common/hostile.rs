//! A hostile registry: a small HTTP/1.1 server on 127.0.0.1 whose answers
//! the test scripts, request by request. By default it serves the images
//! added with [`Content::image`] as a registry does (`/v2/`, manifests,
//! blobs with `Range`); a [`Script`] replaces any answer with a crafted
//! one: an error with `Retry-After`, a cut body, a stall, a trickle, an
//! endless body, a token with a control character...
//!
//! One thread per connection, `Connection: close` on every answer; every
//! thread ends when the server is dropped (a stalled or endless answer
//! checks the stop flag), and nothing listens beyond 127.0.0.1.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{gzip, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One request, as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// How many times this path was asked for, this one included.
    pub n: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The start of a `Range: bytes=N-` request.
    pub fn range_start(&self) -> Option<u64> {
        self.header("range")?
            .strip_prefix("bytes=")?
            .split('-')
            .next()?
            .parse()
            .ok()
    }
}

/// An answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A complete answer. A blob asked for with `Range` gets 206 and
    /// `Content-Range` from [`Reply::content`].
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A [`Reply::Full`] that announces its whole body (`Content-Length`),
    /// sends its first `at` bytes, and hangs up.
    Cut { full: Box<Reply>, at: usize },
    /// A [`Reply::Full`] that announces its whole body, sends its first
    /// `at` bytes, then nothing more until the client gives up.
    StallAfter { full: Box<Reply>, at: usize },
    /// Sends the body (no length announced) one byte every `every`.
    Trickle { body: Vec<u8>, every: Duration },
    /// `status`, no length, then the same byte forever (until the client
    /// hangs up).
    Endless { status: u16, content_type: String },
    /// Accepts the connection and closes it without a word.
    Hangup,
}

impl Reply {
    pub fn status(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        Reply::Full {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::status(
            status,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// This answer, cut after `at` bytes of its body.
    pub fn cut(self, at: usize) -> Reply {
        Reply::Cut {
            full: Box::new(self),
            at,
        }
    }

    /// This answer, stalled after `at` bytes of its body.
    pub fn stall_after(self, at: usize) -> Reply {
        Reply::StallAfter {
            full: Box::new(self),
            at,
        }
    }

    /// `content` as a registry serves it: 200, or 206 from the start the
    /// request's `Range` asks for.
    pub fn content(req: &Request, content_type: &str, data: &[u8]) -> Reply {
        let digest = sha256(data);
        match req.range_start() {
            Some(start) if (start as usize) <= data.len() => Reply::Full {
                status: 206,
                headers: vec![
                    ("Content-Type".into(), content_type.into()),
                    (
                        "Content-Range".into(),
                        format!(
                            "bytes {start}-{}/{}",
                            data.len().saturating_sub(1),
                            data.len()
                        ),
                    ),
                ],
                body: data[start as usize..].to_vec(),
            },
            _ => Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), content_type.into()),
                    ("Docker-Content-Digest".into(), digest),
                ],
                body: data.to_vec(),
            },
        }
    }
}

/// Decides the answer to a request; `None`: the default one.
pub type Script = Arc<dyn Fn(&Request) -> Option<Reply> + Send + Sync>;

/// What the server holds: path → (content type, bytes).
#[derive(Clone, Default)]
pub struct Content {
    routes: HashMap<String, (String, Vec<u8>)>,
}

/// An image as [`Content::image`] made it.
pub struct TestImage {
    pub name: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

impl TestImage {
    pub fn manifest_path(&self, tag: &str) -> String {
        format!("/v2/{}/manifests/{tag}", self.name)
    }

    pub fn blob_path(&self, digest: &str) -> String {
        format!("/v2/{}/blobs/{digest}", self.name)
    }
}

impl Content {
    pub fn add(&mut self, path: &str, content_type: &str, data: Vec<u8>) {
        self.routes
            .insert(path.to_string(), (content_type.to_string(), data));
    }

    /// `name:v1`: a config and these layers (tarballs, gzip'd here).
    pub fn image(&mut self, name: &str, layers: &[Vec<u8>]) -> TestImage {
        let blobs: Vec<Vec<u8>> = layers.iter().map(|l| gzip(l)).collect();
        self.image_with_blobs(name, &blobs, |_| {})
    }

    /// `name:v1` made of these layer blobs as given; `edit` may change
    /// the manifest (a wrong digest, an odd media type) before it is
    /// served.
    pub fn image_with_blobs(
        &mut self,
        name: &str,
        blobs: &[Vec<u8>],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> TestImage {
        let config = json!({"architecture": "amd64", "os": "linux",
                            "config": {"Cmd": ["/bin/true"]},
                            "rootfs": {"type": "layers", "diff_ids": []}})
        .to_string()
        .into_bytes();
        let config_digest = sha256(&config);
        let config_len = config.len();
        self.add(
            &format!("/v2/{name}/blobs/{config_digest}"),
            "application/octet-stream",
            config,
        );
        let mut descs = Vec::new();
        let mut layer_digests = Vec::new();
        for blob in blobs {
            let digest = sha256(blob);
            descs.push(json!({"mediaType": LAYER_GZIP, "digest": digest, "size": blob.len()}));
            self.add(
                &format!("/v2/{name}/blobs/{digest}"),
                "application/octet-stream",
                blob.clone(),
            );
            layer_digests.push(digest);
        }
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_len},
            "layers": descs,
        });
        edit(&mut manifest);
        let manifest = manifest.to_string().into_bytes();
        let manifest_digest = sha256(&manifest);
        self.add(
            &format!("/v2/{name}/manifests/v1"),
            OCI_MANIFEST,
            manifest.clone(),
        );
        self.add(
            &format!("/v2/{name}/manifests/{manifest_digest}"),
            OCI_MANIFEST,
            manifest.clone(),
        );
        TestImage {
            name: name.to_string(),
            manifest,
            manifest_digest,
            config_digest,
            layer_digests,
        }
    }

    /// The default answer: the content, as a registry serves it.
    pub fn answer(&self, req: &Request) -> Reply {
        if req.path == "/v2/" {
            return Reply::json(200, json!({}));
        }
        match self.routes.get(&req.path) {
            Some((ctype, data)) => Reply::content(req, ctype, data),
            None => Reply::json(
                404,
                json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}),
            ),
        }
    }
}

pub struct Hostile {
    pub port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    bytes_sent: Arc<Mutex<HashMap<String, u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    /// Serves `content`, each answer first offered to `script`.
    pub fn start(content: Content, script: Script) -> Hostile {
        Hostile::start_with(content, script, false)
    }

    /// As [`Hostile::start`], but a TLS handshake is met with silence (a
    /// middlebox that swallows it) instead of a hang-up.
    pub fn start_stalling_tls(content: Content, script: Script) -> Hostile {
        Hostile::start_with(content, script, true)
    }

    fn start_with(content: Content, script: Script, stall_tls: bool) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let bytes_sent: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let content = Arc::new(content);
        let thread = {
            let (stop, log, bytes_sent) = (stop.clone(), log.clone(), bytes_sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (stop, log, sent) = (stop.clone(), log.clone(), bytes_sent.clone());
                            let (content, script) = (content.clone(), script.clone());
                            std::thread::spawn(move || {
                                serve(conn, &content, &script, &stop, &log, &sent, stall_tls)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Hostile {
            port,
            stop,
            log,
            bytes_sent,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&Request) -> bool) -> usize {
        self.requests().iter().filter(|r| pred(r)).count()
    }

    /// Body bytes written for this path, over all its answers.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.bytes_sent
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_head(conn: &mut TcpStream, stall_tls: bool, stop: &AtomicBool) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        // A TLS ClientHello (tls_verify=false tries HTTPS first): hang up,
        // as a plain HTTP server would after answering 400.
        if head.len() == 1 && !head[0].is_ascii_alphabetic() && stall_tls {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if (head.len() == 1 && !head[0].is_ascii_alphabetic()) || head.len() > 65536 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn serve(
    mut conn: TcpStream,
    content: &Content,
    script: &Script,
    stop: &AtomicBool,
    log: &Mutex<Vec<Request>>,
    sent: &Mutex<HashMap<String, u64>>,
    stall_tls: bool,
) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = conn.set_nodelay(true);
    let Some(head) = read_head(&mut conn, stall_tls, stop) else {
        return;
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("/").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let req = {
        let mut log = log.lock().unwrap();
        let n = log.iter().filter(|r| r.path == path).count() + 1;
        let req = Request {
            method,
            path,
            headers,
            n,
        };
        log.push(req.clone());
        req
    };
    let reply = script(&req).unwrap_or_else(|| content.answer(&req));
    let reply_kind = match reply {
        Reply::StallAfter { .. } => Kind::Stall,
        _ => Kind::Other,
    };
    let count = |n: usize| *sent.lock().unwrap().entry(req.path.clone()).or_default() += n as u64;
    let head = |status: u16, headers: &[(String, String)], len: Option<usize>| {
        let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(len) = len {
            h.push_str(&format!("Content-Length: {len}\r\n"));
        }
        h.push_str("Connection: close\r\n\r\n");
        h
    };
    let stalled = |conn: &mut TcpStream| {
        // Until the client hangs up or the test ends.
        let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            match conn.read(&mut buf) {
                Ok(0) => return,
                Err(e)
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut =>
                {
                    return
                }
                _ => {}
            }
        }
    };
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let _ = conn.write_all(head(status, &headers, Some(body.len())).as_bytes());
            if req.method != "HEAD" && conn.write_all(&body).is_ok() {
                count(body.len());
            }
        }
        Reply::Cut { full, at } | Reply::StallAfter { full, at } => {
            let stall = matches!(reply_kind, Kind::Stall);
            let Reply::Full {
                status,
                headers,
                body,
            } = *full
            else {
                panic!("only a full answer can be cut");
            };
            let at = at.min(body.len());
            let _ = conn.write_all(head(status, &headers, Some(body.len())).as_bytes());
            if conn.write_all(&body[..at]).is_ok() {
                count(at);
            }
            let _ = conn.flush();
            if stall {
                stalled(&mut conn);
            } else {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
        Reply::Trickle { body, every } => {
            let _ = conn.write_all(head(200, &[], None).as_bytes());
            for b in body {
                if stop.load(Ordering::Relaxed) || conn.write_all(&[b]).is_err() {
                    return;
                }
                count(1);
                std::thread::sleep(every);
            }
        }
        Reply::Endless {
            status,
            content_type,
        } => {
            let h = vec![("Content-Type".to_string(), content_type)];
            let _ = conn.write_all(head(status, &h, None).as_bytes());
            let chunk = vec![b'A'; 64 << 10];
            let start = Instant::now();
            // Bounded all the same: a broken client must not fill the disk
            // of the test machine's memory for ever.
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                if conn.write_all(&chunk).is_err() {
                    return;
                }
                count(chunk.len());
            }
        }
        Reply::Hangup => {}
    }
}

enum Kind {
    Stall,
    Other,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
