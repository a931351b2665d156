//! The client's states (RFC 2131 §4.4): SELECTING and REQUESTING to get a
//! lease, RENEWING and REBINDING to keep it.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use log::{debug, error, info, warn};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{self, interval_at, sleep, sleep_until, timeout_at, Instant};

use super::packet::{parse_reply, Exchange, Reply, RequestKind};
use super::socket::DhcpSocket;
use super::Lease;
use crate::config::{apply_lease_with, link_up, remove_address, LeaseSetup};
use crate::{links, NetError};

/// RFC 2131 §4.1: 4 s before the first retransmission, doubling, each
/// randomized by ±1 s so that a rack of machines powered on together does
/// not retransmit in lockstep. The RFC lets it grow to 64 s; we stop at
/// 8 s, as udhcpc retries every few seconds: a switch port that starts
/// forwarding after spanning tree's 30 s must not leave the machine
/// waiting 30 s more for its next DISCOVER.
const FIRST_RETRANSMIT: Duration = Duration::from_secs(4);
const MAX_RETRANSMIT: Duration = Duration::from_secs(8);
/// REQUESTs sent for one OFFER before discovering again.
const REQUEST_TRIES: u32 = 3;
/// How long a fresh link may take to report carrier before we send anyway.
const CARRIER_WAIT: Duration = Duration::from_secs(5);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// RFC 2131 §4.4.5 halves the time left before each renewal retransmission
/// down to 60 s; with the short leases of test networks that would mean a
/// single try, so our floor is lower.
const MIN_RENEW_RETRANSMIT: Duration = Duration::from_secs(4);
/// Pause after a NAK, so that a server that offers and then refuses the same
/// address does not get a tight loop of DISCOVERs.
const AFTER_NAK: Duration = Duration::from_secs(2);
const REDISCOVER_PAUSE: Duration = Duration::from_secs(10);
/// Ethernet MTU: no DHCP reply is bigger.
const BUF_LEN: usize = 1500;

/// A transaction id. std's hasher keys come from getrandom(2) in a mode that
/// never blocks, which matters this early in boot; no crate needed.
fn random_u32() -> u32 {
    RandomState::new().hash_one(0u8) as u32
}

fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(4);
    let base = (FIRST_RETRANSMIT * (1 << doublings)).min(MAX_RETRANSMIT);
    let jitter = Duration::from_millis(u64::from(random_u32() % 2001));
    base + jitter - Duration::from_secs(1)
}

fn secs_since(start: Instant) -> u16 {
    u16::try_from(start.elapsed().as_secs()).unwrap_or(u16::MAX)
}

/// Runs DISCOVER/OFFER/REQUEST/ACK on every link in parallel and returns the
/// first lease acknowledged; the other links' attempts are cancelled.
///
/// Brings the links up if needed. Gives up after `timeout` with an error
/// naming the links tried, or sooner if every link failed outright (no such
/// link, no socket).
pub async fn dhcp_first_lease(links: &[String], timeout: Duration) -> Result<Lease, NetError> {
    if links.is_empty() {
        return Err(NetError::DhcpFailed {
            links: Vec::new(),
            reason: "no link to try".into(),
        });
    }
    let names = links.join(", ");
    info!("DHCP: discovering on {names}");
    let attempts = AtomicU32::new(0);
    let race = async {
        let mut pending: FuturesUnordered<_> = links
            .iter()
            .map(|link| {
                let attempts = &attempts;
                async move { (link, acquire(link, attempts).await) }
            })
            .collect();
        let mut failures = Vec::new();
        while let Some((link, result)) = pending.next().await {
            match result {
                Ok(lease) => return Ok(lease),
                Err(e) => {
                    warn!("DHCP: giving up on {link}: {e}");
                    failures.push(e.to_string());
                }
            }
        }
        Err(NetError::DhcpFailed {
            links: links.to_vec(),
            reason: failures.join("; "),
        })
    };
    let lease = time::timeout(
        timeout,
        with_progress(&names, &attempts, Some(timeout), race),
    )
    .await
    .map_err(|_| NetError::DhcpTimeout {
        links: links.to_vec(),
        waited: timeout,
    })??;
    info!("DHCP: got {lease}");
    Ok(lease)
}

