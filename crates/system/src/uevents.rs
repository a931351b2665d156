//! Kernel uevents: the messages the kernel multicasts on a
//! `NETLINK_KOBJECT_UEVENT` socket when a device appears, binds to a
//! driver or goes away (what udev listens to). b2c listens for the whole
//! boot, so that a device that shows up late (a USB NIC once its bus is
//! enumerated, a slow disk) gets its driver as it appears.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::Error;

/// The kernel's multicast group (udev re-broadcasts on group 2).
const KERNEL_GROUP: u32 = 1;
/// Enough for the burst of a USB hub's devices or a driver's probe.
const RECEIVE_BUFFER: usize = 4 << 20;
/// The kernel's own limit for one message (UEVENT_BUFFER_SIZE).
const MAX_MESSAGE: usize = 8192;

/// One uevent: `add@/devices/…` followed by `KEY=VALUE` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `bind`, `change`…
    pub action: String,
    /// Under /sys: `/devices/pci0000:00/0000:00:04.0/usb1/1-1/1-1:1.0`.
    pub devpath: String,
    /// `pci`, `usb`, `block`, `net`…
    pub subsystem: Option<String>,
    /// What a driver's module alias is matched against.
    pub modalias: Option<String>,
}

impl Uevent {
    /// The device's name: the last component of its path.
    pub fn name(&self) -> &str {
        self.devpath.rsplit('/').next().unwrap_or(&self.devpath)
    }
}

/// Parses one message from the kernel. Messages re-broadcast by udev
/// (which start with `libudev`) and malformed ones give `None`.
pub fn parse(message: &[u8]) -> Option<Uevent> {
    let mut fields = message.split(|&b| b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let mut event = Uevent {
        action: action.to_string(),
        devpath: devpath.to_string(),
        subsystem: None,
        modalias: None,
    };
    for field in fields {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        match field.split_once('=') {
            Some(("SUBSYSTEM", v)) => event.subsystem = Some(v.to_string()),
            Some(("MODALIAS", v)) if !v.is_empty() => event.modalias = Some(v.to_string()),
            // The header is a summary: these are authoritative.
            Some(("ACTION", v)) => event.action = v.to_string(),
            Some(("DEVPATH", v)) => event.devpath = v.to_string(),
            _ => {}
        }
    }
    Some(event)
}

/// What [`UeventSocket::recv`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Event(Uevent),
    /// The time was up.
    Nothing,
    /// Events came faster than they were read and some were lost: look at
    /// sysfs again.
    Overflow,
}

/// A socket subscribed to the kernel's uevents. Open it before looking at
/// sysfs, so that nothing appears unseen between the look and the listen.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    pub fn open() -> Result<UeventSocket, Error> {
        let sys = |what: &str| {
            let what = what.to_string();
            move |source| Error::Sys { what, source }
        };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(sys("uevent socket"))?;
        // Beyond rmem_max: a burst must not overflow it (root only; the
        // default buffer is what others get).
        if setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))
            .map_err(sys("bind the uevent socket"))?;
        Ok(UeventSocket { fd })
    }

    /// The next uevent from the kernel, waiting up to `timeout`. Messages
    /// that are not the kernel's are skipped.
    pub fn recv(&self, timeout: Duration) -> Result<Received, Error> {
        let timeval = TimeVal::new(
            timeout.as_secs() as _,
            // At least 1 µs: zero would mean "block forever".
            timeout.subsec_micros().max(1) as _,
        );
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &timeval).map_err(|source| Error::Sys {
            what: "uevent socket timeout".into(),
            source,
        })?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), &mut buf) {
                // Only the kernel (port 0) speaks for the devices.
                Ok((n, Some(from))) if from.pid() == 0 => {
                    if let Some(event) = parse(&buf[..n]) {
                        return Ok(Received::Event(event));
                    }
                }
                Ok(_) => {}
                Err(Errno::EAGAIN) => return Ok(Received::Nothing),
                Err(Errno::EINTR) => {}
                Err(Errno::ENOBUFS) => return Ok(Received::Overflow),
                Err(source) => {
                    return Err(Error::Sys {
                        what: "receive a uevent".into(),
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_add_event() {
        let message = b"add@/devices/pci0000:00/0000:00:04.0/usb1/1-1/1-1:1.0\0\
            ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0/usb1/1-1/1-1:1.0\0\
            SUBSYSTEM=usb\0DEVTYPE=usb_interface\0PRODUCT=46f4/1/0\0TYPE=0/0/0\0\
            INTERFACE=8/6/80\0MODALIAS=usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00\0\
            SEQNUM=1234\0";
        let event = parse(message).unwrap();
        assert_eq!(event.action, "add");
        assert_eq!(event.name(), "1-1:1.0");
        assert_eq!(event.subsystem.as_deref(), Some("usb"));
        assert_eq!(
            event.modalias.as_deref(),
            Some("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00")
        );
    }

    #[test]
    fn events_without_modalias_and_bad_messages() {
        let event = parse(b"bind@/devices/virtual/net/eth0\0ACTION=bind\0SUBSYSTEM=net\0").unwrap();
        assert_eq!((event.action.as_str(), event.modalias), ("bind", None));
        // udev's re-broadcasts carry a binary header.
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"add@relative\0"), None);
        assert_eq!(parse(b"@/devices/x\0"), None);
    }

    #[test]
    fn the_socket_opens_and_times_out() {
        // Unprivileged processes may listen too; a sandbox may forbid it.
        let Ok(socket) = UeventSocket::open() else {
            eprintln!("SKIPPED: no uevent socket here");
            return;
        };
        // Whatever the host's devices do, this returns.
        socket.recv(Duration::from_millis(10)).unwrap();
    }
}
