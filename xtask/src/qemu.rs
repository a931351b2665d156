//! `cargo xtask qemu`: boot the initramfs on the private test network.

use crate::Result;

pub fn run(_args: &[String]) -> Result<()> {
    Err("not wired yet".into())
}
