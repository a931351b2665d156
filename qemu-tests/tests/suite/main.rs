//! The QEMU end-to-end tests, one module per subject, in one test binary:
//! `--test-threads` then spreads every boot over the machine, instead of
//! each file's boots in turn (its last, long boot alone), and the suite
//! links once. Run one subject with a filter: `cargo test -p qemu-tests
//! -- cache::`.
//!
//! The helpers, and why markers look like `$((40+2))`: `common/mod.rs`.

mod common;

mod cache;
mod corpus;
mod diskless;
mod drivers;
mod e2e;
mod faults;
mod flags;
mod netboot;
mod network;
mod own_kernel;
mod pipeline;
mod signals;
mod soak;
mod volumes;
