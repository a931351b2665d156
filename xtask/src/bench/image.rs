//! The large test image of the pull benchmark: Debian minbase plus
//! build-essential from debootstrap (apt caches and lists, docs, man pages
//! and locales removed, as slim images do), split into gzip layers by
//! directory, written as an OCI image layout. Built once and cached under
//! target/bench/image/; the layout is what gets pushed to the registry and
//! its blobs are what the `tar` floor unpacks. The same layers recompressed
//! with zstd (levels [`ZSTD_LEVELS`]) are more images of that layout, with
//! the same configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::{run, run_output, Result};

/// Bumped when the recipe changes, so that a cached image is rebuilt.
const RECIPE: &str = "minbase+build-essential, slim, 6 layers by directory, gzip -6, v1";
pub const TAG: &str = "large";
/// The zstd levels of the recompressed images: podman's default
/// (`--compression-format zstd`) and a high one, for images built once and
/// pulled often.
pub const ZSTD_LEVELS: &[u32] = &[3, 19];

/// The layers, bottom to top: a name and the directories they hold. The
/// first holds everything the others do not.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("libs", &["./usr/lib/x86_64-linux-gnu"]),
    ("gcc", &["./usr/lib/gcc"]),
    ("bin", &["./usr/bin", "./usr/sbin"]),
    ("include", &["./usr/include"]),
    ("share", &["./usr/share"]),
];

/// What slim images leave out.
const SLIM: &[&str] = &[
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
];

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    pub name: String,
    pub digest: String,
    /// The compressed blob, in the layout.
    pub blob: PathBuf,
    pub compressed: u64,
    /// The tar stream.
    pub uncompressed: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LargeImage {
    pub recipe: String,
    pub suite: String,
    pub layout: PathBuf,
    pub layers: Vec<Layer>,
    /// Apparent size of the root file system's files.
    pub unpacked_bytes: u64,
    pub files: u64,
    pub build_seconds: f64,
    /// The image in zstd, one per level of [`ZSTD_LEVELS`]. Defaulted, so
    /// that an image cached before they existed is kept and only they are
    /// made.
    #[serde(default)]
    pub zstd: Vec<ZstdImage>,
}

/// The large image with its layers recompressed with zstd.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ZstdImage {
    pub level: u32,
    /// Its tag in the layout.
    pub tag: String,
    pub layers: Vec<Layer>,
    pub build_seconds: f64,
}

impl ZstdImage {
    pub fn compressed(&self) -> u64 {
        self.layers.iter().map(|l| l.compressed).sum()
    }
}

impl LargeImage {
    pub fn compressed(&self) -> u64 {
        self.layers.iter().map(|l| l.compressed).sum()
    }
}

fn dir() -> PathBuf {
    super::bench_dir().join("image")
}

/// The cached image, or a new one; with its zstd images.
pub fn get() -> Result<LargeImage> {
    get_with(true)
}

/// The cached image, or a new one, with its zstd images only if they are
/// cached already: the large-image boot needs the gzip image alone, and
/// making the zstd copies takes minutes.
pub fn get_gzip() -> Result<LargeImage> {
    get_with(false)
}

fn get_with(make_zstd: bool) -> Result<LargeImage> {
    let summary = dir().join("image.json");
    let cached = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|text| serde_json::from_str::<LargeImage>(&text).ok())
        .filter(|image| image.recipe == RECIPE && image.layers.iter().all(|l| l.blob.is_file()));
    let mut image = match cached {
        Some(image) => {
            println!(
                "bench: large image cached in {} ({} layers)",
                image.layout.display(),
                image.layers.len()
            );
            image
        }
        None => build()?,
    };
    let zstd_cached = image
        .zstd
        .iter()
        .map(|z| z.level)
        .eq(ZSTD_LEVELS.iter().copied())
        && image
            .zstd
            .iter()
            .all(|z| z.layers.iter().all(|l| l.blob.is_file()));
    if make_zstd && !zstd_cached {
        image.zstd = ZSTD_LEVELS
            .iter()
            .map(|&level| make_zstd_image(&image, level))
            .collect::<Result<_>>()?;
        write_index(&image)?;
    }
    std::fs::write(&summary, serde_json::to_string_pretty(&image)?)?;
    Ok(image)
}

