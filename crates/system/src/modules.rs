//! Loading the kernel modules shipped in the initramfs: the drivers of
//! the devices present (matched by modalias, as udev's coldplug does), the
//! modules a phase needs by name or alias, dependencies first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::Error;

/// What `depmod` wrote: module paths, their dependencies, soft
/// dependencies and aliases, keyed by module name (`-` and `_` are the
/// same to the kernel, we normalise to `_`).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    root: PathBuf,
    /// Every module in modules.dep order.
    order: Vec<String>,
    paths: HashMap<String, PathBuf>,
    deps: HashMap<String, Vec<String>>,
    pre: HashMap<String, Vec<String>>,
    /// (normalised fnmatch pattern, module), in modules.alias order.
    aliases: Vec<(String, String)>,
}

/// `kernel/fs/ext4/ext4.ko` → `ext4`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    stem.replace('-', "_")
}

/// `-` → `_` outside bracket expressions, as kmod normalises both the
/// aliases depmod indexes and the names it looks up.
fn normalise_alias(alias: &str) -> String {
    let mut in_class = false;
    alias
        .chars()
        .map(|c| match c {
            '[' => {
                in_class = true;
                c
            }
            ']' => {
                in_class = false;
                c
            }
            '-' if !in_class => '_',
            c => c,
        })
        .collect()
}

/// fnmatch(3) without flags, which is how kmod matches a modalias against
/// `modules.alias`: `*`, `?` and `[...]` (with `!` or `^` and ranges). The
/// glob crate would give `/` and `**` a path meaning these patterns lack.
pub fn alias_matches(pattern: &str, text: &str) -> bool {
    let (pat, txt) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much of the text it has eaten.
    let mut star: Option<(usize, usize)> = None;
    while t < txt.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match bracket(pat, p, txt[t]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                // An unclosed `[` is a literal.
                None => (txt[t] == b'[').then_some(p + 1),
            },
            Some(&c) => (c == txt[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            (None, None) => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression at `pat[open]`: whether it
/// matched and where the pattern goes on, or None if it is not closed.
fn bracket(pat: &[u8], open: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pat.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        match (pat.get(i + 1), pat.get(i + 2)) {
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                matched |= (lo..=hi).contains(&c);
                i += 3;
            }
            _ => {
                matched |= lo == c;
                i += 1;
            }
        }
    }
}

impl ModuleIndex {
    /// Parses `modules.dep`, `modules.softdep` and `modules.alias` text
    /// (pure).
    pub fn parse(root: &Path, dep: &str, softdep: &str, alias: &str) -> ModuleIndex {
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
        // "softdep ext4 pre: crypto-crc32c post: ..."
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
                        .push(m.to_string()),
                    _ => {}
                }
            }
        }
        // "alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e"
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                index
                    .aliases
                    .push((normalise_alias(pattern), module_name(module)));
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
            &read("modules.alias")?,
        ))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.paths.contains_key(&name.replace('-', "_"))
    }

    /// Every shipped module.
    pub fn all(&self) -> &[String] {
        &self.order
    }

    /// The modules a name stands for, as modprobe resolves it: a module of
    /// that name, else every module with a matching alias (`fs-ext4`,
    /// `crypto-crc32c`, a device's modalias). Empty when nothing shipped
    /// answers to it.
    pub fn resolve(&self, name: &str) -> Vec<String> {
        let module = name.replace('-', "_");
        if self.paths.contains_key(&module) {
            return vec![module];
        }
        let name = normalise_alias(name);
        let mut found: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if alias_matches(pattern, &name) && !found.contains(module) {
                found.push(module.clone());
            }
        }
        found
    }

    /// The files to load for `names` (module names or aliases), each once,
    /// every module after its dependencies and soft pre-dependencies.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<PathBuf>, Error> {
        Ok(self.plan(names)?.into_iter().map(|s| s.path).collect())
    }

    /// [`load_order`](Self::load_order), saying which files are only soft
    /// dependencies: those may fail (crc32c-intel on a CPU without
    /// SSE4.2, beside crc32c-generic) without failing what needs them.
    pub fn plan(&self, names: &[String]) -> Result<Vec<LoadStep>, Error> {
        let mut plan = Plan::default();
        for name in names {
            let modules = self.resolve(name);
            if modules.is_empty() {
                return Err(Error::ModuleNotFound(name.clone()));
            }
            for module in modules {
                self.visit(&module, false, &mut plan)?;
            }
        }
        Ok(plan.steps)
    }

    fn visit(&self, name: &str, optional: bool, plan: &mut Plan) -> Result<(), Error> {
        if let Some(&at) = plan.seen.get(name) {
            // Needed for real after all: so is everything it needs. (None:
            // still being visited, a dependency cycle.)
            if let Some(at) = at.filter(|&at| !optional && plan.steps[at].optional) {
                plan.steps[at].optional = false;
                for dep in self.deps.get(name).into_iter().flatten() {
                    self.visit(dep, false, plan)?;
                }
            }
            return Ok(());
        }
        let path = self
            .paths
            .get(name)
            .ok_or_else(|| Error::ModuleNotFound(name.to_string()))?;
        plan.seen.insert(name.to_string(), None);
        // A soft dependency that isn't shipped is optional by definition.
        for pre in self.pre.get(name).into_iter().flatten() {
            for module in self.resolve(pre) {
                self.visit(&module, true, plan)?;
            }
        }
        // depmod lists dependencies so that the last one must load first.
        for dep in self.deps.get(name).into_iter().flatten().rev() {
            self.visit(dep, optional, plan)?;
        }
        plan.seen.insert(name.to_string(), Some(plan.steps.len()));
        plan.steps.push(LoadStep {
            path: self.root.join(path),
            optional,
        });
        Ok(())
    }
}

