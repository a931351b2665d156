//! Console logging: one uptime-stamped line per event, for humans and CI
//! parsers at once, mirrored to the kernel log.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The level lives in `log::max_level()`, so that `b2c.log=debug`, read
/// after the logger is installed, takes effect through [`set_debug`].
struct ConsoleLogger {
    kmsg: Mutex<Option<File>>,
}

/// Seconds since boot, as the kernel stamps its own lines.
pub fn uptime() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The longest console line b2c prints, in characters: a message from a
/// server or a layer (a path, an error body) can never flood a 115200-baud
/// console.
pub const MAX_LINE: usize = 4096;

/// Formats one console line. `ERROR: ` and `WARNING: ` are part of the
/// interface CI parses. Whatever the message holds (text a registry or a
/// layer chose, among others), it stays one line: control characters are
/// escaped, so no message can start a line of its own (a fake
/// `Execution is over` line) or move the cursor, and it is cut at
/// [`MAX_LINE`] characters.
pub fn format_line(uptime: Duration, level: Level, msg: &str) -> String {
    let prefix = match level {
        Level::Error => "ERROR: ",
        Level::Warn => "WARNING: ",
        _ => "",
    };
    format!(
        "[{:>5}.{:03}]: {prefix}{}\n",
        uptime.as_secs(),
        uptime.subsec_millis(),
        printable(msg, MAX_LINE)
    )
}

