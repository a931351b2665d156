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
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, CWD};

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
pub(crate) fn file_type_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from `dir`, recursively if it is a directory, never
/// following symlinks.
pub(crate) fn remove_all_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match file_type_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
            empty_dir(&sub)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            Ok(())
        }
        Some(_) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(())
        }
    }
}

fn empty_dir(dir: &OwnedFd) -> io::Result<()> {
    let mut names = Vec::new();
    let mut it = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = it.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(OsStr::from_bytes(name.to_bytes()).to_os_string());
        }
    }
    for name in names {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// Removes a whole tree given by an ordinary path (the store's own temporary
/// directories): the top is ours, everything below is handled without
/// following symlinks.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
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
