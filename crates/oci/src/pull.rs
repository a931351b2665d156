//! Pulling an image: the manifest (the only request when the stored copy
//! is up to date), the config, then every missing layer streamed from the
//! HTTP body through the digest check and the unpacker in one pass; and
//! the pull policies that decide whether the registry is asked at all.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use b2c_net::http::{self, read_bounded, with_retries, BodyLimit, Retryable};
use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{current_platform_resolver, BlobResponse, SizedStream};
use oci_client::manifest::{
    OciDescriptor, OciManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use oci_spec::image::ImageConfiguration;
use tokio::sync::watch;

use crate::body::{self, BodySender};
use crate::digest::Digest;
use crate::images::{parse_manifest, Record, StoredImage};
use crate::registry::{endpoints, mirror_reference, Endpoint, Failure, RegistryOptions};
use crate::store::{format_time, mb, LayerError, LayerStore, StoreError};
use crate::unpack::UnpackStats;
use crate::PullError;

/// Layers of one image downloaded and unpacked at the same time.
const CONCURRENT_LAYERS: usize = 4;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Bytes of a layer buffered between the network and its unpacker. With
/// [`CONCURRENT_LAYERS`] in flight, this is what a pull holds in RAM
/// besides the unpackers' own buffers, whatever the network's pace.
const BUFFERED_PER_LAYER: usize = 512 << 10;
/// Bound on a config blob whose descriptor gives no size.
const MAX_CONFIG: u64 = 16 << 20;
/// For an answer whose body oci-client reads itself (a manifest, a token,
/// the body of an error answer; for a blob, up to its headers) and for a
/// config body: a registry that trickles them out fails the attempt instead
/// of hanging the boot.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

const MANIFEST_MEDIA_TYPES: &[&str] = &[
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
];

pub use b2c_cmdline::PullPolicy;

/// Where a [`PulledImage`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A registry (or mirror) was asked for the manifest, and whatever the
    /// store lacked was downloaded (possibly nothing).
    Registry,
    /// The store, without asking any registry: `--pull=missing` or
    /// `--pull=never`, or a reference pinned by a digest already stored.
    Store,
    /// The store, because the registry could not be reached
    /// (`--pull=always`): the image may be out of date.
    StoreOffline,
}

/// What a pull downloaded and reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Distinct layers found in the store.
    pub layers_reused: usize,
    /// Distinct layers downloaded and unpacked.
    pub layers_downloaded: usize,
    /// Compressed size of the downloaded layers.
    pub bytes_downloaded: u64,
}

/// A pulled image, ready to be assembled with [`crate::mount_overlay`].
#[derive(Debug)]
pub struct PulledImage {
    /// The reference as resolved (`docker.io/library/alpine:latest`).
    pub reference: String,
    /// The host (`host[:port]`) that served it: the registry, or one of its
    /// mirrors (for an image used from the store, the one that served it
    /// when it was pulled).
    pub served_by: String,
    /// Digest of the platform manifest that was pulled.
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    /// Unpacked layer directories, bottom → top (may repeat a directory if
    /// the manifest repeats a layer).
    pub layers: Vec<PathBuf>,
    /// The digests of `layers`, in the same order.
    pub layer_digests: Vec<Digest>,
    pub source: ImageSource,
    pub stats: PullStats,
}

