//! Every way a boot can fail, and the one place where a failure becomes a
//! console message that says what went wrong and which option to check.

use std::error::Error as StdError;
use std::fmt;

use b2c_cmdline::{EnvFileSource, PlanError};

#[derive(Debug)]
pub enum BootError {
    /// The kernel filesystems could not be mounted.
    Early(b2c_system::Error),
    /// The command line cannot be booted.
    Plan(PlanError),
    Modules(b2c_system::Error),
    Network(b2c_net::NetError),
    Hostname(b2c_system::Error),
    CaCert(b2c_net::http::TrustError),
    /// The tmpfs, the container scratch or the image store.
    Storage(b2c_system::Error),
    Cache(b2c_storage::StorageError),
    /// `b2c.extra_args_url` could not be fetched (the error names the URL).
    ExtraArgs(b2c_net::NetError),
    /// What `b2c.extra_args_url` served cannot be booted.
    ExtraArgsInvalid {
        url: String,
        source: PlanError,
    },
    EnvFile {
        source: EnvFileSource,
        error: Box<EnvFileError>,
    },
    /// A `b2c.volume` could not be set up, or its `pipeline_start` sync
    /// failed (as in boot2container, the containers then do not run).
    Volume(b2c_storage::volume::VolumeError),
}

#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error(transparent)]
    Fetch(b2c_net::NetError),
    #[error(transparent)]
    Read(std::io::Error),
    #[error("{0}")]
    Parse(String),
}

impl BootError {
    /// The option a user should look at, when there is one.
    fn hint(&self) -> Option<&'static str> {
        match self {
            BootError::Early(_) | BootError::Storage(_) => None,
            BootError::Plan(_) => Some("fix that option on the kernel command line"),
            BootError::Modules(_) => {
                Some("check b2c.insmods (or b2c.modules) against initramfs/modules.txt")
            }
            BootError::Network(_) => {
                Some("check the cabling, the DHCP server, b2c.dhcp_timeout, b2c.iface and ip=")
            }
            BootError::Hostname(_) => Some("check b2c.hostname"),
            BootError::CaCert(_) => {
                Some("b2c.ca_cert must name a PEM file inside the initramfs or an http(s) URL")
            }
            BootError::Cache(_) => Some("check b2c.cache_device, b2c.filesystem and b2c.swap"),
            BootError::ExtraArgs(_) => Some("check b2c.extra_args_url and the server behind it"),
            BootError::ExtraArgsInvalid { .. } => Some("fix that option at b2c.extra_args_url"),
            BootError::EnvFile { .. } => Some("check --env-file in the container options"),
            BootError::Volume(_) => Some("check b2c.volume, b2c.minio and the S3 server"),
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Early(e) => write!(f, "early setup failed: {e}"),
            BootError::Plan(e) => write!(f, "kernel command line: {e}"),
            BootError::Modules(e) => write!(f, "kernel modules: {e}"),
            BootError::Network(e) => write!(f, "network: {e}"),
            BootError::Hostname(e) => write!(f, "host name: {e}"),
            BootError::CaCert(e) => write!(f, "b2c.ca_cert={}: {}", e.what, e.problem),
            BootError::Storage(e) => write!(f, "storage: {e}"),
            BootError::Cache(e) => write!(f, "cache: {e}"),
            BootError::ExtraArgs(e) => write!(f, "b2c.extra_args_url: {e}"),
            BootError::ExtraArgsInvalid { url, source } => write!(
                f,
                "b2c.extra_args_url: the options fetched from {url} are invalid: {source}"
            ),
            BootError::EnvFile { source, error } => write!(f, "--env-file {source}: {error}"),
            BootError::Volume(e) => write!(f, "{e}"),
        }?;
        if let Some(hint) = self.hint() {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl StdError for BootError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            BootError::Early(e)
            | BootError::Modules(e)
            | BootError::Hostname(e)
            | BootError::Storage(e) => Some(e),
            BootError::Plan(e) | BootError::ExtraArgsInvalid { source: e, .. } => Some(e),
            BootError::Network(e) | BootError::ExtraArgs(e) => Some(e),
            BootError::Cache(e) => Some(e),
            BootError::EnvFile { error, .. } => Some(error.as_ref()),
            BootError::CaCert(e) => Some(e),
            BootError::Volume(e) => Some(e),
        }
    }
}