fn zstd_tag(level: u32) -> String {
    format!("{TAG}-zstd{level}")
}

/// The large image's layers, each decompressed and compressed again with
/// `zstd -LEVEL` (with a checksum, as podman writes them), in its layout.
fn make_zstd_image(image: &LargeImage, level: u32) -> Result<ZstdImage> {
    let start = std::time::Instant::now();
    println!(
        "bench: recompressing the {} layers with zstd -{level} (a minute or a few) ...",
        image.layers.len()
    );
    let blobs = image.layout.join("blobs/sha256");
    let mut layers = Vec::new();
    for l in &image.layers {
        let zst = blobs.join(format!("{}.tar.zst", l.name));
        run(Command::new("sh")
            .arg("-c")
            .arg(r#"gzip -dc "$1" | zstd -q -T0 -"$2" -c > "$3""#)
            .arg("recompress")
            .arg(&l.blob)
            .arg(level.to_string())
            .arg(&zst))?;
        layers.push(put_blob(&blobs, &zst, l.name.clone(), l.uncompressed)?);
    }
    Ok(ZstdImage {
        level,
        tag: zstd_tag(level),
        layers,
        build_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The layout's index: the gzip image and its zstd images, each manifest
/// sharing the gzip image's configuration (the same tars, so the same
/// diff IDs).
fn write_index(image: &LargeImage) -> Result<()> {
    let blobs = image.layout.join("blobs/sha256");
    let index_path = image.layout.join("index.json");
    let index: Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
    let gzip = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == TAG)
        })
        .cloned()
        .ok_or_else(|| format!("{}: no {TAG} image", index_path.display()))?;
    let hex = gzip["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .ok_or("the large image's manifest digest")?;
    let manifest: Value = serde_json::from_slice(&std::fs::read(blobs.join(hex))?)?;
    let mut manifests = vec![gzip];
    for z in &image.zstd {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": manifest["config"],
            "layers": layer_descriptors(&z.layers, "application/vnd.oci.image.layer.v1.tar+zstd"),
        });
        let (digest, size) = write_blob(&blobs, &m)?;
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": z.tag},
        }));
    }
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    Ok(())
}

fn layer_descriptors(layers: &[Layer], media_type: &str) -> Vec<Value> {
    layers
        .iter()
        .map(|l| json!({"mediaType": media_type, "digest": l.digest, "size": l.compressed}))
        .collect()
}

fn suite() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(String::from))
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

fn build() -> Result<LargeImage> {
    let start = std::time::Instant::now();
    let dir = dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rootfs = dir.join("rootfs");
    let suite = suite();
    println!("bench: debootstrap {suite} minbase + build-essential (a minute or two) ...");
    let log = dir.join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=build-essential"])
        .arg(&suite)
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian")
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("debootstrap.err"))?)
        .status()?;
    if !status.success() {
        return Err(format!("debootstrap failed: see {}", log.display()).into());
    }
    for path in SLIM {
        let p = rootfs.join(path);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
    }
    let unpacked_bytes: u64 = run_output("du", &["-sb", &rootfs.to_string_lossy()])?
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let files = run_output("find", &[&rootfs.to_string_lossy()])?
        .lines()
        .count() as u64;

    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    println!("bench: making {} gzip layers ...", LAYERS.len());
    // Two at a time: gzip is the slow part, and there are two cores.
    let mut layers: Vec<Option<(Layer, String)>> = vec![None; LAYERS.len()];
    for chunk in (0..LAYERS.len()).collect::<Vec<_>>().chunks(2) {
        let results: Vec<Result<(Layer, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let (rootfs, blobs) = (&rootfs, &blobs);
                    s.spawn(move || make_layer(rootfs, blobs, i).map_err(|e| e.to_string()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("layer thread").map_err(Into::into))
                .collect()
        });
        for (&i, r) in chunk.iter().zip(results) {
            layers[i] = Some(r?);
        }
    }
    let (layers, diff_ids): (Vec<Layer>, Vec<String>) = layers.into_iter().flatten().unzip();

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|l| json!({"created_by": format!("b2c bench: {}", l.name)})).collect::<Vec<_>>(),
    });
    let (config_digest, config_size) = write_blob(&blobs, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layer_descriptors(&layers, "application/vnd.oci.image.layer.v1.tar+gzip"),
    });
    let (manifest_digest, manifest_size) = write_blob(&blobs, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": TAG},
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    crate::bench::remove_tree(&rootfs)?;
    let image = LargeImage {
        recipe: RECIPE.into(),
        suite,
        layout,
        layers,
        unpacked_bytes,
        files,
        build_seconds: start.elapsed().as_secs_f64(),
        zstd: Vec::new(),
    };
    println!(
        "bench: large image built in {:.0} s: {} layers, {:.0} MB gzip, {:.0} MB unpacked, {} files",
        image.build_seconds,
        image.layers.len(),
        image.compressed() as f64 / 1e6,
        image.unpacked_bytes as f64 / 1e6,
        image.files
    );
    Ok(image)
}

