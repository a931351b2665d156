//! Read-only image stores in containers-storage's layout, as podman's
//! overlay driver writes them (`b2c.storage=additionalimagestores=…`):
//!
//! ```text
//! ROOT/overlay-images/images.json     [{id, digest, names, layer, big-data-names, …}]
//! ROOT/overlay-images/images.lock     fcntl lock of the image list
//! ROOT/overlay-images/<id>/<key>      big data: the config under its digest
//! ROOT/overlay-layers/layers.json     [{id, parent, diff-digest, flags, …}]
//! ROOT/overlay-layers/layers.lock     fcntl lock of the layer list
//! ROOT/overlay/<layer-id>/diff        the unpacked layer, overlayfs' format
//! ```
//!
//! An image found there runs from the store's own `diff` directories as
//! overlayfs lower layers: nothing is pulled or copied. The lists are read
//! under shared locks, taken as containers-storage takes them (layers,
//! then images), so that a store being written to (the gateway pulling a
//! new image) is read as a whole: an image listed has its layers listed.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use b2c_cmdline::ImageName;
use base64::Engine as _;
use oci_spec::image::ImageConfiguration;
use rustix::fs::FlockOperation;
use serde::Deserialize;
use sha2::Digest as _;

use crate::client::MAX_CONFIG;
use crate::digest::Digest;
use crate::pull::{ImageSource, PullStats, PulledImage};

/// How long a lock held by a writer is waited for before the lists are
/// read without it (they are replaced by rename, so each is whole anyway).
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Bounds of what the lists may hold: a shared store of thousands of
/// images stays well below.
const MAX_LIST: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("image store {store}: cannot read {}: {detail}", path.display())]
    Unreadable {
        store: String,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "image store {store}: {prefix} is ambiguous: the IDs of {count} images start with it \
         (give more of the ID)"
    )]
    Ambiguous {
        store: String,
        prefix: String,
        count: usize,
    },
    #[error("image store {store}: image {image}: {detail}")]
    Broken {
        store: String,
        image: String,
        detail: String,
    },
}

/// What to look an image up by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The whole reference as podman records it in `names`
    /// (`registry/repository:tag`, `…@sha256:…`).
    pub name: Option<String>,
    /// An image ID, whole (64 hex digits) or a prefix of one.
    pub id: Option<String>,
}

impl Lookup {
    /// How podman finds the image a container names in its stores: a
    /// registry reference by its whole name, an ID by ID, and a name
    /// made of hex digits only also as a short ID (`written` is the image
    /// as the option wrote it).
    pub fn of(name: &ImageName, written: &str) -> Lookup {
        match name {
            ImageName::Id(id) => Lookup {
                name: None,
                id: Some(id.clone()),
            },
            ImageName::Registry(r) => Lookup {
                name: Some(r.to_string()),
                id: b2c_cmdline::could_be_short_id(written).then(|| written.to_ascii_lowercase()),
            },
        }
    }
}

/// The first of `stores` that has the image. A store that cannot be read
/// does not hide the others: its error comes back only when no other
/// store has the image.
pub fn find_in_stores(
    stores: &[ContainersStore],
    lookup: &Lookup,
) -> Result<Option<PulledImage>, ImageStoreError> {
    let mut first_error = None;
    for store in stores {
        match store.find(lookup) {
            Ok(Some(image)) => return Ok(Some(image)),
            Ok(None) => {}
            Err(e) => {
                log::debug!("{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(None), Err)
}

/// An image store of containers-storage, mounted at `root`.
#[derive(Debug, Clone)]
pub struct ContainersStore {
    name: String,
    root: PathBuf,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    layer: Option<String>,
    #[serde(default, rename = "big-data-names")]
    big_data_names: Vec<String>,
}

#[derive(Deserialize)]
struct LayerEntry {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default, rename = "diff-digest")]
    diff_digest: Option<String>,
    #[serde(default)]
    flags: HashMap<String, serde_json::Value>,
}

/// containers-storage's file name of a big-data key (its
/// `makeBigDataBaseName`): the key itself when it is made of `[0-9a-z.]`,
/// else `=` and its base64. Its quirk is kept: a key whose only other
/// character is its last one is used as it is.
pub(crate) fn big_data_file_name(key: &str) -> String {
    let mut chars = key.chars();
    for c in chars.by_ref() {
        if c.len_utf8() != 1 || !(c == '.' || c.is_ascii_digit() || c.is_ascii_lowercase()) {
            break;
        }
    }
    if chars.as_str().is_empty() {
        key.to_string()
    } else {
        format!("={}", base64::engine::general_purpose::STANDARD.encode(key))
    }
}

/// A shared fcntl lock on a containers-storage lock file, released when
/// dropped (the file is closed).
struct SharedLock {
    _file: Option<File>,
}

fn shared_lock(path: &Path) -> SharedLock {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            log::debug!("{}: {e}: reading without its lock", path.display());
            return SharedLock { _file: None };
        }
    };
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => return SharedLock { _file: Some(file) },
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::ACCESS)
                if Instant::now() < deadline =>
            {
                // Polled, as containers-storage polls: a blocking wait
                // could not be bounded.
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                log::warn!(
                    "{}: cannot take a shared lock ({e}): reading the store without it",
                    path.display()
                );
                return SharedLock { _file: None };
            }
        }
    }
}

