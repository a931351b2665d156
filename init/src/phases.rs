//! The phases of a boot, in the order main calls them. Each one is glue:
//! the work is done by the crate that owns the concern.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use b2c_cmdline::{Config, NtpPeer};
use b2c_net::Lease;
use b2c_oci::{LayerStore, PulledImage, RegistryOptions};
use b2c_runtime::{ContainerPlan, PipelineStatus};
use b2c_system::info;
use log::{info, warn};

use crate::failure::{BootError, ContainerError};

/// Where images and containers live: tmpfs now, the cache partition later.
const STORAGE: &str = "/storage";
const RESOLV_CONF: &str = "/etc/resolv.conf";
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);
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

pub fn config() -> Result<Config, BootError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| BootError::Early(b2c_system::Error::io("/proc/cmdline", e)))?;
    info!("kernel command line: {}", cmdline.trim());
    b2c_cmdline::parse(&cmdline).map_err(BootError::Cmdline)
}

/// Every module shipped in the initramfs, then those asked for.
pub fn load_modules(config: &Config) -> Result<(), BootError> {
    let root = PathBuf::from("/lib/modules").join(info::kernel_release());
    let index = b2c_system::modules::ModuleIndex::load(&root).map_err(BootError::Modules)?;
    let mut wanted = index.all().to_vec();
    wanted.extend(config.modules.iter().cloned());
    let files = index.load_order(&wanted).map_err(BootError::Modules)?;
    for file in &files {
        b2c_system::modules::insmod(file).map_err(BootError::Modules)?;
    }
    if !files.is_empty() {
        info!("loaded {} kernel modules", files.len());
    }
    Ok(())
}

pub async fn network(config: &Config) -> Result<(Lease, b2c_net::RenewalHandle), BootError> {
    b2c_system::host::set_hostname(&config.hostname, Path::new("/etc"))
        .map_err(BootError::Storage)?;
    b2c_net::loopback_up().await.map_err(BootError::Network)?;
    let links = b2c_net::ethernet_links(LINK_TIMEOUT)
        .await
        .map_err(BootError::Network)?;
    info!("network: DHCP on {}", links.join(", "));
    let lease = b2c_net::dhcp_first_lease(&links, DHCP_TIMEOUT)
        .await
        .map_err(BootError::Network)?;
    b2c_net::apply_lease(&lease, Path::new(RESOLV_CONF))
        .await
        .map_err(BootError::Network)?;
    info!(
        "network: {} has {}/{} (router {}, lease {} s)",
        lease.iface,
        lease.address,
        lease.prefix_len,
        lease.router.map_or("none".into(), |r| r.to_string()),
        lease.lease_time.as_secs()
    );
    let renewal = b2c_net::spawn_renewal(lease.clone(), RESOLV_CONF);
    Ok((lease, renewal))
}

/// Sets the clock before anything uses TLS. A failure is a warning: the
/// clock may be right already, and TLS will say so if it isn't.
pub async fn clock(config: &Config, lease: &Lease) {
    let server = match &config.ntp_peer {
        NtpPeer::None => return,
        NtpPeer::Host(host) => host.clone(),
        NtpPeer::Auto => lease
            .ntp
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

pub fn storage() -> Result<LayerStore, BootError> {
    b2c_system::mounts::mount_tmpfs(Path::new(STORAGE), "mode=0755,size=90%")
        .map_err(BootError::Storage)?;
    LayerStore::new(Path::new(STORAGE).join("layers"))
        .map_err(|e| BootError::Storage(b2c_system::Error::io(STORAGE, e)))
}

fn registry_options(config: &Config, tls_verify: bool) -> Result<RegistryOptions, BootError> {
    let extra_ca_pem = config
        .ca_certs
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|source| BootError::CaCert {
                path: path.clone(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(RegistryOptions {
        tls_verify,
        extra_ca_pem,
        ..Default::default()
    })
}

/// Pulls every image before the first container runs, so that a missing
/// image fails the boot before any work is done.
pub async fn pull(
    config: &Config,
    store: &LayerStore,
) -> Result<HashMap<String, PulledImage>, BootError> {
    let mut images = HashMap::new();
    for args in &config.containers {
        if images.contains_key(&args.image) {
            continue;
        }
        let reference =
            b2c_oci::parse_reference(&args.image).map_err(|source| BootError::Image {
                image: args.image.clone(),
                source,
            })?;
        let options = registry_options(config, args.tls_verify)?;
        let image = b2c_oci::pull(&reference, &options, store)
            .await
            .map_err(BootError::Pull)?;
        images.insert(args.image.clone(), image);
    }
    Ok(images)
}

pub async fn run_containers(
    config: &Config,
    images: &HashMap<String, PulledImage>,
) -> Result<PipelineStatus, BootError> {
    let mut status = PipelineStatus::default();
    for (i, args) in config.containers.iter().enumerate() {
        let image = &images[&args.image];
        let id = format!("b2c-{i}");
        info!("running container {id}: {}", args.image);
        let code = run_one(config, args, image, &id).map_err(|source| BootError::Container {
            image: args.image.clone(),
            source,
        })?;
        info!("container {id} exited with status {code}");
        status.record(code);
    }
    Ok(status)
}

fn run_one(
    config: &Config,
    args: &b2c_cmdline::ContainerArgs,
    image: &PulledImage,
    id: &str,
) -> Result<i32, ContainerError> {
    let dir = Path::new(STORAGE).join("containers").join(id);
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).map_err(ContainerError::Bundle)?;
    }
    b2c_oci::mount_overlay(&image.layers, &upper, &work, &rootfs)?;
    let plan = ContainerPlan {
        args,
        image: &image.config,
        rootfs: &rootfs,
        hostname: &config.hostname,
        etc: Path::new("/etc"),
        extra_env: &[],
    };
    let spec = b2c_runtime::runtime_spec(&plan, id)?;
    spec.save(dir.join("config.json"))
        .map_err(|e| ContainerError::Bundle(std::io::Error::other(e)))?;
    let code = b2c_runtime::crun::run(&dir, id)?;
    Ok(code.0)
}
