//! Network options: `b2c.iface` and the kernel's `ip=`.

use std::net::Ipv4Addr;

/// An IPv4 address with its prefix length, `192.168.1.7/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX (such as 192.168.1.7/24)"))?;
        let address = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix_len = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length (0 to 32)"))?;
        Ok(Ipv4Cidr {
            address,
            prefix_len,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// An extra route: `route=NET:GW`, such as `route=10.0.0.0/8:192.168.1.254`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Cidr,
    pub gateway: Ipv4Addr,
}

/// How one interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceMode {
    Dhcp,
    Static {
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
    },
}

/// One `b2c.iface` entry, or what the kernel's `ip=` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceConfig {
    pub name: String,
    pub mode: IfaceMode,
    pub nameservers: Vec<Ipv4Addr>,
    pub routes: Vec<Route>,
    /// Turn on IPv4 forwarding.
    pub forward: bool,
}

/// `b2c.iface=IF[,address=CIDR][,gateway=IP][,nameserver=IP]…[,route=NET:GW]…[,forward][,auto|dhcp]`.
/// Returns the configuration and warnings about unknown parameters.
pub fn parse_iface(value: &str) -> Result<(IfaceConfig, Vec<String>), String> {
    let mut parts = value.split(',');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() || name.contains('=') {
        return Err("expected an interface name first, such as eth0,address=192.168.1.7/24".into());
    }
    let mut address = None;
    let mut gateway = None;
    let mut dhcp = false;
    let mut config = IfaceConfig {
        name: name.to_string(),
        mode: IfaceMode::Dhcp,
        nameservers: Vec::new(),
        routes: Vec::new(),
        forward: false,
    };
    let mut warnings = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        let (key, val) = part.split_once('=').unwrap_or((part, ""));
        let ip = |v: &str| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("{key}={v:?} is not an IPv4 address"))
        };
        match key {
            "address" => address = Some(cidr_or_host(key, val, &mut warnings)?),
            "gateway" => gateway = Some(ip(val)?),
            "nameserver" => config.nameservers.push(ip(val)?),
            "route" => {
                let (net, gw) = val
                    .rsplit_once(':')
                    .ok_or_else(|| format!("route={val:?} is not NETWORK/PREFIX:GATEWAY"))?;
                config.routes.push(Route {
                    destination: cidr_or_host(key, net, &mut warnings)?,
                    gateway: ip(gw)?,
                });
            }
            "forward" => config.forward = true,
            "auto" | "dhcp" => dhcp = true,
            _ => warnings.push(format!("b2c.iface: unknown parameter {part:?} is ignored")),
        }
    }
    config.mode = match (address, dhcp) {
        (Some(_), true) => {
            return Err("address= and dhcp/auto exclude each other".into());
        }
        (Some(address), false) => IfaceMode::Static { address, gateway },
        (None, _) => {
            if gateway.is_some() {
                return Err("gateway= needs address= (or remove it to use DHCP)".into());
            }
            IfaceMode::Dhcp
        }
    };
    Ok((config, warnings))
}

/// `ADDRESS/PREFIX`, or a bare address: boot2container gives it to `ip
/// address add` / `ip route replace`, which take it as a /32, so b2c does
/// too, with a warning.
fn cidr_or_host(key: &str, value: &str, warnings: &mut Vec<String>) -> Result<Ipv4Cidr, String> {
    if value.contains('/') {
        return value.parse();
    }
    let address = value
        .parse()
        .map_err(|_| format!("{key}={value:?} is not an IPv4 address"))?;
    warnings.push(format!(
        "b2c.iface: {key}={value} has no prefix length: using {value}/32, as `ip` does \
         (write {value}/24 for a /24 network)"
    ));
    Ok(Ipv4Cidr {
        address,
        prefix_len: 32,
    })
}

/// The kernel's `ip=` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelIp {
    /// `ip=off` / `ip=none`: no automatic configuration.
    Off,
    /// DHCP on `device`, or on every ethernet link when `None`.
    Dhcp { device: Option<String> },
    Static {
        device: Option<String>,
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        hostname: Option<String>,
        nameservers: Vec<Ipv4Addr>,
        ntp: Option<Ipv4Addr>,
    },
}