impl ContainersStore {
    /// The store `name` (for messages: the `b2c.filesystem` it is on) at
    /// `root`, podman's `--root`.
    pub fn new(name: impl Into<String>, root: impl Into<PathBuf>) -> ContainersStore {
        ContainersStore {
            name: name.into(),
            root: root.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn unreadable(&self, path: &Path, detail: impl ToString) -> ImageStoreError {
        ImageStoreError::Unreadable {
            store: self.name.clone(),
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }

    fn read_bounded(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>, ImageStoreError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.unreadable(path, e)),
        };
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.unreadable(path, e))?;
        if bytes.len() as u64 > max {
            return Err(self.unreadable(path, format!("larger than {max} bytes")));
        }
        Ok(Some(bytes))
    }

    fn read_list<T: for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
    ) -> Result<Vec<T>, ImageStoreError> {
        match self.read_bounded(path, MAX_LIST)? {
            None => Ok(Vec::new()),
            Some(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.unreadable(path, e)),
        }
    }

    /// The image and layer lists, read under shared locks.
    fn lists(&self) -> Result<(Vec<ImageEntry>, HashMap<String, LayerEntry>), ImageStoreError> {
        let images_dir = self.root.join("overlay-images");
        let layers_dir = self.root.join("overlay-layers");
        if !images_dir.is_dir() {
            return Err(self.unreadable(
                &images_dir,
                "missing: not an image store of podman's overlay driver",
            ));
        }
        // containers-storage's order: layers, then images.
        let _layers_lock = shared_lock(&layers_dir.join("layers.lock"));
        let _images_lock = shared_lock(&images_dir.join("images.lock"));
        let images: Vec<ImageEntry> = self.read_list(&images_dir.join("images.json"))?;
        let mut layers = HashMap::new();
        for list in ["layers.json", "volatile-layers.json"] {
            for layer in self.read_list::<LayerEntry>(&layers_dir.join(list))? {
                layers.insert(layer.id.clone(), layer);
            }
        }
        Ok((images, layers))
    }

    /// The image `lookup` names, ready to run, or `None` when this store
    /// has no such image. A name wins over an ID; an ID prefix must be
    /// unique. An image whose layers or config are missing is an error
    /// (the store is damaged, or still being written).
    pub fn find(&self, lookup: &Lookup) -> Result<Option<PulledImage>, ImageStoreError> {
        let (images, layers) = self.lists()?;
        let by_name = lookup.name.as_deref().and_then(|name| {
            images
                .iter()
                .find(|i| i.names.iter().any(|n| n == name) || pinned_match(i, name))
        });
        let image = match (by_name, lookup.id.as_deref()) {
            (Some(image), _) => image,
            (None, Some(id)) => {
                let id = id
                    .strip_prefix("sha256:")
                    .unwrap_or(id)
                    .to_ascii_lowercase();
                let found: Vec<&ImageEntry> = match images.iter().find(|i| i.id == id) {
                    Some(exact) => vec![exact],
                    None => images.iter().filter(|i| i.id.starts_with(&id)).collect(),
                };
                match found[..] {
                    [] => return Ok(None),
                    [one] => one,
                    _ => {
                        return Err(ImageStoreError::Ambiguous {
                            store: self.name.clone(),
                            prefix: id,
                            count: found.len(),
                        })
                    }
                }
            }
            (None, None) => return Ok(None),
        };
        self.assemble(image, &layers).map(Some)
    }

    fn assemble(
        &self,
        image: &ImageEntry,
        layers: &HashMap<String, LayerEntry>,
    ) -> Result<PulledImage, ImageStoreError> {
        let shown = image
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone());
        let broken = |detail: String| ImageStoreError::Broken {
            store: self.name.clone(),
            image: shown.clone(),
            detail,
        };
        // Top → bottom through the parents, then turned over.
        let mut chain = Vec::new();
        let mut next = image.layer.clone().filter(|l| !l.is_empty());
        while let Some(id) = next {
            let layer = layers
                .get(&id)
                .ok_or_else(|| broken(format!("its layer {id} is not in layers.json")))?;
            if layer.flags.get("incomplete") == Some(&serde_json::Value::Bool(true)) {
                return Err(broken(format!("its layer {id} is still being written")));
            }
            if chain.len() > layers.len() {
                return Err(broken("its layers' parents make a loop".into()));
            }
            chain.push(layer);
            next = layer.parent.clone().filter(|p| !p.is_empty());
        }
        if chain.is_empty() {
            return Err(broken("it has no layer".into()));
        }
        chain.reverse();
        let mut dirs = Vec::with_capacity(chain.len());
        let mut digests = Vec::with_capacity(chain.len());
        for layer in &chain {
            if !valid_id(&layer.id) {
                return Err(broken(format!(
                    "layer ID {:?} is not 64 hex digits",
                    layer.id
                )));
            }
            let diff = self.root.join("overlay").join(&layer.id).join("diff");
            if !diff.is_dir() {
                return Err(broken(format!("{} is missing", diff.display())));
            }
            dirs.push(diff);
            let digest: Digest = layer
                .diff_digest
                .as_deref()
                .ok_or_else(|| broken(format!("layer {} has no diff-digest", layer.id)))?
                .parse()
                .map_err(|e| broken(format!("layer {}: {e}", layer.id)))?;
            digests.push(digest);
        }
        let config = self.config(image).map_err(broken)?;
        log::info!(
            "using {shown} ({}) from image store {}: {} layers, nothing downloaded",
            &image.id[..12.min(image.id.len())],
            self.name,
            dirs.len()
        );
        Ok(PulledImage {
            reference: shown,
            served_by: format!("image store {}", self.name),
            manifest_digest: image.digest.clone().unwrap_or_default(),
            config,
            stats: PullStats {
                layers_reused: dirs.len(),
                ..PullStats::default()
            },
            layers: dirs,
            layer_digests: digests,
            source: ImageSource::ImageStore,
        })
    }

    /// The image's config: the big data stored under its digest (the
    /// image ID, for images podman pulled), checked against it.
    fn config(&self, image: &ImageEntry) -> Result<ImageConfiguration, String> {
        if !valid_id(&image.id) {
            return Err(format!("image ID {:?} is not 64 hex digits", image.id));
        }
        let id_key = format!("sha256:{}", image.id);
        let key = if image.big_data_names.contains(&id_key) {
            id_key
        } else {
            image
                .big_data_names
                .iter()
                .find(|k| k.starts_with("sha256:"))
                .cloned()
                .ok_or("no config among its big data")?
        };
        let path = self
            .root
            .join("overlay-images")
            .join(&image.id)
            .join(big_data_file_name(&key));
        let bytes = self
            .read_bounded(&path, MAX_CONFIG)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("its config {} is missing", path.display()))?;
        let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        if actual != key {
            return Err(format!(
                "its config {} does not match its digest {key}",
                path.display()
            ));
        }
        ImageConfiguration::from_reader(&bytes[..])
            .map_err(|e| format!("its config is invalid: {e}"))
    }
}

