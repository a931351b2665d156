//! Filesystem operations that cannot leave a directory tree.
//!
//! Every lookup goes through `openat2(RESOLVE_IN_ROOT)`: `..`, absolute
//! symlinks and symlinked parent directories are all resolved as if the tree
//! were `/`, so a layer holding `evil -> /etc` followed by `evil/passwd`
//! writes `<layer>/etc/passwd`, never the host's. The final component of a
//! path is always handled with `*at` calls on the parent's descriptor and
//! never followed.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, CWD};

/// A path inside the tree, lexically cleaned: only normal components, `.`
/// removed and `..` applied. Empty means the root itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RelPath(pub(crate) Vec<OsString>);

impl RelPath {
    /// Cleans a path from a tar header. Leading `/` is dropped (tar members
    /// are relative to the archive root whatever they say); a `..` that would
    /// climb above the root makes the path invalid (`None`).
    pub(crate) fn clean(path: &Path) -> Option<RelPath> {
        let mut parts: Vec<OsString> = Vec::new();
        for c in path.components() {
            match c {
                Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    parts.pop()?;
                }
                Component::Normal(p) => parts.push(p.to_os_string()),
            }
        }
        Some(RelPath(parts))
    }

    pub(crate) fn split_last(&self) -> Option<(&[OsString], &OsStr)> {
        let (last, parent) = self.0.split_last()?;
        Some((parent, last.as_os_str()))
    }

    pub(crate) fn display(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            s.push('/');
            s.push_str(&p.to_string_lossy());
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }
}

fn join(parts: &[OsString]) -> OsString {
    let mut s = OsString::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push("/");
        }
        s.push(p);
    }
    if s.is_empty() {
        s.push(".");
    }
    s
}

pub(crate) struct Root {
    fd: OwnedFd,
}

/// Lookups through [`Root`] follow symlinks, even in the last component
/// (kernel-confined by RESOLVE_IN_ROOT); everything else never does.
const RESOLVE_DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);
const DIR_FLAGS: OFlags = RESOLVE_DIR_FLAGS.union(OFlags::NOFOLLOW);

impl Root {
    pub(crate) fn open(dir: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(dir, RESOLVE_DIR_FLAGS, Mode::empty())?;
        Ok(Root { fd })
    }

