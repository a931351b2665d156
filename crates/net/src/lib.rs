//! b2c-net: the network of a machine that boots straight into containers.
//!
//! Links (sysfs + rtnetlink), a DHCPv4 client that races every ethernet link
//! and keeps the winning lease renewed, static configuration, resolv.conf,
//! SNTP, and the one HTTP layer every fetcher uses ([`http`]: trust roots,
//! proxies, retries, bounded bodies, redaction). Everything async runs on
//! the caller's tokio runtime; progress is logged through `log`, failures
//! come back as [`NetError`].
//!
//! [`bring_up`] is the whole network phase from the parsed command line
//! (`b2c.iface`, `ip=`, or DHCP everywhere); [`fetch`] gets
//! `b2c.extra_args_url`. The pieces below it can also be used one by one:
//!
//! ```no_run
//! # async fn boot() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{path::Path, time::Duration};
//! b2c_net::loopback_up().await?;
//! let links = b2c_net::ethernet_links(Duration::from_secs(10)).await?;
//! for link in &links {
//!     b2c_net::link_up(link).await?;
//! }
//! let lease = b2c_net::dhcp_first_lease(&links, Duration::from_secs(60)).await?;
//! b2c_net::apply_lease(&lease, Path::new("/etc/resolv.conf")).await?;
//! if let Some(ntp) = lease.ntp.first() {
//!     let now = b2c_net::sntp_time(&ntp.to_string(), Duration::from_secs(5)).await?;
//!     b2c_system::host::set_clock(now)?;
//! }
//! let renewal = b2c_net::spawn_renewal(lease, "/etc/resolv.conf");
//! // ... run the job, keeping `renewal` alive ...
//! # drop(renewal);
//! # Ok(()) }
//! ```

mod config;
mod dhcp;
mod error;
pub mod http;
mod links;
mod plan;
mod resolv;
mod sntp;
mod up;

pub use config::{apply_lease, apply_static, link_up, loopback_up, StaticIpv4};
pub use dhcp::{dhcp_first_lease, spawn_renewal, Lease, RenewalHandle};
pub use error::NetError;
pub use http::{fetch, FetchOptions};
pub use links::ethernet_links;
pub use sntp::sntp_time;
pub use up::{bring_up, NetworkUp};