/// One module file to load, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStep {
    pub path: PathBuf,
    /// Only a soft dependency: failing to load it is not an error.
    pub optional: bool,
}

#[derive(Default)]
struct Plan {
    steps: Vec<LoadStep>,
    /// Module name → index in `steps`, once it is there.
    seen: HashMap<String, Option<usize>>,
}

/// The modalias of every device the kernel knows, from
/// `/sys/bus/*/devices/*/modalias`, each once.
pub fn device_modaliases(sys_bus: &Path) -> BTreeSet<String> {
    let entries = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
    };
    entries(sys_bus)
        .flat_map(|bus| entries(&bus.join("devices")).collect::<Vec<_>>())
        .filter_map(|device| std::fs::read_to_string(device.join("modalias")).ok())
        .map(|alias| alias.trim().to_string())
        .filter(|alias| !alias.is_empty())
        .collect()
}

/// The kernel modules of this boot: what was loaded, so that each phase
/// can ask for what it needs and only new modules cost an `insmod`.
#[derive(Debug)]
pub struct Modules {
    index: ModuleIndex,
    loaded: HashSet<PathBuf>,
    /// Module names, in load order, for the console.
    names: Vec<String>,
}

/// What went wrong in a coldplug ([`Modules::loaded`] says what loaded).
#[derive(Debug, Default)]
pub struct Coldplug {
    /// A driver that would not load leaves its device unused; the boot
    /// goes on, and fails later only if it needed that device.
    pub failed: Vec<Error>,
}

/// A driver that binds may add devices of its own (virtio_pci adds the
/// virtio devices), so coldplug repeats; buses are not nested deeper.
const COLDPLUG_ROUNDS: usize = 8;

impl Modules {
    pub fn new(index: ModuleIndex) -> Modules {
        Modules {
            index,
            loaded: HashSet::new(),
            names: Vec::new(),
        }
    }

    /// The index of `/lib/modules/<release>`.
    pub fn open(root: &Path) -> Result<Modules, Error> {
        Ok(Self::new(ModuleIndex::load(root)?))
    }

    /// Loads `names` (module names or aliases) and what they need. A name
    /// nothing shipped answers to is an error.
    pub fn load(&mut self, names: &[String]) -> Result<Vec<String>, Error> {
        let plan = self.index.plan(names)?;
        self.insmod_new(plan)
    }

    /// Like `load`, but a name nothing shipped answers to is skipped: the
    /// kernel may have it built in.
    pub fn load_shipped(&mut self, names: &[String]) -> Result<Vec<String>, Error> {
        let shipped: Vec<String> = names.iter().filter(|n| self.ships(n)).cloned().collect();
        self.load(&shipped)
    }

    /// Whether a module answers to this name or alias in the initramfs.
    pub fn ships(&self, name: &str) -> bool {
        !self.index.resolve(name).is_empty()
    }

