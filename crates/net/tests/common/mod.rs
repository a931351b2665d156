//! Harness shared by the integration tests: network namespaces, daemons
//! killed by pid, and the client re-executed inside a namespace.
//!
//! The client must run inside its namespace with its own view of /sys (link
//! discovery and MAC addresses come from sysfs), which `ip netns exec`
//! provides by remounting /sys. So each test sets the namespaces up, then
//! re-executes its test binary under `ip netns exec` to run a
//! `netns_child_*` test, which does nothing unless the parent asked for it
//! through the environment. The parent checks the kernel state the child
//! left behind.
//!
//! Nothing leaves the machine: every address lives in namespaces these
//! tests create and delete.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use b2c_net::NetError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CHILD_ENV: &str = "B2C_NET_TEST_CHILD";
const DIR_ENV: &str = "B2C_NET_TEST_DIR";

// ------------------------------------------------------------ parent side

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and needs root"
    );
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "b2cnet-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    pub fn exec(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        cmd
    }

    /// A /proc/sys value as seen from inside the namespace.
    pub fn sysctl(&self, path: &str) -> String {
        run(self.exec("cat").arg(path)).trim().to_owned()
    }

    /// Waits until something listens on TCP `addr` (`ip:port`) in here.
    pub fn wait_for_listener(&self, addr: &str) {
        let start = Instant::now();
        loop {
            let out = run(self.exec("ss").args(["-Hltn", "src", addr]));
            if !out.trim().is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nothing listens on {addr}"
            );
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A process we started, killed (by its pid) on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for_file(path: &Path, what: &str) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not start"
        );
        sleep(Duration::from_millis(50));
    }
}

/// Servers, each logging to `DIR/NAME.log`, killed on drop. Declare it
/// before the namespaces in a struct so that it drops first.
pub struct Daemons {
    dir: PathBuf,
    running: Vec<(String, Process)>,
}

impl Daemons {
    pub fn new(dir: &Path) -> Self {
        Daemons {
            dir: dir.to_owned(),
            running: Vec::new(),
        }
    }

    pub fn spawn(&mut self, name: &str, mut cmd: Command) {
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.running.push((name.to_owned(), Process(child)));
    }

    pub fn stop(&mut self, name: &str) {
        self.running.retain(|(n, _)| n != name);
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// dnsmasq in `ns` on `iface` (whose address is `server`), handing out
    /// `range` (`first,last`) and naming itself as router, DNS and NTP
    /// server, with T1 and T2 short enough to see a renewal soon (its
    /// minimum lease is 2 min).
    pub fn start_dnsmasq(
        &mut self,
        ns: &Netns,
        name: &str,
        iface: &str,
        server: &str,
        range: &str,
    ) {
        let pid_file = self.dir.join(format!("{name}.pid"));
        let mut cmd = ns.exec("dnsmasq");
        cmd.args([
            "-k",
            "--conf-file=/dev/null",
            "--user=root",
            "--bind-interfaces",
            "--except-interface=lo",
            "--no-resolv",
            "--no-hosts",
            "--port=0",
            "--dhcp-option=option:domain-name,lab.test",
            "--dhcp-option=option:T1,10",
            "--dhcp-option=option:T2,20",
            "--dhcp-authoritative",
            "--no-ping",
            "--log-dhcp",
            "--log-facility=-",
        ])
        .arg(format!("--interface={iface}"))
        .arg(format!("--dhcp-option=option:router,{server}"))
        .arg(format!("--dhcp-option=option:ntp-server,{server}"))
        .arg(format!("--dhcp-option=option:dns-server,{server}"))
        .arg(format!("--dhcp-range={range},255.255.255.0,2m"))
        .arg(format!(
            "--dhcp-leasefile={}",
            self.dir.join(format!("{name}.leases")).display()
        ))
        .arg(format!("--pid-file={}", pid_file.display()));
        self.spawn(name, cmd);
        wait_for_file(&pid_file, name);
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        // Stop the servers first so that their logs are complete.
        let names: Vec<String> = self.running.drain(..).map(|(name, _)| name).collect();
        for name in names {
            // Captured by libtest: shown on failure or with --nocapture.
            eprintln!("--- {name} log\n{}", self.log(&name));
        }
    }
}

/// Starts `test` (a `netns_child_*` test of this binary) inside `ns`; it
/// finds `dir` through [`child_dir`].
pub fn start_child(ns: &Netns, dir: &Path, test: &str) -> ChildRun {
    let out = dir.join(format!("{test}.out"));
    let err = dir.join(format!("{test}.err"));
    let mut cmd = ns.exec(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    ChildRun {
        process: Process(cmd.spawn().unwrap()),
        test: test.to_owned(),
        out,
        err,
    }
}

pub struct ChildRun {
    process: Process,
    test: String,
    out: PathBuf,
    err: PathBuf,
}

impl ChildRun {
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for the child to print `KEY value` and returns the value.
    pub fn wait_for(&mut self, key: &str, limit: Duration) -> String {
        self.wait_until(&format!("report {key}"), limit, |c| {
            find_reported(&c.stdout(), key).map(str::to_owned)
        })
    }

    /// Waits for the child to log a line containing `text`.
    pub fn wait_for_log(&mut self, text: &str, limit: Duration) {
        self.wait_until(&format!("log {text:?}"), limit, |c| {
            c.stderr().contains(text).then_some(())
        })
    }

    fn wait_until<T>(
        &mut self,
        what: &str,
        limit: Duration,
        found: impl Fn(&Self) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = found(self) {
                return value;
            }
            let status = self.process.0.try_wait().unwrap();
            if status.is_some() || start.elapsed() > limit {
                self.dump();
                panic!("child {} did not {what} ({status:?})", self.test);
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the child to exit and returns its stdout; panics if it
    /// failed or is still running after `limit`.
    pub fn finish(&mut self, limit: Duration) -> String {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > limit {
                break None;
            }
            sleep(Duration::from_millis(100));
        };
        self.dump();
        let test = &self.test;
        match status {
            Some(status) if status.success() => self.stdout(),
            Some(status) => panic!("child {test} failed: {status}"),
            None => panic!("child {test} still running after {limit:?}"),
        }
    }

    /// Captured by libtest: shown on failure or with --nocapture.
    fn dump(&self) {
        let test = &self.test;
        eprintln!(
            "--- {test} stdout\n{}\n--- {test} stderr\n{}",
            self.stdout(),
            self.stderr()
        );
    }
}

/// The value the child printed as `KEY value` once the line is complete
/// (libtest may have put its "test … ..." prefix on the same line).
pub fn find_reported<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    let rest = stdout.split(&format!("{key} ")).nth(1)?;
    rest.contains('\n')
        .then(|| rest.split_whitespace().next())
        .flatten()
}

pub fn reported<'a>(stdout: &'a str, key: &str) -> &'a str {
    find_reported(stdout, key).unwrap_or_else(|| panic!("child did not report {key}:\n{stdout}"))
}

