//! Where the time of a b2c boot went, from its console log: what `b2c
//! plot CONSOLE.LOG > boot.svg` and `cargo xtask bench` draw, as
//! `systemd-analyze plot` does for systemd.
//!
//! Reading ([`parse`]: the log → a [`BootTimeline`] of typed spans) is
//! pure and separate from drawing ([`render_svg`]). The log is any serial
//! capture of a boot: the kernel's own lines, a container's output, CRs,
//! ANSI escapes and GitLab's section markers around b2c's uptime-stamped
//! lines are all fine; only the stamped lines are read.
//!
//! Host-only: the b2c command and xtask use it, the initramfs never does.
//! It depends on none of b2c's crates, only on the console format they
//! print (`b2c_system::log::format_line` and the messages of each phase),
//! which its tests hold real logs of.

mod line;
mod svg;
mod timeline;

pub use svg::{escape, render_svg, seconds};
pub use timeline::{boots, parse, parse_boot, BootTimeline, Kind, ParseError, Span, State};
