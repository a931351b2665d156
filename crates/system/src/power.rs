//! The end of the boot.

use nix::sys::reboot::{reboot, RebootMode};

/// What to do when everything is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalAction {
    PowerOff,
    Reboot,
}

/// Flushes every filesystem, before handing the machine to a command that
/// may power it off by itself.
pub fn sync() {
    nix::unistd::sync();
}

/// Syncs and powers off or reboots. Never returns: PID 1 must not exit.
pub fn finish(action: FinalAction) -> ! {
    nix::unistd::sync();
    let mode = match action {
        FinalAction::PowerOff => RebootMode::RB_POWER_OFF,
        FinalAction::Reboot => RebootMode::RB_AUTOBOOT,
    };
    let _ = reboot(mode);
    // reboot(2) only fails without CAP_SYS_BOOT, i.e. not as PID 1.
    loop {
        std::thread::park();
    }
}
