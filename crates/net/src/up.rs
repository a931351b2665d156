//! The network phase: carries out a [`Plan`](crate::plan::Plan) and keeps its
//! leases renewed.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use b2c_cmdline::{IfaceConfig, IfaceMode, KernelIp};
use futures_util::future::try_join_all;
use log::{debug, warn};
use rtnetlink::packet_route::route::RouteProtocol;

use crate::config::{apply_lease_with, configure, link_up, loopback_up, LeaseSetup, LinkConfig};
use crate::dhcp::spawn_renewal_with;
use crate::links::{ethernet_links, wait_for_link};
use crate::plan::{plan, IfacePlan, Link, Origin, Plan};
use crate::resolv::{Contribution, SharedResolvConf};
use crate::{dhcp_first_lease, Lease, NetError, RenewalHandle};

/// How long a link named on the command line, or any ethernet link, may
/// take to appear: drivers probe asynchronously.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// What [`bring_up`] configured. Dropping it stops the lease renewals, so
/// keep it for as long as the machine needs its network.
#[derive(Default)]
#[must_use = "dropping NetworkUp stops lease renewal"]
pub struct NetworkUp {
    /// One per DHCP lease; [`RenewalHandle::current`] is the lease in force.
    pub renewals: Vec<RenewalHandle>,
    /// NTP servers: `ip=`'s ntp0, then the leases' (option 42).
    pub ntp_servers: Vec<Ipv4Addr>,
    /// The hostname `ip=` offered.
    pub hostname: Option<String>,
    /// One console line per configured interface.
    pub summary: Vec<String>,
}

impl NetworkUp {
    /// Whether any interface was configured (`ip=off` configures none).
    pub fn is_configured(&self) -> bool {
        !self.summary.is_empty()
    }

    /// The leases in force now.
    pub fn leases(&self) -> Vec<Lease> {
        self.renewals.iter().map(RenewalHandle::current).collect()
    }
}

/// The whole network phase: `lo` up, then the interfaces configured from
/// `b2c.iface` entries if any, else from the kernel's `ip=`, else by DHCP on
/// every ethernet link (first lease wins).
///
/// Every `b2c.iface` entry is configured, concurrently: its link gets up to
/// 10 s to appear, a DHCP one gets its own lease within `dhcp_timeout`.
/// The name servers of all interfaces go into one `resolv_conf`, kept whole
/// across lease renewals. `ip=off` configures nothing and returns an empty
/// [`NetworkUp`]: whether that is fatal is the caller's call.
///
/// Errors name the interface and the option to check.
pub async fn bring_up(
    ifaces: &[IfaceConfig],
    kernel_ip: Option<&KernelIp>,
    resolv_conf: &Path,
    dhcp_timeout: Duration,
) -> Result<NetworkUp, NetError> {
    let plan = plan(ifaces, kernel_ip);
    for warning in &plan.warnings {
        warn!("network: {warning}");
    }
    if plan.ifaces.is_empty() {
        loopback_up().await?;
        return Ok(NetworkUp::default());
    }
    // Nothing on the interfaces needs lo: one netlink round less before
    // the first DHCP discover.
    let ((), up) = tokio::try_join!(loopback_up(), execute(&plan, resolv_conf, dhcp_timeout))?;
    Ok(up)
}

async fn execute(
    plan: &Plan,
    resolv_conf: &Path,
    dhcp_timeout: Duration,
) -> Result<NetworkUp, NetError> {
    let resolv = SharedResolvConf::new(resolv_conf, plan.ifaces.len());
    let configured = try_join_all(plan.ifaces.iter().enumerate().map(|(slot, iface)| {
        let step = Step {
            iface,
            origin: plan.origin,
            resolv: &resolv,
            slot,
            dhcp_timeout,
        };
        async move { step.run().await }
    }))
    .await?;
    if plan.forward {
        fs::write(IP_FORWARD, "1\n").map_err(NetError::Forwarding)?;
        debug!("network: IPv4 forwarding is on");
    }
    // Static interfaces have only filled their slots.
    resolv.write()?;

    let mut up = NetworkUp {
        hostname: plan.hostname.clone(),
        ntp_servers: plan.ntp.clone(),
        ..NetworkUp::default()
    };
    for done in configured {
        up.summary.push(done.summary);
        if let Some((lease, setup)) = done.lease {
            for server in &lease.ntp {
                if !up.ntp_servers.contains(server) {
                    up.ntp_servers.push(*server);
                }
            }
            up.renewals.push(spawn_renewal_with(lease, setup));
        }
    }
    Ok(up)
}

