//! The layer store: one directory per layer digest, each an unpacked layer
//! in overlayfs format, reusable by any image and any later boot.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Where unpacked layers live: `<root>/<algorithm>-<hex>/`.
///
/// A layer directory exists only once its content was verified: layers are
/// unpacked into `<root>/.tmp-…` and renamed into place after the digest
/// check, so a directory found here can be used as is.
#[derive(Clone, Debug)]
pub struct LayerStore {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LayerStore {
    /// Opens (creating it if needed) a store, and removes the temporary
    /// directories an interrupted run left behind. Open a given store once
    /// per boot, before any pull: the cleanup does not know about unpacks in
    /// flight.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<LayerStore> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                log::info!("removing the leftover {}", entry.path().display());
                remove_tree(&entry.path())?;
            }
        }
        Ok(LayerStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the layer with this digest is (or would be) unpacked.
    pub fn layer_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.file_name())
    }

    /// Whether the layer is already unpacked and verified.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.layer_path(digest).is_dir()
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
        let temp = self.root.join(format!(
            "{TEMP_PREFIX}{}-{}-{}",
            &digest.file_name()[..19],
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let store_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayerError::Store { path, source }
        };
        std::fs::create_dir(&temp).map_err(store_err(&temp))?;

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
        if let Ok(dir) = std::fs::File::open(&temp) {
            let _ = rustix::fs::syncfs(&dir);
        }
        match std::fs::rename(&temp, &final_path) {
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
        }
    }
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
        // A corrupted blob usually breaks gzip or tar before the end: when
        // the rest can still be read, say "digest mismatch", which is the
        // real cause, rather than "invalid gzip header".
        Err(UnpackError::Read(e)) => match reader.finish() {
            Ok(actual) => {
                check(digest, actual)?;
                Err(UnpackError::Read(e).into())
            }
            Err(_) => Err(UnpackError::Read(e).into()),
        },
        Err(e) => Err(e.into()),
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
