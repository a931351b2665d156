//! Loading the kernel modules shipped in the initramfs, dependencies first.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::Error;

/// What `depmod` wrote: module paths, their dependencies and soft
/// dependencies, keyed by module name (`-` and `_` are the same to the
/// kernel, we normalise to `_`).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    root: PathBuf,
    /// Every module in modules.dep order.
    order: Vec<String>,
    paths: HashMap<String, PathBuf>,
    deps: HashMap<String, Vec<String>>,
    pre: HashMap<String, Vec<String>>,
}

/// `kernel/fs/ext4/ext4.ko` → `ext4`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    stem.replace('-', "_")
}

impl ModuleIndex {
    /// Parses `modules.dep` and `modules.softdep` text (pure).
    pub fn parse(root: &Path, dep: &str, softdep: &str) -> ModuleIndex {
        let mut index = ModuleIndex {
            root: root.to_path_buf(),
            ..Default::default()
        };
        for line in dep.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let name = module_name(module);
            index.order.push(name.clone());
            index
                .paths
                .insert(name.clone(), PathBuf::from(module.trim()));
            index
                .deps
                .insert(name, deps.split_whitespace().map(module_name).collect());
        }
        // "softdep ext4 pre: crc32c post: ..."
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next().map(module_name) else {
                continue;
            };
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    m if in_pre => index
                        .pre
                        .entry(name.clone())
                        .or_default()
                        .push(module_name(m)),
                    _ => {}
                }
            }
        }
        index
    }

    /// Reads the index of `/lib/modules/<release>`. An initramfs without
    /// modules (a kernel with everything built in) gives an empty index.
    pub fn load(root: &Path) -> Result<ModuleIndex, Error> {
        let read = |f: &str| match std::fs::read_to_string(root.join(f)) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io(root.join(f), e)),
        };
        Ok(Self::parse(
            root,
            &read("modules.dep")?,
            &read("modules.softdep")?,
        ))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.paths.contains_key(&name.replace('-', "_"))
    }

    /// Every shipped module.
    pub fn all(&self) -> &[String] {
        &self.order
    }

    /// The files to load for `names`, each once, every module after its
    /// dependencies and soft pre-dependencies.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<PathBuf>, Error> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            self.visit(&name.replace('-', "_"), &mut seen, &mut out)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        out: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let path = self
            .paths
            .get(name)
            .ok_or_else(|| Error::ModuleNotFound(name.to_string()))?;
        // A soft dependency that isn't shipped is optional by definition.
        for pre in self.pre.get(name).into_iter().flatten() {
            if self.paths.contains_key(pre) {
                self.visit(pre, seen, out)?;
            }
        }
        // depmod lists dependencies so that the last one must load first.
        for dep in self.deps.get(name).into_iter().flatten().rev() {
            self.visit(dep, seen, out)?;
        }
        out.push(self.root.join(path));
        Ok(())
    }
}

/// Loads one module file. Already loaded (or built in) is success.
pub fn insmod(path: &Path) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::Module {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio-blk.ko:
";
    const SOFTDEP: &str = "# comment\nsoftdep ext4 pre: crc32c_generic missing_mod post: foo\n";

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| module_name(p.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let idx = ModuleIndex::parse(Path::new("/lib/modules/6.1"), DEP, SOFTDEP);
        let order = idx
            .load_order(&["virtio_net".into(), "ext4".into(), "net_failover".into()])
            .unwrap();
        assert_eq!(
            names(&order),
            [
                "failover",
                "net_failover",
                "virtio_net",
                "crc32c_generic",
                "crc16",
                "jbd2",
                "mbcache",
                "ext4"
            ]
        );
        assert_eq!(
            order[0],
            Path::new("/lib/modules/6.1/kernel/net/core/failover.ko")
        );
    }

    #[test]
    fn dashes_and_underscores_are_the_same_module() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP, "");
        assert!(idx.contains("virtio-blk") && idx.contains("virtio_blk"));
        assert_eq!(idx.all().len(), 9);
    }

    #[test]
    fn unknown_module_is_an_error_naming_it() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP, "");
        let e = idx.load_order(&["nvidia".into()]).unwrap_err();
        assert!(e.to_string().contains("nvidia"), "{e}");
    }
}
