//! The panic hook. A crash of b2c ends the boot as any failure does: the
//! message on the console, the running containers stopped, the storage
//! torn down, status 1, then b2c.shell, b2c.poweroff_delay and
//! b2c.shutdown_cmd as the command line (with its extra args) asked.
//! PID 1 must never exit, so the hook never returns (release builds abort
//! on a panic once it would).
//!
//! The crashed code may hold any lock: the hook takes none it could hold.
//! The logger writes straight to the console (`log::crash_mode`), the end
//! options and the storage to tear down are lock-free globals (`end`),
//! the containers' list is only tried, and commands (crun kill, the shell)
//! run only when the reaper is free.

use std::panic::PanicHookInfo;

use b2c_runtime::ShutdownMode;
use b2c_system::{power, reaper};
use log::{error, warn};

use b2c_runtime::Outcome;

use crate::end::{self, Ending};

pub fn install_hook() {
    std::panic::set_hook(Box::new(hook));
}

fn hook(panic: &PanicHookInfo) {
    b2c_system::log::crash_mode();
    // One console line: std puts the location and the message on two.
    error!("b2c crashed: {}", panic.to_string().replace('\n', " "));
    power::sync();
    match end::ending() {
        Ending::NotStarted => {}
        Ending::OnThisThread => {
            error!("the crash came while ending the boot: ending it at once");
            power::finish(end::final_action(ShutdownMode::Default))
        }
        // That thread powers off; this one must not return.
        Ending::Elsewhere => loop {
            std::thread::park();
        },
    }
    let mut options = end::options();
    if reaper::usable() {
        b2c_runtime::stop_running(b2c_runtime::STOP_GRACE);
    } else {
        warn!(
            "the crash left b2c unable to run commands: the containers, b2c.shell and \
             b2c.shutdown_cmd are left alone"
        );
        options.shell = false;
        options.shutdown_cmd = None;
        options.reboot_cmd = None;
    }
    end::finish_with(Outcome::setup_failed(), &options)
}