/// Logs that we are still waiting every few seconds, not per packet, and
/// for how long at most (`b2c.dhcp_timeout`), when there is a bound.
async fn with_progress<T>(
    what: &str,
    attempts: &AtomicU32,
    timeout: Option<Duration>,
    work: impl Future<Output = T>,
) -> T {
    let mut work = pin!(work);
    let start = Instant::now();
    let mut ticker = interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => {
                let waited = match timeout {
                    Some(t) => format!(
                        "{} s of up to {} s, b2c.dhcp_timeout",
                        start.elapsed().as_secs(),
                        t.as_secs()
                    ),
                    None => format!("{} s", start.elapsed().as_secs()),
                };
                match attempts.load(Relaxed) {
                    0 => info!("DHCP: waiting for carrier on {what} ({waited})"),
                    n => info!("DHCP: waiting for a lease on {what} (attempt {n}; {waited})"),
                }
            }
        }
    }
}

/// Gets a lease on one link, trying forever: the caller bounds the time.
async fn acquire(iface: &str, attempts: &AtomicU32) -> Result<Lease, NetError> {
    // Bringing the link up here rather than trusting the caller: an
    // interface left down fails every send, and setting it up twice is free.
    link_up(iface).await?;
    let mac = links::mac_address(iface)?;
    let socket = DhcpSocket::open(iface).map_err(|source| NetError::DhcpSocket {
        iface: iface.to_owned(),
        source,
    })?;
    if !links::wait_for_carrier(iface, CARRIER_WAIT).await {
        debug!("DHCP: {iface} has no carrier yet; trying anyway");
    }
    let start = Instant::now();
    let mut buf = vec![0; BUF_LEN];
    let mut sender = Sender::new(&socket, iface);
    let mut attempt = 0;
    loop {
        let xid = random_u32();
        let (address, server) = loop {
            attempt += 1;
            attempts.fetch_max(attempt, Relaxed);
            let ex = Exchange {
                mac,
                xid,
                secs: secs_since(start),
            };
            let sent = sender.send(&ex.discover(), None).await;
            // The xid stays the same across retransmissions, so a late
            // OFFER to an earlier DISCOVER still counts.
            let until = sent + backoff(attempt);
            let offer = wait_reply(&socket, &mut buf, &ex, iface, until, sent, is_offer).await;
            if let Some(Reply::Offer { address, server }) = offer {
                break (address, server);
            }
        };
        debug!("DHCP: {server} offers {address} on {iface}");

        for tries in 1..=REQUEST_TRIES {
            let ex = Exchange {
                mac,
                xid,
                secs: secs_since(start),
            };
            let request = ex.request(RequestKind::Selecting { server, address });
            let sent = sender.send(&request, None).await;
            let until = sent + backoff(tries);
            match wait_reply(&socket, &mut buf, &ex, iface, until, sent, is_answer).await {
                Some(Reply::Ack(lease)) => return Ok(*lease),
                Some(Reply::Nak { message, .. }) => {
                    warn!(
                        "DHCP: {server} refused {address} on {iface}{}",
                        message.map_or(String::new(), |m| format!(": {m}"))
                    );
                    sleep(AFTER_NAK).await;
                    break;
                }
                Some(Reply::Offer { .. }) | None => {}
            }
        }
    }
}

fn is_offer(reply: &Reply) -> bool {
    matches!(reply, Reply::Offer { .. })
}

/// An answer to a REQUEST. An OFFER with the same xid (a slower server's,
/// or a duplicate) is not one: we already chose.
fn is_answer(reply: &Reply) -> bool {
    matches!(reply, Reply::Ack(_) | Reply::Nak { .. })
}

/// Sends, logging the first failure: a link that is down or has no carrier
/// fails every send, and one line says why better than one per packet.
struct Sender<'a> {
    socket: &'a DhcpSocket,
    iface: &'a str,
    warned: bool,
}

