//! Console logging: one uptime-stamped line per event, for humans and CI
//! parsers at once, mirrored to the kernel log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct ConsoleLogger {
    kmsg: Mutex<Option<File>>,
    level: LevelFilter,
}

/// Seconds since boot, as the kernel stamps its own lines.
pub fn uptime() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Formats one console line. `ERROR: ` and `WARNING: ` are part of the
/// interface CI parses.
pub fn format_line(uptime: Duration, level: Level, msg: &str) -> String {
    let prefix = match level {
        Level::Error => "ERROR: ",
        Level::Warn => "WARNING: ",
        _ => "",
    };
    format!(
        "[{:>5}.{:03}]: {prefix}{msg}\n",
        uptime.as_secs(),
        uptime.subsec_millis()
    )
}

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
            // Dependencies (hyper, rustls, ...) only speak in debug mode.
            && (self.level >= LevelFilter::Debug || metadata.target().starts_with("b2c")
                || metadata.target().starts_with("init"))
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(uptime(), record.level(), &record.args().to_string());
        // One write per line so concurrent tasks never interleave mid-line.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
        if let Some(kmsg) = self.kmsg.lock().unwrap().as_mut() {
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

/// Installs the console logger. Safe to call once; later calls are ignored.
pub fn init(debug: bool) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let logger = ConsoleLogger {
        kmsg: Mutex::new(kmsg),
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// Prints a line verbatim (with the uptime stamp), whatever the log level:
/// for the status lines CI parses.
pub fn console_line(msg: &str) {
    let line = format_line(uptime(), Level::Info, msg);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
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
}
