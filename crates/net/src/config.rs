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

use b2c_cmdline::Route;

use crate::resolv::{render_resolv_conf, write_resolv_conf, Contribution, SharedResolvConf};
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
    apply_lease_with(lease, &LeaseSetup::alone(resolv_conf)).await
}

/// What goes with a lease besides its own content, kept for its renewals:
/// where its name servers go in resolv.conf, the name servers and routes
/// the user added on that interface, and the metric of its routes.
#[derive(Debug, Clone)]
pub(crate) struct LeaseSetup {
    pub resolv: SharedResolvConf,
    pub slot: usize,
    pub extra_dns: Vec<Ipv4Addr>,
    pub routes: Vec<Route>,
    pub metric: u32,
}

impl LeaseSetup {
    /// The lease is the only source of resolv.conf.
    pub fn alone(resolv_conf: &Path) -> Self {
        LeaseSetup {
            resolv: SharedResolvConf::new(resolv_conf, 1),
            slot: 0,
            extra_dns: Vec::new(),
            routes: Vec::new(),
            metric: 0,
        }
    }

    pub fn contribution(&self, lease: &Lease) -> Contribution {
        let mut dns = self.extra_dns.clone();
        dns.extend(&lease.dns);
        let mut search: Vec<String> = lease.domain.iter().cloned().collect();
        search.extend(lease.search.iter().cloned());
        Contribution {
            origin: format!("the DHCP lease on {}", lease.iface),
            dns,
            search,
        }
    }
}

pub(crate) async fn apply_lease_with(lease: &Lease, setup: &LeaseSetup) -> Result<(), NetError> {
    // Lease times count from when the REQUEST was sent, a little earlier.
    let lifetime =
        (!lease.is_infinite()).then(|| lease.lease_time.saturating_sub(lease.acquired.elapsed()));
    configure(&LinkConfig {
        iface: &lease.iface,
        address: lease.address,
        prefix_len: lease.prefix_len,
        lifetime,
        router: lease.router,
        routes: &setup.routes,
        protocol: RouteProtocol::Dhcp,
        metric: setup.metric,
    })
    .await?;
    setup.resolv.update(setup.slot, setup.contribution(lease))
}

/// Applies a static configuration: address forever, default route,
/// resolv.conf.
pub async fn apply_static(config: &StaticIpv4, resolv_conf: &Path) -> Result<(), NetError> {
    configure(&LinkConfig {
        iface: &config.iface,
        address: config.address,
        prefix_len: config.prefix_len,
        lifetime: None,
        router: config.router,
        routes: &[],
        protocol: RouteProtocol::Static,
        metric: 0,
    })
    .await?;
    let origin = format!("the static configuration of {}", config.iface);
    write_resolv_conf(
        resolv_conf,
        &render_resolv_conf(&origin, &config.dns, &config.search),
    )
}

/// An address on a link and the routes that leave through it.
pub(crate) struct LinkConfig<'a> {
    pub iface: &'a str,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// `None`: forever.
    pub lifetime: Option<Duration>,
    /// The default route's gateway.
    pub router: Option<Ipv4Addr>,
    pub routes: &'a [Route],
    pub protocol: RouteProtocol,
    /// Several interfaces may each have a default route: the metric tells
    /// the kernel which one to prefer, and makes each interface's routes
    /// distinct so that re-applying one (a renewal) does not replace
    /// another's.
    pub metric: u32,
}

pub(crate) async fn configure(c: &LinkConfig<'_>) -> Result<(), NetError> {
    let LinkConfig {
        iface,
        address,
        prefix_len,
        ..
    } = *c;
    let handle = connect().await?;
    let index = link_index(iface)?;

    let secs = c.lifetime.map_or(FOREVER, |l| {
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

    let via = Via {
        handle: &handle,
        index,
        c,
    };
    if let Some(router) = c.router {
        via.route(Ipv4Addr::UNSPECIFIED, 0, router, "the default route")
            .await?;
    }
    for route in c.routes {
        let dest = route.destination;
        // The kernel refuses a destination with host bits set (10.1.2.3/8);
        // what was meant is clear.
        let network = Ipv4Addr::from(u32::from(dest.address) & mask(dest.prefix_len));
        via.route(
            network,
            dest.prefix_len,
            route.gateway,
            &format!("the route to {dest}"),
        )
        .await?;
    }
    debug!(
        "net: {iface} has {address}/{prefix_len}{}{}{}",
        c.router
            .map_or(String::new(), |r| format!(", default route via {r}")),
        c.routes
            .iter()
            .map(|r| format!(", {} via {}", r.destination, r.gateway))
            .collect::<String>(),
        c.lifetime
            .map_or(String::new(), |l| format!(", valid {} s", l.as_secs())),
    );
    Ok(())
}

/// Adds routes through gateways on one configured link.
struct Via<'a> {
    handle: &'a Handle,
    index: u32,
    c: &'a LinkConfig<'a>,
}

impl Via<'_> {
    async fn route(
        &self,
        destination: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        what: &str,
    ) -> Result<(), NetError> {
        let c = self.c;
        let on_this_link = |builder: RouteMessageBuilder<Ipv4Addr>| {
            let builder = builder.output_interface(self.index).protocol(c.protocol);
            // Metric 0 is the kernel's default: leaving it out keeps the
            // routes of a single interface looking as usual.
            if c.metric == 0 {
                builder
            } else {
                builder.priority(c.metric)
            }
        };
        if !same_subnet(c.address, gateway, c.prefix_len) {
            // A gateway outside the subnet (a /32 lease, say) is reachable
            // only once the kernel knows it is on this link.
            let to_gateway = on_this_link(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(gateway, 32)
                    .scope(RouteScope::Link),
            )
            .build();
            self.handle
                .route()
                .add(to_gateway)
                .replace()
                .execute()
                .await
                .map_err(|e| NetError::netlink(format!("adding a route to {gateway}"), e))?;
        }
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway);
        if prefix_len > 0 {
            builder = builder.destination_prefix(destination, prefix_len);
        }
        self.handle
            .route()
            .add(on_this_link(builder).build())
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetError::netlink(format!("adding {what} via {gateway} on {}", c.iface), e)
            })
    }
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

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = mask(prefix_len);
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
