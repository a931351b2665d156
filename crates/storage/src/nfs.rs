//! NFS mounts with the kernel's client and no mount.nfs: what mount.nfs
//! would hand to mount(2) is built here ([`NfsRequest`], pure), and the
//! mount is retried while the server cannot be reached yet ([`mount`]).
//!
//! Without mount.nfs, the kernel wants the server's address (`addr=`): the
//! host is resolved with the boot's DNS. NFSv4 gets `clientaddr=` too, as
//! mount.nfs passes it (the local address facing the server, for 4.0's
//! callbacks). NFSv3 gets `nolock` unless the options say otherwise: lock
//! requests need a local rpc.statd, which the initramfs has not. The
//! kernel asks the server's rpcbind for the NFS and mountd ports of v3
//! itself, unless `port=` and `mountport=` name them.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::mount::parse_options;
use crate::StorageError;

/// How long a mount is retried while the server cannot be reached, as
/// mount.nfs retries a foreground mount (its `retry=` option, in minutes,
/// changes it).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(120);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// An NFS protocol version to ask the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfsVersion {
    V3,
    /// NFSv4 with this minor version.
    V4(u8),
}

impl std::fmt::Display for NfsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NfsVersion::V3 => f.write_str("3"),
            NfsVersion::V4(minor) => write!(f, "4.{minor}"),
        }
    }
}

/// A `b2c.filesystem` of type `nfs` or `nfs4`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsRequest {
    /// The server's name or address, as written (without brackets).
    pub host: String,
    /// `HOST:/export`, as the kernel records the mount's source.
    pub source: String,
    /// The versions to try, in order: one when the options name it, else
    /// as mount.nfs negotiates (4.2, 4.1, 4.0, then 3 for type `nfs`).
    pub versions: Vec<NfsVersion>,
    pub flags: MsFlags,
    /// The kernel's options, without the version and the addresses.
    pub options: Vec<String>,
    /// How long to retry while the server cannot be reached.
    pub retry: Duration,
}

/// What mount(2) gets for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    pub fstype: &'static str,
    pub source: String,
    pub flags: MsFlags,
    pub data: String,
}

/// Whether `fstype` is one this module mounts.
pub fn is_nfs(fstype: &str) -> bool {
    matches!(fstype, "nfs" | "nfs4")
}

/// Options only mount(8), mount.nfs or fstab read: the kernel refuses them.
fn userspace_only(opt: &str) -> bool {
    let key = opt.split('=').next().unwrap_or(opt);
    matches!(
        key,
        "bg" | "fg"
            | "_netdev"
            | "nofail"
            | "auto"
            | "noauto"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "comment"
    ) || key.starts_with("x-")
}

fn parse_version(value: &str) -> Result<Vec<NfsVersion>, String> {
    let all_v4 = || (0..=2).rev().map(NfsVersion::V4).collect::<Vec<_>>();
    Ok(match value {
        "3" | "3.0" => vec![NfsVersion::V3],
        "4" => all_v4(),
        _ => match value.strip_prefix("4.").map(str::parse::<u8>) {
            Some(Ok(minor)) if minor <= 2 => vec![NfsVersion::V4(minor)],
            _ => {
                return Err(format!(
                    "vers={value}: the kernel's NFS client speaks 3, 4, 4.0, 4.1 and 4.2"
                ))
            }
        },
    })
}