    /// `openat2` beneath the root. EAGAIN means a rename elsewhere on the
    /// system raced with a `..` lookup: the kernel asks us to try again.
    fn resolve(&self, path: &OsStr, flags: OFlags) -> io::Result<OwnedFd> {
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                path,
                flags,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(rustix::io::Errno::AGAIN) if tries < 100 => tries += 1,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// Opens the directory `parts`, following symlinks inside the tree only.
    /// With `create`, missing directories are made (0755, root-owned, like
    /// other unpackers do for parents a tarball does not list).
    pub(crate) fn open_dir(&self, parts: &[OsString], create: bool) -> io::Result<OwnedFd> {
        match self.resolve(&join(parts), RESOLVE_DIR_FLAGS) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {}
            r => return r,
        }
        // Walk down from the root, creating what is missing. Each prefix is
        // resolved from the root again so symlinks keep their meaning.
        let mut dir = self.resolve(OsStr::new("."), RESOLVE_DIR_FLAGS)?;
        for i in 0..parts.len() {
            dir = match self.resolve(&join(&parts[..=i]), RESOLVE_DIR_FLAGS) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match rustix::fs::mkdirat(&dir, parts[i].as_os_str(), Mode::from(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // A dangling symlink makes mkdirat say EEXIST and the
                    // lookup fail again: reported as the NotFound it is.
                    self.resolve(&join(&parts[..=i]), RESOLVE_DIR_FLAGS)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }
}

/// What is at `name` in `dir`, without following a symlink.
pub(crate) fn file_type_at(dir: impl AsFd, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from `dir`, recursively if it is a directory, never
/// following symlinks; returns the disk space that freed.
///
/// A layer is untrusted input and may hold a tree thousands of levels
/// deep (deeper than `PATH_MAX` through symlinked parents): the walk keeps
/// one descriptor open whatever the depth (plus one while climbing back),
/// and the names of the levels above in memory. Each climb through `..` is
/// checked to land on the directory it came from.
pub(crate) fn remove_all_at(dir: &OwnedFd, name: &OsStr) -> io::Result<u64> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        return Ok(freed_by_unlink(&st));
    }
    let mut freed = 0;
    // The directories above the current one: the current one's name in
    // its parent, and the parent's identity.
    let mut above: Vec<(OsString, (u64, u64))> = Vec::new();
    let mut cur = Dir::new(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)?;
    loop {
        match clear_files(&mut cur, &mut freed)? {
            Some(sub) => {
                let here = identity(&cur.fd()?)?;
                let next =
                    rustix::fs::openat(cur.fd()?, sub.as_os_str(), DIR_FLAGS, Mode::empty())?;
                above.push((sub, here));
                cur = Dir::new(next)?;
            }
            None => {
                let Some((name_here, parent_id)) = above.pop() else {
                    break;
                };
                freed += rustix::fs::fstat(cur.fd()?)?.st_blocks as u64 * 512;
                let parent = rustix::fs::openat(cur.fd()?, "..", DIR_FLAGS, Mode::empty())?;
                if identity(&parent)? != parent_id {
                    return Err(io::Error::other(
                        "the tree was moved while it was being removed",
                    ));
                }
                rustix::fs::unlinkat(&parent, name_here.as_os_str(), AtFlags::REMOVEDIR)?;
                cur = Dir::new(parent)?;
            }
        }
    }
    freed += rustix::fs::fstat(cur.fd()?)?.st_blocks as u64 * 512;
    drop(cur);
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(freed)
}

/// Names read before unlinking them: a directory of a million files is
/// cleared in rounds of this many, in bounded memory.
const CLEAR_BATCH: usize = 1024;

/// Unlinks everything in `dir` that is not a directory; returns one
/// subdirectory, if there is any.
fn clear_files(dir: &mut Dir, freed: &mut u64) -> io::Result<Option<OsString>> {
    loop {
        dir.rewind();
        let mut files = Vec::new();
        let mut sub = None;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let name = OsStr::from_bytes(name.to_bytes()).to_os_string();
            let is_dir = match entry.file_type() {
                FileType::Unknown => file_type_at(dir.fd()?, &name)? == Some(FileType::Directory),
                t => t == FileType::Directory,
            };
            if !is_dir {
                files.push(name);
                if files.len() == CLEAR_BATCH {
                    break;
                }
            } else if sub.is_none() {
                sub = Some(name);
            }
        }
        let more = files.len() == CLEAR_BATCH;
        for name in files {
            match rustix::fs::statat(dir.fd()?, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    rustix::fs::unlinkat(dir.fd()?, name.as_os_str(), AtFlags::empty())?;
                    *freed += freed_by_unlink(&st);
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !more {
            return Ok(sub);
        }
    }
}

/// What unlinking a file with this status frees: its blocks if this was
/// its last name.
fn freed_by_unlink(st: &rustix::fs::Stat) -> u64 {
    if st.st_nlink <= 1 {
        st.st_blocks as u64 * 512
    } else {
        0
    }
}

fn identity(fd: &impl AsFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Removes a whole tree given by an ordinary path (the store's own temporary
/// directories, a container's scratch): the top is ours, everything below
/// is handled without following symlinks, whatever its depth. Returns the
/// disk space freed. Nothing (`ENOENT`) is not an error.
pub fn remove_tree(path: &Path) -> io::Result<u64> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no parent"));
    };
    let parent = rustix::fs::openat(CWD, parent, DIR_FLAGS, Mode::empty())?;
    remove_all_at(&parent, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> Option<Vec<String>> {
        RelPath::clean(Path::new(s)).map(|p| {
            p.0.iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn clean_paths() {
        assert_eq!(rp("./a/b/"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(rp("/etc/x"), Some(vec!["etc".into(), "x".into()]));
        assert_eq!(rp("a/../b"), Some(vec!["b".into()]));
        assert_eq!(rp("a//./b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(rp("./"), Some(vec![]));
        assert_eq!(rp("../escape"), None);
        assert_eq!(rp("a/../../escape"), None);
        assert_eq!(rp("/../x"), None);
    }
}