const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Gets `reference` into `store` as `policy` says, and returns it.
///
/// - [`PullPolicy::Always`]: the registry is asked for the manifest. If it
///   is the one stored for this reference and the stored image is
///   complete, nothing else is downloaded; otherwise only the layers (and
///   config) the store lacks are. When the registry cannot be reached
///   (connection refused, timeout, DNS failure, 5xx or 429, after the retries;
///   never on 404, 401 or TLS errors) and the image is stored, a
///   `registry R unreachable: using the stored image REF (sha256:…, pulled
///   …)` warning is logged and the stored image is returned. A reference
///   pinned by a digest that is stored is used without asking.
/// - [`PullPolicy::Missing`]: a stored image is used without asking; else
///   as `Always`.
/// - [`PullPolicy::Never`]: a stored image is used; else
///   [`PullError::NotStored`].
///
/// A stored image that is incomplete or damaged counts as not stored.
/// Layers are verified against their digests before they are committed,
/// then the manifest, config and the image record are written; the image
/// is stored once the record is. A line says how many layers were
/// downloaded and how many reused.
///
/// Transient failures are retried per `opts.retry`; errors name the image
/// and the registry.
///
/// If `opts.mirrors` has mirrors for the image's registry, they are tried
/// first, in order, with the same repository (under the mirror's path
/// prefix, if any) and tag or digest. When a mirror fails, a `WARNING:`
/// line names it, the error and what is tried next (the next mirror, then
/// the registry), except when it served content that does not match its
/// digest: that fails the pull, as it would from the registry itself. The
/// final `pulled … from …` line names the registry or mirror that served
/// the image (also in [`PulledImage::served_by`]).
pub async fn pull(
    reference: &Reference,
    opts: &RegistryOptions,
    store: &LayerStore,
    policy: PullPolicy,
) -> Result<PulledImage, PullError> {
    opts.validate()?;
    let image = reference.whole();
    let stored = match store.load_image(&image) {
        Ok(stored) => stored,
        Err(why) => {
            log::info!("{image}: the stored copy is incomplete or damaged ({why}): not using it");
            None
        }
    };
    match (policy, stored) {
        (PullPolicy::Missing | PullPolicy::Never, Some(s)) => {
            Ok(from_store(store, s, ImageSource::Store, policy.flag()))
        }
        (PullPolicy::Never, None) => Err(PullError::NotStored { image }),
        (PullPolicy::Always, Some(s)) if reference.digest() == Some(s.digest.as_str()) => {
            Ok(from_store(store, s, ImageSource::Store, "pinned by digest"))
        }
        (_, stored) => {
            let pulled = pull_remote(reference, &image, opts, store, stored.as_ref()).await;
            match (pulled, stored) {
                // Only `Always` gets here with a stored image.
                (
                    Err(PullError::Unreachable {
                        registry, detail, ..
                    }),
                    Some(s),
                ) => {
                    log::warn!(
                        "registry {registry} unreachable: using the stored image {image} ({}, \
                         pulled {}); last error: {detail}",
                        s.manifest_digest,
                        format_time(s.pulled)
                    );
                    Ok(from_store(store, s, ImageSource::StoreOffline, ""))
                }
                (pulled, _) => pulled,
            }
        }
    }
}

/// The manifest of an image index for `wanted` (podman's `--platform`,
/// `--arch`, `--os`, `--variant`), this machine's when nothing was asked:
/// the OS and the architecture must match; among those, the asked variant
/// is preferred, else the first one is taken.
fn platform_manifest(
    manifests: &[oci_client::manifest::ImageIndexEntry],
    wanted: &b2c_cmdline::Platform,
) -> Option<String> {
    if wanted.is_default() {
        return current_platform_resolver(manifests);
    }
    let os = wanted
        .os
        .clone()
        .unwrap_or_else(|| oci_spec::image::Os::default().to_string());
    let arch = wanted
        .architecture
        .clone()
        .unwrap_or_else(|| oci_spec::image::Arch::default().to_string());
    let matching: Vec<_> = manifests
        .iter()
        .filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os.to_string() == os && p.architecture.to_string() == arch)
        })
        .collect();
    matching
        .iter()
        .find(|e| {
            wanted.variant.is_some()
                && e.platform.as_ref().and_then(|p| p.variant.as_ref()) == wanted.variant.as_ref()
        })
        .or(matching.first())
        .map(|e| e.digest.clone())
}

/// A stored image as a [`PulledImage`]; says so unless `why` is empty.
fn from_store(store: &LayerStore, s: StoredImage, source: ImageSource, why: &str) -> PulledImage {
    store.mark_used(&s.layers);
    let distinct: HashSet<&Digest> = s.layers.iter().collect();
    if !why.is_empty() {
        log::info!(
            "using the stored image {} ({}, pulled {}; {why}): {} layers reused from the store, \
             none downloaded",
            s.reference,
            s.manifest_digest,
            format_time(s.pulled),
            distinct.len()
        );
    }
    PulledImage {
        stats: PullStats {
            layers_reused: distinct.len(),
            ..PullStats::default()
        },
        layers: s.layers.iter().map(|d| store.layer_path(d)).collect(),
        reference: s.reference,
        served_by: s.served_by,
        manifest_digest: s.manifest_digest.to_string(),
        config: s.config,
        layer_digests: s.layers,
        source,
    }
}

