//! `b2c plot CONSOLE.LOG > boot.svg`: where the time of a boot went, as
//! `systemd-analyze plot` shows it for systemd. The reading and the
//! drawing are b2c-bootchart's, shared with `cargo xtask bench`.

use std::io::Read;
use std::path::PathBuf;

use crate::Failure;

/// `b2c plot`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The serial console log of a boot (`-` for stdin)
    #[arg(value_name = "CONSOLE.LOG")]
    log: PathBuf,
    /// Which boot of the log to draw, from 1, when it holds several (a
    /// machine that rebooted); the last one by default
    #[arg(long, value_name = "N")]
    boot: Option<usize>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let mut bytes = Vec::new();
    let read = if args.log.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(&args.log).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| Failure(format!("{}: {e}", args.log.display())))?;
    // A serial log may hold anything a container printed: not UTF-8.
    let log = String::from_utf8_lossy(&bytes);
    let timeline = match args.boot {
        Some(n) => b2c_bootchart::parse_boot(&log, n),
        None => b2c_bootchart::parse(&log),
    }
    .map_err(|e| Failure(format!("{}: {e}", args.log.display())))?;
    if timeline.boots > 1 && args.boot.is_none() {
        eprintln!(
            "{}: {} b2c boots in it: drawing the last one (--boot N for another)",
            args.log.display(),
            timeline.boots
        );
    }
    print!("{}", b2c_bootchart::render_svg(&timeline));
    Ok(())
}
