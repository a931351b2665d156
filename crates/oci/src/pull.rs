//! Pulling an image: manifest and config, then every layer streamed from
//! the HTTP body through the digest check and the unpacker in one pass.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, SizedStream};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use oci_spec::image::ImageConfiguration;
use tokio::sync::{mpsc, watch};

use crate::digest::Digest;
use crate::registry::{endpoints, with_retries, Endpoint, Failure, RegistryOptions, Retryable};
use crate::store::{LayerError, LayerStore};
use crate::unpack::UnpackStats;
use crate::PullError;

/// Layers of one image downloaded and unpacked at the same time.
const CONCURRENT_LAYERS: usize = 4;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Body chunks buffered between the network and the unpacker (hyper's
/// chunks are at most a few tens of KiB each).
const CHANNEL_CHUNKS: usize = 16;

/// A pulled image, ready to be assembled with [`crate::mount_overlay`].
#[derive(Debug)]
pub struct PulledImage {
    /// The reference as resolved (`docker.io/library/alpine:latest`).
    pub reference: String,
    /// The host (`host[:port]`) that served it: the registry, or one of its
    /// mirrors.
    pub served_by: String,
    /// Digest of the platform manifest that was pulled.
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    /// Unpacked layer directories, bottom → top (may repeat a directory if
    /// the manifest repeats a layer).
    pub layers: Vec<PathBuf>,
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

/// Pulls `reference` into `store`: layers already in the store are reused,
/// the others are fetched and unpacked concurrently, each verified against
/// its digest before being committed.
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
) -> Result<PulledImage, PullError> {
    opts.validate()?;
    let image = reference.whole();
    let origin = reference.resolve_registry().to_string();
    let mirrors = opts.mirrors_of(reference.registry())?;
    for (i, mirror) in mirrors.iter().enumerate() {
        let source = Source {
            image: &image,
            reference: mirror.reference(reference),
            registry: mirror.host.clone(),
            mirror_of: Some(reference.registry()),
        };
        match pull_from(&source, opts, store).await {
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
        image: &image,
        reference: reference.clone(),
        registry: origin,
        mirror_of: None,
    };
    pull_from(&source, opts, store).await
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

async fn pull_from(
    source: &Source<'_>,
    opts: &RegistryOptions,
    store: &LayerStore,
) -> Result<PulledImage, PullError> {
    let start = Instant::now();
    let image = source.image.to_string();
    let reference = &source.reference;
    let registry = &source.registry;
    let insecure = opts.is_insecure(registry);
    if opts.tls_verify && insecure {
        log::info!(
            "{registry} is insecure by b2c.insecure_registry: its TLS certificate is not \
             verified and plain HTTP is allowed"
        );
    }
    let endpoints = endpoints(opts, registry, opts.tls_verify && !insecure)?;
    log::info!("pulling {image} from {source}");

    let what = format!("{image}: fetching the manifest from {registry}");
    let (ep, manifest, manifest_digest, config_json) =
        with_retries(&opts.retry, &what, || fetch_manifest(&endpoints, reference))
            .await
            .map_err(|(f, attempts)| f.into_pull_error(&image, registry, attempts))?;
    let endpoint = &endpoints[ep];
    if endpoint.scheme == "http" {
        let why = if opts.tls_verify {
            "b2c.insecure_registry"
        } else {
            "--tls-verify=false"
        };
        log::info!("{registry} does not speak TLS: using plain HTTP ({why})");
    }

    let config = ImageConfiguration::from_reader(config_json.as_bytes()).map_err(|e| {
        PullError::BadConfig {
            image: image.clone(),
            detail: e.to_string(),
        }
    })?;

    let mut layers = Vec::with_capacity(manifest.layers.len());
    let mut to_fetch: Vec<(Digest, &OciDescriptor)> = Vec::new();
    for desc in &manifest.layers {
        let digest = check_layer(&image, desc)?;
        layers.push(store.layer_path(&digest));
        if !store.contains(&digest) && !to_fetch.iter().any(|(d, _)| *d == digest) {
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
    let secs = start.elapsed().as_secs_f64();
    let unpacked: u64 = stats.iter().map(|s| s.bytes).sum();
    log::info!(
        "pulled {image} ({}) from {source}: {} layers ({} cached), {} MB downloaded, {} MB unpacked, in {secs:.1} s ({:.1} MB/s)",
        short(&manifest_digest),
        manifest.layers.len(),
        manifest.layers.len() - fetched,
        mb(total),
        mb(unpacked),
        total as f64 / 1e6 / secs.max(0.001),
    );
    Ok(PulledImage {
        reference: image,
        served_by: registry.clone(),
        manifest_digest,
        config,
        layers,
    })
}

async fn fetch_manifest(
    endpoints: &[Endpoint],
    reference: &Reference,
) -> Result<(usize, OciImageManifest, String, String), Failure> {
    let mut failures = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        match ep
            .client
            .pull_manifest_and_config(reference, &RegistryAuth::Anonymous)
            .await
        {
            Ok((manifest, digest, config)) => return Ok((i, manifest, digest, config)),
            Err(e) => {
                let f = ep.classify(&e);
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
            r = self.endpoint.client.pull_blob_stream_partial(self.reference, desc, 0, None) => {
                r.map_err(|e| AttemptError::Registry(self.endpoint.classify(&e)))?
            }
            _ = cancelled.wait_for(|c| *c) => return Err(AttemptError::Cancelled),
        };
        let body = match response {
            BlobResponse::Full(s) | BlobResponse::Partial(s) => s,
        };

        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let store = LayerStore::clone(self.store);
        let d = digest.clone();
        let size = u64::try_from(desc.size).ok();
        let unpack = tokio::task::spawn_blocking(move || {
            store.unpack_verified(&d, size, ChannelReader::new(rx))
        });
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

/// Moves the body into the channel; returns early (Ok) if the unpacker
/// stopped reading, since its own error says why. `tx` is dropped on return,
/// so the unpacker never waits on a dead download.
async fn pump(
    mut body: SizedStream,
    tx: mpsc::Sender<Option<Bytes>>,
    progress: &AtomicU64,
    sent: &mut u64,
) -> Result<(), io::Error> {
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let n = chunk.len() as u64;
        if tx.send(Some(chunk)).await.is_err() {
            return Ok(());
        }
        *sent += n;
        progress.fetch_add(n, Ordering::Relaxed);
    }
    let _ = tx.send(None).await;
    Ok(())
}

/// The blocking end of the body channel. `None` marks the real end of the
/// body; the channel closing without it means the download died, which must
/// not look like a short but complete blob.
struct ChannelReader {
    rx: mpsc::Receiver<Option<Bytes>>,
    chunk: Bytes,
    ended: bool,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Option<Bytes>>) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Some(chunk)) => self.chunk = chunk,
                Some(None) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the layer download was interrupted",
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reader_tells_end_from_abort() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Some(Bytes::from_static(b"abc"))).unwrap();
        tx.try_send(None).unwrap();
        let mut s = String::new();
        ChannelReader::new(rx).read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Some(Bytes::from_static(b"abc"))).unwrap();
        drop(tx);
        let err = ChannelReader::new(rx).read_to_string(&mut s).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
