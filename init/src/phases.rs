//! The phases of a boot, in the order main calls them. Each one is glue:
//! the work is done by the crate that owns the concern; what a failure
//! means for the boot is decided here and in [`crate::failure`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::ImageName;
use b2c_cmdline::{BootPlan, ContainerPlan, EnvFileSource, ImagePlan, NtpPeer, SyncEvent};
use b2c_net::http::Trust;
use b2c_net::{FetchOptions, NetworkUp};
use b2c_oci::{ContainersStore, Lookup};
use b2c_oci::{Credential, LayerStore, PullError, PulledImage, RegistryOptions};
use b2c_oci::{MinProgress, RetryPolicy, DEFAULT_PULL_RETRY};
use b2c_runtime::{ContainerHooks, Outcome, PipelineStatus};
use b2c_storage::volume::VolumeSet;
use b2c_storage::CacheSetup;
use b2c_system::info;
use b2c_system::log::Section;
use b2c_system::modules::{FirstLook, Modules};
use log::{error, info, warn};

use crate::failure::{BootError, EnvFileError};

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// boot2container's other name of the storage root.
const CONTAINER_LINK: &str = "/container";
/// boot2container waits this long for the cache disk to appear.
const CACHE_DEVICE_WAIT: Duration = Duration::from_secs(10);
const NTP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn banner() {
    info!(
        "b2c {} ({}), kernel {}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        info::kernel()
    );
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    info!(
        "CPU: {} x {}, RAM: {}",
        cpus,
        info::cpu_model(&read("/proc/cpuinfo")).unwrap_or("unknown"),
        info::mem_total_kib(&read("/proc/meminfo"))
            .map_or("unknown".into(), |k| info::human_bytes(k * 1024))
    );
}

pub fn block_devices() {
    let devices = info::block_devices(Path::new("/sys/block"));
    info!(
        "block devices: {}",
        if devices.is_empty() {
            "none".to_string()
        } else {
            devices.join(", ")
        }
    );
}

/// The kernel command line, as text (extra args are merged into it later),
/// and its plan.
pub fn plan() -> Result<(String, BootPlan), BootError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| BootError::Early(b2c_system::Error::io("/proc/cmdline", e)))?;
    // Secrets (--creds passwords, S3 keys) never reach the console.
    info!(
        "kernel command line: {}",
        b2c_cmdline::redact(&b2c_cmdline::redact_cmdline(cmdline.trim()))
    );
    let plan = b2c_cmdline::plan(&cmdline).map_err(BootError::Plan)?;
    Ok((cmdline, plan))
}

/// Log level and the warnings of the parse.
pub fn announce(plan: &BootPlan) {
    if plan.debug {
        b2c_system::log::set_debug(true);
    }
    b2c_system::log::set_gitlab_sections(plan.gitlab_sections);
    for warning in &plan.warnings {
        warn!("{warning}");
    }
}

/// The module index being read, with the time it took, and the first
/// look at the devices.
pub struct ModuleIndexRead {
    index: std::thread::JoinHandle<(Result<Modules, b2c_system::Error>, std::time::Duration)>,
    look: std::thread::JoinHandle<FirstLook>,
}

/// Reads the index of the shipped modules, and takes the coldplug's
/// first look at the devices, each on a thread of its own: under TCG they
/// take 60-170 and 30-90 ms, which neither each other nor the banner and
/// the command line's parse need wait for.
pub fn read_module_index() -> ModuleIndexRead {
    ModuleIndexRead {
        index: std::thread::spawn(|| {
            let started = std::time::Instant::now();
            let root = PathBuf::from("/lib/modules").join(info::kernel_release());
            (Modules::open(&root), started.elapsed())
        }),
        look: std::thread::spawn(|| FirstLook::take(Path::new("/sys"))),
    }
}

/// crun and the containers' cgroup being readied
/// ([`b2c_runtime::crun::prepare`]).
pub struct CrunReady(std::thread::JoinHandle<std::io::Result<()>>);

/// Readies crun on a thread of its own: its copy into a ramfs and the
/// parent cgroup took ~50 ms under TCG, which only the first container
/// need wait for.
pub fn prepare_crun() -> CrunReady {
    CrunReady(std::thread::spawn(b2c_runtime::crun::prepare))
}

