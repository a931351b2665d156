//! Loading the kernel modules shipped in the initramfs: the drivers of
//! the devices present (matched by modalias, as udev's coldplug does) and
//! of those that appear later (kernel uevents, as udev's hot-plug does),
//! the modules a phase needs by name or alias, dependencies first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::devices::{self, Device};
use crate::uevents::{Received, Uevent, UeventSocket};
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
    /// `modules.alias`, normalised ([`normalise_aliases`]): the patterns
    /// and module names of `aliases` are ranges of it. One string rather
    /// than two per alias: the thousands of allocations were most of the
    /// index's read (150 ms under TCG with musl's malloc).
    alias_text: String,
    /// (fnmatch pattern, module), in modules.alias order.
    aliases: Vec<(Span, Span)>,
    /// Indexes into `aliases` by the first [`BUCKET`] bytes of their
    /// literal start (`pci:v00008086d`, `usb:v0BDAp8153`), sorted by key
    /// and within a key in alias order: a name is only matched against
    /// the patterns that can match it. Thousands of aliases (the farm's
    /// drivers) cost no more to look up than a few, which matters under
    /// TCG.
    buckets: Vec<([u8; BUCKET], u32)>,
    /// Patterns whose literal start is shorter (`acpi*:…`, `fs-ext4`).
    unbucketed: Vec<u32>,
}

/// A byte range of [`ModuleIndex::alias_text`].
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

/// Long enough to tell PCI vendors and USB vendor/products apart.
const BUCKET: usize = 14;

