//! Test images, built from Debian's static busybox without any network,
//! as one OCI image layout (one blob store, a ref per image) that every
//! [`crate::TestNet`] pushes into its registry; and [`BIG_IMAGE`], in a
//! layout of its own, pushed only by [`crate::TestNet::push_big_image`].
//!
//! Every image is an image index with an amd64 and an arm64 image (the
//! machine's busybox and Debian's arm64 one, `cargo xtask busybox`), so
//! that one reference runs on either architecture's guest, as real
//! multi-platform images do.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{Arch, Context, Error, Result};

/// The machine's static busybox: the amd64 images' and the test network's
/// HTTP servers'.
pub(crate) const BUSYBOX: &str = "/bin/busybox";

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An image as pushed to each TestNet's registry.
pub struct TestImage {
    /// Repository and tag in the registry.
    pub name: &'static str,
    /// The ref in the local OCI layout.
    layout_ref: &'static str,
    /// Pushed with Docker schema-2 media types instead of OCI ones.
    docker_v2s2: bool,
}

/// One busybox layer: `/bin/busybox` with applet symlinks, `/etc/passwd`.
pub const BUSYBOX_IMAGE: &str = "b2c/busybox:latest";
/// The busybox image with Docker schema-2 media types.
pub const BUSYBOX_DOCKER_IMAGE: &str = "b2c/busybox-docker:latest";
/// Busybox plus three layers exercising whiteouts, an opaque directory, a
/// symlink and a hard link; see the `LAYERS_*` constants for the result.
pub const LAYERS_IMAGE: &str = "b2c/layers:latest";
/// [`LAYERS_IMAGE`] in zstd (`tar+zstd`): the layer with whiteouts and the
/// opaque directory in zstd:chunked's shape (see [`Codec::ZstdChunked`]),
/// the others as one frame each.
pub const LAYERS_ZSTD_IMAGE: &str = "b2c/layers-zstd:latest";
/// Busybox plus one layer holding [`BIG_FILE`]: [`BIG_FILE_SIZE`] bytes of
/// seeded pseudo-random (incompressible) data, so that a pull takes long
/// enough to be cut in the middle. Only in registries that asked for it
/// ([`crate::TestNet::push_big_image`]); its checksum: [`big_file_sha256`].
pub const BIG_IMAGE: &str = "b2c/big:latest";
/// The big file's path in a container of [`BIG_IMAGE`].
pub const BIG_FILE: &str = "/big/random.bin";
pub const BIG_FILE_SIZE: usize = 60 << 20;

pub const IMAGES: &[TestImage] = &[
    TestImage {
        name: BUSYBOX_IMAGE,
        layout_ref: "busybox",
        docker_v2s2: false,
    },
    TestImage {
        name: BUSYBOX_DOCKER_IMAGE,
        layout_ref: "busybox",
        docker_v2s2: true,
    },
    TestImage {
        name: LAYERS_IMAGE,
        layout_ref: "layers",
        docker_v2s2: false,
    },
    TestImage {
        name: LAYERS_ZSTD_IMAGE,
        layout_ref: "layers-zstd",
        docker_v2s2: false,
    },
];

/// Not in [`IMAGES`]: its own layout ([`big_layout`]), pushed on demand.
pub(crate) const BIG: TestImage = TestImage {
    name: BIG_IMAGE,
    layout_ref: "big",
    docker_v2s2: false,
};

impl TestImage {
    /// The `skopeo copy` arguments that push this image to `registry`:
    /// the index and every architecture's image (`--all`).
    pub(crate) fn push_args(&self, layout: &Path, registry: &str) -> Vec<String> {
        let mut args = vec![
            "copy".to_string(),
            "--all".into(),
            "--dest-tls-verify=false".into(),
        ];
        if self.docker_v2s2 {
            args.extend(["--format".into(), "v2s2".into()]);
        }
        args.push(format!("oci:{}:{}", layout.display(), self.layout_ref));
        args.push(format!("docker://{registry}/{}", self.name));
        args
    }
}

/// `find /data | sort` in a container of [`LAYERS_IMAGE`].
pub const LAYERS_TREE: &[&str] = &[
    "/data",
    "/data/dir",
    "/data/dir/new.txt",
    "/data/hard",
    "/data/hard/a.txt",
    "/data/hard/b.txt",
    "/data/keep.txt",
    "/data/link",
    "/data/replaced.txt",
];