    /// Loads the drivers of the devices under `sys_bus` (`/sys/bus`), then
    /// of the devices those drivers add, until nothing new matches.
    pub fn coldplug(&mut self, sys_bus: &Path) -> Coldplug {
        let mut report = Coldplug::default();
        let mut tried = HashSet::new();
        for _ in 0..COLDPLUG_ROUNDS {
            let started = std::time::Instant::now();
            let devices = device_modaliases(sys_bus);
            let wanted: Vec<String> = devices
                .iter()
                .flat_map(|alias| self.index.resolve(alias))
                .filter(|module| tried.insert(module.clone()))
                .collect();
            log::debug!(
                "coldplug: {} device modaliases, new drivers: {:?} ({} ms)",
                devices.len(),
                wanted,
                started.elapsed().as_millis()
            );
            if wanted.is_empty() {
                break;
            }
            for module in wanted {
                if let Err(e) = self.load(std::slice::from_ref(&module)) {
                    report.failed.push(e);
                }
            }
        }
        report
    }

    /// Every module loaded so far, in order.
    pub fn loaded(&self) -> &[String] {
        &self.names
    }

    /// [`coldplug`](Self::coldplug), while another thread loads `names`
    /// (module names or aliases) and what they need: a module no device
    /// asks for, such as overlay, need not wait for the drivers' probes.
    /// Both are done when this returns.
    pub fn coldplug_while_loading(
        &mut self,
        sys_bus: &Path,
        names: &[String],
    ) -> (Coldplug, Result<Vec<String>, Error>) {
        let plan: Vec<LoadStep> = match self.index.plan(names) {
            Ok(plan) => plan
                .into_iter()
                .filter(|s| !self.loaded.contains(&s.path))
                .collect(),
            Err(e) => return (self.coldplug(sys_bus), Err(e)),
        };
        let (report, (paths, done)) = std::thread::scope(|scope| {
            let other = scope.spawn(|| insmod_steps(plan));
            let report = self.coldplug(sys_bus);
            (report, other.join().expect("the insmod thread panicked"))
        });
        let names = self.record(paths);
        (report, done.map(|()| names))
    }

    fn insmod_new(&mut self, plan: Vec<LoadStep>) -> Result<Vec<String>, Error> {
        let plan = plan
            .into_iter()
            .filter(|s| !self.loaded.contains(&s.path))
            .collect();
        let (paths, done) = insmod_steps(plan);
        let names = self.record(paths);
        done.map(|()| names)
    }

    /// Notes modules as loaded; returns the names of those that were not.
    fn record(&mut self, paths: Vec<PathBuf>) -> Vec<String> {
        let mut names = Vec::new();
        for path in paths {
            if self.loaded.contains(&path) {
                continue;
            }
            let name = module_name(&path.to_string_lossy());
            self.names.push(name.clone());
            names.push(name);
            self.loaded.insert(path);
        }
        names
    }
}

