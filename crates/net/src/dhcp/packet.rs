//! DHCPv4 messages: what the client sends and what it makes of the replies.
//! Pure functions over bytes, so every rule here is unit-tested.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{
    DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, CLIENT_PORT, SERVER_PORT,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use log::warn;
use tokio::time::Instant;

use super::Lease;

pub(crate) const SERVER: u16 = SERVER_PORT;
pub(crate) const CLIENT: u16 = CLIENT_PORT;

/// BOOTP's minimum message size (RFC 1542 §2.1): some relays and servers drop
/// anything shorter.
const MIN_LEN: usize = 300;
/// `htype` for ethernet in the client identifier (RFC 2132 §9.14).
const HTYPE_ETHER: u8 = 1;
const INFINITE: u32 = u32::MAX;

const REQUESTED_OPTIONS: [OptionCode; 10] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::NtpServers,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::DomainSearch,
];

/// Which state of RFC 2131 §4.3.2 a REQUEST is sent from: it decides which
/// of `ciaddr`, the server identifier and the requested address are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Answering an OFFER (broadcast).
    Selecting { server: Ipv4Addr, address: Ipv4Addr },
    /// Extending a lease with the server that granted it (unicast, at T1).
    Renewing { address: Ipv4Addr },
    /// Extending a lease with any server (broadcast, at T2).
    Rebinding { address: Ipv4Addr },
}

/// What stays the same across one exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub mac: [u8; 6],
    pub xid: u32,
    /// Seconds since the client began this acquisition or renewal.
    pub secs: u16,
}

impl Exchange {
    fn message(&self, msg_type: MessageType) -> Message {
        let mut msg = Message::new_with_id(
            self.xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        msg.set_secs(self.secs);
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(msg_type));
        let mut client_id = vec![HTYPE_ETHER];
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::ParameterRequestList(REQUESTED_OPTIONS.to_vec()));
        msg
    }

    pub(crate) fn discover(&self) -> Vec<u8> {
        let mut msg = self.message(MessageType::Discover);
        // We have no address yet, so the server must broadcast its answer.
        msg.set_flags(Flags::default().set_broadcast());
        encode(&msg)
    }

    pub(crate) fn request(&self, kind: RequestKind) -> Vec<u8> {
        let mut msg = self.message(MessageType::Request);
        match kind {
            RequestKind::Selecting { server, address } => {
                msg.set_flags(Flags::default().set_broadcast());
                msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
                msg.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(address));
            }
            // With ciaddr set the server answers by unicast to that address,
            // which our socket receives like any other datagram.
            RequestKind::Renewing { address } | RequestKind::Rebinding { address } => {
                msg.set_ciaddr(address);
            }
        }
        encode(&msg)
    }
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MIN_LEN);
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("encoding into a Vec cannot fail");
    // Zero bytes after the END option are PAD options.
    if buf.len() < MIN_LEN {
        buf.resize(MIN_LEN, 0);
    }
    buf
}

/// A server's answer that belongs to our exchange.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Offer {
        address: Ipv4Addr,
        server: Ipv4Addr,
    },
    Ack(Box<Lease>),
    Nak {
        server: Option<Ipv4Addr>,
        message: Option<String>,
    },
}

/// Decodes a datagram from port 67. `None` when it is not a reply to this
/// exchange (another client's, a retransmission we already handled, garbage):
/// the socket sees every DHCP broadcast on the link.
///
/// `src` is the sender's address, used when the server omits its identifier;
/// `sent` is when the REQUEST went out: lease times count from then.
pub(crate) fn parse_reply(
    bytes: &[u8],
    ex: &Exchange,
    iface: &str,
    src: Ipv4Addr,
    sent: Instant,
) -> Option<Reply> {
    let msg = Message::decode(&mut Decoder::new(bytes)).ok()?;
    if msg.opcode() != Opcode::BootReply
        || msg.xid() != ex.xid
        || msg.chaddr().get(..6) != Some(&ex.mac[..])
    {
        return None;
    }
    let opts = msg.opts();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    match opts.msg_type()? {
        MessageType::Offer => Some(Reply::Offer {
            address: usable(msg.yiaddr())?,
            server: server.unwrap_or(src),
        }),
        MessageType::Ack => lease_from_ack(&msg, iface, ex.mac, server.unwrap_or(src), sent)
            .map(|lease| Reply::Ack(Box::new(lease))),
        MessageType::Nak => Some(Reply::Nak {
            server,
            message: match opts.get(OptionCode::Message) {
                Some(DhcpOption::Message(text)) => Some(text.clone()),
                _ => None,
            },
        }),
        _ => None,
    }
}