/// Regular files of [`LAYERS_IMAGE`] and their contents, each followed by
/// a newline in the file.
pub const LAYERS_FILES: &[(&str, &str)] = &[
    ("/data/keep.txt", "keep"),
    ("/data/replaced.txt", "upper"),
    ("/data/dir/new.txt", "new"),
    ("/data/hard/a.txt", "hard"),
    ("/data/hard/b.txt", "hard"),
];

/// The symlink of [`LAYERS_IMAGE`] and its (relative) target.
pub const LAYERS_SYMLINK: (&str, &str) = ("/data/link", "keep.txt");

/// Two names of one inode in [`LAYERS_IMAGE`] (a tar hard-link entry).
pub const LAYERS_HARDLINK: (&str, &str) = ("/data/hard/a.txt", "/data/hard/b.txt");

/// Applets linked in the busybox image: what tests and interactive use need.
const APPLETS: &str = "\
    [ awk basename cat chmod cp cut date dd df dirname dmesg du echo env \
    false find grep halt head hostname httpd id ifconfig ip kill ln ls \
    md5sum mkdir mount mv nslookup poweroff printf ps pwd readlink reboot \
    rm sed seq sh sha256sum sleep sort stat sync tail tee test touch tr \
    true umount uname uniq wc wget xargs";

/// A fixed mtime keeps layers, and so their digests, reproducible.
const MTIME: u64 = 1_700_000_000;

enum Entry {
    Dir(String, u32),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
    /// A hard link to a regular file earlier in the same layer.
    Hardlink(String, String),
}

use Entry::{Dir, File, Hardlink, Symlink};

fn dir(path: &str, mode: u32) -> Entry {
    Dir(path.into(), mode)
}

fn file(path: &str, data: Vec<u8>, mode: u32) -> Entry {
    File(path.into(), data, mode)
}

fn symlink(path: &str, target: &str) -> Entry {
    Symlink(path.into(), target.into())
}

fn hardlink(path: &str, target: &str) -> Entry {
    Hardlink(path.into(), target.into())
}

fn text(s: &str) -> Vec<u8> {
    format!("{s}\n").into_bytes()
}

/// The static busybox of `arch`'s images: the machine's own for amd64,
/// else Debian's, unpacked by `cargo xtask busybox` once (it is kept in
/// target/qemu-tests).
fn busybox_binary(arch: Arch) -> Result<PathBuf> {
    if arch == Arch::X86_64 {
        return Ok(PathBuf::from(BUSYBOX));
    }
    let out = crate::output_dir().join(format!("busybox-{}", arch.debian()));
    if !out.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        crate::run(
            std::process::Command::new(cargo)
                .current_dir(crate::workspace_dir())
                .args(["xtask", "busybox", "--arch", arch.name(), "--output"])
                .arg(&out),
            "cargo xtask busybox",
        )?;
    }
    Ok(out)
}

fn busybox_layer(arch: Arch) -> Result<Vec<Entry>> {
    let path = busybox_binary(arch)?;
    let busybox = std::fs::read(&path).context(|| format!("read {}", path.display()))?;
    let mut entries = vec![
        dir("bin", 0o755),
        file("bin/busybox", busybox, 0o755),
        dir("dev", 0o755),
        dir("etc", 0o755),
        file("etc/passwd", text("root:x:0:0:root:/root:/bin/sh"), 0o644),
        file("etc/group", text("root:x:0:"), 0o644),
        dir("proc", 0o755),
        dir("root", 0o700),
        dir("sys", 0o755),
        dir("tmp", 0o1777),
    ];
    for applet in APPLETS.split_whitespace() {
        entries.push(symlink(&format!("bin/{applet}"), "busybox"));
    }
    Ok(entries)
}

