//! The end of every boot: the lines CI parses, the optional rescue shell,
//! and the final power-off or reboot.

use std::process::Command;

use b2c_cmdline::EndPlan;
use b2c_runtime::{Outcome, ShutdownMode};
use b2c_system::log::console_line;
use b2c_system::power::{self, FinalAction};
use b2c_system::reaper;
use log::{info, warn};

/// The shell of the initramfs (busybox), for `b2c.shell` and the
/// shutdown/reboot commands.
const SHELL: &str = "/bin/sh";

pub fn finish(outcome: Outcome, opts: &EndPlan) -> ! {
    console_line(&outcome.status.line());
    if outcome.status.failed() && opts.shell {
        rescue_shell();
    }
    let (line, command, action) = match outcome.mode {
        ShutdownMode::Default | ShutdownMode::PowerOff => (
            "It's now safe to turn off your computer",
            &opts.shutdown_cmd,
            FinalAction::PowerOff,
        ),
        ShutdownMode::Reboot => (
            "Rebooting the computer",
            &opts.reboot_cmd,
            FinalAction::Reboot,
        ),
    };
    console_line(line);
    // As in boot2container, the delay is for whoever watches a power-off.
    if action == FinalAction::PowerOff && !opts.poweroff_delay.is_zero() {
        info!(
            "waiting {:.1} s before the end (b2c.poweroff_delay)",
            opts.poweroff_delay.as_secs_f64()
        );
        std::thread::sleep(opts.poweroff_delay);
    }
    if let Some(command) = command {
        info!("running {command:?} (b2c.shutdown_cmd / b2c.reboot_cmd)");
        power::sync();
        match reaper::run(Command::new(SHELL).arg("-c").arg(command)) {
            Ok(code) => warn!(
                "{command:?} returned (status {}): ending the usual way",
                code.0
            ),
            Err(e) => warn!("{e}: ending the usual way"),
        }
    }
    power::finish(action)
}

/// `b2c.shell`: a shell on the console to look around after a failure.
fn rescue_shell() {
    info!("b2c.shell: starting a shell on the console; exit it to continue");
    let result = reaper::run(
        Command::new(SHELL)
            .arg("-l")
            .env("PS1", "b2c# ")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    if let Err(e) = result {
        warn!("{e}");
    }
}