/// The part of an fnmatch pattern before its first wildcard.
fn literal_start(pattern: &str) -> &str {
    let end = pattern
        .bytes()
        .position(|b| matches!(b, b'*' | b'?' | b'['))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// `kernel/fs/ext4/ext4.ko` → `ext4`.
pub fn module_name(path: &str) -> String {
    module_name_of(path).replace('-', "_")
}

/// The name part of a module's path, not normalised.
fn module_name_of(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split_once(".ko").map_or(file, |(stem, _)| stem)
}

/// `-` → `_` outside bracket expressions, as kmod normalises both the
/// aliases depmod indexes and the names it looks up.
fn normalise_alias(alias: &str) -> String {
    normalise_aliases(alias.to_string())
}

/// [`normalise_alias`] for every word of a text at once; a bracket
/// expression ends with its word. Module names come out normalised too,
/// as [`module_name`] does.
fn normalise_aliases(text: String) -> String {
    let mut bytes = text.into_bytes();
    let mut in_class = false;
    for b in &mut bytes {
        match *b {
            b'[' => in_class = true,
            b']' | b' ' | b'\t' | b'\n' => in_class = false,
            b'-' if !in_class => *b = b'_',
            _ => {}
        }
    }
    String::from_utf8(bytes).expect("only ASCII bytes were replaced")
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
        index.alias_text = normalise_aliases(alias.to_string());
        let text = &index.alias_text;
        let span = |word: &str| {
            let start = word.as_ptr() as usize - text.as_ptr() as usize;
            Span {
                start: start as u32,
                end: (start + word.len()) as u32,
            }
        };
        for line in text.lines() {
            let mut words = line.split_ascii_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                let at = index.aliases.len() as u32;
                match literal_start(pattern).as_bytes().get(..BUCKET) {
                    Some(key) => index
                        .buckets
                        .push((key.try_into().expect("BUCKET bytes"), at)),
                    None => index.unbucketed.push(at),
                }
                index
                    .aliases
                    .push((span(pattern), span(module_name_of(module))));
            }
        }
        // Stable: alias order within a key.
        index.buckets.sort_by_key(|&(key, _)| key);
        index
    }

    /// Reads the index of `/lib/modules/<release>`. No such directory (a
    /// kernel with everything built in, or whose modules were not
    /// appended) gives an empty index; a directory of modules without
    /// `modules.dep` (appended without depmod) is indexed from the
    /// modules' own `.modinfo`.
    pub fn load(root: &Path) -> Result<ModuleIndex, Error> {
        let read = |f: &str| match std::fs::read_to_string(root.join(f)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(root.join(f), e)),
        };
        let Some(dep) = read("modules.dep")? else {
            if !root.is_dir() {
                log::info!(
                    "kernel modules: none for this kernel ({} does not exist): its drivers must be built in",
                    root.display()
                );
                return Ok(Self::parse(root, "", "", ""));
            }
            let started = Instant::now();
            let (dep, softdep, alias) = crate::modinfo::index_text(root);
            let index = Self::parse(root, &dep, &softdep, &alias);
            log::info!(
                "kernel modules: {} has no modules.dep: indexed its {} modules from their .modinfo in {} ms",
                root.display(),
                index.order.len(),
                started.elapsed().as_millis()
            );
            return Ok(index);
        };
        Ok(Self::parse(
            root,
            &dep,
            &read("modules.softdep")?.unwrap_or_default(),
            &read("modules.alias")?.unwrap_or_default(),
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
        let bucket = match name.as_bytes().get(..BUCKET) {
            Some(key) => {
                let from = self.buckets.partition_point(|(k, _)| k[..] < *key);
                let to = self.buckets.partition_point(|(k, _)| k[..] <= *key);
                &self.buckets[from..to]
            }
            None => &[],
        };
        // In modules.alias order, as modprobe lists them.
        let mut candidates: Vec<u32> = bucket
            .iter()
            .map(|&(_, at)| at)
            .chain(self.unbucketed.iter().copied())
            .collect();
        candidates.sort_unstable();
        let mut found: Vec<String> = Vec::new();
        for (pattern, module) in candidates.into_iter().map(|i| self.alias(i)) {
            if alias_matches(pattern, &name) && !found.iter().any(|f| f == module) {
                found.push(module.to_string());
            }
        }
        found
    }

    /// The alias at `at`: (pattern, module).
    fn alias(&self, at: u32) -> (&str, &str) {
        let (pattern, module) = self.aliases[at as usize];
        let text = |s: Span| &self.alias_text[s.start as usize..s.end as usize];
        (text(pattern), text(module))
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

/// The coldplug's first look at the devices present, taken with the
/// uevent socket already subscribed, so that a device added afterwards is
/// caught by its event. It needs no module index: taken on a thread of
/// its own beside the index's read, it is ready when the drivers' loading
/// starts (the sysfs walk took 30-90 ms under TCG).
pub struct FirstLook {
    socket: Option<UeventSocket>,
    devices: BTreeSet<String>,
    took: Duration,
}

impl FirstLook {
    /// `sys`: sysfs (`/sys`).
    pub fn take(sys: &Path) -> FirstLook {
        let socket = UeventSocket::open()
            .map_err(|e| warn!("kernel modules: {e}: devices that appear late get no driver"))
            .ok();
        let started = Instant::now();
        let devices = device_modaliases(&sys.join("bus"));
        FirstLook {
            socket,
            devices,
            took: started.elapsed(),
        }
    }
}

/// Loads one module file; what [`Modules`] calls for each. A fake in
/// unit tests.
pub type Loader = Arc<dyn Fn(&Path) -> Result<(), Error> + Send + Sync>;

/// The kernel modules of this boot: what was loaded, so that each phase
/// can ask for what it needs and only new modules cost an `insmod`. A
/// handle: clones share the same state, so that the hot-plug listener and
/// the phases load through one record.
#[derive(Clone)]
pub struct Modules {
    shared: Arc<Shared>,
}

struct Shared {
    index: ModuleIndex,
    insmod: Loader,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    loaded: HashSet<PathBuf>,
    /// Module names, in load order, for the console.
    names: Vec<String>,
    /// Drivers already tried for a device (loaded or failed): a device
    /// never costs a second attempt.
    tried: HashSet<String>,
    /// Devices already named on the console as having no driver.
    reported: HashSet<String>,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules")
            .field("shipped", &self.shared.index.order.len())
            .field("loaded", &self.loaded())
            .finish()
    }
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

/// How many drivers of a coldplug round load at once, at most (one per
/// CPU up to this).
const PARALLEL_LOADS: usize = 4;
/// How long a hot-plugged device may take to be bound by a driver built
/// into the kernel before the console says it has none.
const UNCLAIMED_GRACE: Duration = Duration::from_secs(2);
/// How often the listener looks at devices waiting for that verdict.
const PENDING_POLL: Duration = Duration::from_millis(250);

impl Modules {
    pub fn new(index: ModuleIndex) -> Modules {
        Self::with_loader(index, Arc::new(insmod))
    }

    /// With another way to load a module file (a fake, in tests).
    pub fn with_loader(index: ModuleIndex, insmod: Loader) -> Modules {
        Modules {
            shared: Arc::new(Shared {
                index,
                insmod,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The index of `/lib/modules/<release>`.
    pub fn open(root: &Path) -> Result<Modules, Error> {
        Ok(Self::new(ModuleIndex::load(root)?))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves consistent sets behind.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn index(&self) -> &ModuleIndex {
        &self.shared.index
    }

    /// Loads `names` (module names or aliases) and what they need. A name
    /// nothing shipped answers to is an error.
    pub fn load(&self, names: &[String]) -> Result<Vec<String>, Error> {
        let plan = self.index().plan(names)?;
        self.insmod_new(plan)
    }

    /// Like `load`, but a name nothing shipped answers to is skipped: the
    /// kernel may have it built in.
    pub fn load_shipped(&self, names: &[String]) -> Result<Vec<String>, Error> {
        let shipped: Vec<String> = names.iter().filter(|n| self.ships(n)).cloned().collect();
        self.load(&shipped)
    }

    /// Whether the initramfs has no module for this kernel at all.
    pub fn ships_nothing(&self) -> bool {
        self.index().all().is_empty()
    }

    /// Whether a module answers to this name or alias in the initramfs.
    pub fn ships(&self, name: &str) -> bool {
        !self.index().resolve(name).is_empty()
    }

    /// The drivers for `modalias` not tried yet, marked as tried.
    fn untried_drivers(&self, modalias: &str) -> Vec<String> {
        let drivers = self.index().resolve(modalias);
        let mut state = self.state();
        drivers
            .into_iter()
            .filter(|module| state.tried.insert(module.clone()))
            .collect()
    }

    /// Loads the drivers of the devices under `sys_bus` (`/sys/bus`), then
    /// of the devices those drivers add, until nothing new matches.
    pub fn coldplug(&self, sys_bus: &Path) -> Coldplug {
        self.coldplug_with(sys_bus, None, None)
    }

    /// [`coldplug`](Self::coldplug); with `events` (subscribed before the
    /// first look at sysfs), the devices the drivers add are taken from
    /// their uevents, which a driver's probe has sent by the time its
    /// module is loaded, instead of reading every bus again after each
    /// round (35-70 ms a round under TCG). A lost event means a look at
    /// sysfs again. `first`: the first look, already taken.
    fn coldplug_with(
        &self,
        sys_bus: &Path,
        events: Option<&UeventSocket>,
        mut first: Option<(BTreeSet<String>, Duration)>,
    ) -> Coldplug {
        let mut report = Coldplug::default();
        let mut look = true;
        for _ in 0..COLDPLUG_ROUNDS {
            let started = Instant::now();
            let added = events.filter(|_| !look).and_then(added_devices);
            let (devices, source, read) = match (first.take(), added) {
                (Some((devices, took)), _) => (devices, "device modaliases read", took),
                (None, Some(added)) => (added, "uevents of devices added", started.elapsed()),
                (None, None) => (
                    device_modaliases(sys_bus),
                    "device modaliases read",
                    started.elapsed(),
                ),
            };
            look = false;
            let wanted: Vec<String> = devices
                .iter()
                .flat_map(|alias| self.untried_drivers(alias))
                .collect();
            log::debug!(
                "coldplug: {} {source} in {} ms, new drivers: {:?} ({} ms)",
                devices.len(),
                read.as_millis(),
                wanted,
                started.elapsed().as_millis()
            );
            if wanted.is_empty() {
                break;
            }
            report.failed.extend(self.load_each(wanted));
        }
        report
    }

    /// Loads each module (with what it needs) on its own, a few at a
    /// time: on real hardware a driver's probe can take long (a NIC's
    /// PHY, a disk controller's reset), and independent drivers need not
    /// wait for each other. A shared dependency is safe: the kernel makes
    /// a second insmod of a module wait for the first, then answer EEXIST.
    /// One that fails does not keep the others from trying.
    fn load_each(&self, modules: Vec<String>) -> Vec<Error> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, PARALLEL_LOADS)
            .min(modules.len());
        let queue = Mutex::new(modules.into_iter());
        let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
        let work = || {
            let mut failed = Vec::new();
            while let Some(module) = next() {
                if let Err(e) = self.load(std::slice::from_ref(&module)) {
                    failed.push(e);
                }
            }
            failed
        };
        if workers <= 1 {
            return work();
        }
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
            let mut failed = work();
            for helper in helpers {
                failed.extend(helper.join().expect("an insmod thread panicked"));
            }
            failed
        })
    }

    /// Every module loaded so far, in order.
    pub fn loaded(&self) -> Vec<String> {
        self.state().names.clone()
    }

    /// [`coldplug`](Self::coldplug), while another thread loads `names`
    /// (module names or aliases) and what they need: a module no device
    /// asks for, such as overlay, need not wait for the drivers' probes.
    /// Both are done when this returns.
    pub fn coldplug_while_loading(
        &self,
        sys_bus: &Path,
        names: &[String],
    ) -> (Coldplug, Result<Vec<String>, Error>) {
        self.coldplug_while_loading_with(sys_bus, names, None, None)
    }

    fn coldplug_while_loading_with(
        &self,
        sys_bus: &Path,
        names: &[String],
        events: Option<&UeventSocket>,
        first: Option<(BTreeSet<String>, Duration)>,
    ) -> (Coldplug, Result<Vec<String>, Error>) {
        let plan: Vec<LoadStep> = match self.index().plan(names) {
            Ok(plan) => self.not_loaded(plan),
            Err(e) => return (self.coldplug_with(sys_bus, events, first), Err(e)),
        };
        let (report, (paths, done)) = std::thread::scope(|scope| {
            let other = scope.spawn(|| insmod_steps(&self.shared.insmod, plan));
            let report = self.coldplug_with(sys_bus, events, first);
            (report, other.join().expect("the insmod thread panicked"))
        });
        let names = self.record(paths);
        (report, done.map(|()| names))
    }

    /// The boot's drivers, for its whole length:
    /// [`coldplug_while_loading`](Self::coldplug_while_loading) of
    /// `names`, one console line per storage or network device that no
    /// driver took, then a thread that loads the drivers of devices as
    /// they appear (kernel uevents, as udev would: a USB NIC once its bus
    /// is enumerated, a slow disk), starting from `look`
    /// ([`FirstLook::take`]). `sys` is sysfs (`/sys`). The listener was
    /// subscribed before the first look, so no device slips between the
    /// two. Without a uevent socket, a warning, and coldplug only.
    pub fn start(
        &self,
        look: FirstLook,
        sys: &Path,
        names: &[String],
    ) -> (Coldplug, Result<Vec<String>, Error>) {
        let FirstLook {
            socket,
            devices,
            took,
        } = look;
        let sys_bus = sys.join("bus");
        let result = self.coldplug_while_loading_with(
            &sys_bus,
            names,
            socket.as_ref(),
            Some((devices, took)),
        );
        self.report_unclaimed(&sys_bus);
        if let Some(socket) = socket {
            let modules = self.clone();
            let sys = sys.to_path_buf();
            let spawned = std::thread::Builder::new()
                .name("hotplug".into())
                .spawn(move || modules.listen(&socket, &sys));
            if let Err(e) = spawned {
                warn!("kernel modules: cannot start the hot-plug listener: {e}");
            }
        }
        result
    }

    /// One console line per storage or network device present that no
    /// driver took, unless its driver is about to load (its uevent is
    /// queued for the listener, which then checks it).
    pub fn report_unclaimed(&self, sys_bus: &Path) {
        for device in devices::unclaimed(sys_bus) {
            let drivers = self.index().resolve(&device.modalias);
            let pending = {
                let state = self.state();
                drivers.iter().any(|d| !state.tried.contains(d))
            };
            if !pending {
                self.report(&device, &drivers);
            }
        }
    }

    fn report(&self, device: &Device, drivers: &[String]) {
        if !self.state().reported.insert(device.name.clone()) {
            return;
        }
        if drivers.is_empty() {
            warn!("{device}: no module of this initramfs matches it, and the kernel has none built in");
        } else {
            warn!(
                "{device}: {} did not take it (see the kernel's messages)",
                drivers.join(", ")
            );
        }
    }

    /// The hot-plug loop: drivers for every device added, for as long as
    /// the machine runs.
    fn listen(&self, socket: &UeventSocket, sys: &Path) {
        let mut pending: Vec<Pending> = Vec::new();
        loop {
            let timeout = if pending.is_empty() {
                Duration::from_secs(3600)
            } else {
                PENDING_POLL
            };
            match socket.recv(timeout) {
                Ok(Received::Event(event)) => {
                    if let Some(watch) = self.on_event(&event, sys) {
                        pending.push(watch);
                    }
                }
                Ok(Received::Nothing) => {}
                // Some events were lost: look at what is there now.
                Ok(Received::Overflow) => {
                    let report = self.coldplug(&sys.join("bus"));
                    for e in &report.failed {
                        warn!("kernel modules: {e}: its device stays unused");
                    }
                }
                Err(e) => {
                    warn!("kernel modules: {e}: devices that appear from now on get no driver");
                    return;
                }
            }
            self.check_pending(&mut pending, Instant::now());
        }
    }

    /// Loads the drivers of a device just added. Returns the device if it
    /// is one whose driver must be checked for a little later.
    pub fn on_event(&self, event: &Uevent, sys: &Path) -> Option<Pending> {
        if event.action != "add" {
            return None;
        }
        let modalias = event.modalias.as_deref()?;
        // Each driver on its own, as coldplug does: one that fails to load
        // does not keep the others from trying.
        let mut new = Vec::new();
        for module in self.untried_drivers(modalias) {
            match self.load(std::slice::from_ref(&module)) {
                Ok(names) => new.extend(names),
                Err(e) => warn!("kernel modules: {e}: its device stays unused"),
            }
        }
        if !new.is_empty() {
            info!(
                "kernel modules: loaded {} for {} {}",
                new.join(", "),
                event.subsystem.as_deref().unwrap_or("device"),
                event.name()
            );
        }
        let device = Device::from_modalias(event.name(), modalias)?;
        Some(Pending {
            dir: sys.join(event.devpath.trim_start_matches('/')),
            device,
            due: Instant::now() + UNCLAIMED_GRACE,
        })
    }

    /// Reports the devices whose grace is over and that still have no
    /// driver; keeps the others.
    pub fn check_pending(&self, pending: &mut Vec<Pending>, now: Instant) {
        pending.retain(|p| {
            if now < p.due {
                return true;
            }
            if p.dir.exists() && !devices::has_driver(&p.dir) {
                let drivers = self.index().resolve(&p.device.modalias);
                self.report(&p.device, &drivers);
            }
            false
        });
    }

    fn not_loaded(&self, plan: Vec<LoadStep>) -> Vec<LoadStep> {
        let state = self.state();
        plan.into_iter()
            .filter(|s| !state.loaded.contains(&s.path))
            .collect()
    }

    fn insmod_new(&self, plan: Vec<LoadStep>) -> Result<Vec<String>, Error> {
        let plan = self.not_loaded(plan);
        let (paths, done) = insmod_steps(&self.shared.insmod, plan);
        let names = self.record(paths);
        done.map(|()| names)
    }

    /// Notes modules as loaded; returns the names of those that were not.
    fn record(&self, paths: Vec<PathBuf>) -> Vec<String> {
        let mut state = self.state();
        let mut names = Vec::new();
        for path in paths {
            if !state.loaded.insert(path.clone()) {
                continue;
            }
            let name = module_name(&path.to_string_lossy());
            state.names.push(name.clone());
            names.push(name);
        }
        names
    }
}

/// A hot-plugged device whose driver is checked once its grace is over.
#[derive(Debug)]
pub struct Pending {
    dir: PathBuf,
    device: Device,
    due: Instant,
}

/// Loads the steps in order, until one that is not optional fails: the
/// files loaded, and how it ended.
fn insmod_steps(insmod: &Loader, plan: Vec<LoadStep>) -> (Vec<PathBuf>, Result<(), Error>) {
    let mut loaded = Vec::new();
    for step in plan {
        let started = Instant::now();
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

/// The modaliases of the devices added since the last call, as their
/// uevents say; `None` if some were lost (or the socket failed): then
/// only sysfs knows.
fn added_devices(events: &UeventSocket) -> Option<BTreeSet<String>> {
    let mut added = BTreeSet::new();
    loop {
        match events.recv(Duration::ZERO) {
            Ok(Received::Event(event)) => {
                if event.action == "add" {
                    added.extend(event.modalias);
                }
            }
            Ok(Received::Nothing) => return Some(added),
            Ok(Received::Overflow) | Err(_) => return None,
        }
    }
}

/// Loads one module file: a plain `.ko`, or a `.ko.zst` (as the
/// initramfs ships them: the kernel then unpacks a smaller archive, and
/// only the modules that load are decompressed, here, since Debian's
/// kernel cannot do it itself). Already loaded (or built in) is success.
pub fn insmod(path: &Path) -> Result<(), Error> {
    let loaded = if path.extension().is_some_and(|e| e == "zst") {
        let image = read_module(path)?;
        nix::kmod::init_module(&image, &CString::default())
    } else {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        finit_module(&file, &CString::default(), ModuleInitFlags::empty())
    };
    match loaded {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::Module {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// A module file's ELF image: read, and decompressed when it ends in
/// `.zst`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_none_or(|e| e != "zst") {
        let mut image = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut image).map_err(|e| Error::io(path, e))?;
        return Ok(image);
    }
    let size = file.metadata().map_or(0, |m| m.len() as usize);
    let mut decoder = zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, e))?;
    // Modules compress about 3:1.
    let mut image = Vec::with_capacity(size * 3);
    std::io::Read::read_to_end(&mut decoder, &mut image).map_err(|e| Error::io(path, e))?;
    Ok(image)
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
        // The whole file at once: an unclosed bracket ends with its word,
        // and module names come out as module_name gives them.
        let index = ModuleIndex::parse(
            Path::new("/m"),
            "a.ko:\n",
            "",
            "alias of:x[a-z]-y[q-r snd-hda-intel\nalias fs-ext4 ext-4\n",
        );
        assert_eq!(index.alias(0), ("of:x[a-z]_y[q-r", "snd_hda_intel"));
        assert_eq!(index.alias(1), ("fs_ext4", "ext_4"));
        assert_eq!(index.resolve("fs-ext4"), ["ext_4"]);
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

    /// Modules over [`index`] whose loads are recorded instead of done.
    fn fake_modules() -> (Modules, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        let loader: Loader = Arc::new(move |path: &Path| {
            record
                .lock()
                .unwrap()
                .push(module_name(path.to_str().unwrap()));
            Ok(())
        });
        (Modules::with_loader(index(), loader), calls)
    }

    fn fake_sys(name: &str) -> PathBuf {
        let sys = std::env::temp_dir().join(format!("b2c-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sys);
        sys
    }

    /// A device directory under `sys/devices/…`, listed under its bus.
    fn add_device(sys: &Path, bus: &str, path: &str, alias: &str) -> PathBuf {
        let dir = sys.join("devices").join(path);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modalias"), format!("{alias}\n")).unwrap();
        let listed = sys.join("bus").join(bus).join("devices");
        std::fs::create_dir_all(&listed).unwrap();
        std::os::unix::fs::symlink(&dir, listed.join(dir.file_name().unwrap())).unwrap();
        dir
    }

    #[test]
    fn the_drivers_of_a_round_load_side_by_side_and_a_failure_stops_none() {
        let sys = fake_sys("coldplug-parallel");
        add_device(&sys, "virtio", "virtio0", "virtio:d00000001v00001AF4");
        add_device(&sys, "virtio", "virtio1", "virtio:d00000002v00001AF4");
        add_device(
            &sys,
            "pci",
            "pci0000:00/0000:00:05.0",
            "pci:v00008086d000010D3sv0sd0bc02sc00i00",
        );
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, m) = (busy.clone(), most.clone());
        let loader: Loader = Arc::new(move |path: &Path| {
            use std::sync::atomic::Ordering::SeqCst;
            let now = b.fetch_add(1, SeqCst) + 1;
            m.fetch_max(now, SeqCst);
            // A probe that takes a while, as on real hardware.
            std::thread::sleep(Duration::from_millis(100));
            b.fetch_sub(1, SeqCst);
            match module_name(path.to_str().unwrap()).as_str() {
                "e1000e" => Err(Error::Module {
                    path: path.to_path_buf(),
                    source: Errno::ENODEV,
                }),
                _ => Ok(()),
            }
        });
        let modules = Modules::with_loader(index(), loader);
        let report = modules.coldplug(&sys.join("bus"));
        assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
        assert!(report.failed[0].to_string().contains("e1000e"));
        let mut loaded = modules.loaded();
        loaded.sort();
        assert_eq!(
            loaded,
            ["failover", "net_failover", "virtio_blk", "virtio_net"]
        );
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            assert!(most.load(std::sync::atomic::Ordering::SeqCst) > 1);
        }
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn coldplug_loads_each_driver_once_with_its_dependencies() {
        let sys = fake_sys("coldplug");
        add_device(
            &sys,
            "pci",
            "pci0000:00/0000:00:03.0",
            "pci:v00001AF4d00001000sv1sd1bc02sc00i00",
        );
        add_device(
            &sys,
            "virtio",
            "pci0000:00/0000:00:03.0/virtio0",
            "virtio:d00000001v00001AF4",
        );
        add_device(
            &sys,
            "virtio",
            "pci0000:00/0000:00:04.0/virtio1",
            "virtio:d00000001v00001AF4",
        );
        let (modules, calls) = fake_modules();
        let report = modules.coldplug(&sys.join("bus"));
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(
            *calls.lock().unwrap(),
            ["virtio_pci", "failover", "net_failover", "virtio_net"]
        );
        assert_eq!(modules.loaded(), *calls.lock().unwrap());
        // Nothing new: nothing loads again.
        modules.coldplug(&sys.join("bus"));
        assert_eq!(calls.lock().unwrap().len(), 4);
        std::fs::remove_dir_all(&sys).unwrap();
    }

    /// The first look, taken before the index was read, is the first
    /// round; the devices its drivers add come from sysfs (no socket here).
    #[test]
    fn coldplug_starts_from_a_first_look_taken_beforehand() {
        let sys = fake_sys("first-look");
        let look = BTreeSet::from(["pci:v00001AF4d00001000sv1sd1bc02sc00i00".to_string()]);
        // Added after the look: the round after it finds it.
        add_device(
            &sys,
            "virtio",
            "pci0000:00/0000:00:03.0/virtio0",
            "virtio:d00000001v00001AF4",
        );
        let (modules, calls) = fake_modules();
        let report = modules.coldplug_with(
            &sys.join("bus"),
            None,
            Some((look, Duration::from_millis(1))),
        );
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(
            *calls.lock().unwrap(),
            ["virtio_pci", "failover", "net_failover", "virtio_net"]
        );
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn a_hot_plugged_device_gets_its_driver_and_is_watched() {
        let sys = fake_sys("hotplug");
        let (modules, calls) = fake_modules();
        let dir = add_device(
            &sys,
            "pci",
            "pci0000:00/0000:00:05.0",
            "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00",
        );
        let event = |action: &str, alias: Option<&str>| Uevent {
            action: action.into(),
            devpath: "/devices/pci0000:00/0000:00:05.0".into(),
            subsystem: Some("pci".into()),
            modalias: alias.map(String::from),
        };
        let alias = "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00";
        // A network device: watched for a driver.
        let watch = modules.on_event(&event("add", Some(alias)), &sys).unwrap();
        assert_eq!(watch.dir, dir);
        assert_eq!(*calls.lock().unwrap(), ["e1000e"]);
        // Tried once: a second event (or a rescan) does not load it again.
        modules.on_event(&event("add", Some(alias)), &sys);
        modules.on_event(&event("bind", Some(alias)), &sys);
        assert_eq!(calls.lock().unwrap().len(), 1);
        // The driver bound: nothing to say once the grace is over.
        std::fs::create_dir(dir.join("driver")).unwrap();
        let mut pending = vec![watch];
        modules.check_pending(&mut pending, Instant::now());
        assert_eq!(pending.len(), 1, "too early");
        modules.check_pending(&mut pending, Instant::now() + UNCLAIMED_GRACE);
        assert!(pending.is_empty());
        assert!(modules.state().reported.is_empty());
        // No driver for it, and no driver bound: named once.
        let unknown = "pci:v00001022d00002000sv0sd0bc02sc00i00";
        let dir2 = add_device(&sys, "pci", "pci0000:00/0000:00:06.0", unknown);
        let mut e = event("add", Some(unknown));
        e.devpath = "/devices/pci0000:00/0000:00:06.0".into();
        let mut pending = vec![modules.on_event(&e, &sys).unwrap()];
        assert_eq!(pending[0].dir, dir2);
        modules.check_pending(&mut pending, Instant::now() + UNCLAIMED_GRACE);
        assert!(modules.state().reported.contains("0000:00:06.0"));
        // A device that is not storage or network is not watched.
        let mut e = event("add", Some("pci:v00008086d00001237sv0sd0bc06sc00i00"));
        e.devpath = "/devices/pci0000:00/0000:00:00.0".into();
        assert!(modules.on_event(&e, &sys).is_none());
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn unclaimed_devices_are_reported_unless_their_driver_is_coming() {
        let sys = fake_sys("report");
        let (modules, _) = fake_modules();
        // e1000e ships but was not tried yet: its uevent is on the way.
        add_device(
            &sys,
            "pci",
            "pci0000:00/0000:00:05.0",
            "pci:v00008086d000010D3sv0sd0bc02sc00i00",
        );
        // Nothing ships for this one.
        add_device(
            &sys,
            "pci",
            "pci0000:00/0000:00:06.0",
            "pci:v00001022d00002000sv0sd0bc02sc00i00",
        );
        modules.report_unclaimed(&sys.join("bus"));
        assert_eq!(
            modules.state().reported.iter().collect::<Vec<_>>(),
            ["0000:00:06.0"]
        );
        // Tried, and still no driver bound: named too.
        modules.coldplug(&sys.join("bus"));
        modules.report_unclaimed(&sys.join("bus"));
        assert_eq!(modules.state().reported.len(), 2);
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn a_driver_that_fails_does_not_keep_the_next_from_loading() {
        let index = ModuleIndex::parse(
            Path::new("/m"),
            "8139too.ko:\n8139cp.ko:\n",
            "",
            "alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139too\n\
             alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp\n",
        );
        let loaded = Arc::new(Mutex::new(Vec::new()));
        let record = loaded.clone();
        let loader: Loader = Arc::new(move |path: &Path| {
            let name = module_name(path.to_str().unwrap());
            if name == "8139too" {
                return Err(Error::Module {
                    path: path.to_path_buf(),
                    source: Errno::ENODEV,
                });
            }
            record.lock().unwrap().push(name);
            Ok(())
        });
        let modules = Modules::with_loader(index, loader);
        let event = Uevent {
            action: "add".into(),
            devpath: "/devices/pci0000:00/0000:00:03.0".into(),
            subsystem: Some("pci".into()),
            modalias: Some("pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00".into()),
        };
        modules.on_event(&event, Path::new("/nonexistent"));
        assert_eq!(*loaded.lock().unwrap(), ["8139cp"]);
        assert_eq!(modules.loaded(), ["8139cp"]);
    }

    #[test]
    fn the_alias_buckets_find_what_a_full_scan_finds() {
        let alias = "\
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v00008086d*sv*sd*bc02sc00i* intel_any
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in* r8152
alias usb:v*p*d*dc*dsc*dp*ic02isc06ip00in* cdc_ether
alias acpi*:PNP0A03:* acpi_thing
alias fs-ext4 ext4
alias virtio:d00000001v* virtio_net
";
        let index = ModuleIndex::parse(Path::new("/m"), "", "", alias);
        let names = [
            "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00",
            "pci:v00008086d00001237sv0sd0bc02sc00i00",
            "pci:v00001B36d00000010sv0sd0bc01sc06i01",
            "usb:v0BDAp8153d3100dc00dsc00dp00ic02isc06ip00in00",
            "acpi:PNP0A03:",
            "fs-ext4",
            "virtio:d00000001v00001AF4",
            "short",
        ];
        for name in names {
            let normalised = normalise_alias(name);
            let mut brute: Vec<String> = Vec::new();
            for at in 0..index.aliases.len() as u32 {
                let (pattern, module) = index.alias(at);
                if alias_matches(pattern, &normalised) && !brute.iter().any(|b| b == module) {
                    brute.push(module.to_string());
                }
            }
            assert_eq!(index.resolve(name), brute, "{name}");
        }
        assert_eq!(
            index.resolve("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"),
            ["e1000e", "intel_any"]
        );
        assert_eq!(
            index.resolve("usb:v0BDAp8153d3100dc00dsc00dp00ic02isc06ip00in00"),
            ["r8152", "cdc_ether"]
        );
    }
}
