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

use b2c_net::http::{self, with_retries, Progress, RetryPolicy};
use b2c_system::log::printable;
use futures_util::StreamExt;
use oci_spec::distribution::Reference;
use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, Os};
use tokio::sync::watch;

use crate::body::{self, BodySender};
use crate::client::{endpoints, Endpoint, Manifest, MAX_CONFIG};
use crate::digest::Digest;
use crate::images::{parse_manifest, Record, StoredImage};
use crate::registry::{mirror_reference, Failure, RegistryOptions};
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
    /// A read-only image store of containers-storage
    /// ([`crate::ContainersStore`]): its layers are used where they are.
    ImageStore,
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
    // zstd, and zstd:chunked (the same type, with a table of contents in
    // skippable frames). Docker's own name for it is containerd's.
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
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
    // A mirror is not waited for as long as the registry itself: after 3
    // attempts at most, the next source is tried.
    let mirror_opts = RegistryOptions {
        retry: RetryPolicy {
            attempts: opts.retry.attempts.min(3),
            ..opts.retry.clone()
        },
        ..opts.clone()
    };
    for (i, mirror) in mirrors.iter().enumerate() {
        let source = Source {
            image,
            reference: mirror_reference(mirror, reference),
            registry: mirror.host.clone(),
            mirror_of: Some(reference.registry()),
        };
        match pull_from(&source, &mirror_opts, store, stored).await {
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
    let endpoints = endpoints(
        opts,
        registry,
        reference.repository(),
        opts.tls_verify && !insecure,
    )?;
    log::info!("pulling {image} from {source}");
    let registry_error =
        |(f, attempts): (Failure, u32)| f.into_pull_error(&image, registry, attempts);
    let bad = |detail: String| PullError::Registry {
        image: image.clone(),
        registry: registry.clone(),
        detail,
    };

    let what = format!("{image}: fetching the manifest from {registry}");
    let (ep, top) = with_retries(&opts.retry, &what, || fetch_manifest(&endpoints, reference))
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
    let top_digest = top.digest.to_string();

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
    let manifest = if top.is_index() {
        let index: ImageIndex = serde_json::from_slice(&top.bytes)
            .map_err(|e| bad(format!("invalid image index {top_digest}: {}", shown(&e))))?;
        let Some(digest) = platform_manifest(&index, &opts.platform) else {
            let wanted = if opts.platform.is_default() {
                format!("this machine (linux/{})", Arch::default())
            } else {
                format!("{} (--platform)", opts.platform)
            };
            return Err(PullError::NotFound {
                image,
                registry: registry.clone(),
                detail: format!("the image index {top_digest} has no manifest for {wanted}"),
            });
        };
        let digest = digest.map_err(|e| bad(e.to_string()))?;
        match store.read_blob(&digest) {
            Some(bytes) => Fetched {
                bytes,
                digest,
                stored: true,
            },
            None => {
                let by_digest = reference.clone_with_digest(digest.to_string());
                let what = format!("{image}: fetching the manifest {digest} from {registry}");
                let (_, m) = with_retries(&opts.retry, &what, || {
                    fetch_manifest(&endpoints[ep..=ep], &by_digest)
                })
                .await
                .map_err(registry_error)?;
                if m.is_index() {
                    return Err(bad(format!("the index {top_digest} names another index")));
                }
                Fetched {
                    bytes: m.bytes,
                    digest,
                    stored: false,
                }
            }
        }
    } else {
        Fetched {
            bytes: top.bytes,
            digest: top.digest,
            stored: false,
        }
    };
    let (parsed, layer_list) =
        parse_manifest(&manifest.bytes).map_err(|e| bad(format!("{}: {e}", manifest.digest)))?;
    if parsed.schema_version() != 2 {
        return Err(bad(format!(
            "manifest {}: unsupported schema version {}",
            manifest.digest,
            parsed.schema_version()
        )));
    }

    let mut layers = Vec::with_capacity(parsed.layers().len());
    let mut distinct = HashSet::new();
    let mut to_fetch: Vec<(Digest, u64)> = Vec::new();
    for desc in parsed.layers() {
        let digest = check_layer(&image, desc)?;
        layers.push(store.layer_path(&digest));
        if distinct.insert(digest.clone()) && !store.contains(&digest) {
            to_fetch.push((digest, desc.size()));
        }
    }

    let total: u64 = to_fetch.iter().map(|(_, size)| size).sum();
    let progress = AtomicU64::new(0);
    let fetched = to_fetch.len();
    // Set on the first failure (of a layer, or of the config): the other
    // layers stop, and `pull` returns only once their unpackers have
    // cleaned up. Nothing of this pull may still be writing to the store
    // after it returned.
    let (cancel, cancelled) = watch::channel(false);

    // The config is asked for while the layers come: one round trip less
    // before the first layer (~0.05 s under TCG).
    let config_fetch = async {
        let fetched = match store.read_blob(&layer_list.config) {
            Some(bytes) => Ok(Fetched {
                bytes,
                digest: layer_list.config.clone(),
                stored: true,
            }),
            None => {
                let size = parsed.config().size();
                if size > MAX_CONFIG {
                    Err(bad(format!(
                        "the config {} is {size} bytes, more than the {MAX_CONFIG} b2c accepts",
                        layer_list.config
                    )))
                } else {
                    let what = format!("{image}: fetching the config from {registry}");
                    // A descriptor that says 0 is wrong; the digest check then
                    // says so.
                    with_retries(&opts.retry, &what, || {
                        endpoint.small_blob(&layer_list.config, size.max(1))
                    })
                    .await
                    .map(|bytes| Fetched {
                        bytes,
                        digest: layer_list.config.clone(),
                        stored: false,
                    })
                    .map_err(registry_error)
                }
            }
        };
        if fetched.is_err() {
            let _ = cancel.send(true);
        }
        fetched
    };
    let layers_fetch = async {
        let mut stats = Vec::with_capacity(fetched);
        let mut failure = None;
        {
            let jobs = futures_util::stream::iter(to_fetch.into_iter().map(|(digest, size)| {
                let job = LayerJob {
                    endpoint,
                    image: &image,
                    registry,
                    store,
                    progress: &progress,
                    cancelled: cancelled.clone(),
                };
                async move { job.fetch(digest, size, opts).await }
            }))
            .buffer_unordered(CONCURRENT_LAYERS);
            tokio::pin!(jobs);
            // Progress lines while the layers come in; no cursor tricks.
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + PROGRESS_EVERY,
                PROGRESS_EVERY,
            );
            loop {
                tokio::select! {
                    next = jobs.next() => match next {
                        None => break,
                        Some(Ok(Some(s))) => stats.push(s),
                        Some(Ok(None)) => {}
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
        match failure {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    };
    let (config, stats) = tokio::join!(config_fetch, layers_fetch);
    // A failed config stopped the layers: its error is the one to report.
    let config = config?;
    let stats = stats?;
    let image_config =
        ImageConfiguration::from_reader(&config.bytes[..]).map_err(|e| PullError::BadConfig {
            image: image.clone(),
            detail: shown(&e),
        })?;

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
    let unpacked: u64 = stats.iter().map(|(s, _)| s.bytes).sum();
    // Layers another pull of this boot brought meanwhile count as reused.
    let downloaded: u64 = stats.iter().map(|(_, size)| size).sum();
    let pull_stats = PullStats {
        layers_reused: distinct.len() - stats.len(),
        layers_downloaded: stats.len(),
        bytes_downloaded: downloaded,
    };
    log::info!(
        "pulled {image} ({}) from {source}: {} layers, {} downloaded, {} reused from the store; \
         {} MB downloaded, {} MB unpacked, in {secs:.1} s ({:.1} MB/s)",
        manifest_digest.short(),
        distinct.len(),
        pull_stats.layers_downloaded,
        pull_stats.layers_reused,
        mb(downloaded),
        mb(unpacked),
        downloaded as f64 / 1e6 / secs.max(0.001),
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

/// A parse error of what a registry sent, fit for a message.
fn shown(e: &impl fmt::Display) -> String {
    printable(&e.to_string(), 300).into_owned()
}

/// The digest of the manifest of an image index for `wanted` (podman's
/// `--platform`, `--arch`, `--os`, `--variant`), this machine's (linux and
/// this CPU architecture) when nothing was asked: the OS and the
/// architecture must match; among those, the asked variant is preferred,
/// else the first one is taken.
pub(crate) fn platform_manifest(
    index: &ImageIndex,
    wanted: &b2c_cmdline::Platform,
) -> Option<Result<Digest, crate::DigestParseError>> {
    let os = wanted
        .os
        .clone()
        .unwrap_or_else(|| Os::default().to_string());
    let arch = wanted
        .architecture
        .clone()
        .unwrap_or_else(|| Arch::default().to_string());
    let matching: Vec<_> = index
        .manifests()
        .iter()
        .filter(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
        })
        .collect();
    matching
        .iter()
        .find(|m| {
            wanted.variant.is_some()
                && m.platform().as_ref().and_then(|p| p.variant().as_ref())
                    == wanted.variant.as_ref()
        })
        .or(matching.first())
        .map(|m| m.digest().to_string().parse())
}

/// The manifest (or index) `reference` names, and which endpoint served
/// it. The first endpoint that holds an HTTP conversation at all (its
/// `GET /v2/` gets an answer) is the one used.
async fn fetch_manifest(
    endpoints: &[Endpoint],
    reference: &Reference,
) -> Result<(usize, Manifest), Failure> {
    // The later endpoints are asked while the first is: without
    // verification, waiting for HTTPS to fail before trying plain HTTP cost
    // a round of TLS (~0.1 s under TCG) on every pull from a plain-HTTP
    // registry. The first is preferred, and once it answers the others are
    // not waited for (a filtered port 80 must not hold up HTTPS), unless a
    // later one served the manifest already: a port that answers plain
    // HTTP does not also speak TLS, so HTTPS can only fail there.
    // Each is asked without credentials (Endpoint::probe): only the one
    // used gets them.
    let (first, rest) = endpoints.split_first().expect("at least one endpoint");
    let mut rest_pings = std::pin::pin!(futures_util::future::join_all(
        rest.iter().map(|ep| ep.probe(reference))
    ));
    let mut rest_answered = None;
    let mut first_ping = {
        let mut ping = std::pin::pin!(first.probe(reference));
        let answer = loop {
            tokio::select! {
                biased;
                answer = &mut ping => break answer,
                mut answers = &mut rest_pings, if rest_answered.is_none() => {
                    if let Some(i) = answers.iter().position(|a| matches!(a, Ok(Some(_)))) {
                        if let Ok(Some(manifest)) = answers.swap_remove(i) {
                            return Ok((i + 1, manifest));
                        }
                    }
                    rest_answered = Some(answers);
                }
            }
        };
        Some(answer)
    };
    let mut rest_answers = None;
    let mut failures = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let ping = match first_ping.take() {
            Some(answer) => answer,
            None => {
                if rest_answers.is_none() {
                    let answers = match rest_answered.take() {
                        Some(answers) => answers,
                        None => rest_pings.as_mut().await,
                    };
                    rest_answers = Some(answers.into_iter());
                }
                rest_answers
                    .as_mut()
                    .and_then(Iterator::next)
                    .expect("an answer per endpoint")
            }
        };
        let answer = match ping {
            Ok(Some(manifest)) => Ok(manifest),
            // It asks for credentials.
            Ok(None) => ep.manifest(reference).await,
            Err(f) => Err(f),
        };
        match answer {
            Ok(manifest) => return Ok((i, manifest)),
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

pub(crate) fn check_layer(image: &str, desc: &Descriptor) -> Result<Digest, PullError> {
    let media_type = desc.media_type().to_string();
    let unsupported = |why: &str| PullError::UnsupportedLayer {
        image: image.to_string(),
        digest: printable(desc.digest().as_ref(), 150).into_owned(),
        detail: why.to_string(),
    };
    if !LAYER_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(unsupported(&format!(
            "unsupported media type {}",
            printable(&media_type, 150)
        )));
    }
    desc.digest()
        .to_string()
        .parse::<Digest>()
        .map_err(|e| unsupported(&shown(&e)))
}

struct LayerJob<'a> {
    endpoint: &'a Endpoint,
    image: &'a str,
    registry: &'a str,
    store: &'a LayerStore,
    progress: &'a AtomicU64,
    cancelled: watch::Receiver<bool>,
}

impl LayerJob<'_> {
    /// Downloads the layer into its unpacker, which lives for all the
    /// attempts: a download cut short (a drop, a stall, a registry
    /// restarting) resumes where it stopped, with `Range`.
    async fn fetch(
        &self,
        digest: Digest,
        size: u64,
        opts: &RegistryOptions,
    ) -> Result<Option<(UnpackStats, u64)>, PullError> {
        let what = format!(
            "{}: layer {} from {}",
            self.image,
            digest.short(),
            self.registry
        );
        let mut cancelled = self.cancelled.clone();
        let _claim = tokio::select! {
            claim = self.store.claim(&digest) => claim,
            _ = cancelled.wait_for(|c| *c) => return Err(self.cancelled_error(&digest)),
        };
        if self.store.contains(&digest) {
            log::info!(
                "{}: layer {} was brought by another pull meanwhile",
                self.image,
                digest.short()
            );
            return Ok(None);
        }
        let started = Instant::now();
        let (tx, rx) = body::pipe(BUFFERED_PER_LAYER);
        let unpack = {
            let store = LayerStore::clone(self.store);
            let d = digest.clone();
            tokio::task::spawn_blocking(move || store.unpack_verified(&d, Some(size), rx))
        };
        let sent = AtomicU64::new(0);
        let net = tokio::select! {
            r = with_retries(&opts.retry, &what, || {
                self.download(&digest, size, &tx, &sent, opts.min_progress)
            }) => r.map(Some),
            _ = cancelled.wait_for(|c| *c) => Ok(None),
        };
        // Dropping the sender without `finish` tells the unpacker the
        // download died: it stops and cleans up. It is awaited either way.
        match net {
            Ok(Some(())) => tx.finish(),
            _ => drop(tx),
        }
        let unpacked = unpack.await.unwrap_or_else(|join| {
            Err(LayerError::Store {
                path: self.store.root().to_path_buf(),
                source: io::Error::other(format!("unpack task failed: {join}")),
            })
        });
        let stats = match (net, unpacked) {
            // The network failing explains whatever the unpacker then saw.
            (Err((f, attempts)), _) => {
                return Err(
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
                    },
                )
            }
            // Never reported: `pull` returns the failure that caused it.
            (Ok(None), _) => return Err(self.cancelled_error(&digest)),
            (Ok(Some(())), Ok(stats)) => stats,
            (Ok(Some(())), Err(source)) => {
                return Err(PullError::Layer {
                    image: self.image.to_string(),
                    digest: digest.to_string(),
                    source,
                })
            }
        };
        // One line per layer, with its own time: where a slow pull's time
        // went (`b2c plot` draws each layer from it).
        log::info!(
            "{}: layer {} done: {} MB downloaded, {} MB unpacked, {} entries, in {:.3} s",
            self.image,
            digest.short(),
            mb(size),
            mb(stats.bytes),
            stats.entries,
            started.elapsed().as_secs_f64()
        );
        Ok(Some((stats, size)))
    }

    /// Never reported: `pull` returns the failure that caused it.
    fn cancelled_error(&self, digest: &Digest) -> PullError {
        PullError::Registry {
            image: self.image.to_string(),
            registry: self.registry.to_string(),
            detail: format!("layer {digest}: cancelled"),
        }
    }

    /// One attempt: the blob from the first byte the unpacker lacks into
    /// the pipe. Returns early (Ok) if the unpacker stopped reading, since
    /// its own error says why.
    async fn download(
        &self,
        digest: &Digest,
        size: u64,
        tx: &BodySender,
        sent: &AtomicU64,
        rule: http::MinProgress,
    ) -> Result<(), Failure> {
        let offset = sent.load(Ordering::Relaxed);
        if offset >= size {
            // All there: more would be too much, which the unpacker judges.
            return Ok(());
        }
        let (mut body, start) = self.endpoint.blob(digest, offset).await?;
        if offset > 0 {
            log::info!(
                "{}: resuming layer {} at {} of {} MB{}",
                self.image,
                digest.short(),
                mb(offset),
                mb(size),
                if start < offset {
                    " (the registry ignores Range: skipping what was received)"
                } else {
                    ""
                }
            );
        }
        let mut skip = offset - start;
        let mut watch = Progress::new(rule);
        loop {
            let chunk = match watch.read(body.chunk()).await? {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(self
                        .endpoint
                        .explain(Failure::Http(http::Failure::from_error(&e.without_url()))))
                }
            };
            let chunk = if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                skip -= n;
                chunk.slice(n as usize..)
            } else {
                chunk
            };
            if chunk.is_empty() {
                continue;
            }
            let n = chunk.len() as u64;
            let waited = Instant::now();
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
            watch.pause(waited.elapsed());
            sent.fetch_add(n, Ordering::Relaxed);
            self.progress.fetch_add(n, Ordering::Relaxed);
        }
        let got = sent.load(Ordering::Relaxed);
        if got < size {
            // A body without a length that ended early: resumed next time.
            return Err(Failure::Http(http::Failure::new(
                http::FailureKind::Transport,
                format!("the download ended after {got} of {size} bytes"),
            )));
        }
        Ok(())
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod platform_tests {
    use super::*;

    fn digest(name: &str) -> String {
        Digest::sha256_of(name.as_bytes()).to_string()
    }

    fn index() -> ImageIndex {
        let entry = |name: &str, arch: &str, variant: Option<&str>| {
            let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = v.into();
            }
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(name), "size": 1, "platform": platform,
            })
        };
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                entry("amd64", "amd64", None),
                entry("armv6", "arm", Some("v6")),
                entry("armv7", "arm", Some("v7")),
                entry("arm64", "arm64", Some("v8")),
            ]
        }))
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
        let pick =
            |p: &b2c_cmdline::Platform| platform_manifest(&m, p).map(|d| d.unwrap().to_string());
        assert_eq!(pick(&want("arm64", None)), Some(digest("arm64")));
        assert_eq!(pick(&want("arm", Some("v7"))), Some(digest("armv7")));
        // No variant asked, or one the index lacks: the first of the arch.
        assert_eq!(pick(&want("arm", None)), Some(digest("armv6")));
        assert_eq!(pick(&want("arm", Some("v5"))), Some(digest("armv6")));
        assert_eq!(pick(&want("riscv64", None)), None);
        // Nothing asked: this machine's.
        let here = pick(&b2c_cmdline::Platform::default());
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(here, Some(digest("amd64")));
        }
    }
}
