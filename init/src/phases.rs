//! The phases of a boot, in the order main calls them. Each one is glue:
//! the work is done by the crate that owns the concern.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::{Config, ContainerArgs, NtpPeer};
use b2c_net::http::Trust;
use b2c_net::{FetchOptions, NetworkUp};
use b2c_oci::{LayerStore, PulledImage, RegistryOptions};
use b2c_system::info;
use b2c_system::modules::Modules;
use log::{info, warn};

use crate::failure::BootError;

/// Where images and containers live: tmpfs now, the cache partition later.
pub const STORAGE: &str = "/storage";
const RESOLV_CONF: &str = "/etc/resolv.conf";
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);
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

/// The kernel command line, as text (extra args are merged into it later)
/// and parsed.
pub fn config() -> Result<(String, Config), BootError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| BootError::Early(b2c_system::Error::io("/proc/cmdline", e)))?;
    info!("kernel command line: {}", cmdline.trim());
    let config = b2c_cmdline::parse(&cmdline).map_err(BootError::Cmdline)?;
    Ok((cmdline, config))
}

/// Log level and the warnings of the parse.
pub fn announce(config: &Config) {
    if config.debug {
        b2c_system::log::set_debug(true);
    }
    for warning in &config.warnings {
        warn!("{warning}");
    }
}

/// The drivers of the devices present (by modalias, as udev's coldplug
/// would), overlayfs (every container needs it) and `b2c.modules`.
/// Filesystems wait for the storage phase: most boots mount none.
pub fn load_modules(config: &Config) -> Result<Modules, BootError> {
    let root = PathBuf::from("/lib/modules").join(info::kernel_release());
    let mut modules = Modules::open(&root).map_err(BootError::Modules)?;
    // A kernel may have overlay built in; b2c.modules must be shipped.
    let overlay = Some("fs-overlay".to_string()).filter(|m| modules.ships(m));
    let wanted: Vec<String> = overlay.into_iter().chain(config.modules.clone()).collect();
    let (coldplug, asked) = modules.coldplug_while_loading(Path::new("/sys/bus"), &wanted);
    for e in &coldplug.failed {
        warn!("kernel modules: {e}: its device stays unused");
    }
    asked.map_err(BootError::Modules)?;
    show_loaded(modules.loaded());
    Ok(modules)
}

/// `b2c.modules` again, after `b2c.extra_args_url` may have added some.
pub fn load_asked_modules(modules: &mut Modules, config: &Config) -> Result<(), BootError> {
    let new = modules.load(&config.modules).map_err(BootError::Modules)?;
    show_loaded(&new);
    Ok(())
}

fn show_loaded(new: &[String]) {
    if !new.is_empty() {
        info!("kernel modules: loaded {}", new.join(", "));
    }
}

pub async fn network(config: &Config) -> Result<NetworkUp, BootError> {
    let up = b2c_net::bring_up(
        &config.ifaces,
        config.kernel_ip.as_ref(),
        Path::new(RESOLV_CONF),
        DHCP_TIMEOUT,
    )
    .await
    .map_err(BootError::Network)?;
    for line in &up.summary {
        info!("network: {line}");
    }
    Ok(up)
}