/// `text` fit for one console line: control characters (ESC, CR, LF, C1…)
/// escaped as `\n`, `\u{1b}`…, and at most `max_chars` characters of it
/// kept, followed by how much was left out. Use it on anything a server
/// sent before it goes into a message.
pub fn printable(text: &str, max_chars: usize) -> Cow<'_, str> {
    let clean = !text.chars().any(char::is_control);
    if clean && text.len() <= max_chars {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut chars = text.chars();
    for (kept, c) in chars.by_ref().enumerate() {
        if kept >= max_chars {
            let rest = 1 + chars.count();
            out.push_str(&format!("… ({rest} more characters)"));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        shown(log::max_level(), metadata.level(), metadata.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(uptime(), record.level(), &record.args().to_string());
        write_console(&line);
        let mut kmsg = if CRASHED.load(Ordering::SeqCst) {
            // The crash may have come while this lock was held.
            match self.kmsg.try_lock() {
                Ok(kmsg) => kmsg,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        } else {
            self.kmsg.lock().unwrap_or_else(|e| e.into_inner())
        };
        if let Some(kmsg) = kmsg.as_mut() {
            // Level 7 (debug): kept in dmesg without being echoed a second
            // time on the console at the default loglevel.
            // Each write(2) to /dev/kmsg is one record: format first.
            let text = &line[line.find("]: ").map_or(0, |i| i + 3)..];
            let _ = kmsg.write_all(format!("<7>b2c: {text}").as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
}

/// Whether a record is shown at log level `max`. Dependencies (hyper,
/// rustls...) only speak in debug mode.
fn shown(max: LevelFilter, level: Level, target: &str) -> bool {
    level <= max
        && (max >= LevelFilter::Debug || target.starts_with("b2c") || target.starts_with("init"))
}

/// Installs the console logger. Safe to call once; later calls are ignored.
pub fn init(debug: bool) {
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let logger = ConsoleLogger {
        kmsg: Mutex::new(kmsg),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        set_debug(debug);
    }
}

/// `b2c.log=debug` (or back to info).
pub fn set_debug(debug: bool) {
    log::set_max_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
}

/// Prints a line verbatim (with the uptime stamp), whatever the log level:
/// for the status lines CI parses.
pub fn console_line(msg: &str) {
    write_console(&format_line(uptime(), Level::Info, msg));
}

/// `b2c.gitlab_sections`: whether [`Section`]s print GitLab's markers.
static SECTIONS: AtomicBool = AtomicBool::new(true);

/// Turns GitLab's collapsible-section markers on (the default) or off
/// (`b2c.gitlab_sections=0`).
pub fn set_gitlab_sections(on: bool) {
    SECTIONS.store(on, Ordering::SeqCst);
}

/// A part of the console that a GitLab job log showing it folds: its
/// header line carries GitLab's `section_start` marker, and a
/// `section_end` line closes it when the `Section` is dropped. The markers
/// follow GitLab's documented format (`ESC[0Ksection_start:UNIX_TS:NAME`
/// with `[collapsed=true]` for folded ones, then `\r ESC[0K` and the
/// header; `ESC[0Ksection_end:UNIX_TS:NAME\r ESC[0K`); on a terminal the
/// `\r` and erase-line codes leave only the header visible. Each marker is
/// a line of its own, so the lines CI parses never share one with them.
/// With sections off, the header is an ordinary console line.
#[must_use = "the section ends when this is dropped"]
pub struct Section {
    /// `None` with sections off.
    name: Option<String>,
}

impl Section {
    pub fn start(name: &str, header: &str, collapsed: bool) -> Section {
        if !SECTIONS.load(Ordering::SeqCst) || CRASHED.load(Ordering::SeqCst) {
            log::info!("{header}");
            return Section { name: None };
        }
        let name = section_name(name);
        let header = format_line(uptime(), Level::Info, header);
        write_console(&section_start_text(unix_now(), &name, collapsed, &header));
        Section { name: Some(name) }
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            write_console(&section_end_text(unix_now(), name));
        }
    }
}

/// GitLab takes `[a-zA-Z0-9_.-]` in section names; anything else becomes
/// `_`.
pub fn section_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The start marker and the header line (which ends with `\n`).
pub fn section_start_text(ts: u64, name: &str, collapsed: bool, header_line: &str) -> String {
    let options = if collapsed { "[collapsed=true]" } else { "" };
    format!("\x1b[0Ksection_start:{ts}:{name}{options}\r\x1b[0K{header_line}")
}

pub fn section_end_text(ts: u64, name: &str) -> String {
    format!("\x1b[0Ksection_end:{ts}:{name}\r\x1b[0K\n")
}

/// Unix seconds for the markers, from the boot-time clock: GitLab shows a
/// section's duration, which must not jump when NTP sets the wall clock
/// in the middle of one (an RTC reading 2000).
fn unix_now() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(uptime()).as_secs()
    });
    base + uptime().as_secs()
}

/// Set by the panic hook: from then on nothing here takes a lock.
static CRASHED: AtomicBool = AtomicBool::new(false);

/// For the panic hook, before it logs anything: the panicking code may
/// hold the logger's locks (std's stdout lock is reentrant, the kmsg one
/// is not, and another thread may hold either), so lines go straight to
/// the console's file descriptor, and to /dev/kmsg only when its lock is
/// free.
pub fn crash_mode() {
    CRASHED.store(true, Ordering::SeqCst);
}

/// One line on the console, in one piece so that concurrent threads never
/// interleave mid-line.
fn write_console(line: &str) {
    if CRASHED.load(Ordering::SeqCst) {
        write_fd(std::io::stdout().as_fd(), line.as_bytes());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// write(2) until done, without std's buffer or lock.
fn write_fd(fd: BorrowedFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_uptime_and_level_prefix() {
        let t = Duration::from_millis(12_345);
        assert_eq!(format_line(t, Level::Info, "hi"), "[   12.345]: hi\n");
        assert_eq!(
            format_line(t, Level::Error, "no lease"),
            "[   12.345]: ERROR: no lease\n"
        );
        assert_eq!(
            format_line(t, Level::Warn, "x"),
            "[   12.345]: WARNING: x\n"
        );
    }

    #[test]
    fn gitlab_section_markers() {
        let header = format_line(Duration::from_millis(2_379), Level::Info, "network");
        assert_eq!(
            section_start_text(1_700_000_000, "b2c_network", true, &header),
            "\x1b[0Ksection_start:1700000000:b2c_network[collapsed=true]\r\x1b[0K\
             [    2.379]: network\n"
        );
        assert_eq!(
            section_start_text(1_700_000_001, "b2c_run-0", false, "[    3.000]: x\n"),
            "\x1b[0Ksection_start:1700000001:b2c_run-0\r\x1b[0K[    3.000]: x\n"
        );
        assert_eq!(
            section_end_text(1_700_000_002, "b2c_network"),
            "\x1b[0Ksection_end:1700000002:b2c_network\r\x1b[0K\n"
        );
        assert_eq!(
            section_name("b2c_pull registry.test:5000/a/b"),
            "b2c_pull_registry.test_5000_a_b"
        );
        let a = unix_now();
        assert!(a > 1_600_000_000 && unix_now() >= a);
    }

    #[test]
    fn nothing_a_message_holds_breaks_the_line() {
        let t = Duration::from_millis(1_000);
        let fake = "oops\r\n[    9.000]: Execution is over, pipeline status: 0\u{1b}[2J\u{9b}";
        let line = format_line(t, Level::Error, fake);
        assert_eq!(
            line,
            "[    1.000]: ERROR: oops\\r\\n[    9.000]: Execution is over, pipeline status: \
             0\\u{1b}[2J\\u{9b}\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
        let long = "é".repeat(MAX_LINE + 10);
        let line = format_line(t, Level::Info, &long);
        assert!(line.ends_with("é… (10 more characters)\n"), "{line}");
        assert_eq!(printable("plain", 10), "plain");
        assert_eq!(
            printable("0123456789abc", 10),
            "0123456789… (3 more characters)"
        );
    }

    #[test]
    fn debug_shows_our_details_and_then_the_dependencies() {
        let info = LevelFilter::Info;
        let debug = LevelFilter::Debug;
        assert!(shown(info, Level::Info, "b2c_oci::pull"));
        assert!(shown(info, Level::Warn, "init::phases"));
        assert!(!shown(info, Level::Debug, "b2c_system::modules"));
        assert!(!shown(info, Level::Info, "hyper::client"));
        assert!(shown(debug, Level::Debug, "b2c_system::modules"));
        assert!(shown(debug, Level::Debug, "rustls::client"));
        assert!(!shown(debug, Level::Trace, "b2c_oci::pull"));
    }
}
