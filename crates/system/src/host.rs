//! Host identity and clock.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;

/// Sets the kernel host name and writes /etc/hostname and /etc/hosts, which
/// containers get bind-mounted.
pub fn set_hostname(name: &str, etc: &Path) -> Result<(), Error> {
    nix::unistd::sethostname(name).map_err(|e| Error::Sys {
        what: format!("sethostname({name})"),
        source: e,
    })?;
    write(&etc.join("hostname"), &format!("{name}\n"))?;
    write(
        &etc.join("hosts"),
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        ),
    )
}

fn write(path: &Path, content: &str) -> Result<(), Error> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))
        .and_then(|_| std::fs::write(path, content))
        .map_err(|e| Error::io(path, e))
}

/// Sets the system clock (CLOCK_REALTIME).
pub fn set_clock(time: SystemTime) -> Result<(), Error> {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let ts = nix::sys::time::TimeSpec::from_duration(since);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts).map_err(|e| Error::Sys {
        what: "clock_settime".into(),
        source: e,
    })
}
