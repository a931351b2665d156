//! Which storage and network devices no driver took: read from a device's
//! modalias (vendor, device, class) and its sysfs `driver` link, so that
//! the console can say what a farm admin must add.

use std::fmt;
use std::path::Path;

/// What a device is for, as far as a boot is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Disks and their controllers: SATA, NVMe, SCSI, RAID, SD hosts.
    Storage,
    /// Ethernet.
    Network,
    /// A USB host controller: the way to USB disks and NICs.
    Usb,
}

/// As the console names it: `storage device`, `network device`, `USB
/// controller`.
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Storage => "storage device",
            Kind::Network => "network device",
            Kind::Usb => "USB controller",
        })
    }
}

/// A device a boot may need, named as an admin looks it up (`lspci -nn`,
/// `lsusb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `PCI`, `USB` or `virtio`.
    pub bus: &'static str,
    pub kind: Kind,
    /// `10ec:8125`; for virtio, `virtio id 8`.
    pub id: String,
    /// PCI `020000`, USB interface `08/06/50`.
    pub class: String,
    /// The sysfs name: `0000:03:00.0`, `1-1:1.0`, `virtio2`.
    pub name: String,
    /// What it was read from.
    pub modalias: String,
}

/// The start of the console line for a device no driver took.
pub const NO_DRIVER: &str = "no driver for the ";

impl Device {
    /// The device a modalias describes, if it is one a boot may need. PCI:
    /// mass storage (but IDE), Ethernet, SD host and USB controllers. USB
    /// interfaces: mass storage, CDC Ethernet/EEM/NCM/MBIM, RNDIS (a
    /// vendor-specific interface says nothing of what it is). virtio:
    /// net, block, SCSI.
    pub fn from_modalias(name: &str, modalias: &str) -> Option<Device> {
        if let Some(rest) = modalias.strip_prefix("pci:") {
            // v0000XXXXd0000XXXXsv…sd…bcXXscXXiXX
            let vendor = hex_after(rest, "v", 8)?;
            let device = hex_after(rest, "d", 8)?;
            let (base, sub, prog) = (
                hex_after(rest, "bc", 2)?,
                hex_after(rest, "sc", 2)?,
                hex_after(rest, "i", 2)?,
            );
            let kind = match (base.as_str(), sub.as_str()) {
                // Legacy IDE: every QEMU pc machine has one, no farm
                // machine boots from one.
                ("01", "01") => return None,
                ("01", _) => Kind::Storage,
                ("02", "00") => Kind::Network,
                ("08", "05") => Kind::Storage,
                ("0c", "03") => Kind::Usb,
                _ => return None,
            };
            return Some(Device {
                bus: "PCI",
                kind,
                id: format!("{}:{}", &vendor[4..], &device[4..]),
                class: format!("{base}{sub}{prog}"),
                name: name.to_string(),
                modalias: modalias.to_string(),
            });
        }
        if let Some(rest) = modalias.strip_prefix("usb:") {
            // vXXXXpXXXXdXXXXdcXXdscXXdpXXicXXiscXXipXXinXX
            let vendor = hex_after(rest, "v", 4)?;
            let product = hex_after(rest, "p", 4)?;
            let (class, sub, proto) = (
                hex_after(rest, "ic", 2)?,
                hex_after(rest, "isc", 2)?,
                hex_after(rest, "ip", 2)?,
            );
            let kind = match (class.as_str(), sub.as_str(), proto.as_str()) {
                ("08", _, _) => Kind::Storage,
                // CDC ECM, EEM, NCM, MBIM.
                ("02", "06" | "0c" | "0d" | "0e", _) => Kind::Network,
                // RNDIS, as wireless-controller or misc class.
                ("e0", "01", "03") | ("ef", "04", "01") => Kind::Network,
                _ => return None,
            };
            return Some(Device {
                bus: "USB",
                kind,
                id: format!("{vendor}:{product}"),
                class: format!("{class}/{sub}/{proto}"),
                name: name.to_string(),
                modalias: modalias.to_string(),
            });
        }
        if let Some(rest) = modalias.strip_prefix("virtio:") {
            let id = u32::from_str_radix(&hex_after(rest, "d", 8)?, 16).ok()?;
            let kind = match id {
                1 => Kind::Network,
                2 | 8 => Kind::Storage,
                _ => return None,
            };
            return Some(Device {
                bus: "virtio",
                kind,
                id: format!("virtio id {id}"),
                class: String::new(),
                name: name.to_string(),
                modalias: modalias.to_string(),
            });
        }
        None
    }
}

/// For the console: `no driver for the PCI network device 10ec:8125
/// (class 020000) at 0000:03:00.0`.
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NO_DRIVER}{} {} {}", self.bus, self.kind, self.id)?;
        if !self.class.is_empty() {
            write!(f, " (class {})", self.class)?;
        }
        write!(f, " at {}", self.name)
    }
}

/// `count` hex digits after the first `key` that is followed by them,
/// lower-cased. Keys are matched in order of appearance, so that `d`
/// finds the device id and not the `d` of `dc`.
fn hex_after(text: &str, key: &str, count: usize) -> Option<String> {
    let mut at = 0;
    while let Some(found) = text[at..].find(key) {
        let start = at + found + key.len();
        let digits = text.get(start..start + count)?;
        if digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(digits.to_ascii_lowercase());
        }
        at = start;
    }
    None
}

/// Whether a driver is bound to the device at `dir` (a sysfs device
/// directory).
pub fn has_driver(dir: &Path) -> bool {
    dir.join("driver").exists()
}

