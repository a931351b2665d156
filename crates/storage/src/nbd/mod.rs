//! `b2c.nbd`: network block devices for diskless machines, without
//! nbd-client. b2c connects to the server and does the handshake itself
//! ([`handshake`]), then hands the sockets to the kernel's `nbd` module
//! over generic netlink ([`genl`]: `NBD_CMD_CONNECT` with the export's
//! size, block size and flags, an I/O timeout and a dead-connection
//! timeout). A thread then listens to the module's multicast group: when
//! a connection dies (the server restarted), the kernel holds the I/O for
//! up to the dead-connection timeout and says so (`NBD_CMD_LINK_DEAD`);
//! the thread connects again, does the handshake and hands the new socket
//! over (`NBD_CMD_RECONFIGURE`), so that a gateway restart does not fail
//! a long job.

pub mod genl;
pub mod handshake;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use b2c_cmdline::Nbd;

use crate::StorageError;
use genl::{Genl, Message};
use handshake::Export;

/// How long the first connection is retried while the server cannot be
/// reached yet.
pub const CONNECT_RETRY: Duration = Duration::from_secs(120);
/// How long the kernel holds I/O while a connection is dead, waiting for
/// b2c to hand it a new one: a gateway's restart takes less.
pub const DEAD_CONNECTION_TIMEOUT: Duration = Duration::from_secs(600);
/// A request the server does not answer in this time marks its
/// connection dead (it is then retried on a new one).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The option as written, for messages.
fn option(nbd: &Nbd) -> String {
    format!("b2c.nbd={}", nbd.device)
}

/// Why one connection attempt failed, and whether waiting may help.
struct Failure {
    what: String,
    transient: bool,
}

fn connect_once(nbd: &Nbd) -> Result<(TcpStream, Export), Failure> {
    let addrs: Vec<SocketAddr> = (nbd.host.as_str(), nbd.port)
        .to_socket_addrs()
        .map_err(|e| Failure {
            what: format!("cannot resolve {}: {e}", nbd.host),
            transient: true,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                // The handshake is bounded; the kernel owns the socket's
                // timeouts afterwards.
                let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
                let export = handshake::handshake(&mut stream, &nbd.name).map_err(|e| Failure {
                    transient: matches!(e, handshake::HandshakeError::Io(_)),
                    what: format!("{}:{}: {e}", nbd.host, nbd.port),
                })?;
                let _ = stream.set_read_timeout(None);
                return Ok((stream, export));
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(Failure {
        what: last.unwrap_or_else(|| format!("{} has no address", nbd.host)),
        transient: true,
    })
}

/// One connection with its handshake done, retried for `retry` while the
/// server cannot be reached, a WARNING per failed attempt.
fn connect(nbd: &Nbd, retry: Duration) -> Result<(TcpStream, Export), StorageError> {
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let failure = match connect_once(nbd) {
            Ok(ok) => return Ok(ok),
            Err(f) => f,
        };
        let wait = Duration::from_secs(1u64 << (attempts - 1).min(8)).min(MAX_BACKOFF);
        if !failure.transient || start.elapsed() + wait > retry {
            return Err(StorageError::Nbd {
                device: nbd.device.clone(),
                what: if failure.transient {
                    format!(
                        "{} (gave up after {attempts} attempt{} in {} s)",
                        failure.what,
                        if attempts == 1 { "" } else { "s" },
                        start.elapsed().as_secs()
                    )
                } else {
                    failure.what
                },
            });
        }
        log::warn!(
            "{}: cannot reach the NBD server yet ({}); retrying in {} s (attempt {}, for at \
             most {} s)",
            option(nbd),
            failure.what,
            wait.as_secs(),
            attempts + 1,
            retry.as_secs()
        );
        std::thread::sleep(wait);
    }
}

/// The block size the kernel gets: the server's preferred one when it is
/// a power of two the kernel takes (512 to 4096), else 512.
pub fn block_size(export: &Export) -> u64 {
    match export.block_size {
        Some(b) if b.is_power_of_two() && (512..=4096).contains(&b) => b as u64,
        _ => 512,
    }
}

/// `NBD_CMD_CONNECT` of device `index` with these sockets. Pure.
pub fn connect_message(family: u16, index: u32, export: &Export, fds: &[RawFd]) -> Vec<u8> {
    let mut m: Message = genl::sockets_message(family, genl::NBD_CMD_CONNECT, index, fds);
    m.u64(genl::NBD_ATTR_SIZE_BYTES, export.size)
        .u64(genl::NBD_ATTR_BLOCK_SIZE_BYTES, block_size(export))
        .u64(genl::NBD_ATTR_SERVER_FLAGS, export.flags as u64)
        .u64(genl::NBD_ATTR_TIMEOUT, IO_TIMEOUT.as_secs())
        .u64(
            genl::NBD_ATTR_DEAD_CONN_TIMEOUT,
            DEAD_CONNECTION_TIMEOUT.as_secs(),
        );
    m.finish()
}

/// An attached network block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub device: PathBuf,
    pub size: u64,
    pub connections: u32,
    pub read_only: bool,
}

