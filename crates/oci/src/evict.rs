//! Keeping room on the cache: least recently used layers go first.

use std::collections::HashSet;
use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::confined::remove_tree;
use crate::digest::Digest;
use crate::store::{format_time, is_temp, mb, LayerStore, StoreError};

/// What [`LayerStore::evict`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictStats {
    /// Layer directories removed, least recently used first.
    pub evicted: Vec<Digest>,
    /// Disk space they took.
    pub bytes_freed: u64,
    /// Image records removed because they needed an evicted layer (or
    /// could no longer be read).
    pub images_forgotten: Vec<String>,
    /// Free space on the store's filesystem afterwards.
    pub free_bytes: u64,
}

impl LayerStore {
    /// Makes room: while the filesystem has less than `min_free_bytes`
    /// free, removes the least recently used layer directory that is not
    /// in `keep` (the layers the current pipeline needs), logging each
    /// (`evicted layer sha256:… (N MB, last used …)`). Image records that
    /// need an evicted layer are removed too (those images are pulled
    /// again in full when next used), then the manifests and configs no
    /// record needs any more.
    ///
    /// Call it before pulling, with [`Self::default_min_free`] as the
    /// threshold (or another), and the layers of
    /// [`Self::stored_image`] for every image of the pipeline. Nothing may
    /// be pulling into this store meanwhile. Warns when even evicting
    /// everything allowed leaves less than asked.
    ///
    /// Blocking.
    pub fn evict(&self, min_free_bytes: u64, keep: &[Digest]) -> Result<EvictStats, StoreError> {
        let mut stats = EvictStats {
            free_bytes: self.free_space()?,
            ..EvictStats::default()
        };
        if stats.free_bytes >= min_free_bytes {
            log::debug!(
                "image store {}: {} MB free, {} MB wanted: nothing to evict",
                self.root().display(),
                mb(stats.free_bytes),
                mb(min_free_bytes)
            );
            return Ok(stats);
        }
        log::info!(
            "image store {}: {} MB free, less than the {} MB wanted: evicting the least \
             recently used layers",
            self.root().display(),
            mb(stats.free_bytes),
            mb(min_free_bytes)
        );
        let keep: HashSet<&Digest> = keep.iter().collect();
        let layers_dir = self.layers_dir();
        let mut candidates: Vec<(SystemTime, Digest)> = Vec::new();
        for entry in fs::read_dir(&layers_dir).map_err(StoreError::at(&layers_dir))? {
            let entry = entry.map_err(StoreError::at(&layers_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(digest) = name
                .split_once('-')
                .and_then(|(algo, hex)| format!("{algo}:{hex}").parse::<Digest>().ok())
            else {
                if !is_temp(&name) {
                    log::debug!("image store: ignoring {}", entry.path().display());
                }
                continue;
            };
            if !keep.contains(&digest) {
                // Never marked used (it should have been): oldest of all.
                let used = self.last_used(&digest).unwrap_or(UNIX_EPOCH);
                candidates.push((used, digest));
            }
        }
        candidates.sort_by_key(|(used, d)| (*used, d.file_name()));

        let start_free = stats.free_bytes;
        for (used, digest) in candidates {
            if stats.free_bytes >= min_free_bytes {
                break;
            }
            // Out of its name first: a half-removed layer must never look
            // like a layer.
            let path = self.layer_path(&digest);
            let doomed = layers_dir.join(format!(".tmp-evicted-{}", digest.file_name()));
            if let Err(e) = fs::rename(&path, &doomed) {
                log::warn!("cannot evict layer {digest} ({}): {e}", path.display());
                continue;
            }
            self.forget_use(&digest);
            let size = remove_tree(&doomed).unwrap_or_else(|e| {
                // Removed for good when the store is next opened.
                log::warn!("cannot remove {}: {e}", doomed.display());
                0
            });
            let last = if used == UNIX_EPOCH {
                "never".to_string()
            } else {
                format_time(used)
            };
            log::info!("evicted layer {digest} ({} MB, last used {last})", mb(size));
            stats.bytes_freed += size;
            stats.evicted.push(digest);
            // Some filesystems account freed blocks a little later: trust
            // the larger figure rather than evicting more than needed.
            stats.free_bytes = self
                .free_space()?
                .max(start_free.saturating_add(stats.bytes_freed));
        }

        self.forget_images(&mut stats);
        if stats.free_bytes < min_free_bytes {
            log::warn!(
                "image store {}: only {} MB free after evicting every layer the pipeline does \
                 not need ({} MB wanted)",
                self.root().display(),
                mb(stats.free_bytes),
                mb(min_free_bytes)
            );
        }
        Ok(stats)
    }

    /// Removes the records that need an evicted layer (or cannot be read),
    /// then the blobs no remaining record needs.
    fn forget_images(&self, stats: &mut EvictStats) {
        let evicted: HashSet<&Digest> = stats.evicted.iter().collect();
        let mut needed_blobs = HashSet::new();
        for (path, record) in self.records() {
            let gone = match &record {
                Some((r, m)) => m
                    .layers
                    .iter()
                    .find(|l| evicted.contains(l))
                    .map(|l| format!("{}: its layer {l} was evicted", r.reference)),
                None => Some(format!("{}: unreadable", path.display())),
            };
            match gone {
                Some(why) => {
                    if let Err(e) = fs::remove_file(&path) {
                        log::warn!("cannot remove {}: {e}", path.display());
                        continue;
                    }
                    log::info!("forgot the stored image {why}");
                    stats.images_forgotten.push(match record {
                        Some((r, _)) => r.reference,
                        None => path.display().to_string(),
                    });
                }
                None => {
                    if let Some((r, m)) = record {
                        needed_blobs.insert(self.blob_path(&r.manifest));
                        needed_blobs.insert(self.blob_path(&m.config));
                    }
                }
            }
        }
        self.remove_stale_stamps();
        let Ok(algorithms) = fs::read_dir(self.root().join("blobs")) else {
            return;
        };
        for dir in algorithms.flatten() {
            let Ok(blobs) = fs::read_dir(dir.path()) else {
                continue;
            };
            for blob in blobs.flatten() {
                let path = blob.path();
                if !is_temp(&blob.file_name().to_string_lossy()) && !needed_blobs.contains(&path) {
                    log::debug!("removing the unused blob {}", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}
