//! A small generic-netlink client for the kernel's `nbd` family: resolve
//! the family and its multicast group, `NBD_CMD_CONNECT`,
//! `NBD_CMD_RECONFIGURE`, and the `NBD_CMD_LINK_DEAD` events. Messages
//! are built and parsed by pure functions; [`Genl`] is the socket.
//!
//! Constants are the kernel's uapi (`linux/netlink.h`, `linux/genetlink.h`,
//! `linux/nbd-netlink.h`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

pub const NBD_FAMILY: &str = "nbd";
pub const NBD_MCAST_GROUP: &str = "nbd_mc_group";
const NBD_GENL_VERSION: u8 = 1;
pub const NBD_CMD_CONNECT: u8 = 1;
pub const NBD_CMD_RECONFIGURE: u8 = 3;
pub const NBD_CMD_LINK_DEAD: u8 = 4;
pub const NBD_ATTR_INDEX: u16 = 1;
pub const NBD_ATTR_SIZE_BYTES: u16 = 2;
pub const NBD_ATTR_BLOCK_SIZE_BYTES: u16 = 3;
pub const NBD_ATTR_TIMEOUT: u16 = 4;
pub const NBD_ATTR_SERVER_FLAGS: u16 = 5;
pub const NBD_ATTR_SOCKETS: u16 = 7;
pub const NBD_ATTR_DEAD_CONN_TIMEOUT: u16 = 8;
const NBD_SOCK_ITEM: u16 = 1;
const NBD_SOCK_FD: u16 = 1;

/// A netlink message with a generic-netlink header and attributes, built
/// in place.
pub struct Message {
    buf: Vec<u8>,
    /// Offsets of the nested attributes still open.
    open: Vec<usize>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Message {
    pub fn new(family: u16, cmd: u8, version: u8, flags: u16) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Message {
            buf,
            open: Vec::new(),
        }
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn u64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn string(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    pub fn nest(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("a nested attribute is open");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        assert!(self.open.is_empty(), "nested attributes left open");
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf.clone()
    }
}

/// `NBD_CMD_CONNECT` or `NBD_CMD_RECONFIGURE` of device `index` with
/// these sockets (their descriptors: the kernel takes them from the
/// calling process).
pub fn sockets_message(family: u16, cmd: u8, index: u32, fds: &[RawFd]) -> Message {
    let mut m = Message::new(family, cmd, NBD_GENL_VERSION, NLM_F_REQUEST | NLM_F_ACK);
    m.u32(NBD_ATTR_INDEX, index);
    m.nest(NBD_ATTR_SOCKETS);
    for fd in fds {
        m.nest(NBD_SOCK_ITEM).u32(NBD_SOCK_FD, *fd as u32).end();
    }
    m.end();
    m
}

/// One netlink message received: its type, and for a generic-netlink one
/// its command and attributes (the payload after the genl header).
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// An acknowledgement (0) or an error (a negative errno).
    Ack(i32),
    Done,
    Genl {
        kind: u16,
        cmd: u8,
        attrs: &'a [u8],
    },
}

/// The messages in a datagram. Malformed tails are dropped.
pub fn parse_messages(mut buf: &[u8]) -> Vec<Received<'_>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[..4].try_into().expect("4")) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2"));
        let body = &buf[16..len];
        match kind {
            NLMSG_ERROR if body.len() >= 4 => {
                out.push(Received::Ack(i32::from_ne_bytes(
                    body[..4].try_into().expect("4"),
                )));
            }
            NLMSG_DONE => out.push(Received::Done),
            _ if body.len() >= 4 => out.push(Received::Genl {
                kind,
                cmd: body[0],
                attrs: &body[4..],
            }),
            _ => {}
        }
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The attributes of a payload: (type without flags, data).
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

pub fn attr_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// The family ID and its multicast group of `name` in a
/// `CTRL_CMD_GETFAMILY` answer.
pub fn parse_family(attrs_buf: &[u8], group: &str) -> (Option<u16>, Option<u32>) {
    let mut id = None;
    let mut group_id = None;
    for (kind, data) in attrs(attrs_buf) {
        match kind {
            CTRL_ATTR_FAMILY_ID if data.len() >= 2 => {
                id = Some(u16::from_ne_bytes([data[0], data[1]]))
            }
            CTRL_ATTR_MCAST_GROUPS => {
                for (_, grp) in attrs(data) {
                    let fields = attrs(grp);
                    let name = fields
                        .iter()
                        .find(|(k, _)| *k == CTRL_ATTR_MCAST_GRP_NAME)
                        .map(|(_, d)| d.split(|b| *b == 0).next().unwrap_or_default());
                    if name == Some(group.as_bytes()) {
                        group_id = fields
                            .iter()
                            .find(|(k, _)| *k == CTRL_ATTR_MCAST_GRP_ID)
                            .and_then(|(_, d)| attr_u32(d));
                    }
                }
            }
            _ => {}
        }
    }
    (id, group_id)
}

/// A generic-netlink socket.
pub struct Genl {
    fd: OwnedFd,
}

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

impl Genl {
    pub fn open() -> io::Result<Genl> {
        // SAFETY: plain syscalls; the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is a valid "any port" address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Genl { fd })
    }

    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl is the kernel's address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let r = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    pub fn join(&self, group: u32) -> io::Result<()> {
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_ADD_MEMBERSHIP,
                (&group as *const u32).cast(),
                4,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends a request with NLM_F_ACK and waits for its acknowledgement;
    /// the generic-netlink answers that come first are returned.
    pub fn request(&self, msg: &[u8]) -> io::Result<Vec<(u8, Vec<u8>)>> {
        self.send(msg)?;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = self.recv(&mut buf)?;
            for m in parse_messages(&buf[..n]) {
                match m {
                    Received::Ack(0) | Received::Done => return Ok(answers),
                    Received::Ack(e) => return Err(io::Error::from_raw_os_error(-e)),
                    Received::Genl { cmd, attrs, .. } => answers.push((cmd, attrs.to_vec())),
                }
            }
        }
    }

