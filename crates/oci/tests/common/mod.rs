//! Helpers shared by the integration tests: tarballs built byte by byte
//! (so hostile ones can be made), gzip and zstd, digests, and a console
//! logger.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Mutex, Once};

use sha2::Digest as _;
use tar::{EntryType, Header};

pub mod hostile;
pub mod registry;

/// A tarball builder that writes names verbatim: `tar::Builder`'s own
/// path setters refuse `..`, which hostile-archive tests need.
pub struct Tb {
    b: tar::Builder<Vec<u8>>,
}

pub const MTIME: u64 = 1_600_000_000;

impl Default for Tb {
    fn default() -> Self {
        Tb::new()
    }
}

impl Tb {
    pub fn new() -> Tb {
        Tb {
            b: tar::Builder::new(Vec::new()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        &mut self,
        path: &str,
        kind: EntryType,
        data: &[u8],
        link: &str,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME);
        let old = h.as_old_mut();
        assert!(path.len() < 100 && link.len() < 100);
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.raw(path, EntryType::Regular, data, "", 0o644, 0, 0)
    }

    pub fn file_mode(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        self.raw(path, EntryType::Regular, data, "", mode, uid, gid)
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.raw(path, EntryType::Directory, b"", "", 0o755, 0, 0)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path, EntryType::Symlink, b"", target, 0o777, 0, 0)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path, EntryType::Link, b"", target, 0o644, 0, 0)
    }

    pub fn node(&mut self, path: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_path(path).unwrap();
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }

    /// A PAX extended header applying to the next member.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            write!(data, "{len} {k}=").unwrap();
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.raw("././@PaxHeader", EntryType::XHeader, &data, "", 0o644, 0, 0)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.b.finish().unwrap();
        std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

pub use qemu_tests::images::Codec;

/// Every way a layer may travel, as the tests compress them.
pub const CODECS: [Codec; 3] = [Codec::Gzip(1), Codec::Zstd(3), Codec::ZstdChunked];

pub fn gzip(data: &[u8]) -> Vec<u8> {
    Codec::Gzip(1).compress(data)
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info || m.target().starts_with("b2c_oci")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            // The init's logger adds "WARNING: " / "ERROR: " itself.
            let line = r.args().to_string();
            eprintln!("[{}] {line}", r.level());
            if r.level() == log::Level::Warn {
                WARNINGS.lock().unwrap().push(line.clone());
            }
            LINES.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The lines logged as warnings (`WARNING: ` on the console).
pub fn warnings() -> Vec<String> {
    WARNINGS.lock().unwrap().clone()
}

/// Every line logged so far, by every test of this binary.
pub fn logged() -> Vec<String> {
    LINES.lock().unwrap().clone()
}

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = log::set_logger(&StderrLogger);
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Options for a test registry on loopback: plain HTTP, `attempts`
/// attempts 50 ms apart, so that a failure is seen in well under a second.
pub fn quick_opts(attempts: u32) -> b2c_oci::RegistryOptions {
    b2c_oci::RegistryOptions {
        tls_verify: false,
        retry: b2c_oci::RetryPolicy {
            attempts,
            first_delay: std::time::Duration::from_millis(50),
            ..b2c_oci::RetryPolicy::default()
        },
        ..b2c_oci::RegistryOptions::default()
    }
}