/// The three layers above busybox. Each must yield the `LAYERS_*`
/// constants above once merged with OCI whiteout rules.
fn data_layers() -> Vec<Vec<Entry>> {
    vec![
        vec![
            dir("data", 0o755),
            file("data/keep.txt", text("keep"), 0o644),
            file("data/gone.txt", text("gone"), 0o644),
            file("data/replaced.txt", text("lower"), 0o644),
            dir("data/dir", 0o755),
            file("data/dir/old.txt", text("old"), 0o644),
            dir("data/dir/sub", 0o755),
            file("data/dir/sub/deep.txt", text("deep"), 0o644),
            dir("data/olddir", 0o755),
            file("data/olddir/f.txt", text("f"), 0o644),
        ],
        vec![
            dir("data", 0o755),
            file("data/.wh.gone.txt", vec![], 0o644),
            file("data/.wh.olddir", vec![], 0o644),
            file("data/replaced.txt", text("upper"), 0o644),
            dir("data/dir", 0o755),
            file("data/dir/.wh..wh..opq", vec![], 0o644),
            file("data/dir/new.txt", text("new"), 0o644),
        ],
        vec![
            dir("data", 0o755),
            symlink("data/link", "keep.txt"),
            dir("data/hard", 0o755),
            file("data/hard/a.txt", text("hard"), 0o644),
            hardlink("data/hard/b.txt", "data/hard/a.txt"),
        ],
    ]
}

fn tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        let result = match entry {
            Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), &[][..])
            }
            File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..])
            }
            Symlink(path, target) | Hardlink(path, target) => {
                let kind = match entry {
                    Symlink(..) => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                };
                header.set_entry_type(kind);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)
            }
        };
        result.context(|| "build a test layer".to_string())?;
    }
    builder
        .into_inner()
        .context(|| "finish a test layer".to_string())
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

struct Blobs<'a> {
    dir: &'a Path,
}

/// How a test layer travels: its compression and its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// gzip at this level (0: stored).
    Gzip(u32),
    /// One zstd frame at this level.
    Zstd(i32),
    /// The shape of a zstd:chunked layer as containers/storage writes it:
    /// the tar in many zstd frames (one per file there; fixed-size pieces
    /// here), then the table of contents, the tar-split data and a footer,
    /// each in a skippable frame. Its media type is plain zstd's, and a
    /// reader that ignores the table of contents reads it as plain zstd.
    ZstdChunked,
}

impl Codec {
    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Codec::Gzip(level) => {
                let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                gz.write_all(tar).expect("gzip in memory");
                gz.finish().expect("gzip in memory")
            }
            Codec::Zstd(level) => zstd::encode_all(tar, level).expect("zstd in memory"),
            Codec::ZstdChunked => {
                let mut out = Vec::new();
                for piece in tar.chunks(4096) {
                    out.extend(Codec::Zstd(3).compress(piece));
                }
                let toc = Codec::Zstd(3).compress(br#"{"version":1,"entries":[]}"#);
                for frame in [&toc[..], b"tar-split", &[0u8; 64][..]] {
                    out.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18]);
                    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                    out.extend_from_slice(frame);
                }
                out
            }
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Codec::Gzip(_) => "application/vnd.oci.image.layer.v1.tar+gzip",
            Codec::Zstd(_) | Codec::ZstdChunked => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The tar inside `blob` of this media type.
    pub fn decompress(media_type: &str, blob: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut tar = Vec::new();
        if media_type.ends_with("zstd") {
            zstd::stream::read::Decoder::new(blob)?.read_to_end(&mut tar)?;
        } else {
            flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut tar)?;
        }
        Ok(tar)
    }
}

