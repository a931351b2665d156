//! Streaming unpack of one layer tarball into a directory in overlayfs
//! format.
//!
//! The `tar` crate only parses here. Its own `unpack_in` checks paths by
//! canonicalising them (following symlinks on the host), turns device nodes
//! and fifos into empty regular files, cannot replace a file by a directory,
//! and drops directory xattrs and mtimes; so the writing side is ours, built
//! on [`crate::confined`].

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use tar::EntryType;

use crate::confined::{file_type_at, remove_all_at, RelPath, Root};

/// What one layer unpack did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar members processed (whiteouts included).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Whiteouts and opaque markers turned into overlayfs form.
    pub whiteouts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The compressed stream or the tar structure is broken, or the stream
    /// it comes from failed.
    #[error("reading the layer archive: {0}")]
    Read(#[source] io::Error),
    #[error("layer member {path:?} points outside the layer")]
    Escape { path: String },
    #[error("layer member {path:?}: {what}")]
    Invalid { path: String, what: &'static str },
    #[error("{op} {path:?}: {source}")]
    Fs {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    fn fs<'a, E: Into<io::Error>>(
        op: &'static str,
        path: &'a RelPath,
    ) -> impl FnOnce(E) -> UnpackError + 'a {
        move |source| UnpackError::Fs {
            op,
            path: path.display(),
            source: source.into(),
        }
    }
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks a layer tarball (plain, gzip or zstd, recognised by its magic
/// bytes rather than its media type, as containerd does) into `dest`, which
/// is created if missing. zstd streams may hold several frames and skippable
/// frames: `zstd:chunked` layers are read as plain zstd, their table of
/// contents skipped.
///
/// Whiteouts become overlayfs whiteouts (`.wh.NAME` → character device 0/0
/// `NAME`; `.wh..wh..opq` → `trusted.overlay.opaque=y` on its directory);
/// ownership, permissions, mtimes, xattrs, symlinks, hard links, devices and
/// fifos are preserved. Nothing is ever written outside `dest`: members are
/// resolved as if `dest` were `/`, and a `..` climbing above it is refused.
///
/// `reader` is read to its end (trailing data included) so a hashing reader
/// underneath sees the whole blob.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let mut reader = reader;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut reader, &mut head).map_err(UnpackError::Read)?;
    let mut stream = io::Cursor::new(head[..n].to_vec()).chain(reader);

    std::fs::create_dir_all(dest).map_err(|source| UnpackError::Fs {
        op: "creating",
        path: dest.display().to_string(),
        source,
    })?;
    let root = Root::open(dest).map_err(|source| UnpackError::Fs {
        op: "opening",
        path: dest.display().to_string(),
        source,
    })?;

    let stats = match &head[..n] {
        [0x1f, 0x8b, ..] => {
            unpack_compressed(flate2::read::MultiGzDecoder::new(&mut stream), root)?
        }
        // A zstd frame, or a skippable frame (magic 0x184D2A5?).
        [0x28, 0xb5, 0x2f, 0xfd] | [0x50..=0x5f, 0x2a, 0x4d, 0x18] => {
            let mut zst =
                zstd::stream::read::Decoder::new(&mut stream).map_err(UnpackError::Read)?;
            zst.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(UnpackError::Read)?;
            unpack_compressed(zst, root)?
        }
        _ => unpack_tar(&mut stream, root)?,
    };
    // Everything is read, so a hashing reader underneath sees the whole blob.
    io::copy(&mut stream, &mut io::sink()).map_err(UnpackError::Read)?;
    Ok(stats)
}

/// The largest zstd window a layer may ask for: libzstd's own default, the
/// most `zstd -d` takes without `--memory`, so `--long` layers decode. Each
/// layer being unpacked holds its window in RAM (8 MiB at level 19), so
/// this bounds what a registry can make a pull allocate.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

fn unpack_compressed(mut decoder: impl Read, root: Root) -> Result<UnpackStats, UnpackError> {
    let stats = unpack_tar(&mut decoder, root)?;
    // Past the tar end marker there is the rest of the tar record and the
    // compressor's trailer; some tools append padding after that, which a
    // gzip reader calls an invalid header, and zstd:chunked its table of
    // contents. containerd never looks there, so neither do we: the digest
    // of the compressed bytes is what guarantees integrity.
    if let Err(e) = io::copy(&mut decoder, &mut io::sink()) {
        log::debug!("ignoring what follows the layer's tar stream: {e}");
    }
    Ok(stats)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn unpack_tar(reader: &mut dyn Read, root: Root) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut u = Unpacker {
        root,
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
        buf: vec![0; 256 * 1024],
        xattr_warned: false,
    };
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        u.entry(&mut entry)?;
    }
    // Directory mtimes last: creating anything inside a directory bumps it.
    for (path, times) in &u.dir_times {
        if let Ok(fd) = u.root.open_dir(&path.0, false) {
            let _ = rustix::fs::futimens(&fd, times);
        }
    }
    Ok(u.stats)
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: Timestamps,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Unpacker {
    root: Root,
    stats: UnpackStats,
    dir_times: Vec<(RelPath, Timestamps)>,
    buf: Vec<u8>,
    xattr_warned: bool,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = e.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) || kind.as_byte() == b'V'
        {
            return Ok(());
        }
        self.stats.entries += 1;
        let raw_path = e.path().map_err(UnpackError::Read)?.into_owned();
        let path = RelPath::clean(&raw_path).ok_or_else(|| UnpackError::Escape {
            path: raw_path.display().to_string(),
        })?;
        let meta = meta(e, &path)?;

        let Some((parent, name)) = path.split_last() else {
            // The archive root itself ("./"): only its metadata matters.
            if kind == EntryType::Directory {
                let fd = self
                    .root
                    .open_dir(&[], false)
                    .map_err(UnpackError::fs("opening", &path))?;
                self.set_dir_meta(&fd, &path, &meta)?;
            }
            return Ok(());
        };

        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&path, parent, name);
        }

        let dir = self
            .root
            .open_dir(parent, true)
            .map_err(UnpackError::fs("creating the parent directory of", &path))?;

        match kind {
            EntryType::Directory => {
                match file_type_at(&dir, name).map_err(UnpackError::fs("inspecting", &path))? {
                    Some(FileType::Directory) => {}
                    existing => {
                        if existing.is_some() {
                            remove_all_at(&dir, name)
                                .map_err(UnpackError::fs("replacing", &path))?;
                        }
                        rustix::fs::mkdirat(&dir, name, Mode::from(0o700))
                            .map_err(UnpackError::fs("creating directory", &path))?;
                    }
                }
                let fd = rustix::fs::openat(&dir, name, dir_flags(), Mode::empty())
                    .map_err(UnpackError::fs("opening", &path))?;
                self.set_dir_meta(&fd, &path, &meta)
            }
            EntryType::Link => {
                let target = link_target(e, &path)?;
                if target == path {
                    return Ok(());
                }
                let Some((tparent, tname)) = target.split_last() else {
                    return Err(UnpackError::Invalid {
                        path: path.display(),
                        what: "hard link to the layer root",
                    });
                };
                let tdir = self
                    .root
                    .open_dir(tparent, false)
                    .map_err(UnpackError::fs("finding the hard link target", &target))?;
                self.make_room(&dir, name, &path)?;
                rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty()).map_err(|e| {
                    UnpackError::Fs {
                        op: "hard linking",
                        path: format!("{} -> {}", path.display(), target.display()),
                        source: e.into(),
                    }
                })
            }
            EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .filter(|t| !t.as_os_str().is_empty())
                    .ok_or_else(|| UnpackError::Invalid {
                        path: path.display(),
                        what: "symlink without a target",
                    })?
                    .into_owned();
                self.make_room(&dir, name, &path)?;
                rustix::fs::symlinkat(&target, &dir, name)
                    .map_err(UnpackError::fs("creating symlink", &path))?;
                self.set_node_meta(&dir, name, &path, &meta, false)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let h = e.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                self.make_room(&dir, name, &path)?;
                rustix::fs::mknodat(&dir, name, ft, Mode::from(0o600), dev)
                    .map_err(UnpackError::fs("creating node", &path))?;
                self.set_node_meta(&dir, name, &path, &meta, true)
            }
            // Regular files, and whatever else: POSIX says unknown types are
            // regular files.
            _ => {
                self.make_room(&dir, name, &path)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from(0o600),
                )
                .map_err(UnpackError::fs("creating", &path))?;
                let mut file = File::from(fd);
                self.copy_data(e, &mut file, &path)?;
                let fd = OwnedFd::from(file);
                set_owner_mode(&fd, &path, &meta)?;
                self.set_xattrs(&fd, &path, &meta);
                rustix::fs::futimens(&fd, &meta.times)
                    .map_err(UnpackError::fs("setting times of", &path))
            }
        }
    }

    /// A later member replaces an earlier one of the same name, whatever
    /// either is.
    fn make_room(&self, dir: &OwnedFd, name: &OsStr, path: &RelPath) -> Result<(), UnpackError> {
        match file_type_at(dir, name).map_err(UnpackError::fs("inspecting", path))? {
            None => Ok(()),
            Some(FileType::Directory) => remove_all_at(dir, name)
                .map(drop)
                .map_err(UnpackError::fs("replacing", path)),
            Some(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(UnpackError::fs("replacing", path)),
        }
    }

    fn whiteout(
        &mut self,
        path: &RelPath,
        parent: &[OsString],
        name: &OsStr,
    ) -> Result<(), UnpackError> {
        let bytes = name.as_bytes();
        if bytes == OPAQUE_MARKER {
            let dir = self
                .root
                .open_dir(parent, true)
                .map_err(UnpackError::fs("creating the opaque directory", path))?;
            rustix::fs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(
                UnpackError::fs("marking opaque (needs trusted.* xattrs)", path),
            )?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if bytes.starts_with(b".wh..wh.") {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here.
            return Ok(());
        }
        let hidden = OsStr::from_bytes(&bytes[WHITEOUT_PREFIX.len()..]);
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::Invalid {
                path: path.display(),
                what: "whiteout of nothing",
            });
        }
        let dir = self
            .root
            .open_dir(parent, true)
            .map_err(UnpackError::fs("creating the parent directory of", path))?;
        // Whiteouts only hide lower layers: a same-named member of this very
        // layer stays (and already hides the lower one by itself).
        if file_type_at(&dir, hidden)
            .map_err(UnpackError::fs("inspecting", path))?
            .is_none()
        {
            rustix::fs::mknodat(
                &dir,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(UnpackError::fs("creating the whiteout for", path))?;
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn copy_data(
        &mut self,
        from: &mut impl Read,
        to: &mut File,
        path: &RelPath,
    ) -> Result<(), UnpackError> {
        loop {
            let n = match from.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            };
            to.write_all(&self.buf[..n])
                .map_err(UnpackError::fs("writing", path))?;
            self.stats.bytes += n as u64;
        }
    }

    fn set_dir_meta(
        &mut self,
        fd: &OwnedFd,
        path: &RelPath,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        set_owner_mode(fd, path, meta)?;
        self.set_xattrs(fd, path, meta);
        self.dir_times.push((path.clone(), meta.times.clone()));
        Ok(())
    }

    /// Symlinks, devices and fifos: no descriptor to work on, so by name.
    fn set_node_meta(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &RelPath,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(UnpackError::fs("changing owner of", path))?;
        if chmod {
            // Not a symlink (we just made it), so following is harmless.
            rustix::fs::chmodat(dir, name, Mode::from(meta.mode), AtFlags::empty())
                .map_err(UnpackError::fs("changing mode of", path))?;
        }
        rustix::fs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(UnpackError::fs("setting times of", path))
    }

    /// Xattrs are best effort: a cache filesystem without `security.*` or
    /// `user.*` support should degrade the image, not fail the boot.
    fn set_xattrs(&mut self, fd: &OwnedFd, path: &RelPath, meta: &Meta) {
        for (name, value) in &meta.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty())
            {
                if !self.xattr_warned {
                    self.xattr_warned = true;
                    log::warn!(
                        "cannot set xattr {} on {} ({e}); further xattr errors in this \
                         layer are not reported",
                        name.to_string_lossy(),
                        path.display()
                    );
                }
            }
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Ownership first: chown clears setuid bits and file capabilities, which
/// the mode and the xattrs then put back.
fn set_owner_mode(fd: &OwnedFd, path: &RelPath, meta: &Meta) -> Result<(), UnpackError> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(meta.uid)),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
    )
    .map_err(UnpackError::fs("changing owner of", path))?;
    rustix::fs::fchmod(fd, Mode::from(meta.mode)).map_err(UnpackError::fs("changing mode of", path))
}