/// `registry/repository@sha256:…` against an image with that digest and a
/// name in that repository (podman records a pull by digest this way too).
fn pinned_match(image: &ImageEntry, name: &str) -> bool {
    let Some((repo, digest)) = name.split_once('@') else {
        return false;
    };
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    image.digest.as_deref() == Some(digest)
        && image.names.iter().any(|n| {
            n.strip_prefix(repo)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
        })
}

/// Layer and image IDs are 64 lowercase hex digits: nothing else may
/// become a path.
fn valid_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_names_as_containers_storage_writes_them() {
        assert_eq!(big_data_file_name("manifest"), "manifest");
        assert_eq!(
            big_data_file_name("sha256:ab"),
            format!(
                "={}",
                base64::engine::general_purpose::STANDARD.encode("sha256:ab")
            )
        );
        assert_eq!(
            big_data_file_name("manifest-sha256:00"),
            "=bWFuaWZlc3Qtc2hhMjU2OjAw"
        );
        // The quirk: a disallowed last character alone keeps the key.
        assert_eq!(big_data_file_name("abc:"), "abc:");
    }

    fn entry(id: &str, digest: &str, names: &[&str]) -> ImageEntry {
        ImageEntry {
            id: id.into(),
            digest: Some(digest.into()),
            names: names.iter().map(|n| n.to_string()).collect(),
            layer: None,
            big_data_names: Vec::new(),
        }
    }

    #[test]
    fn pinned_names() {
        let d = format!("sha256:{}", "1".repeat(64));
        let i = entry(&"a".repeat(64), &d, &["reg:5000/b2c/busybox:latest"]);
        assert!(pinned_match(&i, &format!("reg:5000/b2c/busybox@{d}")));
        assert!(pinned_match(&i, &format!("reg:5000/b2c/busybox:v1@{d}")));
        assert!(!pinned_match(&i, &format!("reg:5000/b2c/other@{d}")));
        assert!(!pinned_match(&i, "reg:5000/b2c/busybox:latest"));
        let other = format!("sha256:{}", "2".repeat(64));
        assert!(!pinned_match(&i, &format!("reg:5000/b2c/busybox@{other}")));
    }

    #[test]
    fn ids() {
        assert!(valid_id(&"0a".repeat(32)));
        assert!(!valid_id(&"0A".repeat(32)));
        assert!(!valid_id("../../etc"));
    }
}
