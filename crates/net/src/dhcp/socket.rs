//! A UDP socket that can do DHCP on one link before it has an address.
//!
//! Bound to 0.0.0.0:68 and pinned to the link with SO_BINDTODEVICE: sends to
//! 255.255.255.255 leave through that link alone, and only datagrams that
//! arrived on it are received. SO_REUSEADDR lets one such socket exist per
//! link at the same time.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use tokio::net::UdpSocket;

use super::packet::{CLIENT, SERVER};

pub(crate) struct DhcpSocket {
    socket: UdpSocket,
}

impl DhcpSocket {
    /// Must be called from within the tokio runtime.
    pub(crate) fn open(iface: &str) -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        setsockopt(&fd, sockopt::Broadcast, &true)?;
        // Before bind(): the device is part of what makes several sockets on
        // port 68 distinct.
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(iface))?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT)),
        )?;
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        Ok(DhcpSocket { socket })
    }

    /// `None` broadcasts on the link.
    pub(crate) async fn send(&self, bytes: &[u8], server: Option<Ipv4Addr>) -> io::Result<()> {
        let dest = server.unwrap_or(Ipv4Addr::BROADCAST);
        self.socket
            .send_to(bytes, SocketAddrV4::new(dest, SERVER))
            .await
            .map(drop)
    }

    /// The next datagram that came from a server port, with its sender.
    pub(crate) async fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<(&'b [u8], Ipv4Addr)> {
        loop {
            let (len, from) = self.socket.recv_from(buf).await?;
            if let SocketAddr::V4(from) = from {
                if from.port() == SERVER {
                    return Ok((&buf[..len], *from.ip()));
                }
            }
        }
    }
}