/// The mirrors, then the registry.
async fn pull_remote(
    reference: &Reference,
    image: &str,
    opts: &RegistryOptions,
    store: &LayerStore,
    stored: Option<&StoredImage>,
) -> Result<PulledImage, PullError> {
    let origin = reference.resolve_registry().to_string();
    let mirrors = opts.registries.mirrors_of(reference.registry());
    for (i, mirror) in mirrors.iter().enumerate() {
        let source = Source {
            image,
            reference: mirror_reference(mirror, reference),
            registry: mirror.host.clone(),
            mirror_of: Some(reference.registry()),
        };
        match pull_from(&source, opts, store, stored).await {
            Ok(pulled) => return Ok(pulled),
            Err(e) if e.is_digest_mismatch() => return Err(e),
            Err(e) => {
                let next = match mirrors.get(i + 1) {
                    Some(m) => format!("the next mirror {m}"),
                    None => format!("the registry {origin}"),
                };
                // The error names the image.
                log::warn!(
                    "mirror {mirror} (of {}) failed: {e}; falling back to {next}",
                    reference.registry()
                );
            }
        }
    }
    let source = Source {
        image,
        reference: reference.clone(),
        registry: origin,
        mirror_of: None,
    };
    pull_from(&source, opts, store, stored).await
}

/// Where one attempt at an image is fetched from.
struct Source<'a> {
    /// The image as the user named it: in messages and the result.
    image: &'a str,
    /// What is fetched: the image itself, or its name on a mirror.
    reference: Reference,
    /// The host talked to.
    registry: String,
    /// For a mirror, the registry it stands for.
    mirror_of: Option<&'a str>,
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mirror_of {
            Some(origin) => write!(f, "mirror {} (of {origin})", self.registry),
            None => f.write_str(&self.registry),
        }
    }
}

/// A manifest or config as fetched (or found in the store).
struct Fetched {
    bytes: Vec<u8>,
    digest: Digest,
    /// Already in the store: no need to write it.
    stored: bool,
}