/// The devices under `sys_bus` (`/sys/bus`) a boot may need and that no
/// driver took, with their sysfs directories.
pub fn unclaimed(sys_bus: &Path) -> Vec<Device> {
    let mut found = Vec::new();
    for bus in ["pci", "usb", "virtio"] {
        let Ok(entries) = std::fs::read_dir(sys_bus.join(bus).join("devices")) else {
            continue;
        };
        let mut dirs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let Ok(modalias) = std::fs::read_to_string(dir.join("modalias")) else {
                continue;
            };
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            if let Some(device) = Device::from_modalias(&name, modalias.trim()) {
                if !has_driver(&dir) {
                    found.push(device);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_devices_by_class() {
        let nic = Device::from_modalias(
            "0000:03:00.0",
            "pci:v000010ECd00008125sv00001849sd00008125bc02sc00i00",
        )
        .unwrap();
        assert_eq!(
            nic.to_string(),
            "no driver for the PCI network device 10ec:8125 (class 020000) at 0000:03:00.0"
        );
        let nvme = Device::from_modalias(
            "0000:01:00.0",
            "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02",
        )
        .unwrap();
        assert_eq!(
            (nvme.kind, nvme.id.as_str(), nvme.class.as_str()),
            (Kind::Storage, "144d:a808", "010802")
        );
        let sd = Device::from_modalias("x", "pci:v00001B36d00000007sv0sd0bc08sc05i01").unwrap();
        assert_eq!(sd.kind, Kind::Storage);
        let xhci = Device::from_modalias("x", "pci:v00001B36d0000000Dsv0sd0bc0Csc03i30").unwrap();
        assert_eq!(xhci.kind, Kind::Usb);
        // Not a boot's business: a host bridge, a GPU, Wi-Fi, legacy IDE.
        for other in [
            "pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00",
            "pci:v00001002d0000744Csv0sd0bc03sc00i00",
            "pci:v00008086d00002723sv0sd0bc02sc80i00",
            "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80",
        ] {
            assert_eq!(Device::from_modalias("x", other), None, "{other}");
        }
    }

    #[test]
    fn usb_interfaces_by_class() {
        let stick = Device::from_modalias(
            "1-1:1.0",
            "usb:v0781p5581d0100dc00dsc00dp00ic08isc06ip50in00",
        )
        .unwrap();
        assert_eq!(
            stick.to_string(),
            "no driver for the USB storage device 0781:5581 (class 08/06/50) at 1-1:1.0"
        );
        let ecm = Device::from_modalias(
            "2-1:1.0",
            "usb:v0525pA4A2d0100dc02dsc00dp00ic02isc06ip00in00",
        )
        .unwrap();
        assert_eq!((ecm.kind, ecm.id.as_str()), (Kind::Network, "0525:a4a2"));
        // A vendor-specific interface (r8152, ax88179) or a keyboard: unknown.
        for other in [
            "usb:v0BDAp8153d3100dc00dsc00dp00icFFiscFFip00in00",
            "usb:v046DpC31Cd0000dc00dsc00dp00ic03isc01ip01in00",
            // CDC ACM: a serial port.
            "usb:v2341p0043d0001dc02dsc00dp00ic02isc02ip01in00",
        ] {
            assert_eq!(Device::from_modalias("x", other), None, "{other}");
        }
    }

    #[test]
    fn virtio_devices() {
        let scsi = Device::from_modalias("virtio2", "virtio:d00000008v00001AF4").unwrap();
        assert_eq!(
            scsi.to_string(),
            "no driver for the virtio storage device virtio id 8 at virtio2"
        );
        assert_eq!(
            Device::from_modalias("virtio0", "virtio:d00000004v00001AF4"),
            None
        );
    }

    #[test]
    fn unclaimed_devices_on_a_fake_sysfs() {
        let sys = tempfile_dir("unclaimed");
        let device = |bus: &str, name: &str, alias: &str, driver: bool| {
            let dir = sys.join(bus).join("devices").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("modalias"), format!("{alias}\n")).unwrap();
            if driver {
                std::fs::create_dir(dir.join("driver")).unwrap();
            }
        };
        // Taken by a driver.
        device(
            "pci",
            "0000:00:02.0",
            "pci:v00008086d0000100Esv0sd0bc02sc00i00",
            true,
        );
        // No driver: a NIC, a RAID controller, a USB stick, a virtio disk.
        device(
            "pci",
            "0000:00:03.0",
            "pci:v00001022d00002000sv0sd0bc02sc00i00",
            false,
        );
        device(
            "pci",
            "0000:00:05.0",
            "pci:v00001000d0000005Bsv0sd0bc01sc04i00",
            false,
        );
        device(
            "usb",
            "1-1:1.0",
            "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",
            false,
        );
        device("virtio", "virtio1", "virtio:d00000002v00001AF4", false);
        // Not storage or network: never reported.
        device(
            "pci",
            "0000:00:00.0",
            "pci:v00008086d00001237sv0sd0bc06sc00i00",
            false,
        );
        // A USB device (not an interface) has no modalias.
        std::fs::create_dir_all(sys.join("usb/devices/1-1")).unwrap();
        let found: Vec<String> = unclaimed(&sys).iter().map(|d| d.to_string()).collect();
        std::fs::remove_dir_all(&sys).unwrap();
        assert_eq!(
            found,
            [
                "no driver for the PCI network device 1022:2000 (class 020000) at 0000:00:03.0",
                "no driver for the PCI storage device 1000:005b (class 010400) at 0000:00:05.0",
                "no driver for the USB storage device 46f4:0001 (class 08/06/50) at 1-1:1.0",
                "no driver for the virtio storage device virtio id 2 at virtio1",
            ]
        );
        assert!(unclaimed(Path::new("/nonexistent")).is_empty());
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("b2c-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