impl CrunReady {
    pub fn wait(self) {
        match self.0.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!("crun stays writable, so it copies itself before each container: {e}")
            }
            Err(_) => warn!("crun stays writable: the thread making it read-only panicked"),
        }
    }
}

/// The drivers of the devices present (by modalias, as udev's coldplug
/// would) and of those that appear later (hot-plug, for the whole boot),
/// overlayfs (every container needs it) and `b2c.modules`.
/// Filesystems wait for the storage phase: most boots mount none.
pub fn load_modules(plan: &BootPlan, read: ModuleIndexRead) -> Result<Modules, BootError> {
    let (modules, took) = read.index.join().expect("the module index thread panicked");
    let modules = modules.map_err(BootError::Modules)?;
    log::debug!("kernel modules: index read in {} ms", took.as_millis());
    if modules.ships_nothing() && plan.modules.is_empty() {
        // A kernel with its drivers built in (ours), and no module here:
        // the coldplug has nothing to load. Its look at the devices, the
        // report of those no driver took and the hot-plug listener's
        // reports of late ones go on beside the boot (~0.1 s under TCG).
        let background = modules.clone();
        let look = read.look;
        std::thread::spawn(move || {
            let look = look.join().expect("the device look thread panicked");
            // Nothing to load, so nothing to fail.
            let _ = background.start(look, Path::new("/sys"), &[]);
        });
        return Ok(modules);
    }
    let look = read.look.join().expect("the device look thread panicked");
    // A kernel may have overlay built in; b2c.modules must be shipped.
    let overlay = Some("fs-overlay".to_string()).filter(|m| modules.ships(m));
    let wanted: Vec<String> = overlay.into_iter().chain(plan.modules.clone()).collect();
    let (coldplug, asked) = modules.start(look, Path::new("/sys"), &wanted);
    for e in &coldplug.failed {
        warn!("kernel modules: {e}: its device stays unused");
    }
    asked.map_err(BootError::Modules)?;
    show_loaded(&modules.loaded());
    Ok(modules)
}

/// `b2c.modules` again, after `b2c.extra_args_url` may have added some.
pub fn load_asked_modules(modules: &mut Modules, plan: &BootPlan) -> Result<(), BootError> {
    let new = modules.load(&plan.modules).map_err(BootError::Modules)?;
    show_loaded(&new);
    Ok(())
}

fn show_loaded(new: &[String]) {
    if !new.is_empty() {
        info!("kernel modules: loaded {}", new.join(", "));
    }
}

pub async fn network(plan: &BootPlan) -> Result<NetworkUp, BootError> {
    let _section = Section::start("b2c_network", "setting up the network", true);
    let up = b2c_net::bring_up(
        &plan.network.ifaces,
        plan.network.kernel_ip.as_ref(),
        Path::new(RESOLV_CONF),
        plan.network.dhcp_timeout,
    )
    .await
    .map_err(BootError::Network)?;
    for line in &up.summary {
        info!("network: {line}");
    }
    Ok(up)
}

/// Sets the clock before anything uses TLS. A failure is a warning: the
/// clock may be right already, and TLS will say so if it isn't.
pub async fn clock(ntp_peer: &NtpPeer, network: &NetworkUp) {
    let server = match ntp_peer {
        NtpPeer::None => return,
        NtpPeer::Host(host) => host.clone(),
        NtpPeer::Auto => network
            .ntp_servers
            .first()
            .map_or_else(|| "pool.ntp.org".to_string(), |ip| ip.to_string()),
    };
    let _section = Section::start(
        "b2c_clock",
        &format!("setting the clock from {server}"),
        true,
    );
    match b2c_net::sntp_time(&server, NTP_TIMEOUT).await {
        Ok(time) => match b2c_system::host::set_clock(time) {
            Ok(()) => info!("clock set from {server}"),
            Err(e) => warn!("cannot set the clock: {e}"),
        },
        Err(e) => warn!("cannot get the time from {server}: {e} (check b2c.ntp_peer)"),
    }
}