impl<'a> Sender<'a> {
    fn new(socket: &'a DhcpSocket, iface: &'a str) -> Self {
        Sender {
            socket,
            iface,
            warned: false,
        }
    }

    /// Returns when the message left (or failed to).
    async fn send(&mut self, bytes: &[u8], to: Option<Ipv4Addr>) -> Instant {
        let now = Instant::now();
        if let Err(e) = self.socket.send(bytes, to).await {
            if !self.warned {
                warn!("DHCP: sending on {}: {e}", self.iface);
                self.warned = true;
            }
        }
        now
    }
}

/// The first reply to `ex` that arrives before `until` and is `wanted`.
async fn wait_reply(
    socket: &DhcpSocket,
    buf: &mut [u8],
    ex: &Exchange,
    iface: &str,
    until: Instant,
    sent: Instant,
    wanted: fn(&Reply) -> bool,
) -> Option<Reply> {
    loop {
        match timeout_at(until, socket.recv(buf)).await {
            Err(_) => return None,
            Ok(Err(e)) => {
                debug!("DHCP: receiving on {iface}: {e}");
                sleep_until(until).await;
                return None;
            }
            Ok(Ok((bytes, src))) => match parse_reply(bytes, ex, iface, src, sent) {
                Some(reply) if wanted(&reply) => return Some(reply),
                _ => {}
            },
        }
    }
}

/// Keeps a lease alive; renewal stops when this is dropped.
#[must_use = "dropping the handle stops lease renewal"]
pub struct RenewalHandle {
    task: JoinHandle<()>,
    lease: watch::Receiver<Lease>,
}

impl RenewalHandle {
    /// The lease in force; `changed()` on the receiver fires on every
    /// renewal or new lease.
    pub fn subscribe(&self) -> watch::Receiver<Lease> {
        self.lease.clone()
    }

    pub fn current(&self) -> Lease {
        self.lease.borrow().clone()
    }
}

impl Drop for RenewalHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps `lease` (already applied) alive for as long as the handle lives: at
/// T1 unicast REQUESTs to the server (RENEWING), at T2 broadcast ones
/// (REBINDING). Each ACK re-applies the lease, which moves the address's
/// lifetime forward and rewrites `resolv_conf`. On a NAK or expiry the
/// address is removed and discovery starts over on the same link, for as long
/// as it takes.
///
/// Must be called from within the tokio runtime.
pub fn spawn_renewal(lease: Lease, resolv_conf: impl Into<PathBuf>) -> RenewalHandle {
    let resolv_conf: PathBuf = resolv_conf.into();
    spawn_renewal_with(lease, LeaseSetup::alone(&resolv_conf))
}

/// [`spawn_renewal`] for a lease that shares resolv.conf with other
/// interfaces and may carry the user's routes.
pub(crate) fn spawn_renewal_with(lease: Lease, setup: LeaseSetup) -> RenewalHandle {
    let (tx, rx) = watch::channel(lease.clone());
    let task = tokio::spawn(maintain(lease, setup, tx));
    RenewalHandle { task, lease: rx }
}

enum Extended {
    Infinite,
    Renewed(Box<Lease>),
    Lost(String),
}

async fn maintain(mut lease: Lease, setup: LeaseSetup, tx: watch::Sender<Lease>) {
    loop {
        let (next, old_removed) = match extend(&lease).await {
            Extended::Infinite => {
                info!("DHCP: the lease on {} never expires", lease.iface);
                return;
            }
            Extended::Renewed(next) => {
                info!("DHCP: renewed {next}");
                (*next, false)
            }
            Extended::Lost(reason) => {
                error!(
                    "DHCP: lost {} on {}: {reason}; discovering again",
                    lease.address, lease.iface
                );
                // Using an address the server refused would collide with
                // whoever gets it next.
                remove_old(&lease).await;
                (rediscover(&lease.iface).await, true)
            }
        };
        let moved = (next.address, next.prefix_len) != (lease.address, lease.prefix_len);
        if moved && !old_removed {
            remove_old(&lease).await;
        }
        if let Err(e) = apply_lease_with(&next, &setup).await {
            error!("DHCP: applying {next}: {e}");
        }
        lease = next;
        tx.send_replace(lease.clone());
    }
}