// ------------------------------------------------------------- child side

/// Whether this process is the child the parent started to run `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
}

pub fn child_dir() -> PathBuf {
    std::env::var_os(DIR_ENV).unwrap().into()
}

static WARNINGS: AtomicUsize = AtomicUsize::new(0);

/// How many warnings b2c_net has logged in this process.
pub fn warnings_logged() -> usize {
    WARNINGS.load(Ordering::Relaxed)
}

struct StderrLogger(Instant);

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if record.target().starts_with("b2c_net") {
            if record.level() == log::Level::Warn {
                WARNINGS.fetch_add(1, Ordering::Relaxed);
            }
            let t = self.0.elapsed();
            eprintln!(
                "[{:>3}.{:03}] {:<5} {}",
                t.as_secs(),
                t.subsec_millis(),
                record.level(),
                record.args()
            );
        }
    }
    fn flush(&self) {}
}

/// Runs the child's body on a runtime like the one init uses.
pub fn child_runtime<F: std::future::Future>(body: F) -> F::Output {
    let _ = log::set_boxed_logger(Box::new(StderrLogger(Instant::now())));
    log::set_max_level(log::LevelFilter::Debug);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

// ------------------------------------------------------- HTTP test servers

/// What a scripted server received: each request's head.
pub type Heads = Arc<Mutex<Vec<String>>>;

/// A one-shot-per-connection HTTP server on `addr` (port 0: any) whose
/// `n`th answer (from 0) is `answer(n, head)`, written as is. Returns what
/// it received and its port.
pub async fn scripted(
    addr: &str,
    answer: impl Fn(usize, &str) -> String + Send + 'static,
) -> (Heads, u16) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Heads::default();
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let reply = {
                let mut heads = seen.lock().unwrap();
                heads.push(head.clone());
                answer(heads.len() - 1, &head)
            };
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    (heads, port)
}

/// A 200 answer with `body`.
pub fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The message and status of a failed fetch.
pub fn fetch_error(result: Result<Vec<u8>, NetError>) -> (String, Option<u16>) {
    match result {
        Ok(body) => panic!("fetched {} bytes", body.len()),
        Err(e @ NetError::Fetch { status, .. }) => (e.to_string(), status),
        Err(e) => panic!("not a fetch error: {e}"),
    }
}
