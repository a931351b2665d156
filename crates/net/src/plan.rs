//! Which interface gets which configuration, with boot2container's
//! precedence: the `b2c.iface` entries if any, else the kernel's `ip=`, else
//! DHCP on every ethernet link. Pure, so that every rule is unit-tested.

use std::net::Ipv4Addr;

use b2c_cmdline::{IfaceConfig, IfaceMode, KernelIp, Route};

/// The option a configuration came from: errors tell the user to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Iface,
    KernelIp,
    /// Neither option was given.
    Default,
}

impl Origin {
    /// Names the option and the interface, as the start of an error.
    pub fn describe(self, iface: &str) -> String {
        match self {
            Origin::Iface => format!("b2c.iface={iface}"),
            Origin::KernelIp => format!("ip= on {iface}"),
            Origin::Default => format!("DHCP on {iface} (no b2c.iface or ip= given)"),
        }
    }
}

/// Which link an entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    Named(String),
    /// No name given: a static configuration goes on the first ethernet
    /// link, DHCP races on all of them.
    Any,
}

impl Link {
    pub fn label(&self, dhcp: bool) -> &str {
        match self {
            Link::Named(name) => name,
            Link::Any if dhcp => "every ethernet link",
            Link::Any => "the first ethernet link",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IfacePlan {
    pub link: Link,
    pub mode: IfaceMode,
    /// Name servers given on the command line; a lease's come after them.
    pub nameservers: Vec<Ipv4Addr>,
    pub routes: Vec<Route>,
    /// The metric of this interface's routes: the order of the `b2c.iface`
    /// entries, so that the first one listed with a gateway holds the
    /// default route.
    pub metric: u32,
}

impl IfacePlan {
    pub fn is_dhcp(&self) -> bool {
        self.mode == IfaceMode::Dhcp
    }

    fn dhcp(link: Link) -> Self {
        IfacePlan {
            link,
            mode: IfaceMode::Dhcp,
            nameservers: Vec::new(),
            routes: Vec::new(),
            metric: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub origin: Origin,
    /// Empty for `ip=off`.
    pub ifaces: Vec<IfacePlan>,
    pub forward: bool,
    /// Offered by `ip=`.
    pub hostname: Option<String>,
    /// From `ip=`; leases add theirs.
    pub ntp: Vec<Ipv4Addr>,
    /// For the console, not errors: the network still comes up.
    pub warnings: Vec<String>,
}

pub(crate) fn plan(ifaces: &[IfaceConfig], kernel_ip: Option<&KernelIp>) -> Plan {
    if !ifaces.is_empty() {
        let mut plan = from_ifaces(ifaces);
        if kernel_ip.is_some() {
            plan.warnings
                .push("ip= is ignored: b2c.iface takes precedence".into());
        }
        return plan;
    }
    let mut plan = Plan {
        origin: Origin::KernelIp,
        ifaces: Vec::new(),
        forward: false,
        hostname: None,
        ntp: Vec::new(),
        warnings: Vec::new(),
    };
    match kernel_ip {
        None => {
            plan.origin = Origin::Default;
            plan.ifaces.push(IfacePlan::dhcp(Link::Any));
        }
        Some(KernelIp::Off) => plan
            .warnings
            .push("ip=off: no network interface is configured".into()),
        Some(KernelIp::Dhcp { device }) => plan.ifaces.push(IfacePlan::dhcp(link(device))),
        Some(KernelIp::Static {
            device,
            address,
            gateway,
            hostname,
            nameservers,
            ntp,
        }) => {
            plan.ifaces.push(IfacePlan {
                link: link(device),
                mode: IfaceMode::Static {
                    address: *address,
                    gateway: *gateway,
                },
                nameservers: nameservers.clone(),
                routes: Vec::new(),
                metric: 0,
            });
            plan.hostname = hostname.clone();
            plan.ntp.extend(ntp);
        }
    }
    plan
}

fn link(device: &Option<String>) -> Link {
    device.clone().map_or(Link::Any, Link::Named)
}

fn from_ifaces(ifaces: &[IfaceConfig]) -> Plan {
    let mut warnings = Vec::new();
    // Like the options that are not repeatable, the last entry for an
    // interface wins; it keeps the place of the first, which decides the
    // metric.
    let mut kept: Vec<&IfaceConfig> = Vec::new();
    for iface in ifaces {
        match kept.iter_mut().find(|k| k.name == iface.name) {
            Some(earlier) => {
                warnings.push(format!(
                    "b2c.iface: {} is listed more than once; the last entry is used",
                    iface.name
                ));
                *earlier = iface;
            }
            None => kept.push(iface),
        }
    }
    Plan {
        origin: Origin::Iface,
        forward: kept.iter().any(|i| i.forward),
        ifaces: kept
            .iter()
            .zip(0..)
            .map(|(i, metric)| IfacePlan {
                link: Link::Named(i.name.clone()),
                mode: i.mode.clone(),
                nameservers: i.nameservers.clone(),
                routes: i.routes.clone(),
                metric,
            })
            .collect(),
        hostname: None,
        ntp: Vec::new(),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use b2c_cmdline::{parse_iface, parse_kernel_ip};

    use super::*;

    fn iface(value: &str) -> IfaceConfig {
        parse_iface(value).unwrap().0
    }

    fn kernel_ip(value: &str) -> KernelIp {
        parse_kernel_ip(value).unwrap()
    }

    #[test]
    fn nothing_given_is_dhcp_on_every_link() {
        let plan = plan(&[], None);
        assert_eq!(plan.origin, Origin::Default);
        assert_eq!(plan.ifaces, [IfacePlan::dhcp(Link::Any)]);
        assert!(!plan.forward && plan.warnings.is_empty());
    }

    #[test]
    fn b2c_iface_wins_over_ip() {
        let ifaces = [iface("eth1,dhcp")];
        let plan = plan(
            &ifaces,
            Some(&kernel_ip("10.0.0.5::10.0.0.1::dut:eth0:off")),
        );
        assert_eq!(plan.origin, Origin::Iface);
        assert_eq!(plan.ifaces.len(), 1);
        assert_eq!(plan.ifaces[0].link, Link::Named("eth1".into()));
        // Nothing of ip= leaks through.
        assert_eq!(plan.hostname, None);
        assert_eq!(
            plan.warnings,
            ["ip= is ignored: b2c.iface takes precedence"]
        );
    }

    #[test]
    fn every_b2c_iface_entry_in_order_with_metrics() {
        let ifaces = [
            iface("eth0,address=10.96.0.5/24,gateway=10.96.0.1,nameserver=10.96.0.53,route=172.16.0.0/12:10.96.0.254"),
            iface("eth1,dhcp,nameserver=9.9.9.9"),
            iface("eth2,address=192.168.7.1/24,forward"),
        ];
        let plan = plan(&ifaces, None);
        assert!(plan.forward);
        let links: Vec<_> = plan
            .ifaces
            .iter()
            .map(|p| p.link.label(p.is_dhcp()))
            .collect();
        assert_eq!(links, ["eth0", "eth1", "eth2"]);
        assert_eq!(
            plan.ifaces.iter().map(|p| p.metric).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let eth0 = &plan.ifaces[0];
        assert_eq!(
            eth0.mode,
            IfaceMode::Static {
                address: "10.96.0.5/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 96, 0, 1)),
            }
        );
        assert_eq!(eth0.nameservers, [Ipv4Addr::new(10, 96, 0, 53)]);
        assert_eq!(eth0.routes.len(), 1);
        assert!(plan.ifaces[1].is_dhcp());
        assert_eq!(plan.ifaces[1].nameservers, [Ipv4Addr::new(9, 9, 9, 9)]);
    }

    #[test]
    fn forward_only_when_asked() {
        let plan = plan(&[iface("eth0,address=10.0.0.2/24")], None);
        assert!(!plan.forward);
    }

    #[test]
    fn a_repeated_interface_keeps_the_last_entry_at_the_first_place() {
        let ifaces = [
            iface("eth0,address=10.0.0.2/24,forward"),
            iface("eth1"),
            iface("eth0,dhcp"),
        ];
        let plan = plan(&ifaces, None);
        assert_eq!(plan.ifaces.len(), 2);
        assert_eq!(plan.ifaces[0].link, Link::Named("eth0".into()));
        assert!(plan.ifaces[0].is_dhcp());
        assert_eq!(plan.ifaces[0].metric, 0);
        // `forward` went with the entry that was replaced.
        assert!(!plan.forward);
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("eth0"), "{:?}", plan.warnings);
    }

    #[test]
    fn kernel_ip_static() {
        let ip = kernel_ip(
            "10.0.0.5::10.0.0.1:255.255.255.0:dut:eth0:off:10.0.0.53:10.0.0.54:10.0.0.123",
        );
        let plan = plan(&[], Some(&ip));
        assert_eq!(plan.origin, Origin::KernelIp);
        assert_eq!(plan.hostname.as_deref(), Some("dut"));
        assert_eq!(plan.ntp, [Ipv4Addr::new(10, 0, 0, 123)]);
        assert_eq!(
            plan.ifaces,
            [IfacePlan {
                link: Link::Named("eth0".into()),
                mode: IfaceMode::Static {
                    address: "10.0.0.5/24".parse().unwrap(),
                    gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                },
                nameservers: vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)],
                routes: vec![],
                metric: 0,
            }]
        );
    }

    #[test]
    fn kernel_ip_static_without_device_takes_the_first_link() {
        let plan = plan(&[], Some(&kernel_ip("10.0.0.5::::::")));
        assert_eq!(plan.ifaces[0].link, Link::Any);
        assert!(!plan.ifaces[0].is_dhcp());
        assert_eq!(plan.ifaces[0].link.label(false), "the first ethernet link");
    }

    #[test]
    fn kernel_ip_dhcp_with_and_without_device() {
        let plan_any = plan(&[], Some(&kernel_ip("dhcp")));
        assert_eq!(plan_any.origin, Origin::KernelIp);
        assert_eq!(plan_any.ifaces, [IfacePlan::dhcp(Link::Any)]);
        let plan_one = plan(&[], Some(&kernel_ip(":::::eth1:dhcp")));
        assert_eq!(
            plan_one.ifaces,
            [IfacePlan::dhcp(Link::Named("eth1".into()))]
        );
    }

    #[test]
    fn kernel_ip_off_configures_nothing_and_says_so() {
        let plan = plan(&[], Some(&KernelIp::Off));
        assert_eq!(plan.origin, Origin::KernelIp);
        assert!(plan.ifaces.is_empty());
        assert_eq!(
            plan.warnings,
            ["ip=off: no network interface is configured"]
        );
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(Origin::Iface.describe("eth1"), "b2c.iface=eth1");
        assert_eq!(Origin::KernelIp.describe("eth0"), "ip= on eth0");
        assert!(Origin::Default
            .describe("eth0, eth1")
            .contains("no b2c.iface or ip="));
    }
}