async fn remove_old(lease: &Lease) {
    if let Err(e) = remove_address(&lease.iface, lease.address, lease.prefix_len).await {
        error!("DHCP: {e}");
    }
}

async fn rediscover(iface: &str) -> Lease {
    let attempts = AtomicU32::new(0);
    loop {
        match with_progress(iface, &attempts, None, acquire(iface, &attempts)).await {
            Ok(lease) => {
                info!("DHCP: got {lease}");
                return lease;
            }
            Err(e) => {
                error!(
                    "DHCP: {e}; trying again in {} s",
                    REDISCOVER_PAUSE.as_secs()
                );
                sleep(REDISCOVER_PAUSE).await;
            }
        }
    }
}

/// Sleeps until T1, then renews, then rebinds, until an ACK, a NAK or the
/// end of the lease.
async fn extend(lease: &Lease) -> Extended {
    if lease.is_infinite() {
        return Extended::Infinite;
    }
    let at = |after| lease.acquired + after;
    let (renew, rebind, expiry) = (
        at(lease.renew_at),
        at(lease.rebind_at),
        at(lease.lease_time),
    );
    sleep_until(renew).await;

    let iface = lease.iface.as_str();
    let socket = loop {
        match DhcpSocket::open(iface) {
            Ok(socket) => break socket,
            Err(e) if Instant::now() + FIRST_RETRANSMIT < expiry => {
                warn!("DHCP: renewal socket on {iface}: {e}");
                sleep(FIRST_RETRANSMIT).await;
            }
            Err(e) => return Extended::Lost(format!("no socket to renew it: {e}")),
        }
    };
    let mut sender = Sender::new(&socket, iface);
    let mut buf = vec![0; BUF_LEN];
    let start = Instant::now();
    let xid = random_u32();
    let address = lease.address;
    loop {
        let now = Instant::now();
        if now >= expiry {
            return Extended::Lost("it expired".into());
        }
        let (kind, server, phase_end) = if now < rebind {
            (
                RequestKind::Renewing { address },
                Some(lease.server),
                rebind,
            )
        } else {
            (RequestKind::Rebinding { address }, None, expiry)
        };
        let left = phase_end - now;
        let wait = (left / 2).max(MIN_RENEW_RETRANSMIT).min(left);
        let ex = Exchange {
            mac: lease.mac,
            xid,
            secs: secs_since(start),
        };
        let sent = sender.send(&ex.request(kind), server).await;
        match wait_reply(&socket, &mut buf, &ex, iface, sent + wait, sent, is_answer).await {
            Some(Reply::Ack(next)) => return Extended::Renewed(next),
            Some(Reply::Nak { server, message }) => {
                return Extended::Lost(format!(
                    "{} refused to extend it{}",
                    server.map_or("the server".to_string(), |s| s.to_string()),
                    message.map_or(String::new(), |m| format!(" ({m})"))
                ))
            }
            Some(Reply::Offer { .. }) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_4_to_8_s_with_jitter() {
        for (attempt, base) in [(1, 4), (2, 8), (3, 8), (6, 8), (40, 8)] {
            for _ in 0..20 {
                let d = backoff(attempt);
                let base = Duration::from_secs(base);
                assert!(d >= base - Duration::from_secs(1), "{attempt}: {d:?}");
                assert!(d <= base + Duration::from_secs(1), "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn xids_differ() {
        let xids: std::collections::HashSet<u32> = (0..100).map(|_| random_u32()).collect();
        assert!(xids.len() > 95);
    }

    #[tokio::test]
    async fn no_links_is_an_error() {
        let err = dhcp_first_lease(&[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::DhcpFailed { .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_link_fails_fast_and_is_named() {
        let links = ["b2c-no-such-0".to_string(), "b2c-no-such-1".to_string()];
        let err = dhcp_first_lease(&links, Duration::from_secs(30))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, NetError::DhcpFailed { .. }), "{text}");
        assert!(
            text.contains("b2c-no-such-0") && text.contains("b2c-no-such-1"),
            "{text}"
        );
    }
}