/// Loads the steps in order, until one that is not optional fails: the
/// files loaded, and how it ended.
fn insmod_steps(plan: Vec<LoadStep>) -> (Vec<PathBuf>, Result<(), Error>) {
    let mut loaded = Vec::new();
    for step in plan {
        let started = std::time::Instant::now();
        match insmod(&step.path) {
            Ok(()) => log::debug!(
                "insmod {} ({} ms)",
                step.path.display(),
                started.elapsed().as_millis()
            ),
            Err(e) if step.optional => {
                log::debug!("optional {e}");
                continue;
            }
            Err(e) => return (loaded, Err(e)),
        }
        loaded.push(step.path);
    }
    (loaded, Ok(()))
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
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/block/virtio-blk.ko:
kernel/drivers/virtio/virtio_pci.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
";
    const SOFTDEP: &str = "# comment\nsoftdep ext4 pre: crypto-crc32c missing_mod post: foo\n";
    // As depmod writes it, dashes and all.
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias fs-ext4 ext4
alias ext3 ext4
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias crypto-crc32c crc32c_intel
alias virtio:d00000002v* virtio_blk
alias virtio:d00000001v* virtio_net
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v00008086d000010D4sv*sd*bc*sc*i* e1000e
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(Path::new("/lib/modules/6.1"), DEP, SOFTDEP, ALIAS)
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| module_name(p.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let order = index()
            .load_order(&["virtio_net".into(), "ext4".into(), "net_failover".into()])
            .unwrap();
        assert_eq!(
            names(&order),
            [
                "failover",
                "net_failover",
                "virtio_net",
                // ext4's soft dependency, named by an alias.
                "crc32c_generic",
                "crc32c_intel",
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
        let idx = index();
        assert!(idx.contains("virtio-blk") && idx.contains("virtio_blk"));
        assert_eq!(idx.all().len(), 12);
        assert_eq!(
            idx.resolve("crypto_crc32c"),
            ["crc32c_generic", "crc32c_intel"]
        );
    }

    #[test]
    fn soft_dependencies_are_optional_unless_needed_for_real() {
        let optional = |names: &[&str]| -> Vec<(String, bool)> {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            index()
                .plan(&names)
                .unwrap()
                .into_iter()
                .map(|s| (module_name(s.path.to_str().unwrap()), s.optional))
                .filter(|(_, optional)| *optional)
                .collect()
        };
        assert_eq!(
            optional(&["ext4"]),
            [
                ("crc32c_generic".to_string(), true),
                ("crc32c_intel".to_string(), true)
            ]
        );
        assert_eq!(
            optional(&["ext4", "crc32c_generic"]),
            [("crc32c_intel".to_string(), true)]
        );
    }

    #[test]
    fn unknown_module_is_an_error_naming_it() {
        let e = index().load_order(&["nvidia".into()]).unwrap_err();
        assert!(e.to_string().contains("nvidia"), "{e}");
    }

    #[test]
    fn names_resolve_through_aliases_like_modprobe() {
        let idx = index();
        assert_eq!(idx.resolve("fs-ext4"), ["ext4"]);
        assert_eq!(idx.resolve("ext4"), ["ext4"]);
        assert_eq!(idx.resolve("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(
            idx.resolve("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"),
            ["e1000e"]
        );
        // A QEMU host bridge: nothing shipped drives it.
        assert!(idx
            .resolve("pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00")
            .is_empty());
        assert!(idx.resolve("fs-nfs").is_empty());
        let names = names(&idx.load_order(&["fs-ext4".into()]).unwrap());
        assert_eq!(names.last().map(String::as_str), Some("ext4"));
    }

    #[test]
    fn alias_patterns_are_fnmatch() {
        let yes = [
            ("", ""),
            ("*", ""),
            ("*", "anything"),
            ("a*b*c", "aXXbYYbc"),
            ("pci:v*d*sv*", "pci:v1d2sv3"),
            ("a?c", "abc"),
            ("[abc]x", "bx"),
            ("[a-f]9", "e9"),
            ("[!a-f]9", "z9"),
            ("[^a]", "b"),
            ("[]]", "]"),
            ("x[", "x["),
            ("dmi*:svn*LENOVO*:pn*", "dmi:bvnX:svnLENOVO:pn20XY:"),
        ];
        for (pattern, text) in yes {
            assert!(alias_matches(pattern, text), "{pattern} ~ {text}");
        }
        let no = [
            ("", "a"),
            ("abc", "ab"),
            ("ab", "abc"),
            ("a?c", "ac"),
            ("[a-f]9", "z9"),
            ("[!a-f]9", "c9"),
            ("a*b", "aXXc"),
            ("pci:v00008086d000010D3sv*", "pci:v00008086d000010D4sv0"),
        ];
        for (pattern, text) in no {
            assert!(!alias_matches(pattern, text), "{pattern} !~ {text}");
        }
    }

    #[test]
    fn dashes_in_aliases_are_normalised_outside_brackets() {
        assert_eq!(normalise_alias("fs-ext4"), "fs_ext4");
        assert_eq!(normalise_alias("of:N*T*C[a-z]-x"), "of:N*T*C[a-z]_x");
    }

    #[test]
    fn device_modaliases_are_read_from_every_bus() {
        let sys = std::env::temp_dir().join(format!("b2c-modalias-{}", std::process::id()));
        let device = |bus: &str, dev: &str, alias: Option<&str>| {
            let dir = sys.join(bus).join("devices").join(dev);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(alias) = alias {
                std::fs::write(dir.join("modalias"), format!("{alias}\n")).unwrap();
            }
        };
        device(
            "pci",
            "0000:00:03.0",
            Some("pci:v00001AF4d00001000sv1sd1bc02sc00i00"),
        );
        device(
            "pci",
            "0000:00:00.0",
            Some("pci:v00008086d00001237sv0sd0bc06sc00i00"),
        );
        device("virtio", "virtio0", Some("virtio:d00000001v00001AF4"));
        device("virtio", "virtio1", Some("virtio:d00000001v00001AF4"));
        device("platform", "serial8250", None);
        let found = device_modaliases(&sys);
        std::fs::remove_dir_all(&sys).unwrap();
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [
                "pci:v00001AF4d00001000sv1sd1bc02sc00i00",
                "pci:v00008086d00001237sv0sd0bc06sc00i00",
                "virtio:d00000001v00001AF4",
            ]
        );
        assert!(device_modaliases(Path::new("/nonexistent")).is_empty());
    }
}