impl NfsRequest {
    /// Checks a `type=nfs|nfs4,src=HOST:/export,opts=…` filesystem. Pure.
    pub fn parse(fstype: &str, src: &str, opts: &str) -> Result<NfsRequest, String> {
        let (host, path, source) = match src.strip_prefix('[') {
            Some(rest) => rest
                .split_once("]:")
                .map(|(h, p)| (h.to_string(), p, format!("[{h}]:{p}")))
                .ok_or_else(|| format!("src={src}: expected [ADDRESS]:/EXPORT"))?,
            None => src
                .split_once(':')
                .map(|(h, p)| (h.to_string(), p, format!("{h}:{p}")))
                .ok_or_else(|| format!("src={src}: expected HOST:/EXPORT"))?,
        };
        if host.is_empty() || !path.starts_with('/') {
            return Err(format!("src={src}: expected HOST:/EXPORT"));
        }
        let (flags, data) = parse_options(opts);
        let mut versions = None;
        let mut minor = None;
        let mut retry = DEFAULT_RETRY;
        let mut options = Vec::new();
        for opt in data.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
            match key {
                "vers" | "nfsvers" => versions = Some(parse_version(value)?),
                "v3" => versions = Some(vec![NfsVersion::V3]),
                "v4" => versions = Some(parse_version("4")?),
                "minorversion" => {
                    minor = Some(
                        value
                            .parse::<u8>()
                            .ok()
                            .filter(|m| *m <= 2)
                            .ok_or_else(|| format!("{opt}: expected 0, 1 or 2"))?,
                    )
                }
                "retry" => {
                    let minutes: u64 = value
                        .parse()
                        .map_err(|_| format!("{opt}: expected a number of minutes"))?;
                    retry = Duration::from_secs(minutes.saturating_mul(60));
                }
                // Found here, and for v4 the address facing the server.
                "addr" | "clientaddr" => {}
                _ if userspace_only(opt) => {}
                _ => options.push(opt.to_string()),
            }
        }
        let mut versions = versions.unwrap_or_else(|| {
            let mut all = parse_version("4").expect("4 is a version");
            if fstype == "nfs" {
                all.push(NfsVersion::V3);
            }
            all
        });
        if fstype == "nfs4" && versions.contains(&NfsVersion::V3) {
            return Err("type=nfs4 cannot mount with vers=3 (use type=nfs)".into());
        }
        if let Some(minor) = minor {
            versions = vec![NfsVersion::V4(minor)];
        }
        Ok(NfsRequest {
            source,
            host,
            versions,
            flags,
            options,
            retry,
        })
    }

    /// mount(2)'s arguments for `version` against the server at `server`,
    /// from this machine's `client` address (facing the server).
    pub fn mount_for(
        &self,
        version: NfsVersion,
        server: IpAddr,
        client: Option<IpAddr>,
    ) -> NfsMount {
        let mut data = self.options.clone();
        let fstype = match version {
            NfsVersion::V3 => {
                let locking =
                    |o: &String| o == "lock" || o == "nolock" || o.starts_with("local_lock");
                if !data.iter().any(locking) {
                    data.push("nolock".into());
                }
                data.push("vers=3".into());
                data.push(format!("addr={server}"));
                "nfs"
            }
            NfsVersion::V4(minor) => {
                data.push(format!("vers=4.{minor}"));
                data.push(format!("addr={server}"));
                if let Some(client) = client {
                    data.push(format!("clientaddr={client}"));
                }
                "nfs4"
            }
        };
        NfsMount {
            fstype,
            source: self.source.clone(),
            flags: self.flags,
            data: data.join(","),
        }
    }

    /// The kernel modules these versions need (besides `nfs` itself,
    /// which they depend on).
    pub fn kernel_modules(&self) -> Vec<String> {
        let mut out = vec!["fs-nfs".to_string()];
        if self.versions.contains(&NfsVersion::V3) {
            out.push("nfsv3".into());
        }
        if self.versions.iter().any(|v| matches!(v, NfsVersion::V4(_))) {
            out.push("nfsv4".into());
        }
        out
    }
}

/// Whether a mount error may pass once the server is up (or the network
/// is): refused and timed out connections, unreachable hosts, and the EIO
/// that RPC failures become.
pub fn is_transient(e: Errno) -> bool {
    matches!(
        e,
        Errno::ECONNREFUSED
            | Errno::ETIMEDOUT
            | Errno::EHOSTUNREACH
            | Errno::ENETUNREACH
            | Errno::EHOSTDOWN
            | Errno::ECONNRESET
            | Errno::EAGAIN
            | Errno::EIO
    )
}