impl Blobs<'_> {
    /// Content-addressed and written by rename, so concurrent processes
    /// building the same (deterministic) images never see partial blobs.
    fn put(&self, data: &[u8]) -> Result<String> {
        let digest = sha256(data);
        self.put_as(&digest, data)?;
        Ok(digest)
    }

    /// [`Self::put`] of data whose digest is known.
    fn put_as(&self, digest: &str, data: &[u8]) -> Result<()> {
        let path = self
            .dir
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..]);
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(data.len() as u64) {
            write_atomic(&path, data)?;
        }
        Ok(())
    }

    /// An index of one image per architecture, each of the layers
    /// `layers` gives for it; returns the index's descriptor.
    fn index(
        &self,
        layers: impl Fn(Arch) -> Result<Vec<Vec<u8>>>,
        codecs: &[Codec],
    ) -> Result<Value> {
        self.index_with(layers, codecs, default_config())
    }

    fn index_with(
        &self,
        layers: impl Fn(Arch) -> Result<Vec<Vec<u8>>>,
        codecs: &[Codec],
        config: Value,
    ) -> Result<Value> {
        let mut manifests = Vec::new();
        for arch in Arch::ALL {
            let mut descriptor =
                self.image_configured(arch, &layers(arch)?, codecs, config.clone())?;
            descriptor["platform"] = json!({ "architecture": arch.debian(), "os": "linux" });
            manifests.push(descriptor);
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": manifests,
        }))
        .expect("json");
        Ok(json!({
            "mediaType": INDEX_TYPE,
            "digest": self.put(&index)?,
            "size": index.len(),
        }))
    }

    /// An image for `arch` whose configuration's `config` is `config`;
    /// returns the manifest's descriptor.
    fn image_configured(
        &self,
        arch: Arch,
        layers: &[Vec<u8>],
        codecs: &[Codec],
        config: Value,
    ) -> Result<Value> {
        assert_eq!(layers.len(), codecs.len(), "a codec per layer");
        let mut diff_ids = Vec::new();
        let mut descriptors = Vec::new();
        for (tar, codec) in layers.iter().zip(codecs) {
            let diff_id = sha256(tar);
            let (blob, digest) = compress(tar, &diff_id, *codec);
            self.put_as(&digest, &blob)?;
            diff_ids.push(diff_id);
            descriptors.push(json!({
                "mediaType": codec.media_type(),
                "digest": digest,
                "size": blob.len(),
            }));
        }
        let config = serde_json::to_vec(&json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": arch.debian(),
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("json");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.put(&config)?,
                "size": config.len(),
            },
            "layers": descriptors,
        }))
        .expect("json");
        Ok(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.put(&manifest)?,
            "size": manifest.len(),
        }))
    }
}

fn default_config() -> Value {
    json!({
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
    })
}

/// A layer compressed as `codec` says, and the digest of that:
/// remembered for the process by the layer's `diff_id`, as each
/// architecture's images share layers (the big one's 60 MB among them) and
/// an unoptimised test build compresses and hashes slowly.
fn compress(tar: &[u8], diff_id: &str, codec: Codec) -> (Vec<u8>, String) {
    type Done = Vec<(String, Codec, Vec<u8>, String)>;
    static DONE: std::sync::Mutex<Done> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((.., blob, digest)) = done.iter().find(|(d, c, ..)| d == diff_id && *c == codec) {
        return (blob.clone(), digest.clone());
    }
    let blob = codec.compress(tar);
    let digest = sha256(&blob);
    done.push((diff_id.to_string(), codec, blob.clone(), digest.clone()));
    (blob, digest)
}

/// The compression of most test layers (flate2's default level).
const GZIP: Codec = Codec::Gzip(6);

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().expect("blob path has a parent");
    std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .context(|| format!("temp file in {}", dir.display()))?;
    tmp.write_all(data)
        .context(|| format!("write {}", path.display()))?;
    tmp.persist(path)
        .context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// The OCI layout holding every test image, built once per process under
/// `target/qemu-tests/images`.
pub fn layout() -> Result<&'static Path> {
    static LAYOUT: OnceLock<Result<PathBuf>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| build(&crate::output_dir().join("images")))
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

fn build(dir: &Path) -> Result<PathBuf> {
    let blobs = Blobs { dir };
    let mut busybox = Vec::new();
    for arch in Arch::ALL {
        busybox.push((arch, tar(&busybox_layer(arch)?)?));
    }
    let busybox_of = |arch: Arch| {
        busybox
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, t)| t.clone())
            .expect("a busybox layer for every architecture")
    };
    let data: Vec<Vec<u8>> = data_layers()
        .iter()
        .map(|entries| tar(entries))
        .collect::<Result<_>>()?;
    let zstd = [
        Codec::Zstd(3),
        Codec::Zstd(3),
        Codec::ZstdChunked,
        Codec::Zstd(3),
    ];
    let mut manifests = Vec::new();
    let mut descriptor = blobs.index(|arch| Ok(vec![busybox_of(arch)]), &[GZIP])?;
    descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": "busybox" });
    manifests.push(descriptor);
    for (name, codecs) in [("layers", &[GZIP; 4][..]), ("layers-zstd", &zstd[..])] {
        let mut descriptor = blobs.index(
            |arch| {
                let mut layers = vec![busybox_of(arch)];
                layers.extend(data.iter().cloned());
                Ok(layers)
            },
            codecs,
        )?;
        descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": name });
        manifests.push(descriptor);
    }
    write_index(dir, manifests)?;
    Ok(dir.to_path_buf())
}

