//! The signal thread for real. This test is a process of its own, without
//! the test harness, whose main thread stands in for PID 1's: `install`
//! runs before any other thread exists, so a signal sent to the whole
//! process can only be taken by the signal thread (with the harness's
//! threads around, one of them could take it and die of it). Not being
//! PID 1, it leaves the host's Ctrl-Alt-Del alone.

use std::io::Read;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use b2c_system::signals::{self, StopRequest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::getpid;

/// The lines logged, to check the arrival lines.
struct Lines(Mutex<Vec<String>>);

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

static LINES: Lines = Lines(Mutex::new(Vec::new()));

fn main() {
    log::set_logger(&LINES).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    signals::install().expect("install");
    signals::install().expect("a second install is a no-op");
    std_children_inherit_the_mask();
    reaper_children_start_with_an_empty_mask();
    the_first_signal_is_the_request();
    println!("test signals ... ok");
}

/// The blocked signals of a child, from its /proc/self/status.
fn blocked_mask(status: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap_or_else(|| panic!("no SigBlk line in {status:?}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(signal: Signal) -> u64 {
    1 << (signal as i32 - 1)
}

const STOP_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
];

/// Why reaper::spawn clears the mask: std's Command does not (checked
/// before the reaper starts, whose waitpid(-1) would steal the status).
fn std_children_inherit_the_mask() {
    let out = Command::new("cat")
        .arg("/proc/self/status")
        .output()
        .unwrap();
    let mask = blocked_mask(&String::from_utf8_lossy(&out.stdout));
    for signal in STOP_SIGNALS {
        assert_ne!(
            mask & bit(signal),
            0,
            "std now clears the signal mask of children ({signal} not blocked): \
             the pre_exec in reaper::spawn is no longer needed"
        );
    }
}

fn reaper_children_start_with_an_empty_mask() {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let process = {
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/status").stdout(writer);
        b2c_system::reaper::spawn(&mut cmd).unwrap()
        // The Command, and our copy of the pipe's end, go here.
    };
    let mut status = String::new();
    reader.read_to_string(&mut status).unwrap();
    assert_eq!(process.wait().0, 0);
    assert_eq!(blocked_mask(&status), 0, "{status}");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lines() -> Vec<String> {
    LINES.0.lock().unwrap().clone()
}

fn the_first_signal_is_the_request() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    signals::on_request(move |request| c.lock().unwrap().push(request));
    assert_eq!(signals::requested(), None);

    // To the whole process, as `kill -USR2 1` would be.
    let pid = getpid();
    kill(pid, Signal::SIGUSR2).unwrap();
    wait_for("the request", || signals::requested().is_some());
    assert_eq!(signals::requested(), Some(StopRequest::PowerOff));
    wait_for("the callback", || !calls.lock().unwrap().is_empty());
    assert_eq!(*calls.lock().unwrap(), [StopRequest::PowerOff]);
    assert_eq!(
        lines(),
        [format!(
            "SIGUSR2 (poweroff) from pid {pid}: stopping the containers, then powering off"
        )]
    );

    // A second one is logged and changes nothing.
    kill(pid, Signal::SIGTERM).unwrap();
    wait_for("the second line", || lines().len() == 2);
    assert_eq!(
        lines()[1],
        format!("SIGTERM from pid {pid}: ignored, already stopping (then powering off)")
    );
    assert_eq!(signals::requested(), Some(StopRequest::PowerOff));
    assert_eq!(calls.lock().unwrap().len(), 1, "a callback ran twice");

    // Too late to be called by the signal thread: called at once.
    let late = Arc::new(AtomicUsize::new(0));
    let l = late.clone();
    signals::on_request(move |_| {
        l.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(late.load(Ordering::SeqCst), 1);
}
