//! The image store: unpacked layers, manifest and config blobs and image
//! records, all content-addressed, shared by every image and reused by
//! every later boot when the store lives on a cache disk.
//!
//! Layout under the store's root (the init opens `/storage/oci` on the
//! cache partition mounted at `/storage`, or on the tmpfs mounted there
//! when there is no cache):
//!
//! ```text
//! ROOT/layers/sha256-<hex>/   an unpacked layer in overlayfs format, named
//!                             by the digest of its compressed blob
//! ROOT/blobs/sha256/<hex>     a manifest or an image config, the bytes as
//!                             the registry served them
//! ROOT/images/<hex>.json      an image record: what a reference (as pulled:
//!                             registry/repository:tag or @digest) resolved
//!                             to; <hex> is the sha256 of the reference
//! ROOT/used/sha256-<hex>      empty; its mtime is the layer's last use
//!                             (st_atime is useless on noatime mounts)
//! ```
//!
//! Everything is written under a `.tmp-…` name in the directory it belongs
//! to, synced, verified against its digest and only then renamed into
//! place; the record comes last, after the blobs and layers it names. So
//! after a power cut or a reset at any point, a name in place means good
//! content, and a temporary left behind is removed when the store is next
//! opened ([`LayerStore::new`]). An image is *stored* only when its record,
//! its manifest and config (which still hash to their digests) and every
//! one of its layer directories are present ([`LayerStore::stored_image`]);
//! anything less is treated as not stored and pulled again, downloading
//! only what is missing. Eviction ([`LayerStore::evict`]) renames a layer
//! away before deleting it, so an interrupted eviction never leaves a
//! half-deleted layer under its real name.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::confined::remove_tree;
use crate::digest::{Digest, VerifyingReader};
use crate::unpack::{unpack_layer, UnpackError, UnpackStats};

const TEMP_PREFIX: &str = ".tmp-";

/// Why a layer could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(
        "digest mismatch: the blob hashes to {actual}; the download was corrupted or the \
         registry serves bad data"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the blob is larger than the {size} bytes its descriptor announces")]
    TooLarge { size: u64 },
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("layer store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A failure to read or write the store itself (full disk, I/O error).
#[derive(Debug, thiserror::Error)]
#[error("image store {path}: {source}")]
pub struct StoreError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl StoreError {
    pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError { path, source }
    }
}

