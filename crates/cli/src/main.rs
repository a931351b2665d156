//! `b2c` on a workstation: the same crates as the initramfs's PID 1, for
//! people and for the benchmarks.
//!
//! - `b2c pull IMAGE --root DIR` pulls an image exactly as a boot does
//!   (b2c-oci's streaming pipeline: body → digest → gunzip → untar, layers
//!   concurrently) into the store at `DIR` (layers, blobs, image records:
//!   a later pull reuses what is there), and with `--rootfs`
//!   also assembles the merged root file system.
//! - `b2c cmdline "APPEND LINE"` parses a kernel command line with
//!   b2c-cmdline and prints what a boot would do, or the `ERROR:` a boot
//!   would end with.

mod cmdline;
mod merge;
mod pull;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use log::{LevelFilter, Log, Metadata, Record};

const USAGE: &str = "\
usage: b2c <command> [ARGS]

  pull IMAGE --root DIR [OPTIONS]
                        pull IMAGE (docker://host/name:tag, or a short name)
                        into the store DIR (layers in DIR/layers, one directory
                        each, reused by later pulls), as the initramfs does
      --tls-verify=false  HTTPS without certificate verification, or plain HTTP
      --ca-cert FILE      also trust the CA(s) in this PEM file (repeatable)
      --rootfs DIR        also assemble the merged root file system at DIR: an
                          overlay mount (upper and work dirs under DIR/..), or
                          a copy where mounting is not possible
      --copy              with --rootfs: always copy, never mount
      --pull=POLICY       always (default: ask the registry, download what the
                          store lacks), missing (use a stored image as is) or
                          never (only a stored image)
      --debug             also show the libraries' messages
  cmdline [LINE...]     parse a kernel command line (the words given, joined by
                        spaces; /proc/cmdline without any) and print the plan,
                        or the ERROR: a boot would stop with (exit status 1)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("pull") => pull::run(&args[1..]),
        Some("cmdline") => cmdline::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("b2c: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("ERROR: {msg}");
            ExitCode::from(1)
        }
    }
}

/// How a subcommand failed: the user's words were wrong (exit 2, with the
/// usage), or the work failed (exit 1, one `ERROR:` line).
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Error(String),
}

impl Failure {
    pub fn error(e: impl std::fmt::Display) -> Failure {
        Failure::Error(e.to_string())
    }
}

/// The initramfs's line format (`[   1.234]: WARNING: …`), timed from the
/// start of this command, on stderr: stdout is left for results.
struct StderrLogger {
    start: Instant,
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
            && (self.level >= LevelFilter::Debug || metadata.target().starts_with("b2c"))
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let line = b2c_system::log::format_line(
                self.start.elapsed(),
                record.level(),
                &record.args().to_string(),
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

pub fn init_logging(debug: bool) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let logger = StderrLogger {
        start: Instant::now(),
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