fn netmask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// `ip=dhcp`, or the nfsroot form
/// `client:server:gw:netmask:hostname:device:autoconf:dns0:dns1:ntp0`.
pub fn parse_kernel_ip(value: &str) -> Result<KernelIp, String> {
    match value {
        "off" | "none" => return Ok(KernelIp::Off),
        "dhcp" | "on" | "any" | "bootp" | "rarp" | "both" => {
            return Ok(KernelIp::Dhcp { device: None })
        }
        _ => {}
    }
    let fields: Vec<&str> = value.split(':').collect();
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let ip = |i: usize, what: &str| -> Result<Option<Ipv4Addr>, String> {
        field(i)
            .map(|f| {
                f.parse()
                    .map_err(|_| format!("{what} {f:?} is not an IPv4 address"))
            })
            .transpose()
    };
    let device = field(5).map(String::from);
    let autoconf = field(6).unwrap_or("");
    let client = ip(0, "client address")?;
    let dhcp = matches!(autoconf, "dhcp" | "on" | "any" | "bootp" | "both");
    match (client, dhcp) {
        (_, true) => Ok(KernelIp::Dhcp { device }),
        (None, false) if matches!(autoconf, "off" | "none") && device.is_none() => {
            Ok(KernelIp::Off)
        }
        (None, false) => Err(
            "expected dhcp, or client:server:gw:netmask:hostname:device:autoconf with a client address"
                .into(),
        ),
        (Some(address), false) => {
            if !matches!(autoconf, "" | "off" | "none" | "static") {
                return Err(format!("autoconf {autoconf:?} is not off, none, static or dhcp"));
            }
            let prefix_len = match ip(3, "netmask")? {
                Some(mask) => netmask_to_prefix(mask)
                    .ok_or_else(|| format!("netmask {mask} is not contiguous"))?,
                None => 24,
            };
            let nameservers = [ip(7, "dns0")?, ip(8, "dns1")?].into_iter().flatten().collect();
            Ok(KernelIp::Static {
                device,
                address: Ipv4Cidr {
                    address,
                    prefix_len,
                },
                gateway: ip(2, "gateway")?,
                hostname: field(4).map(String::from),
                nameservers,
                ntp: ip(9, "ntp0")?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iface_static_with_everything() {
        let (c, w) = parse_iface(
            "eth0,address=192.168.1.7/24,gateway=192.168.1.1,nameserver=192.168.1.1,\
             nameserver=9.9.9.9,route=10.0.0.0/8:192.168.1.254,forward,mtu=9000",
        )
        .unwrap();
        assert_eq!(c.name, "eth0");
        assert_eq!(
            c.mode,
            IfaceMode::Static {
                address: "192.168.1.7/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
            }
        );
        assert_eq!(c.nameservers.len(), 2);
        assert_eq!(c.routes[0].destination.to_string(), "10.0.0.0/8");
        assert_eq!(c.routes[0].gateway, Ipv4Addr::new(192, 168, 1, 254));
        assert!(c.forward);
        assert_eq!(w, ["b2c.iface: unknown parameter \"mtu=9000\" is ignored"]);
    }

    #[test]
    fn an_address_without_prefix_is_a_host_address_with_a_warning() {
        let (c, w) = parse_iface("eth0,address=10.0.0.7,route=10.1.0.9:10.0.0.1").unwrap();
        assert_eq!(
            c.mode,
            IfaceMode::Static {
                address: "10.0.0.7/32".parse().unwrap(),
                gateway: None
            }
        );
        assert_eq!(c.routes[0].destination.to_string(), "10.1.0.9/32");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("address=10.0.0.7") && w[0].contains("/32"),
            "{w:?}"
        );
        assert!(parse_iface("eth0,address=10.0.0.300").is_err());
    }

    #[test]
    fn iface_dhcp_forms() {
        for v in [
            "eth1",
            "eth1,dhcp",
            "eth1,auto",
            "eth1,dhcp,nameserver=1.1.1.1",
        ] {
            assert_eq!(parse_iface(v).unwrap().0.mode, IfaceMode::Dhcp, "{v}");
        }
    }

    #[test]
    fn iface_errors() {
        for v in [
            "",
            "address=1.2.3.4/24",
            "eth0,address=1.2.3.4/33",
            "eth0,address=1.2.3.4/24,dhcp",
            "eth0,gateway=1.2.3.4",
            "eth0,nameserver=dns.example",
            "eth0,route=10.0.0.0/8",
        ] {
            assert!(parse_iface(v).is_err(), "{v}");
        }
    }

    #[test]
    fn kernel_ip_forms() {
        assert_eq!(parse_kernel_ip("dhcp"), Ok(KernelIp::Dhcp { device: None }));
        assert_eq!(parse_kernel_ip("off"), Ok(KernelIp::Off));
        assert_eq!(
            parse_kernel_ip(":::::eth1:dhcp"),
            Ok(KernelIp::Dhcp {
                device: Some("eth1".into())
            })
        );
        assert_eq!(
            parse_kernel_ip(
                "10.0.0.5:10.0.0.1:10.0.0.1:255.255.255.0:dut:eth0:off:10.0.0.1::10.0.0.1"
            ),
            Ok(KernelIp::Static {
                device: Some("eth0".into()),
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                hostname: Some("dut".into()),
                nameservers: vec![Ipv4Addr::new(10, 0, 0, 1)],
                ntp: Some(Ipv4Addr::new(10, 0, 0, 1)),
            })
        );
        // Short forms default the rest.
        assert!(matches!(
            parse_kernel_ip("10.0.0.5::::::"),
            Ok(KernelIp::Static { address, gateway: None, .. }) if address.prefix_len == 24
        ));
        for bad in [
            "10.0.0.300",
            "10.0.0.5::x",
            "10.0.0.5:::255.0.255.0",
            "10.0.0.5::::::weird",
            "garbage",
        ] {
            assert!(parse_kernel_ip(bad).is_err(), "{bad}");
        }
    }
}