/// The store of layers, blobs and image records (layout in the module
/// documentation).
///
/// `LayerStore::new` on a tmpfs gives a store that lives for one boot; on a
/// cache disk, one that later boots reuse.
#[derive(Clone, Debug)]
pub struct LayerStore {
    root: PathBuf,
    /// The layers being fetched by a pull of this boot, shared by clones:
    /// images pulled at once often share their base layers, and a layer
    /// must be downloaded and unpacked once, not once per image.
    fetching: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name in a store directory, for `hint`.
fn temp_name(hint: &str) -> String {
    format!(
        "{TEMP_PREFIX}{}-{}-{}",
        hint.get(..19).unwrap_or(hint),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Bump when the layout of the store or what the unpacker writes changes.
const STORE_FORMAT: &str = "1";

impl LayerStore {
    /// Opens (creating it if needed) a store, and removes the temporary
    /// files and directories an interrupted run left behind. Open a given
    /// store once per boot, before any pull: the cleanup does not know
    /// about pulls in flight.
    ///
    /// The root is made (or made again) mode 0700, as podman's: an image's
    /// setuid binaries and device nodes are no business of other users.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<LayerStore> {
        let store = LayerStore {
            root: root.into(),
            fetching: Arc::default(),
        };
        store.check_format()?;
        fs::set_permissions(&store.root, fs::Permissions::from_mode(0o700))?;
        let default_blobs = store.root.join("blobs/sha256");
        for dir in [
            &store.layers_dir(),
            &default_blobs,
            &store.images_dir(),
            &store.used_dir(),
        ] {
            fs::create_dir_all(dir)?;
        }
        let mut dirs = vec![store.layers_dir(), store.images_dir(), store.used_dir()];
        for entry in fs::read_dir(store.root.join("blobs"))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        for dir in dirs {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if is_temp(&entry.file_name().to_string_lossy()) {
                    log::info!("removing the leftover {}", entry.path().display());
                    // Left for the next boot rather than failing this one.
                    if let Err(e) = remove_tree(&entry.path()) {
                        log::warn!("cannot remove {}: {e}", entry.path().display());
                    }
                }
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `root` holds something that is not a store: it exists, is
    /// not empty, and has no format stamp. [`Self::new`] would empty it,
    /// which the init may do with its own directory, but a command given a
    /// user's directory should refuse.
    pub fn is_foreign(root: &Path) -> io::Result<bool> {
        match fs::read_dir(root) {
            Ok(mut entries) => Ok(entries.next().is_some() && !root.join("FORMAT").exists()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A store written by a b2c whose layout or unpacker differs is not
    /// trusted: it is emptied, and everything is pulled again.
    fn check_format(&self) -> io::Result<()> {
        let stamp = self.root.join("FORMAT");
        let found = fs::read_to_string(&stamp).ok();
        if found.as_deref().map(str::trim) == Some(STORE_FORMAT) {
            return Ok(());
        }
        if self.root.exists() && fs::read_dir(&self.root)?.next().is_some() {
            log::warn!(
                "the image store in {} has format {}, not {STORE_FORMAT}: emptying it",
                self.root.display(),
                found.as_deref().map_or("unknown", str::trim)
            );
            for entry in fs::read_dir(&self.root)? {
                remove_tree(&entry?.path())?;
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        fs::write(&stamp, format!("{STORE_FORMAT}\n"))
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn used_dir(&self) -> PathBuf {
        self.root.join("used")
    }

    /// Where the layer with this digest is (or would be) unpacked.
    pub fn layer_path(&self, digest: &Digest) -> PathBuf {
        self.layers_dir().join(digest.file_name())
    }

    /// Whether the layer is already unpacked and verified.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.layer_path(digest).is_dir()
    }

    /// Records that these layers were just used (by an image being pulled
    /// or started): [`Self::evict`] removes the least recently used first.
    pub fn mark_used(&self, layers: &[Digest]) {
        let now = SystemTime::now();
        for digest in layers {
            let stamp = self.used_dir().join(digest.file_name());
            let touched = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&stamp)
                .and_then(|f| f.set_modified(now));
            if let Err(e) = touched {
                log::warn!(
                    "cannot record the use of layer {digest} ({}): {e}",
                    stamp.display()
                );
            }
        }
    }

    /// When the layer was last used, if that is known.
    pub(crate) fn last_used(&self, digest: &Digest) -> Option<SystemTime> {
        fs::metadata(self.used_dir().join(digest.file_name()))
            .and_then(|m| m.modified())
            .ok()
    }

    pub(crate) fn forget_use(&self, digest: &Digest) {
        let _ = fs::remove_file(self.used_dir().join(digest.file_name()));
    }

    /// Removes the use stamps of layers that are not in the store.
    pub(crate) fn remove_stale_stamps(&self) {
        let Ok(stamps) = fs::read_dir(self.used_dir()) else {
            return;
        };
        for stamp in stamps.flatten() {
            if !self.layers_dir().join(stamp.file_name()).is_dir() {
                let _ = fs::remove_file(stamp.path());
            }
        }
    }

    /// Unpacks a layer blob read from `blob` (compressed bytes, as the
    /// registry serves them), verifying it against `digest` in the same pass,
    /// and commits it as [`Self::layer_path`] only if the digest matched.
    /// `size`, when known, bounds how much is read.
    ///
    /// Blocking: call it from a blocking thread.
    pub fn unpack_verified(
        &self,
        digest: &Digest,
        size: Option<u64>,
        blob: impl Read,
    ) -> Result<UnpackStats, LayerError> {
        let final_path = self.layer_path(digest);
        let temp = self.layers_dir().join(temp_name(&digest.file_name()));
        let store_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayerError::Store { path, source }
        };
        fs::create_dir(&temp).map_err(store_err(&temp))?;

        let result = unpack_into(digest, size, blob, &temp);
        let stats = match result {
            Ok(stats) => stats,
            Err(e) => {
                if let Err(rm) = remove_tree(&temp) {
                    log::warn!("cannot remove {}: {rm}", temp.display());
                }
                return Err(e);
            }
        };

        // A layer on a cache disk must not be committed before its content
        // is: after a power cut, a directory in place means a good layer.
        if let Ok(dir) = File::open(&temp) {
            let _ = rustix::fs::syncfs(&dir);
        }
        let committed = match fs::rename(&temp, &final_path) {
            Ok(()) => Ok(stats),
            // Another pull of an image sharing this layer won the race: its
            // copy is as good as ours.
            Err(e) if final_path.is_dir() => {
                log::debug!("{} appeared meanwhile ({e})", final_path.display());
                remove_tree(&temp).map_err(store_err(&temp))?;
                Ok(stats)
            }
            Err(e) => {
                let _ = remove_tree(&temp);
                Err(store_err(&final_path)(e))
            }
        };
        if committed.is_ok() {
            self.mark_used(std::slice::from_ref(digest));
        }
        committed
    }

    /// Waits until no other pull of this boot is fetching `digest`, then
    /// holds it for the caller until the guard drops: the caller checks
    /// [`Self::contains`] again once it has it.
    pub(crate) async fn claim(&self, digest: &Digest) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    fn blob_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm_name())
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir(digest).join(digest.hex())
    }

    /// A stored blob, if it is there and still hashes to its digest. A blob
    /// that does not is removed (and so fetched again).
    pub(crate) fn read_blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        let path = self.blob_path(digest);
        match fs::read(&path) {
            Ok(data) if digest.of(&data) == *digest => Some(data),
            Ok(_) => {
                log::warn!(
                    "discarding {}: its content does not match its digest",
                    path.display()
                );
                let _ = fs::remove_file(&path);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!("cannot read {}: {e}", path.display());
                None
            }
        }
    }

    /// Stores a manifest or config; `data` must hash to `digest`.
    pub(crate) fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<(), StoreError> {
        let dir = self.blob_dir(digest);
        let actual = digest.of(data);
        if actual != *digest {
            return Err(StoreError {
                path: self.blob_path(digest),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("refusing to store content that hashes to {actual}"),
                ),
            });
        }
        fs::create_dir_all(&dir).map_err(StoreError::at(&dir))?;
        write_atomic(&dir, digest.hex(), data)
    }

    /// Free space on the store's filesystem, in bytes (what an unprivileged
    /// writer could use, so a little less than what root can).
    pub fn free_space(&self) -> Result<u64, StoreError> {
        let st =
            rustix::fs::statvfs(&self.root).map_err(|e| StoreError::at(&self.root)(e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// The free space to keep on a cache disk, for [`Self::evict`]: 10% of
    /// the filesystem, at least 2 GiB (room for the next pull and the
    /// containers' scratch data), but never more than half the filesystem.
    pub fn default_min_free(&self) -> Result<u64, StoreError> {
        let st =
            rustix::fs::statvfs(&self.root).map_err(|e| StoreError::at(&self.root)(e.into()))?;
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        Ok((total / 10).max(2 << 30).min(total / 2))
    }
}

/// Writes `name` in `dir` so that it either does not exist or is complete,
/// even across a power cut: temporary name, fsync, rename, fsync of `dir`.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), StoreError> {
    let temp = dir.join(temp_name(name));
    let result = (|| {
        let mut f = File::create_new(&temp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&temp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(StoreError::at(&dir.join(name)))
}

/// A time for console lines: `2025-03-01 14:05 UTC`.
pub(crate) fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn unpack_into(
    digest: &Digest,
    size: Option<u64>,
    blob: impl Read,
    dest: &Path,
) -> Result<UnpackStats, LayerError> {
    let mut reader = VerifyingReader::new(blob, digest, size);
    let unpacked = unpack_layer(&mut reader, dest);
    if reader.exceeded_limit() {
        return Err(LayerError::TooLarge {
            size: size.unwrap_or_default(),
        });
    }
    match unpacked {
        Ok(stats) => {
            let actual = reader.finish().map_err(UnpackError::Read)?;
            check(digest, actual)?;
            Ok(stats)
        }
        // Verify, then judge: a corrupted blob usually breaks gzip or tar,
        // or reads as some odd member, before its end. When the rest can
        // still be read, a digest mismatch is the real cause and is what
        // is reported, rather than "invalid gzip header" or a member that
        // "points outside the layer".
        Err(e) => {
            if let Ok(actual) = reader.finish() {
                check(digest, actual)?;
            }
            Err(e.into())
        }
    }
}

fn check(expected: &Digest, actual: Digest) -> Result<(), LayerError> {
    if *expected == actual {
        Ok(())
    } else {
        Err(LayerError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_private_and_a_foreign_directory_is_told_apart() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        let fresh = t.path().join("a/b/store");
        assert!(!LayerStore::is_foreign(&fresh).unwrap());
        LayerStore::new(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert!(!LayerStore::is_foreign(&fresh).unwrap());
        // An existing store made by an older b2c, 0755: tightened.
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o755)).unwrap();
        LayerStore::new(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let other = t.path().join("home");
        fs::create_dir(&other).unwrap();
        assert!(!LayerStore::is_foreign(&other).unwrap());
        fs::write(other.join("thesis.tex"), "").unwrap();
        assert!(LayerStore::is_foreign(&other).unwrap());
    }

    #[test]
    fn times_are_utc_dates() {
        let t = |s| format_time(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(0), "1970-01-01 00:00 UTC");
        assert_eq!(t(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(t(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(t(4_107_542_399), "2100-02-28 23:59 UTC");
    }

    #[test]
    fn a_store_of_another_format_is_emptied() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::new(tmp.path()).unwrap();
        let layer = store.layers_dir().join("sha256-00");
        fs::create_dir_all(&layer).unwrap();
        LayerStore::new(tmp.path()).unwrap();
        assert!(layer.exists(), "same format: kept");
        fs::write(tmp.path().join("FORMAT"), "0\n").unwrap();
        LayerStore::new(tmp.path()).unwrap();
        assert!(!layer.exists(), "other format: emptied");
        assert_eq!(
            fs::read_to_string(tmp.path().join("FORMAT")).unwrap(),
            format!("{STORE_FORMAT}\n")
        );
    }

    #[test]
    fn blobs_are_verified_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::new(tmp.path()).unwrap();
        let d: Digest = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
            .parse()
            .unwrap();
        assert!(store.write_blob(&d, b"hello world!").is_err());
        assert!(store.read_blob(&d).is_none());
        store.write_blob(&d, b"hello world").unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), b"hello world");
        fs::write(store.blob_path(&d), b"hello w0rld").unwrap();
        assert!(store.read_blob(&d).is_none());
        assert!(!store.blob_path(&d).exists(), "a corrupt blob is removed");
        let names: Vec<_> = fs::read_dir(tmp.path().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