/// Layer `i` as a gzip blob in `blobs`; returns it with its diff ID.
fn make_layer(rootfs: &Path, blobs: &Path, i: usize) -> Result<(Layer, String)> {
    let (name, dirs) = LAYERS[i];
    let tar = blobs.join(format!("{name}.tar"));
    let mut cmd = Command::new("tar");
    cmd.arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "--sort=name", "-cf"])
        .arg(&tar);
    if dirs.is_empty() {
        for (_, others) in LAYERS {
            for d in *others {
                cmd.arg(format!("--exclude={d}"));
            }
        }
        cmd.arg(".");
    } else {
        // Parent directories first, as image builders write them.
        let mut parents: Vec<String> = Vec::new();
        for d in dirs {
            let mut p = Path::new(d).parent();
            while let Some(dir) = p.filter(|p| *p != Path::new(".")) {
                parents.push(dir.to_string_lossy().into_owned());
                p = dir.parent();
            }
        }
        parents.sort();
        parents.dedup();
        cmd.arg("--no-recursion").args(&parents).arg("--recursion");
        cmd.args(dirs.iter());
    }
    run(&mut cmd)?;
    let uncompressed = std::fs::metadata(&tar)?.len();
    let diff_id = format!("sha256:{}", sha256(&tar)?);
    let gz = blobs.join(format!("{name}.tar.gz"));
    run(Command::new("sh")
        .arg("-c")
        .arg(r#"gzip -n -6 -c "$1" > "$2""#)
        .arg("gzip")
        .arg(&tar)
        .arg(&gz))?;
    std::fs::remove_file(&tar)?;
    Ok((put_blob(blobs, &gz, name.into(), uncompressed)?, diff_id))
}

/// Moves the compressed layer `file` to its place among `blobs`.
fn put_blob(blobs: &Path, file: &Path, name: String, uncompressed: u64) -> Result<Layer> {
    let hex = sha256(file)?;
    let blob = blobs.join(&hex);
    std::fs::rename(file, &blob)?;
    Ok(Layer {
        name,
        digest: format!("sha256:{hex}"),
        compressed: std::fs::metadata(&blob)?.len(),
        blob,
        uncompressed,
    })
}

fn sha256(path: &Path) -> Result<String> {
    let out = run_output("sha256sum", &[&path.to_string_lossy()])?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// A JSON blob in the layout: its digest and size.
fn write_blob(blobs: &Path, value: &Value) -> Result<(String, u64)> {
    let bytes = serde_json::to_vec(value)?;
    let tmp = blobs.join("tmp.json");
    std::fs::write(&tmp, &bytes)?;
    let hex = sha256(&tmp)?;
    std::fs::rename(&tmp, blobs.join(&hex))?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}
