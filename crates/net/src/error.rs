use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while bringing the network up.
///
/// Messages name the link, server or file involved so that the console line
/// alone tells the user which option or cable to look at.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no ethernet link appeared within {} s (is the NIC's driver loaded?)", .0.as_secs())]
    NoLinks(Duration),

    #[error("reading {path}: {source}")]
    Sysfs { path: PathBuf, source: io::Error },

    #[error("network link {0} does not exist")]
    LinkNotFound(String),

    #[error("network link {iface} did not appear within {} s", .waited.as_secs())]
    LinkTimeout { iface: String, waited: Duration },

    #[error("looking up network link {iface}: {source}")]
    LinkLookup { iface: String, source: io::Error },

    #[error("opening a netlink socket: {0}")]
    NetlinkSocket(io::Error),

    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },

    #[error("DHCP socket on {iface}: {source}")]
    DhcpSocket { iface: String, source: io::Error },

    #[error("no DHCP lease on {} within {} s (b2c.dhcp_timeout)", .links.join(", "), .waited.as_secs())]
    DhcpTimeout {
        links: Vec<String>,
        waited: Duration,
    },

    #[error("DHCP failed on {}: {reason}", if .links.is_empty() { "no link".to_string() } else { .links.join(", ") })]
    DhcpFailed { links: Vec<String>, reason: String },

    #[error("writing {path}: {source}")]
    ResolvConf { path: PathBuf, source: io::Error },

    #[error("NTP server {server}: {reason}")]
    Sntp { server: String, reason: String },

    /// One interface of [`bring_up`](crate::bring_up) failed; `what` names
    /// the option it came from.
    #[error("{what}: {source}")]
    Configure {
        what: String,
        iface: String,
        source: Box<NetError>,
    },

    #[error("turning on IPv4 forwarding (b2c.iface forward): {0}")]
    Forwarding(io::Error),

    /// `url` has no credentials: they are stripped before anything shows it.
    #[error("fetching {url}: {reason}")]
    Fetch {
        url: String,
        reason: String,
        /// The HTTP status, when the server answered with an error.
        status: Option<u16>,
    },
}

impl NetError {
    pub(crate) fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetError::Netlink {
            what: what.into(),
            source,
        }
    }
}
