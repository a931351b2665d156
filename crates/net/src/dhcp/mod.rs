//! DHCPv4 client (RFC 2131): discovery on several links at once, and lease
//! renewal for as long as the machine runs.

mod client;
mod packet;
mod socket;

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use client::spawn_renewal_with;
pub use client::{dhcp_first_lease, spawn_renewal, RenewalHandle};

/// What a DHCP server granted, as acknowledged (DHCPACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub iface: String,
    /// The link's ethernet address the lease is bound to.
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers (option 42).
    pub ntp: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Domain search list (option 119).
    pub search: Vec<String>,
    pub hostname: Option<String>,
    /// The server identifier: where renewals are unicast.
    pub server: Ipv4Addr,
    /// [`Lease::INFINITE`] for a lease that never expires.
    pub lease_time: Duration,
    /// T1: when to start renewing with `server`, counted from `acquired`.
    pub renew_at: Duration,
    /// T2: when to start rebinding with any server, counted from `acquired`.
    pub rebind_at: Duration,
    /// When the REQUEST that got this ACK was sent: lease times count from
    /// there (RFC 2131 §4.4.1).
    pub acquired: Instant,
}

impl Lease {
    /// DHCP's 0xffffffff seconds, which means "forever" (RFC 2131 §3.3).
    pub const INFINITE: Duration = Duration::from_secs(u32::MAX as u64);

    pub fn is_infinite(&self) -> bool {
        self.lease_time >= Self::INFINITE
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} on {} from {}",
            self.address, self.prefix_len, self.iface, self.server
        )?;
        if let Some(router) = self.router {
            write!(f, ", router {router}")?;
        }
        if self.is_infinite() {
            write!(f, ", forever")
        } else {
            write!(f, ", for {} s", self.lease_time.as_secs())
        }
    }
}
