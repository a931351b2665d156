//! Every way a boot can fail, and the one place where a failure becomes a
//! console message that says what went wrong and which option to check.

use std::fmt;

#[derive(Debug)]
pub enum BootError {
    /// The kernel filesystems could not be mounted.
    Early(b2c_system::Error),
    Cmdline(b2c_cmdline::Error),
    Modules(b2c_system::Error),
    Network(b2c_net::NetError),
    CaCert {
        path: String,
        problem: String,
    },
    Storage(b2c_system::Error),
    Cache(b2c_storage::StorageError),
    Pull(b2c_oci::PullError),
    Image {
        image: String,
        source: b2c_oci::ReferenceError,
    },
    ExtraArgs(String),
    EnvFile {
        source: String,
        problem: String,
    },
}

impl BootError {
    /// The option a user should look at, when there is one.
    fn hint(&self) -> Option<&'static str> {
        match self {
            BootError::Early(_) => None,
            BootError::Cmdline(_) => Some("fix that option on the kernel command line"),
            BootError::Modules(_) => {
                Some("check b2c.insmods (or b2c.modules) against initramfs/modules.txt")
            }
            BootError::Network(_) => Some("check the cabling, the DHCP server, b2c.iface and ip="),
            BootError::CaCert { .. } => {
                Some("b2c.ca_cert must name a PEM file inside the initramfs or an http(s) URL")
            }
            BootError::Storage(_) => None,
            BootError::Cache(_) => Some("check b2c.cache_device, b2c.filesystem and b2c.swap"),
            // The registry errors name their own fix.
            BootError::Pull(_) => None,
            BootError::Image { .. } => Some("check the image name in b2c.run"),
            BootError::ExtraArgs(_) => Some("check b2c.extra_args_url and the server behind it"),
            BootError::EnvFile { .. } => Some("check --env-file in the container options"),
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Early(e) => write!(f, "early setup failed: {e}"),
            BootError::Cmdline(e) => write!(f, "kernel command line: {e}"),
            BootError::Modules(e) => write!(f, "kernel modules: {e}"),
            BootError::Network(e) => write!(f, "network: {e}"),
            BootError::CaCert { path, problem } => {
                write!(f, "b2c.ca_cert={path}: cannot read it: {problem}")
            }
            BootError::Storage(e) => write!(f, "storage: {e}"),
            BootError::Cache(e) => write!(f, "cache: {e}"),
            BootError::Pull(e) => write!(f, "cannot pull {e}"),
            BootError::Image { image, source } => write!(f, "b2c.run image {image:?}: {source}"),
            BootError::ExtraArgs(e) => write!(f, "b2c.extra_args_url: {e}"),
            BootError::EnvFile { source, problem } => {
                write!(f, "--env-file {source}: {problem}")
            }
        }?;
        if let Some(hint) = self.hint() {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for BootError {}
