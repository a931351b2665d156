//! PID 1 duties: mounts, console logging, kernel modules and hot-plug,
//! the reaper, host name and clock, stop signals, the hardware watchdog,
//! the initramfs's seldom needed programs, and the final power-off.

pub mod devices;
pub mod error_chain;
pub mod host;
pub mod info;
pub mod log;
pub mod modinfo;
pub mod modules;
pub mod mounts;
pub mod power;
pub mod reaper;
pub mod signals;
pub mod tools;
pub mod uevents;
pub mod watchdog;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot mount {target}: {source}")]
    Mount {
        target: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("kernel module {0} is not in the initramfs")]
    ModuleNotFound(String),
    #[error("cannot load kernel module {path}: {source}")]
    Module {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