    /// The ID of family `name` and of its multicast group `group`.
    pub fn resolve(&self, name: &str, group: &str) -> io::Result<(u16, Option<u32>)> {
        let msg = Message::new(
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            1,
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .string(CTRL_ATTR_FAMILY_NAME, name)
        .finish();
        for (_, attrs) in self.request(&msg)? {
            if let (Some(id), group_id) = parse_family(&attrs, group) {
                return Ok((id, group_id));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no generic netlink family {name}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_laid_out_as_the_kernel_reads_them() {
        let msg = sockets_message(0x21, NBD_CMD_CONNECT, 1, &[7, 9]).finish();
        // nlmsghdr + genlmsghdr, then INDEX, then SOCKETS{ITEM{FD}, ITEM{FD}}.
        assert_eq!(
            u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), 0x21);
        assert_eq!(
            u16::from_ne_bytes([msg[6], msg[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(&msg[16..20], &[NBD_CMD_CONNECT, 1, 0, 0]);
        let top = attrs(&msg[20..]);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0], (NBD_ATTR_INDEX, &1u32.to_ne_bytes()[..]));
        assert_eq!(top[1].0, NBD_ATTR_SOCKETS);
        let items = attrs(top[1].1);
        assert_eq!(items.len(), 2);
        let fds: Vec<u32> = items
            .iter()
            .map(|(k, d)| {
                assert_eq!(*k, NBD_SOCK_ITEM);
                let inner = attrs(d);
                assert_eq!(inner[0].0, NBD_SOCK_FD);
                attr_u32(inner[0].1).unwrap()
            })
            .collect();
        assert_eq!(fds, [7, 9]);
        // The nested flag is set on the wire.
        let raw_kind = u16::from_ne_bytes([msg[30], msg[31]]);
        assert_eq!(raw_kind, NBD_ATTR_SOCKETS | NLA_F_NESTED);
    }

    #[test]
    fn answers_parse() {
        // A family answer as the controller sends it.
        let mut m = Message::new(GENL_ID_CTRL, 1, 2, 0);
        m.attr(CTRL_ATTR_FAMILY_ID, &0x1bu16.to_ne_bytes())
            .string(CTRL_ATTR_FAMILY_NAME, "nbd")
            .nest(CTRL_ATTR_MCAST_GROUPS)
            .nest(1)
            .u32(CTRL_ATTR_MCAST_GRP_ID, 9)
            .string(CTRL_ATTR_MCAST_GRP_NAME, "nbd_mc_group")
            .end()
            .end();
        let mut datagram = m.finish();
        // Then an acknowledgement: nlmsghdr, error 0, the request's header.
        let mut ack = vec![0u8; 36];
        ack[..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        datagram.extend_from_slice(&ack);
        let got = parse_messages(&datagram);
        assert_eq!(got.len(), 2);
        let Received::Genl { attrs: a, .. } = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(parse_family(a, NBD_MCAST_GROUP), (Some(0x1b), Some(9)));
        assert_eq!(parse_family(a, "other"), (Some(0x1b), None));
        assert_eq!(got[1], Received::Ack(0));
        assert!(parse_messages(&[1, 2, 3]).is_empty());
    }
}