/// The bundled roots and the `b2c.ca_cert` files, read once per boot:
/// paths in the initramfs, or URLs fetched with the bundled roots only.
pub async fn trust(plan: &BootPlan) -> Result<Trust, BootError> {
    Trust::load(&plan.trust.ca_certs, &plan.trust.proxy)
        .await
        .map_err(BootError::CaCert)
}

/// How URLs of the boot are fetched: b2c.proxy and the trusted CAs.
fn fetch_options(plan: &BootPlan, trust: &Trust) -> FetchOptions {
    FetchOptions {
        trust: trust.clone(),
        proxy: plan.trust.proxy.clone(),
        ..Default::default()
    }
}

/// Fetches `b2c.extra_args_url`, merges it with the command line and
/// derives the whole plan again.
pub async fn extra_args(
    cmdline: &str,
    url: &str,
    plan: &BootPlan,
    trust: &Trust,
) -> Result<BootPlan, BootError> {
    let body = b2c_net::fetch(url, &fetch_options(plan, trust))
        .await
        .map_err(BootError::ExtraArgs)?;
    let text = String::from_utf8_lossy(&body);
    let (merged, keys) = b2c_cmdline::plan_with_extra(cmdline, &text).map_err(|source| {
        BootError::ExtraArgsInvalid {
            url: url.to_string(),
            source,
        }
    })?;
    info!(
        "options from b2c.extra_args_url: {}",
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    );
    // Warnings of the command line itself were already shown.
    for warning in merged.warnings.iter().skip(plan.warnings.len()) {
        warn!("{warning}");
    }
    if merged.network != plan.network {
        warn!("network options from b2c.extra_args_url are ignored: the network is already up");
    }
    if merged.debug {
        b2c_system::log::set_debug(true);
    }
    b2c_system::log::set_gitlab_sections(merged.gitlab_sections);
    Ok(merged)
}

/// Sets `b2c.hostname`, or the one `ip=` gives when b2c.hostname is not
/// set; returns the name set.
pub fn hostname(plan: &BootPlan, network: &NetworkUp) -> Result<String, BootError> {
    let name = match &network.hostname {
        Some(offered) if plan.hostname == b2c_cmdline::DEFAULT_HOSTNAME => offered,
        _ => &plan.hostname,
    };
    b2c_system::host::set_hostname(name, Path::new("/etc")).map_err(BootError::Hostname)?;
    Ok(name.clone())
}

/// Where images, layers, volumes and container scratch live: the cache
/// partition, or RAM. Unmounted (and swap turned off) when dropped, or by
/// the end of the boot if it never is (a crash).
pub struct Storage {
    pub store: LayerStore,
    /// `b2c.storage`'s read-only image stores that mounted, in order.
    pub image_stores: Vec<ContainersStore>,
    is_cache: bool,
}

impl Storage {
    pub fn is_cache(&self) -> bool {
        self.is_cache
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        crate::end::tear_down_storage();
    }
}