fn usable(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast()).then_some(ip)
}

fn lease_from_ack(
    msg: &Message,
    iface: &str,
    mac: [u8; 6],
    server: Ipv4Addr,
    acquired: Instant,
) -> Option<Lease> {
    let address = usable(msg.yiaddr())?;
    let opts = msg.opts();
    let secs = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
        ) => Some(*s),
        _ => None,
    };
    let ips = |code| match opts.get(code) {
        Some(
            DhcpOption::Router(ips)
            | DhcpOption::DomainNameServer(ips)
            | DhcpOption::NtpServers(ips),
        ) => ips.clone(),
        _ => Vec::new(),
    };
    let text = |code| match opts.get(code) {
        Some(DhcpOption::DomainName(s) | DhcpOption::Hostname(s)) => {
            let s = s.trim_end_matches('\0').trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        _ => None,
    };

    // RFC 2131 §4.3.1: an ACK to a REQUEST carries the lease time. Guessing
    // one could leave us using an address the server gave to someone else.
    let Some(lease_secs) = secs(OptionCode::AddressLeaseTime) else {
        warn!("DHCP: ignoring ACK from {server} on {iface}: it has no lease time");
        return None;
    };
    let (lease_time, renew_at, rebind_at) = lease_times(
        lease_secs,
        secs(OptionCode::Renewal),
        secs(OptionCode::Rebinding),
    );

    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => mask_to_prefix(*mask).unwrap_or_else(|| {
            warn!("DHCP: {server} sent the netmask {mask}, which is no prefix; ignoring it");
            classful_prefix(address)
        }),
        _ => classful_prefix(address),
    };
    let search = match opts.get(OptionCode::DomainSearch) {
        // ASCII (punycode) is what resolvers compare, and it keeps IDNA
        // tables out of the binary.
        Some(DhcpOption::DomainSearch(names)) => names
            .iter()
            .map(|n| n.to_ascii().trim_end_matches('.').to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        _ => Vec::new(),
    };

    Some(Lease {
        iface: iface.to_owned(),
        mac,
        address,
        prefix_len,
        router: ips(OptionCode::Router).into_iter().find_map(usable),
        dns: ips(OptionCode::DomainNameServer),
        ntp: ips(OptionCode::NtpServers),
        domain: text(OptionCode::DomainName),
        search,
        hostname: text(OptionCode::Hostname),
        server,
        lease_time,
        renew_at,
        rebind_at,
        acquired,
    })
}

/// Lease time, T1 and T2. T1 and T2 default to 50% and 87.5% of the lease
/// (RFC 2131 §4.4.5); a value that breaks T1 <= T2 <= lease is replaced by
/// its default too. An infinite lease has infinite T1 and T2.
fn lease_times(lease: u32, t1: Option<u32>, t2: Option<u32>) -> (Duration, Duration, Duration) {
    if lease == INFINITE {
        return (Lease::INFINITE, Lease::INFINITE, Lease::INFINITE);
    }
    let lease = u64::from(lease);
    let t2 = t2
        .map(u64::from)
        .filter(|&t2| t2 <= lease)
        .unwrap_or(lease * 7 / 8);
    let t1 = t1
        .map(u64::from)
        .filter(|&t1| t1 <= t2)
        .unwrap_or((lease / 2).min(t2));
    let d = Duration::from_secs;
    (d(lease), d(t1), d(t2))
}

fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    // A mask with holes is not a prefix; such a reply is broken.
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// RFC 2131 leaves a missing subnet mask to the client; the class of the
/// address is the traditional guess.
fn classful_prefix(ip: Ipv4Addr) -> u8 {
    match ip.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::HType;
    use dhcproto::Name;
    use std::str::FromStr;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
    const EX: Exchange = Exchange {
        mac: MAC,
        xid: 0x1234_5678,
        secs: 3,
    };
    const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
    const YIADDR: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 23);

    fn decode(bytes: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(bytes)).unwrap()
    }

    fn reply(msg_type: MessageType, opts: Vec<DhcpOption>) -> Message {
        let mut msg = Message::new_with_id(
            EX.xid,
            Ipv4Addr::UNSPECIFIED,
            YIADDR,
            SERVER_IP,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        msg.set_opcode(Opcode::BootReply);
        msg.opts_mut().insert(DhcpOption::MessageType(msg_type));
        for opt in opts {
            msg.opts_mut().insert(opt);
        }
        msg
    }

    fn parse(msg: &Message) -> Option<Reply> {
        parse_reply(&encode(msg), &EX, "eth0", SERVER_IP, Instant::now())
    }

    fn ack_lease(opts: Vec<DhcpOption>) -> Lease {
        match parse(&reply(MessageType::Ack, opts)) {
            Some(Reply::Ack(lease)) => *lease,
            other => panic!("expected an ACK, got {other:?}"),
        }
    }

    fn common_request_checks(msg: &Message, msg_type: MessageType) {
        assert_eq!(msg.opcode(), Opcode::BootRequest);
        assert_eq!(msg.htype(), HType::Eth);
        assert_eq!(msg.hlen(), 6);
        assert_eq!(msg.xid(), EX.xid);
        assert_eq!(msg.secs(), 3);
        assert_eq!(&msg.chaddr()[..6], &MAC);
        assert_eq!(msg.opts().msg_type(), Some(msg_type));
        assert_eq!(
            msg.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0xab, 0xcd, 0xef
            ]))
        );
        let Some(DhcpOption::ParameterRequestList(list)) =
            msg.opts().get(OptionCode::ParameterRequestList)
        else {
            panic!("no parameter request list");
        };
        for code in [
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::DomainName,
            OptionCode::Hostname,
            OptionCode::NtpServers,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ] {
            assert!(list.contains(&code), "{code:?} not requested");
        }
    }

    #[test]
    fn discover_asks_for_a_broadcast_answer() {
        let bytes = EX.discover();
        assert!(bytes.len() >= MIN_LEN);
        let msg = decode(&bytes);
        common_request_checks(&msg, MessageType::Discover);
        assert!(msg.flags().broadcast());
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(!msg.opts().contains(OptionCode::ServerIdentifier));
        assert!(!msg.opts().contains(OptionCode::RequestedIpAddress));
    }

    #[test]
    fn selecting_request_names_server_and_address() {
        let msg = decode(&EX.request(RequestKind::Selecting {
            server: SERVER_IP,
            address: YIADDR,
        }));
        common_request_checks(&msg, MessageType::Request);
        assert!(msg.flags().broadcast());
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            msg.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER_IP))
        );
        assert_eq!(
            msg.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(YIADDR))
        );
    }

    #[test]
    fn renewing_and_rebinding_requests_use_ciaddr() {
        for kind in [
            RequestKind::Renewing { address: YIADDR },
            RequestKind::Rebinding { address: YIADDR },
        ] {
            let msg = decode(&EX.request(kind));
            common_request_checks(&msg, MessageType::Request);
            assert_eq!(msg.ciaddr(), YIADDR);
            assert!(!msg.flags().broadcast());
            // RFC 2131 §4.3.2: MUST NOT be filled in these states.
            assert!(!msg.opts().contains(OptionCode::ServerIdentifier));
            assert!(!msg.opts().contains(OptionCode::RequestedIpAddress));
        }
    }

    #[test]
    fn offer_is_parsed() {
        let msg = reply(
            MessageType::Offer,
            vec![DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 98, 0, 2))],
        );
        assert_eq!(
            parse(&msg),
            Some(Reply::Offer {
                address: YIADDR,
                server: Ipv4Addr::new(10, 98, 0, 2),
            })
        );
    }

    #[test]
    fn replies_to_others_are_ignored() {
        let mut msg = reply(MessageType::Offer, vec![]);
        msg.set_xid(EX.xid + 1);
        assert_eq!(parse(&msg), None, "other xid");

        let mut msg = reply(MessageType::Offer, vec![]);
        msg.set_chaddr(&[0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(parse(&msg), None, "other chaddr");

        // Our own broadcast DISCOVER, seen by the socket of a sibling link.
        assert_eq!(
            parse_reply(&EX.discover(), &EX, "eth0", SERVER_IP, Instant::now()),
            None
        );
        assert_eq!(
            parse_reply(b"garbage", &EX, "eth0", SERVER_IP, Instant::now()),
            None
        );
    }

    #[test]
    fn ack_becomes_a_lease() {
        let lease = ack_lease(vec![
            DhcpOption::ServerIdentifier(SERVER_IP),
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::Router(vec![SERVER_IP, Ipv4Addr::new(10, 98, 0, 254)]),
            DhcpOption::DomainNameServer(vec![SERVER_IP, Ipv4Addr::new(10, 98, 0, 3)]),
            DhcpOption::NtpServers(vec![Ipv4Addr::new(10, 98, 0, 4)]),
            DhcpOption::DomainName("ci.example".into()),
            DhcpOption::DomainSearch(vec![Name::from_str("lab.example.").unwrap()]),
            DhcpOption::Hostname("dut-7".into()),
            DhcpOption::AddressLeaseTime(3600),
            DhcpOption::Renewal(600),
            DhcpOption::Rebinding(1200),
        ]);
        assert_eq!(lease.iface, "eth0");
        assert_eq!(lease.mac, MAC);
        assert_eq!(lease.address, YIADDR);
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.router, Some(SERVER_IP));
        assert_eq!(lease.dns, [SERVER_IP, Ipv4Addr::new(10, 98, 0, 3)]);
        assert_eq!(lease.ntp, [Ipv4Addr::new(10, 98, 0, 4)]);
        assert_eq!(lease.domain.as_deref(), Some("ci.example"));
        assert_eq!(lease.search, ["lab.example"]);
        assert_eq!(lease.hostname.as_deref(), Some("dut-7"));
        assert_eq!(lease.server, SERVER_IP);
        assert_eq!(lease.lease_time, Duration::from_secs(3600));
        assert_eq!(lease.renew_at, Duration::from_secs(600));
        assert_eq!(lease.rebind_at, Duration::from_secs(1200));
    }

    #[test]
    fn t1_t2_default_to_50_and_87_5_percent() {
        let lease = ack_lease(vec![DhcpOption::AddressLeaseTime(120)]);
        assert_eq!(lease.lease_time, Duration::from_secs(120));
        assert_eq!(lease.renew_at, Duration::from_secs(60));
        assert_eq!(lease.rebind_at, Duration::from_secs(105));
        // Without a server identifier the sender's address stands in.
        assert_eq!(lease.server, SERVER_IP);
        // Without a mask, the address class decides.
        assert_eq!(lease.prefix_len, 8);
        assert_eq!(lease.router, None);
        assert!(lease.dns.is_empty() && lease.ntp.is_empty());
        assert_eq!(lease.domain, None);
    }

    #[test]
    fn inconsistent_t1_t2_fall_back_to_defaults() {
        // T2 beyond the lease, T1 beyond T2.
        assert_eq!(
            lease_times(100, Some(90), Some(200)),
            (
                Duration::from_secs(100),
                Duration::from_secs(50),
                Duration::from_secs(87)
            )
        );
        assert_eq!(
            lease_times(100, Some(80), Some(40)),
            (
                Duration::from_secs(100),
                Duration::from_secs(40),
                Duration::from_secs(40)
            )
        );
        assert_eq!(
            lease_times(INFINITE, Some(10), Some(20)),
            (Lease::INFINITE, Lease::INFINITE, Lease::INFINITE)
        );
    }

    #[test]
    fn ack_without_lease_time_is_refused() {
        assert_eq!(parse(&reply(MessageType::Ack, vec![])), None);
    }

    #[test]
    fn infinite_lease() {
        let lease = ack_lease(vec![DhcpOption::AddressLeaseTime(INFINITE)]);
        assert!(lease.is_infinite());
        assert_eq!(lease.renew_at, Lease::INFINITE);
        assert_eq!(lease.rebind_at, Lease::INFINITE);
    }

    #[test]
    fn nak_is_parsed() {
        let mut msg = reply(
            MessageType::Nak,
            vec![
                DhcpOption::ServerIdentifier(SERVER_IP),
                DhcpOption::Message("wrong network".into()),
            ],
        );
        msg.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            parse(&msg),
            Some(Reply::Nak {
                server: Some(SERVER_IP),
                message: Some("wrong network".into()),
            })
        );
    }

    #[test]
    fn masks() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(classful_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 0, 1)), 24);
    }
}
