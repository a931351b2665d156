//! A registry with faults, for boots that must ride them out: on
//! [`FAULTY_REGISTRY`] (10.99.0.1:5001), a small proxy in the test network
//! in front of a distribution registry of its own (the TestNet's storage,
//! on 127.0.0.1:5002 of the namespace). The proxy answers the first
//! requests `429 Too Many Requests` with a `Retry-After`, and can kill its
//! registry (SIGKILL, by pid) once some bytes went to the guest, starting
//! it again a while later: a registry that dies in the middle of a pull
//! and comes back.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::net::{in_netns, TestNet};
use crate::{Context, Error, Result};

/// Where the guest reaches the faulty registry.
pub const FAULTY_REGISTRY: &str = "10.99.0.1:5001";
const BACKEND: &str = "127.0.0.1:5002";

/// What goes wrong, and when.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The first this many requests get `429` with `Retry-After:
    /// retry_after` seconds.
    pub too_many_requests: usize,
    pub retry_after: u32,
    /// Once this many bytes went to the guest, the registry is killed…
    pub kill_after_bytes: Option<u64>,
    /// …and started again this much later.
    pub down_for: Duration,
}

/// One request as the proxy saw it: its request line and `Range` header.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub line: String,
    pub range: Option<String>,
    /// Bytes the guest had received from the registry before it.
    pub after_bytes: u64,
    pub answered_429: bool,
}

struct State {
    faults: Faults,
    stop: AtomicBool,
    requests: AtomicUsize,
    bytes: AtomicU64,
    killed: AtomicBool,
    seen: Mutex<Vec<SeenRequest>>,
    events: Mutex<Vec<String>>,
    backend: Mutex<Option<Child>>,
    ns: String,
    config: std::path::PathBuf,
}

/// Stops the proxy and its registry when dropped.
pub struct FaultyRegistry {
    state: Arc<State>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestNet {
    /// Starts a [`FaultyRegistry`] serving this network's images.
    pub fn start_faulty_registry(&self, faults: Faults) -> Result<FaultyRegistry> {
        let config = self.dir().join("registry-faulty.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 health:\n  storagedriver:\n    enabled: false\n\
                 http:\n  addr: {BACKEND}\n  secret: b2c-qemu-tests\n",
                self.dir().join("registry").display()
            ),
        )
        .context(|| format!("write {}", config.display()))?;
        let state = Arc::new(State {
            faults,
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            seen: Mutex::default(),
            events: Mutex::default(),
            backend: Mutex::new(None),
            ns: self.name().to_string(),
            config,
        });
        start_backend(&state)?;
        let listener = in_netns(self.name(), || TcpListener::bind(FAULTY_REGISTRY))?
            .context(|| format!("bind {FAULTY_REGISTRY}"))?;
        listener
            .set_nonblocking(true)
            .context(|| "a non-blocking listener".to_string())?;
        let s = state.clone();
        // Network namespaces are per thread, and threads inherit their
        // creator's: the proxy's threads all live in the test network.
        let thread = in_netns(self.name(), move || {
            std::thread::spawn(move || accept_loop(listener, s))
        })?;
        Ok(FaultyRegistry {
            state,
            thread: Some(thread),
        })
    }
}

impl FaultyRegistry {
    /// Every request whose head the proxy read, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }

    /// What the proxy did: `killed the registry after N bytes`,
    /// `registry started again`.
    pub fn events(&self) -> Vec<String> {
        self.state.events.lock().unwrap().clone()
    }
}

impl Drop for FaultyRegistry {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // A restart may still be pending: it sees the stop flag.
        stop_backend(&self.state);
    }
}

fn start_backend(state: &State) -> Result<()> {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &state.ns, "docker-registry", "serve"])
        .arg(&state.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .context(|| "start the faulty registry's backend".to_string())?;
    *state.backend.lock().unwrap() = Some(child);
    let start = Instant::now();
    loop {
        let up = in_netns(&state.ns, || TcpStream::connect(BACKEND).is_ok())?;
        if up {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(Error::new("the faulty registry's backend did not start"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL by pid, then reaped.
fn stop_backend(state: &State) {
    if let Some(mut child) = state.backend.lock().unwrap().take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let s = state.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve(mut client: TcpStream, state: &Arc<State>) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
        // A TLS ClientHello (the guest tries HTTPS first): hang up, as a
        // plain HTTP server would.
        if (head.len() == 1 && !byte[0].is_ascii_alphabetic()) || head.len() > 65536 {
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let limited = n <= state.faults.too_many_requests;
    state.seen.lock().unwrap().push(SeenRequest {
        line: text.lines().next().unwrap_or("").to_string(),
        range: text.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range:")
                .map(|_| l[6..].trim().to_string())
        }),
        after_bytes: state.bytes.load(Ordering::SeqCst),
        answered_429: limited,
    });
    if limited {
        let body =
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limited by the test"}]}"#;
        write!(
            client,
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            state.faults.retry_after,
            body.len()
        )?;
        return Ok(());
    }
    let mut backend = TcpStream::connect(BACKEND)?;
    backend.write_all(&head)?;
    // The rest of the request (and later ones on this connection) as is.
    let mut upstream_in = client.try_clone()?;
    let mut upstream_out = backend.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_in, &mut upstream_out);
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match backend.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        client.write_all(&buf[..n])?;
        let total = state.bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let due = state.faults.kill_after_bytes.is_some_and(|k| total >= k);
        if due && !state.killed.swap(true, Ordering::SeqCst) {
            stop_backend(state);
            state
                .events
                .lock()
                .unwrap()
                .push(format!("killed the registry after {total} bytes"));
            let s = state.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + s.faults.down_for;
                while Instant::now() < until && !s.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let event = match start_backend(&s) {
                    Ok(()) => "registry started again".to_string(),
                    Err(e) => format!("registry not started again: {e}"),
                };
                s.events.lock().unwrap().push(event);
            });
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
