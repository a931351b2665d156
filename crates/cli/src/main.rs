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
//! - `b2c volume push|pull DIR VOLUME` syncs a directory with a bucket
//!   as a boot syncs a `b2c.volume` (b2c-storage's sync).
//! - `b2c plot CONSOLE.LOG > boot.svg` draws where the time of a boot
//!   went, from its serial console log.
//!
//! The arguments are clap's (derive): `b2c --help`, `b2c help pull`,
//! `b2c pull --help`, `b2c --version`. Wrong arguments exit 2 with clap's
//! message; a failure of the work itself exits 1 with one `ERROR:` line.

mod cmdline;
mod merge;
mod plot;
mod pull;
mod volume;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use log::{LevelFilter, Log, Metadata, Record};

/// b2c on a workstation: pull an image as the initramfs does, sync a
/// volume with its bucket, check a kernel command line before booting it,
/// chart a boot from its log
///
/// Exit status: 0 when done, 1 when the work fails (one ERROR: line on
/// stderr), 2 when the arguments are wrong.
#[derive(Debug, Parser)]
#[command(name = "b2c", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull IMAGE into the store DIR, as the initramfs does
    ///
    /// The same pull as a boot's: the manifest, then every layer in one
    /// streaming pass (body → sha256 → gunzip/zstd → untar), layers
    /// concurrently. The store keeps the layers in DIR/layers, one
    /// directory each, and a later pull reuses what is there. Prints the
    /// image, its manifest digest and its layer directories (bottom to top).
    Pull(pull::Args),
    /// Parse a kernel command line and print what a boot would do
    ///
    /// The line is the words given, joined by spaces, or /proc/cmdline
    /// without any. Prints the plan (the boot's steps in order, then every
    /// parsed option), or the ERROR: a boot would stop with (exit status 1).
    /// Unknown b2c.* options are warned about on stderr, as a boot does.
    Cmdline(cmdline::Args),
    /// Draw where the time of a boot went, from its serial console log
    ///
    /// Reads the uptime-stamped lines of a b2c boot (`[   9.155]: …`) and
    /// writes an SVG timeline on stdout: the kernel, each setup phase
    /// (modules, network, clock, extra args, cache), the pull with each
    /// image and its layers, each service and container, and the
    /// shutdown. Kernel lines, container output, CRs, ANSI escapes and
    /// GitLab section markers in the log are fine. `b2c plot serial.log >
    /// boot.svg`.
    Plot(plot::Args),
    /// Push DIR to its bucket, or pull the bucket into DIR, as a boot
    /// syncs a b2c.volume
    ///
    /// The same sync as a boot's (`mc mirror`'s rules, 8 files at a time,
    /// large files in parts, each streamed): `b2c volume push DIR
    /// "results,mirror=gw/bucket/prefix,overwrite,remove" --minio
    /// "gw,http://host:9000,ACCESS_KEY,SECRET_KEY"`. One line per sync on
    /// stdout, the console lines of a boot on stderr.
    Volume(volume::Args),
}

fn main() -> ExitCode {
    // --help, -h, help and --version exit 0; wrong arguments exit 2.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pull(args) => pull::run(args),
        Command::Cmdline(args) => cmdline::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Volume(args) => volume::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("ERROR: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The work of a subcommand failed (exit 1, one `ERROR:` line). Wrong
/// arguments never get this far: clap reports them (exit 2).
#[derive(Debug)]
pub struct Failure(pub String);

impl Failure {
    pub fn error(e: impl std::fmt::Display) -> Failure {
        Failure(e.to_string())
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