/// Attaches every `b2c.nbd` and starts the thread that reconnects their
/// dead connections. The kernel's `nbd` module must be loaded. A device
/// that cannot be attached is an error naming its option; the others are
/// attached anyway (the caller decides what a missing one means).
pub fn attach_all(nbds: &[Nbd]) -> Vec<Result<Attached, StorageError>> {
    if nbds.is_empty() {
        return Vec::new();
    }
    let family = Genl::open().and_then(|g| g.resolve(genl::NBD_FAMILY, genl::NBD_MCAST_GROUP));
    let (family, group) = match family {
        Ok(f) => f,
        Err(e) => {
            return nbds
                .iter()
                .map(|n| {
                    Err(StorageError::Nbd {
                        device: n.device.clone(),
                        what: format!("the kernel's nbd module does not answer: {e}"),
                    })
                })
                .collect()
        }
    };
    // Listening before connecting: no link-dead event is missed.
    let events = group.and_then(|g| {
        let s = Genl::open().ok()?;
        s.join(g).ok()?;
        Some(s)
    });
    if events.is_none() {
        log::warn!(
            "b2c.nbd: cannot listen to the nbd module's events: dead connections will not be \
             reconnected"
        );
    }
    // Each device attaches in parallel: a late server of one does not
    // hold the others up.
    let results: Vec<Result<Attached, StorageError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nbds
            .iter()
            .map(|nbd| scope.spawn(move || attach(family, nbd)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| attach_panicked()))
            .collect()
    });
    let attached: Vec<Nbd> = nbds
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n.clone())
        .collect();
    if let Some(events) = events {
        if !attached.is_empty() {
            std::thread::Builder::new()
                .name("nbd-reconnect".into())
                .spawn(move || watch(events, family, attached))
                .ok();
        }
    }
    results
}

fn attach_panicked() -> Result<Attached, StorageError> {
    Err(StorageError::Nbd {
        device: "?".into(),
        what: "the attaching thread panicked".into(),
    })
}

fn attach(family: u16, nbd: &Nbd) -> Result<Attached, StorageError> {
    let (first, export) = connect(nbd, CONNECT_RETRY)?;
    let mut streams = vec![first];
    for _ in 1..nbd.connections {
        streams.push(connect(nbd, CONNECT_TIMEOUT)?.0);
    }
    if nbd.connections > 1 && export.flags & handshake::FLAG_CAN_MULTI_CONN == 0 {
        log::debug!(
            "{}: the server does not say it is safe with several connections",
            option(nbd)
        );
    }
    let fds: Vec<RawFd> = streams.iter().map(|s| s.as_raw_fd()).collect();
    let msg = connect_message(family, nbd.index, &export, &fds);
    // A socket of its own: answers to another thread's request could
    // arrive on a shared one.
    Genl::open()
        .and_then(|sock| sock.request(&msg))
        .map_err(|e| StorageError::Nbd {
            device: nbd.device.clone(),
            what: format!("the kernel refused the connection (NBD_CMD_CONNECT): {e}"),
        })?;
    // The kernel holds its own references to the sockets now.
    drop(streams);
    let attached = Attached {
        device: PathBuf::from(&nbd.device),
        size: export.size,
        connections: nbd.connections,
        read_only: export.flags & handshake::FLAG_READ_ONLY != 0,
    };
    log::info!(
        "{}: attached to {} ({}, {} connection{}{})",
        option(nbd),
        nbd.server(),
        b2c_system::info::human_bytes(export.size),
        nbd.connections,
        if nbd.connections == 1 { "" } else { "s" },
        if attached.read_only {
            ", read-only"
        } else {
            ""
        }
    );
    Ok(attached)
}

