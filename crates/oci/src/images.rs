//! Image records: what a reference resolved to when it was last pulled, so
//! that a later boot can tell "unchanged" from "changed" with one manifest
//! request, or use the image without any.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_spec::distribution::Reference;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde_json::json;
use sha2::Digest as _;

use crate::digest::Digest;
use crate::store::{write_atomic, LayerStore, StoreError};

/// An image found complete in the store: its record, its manifest and
/// config (verified against their digests) and every layer directory.
#[derive(Clone, Debug)]
pub struct StoredImage {
    /// The reference as pulled (`registry/repository:tag` or `…@digest`).
    pub reference: String,
    /// What the reference resolved to on the registry: the manifest's
    /// digest, or the image index's for a multi-platform image.
    pub digest: String,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    pub config: ImageConfiguration,
    /// Bottom → top, as in the manifest (a repeated layer is repeated).
    pub layers: Vec<Digest>,
    /// The registry or mirror it was pulled from.
    pub served_by: String,
    /// When it was pulled.
    pub pulled: SystemTime,
}

/// What an image record holds; the rest comes from the manifest.
pub(crate) struct Record {
    pub(crate) reference: String,
    pub(crate) digest: String,
    pub(crate) manifest: Digest,
    pub(crate) served_by: String,
    pub(crate) pulled: SystemTime,
}

impl Record {
    fn to_json(&self) -> String {
        let secs = self
            .pulled
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        json!({
            "reference": self.reference,
            "digest": self.digest,
            "manifest": self.manifest.to_string(),
            "served_by": self.served_by,
            "pulled": secs,
        })
        .to_string()
    }

    fn parse(text: &[u8]) -> Result<Record, String> {
        let v: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("unreadable record: {e}"))?;
        let s = |key: &str| {
            v.get(key)
                .and_then(|x| x.as_str())
                .map(String::from)
                .ok_or_else(|| format!("the record has no {key}"))
        };
        Ok(Record {
            reference: s("reference")?,
            digest: s("digest")?,
            manifest: s("manifest")?.parse().map_err(|e| format!("record: {e}"))?,
            served_by: s("served_by")?,
            pulled: UNIX_EPOCH
                + Duration::from_secs(v.get("pulled").and_then(|x| x.as_u64()).unwrap_or(0)),
        })
    }
}

/// The manifest of a stored image, parsed, with its config digest and
/// layers (which need not be present).
pub(crate) struct StoredManifest {
    pub(crate) config: Digest,
    pub(crate) layers: Vec<Digest>,
}

pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<(ImageManifest, StoredManifest), String> {
    let shown =
        |e: &dyn std::fmt::Display| b2c_system::log::printable(&e.to_string(), 300).into_owned();
    let m: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid manifest: {}", shown(&e)))?;
    let config = m
        .config()
        .digest()
        .to_string()
        .parse()
        .map_err(|e| format!("manifest: {}", shown(&e)))?;
    let layers = m
        .layers()
        .iter()
        .map(|l| l.digest().to_string().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("manifest: {}", shown(&e)))?;
    Ok((m, StoredManifest { config, layers }))
}

impl LayerStore {
    /// The image `reference` (as given to [`crate::pull`]) if the store has
    /// all of it; `None` if it was never pulled into this store, or if
    /// anything of it is missing or damaged. Its `layers` are what
    /// [`Self::evict`] should keep for a pipeline about to use it.
    pub fn stored_image(&self, reference: &Reference) -> Option<StoredImage> {
        match self.load_image(&reference.whole()) {
            Ok(image) => image,
            Err(why) => {
                log::debug!("{}: not usable from the store: {why}", reference.whole());
                None
            }
        }
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let name = hex::encode(sha2::Sha256::digest(reference.as_bytes()));
        self.images_dir().join(format!("{name}.json"))
    }

    /// `Ok(None)`: never pulled here. `Err`: a record exists, but the image
    /// is incomplete or damaged (says why).
    pub(crate) fn load_image(&self, reference: &str) -> Result<Option<StoredImage>, String> {
        let path = self.record_path(reference);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let record = Record::parse(&text)?;
        if record.reference != reference {
            return Err(format!("{} is for {}", path.display(), record.reference));
        }
        self.complete(record).map(Some)
    }

    fn complete(&self, record: Record) -> Result<StoredImage, String> {
        let manifest = self
            .read_blob(&record.manifest)
            .ok_or_else(|| format!("its manifest {} is missing", record.manifest))?;
        let (_, manifest) = parse_manifest(&manifest)?;
        let config = self
            .read_blob(&manifest.config)
            .ok_or_else(|| format!("its config {} is missing", manifest.config))?;
        let config = ImageConfiguration::from_reader(&config[..])
            .map_err(|e| format!("its config is invalid: {e}"))?;
        if let Some(missing) = manifest.layers.iter().find(|l| !self.contains(l)) {
            return Err(format!("its layer {missing} is missing"));
        }
        Ok(StoredImage {
            reference: record.reference,
            digest: record.digest,
            manifest_digest: record.manifest,
            config,
            layers: manifest.layers,
            served_by: record.served_by,
            pulled: record.pulled,
        })
    }

    /// Commits a record, after the blobs and layers it names.
    pub(crate) fn write_record(&self, record: &Record) -> Result<(), StoreError> {
        let path = self.record_path(&record.reference);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        write_atomic(&self.images_dir(), name, record.to_json().as_bytes())
    }

    /// Every record file with what it needs from the store (`None` when
    /// the record or its manifest cannot be read).
    pub(crate) fn records(&self) -> Vec<(PathBuf, Option<(Record, StoredManifest)>)> {
        let Ok(entries) = fs::read_dir(self.images_dir()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if crate::store::is_temp(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let parsed = fs::read(&path)
                .ok()
                .and_then(|t| Record::parse(&t).ok())
                .and_then(|r| {
                    let m = self.read_blob(&r.manifest)?;
                    let (_, m) = parse_manifest(&m).ok()?;
                    Some((r, m))
                });
            out.push((path, parsed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record {
            reference: "reg.test:5000/a/b:v1".into(),
            digest: format!("sha256:{}", "1".repeat(64)),
            manifest: format!("sha256:{}", "2".repeat(64)).parse().unwrap(),
            served_by: "reg.test:5000".into(),
            pulled: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let back = Record::parse(r.to_json().as_bytes()).unwrap();
        assert_eq!(back.reference, r.reference);
        assert_eq!(back.digest, r.digest);
        assert_eq!(back.manifest, r.manifest);
        assert_eq!(back.served_by, r.served_by);
        assert_eq!(back.pulled, r.pulled);
        assert!(Record::parse(b"{\"reference\": 1}").is_err());
        assert!(Record::parse(b"{\"refer").is_err());
    }
}