async fn pull_from(
    source: &Source<'_>,
    opts: &RegistryOptions,
    store: &LayerStore,
    stored: Option<&StoredImage>,
) -> Result<PulledImage, PullError> {
    let start = Instant::now();
    let image = source.image.to_string();
    let reference = &source.reference;
    let registry = &source.registry;
    let insecure = opts.registries.is_insecure(registry);
    if opts.tls_verify && insecure {
        log::info!(
            "{registry} is insecure by b2c.insecure_registry: its TLS certificate is not \
             verified and plain HTTP is allowed"
        );
    }
    let endpoints = endpoints(opts, registry, opts.tls_verify && !insecure)?;
    log::info!("pulling {image} from {source}");
    let registry_error =
        |(f, attempts): (Failure, u32)| f.into_pull_error(&image, registry, attempts);
    let bad = |detail: String| PullError::Registry {
        image: image.clone(),
        registry: registry.clone(),
        detail,
    };

    let what = format!("{image}: fetching the manifest from {registry}");
    let auth = opts.auth_for(reference);
    let (ep, top, top_digest) = with_retries(&opts.retry, &what, || {
        fetch_manifest(&endpoints, reference, &auth)
    })
    .await
    .map_err(registry_error)?;
    let endpoint = &endpoints[ep];
    if endpoint.scheme == "http" {
        let why = if opts.tls_verify {
            "b2c.insecure_registry"
        } else {
            "--tls-verify=false"
        };
        log::info!("{registry} does not speak TLS: using plain HTTP ({why})");
    }

    if let Some(s) = stored.filter(|s| s.digest == top_digest) {
        let mut pulled = from_store(store, s.clone(), ImageSource::Registry, "");
        pulled.served_by = registry.clone();
        log::info!(
            "{image} ({}) from {source} is up to date: {} layers reused from the store, none \
             downloaded",
            short(&pulled.manifest_digest),
            pulled.stats.layers_reused
        );
        return Ok(pulled);
    }

    // An index: the manifest for this platform, from the store if it has it.
    let manifest = match serde_json::from_slice::<OciManifest>(&top) {
        Ok(OciManifest::Image(_)) => Fetched {
            digest: top_digest
                .parse()
                .map_err(|e: crate::DigestParseError| bad(e.to_string()))?,
            bytes: top.to_vec(),
            stored: false,
        },
        Ok(OciManifest::ImageIndex(index)) => {
            let Some(platform) = platform_manifest(&index.manifests, &opts.platform) else {
                let wanted = if opts.platform.is_default() {
                    format!("this machine (linux/{})", std::env::consts::ARCH)
                } else {
                    format!("{} (--platform)", opts.platform)
                };
                return Err(PullError::NotFound {
                    image,
                    registry: registry.clone(),
                    detail: format!("the image index {top_digest} has no manifest for {wanted}"),
                });
            };
            let digest: Digest = platform
                .parse()
                .map_err(|e: crate::DigestParseError| bad(e.to_string()))?;
            match store.read_blob(&digest) {
                Some(bytes) => Fetched {
                    bytes,
                    digest,
                    stored: true,
                },
                None => {
                    let by_digest = reference.clone_with_digest(platform.clone());
                    let what = format!("{image}: fetching the manifest {platform} from {registry}");
                    let (_, bytes, _) = with_retries(&opts.retry, &what, || {
                        fetch_manifest(&endpoints[ep..=ep], &by_digest, &auth)
                    })
                    .await
                    .map_err(registry_error)?;
                    Fetched {
                        bytes: bytes.to_vec(),
                        digest,
                        stored: false,
                    }
                }
            }
        }
        Err(e) => return Err(bad(format!("invalid manifest {top_digest}: {e}"))),
    };
    let (parsed, layer_list) =
        parse_manifest(&manifest.bytes).map_err(|e| bad(format!("{}: {e}", manifest.digest)))?;
    if parsed.schema_version != 2 {
        return Err(bad(format!(
            "manifest {}: unsupported schema version {}",
            manifest.digest, parsed.schema_version
        )));
    }

    let config = match store.read_blob(&layer_list.config) {
        Some(bytes) => Fetched {
            bytes,
            digest: layer_list.config.clone(),
            stored: true,
        },
        None => {
            let what = format!("{image}: fetching the config from {registry}");
            let bytes = with_retries(&opts.retry, &what, || {
                fetch_config(endpoint, reference, &parsed.config)
            })
            .await
            .map_err(registry_error)?;
            Fetched {
                bytes,
                digest: layer_list.config.clone(),
                stored: false,
            }
        }
    };
    let image_config =
        ImageConfiguration::from_reader(&config.bytes[..]).map_err(|e| PullError::BadConfig {
            image: image.clone(),
            detail: e.to_string(),
        })?;

    let mut layers = Vec::with_capacity(parsed.layers.len());
    let mut distinct = HashSet::new();
    let mut to_fetch: Vec<(Digest, &OciDescriptor)> = Vec::new();
    for desc in &parsed.layers {
        let digest = check_layer(&image, desc)?;
        layers.push(store.layer_path(&digest));
        if distinct.insert(digest.clone()) && !store.contains(&digest) {
            to_fetch.push((digest, desc));
        }
    }

    let total: u64 = to_fetch.iter().map(|(_, d)| d.size.max(0) as u64).sum();
    let progress = AtomicU64::new(0);
    let fetched = to_fetch.len();
    // Set on the first failure: the other layers stop, and `pull` returns
    // only once their unpackers have cleaned up. Nothing of this pull may
    // still be writing to the store after it returned.
    let (cancel, cancelled) = watch::channel(false);
    let mut stats = Vec::with_capacity(fetched);
    let mut failure = None;
    {
        let jobs = futures_util::stream::iter(to_fetch.into_iter().map(|(digest, desc)| {
            let job = LayerJob {
                endpoint,
                reference,
                image: &image,
                registry,
                store,
                progress: &progress,
                cancelled: cancelled.clone(),
            };
            async move { job.fetch(digest, desc, opts).await }
        }))
        .buffer_unordered(CONCURRENT_LAYERS);
        tokio::pin!(jobs);
        // Progress lines while the layers come in; no cursor tricks.
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        loop {
            tokio::select! {
                next = jobs.next() => match next {
                    None => break,
                    Some(Ok(s)) => stats.push(s),
                    Some(Err(e)) => {
                        if failure.is_none() {
                            failure = Some(e);
                            let _ = cancel.send(true);
                        }
                    }
                },
                _ = ticker.tick(), if failure.is_none() => log::info!(
                    "pulling {image}: {} / {} MB",
                    mb(progress.load(Ordering::Relaxed)),
                    mb(total)
                ),
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

    // The image is stored once its record is, after everything it names.
    let layer_digests = layer_list.layers;
    let record = Record {
        reference: image.clone(),
        digest: top_digest,
        manifest: manifest.digest.clone(),
        served_by: registry.clone(),
        pulled: SystemTime::now(),
    };
    let commit = {
        let store = store.clone();
        let layers = layer_digests.clone();
        tokio::task::spawn_blocking(move || {
            for blob in [&manifest, &config] {
                if !blob.stored {
                    store.write_blob(&blob.digest, &blob.bytes)?;
                }
            }
            store.mark_used(&layers);
            let dir = store.layers_dir();
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::at(&dir))?;
            store.write_record(&record)?;
            Ok(record.manifest)
        })
    };
    let manifest_digest = match commit.await {
        Ok(Ok(digest)) => digest,
        Ok(Err(source)) => return Err(PullError::Store { image, source }),
        Err(join) => {
            return Err(PullError::Store {
                image,
                source: StoreError {
                    path: store.root().to_path_buf(),
                    source: io::Error::other(format!("the commit task failed: {join}")),
                },
            })
        }
    };

    let secs = start.elapsed().as_secs_f64();
    let unpacked: u64 = stats.iter().map(|s| s.bytes).sum();
    let pull_stats = PullStats {
        layers_reused: distinct.len() - fetched,
        layers_downloaded: fetched,
        bytes_downloaded: total,
    };
    log::info!(
        "pulled {image} ({}) from {source}: {} layers, {} downloaded, {} reused from the store; \
         {} MB downloaded, {} MB unpacked, in {secs:.1} s ({:.1} MB/s)",
        manifest_digest.short(),
        distinct.len(),
        pull_stats.layers_downloaded,
        pull_stats.layers_reused,
        mb(total),
        mb(unpacked),
        total as f64 / 1e6 / secs.max(0.001),
    );
    Ok(PulledImage {
        reference: image,
        served_by: registry.clone(),
        manifest_digest: manifest_digest.to_string(),
        config: image_config,
        layers,
        layer_digests,
        source: ImageSource::Registry,
        stats: pull_stats,
    })
}

/// The manifest (or index) `reference` names, as served, with its digest
/// (checked by oci-client against the registry's `Docker-Content-Digest`
/// and the reference's digest, if any), and which endpoint answered.
async fn fetch_manifest(
    endpoints: &[Endpoint],
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<(usize, Bytes, String), Failure> {
    let mut failures = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        // With a fallback, ask first whether this endpoint holds a
        // conversation at all: oci-client's own auth step swallows that
        // error, and the manifest request then fails the same way again
        // (a second TLS handshake with a plain-HTTP registry). A token this
        // gets is cached for the rest of the pull.
        if i + 1 < endpoints.len() {
            let auth = ep.client.auth(reference, auth, RegistryOperation::Pull);
            if let Err(f) = ep.within(ANSWER_TIMEOUT, auth).await {
                if f.is_connection_level() {
                    log::debug!("{} via {}: {f}", reference.whole(), ep.scheme);
                    failures.push(f);
                    continue;
                }
            }
        }
        let manifest = ep
            .client
            .pull_manifest_raw(reference, auth, MANIFEST_MEDIA_TYPES);
        match ep.within(ANSWER_TIMEOUT, manifest).await {
            Ok((bytes, digest)) => return Ok((i, bytes, digest)),
            Err(f) => {
                log::debug!("{} via {}: {f}", reference.whole(), ep.scheme);
                // The next endpoint only gets a chance if this one could not
                // hold an HTTP conversation at all.
                let next = f.is_connection_level();
                failures.push(f);
                if !next {
                    break;
                }
            }
        }
    }
    // An HTTP answer (404, 401…) is the registry's word: report it. If
    // nothing answered, report a retryable failure if there is one (the
    // registry may be starting), else the first.
    let answered = failures.last().is_some_and(|f| !f.is_connection_level());
    let pick = if answered {
        failures.len() - 1
    } else {
        failures.iter().position(Failure::retryable).unwrap_or(0)
    };
    Err(failures.swap_remove(pick))
}

/// A config blob, bounded by its descriptor's size and verified.
async fn fetch_config(
    ep: &Endpoint,
    reference: &Reference,
    desc: &OciDescriptor,
) -> Result<Vec<u8>, Failure> {
    let limit = u64::try_from(desc.size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(MAX_CONFIG);
    let body = ep
        .within(ANSWER_TIMEOUT, ep.client.pull_blob_stream(reference, desc))
        .await?;
    let limit = BodyLimit {
        max_size: limit,
        timeout: ANSWER_TIMEOUT,
    };
    let announced = body.content_length;
    let out = read_bounded(body, announced, limit)
        .await
        .map_err(|e| match e {
            http::BodyError::TooLarge(max) => Failure::other(format!(
                "the config {} is larger than the {max} bytes its descriptor announces",
                desc.digest
            )),
            e => ep.explain(Failure::Http(
                e.into_failure(|io| http::Failure::from_error(&io)),
            )),
        })?;
    let expected: Digest = desc
        .digest
        .parse()
        .map_err(|e: crate::DigestParseError| Failure::other(e.to_string()))?;
    let actual = expected.of(&out);
    if actual != expected {
        return Err(Failure::Digest(format!(
            "the config {expected} hashes to {actual}"
        )));
    }
    Ok(out)
}

fn check_layer(image: &str, desc: &OciDescriptor) -> Result<Digest, PullError> {
    let unsupported = |why: &str| PullError::UnsupportedLayer {
        image: image.to_string(),
        digest: desc.digest.clone(),
        detail: why.to_string(),
    };
    if !LAYER_MEDIA_TYPES.contains(&desc.media_type.as_str()) {
        return Err(if desc.media_type.ends_with("zstd") {
            unsupported("zstd-compressed layers are not supported yet")
        } else {
            unsupported(&format!("unsupported media type {}", desc.media_type))
        });
    }
    desc.digest
        .parse::<Digest>()
        .map_err(|e| unsupported(&e.to_string()))
}

struct LayerJob<'a> {
    endpoint: &'a Endpoint,
    reference: &'a Reference,
    image: &'a str,
    registry: &'a str,
    store: &'a LayerStore,
    progress: &'a AtomicU64,
    cancelled: watch::Receiver<bool>,
}

/// Why one attempt at a layer failed.
enum AttemptError {
    Registry(Failure),
    Layer(LayerError),
    /// Another layer of the image failed.
    Cancelled,
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Registry(e) => e.fmt(f),
            AttemptError::Layer(e) => e.fmt(f),
            AttemptError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl Retryable for AttemptError {
    fn retryable(&self) -> bool {
        matches!(self, AttemptError::Registry(f) if f.retryable())
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Registry(f) => f.retry_after(),
            _ => None,
        }
    }
}

impl LayerJob<'_> {
    async fn fetch(
        &self,
        digest: Digest,
        desc: &OciDescriptor,
        opts: &RegistryOptions,
    ) -> Result<UnpackStats, PullError> {
        let what = format!(
            "{}: layer {} from {}",
            self.image,
            digest.short(),
            self.registry
        );
        let started = Instant::now();
        let stats = with_retries(&opts.retry, &what, || self.attempt(&digest, desc))
            .await
            .map_err(|(e, attempts)| match e {
                AttemptError::Registry(f) => {
                    match f.into_pull_error(self.image, self.registry, attempts) {
                        PullError::Unreachable {
                            image,
                            registry,
                            attempts,
                            detail,
                        } => PullError::Unreachable {
                            image,
                            registry,
                            attempts,
                            detail: format!("layer {digest}: {detail}"),
                        },
                        other => other,
                    }
                }
                AttemptError::Layer(source) => PullError::Layer {
                    image: self.image.to_string(),
                    digest: digest.to_string(),
                    source,
                },
                // Never reported: `pull` returns the failure that caused it.
                AttemptError::Cancelled => PullError::Registry {
                    image: self.image.to_string(),
                    registry: self.registry.to_string(),
                    detail: format!("layer {digest}: cancelled"),
                },
            })?;
        log::debug!(
            "{}: layer {} done: {} entries, {} MB in {:.1} s",
            self.image,
            digest.short(),
            stats.entries,
            mb(stats.bytes),
            started.elapsed().as_secs_f32()
        );
        Ok(stats)
    }

    async fn attempt(
        &self,
        digest: &Digest,
        desc: &OciDescriptor,
    ) -> Result<UnpackStats, AttemptError> {
        let mut cancelled = self.cancelled.clone();
        // `Range: bytes=0-` gets the whole blob as 206 from every registry
        // that supports ranges, and oci-client then leaves digest checking to
        // us instead of hashing every byte a second time. A registry that
        // ignores the header answers 200 and oci-client verifies too: slower,
        // still correct.
        let response = tokio::select! {
            r = self.endpoint.within(
                ANSWER_TIMEOUT,
                self.endpoint.client.pull_blob_stream_partial(self.reference, desc, 0, None),
            ) => r.map_err(AttemptError::Registry)?,
            _ = cancelled.wait_for(|c| *c) => return Err(AttemptError::Cancelled),
        };
        let body = match response {
            BlobResponse::Full(s) | BlobResponse::Partial(s) => s,
        };

        let (tx, rx) = body::pipe(BUFFERED_PER_LAYER);
        let store = LayerStore::clone(self.store);
        let d = digest.clone();
        let size = u64::try_from(desc.size).ok();
        let unpack = tokio::task::spawn_blocking(move || store.unpack_verified(&d, size, rx));
        let mut sent = 0u64;
        // Cancelling drops `tx`, so the unpacker stops and cleans up; it is
        // awaited below either way.
        let net = tokio::select! {
            r = pump(body, tx, self.progress, &mut sent) => {
                r.map_err(|e| AttemptError::Registry(self.endpoint.classify_io(&e)))
            }
            _ = cancelled.wait_for(|c| *c) => Err(AttemptError::Cancelled),
        };
        let unpacked = unpack.await.unwrap_or_else(|join| {
            Err(LayerError::Store {
                path: self.store.root().to_path_buf(),
                source: io::Error::other(format!("unpack task failed: {join}")),
            })
        });
        match (net, unpacked) {
            // The network failing explains whatever the unpacker then saw.
            (Err(e), _) => {
                self.progress.fetch_sub(sent, Ordering::Relaxed);
                Err(e)
            }
            (Ok(()), Ok(stats)) => Ok(stats),
            (Ok(()), Err(e)) => Err(AttemptError::Layer(e)),
        }
    }
}

/// Moves the body into the pipe; returns early (Ok) if the unpacker
/// stopped reading, since its own error says why. `tx` is dropped on return,
/// so the unpacker never waits on a dead download.
async fn pump(
    mut body: SizedStream,
    tx: BodySender,
    progress: &AtomicU64,
    sent: &mut u64,
) -> Result<(), io::Error> {
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let n = chunk.len() as u64;
        if tx.send(chunk).await.is_err() {
            return Ok(());
        }
        *sent += n;
        progress.fetch_add(n, Ordering::Relaxed);
    }
    tx.finish();
    Ok(())
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod platform_tests {
    use super::*;

    fn index() -> Vec<oci_client::manifest::ImageIndexEntry> {
        let entry = |digest: &str, arch: &str, variant: Option<&str>| {
            let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = v.into();
            }
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": 1, "platform": platform,
            })
        };
        serde_json::from_value(serde_json::json!([
            entry("sha256:amd64", "amd64", None),
            entry("sha256:armv6", "arm", Some("v6")),
            entry("sha256:armv7", "arm", Some("v7")),
            entry("sha256:arm64", "arm64", Some("v8")),
        ]))
        .unwrap()
    }

    #[test]
    fn the_asked_platform_is_taken_from_an_index() {
        let want = |arch: &str, variant: Option<&str>| b2c_cmdline::Platform {
            os: Some("linux".into()),
            architecture: Some(arch.into()),
            variant: variant.map(String::from),
        };
        let m = index();
        assert_eq!(
            platform_manifest(&m, &want("arm64", None)).as_deref(),
            Some("sha256:arm64")
        );
        assert_eq!(
            platform_manifest(&m, &want("arm", Some("v7"))).as_deref(),
            Some("sha256:armv7")
        );
        // No variant asked, or one the index lacks: the first of the arch.
        assert_eq!(
            platform_manifest(&m, &want("arm", None)).as_deref(),
            Some("sha256:armv6")
        );
        assert_eq!(
            platform_manifest(&m, &want("arm", Some("v5"))).as_deref(),
            Some("sha256:armv6")
        );
        assert_eq!(platform_manifest(&m, &want("riscv64", None)), None);
        // Nothing asked: this machine's.
        let here = platform_manifest(&m, &b2c_cmdline::Platform::default());
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(here.as_deref(), Some("sha256:amd64"));
        }
    }
}
