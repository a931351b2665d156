//! The value of one `b2c.run` (podman-run-style arguments) must never
//! panic the parser, whatever its quoting.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = b2c_cmdline::parse_container_args(&text);
});