fn write_index(dir: &Path, manifests: Vec<Value>) -> Result<()> {
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    write_atomic(
        &dir.join("index.json"),
        &serde_json::to_vec(&index).expect("json"),
    )
}

struct BigLayout {
    dir: PathBuf,
    file_sha256: String,
}

/// Names what [`build_big`] makes: change it with the generator or layout.
const BIG_STAMP: &str = "built-v2";

fn big() -> Result<&'static BigLayout> {
    static BIG_LAYOUT: OnceLock<Result<BigLayout>> = OnceLock::new();
    BIG_LAYOUT
        .get_or_init(|| {
            let dir = crate::output_dir().join("images-big");
            match reuse_big(&dir) {
                Some(built) => Ok(built),
                None => build_big(&dir),
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Building takes ~15 s unoptimised (three SHA-256s and a CRC over 60 MB),
/// so a complete earlier build is reused: its stamp holds the checksum,
/// and every blob the index names must be there with its size.
fn reuse_big(dir: &Path) -> Option<BigLayout> {
    let file_sha256 = std::fs::read_to_string(dir.join(BIG_STAMP)).ok()?;
    let layout: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).ok()?).ok()?;
    let blob_ok = |d: &Value| {
        let hex = d["digest"].as_str()?.strip_prefix("sha256:")?;
        let path = dir.join("blobs/sha256").join(hex);
        (std::fs::metadata(&path).ok()?.len() == d["size"].as_u64()?).then_some(path)
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(blob_ok(&layout["manifests"][0])?).ok()?).ok()?;
    for descriptor in index["manifests"].as_array()? {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(blob_ok(descriptor)?).ok()?).ok()?;
        blob_ok(&manifest["config"])?;
        for layer in manifest["layers"].as_array()? {
            blob_ok(layer)?;
        }
    }
    Some(BigLayout {
        dir: dir.to_path_buf(),
        file_sha256: file_sha256.trim().to_string(),
    })
}

/// The OCI layout holding [`BIG_IMAGE`] (ref `big`), built once per
/// process under `target/qemu-tests/images-big`.
pub fn big_layout() -> Result<&'static Path> {
    big().map(|b| b.dir.as_path())
}

/// The hex SHA-256 of [`BIG_FILE`], as `sha256sum` prints it.
pub fn big_file_sha256() -> Result<&'static str> {
    big().map(|b| b.file_sha256.as_str())
}