/// For as long as the machine runs: a dead connection of one of `nbds`
/// is replaced by a new one, retried until the kernel gives up on it.
fn watch(events: Genl, family: u16, nbds: Vec<Nbd>) {
    let control = match Genl::open() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("b2c.nbd: cannot reconnect dead connections: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match events.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("b2c.nbd: the nbd module's events stopped: {e}");
                return;
            }
        };
        for m in genl::parse_messages(&buf[..n]) {
            let genl::Received::Genl {
                cmd: genl::NBD_CMD_LINK_DEAD,
                attrs,
                ..
            } = m
            else {
                continue;
            };
            let index = genl::attrs(attrs)
                .into_iter()
                .find(|(k, _)| *k == genl::NBD_ATTR_INDEX)
                .and_then(|(_, d)| genl::attr_u32(d));
            if let Some(nbd) = nbds.iter().find(|n| Some(n.index) == index) {
                reconnect(&control, family, nbd);
            }
        }
    }
}

fn reconnect(control: &Genl, family: u16, nbd: &Nbd) {
    log::warn!(
        "{}: a connection to {}:{} died: connecting again (I/O waits for up to {} s)",
        option(nbd),
        nbd.host,
        nbd.port,
        DEAD_CONNECTION_TIMEOUT.as_secs()
    );
    let start = Instant::now();
    match connect(nbd, DEAD_CONNECTION_TIMEOUT) {
        Ok((stream, _)) => {
            let msg = genl::sockets_message(
                family,
                genl::NBD_CMD_RECONFIGURE,
                nbd.index,
                &[stream.as_raw_fd()],
            )
            .finish();
            match control.request(&msg) {
                Ok(_) => log::info!(
                    "{}: reconnected to {}:{} after {} s",
                    option(nbd),
                    nbd.host,
                    nbd.port,
                    start.elapsed().as_secs()
                ),
                Err(e) => log::error!(
                    "{}: the kernel refused the new connection (NBD_CMD_RECONFIGURE): {e}",
                    option(nbd)
                ),
            }
        }
        Err(e) => log::error!("{e}: its I/O fails"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_gets_size_flags_and_timeouts() {
        let export = Export {
            size: 2 << 30,
            flags: 0x10b,
            block_size: Some(4096),
        };
        let msg = connect_message(0x1b, 0, &export, &[5]);
        let top = genl::attrs(&msg[20..]);
        let get = |k| {
            top.iter()
                .find(|(kind, _)| *kind == k)
                .map(|(_, d)| u64::from_ne_bytes(d[..8].try_into().unwrap()))
        };
        assert_eq!(get(genl::NBD_ATTR_SIZE_BYTES), Some(2 << 30));
        assert_eq!(get(genl::NBD_ATTR_BLOCK_SIZE_BYTES), Some(4096));
        assert_eq!(get(genl::NBD_ATTR_SERVER_FLAGS), Some(0x10b));
        assert_eq!(get(genl::NBD_ATTR_TIMEOUT), Some(30));
        assert_eq!(get(genl::NBD_ATTR_DEAD_CONN_TIMEOUT), Some(600));
    }

    #[test]
    fn block_sizes_the_kernel_takes() {
        let e = |b| Export {
            size: 1,
            flags: 0,
            block_size: b,
        };
        assert_eq!(block_size(&e(Some(4096))), 4096);
        assert_eq!(block_size(&e(Some(1024))), 1024);
        assert_eq!(block_size(&e(Some(65536))), 512);
        assert_eq!(block_size(&e(Some(3000))), 512);
        assert_eq!(block_size(&e(None)), 512);
    }
}
