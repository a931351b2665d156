//! The distribution registry on loopback, serving the large image to the
//! pull benchmark over plain HTTP. Stopped (by its pid) when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{run, Result};

pub struct Registry {
    child: Child,
    pub addr: String,
}

impl Registry {
    pub fn start(dir: &Path) -> Result<Registry> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        // A free port: bind, read it, let go.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("registry.log"))?)
            .stderr(std::fs::File::create(dir.join("registry.err"))?)
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e}"))?;
        let registry = Registry { child, addr };
        let start = Instant::now();
        while !registry.answers() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "the registry did not answer on {} within 20 s: see {}",
                    registry.addr,
                    dir.join("registry.err").display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(registry)
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        let mut answer = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.")
            && answer.contains(" 200 ")
    }

    /// Pushes `oci:LAYOUT:TAG` as `NAME`; returns its reference.
    pub fn push(&self, layout: &Path, tag: &str, name: &str) -> Result<String> {
        let reference = format!("{}/{name}", self.addr);
        run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}")))?;
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
