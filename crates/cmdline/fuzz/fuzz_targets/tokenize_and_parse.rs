//! A whole kernel command line, and the text fetched from
//! `b2c.extra_args_url` (which comes over the network), must never panic
//! the parser: PID 1 panicking is a kernel panic, with no status line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lossy rather than skipping invalid UTF-8: every input then reaches
    // the parser (U+FFFD included), and the init reads fetched text so.
    let text = String::from_utf8_lossy(data);
    let _ = b2c_cmdline::tokenize(&text);
    let _ = b2c_cmdline::parse(&text);
    // The first NUL (never part of a real command line) splits the input
    // into the command line and the fetched extra arguments.
    let (cmdline, extra) = text.split_once('\0').unwrap_or((&text, ""));
    let _ = b2c_cmdline::parse_with_extra(cmdline, extra);
});
