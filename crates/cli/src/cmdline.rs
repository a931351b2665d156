//! `b2c cmdline "LINE"`: check an APPEND line before booting it.

use crate::Failure;

/// `b2c cmdline`'s arguments: the words of a kernel command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel command line, in one or more words (joined by spaces;
    /// /proc/cmdline when none are given). Words may start with `-`: after
    /// the first word, everything is part of the line
    #[arg(
        value_name = "LINE",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    words: Vec<String>,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let line = if args.words.is_empty() {
        std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| Failure(format!("/proc/cmdline: {e}")))?
    } else {
        args.words.join(" ")
    };
    // The same message, with the same prefix, as the console of a boot.
    let plan = b2c_cmdline::plan(&line).map_err(Failure::error)?;
    for warning in &plan.warnings {
        eprintln!("WARNING: {warning}");
    }
    print!("{plan}\noptions:\n{plan:#?}\n");
    Ok(())
}
