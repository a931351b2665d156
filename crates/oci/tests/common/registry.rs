//! The distribution registry (Debian's docker-registry) on loopback, and
//! OCI image layouts pushed to it with skopeo.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{sha256, Codec};

/// A registry process, killed (by its pid) and reaped on drop, whatever
/// happened in the test.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub storage: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        let tls = tls
            .map(|(cert, key)| {
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                )
            })
            .unwrap_or_default();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n{tls}",
                storage.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(dir.path().join("registry.err")).unwrap())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let reg = Registry {
            child,
            port,
            storage,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the registry (by its pid) and reaps it: its port then refuses
    /// connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The requests b2c made, from the registry's access log (on its
    /// stdout): `(method, path, status)`.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"b2c/"))
            .filter_map(|l| {
                let (_, req) = l.split_once(" \"")?;
                let (req, rest) = req.split_once("\" ")?;
                let mut words = req.split(' ');
                let (method, path) = (words.next()?, words.next()?);
                let status = rest.split(' ').next()?.parse().ok()?;
                Some((method.to_string(), path.to_string(), status))
            })
            .collect()
    }

    /// The digests of the blobs b2c downloaded (`GET …/blobs/<digest>`
    /// answered 200, or 206 for a `Range` request), in order.
    pub fn blob_downloads(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|(m, p, s)| m == "GET" && matches!(s, 200 | 206) && p.contains("/blobs/"))
            .filter_map(|(_, p, _)| p.rsplit_once("/blobs/").map(|(_, d)| d.to_string()))
            .collect()
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let err = self.log.with_file_name("registry.err");
            eprintln!(
                "--- registry log ---\n{}",
                fs::read_to_string(err).unwrap_or_default()
            );
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI image layout under construction.
pub struct Layout {
    pub dir: PathBuf,
}

pub struct Image {
    pub manifest: serde_json::Value,
    pub layer_digests: Vec<String>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn blob(&self, data: &[u8]) -> String {
        let digest = sha256(data);
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::write(self.dir.join("blobs/sha256").join(hex), data).unwrap();
        digest
    }

    pub fn descriptor(&self, media_type: &str, data: &[u8]) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": self.blob(data), "size": data.len()})
    }

    /// A manifest for these layer tarballs (gzip'd here); returns its
    /// descriptor-to-be and the layer digests.
    pub fn image(&self, arch: &str, layers: &[Vec<u8>]) -> Image {
        self.image_with(arch, layers, &vec![Codec::Gzip(1); layers.len()])
    }

    /// The same, each layer compressed as `codecs` says.
    pub fn image_with(&self, arch: &str, layers: &[Vec<u8>], codecs: &[Codec]) -> Image {
        assert_eq!(layers.len(), codecs.len());
        let blobs: Vec<Vec<u8>> = layers
            .iter()
            .zip(codecs)
            .map(|(t, c)| c.compress(t))
            .collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/hello"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|t| sha256(t)).collect::<Vec<_>>()},
        });
        let layer_descs: Vec<_> = blobs
            .iter()
            .zip(codecs)
            .map(|(b, c)| self.descriptor(c.media_type(), b))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": self.descriptor(
                "application/vnd.oci.image.config.v1+json",
                config.to_string().as_bytes()
            ),
            "layers": layer_descs,
        });
        Image {
            manifest,
            layer_digests: blobs.iter().map(|b| sha256(b)).collect(),
        }
    }

    pub fn tag(&self, tags: &[(&str, serde_json::Value)]) {
        let manifests: Vec<_> = tags
            .iter()
            .map(|(tag, desc)| {
                let mut d = desc.clone();
                d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
                d
            })
            .collect();
        fs::write(
            self.dir.join("index.json"),
            json!({"schemaVersion": 2, "manifests": manifests}).to_string(),
        )
        .unwrap();
    }

    pub fn manifest_desc(&self, image: &Image) -> serde_json::Value {
        self.descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            image.manifest.to_string().as_bytes(),
        )
    }

    pub fn push(&self, tag: &str, dest: &str, extra: &[&str]) {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{dest}")));
    }
}
