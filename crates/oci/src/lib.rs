//! b2c-oci: OCI images for b2c.
//!
//! Reference parsing, registry pulls with oci-client (bundled TLS roots,
//! retries, progress on the console, proxies, insecure registries and
//! mirrors: see [`RegistryOptions`]), a store of unpacked layers, the
//! streaming layer unpacker (body → digest → gunzip → tar → files in one
//! pass, confined to the layer directory) and overlayfs assembly.
//!
//! Typical use:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let store = b2c_oci::LayerStore::new("/var/cache/b2c/layers")?;
//! let reference = b2c_oci::parse_reference("docker://registry.test/busybox:latest")?;
//! let image = b2c_oci::pull(&reference, &Default::default(), &store).await?;
//! b2c_oci::mount_overlay(
//!     &image.layers,
//!     "/run/c0/upper".as_ref(),
//!     "/run/c0/work".as_ref(),
//!     "/run/c0/rootfs".as_ref(),
//! )?;
//! # Ok(()) }
//! ```

mod confined;
mod digest;
mod overlay;
mod pull;
mod reference;
mod registry;
mod store;
mod unpack;

pub use digest::{Digest, DigestParseError};
pub use oci_client::Reference;
pub use overlay::{mount_overlay, OverlayError};
pub use pull::{pull, PulledImage};
pub use reference::{parse_reference, ReferenceError};
pub use registry::{ProxyOptions, RegistryOptions, RetryPolicy};
pub use store::{LayerError, LayerStore};
pub use unpack::{unpack_layer, UnpackError, UnpackStats};

/// Why a pull failed. Every message names the image (and the registry when
/// one was involved) and, where an option can fix it, says which.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "{image}: the TLS certificate of registry {registry} could not be verified ({detail}); {}",
        certificate_hint(*clock_suspect)
    )]
    Certificate {
        image: String,
        registry: String,
        detail: String,
        /// The certificate is expired or not yet valid: often the clock.
        clock_suspect: bool,
    },
    #[error(
        "{image}: TLS with registry {registry} failed ({detail}); if the registry serves plain \
         HTTP, use --tls-verify=false or b2c.insecure_registry={registry}"
    )]
    Tls {
        image: String,
        registry: String,
        detail: String,
    },
    #[error(
        "{image}: cannot reach registry {registry} (gave up after {attempts} attempts): {detail}"
    )]
    Unreachable {
        image: String,
        registry: String,
        attempts: u32,
        detail: String,
    },
    #[error("{image}: not found on registry {registry}: {detail}")]
    NotFound {
        image: String,
        registry: String,
        detail: String,
    },
    #[error(
        "{image}: registry {registry} denied access (only anonymous pulls are supported): {detail}"
    )]
    Denied {
        image: String,
        registry: String,
        detail: String,
    },
    #[error("{image}: registry {registry}: {detail}")]
    Registry {
        image: String,
        registry: String,
        detail: String,
    },
    /// A manifest or blob from the registry does not match its digest
    /// (oci-client's check; layers checked while unpacking fail as
    /// [`PullError::Layer`] with [`LayerError::DigestMismatch`]).
    #[error(
        "{image}: registry {registry} served content that does not match its digest: {detail}"
    )]
    DigestMismatch {
        image: String,
        registry: String,
        detail: String,
    },
    #[error("{image}: invalid image configuration: {detail}")]
    BadConfig { image: String, detail: String },
    #[error("{image}: layer {digest}: {detail}")]
    UnsupportedLayer {
        image: String,
        digest: String,
        detail: String,
    },
    #[error("{image}: layer {digest}: {source}")]
    Layer {
        image: String,
        digest: String,
        #[source]
        source: LayerError,
    },
    #[error("invalid extra CA certificate (b2c.ca_cert): {detail}")]
    CaCert { detail: String },
    #[error("cannot set up the registry client: {detail}")]
    Client { detail: String },
    /// A registry setting that cannot be used (the message names it).
    #[error("invalid {option}: {detail}")]
    BadOption {
        option: &'static str,
        detail: String,
    },
}

impl PullError {
    /// Whether a registry served content that does not match its digest:
    /// a mirror doing so is not fallen back from.
    pub fn is_digest_mismatch(&self) -> bool {
        matches!(
            self,
            PullError::DigestMismatch { .. }
                | PullError::Layer {
                    source: LayerError::DigestMismatch { .. },
                    ..
                }
        )
    }
}

fn certificate_hint(clock_suspect: bool) -> &'static str {
    if clock_suspect {
        "the certificate is not valid at the current time: is the clock right (b2c.ntp_peer)? \
         For a private CA pass it with b2c.ca_cert; for a test registry --tls-verify=false \
         skips verification"
    } else {
        "if the registry uses a private CA, pass it with b2c.ca_cert; for a test registry, \
         --tls-verify=false skips verification"
    }
}
