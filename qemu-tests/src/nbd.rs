//! NBD servers in the test network: Debian's nbd-server, one per port as
//! CI farms run them, each exporting one file under a name.
//!
//! nbd-server forks a process per client and, without `-d`, daemonizes
//! (with `-d` it would serve one client at a time, and a device with
//! several connections would hang). Its pid comes from its pid file; on
//! SIGTERM it stops its clients' processes too, which is what a gateway
//! restart looks like to a guest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::net::{in_netns, tcp_probe, TestNet};
use crate::{run, Context, Error, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nbd-server, stopped (by its pid) on drop.
pub struct NbdServer {
    ns: String,
    config: PathBuf,
    pid_file: PathBuf,
    port: u16,
    pid: Option<i32>,
}

impl TestNet {
    /// Starts nbd-server on 10.99.0.1:`port` exporting `file` as `name`.
    pub fn start_nbd(&self, port: u16, name: &str, file: &Path) -> Result<NbdServer> {
        let dir = self.dir().join(format!("nbd-{port}"));
        std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        let config = dir.join("config");
        std::fs::write(
            &config,
            format!(
                "[generic]\n    listenaddr = 10.99.0.1\n    port = {port}\n    \
                 allowlist = false\n[{name}]\n    exportname = {}\n",
                file.display()
            ),
        )
        .context(|| format!("write {}", config.display()))?;
        let mut server = NbdServer {
            ns: self.name().to_string(),
            config,
            pid_file: dir.join("pid"),
            port,
            pid: None,
        };
        server.start(self)?;
        Ok(server)
    }
}

impl NbdServer {
    fn start(&mut self, net: &TestNet) -> Result<()> {
        let _ = std::fs::remove_file(&self.pid_file);
        run(
            net.command("nbd-server")
                .arg("-C")
                .arg(&self.config)
                .arg("-p")
                .arg(&self.pid_file),
            "nbd-server",
        )?;
        let start = Instant::now();
        loop {
            if self.pid.is_none() {
                self.pid = std::fs::read_to_string(&self.pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
            }
            let port = self.port;
            if self.pid.is_some() && in_netns(&self.ns, move || tcp_probe(port))?.is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::new(format!(
                    "nbd-server on port {} is not up after {READY_TIMEOUT:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server and the processes of its clients: their
    /// connections close, as when a gateway restarts.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else {
            return;
        };
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT && alive(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            eprintln!("qemu-tests: nbd-server {pid} ignored SIGTERM, killing it");
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Starts it again, with the same exports on the same port.
    pub fn restart(&mut self, net: &TestNet) -> Result<()> {
        self.stop();
        self.start(net)
    }
}

/// Whether `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