/// Fetches `b2c.extra_args_url`, merges it with the command line and
/// derives the whole configuration again.
pub async fn extra_args(
    cmdline: &str,
    url: &str,
    config: &Config,
    trust: &Trust,
) -> Result<Config, BootError> {
    let options = FetchOptions {
        trust: trust.clone(),
        proxy: config.proxy.clone(),
        ..Default::default()
    };
    let body = b2c_net::fetch(url, &options)
        .await
        .map_err(|source| BootError::ExtraArgs(source.to_string()))?;
    let text = String::from_utf8_lossy(&body);
    let (merged, keys) = b2c_cmdline::parse_with_extra(cmdline, &text).map_err(|e| {
        BootError::ExtraArgs(format!("the options fetched from {url} are invalid: {e}"))
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
    for warning in merged.warnings.iter().skip(config.warnings.len()) {
        warn!("{warning}");
    }
    if merged.ifaces != config.ifaces || merged.kernel_ip != config.kernel_ip {
        warn!("network options from b2c.extra_args_url are ignored: the network is already up");
    }
    if merged.debug {
        b2c_system::log::set_debug(true);
    }
    Ok(merged)
}

/// `b2c.hostname`, or the one `ip=` gives when b2c.hostname is not set.
pub fn hostname(config: &Config, network: &NetworkUp) -> Result<(), BootError> {
    let name = match &network.hostname {
        Some(offered) if config.hostname == b2c_cmdline::DEFAULT_HOSTNAME => offered,
        _ => &config.hostname,
    };
    b2c_system::host::set_hostname(name, Path::new("/etc")).map_err(BootError::Storage)
}

/// Sets the clock before anything uses TLS. A failure is a warning: the
/// clock may be right already, and TLS will say so if it isn't.
pub async fn clock(config: &Config, network: &NetworkUp) {
    let server = match &config.ntp_peer {
        NtpPeer::None => return,
        NtpPeer::Host(host) => host.clone(),
        NtpPeer::Auto => network
            .ntp_servers
            .first()
            .map_or_else(|| "pool.ntp.org".to_string(), |ip| ip.to_string()),
    };
    match b2c_net::sntp_time(&server, NTP_TIMEOUT).await {
        Ok(time) => match b2c_system::host::set_clock(time) {
            Ok(()) => info!("clock set from {server}"),
            Err(e) => warn!("cannot set the clock: {e}"),
        },
        Err(e) => warn!("cannot get the time from {server}: {e} (check b2c.ntp_peer)"),
    }
}

/// Where images, layers, volumes and container scratch live: the cache
/// partition, or RAM. Unmounted (and swap turned off) when dropped.
pub struct Storage {
    pub store: LayerStore,
    cache: Option<b2c_storage::Cache>,
    swap: Option<b2c_storage::SwapInfo>,
}

impl Storage {
    pub fn is_cache(&self) -> bool {
        self.cache.is_some()
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        b2c_storage::teardown(self.cache.as_ref(), self.swap.as_ref());
    }
}

pub fn storage(config: &Config, modules: &mut Modules) -> Result<Storage, BootError> {
    let root = Path::new(STORAGE);
    let needed = b2c_storage::filesystem_modules(&config.cache_device, &config.filesystems);
    // Like any other cache trouble, this is not a failed boot: the mount
    // fails next and the job runs with its images in RAM.
    match modules.load_shipped(&needed) {
        Ok(new) => show_loaded(&new),
        Err(e) => warn!("kernel modules: {e}: the cache may not mount"),
    }
    let cache = b2c_storage::setup_cache(
        &config.cache_device,
        &config.filesystems,
        root,
        CACHE_DEVICE_WAIT,
    )
    .map_err(BootError::Cache)?;
    if cache.is_none() {
        b2c_system::mounts::mount_tmpfs(root, "mode=0755,size=90%").map_err(BootError::Storage)?;
    }
    // Container scratch left by an earlier boot of this cache is garbage.
    let scratch = root.join("containers");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .map_err(|e| BootError::Storage(b2c_system::Error::io(&scratch, e)))?;
    }
    let swap = match &config.swap {
        Some(swap) => b2c_storage::setup_swap(swap, cache.as_ref()).map_err(BootError::Cache)?,
        None => None,
    };
    let store = LayerStore::new(root.join("oci"))
        .map_err(|e| BootError::Storage(b2c_system::Error::io(STORAGE, e)))?;
    Ok(Storage { store, cache, swap })
}

/// On a cache, makes room before pulling: least recently used layers that
/// no image of this pipeline needs go first.
pub fn make_room(config: &Config, storage: &Storage) {
    if !storage.is_cache() {
        return;
    }
    let store = &storage.store;
    let keep: Vec<_> = all_containers(config)
        .filter_map(|a| b2c_oci::parse_reference(&a.image).ok())
        .filter_map(|r| store.stored_image(&r))
        .flat_map(|s| s.layers)
        .collect();
    if let Err(e) = store
        .default_min_free()
        .and_then(|min| store.evict(min, &keep))
    {
        warn!("cache: cannot make room: {e}");
    }
}

/// The trust roots of every HTTPS request: the bundled ones and the
/// `b2c.ca_cert` files (paths in the initramfs, or URLs fetched with the
/// bundled roots only), read once.
pub async fn trust(config: &Config) -> Result<Trust, BootError> {
    Trust::load(&config.ca_certs, &config.proxy)
        .await
        .map_err(|e| BootError::CaCert {
            path: e.what,
            problem: e.problem,
        })
}

/// Every container of the pipeline, in order of need.
fn all_containers(config: &Config) -> impl Iterator<Item = &ContainerArgs> {
    config
        .services
        .iter()
        .chain(&config.containers)
        .chain(&config.post_containers)
}

/// Pulls every image before the first container runs, so that a missing
/// image fails the boot before any work is done.
pub async fn pull(
    config: &Config,
    store: &LayerStore,
    trust: &Trust,
) -> Result<HashMap<String, PulledImage>, BootError> {
    let mut images = HashMap::new();
    for args in all_containers(config) {
        if images.contains_key(&args.image) {
            continue;
        }
        let reference =
            b2c_oci::parse_reference(&args.image).map_err(|source| BootError::Image {
                image: args.image.clone(),
                source,
            })?;
        let options = RegistryOptions {
            tls_verify: args.tls_verify,
            trust: trust.clone(),
            proxy: config.proxy.clone(),
            insecure_registries: config.insecure_registries.clone(),
            mirrors: config.registry_mirrors.clone(),
            ..Default::default()
        };
        let policy = match args.pull {
            b2c_cmdline::PullPolicy::Always => b2c_oci::PullPolicy::Always,
            b2c_cmdline::PullPolicy::Missing => b2c_oci::PullPolicy::Missing,
            b2c_cmdline::PullPolicy::Never => b2c_oci::PullPolicy::Never,
        };
        let image = b2c_oci::pull(&reference, &options, store, policy)
            .await
            .map_err(BootError::Pull)?;
        images.insert(args.image.clone(), image);
    }
    Ok(images)
}

/// Reads every `--env-file` (a path in the initramfs or a URL).
pub async fn env_files(
    config: &Config,
    trust: &Trust,
) -> Result<HashMap<String, Vec<(String, String)>>, BootError> {
    let mut files = HashMap::new();
    for source in all_containers(config).flat_map(|c| &c.env_files) {
        if files.contains_key(source) {
            continue;
        }
        let bad = |problem: String| BootError::EnvFile {
            source: source.clone(),
            problem,
        };
        let text = if source.starts_with("http://") || source.starts_with("https://") {
            let options = FetchOptions {
                trust: trust.clone(),
                proxy: config.proxy.clone(),
                ..Default::default()
            };
            let body = b2c_net::fetch(source, &options)
                .await
                .map_err(|e| bad(e.to_string()))?;
            String::from_utf8_lossy(&body).into_owned()
        } else {
            std::fs::read_to_string(source).map_err(|e| bad(e.to_string()))?
        };
        files.insert(
            source.clone(),
            b2c_cmdline::parse_env_file(&text).map_err(bad)?,
        );
    }
    Ok(files)
}