fn link_target<R: Read>(e: &tar::Entry<'_, R>, path: &RelPath) -> Result<RelPath, UnpackError> {
    let target: Cow<'_, Path> =
        e.link_name()
            .map_err(UnpackError::Read)?
            .ok_or_else(|| UnpackError::Invalid {
                path: path.display(),
                what: "hard link without a target",
            })?;
    RelPath::clean(&target).ok_or_else(|| UnpackError::Escape {
        path: format!("{} -> {}", path.display(), target.display()),
    })
}

fn meta<R: Read>(e: &mut tar::Entry<'_, R>, path: &RelPath) -> Result<Meta, UnpackError> {
    let h = e.header();
    let invalid = |what| UnpackError::Invalid {
        path: path.display(),
        what,
    };
    let mode = h.mode().map_err(|_| invalid("bad mode"))? & 0o7777;
    let mut uid = h.uid().map_err(|_| invalid("bad uid"))?;
    let mut gid = h.gid().map_err(|_| invalid("bad gid"))?;
    let mut mtime = (h.mtime().unwrap_or(0) as i64, 0i64);
    let mut xattrs = Vec::new();

    if let Some(pax) = e.pax_extensions().map_err(UnpackError::Read)? {
        for ext in pax {
            let ext = ext.map_err(UnpackError::Read)?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            match key {
                b"uid" => uid = parse_u64(value).ok_or_else(|| invalid("bad pax uid"))?,
                b"gid" => gid = parse_u64(value).ok_or_else(|| invalid("bad pax gid"))?,
                b"mtime" => {
                    mtime = parse_pax_time(value).ok_or_else(|| invalid("bad pax mtime"))?
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        // Overlay metadata comes from whiteout markers only: a
                        // layer must not smuggle in redirects or opaque flags.
                        if !name.starts_with(b"trusted.overlay.") {
                            xattrs.push((OsStr::from_bytes(name).to_os_string(), value.to_vec()));
                        }
                    }
                }
            }
        }
    }
    let uid = u32::try_from(uid).map_err(|_| invalid("uid out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| invalid("gid out of range"))?;
    let ts = Timespec {
        tv_sec: mtime.0,
        tv_nsec: mtime.1,
    };
    Ok(Meta {
        mode,
        uid,
        gid,
        times: Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        xattrs,
    })
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.25`.
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    if secs < 0 && nanos > 0 {
        // "-1.5" is 1.5 s before the epoch.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.25"),
            Some((1_700_000_000, 250_000_000))
        );
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
