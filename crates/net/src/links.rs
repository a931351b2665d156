//! Finding the machine's ethernet links through sysfs.
//!
//! sysfs rather than netlink: it is what the kernel fills in as soon as a
//! driver registers its netdev, and it tells wireless apart from wired without
//! decoding nested netlink attributes. Reads are plain blocking reads: sysfs
//! answers from memory in microseconds.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::debug;
use tokio::time::{sleep, Instant};

use crate::NetError;

const SYS_CLASS_NET: &str = "/sys/class/net";
/// `ARPHRD_ETHER` from linux/if_arp.h.
const ARPHRD_ETHER: u32 = 1;
const POLL: Duration = Duration::from_millis(100);
/// When links appear while we watch, the drivers are still probing: give
/// sibling NICs this long to show up too rather than racing DHCP on only the
/// first one.
const SETTLE: Duration = Duration::from_millis(500);

/// The ethernet links present now, sorted by name, waiting up to `timeout`
/// for at least one to appear (drivers probe asynchronously).
///
/// Loopback and wireless links are left out; everything else whose link type
/// is ethernet (including virtual ones such as veth) is returned.
pub async fn ethernet_links(timeout: Duration) -> Result<Vec<String>, NetError> {
    ethernet_links_in(Path::new(SYS_CLASS_NET), timeout).await
}

pub(crate) async fn ethernet_links_in(
    dir: &Path,
    timeout: Duration,
) -> Result<Vec<String>, NetError> {
    let start = Instant::now();
    let links = scan(dir)?;
    if !links.is_empty() {
        return Ok(links);
    }
    loop {
        if start.elapsed() >= timeout {
            return Err(NetError::NoLinks(timeout));
        }
        sleep(POLL).await;
        let links = scan(dir)?;
        if !links.is_empty() {
            debug!("first ethernet links appeared: {}", links.join(", "));
            break;
        }
    }
    sleep(SETTLE).await;
    scan(dir)
}

fn scan(dir: &Path) -> Result<Vec<String>, NetError> {
    let entries = fs::read_dir(dir).map_err(|source| NetError::Sysfs {
        path: dir.to_owned(),
        source,
    })?;
    let mut links = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        // A link can vanish between read_dir and here (driver unbinding):
        // unreadable attributes just mean "not a candidate".
        let is_ether = read_attr(&path.join("type"))
            .ok()
            .and_then(|t| t.parse::<u32>().ok())
            == Some(ARPHRD_ETHER);
        let is_wireless = path.join("wireless").exists() || path.join("phy80211").exists();
        if is_ether && !is_wireless && name != "lo" {
            links.push(name);
        }
    }
    links.sort();
    Ok(links)
}

fn read_attr(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

fn attr_path(iface: &str, attr: &str) -> PathBuf {
    Path::new(SYS_CLASS_NET).join(iface).join(attr)
}

/// The link's 6-byte ethernet address, as DHCP wants it in `chaddr`.
pub(crate) fn mac_address(iface: &str) -> Result<[u8; 6], NetError> {
    let path = attr_path(iface, "address");
    let text = read_attr(&path).map_err(|source| NetError::Sysfs {
        path: path.clone(),
        source,
    })?;
    parse_mac(&text).ok_or_else(|| NetError::Sysfs {
        path,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an ethernet address: {text:?}"),
        ),
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Waits up to `timeout` for a link named on the command line to exist:
/// its driver may still be probing, or udev-less renaming may not apply.
///
/// Asks the kernel by name (if_nametoindex) rather than sysfs, so this also
/// holds for links sysfs would not list as ethernet.
pub(crate) async fn wait_for_link(name: &str, timeout: Duration) -> Result<(), NetError> {
    let start = Instant::now();
    let mut logged = false;
    loop {
        match nix::net::if_::if_nametoindex(name) {
            Ok(_) => return Ok(()),
            Err(nix::Error::ENODEV) => {}
            Err(e) => {
                return Err(NetError::LinkLookup {
                    iface: name.to_owned(),
                    source: e.into(),
                })
            }
        }
        if start.elapsed() >= timeout {
            return Err(NetError::LinkTimeout {
                iface: name.to_owned(),
                waited: timeout,
            });
        }
        if !logged {
            debug!("waiting for network link {name} to appear");
            logged = true;
        }
        sleep(POLL).await;
    }
}

/// Waits up to `max` for the link to report carrier.
///
/// A NIC that was just brought up needs a second or three to negotiate; a
/// DISCOVER sent before that is lost and costs a whole retransmission
/// interval. Returns whether carrier came; DHCP proceeds either way.
pub(crate) async fn wait_for_carrier(iface: &str, max: Duration) -> bool {
    let path = attr_path(iface, "carrier");
    let start = Instant::now();
    loop {
        // Reading `carrier` fails with EINVAL while the link is down.
        if read_attr(&path).is_ok_and(|c| c == "1") {
            return true;
        }
        if start.elapsed() >= max {
            return false;
        }
        sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_link(dir: &Path, name: &str, link_type: u32, wireless: bool) {
        let link = dir.join(name);
        fs::create_dir(&link).unwrap();
        fs::write(link.join("type"), format!("{link_type}\n")).unwrap();
        if wireless {
            fs::create_dir(link.join("wireless")).unwrap();
        }
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("52:54:00:12:34:5f"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x5f])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("00:00:00:00:00:zz"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn scan_keeps_wired_ethernet_only() {
        let dir = tempfile::tempdir().unwrap();
        fake_link(dir.path(), "lo", 772, false);
        fake_link(dir.path(), "eth1", 1, false);
        fake_link(dir.path(), "enp0s3", 1, false);
        fake_link(dir.path(), "wlan0", 1, true);
        fake_link(dir.path(), "ib0", 32, false);
        let links = ethernet_links_in(dir.path(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(links, ["enp0s3", "eth1"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waits_for_late_links_and_their_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        tokio::spawn(async move {
            sleep(Duration::from_millis(200)).await;
            fake_link(&path, "eth1", 1, false);
            // A sibling NIC probed a moment later is still in the race.
            sleep(Duration::from_millis(200)).await;
            fake_link(&path, "eth0", 1, false);
        });
        let links = ethernet_links_in(dir.path(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(links, ["eth0", "eth1"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn named_link_present_or_timing_out() {
        // `lo` exists in every network namespace.
        wait_for_link("lo", Duration::ZERO).await.unwrap();
        let start = Instant::now();
        let err = wait_for_link("b2c-none0", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(300));
        let text = err.to_string();
        assert!(matches!(err, NetError::LinkTimeout { .. }), "{text}");
        assert!(text.contains("b2c-none0"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_link_times_out() {
        let dir = tempfile::tempdir().unwrap();
        fake_link(dir.path(), "lo", 772, false);
        let err = ethernet_links_in(dir.path(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::NoLinks(_)), "{err}");
    }
}
