//! The hardware watchdog, when the machine has one (`/dev/watchdog`: an
//! Intel TCO, an i6300ESB as QEMU's `-device i6300esb`…): armed at boot
//! and fed by a thread of its own for as long as the machine runs, so
//! that a kernel that hangs (a panic without `panic=N`, a deadlock) still
//! resets the machine instead of holding it for ever. b2c hanging is not
//! the watchdog's business: everything b2c waits for is bounded already.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use log::{info, warn};

/// How often the watchdog is fed, at most: a fifth of its timeout.
const FEED_EVERY: Duration = Duration::from_secs(5);

nix::ioctl_readwrite!(set_timeout, b'W', 6, libc_int);
nix::ioctl_read!(get_support, b'W', 0, WatchdogInfo);

#[allow(non_camel_case_types)]
type libc_int = std::os::raw::c_int;

/// The kernel's `struct watchdog_info`.
#[repr(C)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

/// Arms the first watchdog, if there is one, with `timeout` (`b2c.watchdog`;
/// the driver may round it), and starts the thread that feeds it. Says on
/// the console what it did; a watchdog that cannot be used is a warning.
pub fn arm(timeout: Duration) {
    let path = Path::new("/dev/watchdog");
    if !path.exists() {
        log::debug!("no hardware watchdog");
        return;
    }
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            warn!("cannot open the hardware watchdog {}: {e}", path.display());
            return;
        }
    };
    let fd = file.as_raw_fd();
    let mut info = WatchdogInfo {
        options: 0,
        firmware_version: 0,
        identity: [0; 32],
    };
    // SAFETY: the ioctls read and write the structures given, which are
    // the kernel's layout.
    let name = match unsafe { get_support(fd, &mut info) } {
        Ok(_) => {
            let end = info.identity.iter().position(|b| *b == 0).unwrap_or(32);
            String::from_utf8_lossy(&info.identity[..end]).into_owned()
        }
        Err(_) => "unknown".to_string(),
    };
    let mut secs = timeout.as_secs().clamp(1, 3600) as libc_int;
    // SAFETY: as above; the driver may round the value.
    if let Err(e) = unsafe { set_timeout(fd, &mut secs) } {
        warn!("the hardware watchdog ({name}) keeps its own timeout ({e})");
    }
    info!("hardware watchdog {name}: armed, a hung machine resets after {secs} s");
    let spawned = file.try_clone().and_then(|feeder| {
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || feed(feeder, FEED_EVERY.min(timeout / 5)))
    });
    if let Err(e) = spawned {
        // Armed and nobody to feed it, it would reset a healthy machine:
        // the magic close stops it, where the driver allows.
        warn!("cannot start the watchdog thread ({e}): stopping the watchdog");
        let mut file = file;
        let _ = file.write_all(b"V");
    }
}

fn feed(mut file: File, every: Duration) {
    loop {
        // Any write feeds it; never "V", the magic close.
        if let Err(e) = file.write_all(b"\0") {
            warn!("cannot feed the hardware watchdog: {e}");
        }
        std::thread::sleep(every);
    }
}
