//! SNTP (RFC 4330) to get the wall clock right before anything checks a TLS
//! certificate's validity period.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::debug;
use sntpc::{get_time, NtpContext, StdTimestampGen};
use sntpc_net_tokio::UdpSocketWrapper;
use tokio::net::{lookup_host, UdpSocket};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::NetError;

const NTP_PORT: u16 = 123;
/// Queries per call: a lost datagram should not cost the whole timeout.
const TRIES: u32 = 4;
const MIN_TRY: Duration = Duration::from_millis(500);

/// Asks `server` (an IP address, `host`, `host:port`, `[v6]:port`; default
/// port 123) for the time, retrying within `timeout`.
///
/// Returns the server's time at the moment this returns: its transmit
/// timestamp plus half the round trip, so it does not depend on how wrong
/// the local clock is. Setting the clock is the caller's decision (see
/// `b2c_system::host::set_clock`).
pub async fn sntp_time(server: &str, timeout: Duration) -> Result<SystemTime, NetError> {
    let deadline = Instant::now() + timeout;
    let fail = |reason: String| NetError::Sntp {
        server: server.to_owned(),
        reason,
    };
    let addr = timeout_at(deadline, resolve(server))
        .await
        .map_err(|_| fail(format!("no address for it within {} s", timeout.as_secs())))??;
    let per_try = (timeout / TRIES).max(MIN_TRY);
    let mut last_error = String::from("no answer");
    let mut tries = 0;
    while Instant::now() < deadline {
        tries += 1;
        let until = (Instant::now() + per_try).min(deadline);
        match timeout_at(until, query(addr)).await {
            Ok(Ok(time)) => return Ok(time),
            Ok(Err(e)) => {
                debug!("NTP: {server} (try {tries}): {e}");
                last_error = e;
                // An immediate error (an ICMP unreachable) would otherwise
                // spin through the tries.
                sleep_until(until).await;
            }
            Err(_) => debug!("NTP: no answer from {server} (try {tries})"),
        }
    }
    Err(fail(format!(
        "{last_error} after {tries} tries in {} s",
        timeout.as_secs()
    )))
}

async fn resolve(server: &str) -> Result<SocketAddr, NetError> {
    let fail = |reason: String| NetError::Sntp {
        server: server.to_owned(),
        reason,
    };
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = server.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, NTP_PORT));
    }
    let with_port = match server.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => server.to_owned(),
        _ => format!("{server}:{NTP_PORT}"),
    };
    lookup_host(with_port)
        .await
        .map_err(|e| fail(format!("resolving: {e}")))?
        .next()
        .ok_or_else(|| fail("resolving: no address".into()))
}

async fn query(addr: SocketAddr) -> Result<SystemTime, String> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (IpAddr::from([0u8; 4]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    };
    // A fresh socket, hence a fresh port, per try: a late answer to an
    // earlier try cannot be mistaken for this one's.
    let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    let socket = UdpSocketWrapper::new(socket);
    let context = NtpContext::new(StdTimestampGen::default());
    let result = get_time(addr, &socket, context)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let received = Instant::now();
    // Leap indicator 3: the server's own clock is not synchronized.
    if result.leap_indicator() == 3 {
        return Err("the server's clock is not synchronized".into());
    }
    let fraction =
        Duration::from_nanos(sntpc::fraction_to_nanoseconds(result.sec_fraction()).into());
    let half_round_trip = Duration::from_micros(result.roundtrip()) / 2;
    let time = UNIX_EPOCH
        + Duration::from_secs(result.sec())
        + fraction
        + half_round_trip
        + received.elapsed();
    debug!(
        "NTP: {addr} stratum {}, round trip {} µs, offset {} µs",
        result.stratum(),
        result.roundtrip(),
        result.offset()
    );
    Ok(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_forms() {
        assert_eq!(
            resolve("10.0.0.1").await.unwrap(),
            "10.0.0.1:123".parse().unwrap()
        );
        assert_eq!(
            resolve("10.0.0.1:1123").await.unwrap(),
            "10.0.0.1:1123".parse().unwrap()
        );
        assert_eq!(
            resolve("[fd00::1]:124").await.unwrap(),
            "[fd00::1]:124".parse().unwrap()
        );
        assert_eq!(
            resolve("fd00::1").await.unwrap(),
            "[fd00::1]:123".parse().unwrap()
        );
        assert_eq!(
            resolve("[fd00::1]").await.unwrap(),
            "[fd00::1]:123".parse().unwrap()
        );
        assert_eq!(resolve("localhost:99").await.unwrap().port(), 99);
    }

    #[tokio::test]
    async fn silent_server_times_out_within_the_bound() {
        // A port on loopback nobody answers on.
        let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = quiet.local_addr().unwrap().to_string();
        let start = Instant::now();
        let err = sntp_time(&server, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains(&server), "{err}");
    }
}
