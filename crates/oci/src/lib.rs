//! b2c-oci: OCI images for b2c.
//!
//! Reference parsing, registry pulls on the HTTP layer of b2c-net (bundled
//! TLS roots, retries for a bounded time, resumed downloads, progress on
//! the console, proxies, insecure registries and mirrors: see
//! [`RegistryOptions`]; every answer bounded, see `client.rs`), pull policies ([`PullPolicy`]), a
//! content-addressed store of unpacked layers, manifests, configs and image
//! records that survives reboots on a cache disk (layout and crash safety:
//! [`LayerStore`]; eviction: [`LayerStore::evict`]), the streaming layer
//! unpacker (body → digest → gunzip → tar → files in one pass, confined to
//! the layer directory) and overlayfs assembly. Images can also come from
//! read-only image stores that podman wrote ([`ContainersStore`]), used in
//! place.
//!
//! Typical use:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use b2c_oci::{LayerStore, PullPolicy};
//! let store = LayerStore::new("/storage/oci")?;
//! let reference = b2c_oci::parse_reference("docker://registry.test/busybox:latest")?;
//! // Make room on the cache, keeping what this image needs.
//! let keep = store.stored_image(&reference).map(|s| s.layers).unwrap_or_default();
//! store.evict(store.default_min_free()?, &keep)?;
//! let image = b2c_oci::pull(&reference, &Default::default(), &store, PullPolicy::Always).await?;
//! b2c_oci::mount_overlay(
//!     &image.layers,
//!     "/run/c0/upper".as_ref(),
//!     "/run/c0/work".as_ref(),
//!     "/run/c0/rootfs".as_ref(),
//! )?;
//! # Ok(()) }
//! ```

mod authfile;
mod body;
mod client;
mod confined;
mod cstore;
mod digest;
mod evict;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod images;
mod overlay;
mod pull;
mod reference;
mod registry;
mod store;
mod unpack;

pub use authfile::{parse_auth_file, Credential};
pub use b2c_cmdline::Proxy;
pub use b2c_net::http::{MinProgress, RetryPolicy, Trust};
pub use confined::remove_tree;
pub use cstore::{find_in_stores, ContainersStore, ImageStoreError, Lookup};
pub use digest::{Digest, DigestParseError};
pub use evict::EvictStats;
pub use images::StoredImage;
pub use oci_spec::distribution::Reference;
pub use overlay::{mount_overlay, OverlayError};
pub use pull::{pull, ImageSource, PullPolicy, PullStats, PulledImage};
pub use reference::{parse_reference, to_reference, ImageRef, ReferenceError};
pub use registry::{RegistryOptions, DEFAULT_PULL_RETRY};
pub use store::{LayerError, LayerStore, StoreError};
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
        "{image}: registry {registry} denied access: {detail} (give its credentials with \
         --creds USER:PASSWORD or --authfile, best through b2c.extra_args_url)"
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
    /// `--pull=never` and the image is not (completely) in the store.
    #[error(
        "{image}: not in the image store, and --pull=never forbids pulling it (pull it once \
         with --pull=missing or --pull=always on a machine with b2c.cache_device)"
    )]
    NotStored { image: String },
    /// The store could not be written (full disk, I/O error).
    #[error("{image}: {source}")]
    Store {
        image: String,
        #[source]
        source: StoreError,
    },
    /// An image store could not be read, or its copy of the image is
    /// damaged.
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
    /// An image ID that no image store has: a registry cannot be asked
    /// for an ID.
    #[error(
        "image ID {image} is in none of the image stores ({stores}); only a name can be pulled \
         from a registry"
    )]
    NotInImageStores { image: String, stores: String },
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