/// One interface of the plan.
struct Step<'a> {
    iface: &'a IfacePlan,
    origin: Origin,
    resolv: &'a SharedResolvConf,
    slot: usize,
    dhcp_timeout: Duration,
}

struct Configured {
    summary: String,
    lease: Option<(Lease, LeaseSetup)>,
}

impl Step<'_> {
    async fn run(&self) -> Result<Configured, NetError> {
        let dhcp = self.iface.is_dhcp();
        let links = self
            .find_links()
            .await
            .map_err(|e| self.error(self.iface.link.label(dhcp), e))?;
        let label = links.join(", ");
        let done = match &self.iface.mode {
            IfaceMode::Dhcp => self.dhcp(&links).await,
            IfaceMode::Static { address, gateway } => {
                self.fixed(&links[0], address.address, address.prefix_len, *gateway)
                    .await
            }
        };
        done.map_err(|e| self.error(&label, e))
    }

    fn error(&self, iface: &str, source: NetError) -> NetError {
        NetError::Configure {
            what: self.origin.describe(iface),
            iface: iface.to_owned(),
            source: Box::new(source),
        }
    }

    /// The links to configure: the one named, else the first ethernet link
    /// for a static address, else all of them for DHCP. Never empty.
    async fn find_links(&self) -> Result<Vec<String>, NetError> {
        match &self.iface.link {
            Link::Named(name) => {
                wait_for_link(name, LINK_TIMEOUT).await?;
                Ok(vec![name.clone()])
            }
            Link::Any => {
                let mut links = ethernet_links(LINK_TIMEOUT).await?;
                if !self.iface.is_dhcp() {
                    links.truncate(1);
                }
                Ok(links)
            }
        }
    }

    async fn dhcp(&self, links: &[String]) -> Result<Configured, NetError> {
        let lease = dhcp_first_lease(links, self.dhcp_timeout).await?;
        let setup = LeaseSetup {
            resolv: self.resolv.clone(),
            slot: self.slot,
            extra_dns: self.iface.nameservers.clone(),
            routes: self.iface.routes.clone(),
            metric: self.iface.metric,
        };
        apply_lease_with(&lease, &setup).await?;
        let mut summary = format!(
            "{}: {}/{} by DHCP from {}",
            lease.iface, lease.address, lease.prefix_len, lease.server
        );
        if let Some(router) = lease.router {
            let _ = write!(summary, ", router {router}");
        }
        self.describe_extras(&mut summary, &setup.contribution(&lease).dns);
        Ok(Configured {
            summary,
            lease: Some((lease, setup)),
        })
    }

    async fn fixed(
        &self,
        iface: &str,
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Configured, NetError> {
        // Routes through a link that is down are refused.
        link_up(iface).await?;
        configure(&LinkConfig {
            iface,
            address,
            prefix_len,
            lifetime: None,
            router: gateway,
            routes: &self.iface.routes,
            protocol: RouteProtocol::Static,
            metric: self.iface.metric,
        })
        .await?;
        self.resolv.set(
            self.slot,
            Contribution {
                origin: format!("the static configuration of {iface}"),
                dns: self.iface.nameservers.clone(),
                search: Vec::new(),
            },
        );
        let mut summary = format!("{iface}: {address}/{prefix_len} static");
        if let Some(gateway) = gateway {
            let _ = write!(summary, ", gateway {gateway}");
        }
        self.describe_extras(&mut summary, &self.iface.nameservers);
        Ok(Configured {
            summary,
            lease: None,
        })
    }

    fn describe_extras(&self, summary: &mut String, dns: &[Ipv4Addr]) {
        if !dns.is_empty() {
            let dns: Vec<String> = dns.iter().map(ToString::to_string).collect();
            let _ = write!(summary, ", DNS {}", dns.join(" "));
        }
        for route in &self.iface.routes {
            let _ = write!(summary, ", {} via {}", route.destination, route.gateway);
        }
    }
}