pub fn storage(plan: &BootPlan, modules: &mut Modules) -> Result<Storage, BootError> {
    let _section = Section::start(
        "b2c_cache",
        &format!(
            "setting up the storage (b2c.cache_device={})",
            plan.storage.cache_device
        ),
        true,
    );
    let layout = &plan.layout;
    let root = layout.root();
    let wanted = &plan.storage;
    let needed = b2c_storage::storage_modules(plan);
    // Like any other cache trouble, this is not a failed boot: the mount
    // fails next and the job runs with its images in RAM.
    match modules.load_shipped(&needed) {
        Ok(new) => show_loaded(&new),
        Err(e) => warn!("kernel modules: {e}: the cache may not mount"),
    }
    let (fscrypt, fast) = b2c_storage::volume::fscrypt::kernel_modules(&plan.volumes);
    match modules.load_shipped(&fscrypt) {
        Ok(new) => show_loaded(&new),
        Err(e) => warn!("kernel modules: {e}: encrypted volumes may fail"),
    }
    for m in fast {
        match modules.load_shipped(std::slice::from_ref(&m)) {
            Ok(new) => show_loaded(&new),
            Err(e) => log::debug!("{m}: {e} (the generic algorithms are used)"),
        }
    }
    // Before the cache and swap, which may be on them. One that cannot be
    // attached is no cache, as a missing disk is.
    for result in b2c_storage::nbd::attach_all(&wanted.nbds) {
        if let Err(e) = result {
            error!("{e}");
        }
    }
    let setup = b2c_storage::setup_cache(
        &wanted.cache_device,
        &wanted.filesystems,
        root,
        CACHE_DEVICE_WAIT,
    )
    .map_err(BootError::Cache)?;
    let cache = match setup {
        CacheSetup::Mounted(cache) => {
            info!(
                "cache: {} mounted on {}{}",
                cache.device.display(),
                cache.mountpoint.display(),
                if cache.formatted { " (new)" } else { "" }
            );
            Some(cache)
        }
        CacheSetup::NotAsked => None,
        // The job does not need a cache to run, only to run faster.
        CacheSetup::Unavailable(why) => {
            warn!("{why}: running without a cache, images are kept in RAM");
            None
        }
    };
    crate::end::storage_to_tear_down(cache.as_ref(), None);
    if cache.is_none() {
        b2c_system::mounts::mount_tmpfs(root, "mode=0755,size=90%").map_err(BootError::Storage)?;
    }
    // boot2container's lines name the cache /container too (`-v
    // /container/tmp:/tmp`): the link, and that directory.
    let tmp = layout.tmp();
    std::fs::create_dir_all(&tmp)
        .map_err(|e| BootError::Storage(b2c_system::Error::io(&tmp, e)))?;
    match std::os::unix::fs::symlink(root, CONTAINER_LINK) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => warn!("cannot link {CONTAINER_LINK} to {}: {e}", root.display()),
    }
    // Container scratch left by an earlier boot of this cache is garbage,
    // whatever a container made there (a tree too deep for a descriptor
    // per level).
    let scratch = layout.containers();
    if scratch.exists() {
        b2c_oci::remove_tree(&scratch)
            .map_err(|e| BootError::Storage(b2c_system::Error::io(&scratch, e)))?;
    }
    let swap = match &wanted.swap {
        Some(swap) => b2c_storage::setup_swap(swap, cache.as_ref()).map_err(BootError::Cache)?,
        None => None,
    };
    crate::end::storage_to_tear_down(cache.as_ref(), swap.as_ref());
    let store_dir = layout.image_store();
    let store = LayerStore::new(&store_dir)
        .map_err(|e| BootError::Storage(b2c_system::Error::io(&store_dir, e)))?;
    Ok(Storage {
        store,
        image_stores: image_stores(plan),
        is_cache: cache.is_some(),
    })
}

/// Mounts `b2c.storage`'s image stores. One that cannot be mounted is an
/// ERROR, not a failed boot: images named by a registry reference are
/// pulled instead, and only the containers whose image is an ID fail.
fn image_stores(plan: &BootPlan) -> Vec<ContainersStore> {
    let mut out = Vec::new();
    for wanted in &plan.storage.image_stores {
        let fs = &wanted.filesystem;
        match b2c_storage::mount_image_store(fs, &wanted.mountpoint) {
            Ok(()) => {
                info!(
                    "image store {}: {} mounted on {} (read-only)",
                    fs.name,
                    fs.src,
                    wanted.mountpoint.display()
                );
                out.push(ContainersStore::new(&fs.name, &wanted.mountpoint));
            }
            Err(e) => error!(
                "b2c.storage: additionalimagestores={}: {e}; its images are pulled instead \
                 (an image named by ID cannot be)",
                fs.name
            ),
        }
    }
    out
}

/// On a cache, makes room before pulling: least recently used layers that
/// no image of this pipeline needs go first.
pub fn make_room(plan: &BootPlan, storage: &Storage) {
    if !storage.is_cache() {
        return;
    }
    let store = &storage.store;
    let keep: Vec<_> = plan
        .images
        .iter()
        .filter_map(|i| i.name.registry())
        .filter_map(|r| store.stored_image(&b2c_oci::to_reference(r)))
        .flat_map(|s| s.layers)
        .collect();
    if let Err(e) = store
        .default_min_free()
        .and_then(|min| store.evict(min, &keep))
    {
        warn!("cache: cannot make room: {e}");
    }
}

