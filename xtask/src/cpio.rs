//! A reproducible newc cpio writer: sorted entries, fixed owners and
//! mtimes, so that two builds of the same inputs are byte-identical.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, source: PathBuf },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// The archive's content, keyed by path inside the archive (no leading
/// slash). A BTreeMap gives the sorted order for free.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    /// An archive with `init` and the /dev/console node the kernel opens
    /// for it before anything is mounted.
    pub fn for_init(init: &Path) -> Result<Archive> {
        let mut archive = Archive::default();
        archive.add_file("init", init)?;
        archive.add(
            "dev/console",
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        Ok(archive)
    }

    /// Adds a node and every missing parent directory.
    pub fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir { mode: 0o755 });
            parent = p.parent();
        }
        self.entries.insert(path, node);
    }

    /// Adds a host file, keeping its permission bits.
    pub fn add_file(&mut self, path: &str, source: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(source)
            .map_err(|e| format!("{}: {e}", source.display()))?
            .permissions()
            .mode()
            & 0o7777;
        self.add(
            path,
            Node::File {
                mode,
                source: source.to_path_buf(),
            },
        );
        Ok(())
    }

    /// Adds a host directory tree (files, dirs, symlinks) under `prefix`.
    pub fn add_tree(&mut self, prefix: &str, dir: &Path) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = format!("{prefix}/{}", entry.file_name().to_string_lossy());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.add(&path, Node::Dir { mode: 0o755 });
                self.add_tree(&path, &entry.path())?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                self.add(
                    &path,
                    Node::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    },
                );
            } else {
                self.add_file(&path, &entry.path())?;
            }
        }
        Ok(())
    }

    /// The same content as a tar (sorted, owned by root, mtime 0), for
    /// what the init unpacks itself: it reads tar, not cpio.
    pub fn write_tar(&self, out: impl Write) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        for (path, node) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            match node {
                Node::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    tar.append_data(&mut header, path, std::io::empty())?;
                }
                Node::File { mode, source } => {
                    let data =
                        std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, &data[..])?;
                }
                Node::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    tar.append_link(&mut header, path, target)?;
                }
                Node::CharDev { .. } => {
                    return Err(format!("{path}: a device node has no place in a tar").into())
                }
            }
        }
        tar.into_inner()?.flush()?;
        Ok(())
    }

    pub fn write(&self, out: &mut impl Write) -> Result<u64> {
        let mut w = CountingWriter {
            inner: out,
            count: 0,
        };
        for (ino, (path, node)) in self.entries.iter().enumerate() {
            let (mode, data, rdev) = match node {
                Node::Dir { mode } => (0o040000 | mode, Vec::new(), (0, 0)),
                Node::File { mode, source } => (
                    0o100000 | mode,
                    std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?,
                    (0, 0),
                ),
                Node::Symlink { target } => (0o120777, target.as_bytes().to_vec(), (0, 0)),
                Node::CharDev { mode, major, minor } => {
                    (0o020000 | mode, Vec::new(), (*major, *minor))
                }
            };
            let nlink = if matches!(node, Node::Dir { .. }) {
                2
            } else {
                1
            };
            write_entry(&mut w, ino as u32 + 1, path, mode, nlink, rdev, &data)?;
        }
        write_entry(&mut w, 0, "TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(w.count)
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> CountingWriter<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.count += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> std::io::Result<()> {
        let pad = (4 - self.count % 4) % 4;
        self.put(&[0; 3][..pad as usize])
    }
}

fn write_entry<W: Write>(
    w: &mut CountingWriter<W>,
    ino: u32,
    name: &str,
    mode: u32,
    nlink: u32,
    (rmajor, rminor): (u32, u32),
    data: &[u8],
) -> std::io::Result<()> {
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {dmaj:08x}{dmin:08x}{rmajor:08x}{rminor:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        size = data.len(),
        dmaj = 0,
        dmin = 0,
        namesize = name.len() + 1,
        check = 0,
    );
    w.put(header.as_bytes())?;
    w.put(name.as_bytes())?;
    w.put(&[0])?;
    w.pad4()?;
    w.put(data)?;
    w.pad4()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(dir: &Path) -> Vec<u8> {
        let mut a = Archive::default();
        a.add(
            "dev/console",
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        a.add_tree("etc", dir).unwrap();
        a.add(
            "init",
            Node::Symlink {
                target: "bin/init".into(),
            },
        );
        let mut out = Vec::new();
        a.write(&mut out).unwrap();
        out
    }

    #[test]
    fn same_inputs_same_bytes_whatever_the_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), "bee").unwrap();
        std::fs::write(dir.path().join("a"), "a").unwrap();
        let first = build(dir.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("a"), "a").unwrap();
        assert_eq!(first, build(dir.path()));
    }

    #[test]
    fn newc_layout_is_what_cpio_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "hello").unwrap();
        let bytes = build(dir.path());
        assert_eq!(bytes.len() % 4, 0);
        let cpio = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut cpio) = cpio else {
            panic!("cpio is needed for this test: apt-get install cpio");
        };
        cpio.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = cpio.wait_with_output().unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        // Sorted, parents first, and parents added implicitly.
        assert_eq!(listing, "dev\ndev/console\netc\netc/f\ninit\n");
    }
}
