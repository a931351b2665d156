//! The end of every boot: the lines CI parses, the optional rescue shell,
//! and the final power-off or reboot. However a boot ends (the pipeline
//! is over, a failure, a stop signal, a crash), it ends here, once.
//!
//! What the end needs is kept in lock-free globals, so that the panic hook
//! can read it whatever the crashed code held: the end options
//! ([`set_options`]) and the storage to tear down
//! ([`storage_to_tear_down`]).

use std::process::Command;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;
use std::thread::ThreadId;

use b2c_cmdline::EndPlan;
use b2c_runtime::{Outcome, ShutdownMode};
use b2c_storage::{Cache, SwapInfo};
use b2c_system::log::console_line;
use b2c_system::power::{self, FinalAction};
use b2c_system::reaper;
use b2c_system::signals::{self, StopRequest};
use log::{info, warn};

/// The shell of the initramfs (busybox), for `b2c.shell` and the
/// shutdown/reboot commands.
const SHELL: &str = "/bin/sh";

/// The end options in force: the command line's, then those merged with
/// `b2c.extra_args_url`. Never freed: a panic hook may be reading one.
static OPTIONS: AtomicPtr<EndPlan> = AtomicPtr::new(null_mut());

/// Makes `end` the options [`finish`] (and a crash) use.
pub fn set_options(end: &EndPlan) {
    let new = Box::into_raw(Box::new(end.clone()));
    // The old ones leak: twice a boot, a few bytes, and no reader can be
    // left holding a freed pointer.
    OPTIONS.swap(new, Ordering::SeqCst);
}

/// The end options in force (the defaults before the command line is read).
pub fn options() -> EndPlan {
    // SAFETY: a non-null pointer comes from Box::into_raw in set_options
    // and is never freed.
    unsafe { OPTIONS.load(Ordering::SeqCst).as_ref() }
        .cloned()
        .unwrap_or_default()
}

type StorageToTearDown = (Option<Cache>, Option<SwapInfo>);

/// The cache mounted and the swap turned on, until torn down.
static STORAGE: AtomicPtr<StorageToTearDown> = AtomicPtr::new(null_mut());

/// Says what [`tear_down_storage`] must undo; replaces what an earlier
/// call said (the cache first, then the cache and the swap).
pub fn storage_to_tear_down(cache: Option<&Cache>, swap: Option<&SwapInfo>) {
    let new = Box::into_raw(Box::new((cache.cloned(), swap.cloned())));
    let old = STORAGE.swap(new, Ordering::SeqCst);
    if !old.is_null() {
        // SAFETY: from Box::into_raw; swapped out, so no one else has it.
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Turns swap off and unmounts the cache, the first time it is called
/// after [`storage_to_tear_down`]; later calls do nothing.
pub fn tear_down_storage() {
    let storage = STORAGE.swap(null_mut(), Ordering::SeqCst);
    if !storage.is_null() {
        // SAFETY: as in storage_to_tear_down.
        let storage = unsafe { Box::from_raw(storage) };
        b2c_storage::teardown(storage.0.as_ref(), storage.1.as_ref());
    }
}

/// The thread that runs the end, once it started.
static ENDING: OnceLock<ThreadId> = OnceLock::new();

/// Who runs the end, for the panic hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    NotStarted,
    /// The crash is in the end itself: no second end.
    OnThisThread,
    /// Another thread is ending the boot and will power off.
    Elsewhere,
}

pub fn ending() -> Ending {
    match ENDING.get() {
        None => Ending::NotStarted,
        Some(id) if *id == std::thread::current().id() => Ending::OnThisThread,
        Some(_) => Ending::Elsewhere,
    }
}

/// The final action, by what a stop signal asked or else by the outcome.
pub fn final_action(mode: ShutdownMode) -> FinalAction {
    match shutdown_mode(mode) {
        ShutdownMode::Reboot => FinalAction::Reboot,
        ShutdownMode::Default | ShutdownMode::PowerOff => FinalAction::PowerOff,
    }
}

/// A stop signal decides over a container's reboot(2): it came last.
fn shutdown_mode(mode: ShutdownMode) -> ShutdownMode {
    match signals::requested() {
        Some(StopRequest::Reboot) => ShutdownMode::Reboot,
        Some(StopRequest::PowerOff | StopRequest::TimedOut) => ShutdownMode::PowerOff,
        None => mode,
    }
}

/// Ends the boot with the end options in force.
pub fn finish(outcome: Outcome) -> ! {
    finish_with(outcome, &options())
}

/// Ends the boot: storage teardown, the status line, b2c.shell, then the
/// power-off or reboot. Only the first caller gets to end it; a second
/// thread arriving here waits for the first one's power-off.
pub fn finish_with(outcome: Outcome, opts: &EndPlan) -> ! {
    if ENDING.set(std::thread::current().id()).is_err() {
        loop {
            std::thread::park();
        }
    }
    tear_down_storage();
    console_line(&outcome.status.line());
    if outcome.status.failed() && opts.shell {
        rescue_shell();
    }
    let (line, command, action) = match shutdown_mode(outcome.mode) {
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
        unpack_shell();
        power::sync();
        // As in boot2container, the command sees how the pipeline went:
        // `echo JOB_RESULT=$B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE`.
        match reaper::run(
            Command::new(SHELL)
                .arg("-c")
                .arg(command)
                .envs(outcome.env.iter().map(|(k, v)| (k, v))),
        ) {
            Ok(code) => warn!(
                "{command:?} returned (status {}): ending the usual way",
                code.0
            ),
            Err(e) => warn!("{e}: ending the usual way"),
        }
    }
    power::finish(action)
}

/// The shell ships compressed with the other seldom needed programs; if
/// it cannot be unpacked, starting it fails and says so.
fn unpack_shell() {
    if let Err(e) = b2c_system::tools::ensure() {
        warn!("cannot unpack the shell: {e}");
    }
}

/// `b2c.shell`: a shell on the console to look around after a failure.
fn rescue_shell() {
    info!("b2c.shell: starting a shell on the console; exit it to continue");
    unpack_shell();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_end_options_in_force_are_the_last_published() {
        assert!(!options().shell, "defaults before the command line");
        let first = b2c_cmdline::plan("b2c.shell b2c.poweroff_delay=3").unwrap();
        set_options(&first.end);
        assert!(options().shell);
        assert_eq!(options().poweroff_delay, Duration::from_secs(3));
        let merged =
            b2c_cmdline::plan("b2c.shell b2c.shutdown_cmd=\"echo bye\" b2c.poweroff_delay=1")
                .unwrap();
        set_options(&merged.end);
        assert_eq!(options().shutdown_cmd.as_deref(), Some("echo bye"));
        assert_eq!(options().poweroff_delay, Duration::from_secs(1));
    }

    #[test]
    fn storage_is_torn_down_once() {
        // Nothing to undo yet: nothing happens.
        tear_down_storage();
        storage_to_tear_down(None, None);
        storage_to_tear_down(None, None);
        assert!(!STORAGE.load(Ordering::SeqCst).is_null());
        tear_down_storage();
        assert!(STORAGE.load(Ordering::SeqCst).is_null());
        tear_down_storage();
    }

    #[test]
    fn without_a_stop_request_the_outcome_decides() {
        assert_eq!(signals::requested(), None);
        assert_eq!(final_action(ShutdownMode::Reboot), FinalAction::Reboot);
        assert_eq!(final_action(ShutdownMode::Default), FinalAction::PowerOff);
        assert_eq!(ending(), Ending::NotStarted);
    }
}