/// The wait before attempt `n + 1` (n ≥ 1): 1, 2, 4, 8, then 10 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(8)).min(MAX_BACKOFF)
}

/// Why one attempt failed.
enum Attempt {
    /// The host name does not resolve (yet: DNS may come up late).
    Resolve(String),
    Mount(Errno),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Resolve(e) => f.write_str(e),
            Attempt::Mount(e) => write!(f, "{e}"),
        }
    }
}

/// The local address a connection to `server` would use: a connected
/// UDP socket sends nothing, but the kernel picks its route and address.
fn local_address(server: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match server {
        IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        IpAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect((server, 2049)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

fn attempt(req: &NfsRequest, target: &Path) -> Result<NfsVersion, Attempt> {
    let server = (req.host.as_str(), 2049)
        .to_socket_addrs()
        .map_err(|e| Attempt::Resolve(format!("cannot resolve {}: {e}", req.host)))?
        .next()
        .ok_or_else(|| Attempt::Resolve(format!("{} has no address", req.host)))?
        .ip();
    let client = local_address(server);
    let mut last = Errno::EPROTONOSUPPORT;
    for &version in &req.versions {
        let m = req.mount_for(version, server, client);
        log::debug!(
            "mount -t {} -o {:?},{} {} {}",
            m.fstype,
            m.flags,
            m.data,
            m.source,
            target.display()
        );
        match nix::mount::mount(
            Some(m.source.as_str()),
            target,
            Some(m.fstype),
            m.flags,
            Some(m.data.as_str()),
        ) {
            Ok(()) => return Ok(version),
            // The server does not speak this version: the next one.
            Err(Errno::EPROTONOSUPPORT) => last = Errno::EPROTONOSUPPORT,
            Err(e) => return Err(Attempt::Mount(e)),
        }
    }
    Err(Attempt::Mount(last))
}

/// Mounts `req` on `target`, retrying for `req.retry` while the server
/// cannot be reached or its name not resolved, with a WARNING line per
/// failed attempt. `option` names the filesystem in those lines.
pub fn mount(req: &NfsRequest, target: &Path, option: &str) -> Result<NfsVersion, StorageError> {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt(req, target) {
            Ok(version) => {
                log::info!(
                    "{option}: {} mounted on {} (NFSv{version})",
                    req.source,
                    target.display()
                );
                return Ok(version);
            }
            Err(e) => e,
        };
        let transient = match &error {
            Attempt::Resolve(_) => true,
            Attempt::Mount(e) => is_transient(*e),
        };
        let wait = backoff(attempts);
        if !transient || start.elapsed() + wait > req.retry {
            return Err(StorageError::Nfs {
                src: req.source.clone(),
                attempts,
                elapsed: start.elapsed(),
                error: error.to_string(),
                transient,
            });
        }
        log::warn!(
            "{option}: cannot mount {} yet ({error}); retrying in {} s (attempt {}, for at \
             most {} s)",
            req.source,
            wait.as_secs(),
            attempts + 1,
            req.retry.as_secs()
        );
        std::thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nfs4_as_mount_nfs_passes_it() {
        let r = NfsRequest::parse("nfs", "ci-gateway:/imagestore/public", "ro,vers=4.2,nolock")
            .unwrap();
        assert_eq!(r.host, "ci-gateway");
        assert_eq!(r.versions, [NfsVersion::V4(2)]);
        let m = r.mount_for(r.versions[0], ip("10.0.0.1"), Some(ip("10.0.0.42")));
        assert_eq!(
            m,
            NfsMount {
                fstype: "nfs4",
                source: "ci-gateway:/imagestore/public".into(),
                flags: MsFlags::MS_RDONLY,
                data: "nolock,vers=4.2,addr=10.0.0.1,clientaddr=10.0.0.42".into(),
            }
        );
    }

    #[test]
    fn nfs3_gets_nolock_unless_told() {
        let r = NfsRequest::parse("nfs", "10.0.0.1:/srv", "vers=3,port=2049").unwrap();
        assert_eq!(r.versions, [NfsVersion::V3]);
        let m = r.mount_for(NfsVersion::V3, ip("10.0.0.1"), Some(ip("10.0.0.42")));
        assert_eq!(m.fstype, "nfs");
        assert_eq!(m.data, "port=2049,nolock,vers=3,addr=10.0.0.1");
        let r = NfsRequest::parse("nfs", "10.0.0.1:/srv", "nfsvers=3,local_lock=all").unwrap();
        let m = r.mount_for(NfsVersion::V3, ip("10.0.0.1"), None);
        assert_eq!(m.data, "local_lock=all,vers=3,addr=10.0.0.1");
    }

    #[test]
    fn versions_negotiated_as_mount_nfs_does() {
        let v4 = [NfsVersion::V4(2), NfsVersion::V4(1), NfsVersion::V4(0)];
        let r = NfsRequest::parse("nfs", "h:/x", "").unwrap();
        assert_eq!(r.versions[..3], v4);
        assert_eq!(r.versions[3], NfsVersion::V3);
        assert_eq!(r.kernel_modules(), ["fs-nfs", "nfsv3", "nfsv4"]);
        let r = NfsRequest::parse("nfs4", "h:/x", "").unwrap();
        assert_eq!(r.versions, v4);
        assert_eq!(r.kernel_modules(), ["fs-nfs", "nfsv4"]);
        let r = NfsRequest::parse("nfs", "h:/x", "vers=4,minorversion=1").unwrap();
        assert_eq!(r.versions, [NfsVersion::V4(1)]);
        let r = NfsRequest::parse("nfs", "h:/x", "v3").unwrap();
        assert_eq!(r.kernel_modules(), ["fs-nfs", "nfsv3"]);
        assert!(NfsRequest::parse("nfs", "h:/x", "vers=5").is_err());
        assert!(NfsRequest::parse("nfs4", "h:/x", "vers=3").is_err());
    }

    #[test]
    fn userspace_options_stay_out_of_the_kernel() {
        let r = NfsRequest::parse(
            "nfs",
            "h:/x",
            "bg,retry=1,_netdev,x-systemd.automount,addr=1.2.3.4,rsize=65536,noatime",
        )
        .unwrap();
        assert_eq!(r.retry, Duration::from_secs(60));
        assert_eq!(r.options, ["rsize=65536"]);
        assert_eq!(r.flags, MsFlags::MS_NOATIME);
        let m = r.mount_for(NfsVersion::V4(1), ip("10.0.0.1"), None);
        assert_eq!(m.data, "rsize=65536,vers=4.1,addr=10.0.0.1");
        assert_eq!(
            NfsRequest::parse("nfs", "h:/x", "").unwrap().retry,
            DEFAULT_RETRY
        );
        assert!(NfsRequest::parse("nfs", "h:/x", "retry=soon").is_err());
    }

    #[test]
    fn sources() {
        let r = NfsRequest::parse("nfs", "[fd00::1]:/srv", "").unwrap();
        assert_eq!(r.host, "fd00::1");
        assert_eq!(r.source, "[fd00::1]:/srv");
        let m = r.mount_for(NfsVersion::V4(2), ip("fd00::1"), None);
        assert_eq!(m.data, "vers=4.2,addr=fd00::1");
        for bad in ["/srv", "host:srv", ":/srv", "[fd00::1]/srv"] {
            assert!(NfsRequest::parse("nfs", bad, "").is_err(), "{bad}");
        }
    }

    #[test]
    fn retries_back_off_and_know_what_passes() {
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert!(is_transient(Errno::ECONNREFUSED));
        assert!(is_transient(Errno::ETIMEDOUT));
        assert!(!is_transient(Errno::EACCES));
        assert!(!is_transient(Errno::ENOENT));
    }
}
