//! An NFS server in the test network (NFS-Ganesha, userspace, v3 and v4,
//! with the VFS backend) and image stores written by podman for it to
//! export.
//!
//! Why Ganesha: this host's kernel has no nfsd (no `nfsd` filesystem, no
//! module), so the kernel NFS server cannot run here. Ganesha registers
//! its programs with rpcbind and exits when it cannot; rpcbind listens on
//! a Unix socket in `/run` besides its ports, so each server gets its own
//! rpcbind in a private mount namespace with a tmpfs on `/run`: servers of
//! parallel tests never meet, and nothing of the host's `/run` is touched.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::net::{in_netns, tcp_probe, TestNet, REGISTRY_HTTP};
use crate::{read_tail, run, Context, Error, Result};

/// NFS and mountd ports of the server (rpcbind also answers on 111).
pub const NFS_PORT: u16 = 2049;
pub const MOUNTD_PORT: u16 = 20048;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running NFS server (Ganesha and its rpcbind), stopped (by the pid of
/// the shell that started both, which stops them by theirs) and reaped on
/// drop.
pub struct NfsServer {
    child: Child,
    log: PathBuf,
}

/// The shell that runs rpcbind and Ganesha in their own mount namespace
/// and, on SIGTERM, stops the two by their pids.
const RUN_SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755 b2c-nfs /run
rpcbind -f &
rpcbind=$!
# Ganesha registers with rpcbind as it starts: wait for its socket.
i=0
while [ ! -S /run/rpcbind.sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
ganesha.nfsd -F -f "$1" -L "$2" -p /run/ganesha.pid -N NIV_EVENT &
ganesha=$!
trap 'kill $ganesha $rpcbind 2>/dev/null; wait $ganesha; wait $rpcbind; exit 0' TERM INT
wait $ganesha
kill $rpcbind 2>/dev/null
wait $rpcbind
"#;

impl TestNet {
    /// Starts an NFS server on 10.99.0.1 exporting `dir` read-only as
    /// `pseudo` (the NFSv4 path; NFSv3 mounts `dir` itself), to every
    /// client, root not squashed; v3 (without NLM) and v4. Returns once it
    /// accepts connections.
    pub fn start_nfs(&self, dir: &Path, pseudo: &str) -> Result<NfsServer> {
        let work = self.dir().join("nfs");
        std::fs::create_dir_all(work.join("recovery"))
            .context(|| format!("create {}", work.display()))?;
        let config = work.join("ganesha.conf");
        std::fs::write(
            &config,
            format!(
                "NFS_CORE_PARAM {{\n  Bind_Addr = 10.99.0.1;\n  NFS_Port = {NFS_PORT};\n  \
                 MNT_Port = {MOUNTD_PORT};\n  Enable_NLM = false;\n  Enable_RQUOTA = false;\n  \
                 Protocols = 3, 4;\n}}\n\
                 NFSV4 {{\n  Graceless = true;\n  RecoveryRoot = {};\n}}\n\
                 EXPORT {{\n  Export_Id = 1;\n  Path = {};\n  Pseudo = {pseudo};\n  \
                 Access_Type = RO;\n  Squash = No_Root_Squash;\n  SecType = sys;\n  \
                 Protocols = 3, 4;\n  Transports = TCP, UDP;\n  FSAL {{ Name = VFS; }}\n}}\n",
                work.join("recovery").display(),
                dir.display()
            ),
        )
        .context(|| format!("write {}", config.display()))?;
        let script = work.join("run.sh");
        std::fs::write(&script, RUN_SCRIPT).context(|| format!("write {}", script.display()))?;
        let log = self.dir().join("nfs.log");
        let out = File::create(&log).context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context(|| "dup a log fd".to_string())?;
        let ganesha_log = self.dir().join("ganesha.log");
        let child = self
            .command("unshare")
            .args(["--mount", "--propagation", "private", "sh"])
            .arg(&script)
            .arg(&config)
            .arg(&ganesha_log)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context(|| "cannot start the NFS server (unshare, rpcbind, ganesha.nfsd)".into())?;
        let mut server = NfsServer { child, log };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(Error::new(format!(
                    "the NFS server did not start ({status}): {}\n{}",
                    read_tail(&server.log, 20),
                    read_tail(&ganesha_log, 20)
                )));
            }
            if in_netns(self.name(), || tcp_probe(NFS_PORT))?.is_ok() {
                return Ok(server);
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::new(format!(
                    "the NFS server is not up after {READY_TIMEOUT:?}: {}",
                    read_tail(&ganesha_log, 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A containers-storage image store written by podman itself
    /// (`podman --root … --storage-driver overlay pull`) holding these
    /// images of the test registry (`b2c/busybox:latest`…), under this
    /// TestNet's directory. Returns its root, podman's `--root`.
    pub fn podman_store(&self, images: &[&str]) -> Result<PathBuf> {
        let dir = self.dir().join("podman");
        for image in images {
            run(
                self.command("podman")
                    .arg("--root")
                    .arg(dir.join("root"))
                    .arg("--runroot")
                    .arg(dir.join("run"))
                    .args(["--storage-driver", "overlay", "pull", "--tls-verify=false"])
                    .arg(format!("{REGISTRY_HTTP}/{image}")),
                &format!("podman pull {image}"),
            )?;
        }
        Ok(dir.join("root"))
    }

    /// The full ID (64 hex digits) podman gives an image of
    /// [`TestNet::podman_store`].
    pub fn podman_image_id(&self, image: &str) -> Result<String> {
        let dir = self.dir().join("podman");
        let out = run(
            self.command("podman")
                .arg("--root")
                .arg(dir.join("root"))
                .arg("--runroot")
                .arg(dir.join("run"))
                .args(["--storage-driver", "overlay", "images", "--no-trunc"])
                .args(["--format", "{{.ID}}"])
                .arg(format!("{REGISTRY_HTTP}/{image}")),
            "podman images",
        )?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let id = id.strip_prefix("sha256:").unwrap_or(&id).to_string();
        if id.len() != 64 {
            return Err(Error::new(format!(
                "podman gave {id:?} as the ID of {image}"
            )));
        }
        Ok(id)
    }
}

impl NfsServer {
    /// SIGTERM to the shell, which stops Ganesha and rpcbind; SIGKILL if
    /// it lingers. Reaped either way.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("qemu-tests: the NFS server ignored SIGTERM, killing its shell");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        read_tail(&self.log, 50)
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