/// [`BIG_FILE_SIZE`] bytes from a fixed-seed splitmix64: the same bytes
/// in every process, and nothing gzip can shrink.
fn big_file_data() -> Vec<u8> {
    let mut state: u64 = 0x6232_6320_6361_6368;
    let mut data = Vec::with_capacity(BIG_FILE_SIZE);
    while data.len() < BIG_FILE_SIZE {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        data.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    data.truncate(BIG_FILE_SIZE);
    data
}

fn build_big(out: &Path) -> Result<BigLayout> {
    let blobs = Blobs { dir: out };
    let data = big_file_data();
    let file_sha256 = hex::encode(Sha256::digest(&data));
    let (big_dir, big_name) = BIG_FILE[1..]
        .rsplit_once('/')
        .expect("BIG_FILE is /dir/name");
    let big_layer = tar(&[
        dir(big_dir, 0o755),
        file(&format!("{big_dir}/{big_name}"), data, 0o644),
    ])?;
    // Random data does not compress: storing it spares each test process
    // seconds of futile deflating (the result is still a gzip layer).
    let mut descriptor = blobs.index_with(
        |arch| Ok(vec![tar(&busybox_layer(arch)?)?, big_layer.clone()]),
        &[Codec::Gzip(0); 2],
        default_config(),
    )?;
    descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": BIG.layout_ref });
    write_index(out, vec![descriptor])?;
    write_atomic(&out.join(BIG_STAMP), file_sha256.as_bytes())?;
    Ok(BigLayout {
        dir: out.to_path_buf(),
        file_sha256,
    })
}

/// Busybox with stand-ins for the programs of the images real CI lines
/// run (machine registration's `check`/`setup`/`register`, `bash`, `curl`;
/// busybox's shell runs its own applets first, so a stand-in cannot
/// replace `tar`), for booting lines of the command-line corpus.
/// Its default command writes a result into a job's results directory
/// (`/builds/mesa/mesa/results`) and, as an artifact collector, lists
/// `/results`. Only in registries that asked for it
/// ([`crate::TestNet::push_ci_images`]).
pub const CI_TOOLS_IMAGE: &str = "b2c/ci-tools:latest";
/// Busybox whose default command, as a monitoring service would, looks at
/// the machine: it writes `telegraf stand-in: PID 1 is <exe>` to
/// /dev/shm/telegraf (the host's /dev), then sleeps.
pub const CI_TELEGRAF_IMAGE: &str = "b2c/ci-telegraf:latest";

pub(crate) const CI_TOOLS: TestImage = TestImage {
    name: CI_TOOLS_IMAGE,
    layout_ref: "ci-tools",
    docker_v2s2: false,
};

pub(crate) const CI_TELEGRAF: TestImage = TestImage {
    name: CI_TELEGRAF_IMAGE,
    layout_ref: "ci-telegraf",
    docker_v2s2: false,
};

fn script(path: &str, body: &str) -> Entry {
    file(path, format!("#!/bin/sh\n{body}\n").into_bytes(), 0o755)
}

fn ci_tools_layer() -> Vec<Entry> {
    let mars = "echo \"machine-registration stand-in: $(basename $0) $*: stdout $(readlink /proc/$$/fd/1)\"";
    vec![
        dir("usr", 0o755),
        dir("usr/bin", 0o755),
        script("usr/bin/check", mars),
        script("usr/bin/setup", mars),
        script("usr/bin/register", mars),
        script("usr/bin/bash", "exec /bin/sh \"$@\""),
        // The URL is the last argument; options are curl's.
        script("usr/bin/curl", "for a; do url=$a; done\nexec wget -q -O - \"$url\""),
        script(
            "usr/bin/ci-default",
            "if [ -d /builds/mesa/mesa/results ]; then echo passed > /builds/mesa/mesa/results/junit.xml; fi\n\
             if [ -d /results ]; then echo \"artifact-reaper stand-in: job $CI_JOB_ID: $(ls /results)\"; fi",
        ),
    ]
}

fn build_ci(dir: &Path) -> Result<PathBuf> {
    let blobs = Blobs { dir };
    let tools = tar(&ci_tools_layer())?;
    let env = json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    let mut manifests = Vec::new();
    for (image, config) in [
        (
            &CI_TOOLS,
            json!({"Env": env, "Cmd": ["/usr/bin/ci-default"]}),
        ),
        (
            &CI_TELEGRAF,
            json!({"Env": env, "Cmd": ["/bin/sh", "-c",
                "echo telegraf stand-in: PID 1 is $(readlink /proc/1/exe) > /dev/shm/telegraf; exec sleep 3600"]}),
        ),
    ] {
        let mut descriptor = blobs.index_with(
            |arch| Ok(vec![tar(&busybox_layer(arch)?)?, tools.clone()]),
            &[GZIP; 2],
            config,
        )?;
        descriptor["annotations"] =
            json!({ "org.opencontainers.image.ref.name": image.layout_ref });
        manifests.push(descriptor);
    }
    write_index(dir, manifests)?;
    Ok(dir.to_path_buf())
}

/// The OCI layout of [`CI_TOOLS_IMAGE`] and [`CI_TELEGRAF_IMAGE`], built
/// once per process under `target/qemu-tests/images-ci`.
pub fn ci_layout() -> Result<&'static Path> {
    static LAYOUT: OnceLock<Result<PathBuf>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| build_ci(&crate::output_dir().join("images-ci")))
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

/// The OCI layout holding `image`.
fn layout_of(image: &str) -> Result<&'static Path> {
    if image == BIG_IMAGE {
        big_layout()
    } else {
        layout()
    }
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_slice(&std::fs::read(path).context(|| format!("read {}", path.display()))?)
        .context(|| format!("parse {}", path.display()))
}

