//! Link, address and route configuration over rtnetlink.
//!
//! Each call opens its own netlink connection and drops it when done: they
//! are rare (boot, lease renewals) and a connection costs one socket, while a
//! shared one would need a task that outlives every caller.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use log::debug;
use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};

use crate::resolv::{render_resolv_conf, write_resolv_conf};
use crate::{Lease, NetError};

const EADDRNOTAVAIL: i32 = nix::libc::EADDRNOTAVAIL;
/// The kernel's "forever" for address lifetimes (INFINITY_LIFE_TIME).
const FOREVER: u32 = u32::MAX;

/// A fixed IPv4 configuration (kernel `ip=` or b2c options), applied like a
/// lease that never expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIpv4 {
    pub iface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
}

/// Connects to the kernel's routing socket. The connection's I/O runs as a
/// task on the current tokio runtime; it ends when the handle is dropped.
async fn connect() -> Result<Handle, NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::NetlinkSocket)?;
    tokio::spawn(connection);
    Ok(handle)
}

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

/// if_nametoindex(3): one ioctl rather than a netlink request whose answer
/// is a full link message to decode.
fn link_index(name: &str) -> Result<u32, NetError> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(index) => Ok(index),
        Err(nix::Error::ENODEV) => Err(NetError::LinkNotFound(name.to_owned())),
        Err(e) => Err(NetError::LinkLookup {
            iface: name.to_owned(),
            source: e.into(),
        }),
    }
}

/// Sets the link administratively up. Carrier may come later; DHCP waits
/// for it.
pub async fn link_up(name: &str) -> Result<(), NetError> {
    let handle = connect().await?;
    let index = link_index(name)?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("setting {name} up"), e))?;
    debug!("link {name} is up");
    Ok(())
}

/// Brings `lo` up: the kernel creates it down, and containers sharing the
/// host network expect 127.0.0.1 to work.
pub async fn loopback_up() -> Result<(), NetError> {
    link_up("lo").await
}

/// Configures the lease's address on its link, with the lease's lifetime so
/// that the kernel itself drops the address if renewals stop succeeding; a
/// default route via the lease's router; and `resolv_conf`.
pub async fn apply_lease(lease: &Lease, resolv_conf: &Path) -> Result<(), NetError> {
    // Lease times count from when the REQUEST was sent, a little earlier.
    let lifetime =
        (!lease.is_infinite()).then(|| lease.lease_time.saturating_sub(lease.acquired.elapsed()));
    configure(
        &lease.iface,
        lease.address,
        lease.prefix_len,
        lifetime,
        lease.router,
        RouteProtocol::Dhcp,
    )
    .await?;
    let mut search: Vec<String> = lease.domain.iter().cloned().collect();
    search.extend(lease.search.iter().cloned());
    let origin = format!("the DHCP lease on {}", lease.iface);
    write_resolv_conf(
        resolv_conf,
        &render_resolv_conf(&origin, &lease.dns, &search),
    )
}

/// Applies a static configuration: address forever, default route,
/// resolv.conf.
pub async fn apply_static(config: &StaticIpv4, resolv_conf: &Path) -> Result<(), NetError> {
    configure(
        &config.iface,
        config.address,
        config.prefix_len,
        None,
        config.router,
        RouteProtocol::Static,
    )
    .await?;
    let origin = format!("the static configuration of {}", config.iface);
    write_resolv_conf(
        resolv_conf,
        &render_resolv_conf(&origin, &config.dns, &config.search),
    )
}

async fn configure(
    iface: &str,
    address: Ipv4Addr,
    prefix_len: u8,
    lifetime: Option<Duration>,
    router: Option<Ipv4Addr>,
    protocol: RouteProtocol,
) -> Result<(), NetError> {
    let handle = connect().await?;
    let index = link_index(iface)?;

    let secs = lifetime.map_or(FOREVER, |l| {
        u32::try_from(l.as_secs()).unwrap_or(FOREVER - 1).max(1)
    });
    let mut cache_info = CacheInfo::default();
    cache_info.ifa_valid = secs;
    cache_info.ifa_preferred = secs;
    // Replace, not add: on renewal the address exists and only its lifetime
    // changes.
    let mut request = handle
        .address()
        .add(index, address.into(), prefix_len)
        .replace();
    request
        .message_mut()
        .attributes
        .push(AddressAttribute::CacheInfo(cache_info));
    request
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("adding {address}/{prefix_len} to {iface}"), e))?;

    if let Some(router) = router {
        if !same_subnet(address, router, prefix_len) {
            // A router outside the subnet (a /32 lease, say) is reachable
            // only once the kernel knows it is on this link.
            let to_router = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(router, 32)
                .output_interface(index)
                .scope(RouteScope::Link)
                .protocol(protocol)
                .build();
            handle
                .route()
                .add(to_router)
                .replace()
                .execute()
                .await
                .map_err(|e| NetError::netlink(format!("adding a route to {router}"), e))?;
        }
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(router)
            .output_interface(index)
            .protocol(protocol)
            .build();
        handle
            .route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("adding the default route via {router}"), e))?;
    }
    debug!(
        "net: {iface} has {address}/{prefix_len}{}{}",
        router.map_or(String::new(), |r| format!(", default route via {r}")),
        lifetime.map_or(String::new(), |l| format!(", valid {} s", l.as_secs())),
    );
    Ok(())
}

/// Removes an address, e.g. after a NAK. An address that is already gone (its
/// lifetime ran out) is fine.
pub(crate) async fn remove_address(
    iface: &str,
    address: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), NetError> {
    let handle = connect().await?;
    let index = link_index(iface)?;
    let msg = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(address, prefix_len)
        .build();
    match handle.address().del(msg).execute().await {
        Err(e) if errno(&e) != Some(EADDRNOTAVAIL) => Err(NetError::netlink(
            format!("removing {address}/{prefix_len} from {iface}"),
            e,
        )),
        _ => Ok(()),
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let ip = Ipv4Addr::new;
        assert!(same_subnet(ip(10, 98, 0, 23), ip(10, 98, 0, 1), 24));
        assert!(!same_subnet(ip(10, 98, 1, 23), ip(10, 98, 0, 1), 24));
        assert!(!same_subnet(ip(10, 98, 0, 23), ip(10, 98, 0, 1), 32));
        assert!(same_subnet(ip(10, 98, 0, 23), ip(192, 168, 0, 1), 0));
    }
}