/// Pulls every image of the plan, all at once, before the first container
/// runs. An image that cannot be pulled does not end the boot: its
/// containers fail as containers that exit non-zero do (an ERROR line
/// now, and when their turn comes), and the others run. The results come
/// back in the plan's order ([`b2c_cmdline::ImageId`]).
pub async fn pull(
    plan: &BootPlan,
    storage: &Storage,
    trust: &Trust,
) -> Vec<Result<PulledImage, PullError>> {
    let store = &storage.store;
    // All at once, so their lines interleave: one section for them all.
    let names: Vec<String> = plan.images.iter().map(|i| i.name.to_string()).collect();
    let _section = (!names.is_empty())
        .then(|| Section::start("b2c_pull", &format!("pulling {}", names.join(", ")), true));
    let pulls = plan.images.iter().map(|image| {
        let mut options = RegistryOptions {
            tls_verify: image.tls_verify,
            trust: trust.clone(),
            proxy: plan.trust.proxy.clone(),
            registries: plan.trust.registries.clone(),
            platform: image.platform.clone(),
            retry: RetryPolicy::for_time(plan.trust.pull_retry.unwrap_or(DEFAULT_PULL_RETRY)),
            min_progress: plan
                .trust
                .pull_stall
                .map(|(bytes, window)| MinProgress { bytes, window })
                .unwrap_or_default(),
            ..Default::default()
        };
        async move {
            let pulled = match from_image_stores(plan, storage, image) {
                Some(found) => found,
                None => match &image.name {
                    ImageName::Registry(r) => {
                        let reference = b2c_oci::to_reference(r);
                        match credentials(plan, image, &reference, trust).await {
                            Ok(credentials) => {
                                options.credentials = credentials;
                                b2c_oci::pull(&reference, &options, store, image.policy).await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    ImageName::Id(id) => Err(PullError::NotInImageStores {
                        image: id.clone(),
                        stores: store_names(plan),
                    }),
                },
            };
            if let Err(e) = &pulled {
                // The registry errors name their own fix.
                error!("cannot pull {e}");
            }
            pulled
        }
    });
    futures_util::future::join_all(pulls).await
}

/// The image from the first image store that has it (`None`: pull it);
/// a store that cannot be read fails an image named by ID, and the pull
/// of a registry image goes on.
fn from_image_stores(
    plan: &BootPlan,
    storage: &Storage,
    image: &ImagePlan,
) -> Option<Result<PulledImage, PullError>> {
    if plan.storage.image_stores.is_empty() {
        return None;
    }
    let lookup = Lookup::of(&image.name, &image.written);
    // Reads over NFS, and lock waits: off the async workers.
    let found =
        tokio::task::block_in_place(|| b2c_oci::find_in_stores(&storage.image_stores, &lookup));
    match (found, &image.name) {
        (Ok(Some(pulled)), _) => Some(Ok(pulled)),
        (Ok(None), ImageName::Id(_)) => None,
        (Err(e), ImageName::Id(_)) => Some(Err(e.into())),
        (Ok(None), ImageName::Registry(_)) => None,
        (Err(e), ImageName::Registry(r)) => {
            warn!("{e}: pulling {r} from its registry instead");
            None
        }
    }
}

fn store_names(plan: &BootPlan) -> String {
    let names: Vec<&str> = plan
        .storage
        .image_stores
        .iter()
        .map(|s| s.filesystem.name.as_str())
        .collect();
    names.join(", ")
}

/// The credentials of an image's pull: its `--authfile` (read, or fetched
/// with the boot's CAs and proxy), then its `--creds`, which win for its
/// own repository. An authfile that cannot be had fails that image's pull.
async fn credentials(
    plan: &BootPlan,
    image: &ImagePlan,
    reference: &b2c_oci::Reference,
    trust: &Trust,
) -> Result<Vec<Credential>, PullError> {
    let mut out = Vec::new();
    if let Some(source) = &image.authfile {
        let bad = |detail: String| PullError::BadOption {
            option: "--authfile",
            detail: format!("{source}: {detail}"),
        };
        let json = match source {
            EnvFileSource::Url(url) => b2c_net::fetch(url, &fetch_options(plan, trust))
                .await
                .map_err(|e| bad(e.to_string()))?,
            EnvFileSource::Path(path) => std::fs::read(path).map_err(|e| bad(e.to_string()))?,
        };
        out = b2c_oci::parse_auth_file(&json).map_err(bad)?;
    }
    if let Some(creds) = &image.creds {
        out.push(Credential {
            scope: format!("{}/{}", reference.registry(), reference.repository()),
            username: creds.username.clone(),
            password: creds
                .password
                .as_ref()
                .map_or_else(String::new, |p| p.expose().to_string()),
        });
    }
    Ok(out)
}

/// Reads every `--env-file` (a path in the initramfs or a URL), in the
/// plan's order ([`b2c_cmdline::EnvFileId`]).
pub async fn env_files(
    plan: &BootPlan,
    trust: &Trust,
) -> Result<Vec<Vec<(String, String)>>, BootError> {
    let mut files = Vec::with_capacity(plan.env_files.len());
    for source in &plan.env_files {
        let bad = |error| BootError::EnvFile {
            source: source.clone(),
            error: Box::new(error),
        };
        let text = match source {
            EnvFileSource::Url(url) => {
                let body = b2c_net::fetch(url, &fetch_options(plan, trust))
                    .await
                    .map_err(|e| bad(EnvFileError::Fetch(e)))?;
                String::from_utf8_lossy(&body).into_owned()
            }
            EnvFileSource::Path(path) => {
                std::fs::read_to_string(path).map_err(|e| bad(EnvFileError::Read(e)))?
            }
        };
        files.push(b2c_cmdline::parse_env_file(&text).map_err(|e| bad(EnvFileError::Parse(e)))?);
    }
    Ok(files)
}

/// `b2c.volume`: expired volumes deleted, declared ones created (mounted,
/// encrypted), pushes owed by an earlier boot done, then the
/// `pipeline_start` syncs and the `push_on=changes` watchers. A failure
/// here means no container runs, as in boot2container.
pub async fn volumes(plan: &BootPlan, trust: &Trust) -> Result<VolumeSet, BootError> {
    let reach = b2c_storage::volume::Reach {
        trust,
        proxy: &plan.trust.proxy,
        retry: b2c_storage::volume::RETRY,
    };
    let mut set = b2c_storage::volume::setup(plan, &reach)
        .await
        .map_err(BootError::Volume)?;
    set.event(SyncEvent::PipelineStart)
        .await
        .map_err(|e| BootError::Volume(Box::new(e).into()))?;
    set.start_watchers();
    Ok(set)
}

/// The `container_start` / `container_end` syncs, run from the pipeline's
/// thread on the boot's runtime.
pub struct VolumeHooks<'a> {
    pub set: &'a VolumeSet,
    pub runtime: tokio::runtime::Handle,
}

impl VolumeHooks<'_> {
    fn sync(&self, event: SyncEvent) -> Result<(), String> {
        if !self.set.wants(event) {
            return Ok(());
        }
        // Each failure was an ERROR line naming its volume already.
        self.runtime
            .block_on(self.set.event(event))
            .map_err(|_| "a volume sync failed".to_string())
    }
}

impl ContainerHooks for VolumeHooks<'_> {
    fn container_start(&self, _: &ContainerPlan) -> Result<(), String> {
        self.sync(SyncEvent::ContainerStart)
    }
    fn container_end(&self, _: &ContainerPlan) -> Result<(), String> {
        self.sync(SyncEvent::ContainerEnd)
    }
}

/// After the pipeline: the final pushes, then expired volumes deleted. A
/// failed push fails a pipeline that passed (boot2container's pipeline_end
/// hooks do the same); the volume is kept and pushed by the next boot.
pub async fn volumes_end(set: &mut VolumeSet, outcome: Outcome) -> Outcome {
    if set.finish().await || outcome.status.failed() {
        return outcome;
    }
    Outcome {
        status: PipelineStatus::Failed(1),
        ..outcome
    }
}