/// The digest of the index `image` names as its TestNet's registry
/// serves it (`sha256:<hex>`): what `skopeo inspect --raw` digests.
pub fn index_digest(image: &str) -> Result<String> {
    let found = IMAGES
        .iter()
        .chain([&BIG])
        .find(|i| i.name == image)
        .ok_or_else(|| Error::new(format!("{image} is not a test image")))?;
    if found.docker_v2s2 {
        // skopeo converts it on the way: its digest is the registry's.
        return Err(Error::new(format!(
            "{image} is converted when pushed: ask the registry for its digest"
        )));
    }
    let path = layout_of(found.name)?.join("index.json");
    read_json(&path)?["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == found.layout_ref)
        .and_then(|m| m["digest"].as_str())
        .map(String::from)
        .ok_or_else(|| Error::new(format!("{}: no ref {}", path.display(), found.layout_ref)))
}

/// The digest of `image`'s manifest for the architecture the tests boot
/// ([`Arch::current`]), as its TestNet's registry serves it: what the
/// init calls the image's digest.
pub fn manifest_digest(image: &str) -> Result<String> {
    platform_digest(image, Arch::current())
}

/// The digest of `image`'s manifest for `arch`.
pub fn platform_digest(image: &str, arch: Arch) -> Result<String> {
    let index = index_digest(image)?;
    let path = layout_of(image)?
        .join("blobs/sha256")
        .join(&index["sha256:".len()..]);
    read_json(&path)?["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["platform"]["architecture"] == arch.debian())
        .and_then(|m| m["digest"].as_str())
        .map(String::from)
        .ok_or_else(|| Error::new(format!("{image}: no {} image", arch.debian())))
}

/// Debian's `busybox` package also installs a /bin/busybox, a dynamic one
/// that would not run in our images: look for an ELF interpreter.
pub(crate) fn check_busybox() -> Result<()> {
    let missing = || {
        Error::new(format!(
            "{BUSYBOX} must be a static busybox: install busybox-static"
        ))
    };
    let elf = std::fs::read(BUSYBOX).map_err(|_| missing())?;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        elf.get(0x20..0x28)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize),
        u16_at(0x36),
        u16_at(0x38),
    ) else {
        return Err(missing());
    };
    const PT_INTERP: u32 = 3;
    let dynamic = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4) == Some(&PT_INTERP.to_le_bytes()[..])
    });
    if !elf.starts_with(b"\x7fELF\x02") || dynamic {
        return Err(missing());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug, PartialEq)]
    enum Node {
        Dir,
        File(Vec<u8>),
        Symlink(String),
    }

    /// A minimal model of what a correct unpacker does with OCI whiteouts,
    /// so that the `LAYERS_*` constants are checked against the layers
    /// actually built rather than trusted.
    fn merge(layers: &[Vec<Entry>]) -> BTreeMap<String, Node> {
        let mut tree = BTreeMap::new();
        for layer in layers {
            let below = |tree: &BTreeMap<String, Node>, dir: &str| -> Vec<String> {
                let prefix = format!("{dir}/");
                tree.keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect()
            };
            // Whiteouts hide lower layers only: apply them all first.
            for entry in layer {
                let File(path, ..) = entry else { continue };
                let path = format!("/{path}");
                let (dir, name) = path.rsplit_once('/').unwrap();
                if name == ".wh..wh..opq" {
                    for k in below(&tree, dir) {
                        tree.remove(&k);
                    }
                } else if let Some(hidden) = name.strip_prefix(".wh.") {
                    let hidden = format!("{dir}/{hidden}");
                    for k in below(&tree, &hidden) {
                        tree.remove(&k);
                    }
                    tree.remove(&hidden);
                }
            }
            for entry in layer {
                let (path, node) = match entry {
                    Dir(p, _) => (p, Node::Dir),
                    File(p, _, _) if p.rsplit('/').next().unwrap().starts_with(".wh.") => continue,
                    File(p, data, _) => (p, Node::File(data.clone())),
                    Symlink(p, t) => (p, Node::Symlink(t.to_string())),
                    Hardlink(p, t) => (p, tree[&format!("/{t}")].clone()),
                };
                tree.insert(format!("/{path}"), node);
            }
        }
        tree
    }

    #[test]
    fn layers_constants_match_the_built_layers() {
        let tree = merge(&data_layers());
        let listing: Vec<&str> = tree.keys().map(String::as_str).collect();
        assert_eq!(listing, LAYERS_TREE);
        for (path, content) in LAYERS_FILES {
            assert_eq!(tree[*path], Node::File(text(content)), "{path}");
        }
        assert_eq!(
            tree[LAYERS_SYMLINK.0],
            Node::Symlink(LAYERS_SYMLINK.1.into())
        );
        let layer = &data_layers()[2];
        assert!(layer.iter().any(|e| matches!(e,
            Hardlink(p, t) if format!("/{p}") == LAYERS_HARDLINK.1 && format!("/{t}") == LAYERS_HARDLINK.0)));
    }

    #[test]
    fn layout_is_a_valid_oci_layout() {
        let dir = layout().unwrap();
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let blob = |digest: &Value| {
            let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
            let data = std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
            assert_eq!(sha256(&data), digest.as_str().unwrap());
            data
        };
        let mut layer_counts = BTreeMap::new();
        for descriptor in index["manifests"].as_array().unwrap() {
            assert_eq!(descriptor["mediaType"], INDEX_TYPE);
            let name = descriptor["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap();
            let platforms: Value = serde_json::from_slice(&blob(&descriptor["digest"])).unwrap();
            for platform in platforms["manifests"].as_array().unwrap() {
                let arch = platform["platform"]["architecture"].as_str().unwrap();
                let manifest: Value = serde_json::from_slice(&blob(&platform["digest"])).unwrap();
                let config: Value =
                    serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
                assert_eq!(config["architecture"], arch);
                let layers = manifest["layers"].as_array().unwrap();
                let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
                assert_eq!(layers.len(), diff_ids.len());
                for (i, (layer, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
                    let data = blob(&layer["digest"]);
                    assert_eq!(layer["size"], data.len());
                    let tar =
                        Codec::decompress(layer["mediaType"].as_str().unwrap(), &data).unwrap();
                    assert_eq!(&sha256(&tar), diff_id);
                    if i == 0 {
                        assert_eq!(busybox_machine(&tar), Some(arch.to_string()), "{name}");
                    }
                }
                layer_counts.insert(format!("{name} {arch}"), layers.len());
            }
        }
        assert_eq!(
            layer_counts,
            BTreeMap::from([
                ("busybox amd64".into(), 1),
                ("busybox arm64".into(), 1),
                ("layers amd64".into(), 4),
                ("layers arm64".into(), 4),
                ("layers-zstd amd64".into(), 4),
                ("layers-zstd arm64".into(), 4)
            ])
        );
    }

    /// The architecture of the busybox in a busybox layer, from its ELF
    /// header's e_machine.
    fn busybox_machine(layer: &[u8]) -> Option<String> {
        let mut archive = tar::Archive::new(layer);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some("bin/busybox") {
                let mut elf = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut elf).unwrap();
                let machine = u16::from_le_bytes([elf[18], elf[19]]);
                return Some(match machine {
                    62 => "amd64".into(),
                    183 => "arm64".into(),
                    other => format!("e_machine {other}"),
                });
            }
        }
        None
    }

    #[test]
    fn big_image_holds_the_file_its_checksum_describes() {
        let dir = big_layout().unwrap();
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap();
            std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
        };
        let digest = manifest_digest(BIG_IMAGE).unwrap();
        let manifest: Value = serde_json::from_slice(&blob(&digest)).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "busybox and the big layer");
        let gz = blob(layers[1]["digest"].as_str().unwrap());
        assert!(
            gz.len() > BIG_FILE_SIZE,
            "the big layer should not compress: {} bytes",
            gz.len()
        );
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut found = None;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if format!("/{}", entry.path().unwrap().display()) == BIG_FILE {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                found = Some(data);
            }
        }
        let data = found.expect("BIG_FILE in the big layer");
        assert_eq!(data.len(), BIG_FILE_SIZE);
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            big_file_sha256().unwrap()
        );
        assert_eq!(data, big_file_data(), "the same bytes in every process");

        assert_ne!(index_digest(BIG_IMAGE).unwrap(), digest);
        assert_ne!(
            platform_digest(BIG_IMAGE, Arch::Aarch64).unwrap(),
            platform_digest(BIG_IMAGE, Arch::X86_64).unwrap()
        );
        let busybox = manifest_digest(BUSYBOX_IMAGE).unwrap();
        assert!(
            busybox.starts_with("sha256:") && busybox.len() == 71,
            "{busybox}"
        );
        assert_ne!(busybox, digest);
        assert!(manifest_digest(BUSYBOX_DOCKER_IMAGE).is_err());
        assert!(manifest_digest("b2c/nothing:latest").is_err());
    }
}
