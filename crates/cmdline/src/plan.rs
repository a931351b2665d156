//! The boot plan: everything a boot will do, derived from the parsed
//! options by pure code and checked before any I/O, so that `b2c cmdline`
//! reports exactly the errors a boot would, and every phase reads one typed
//! value instead of re-parsing strings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    CacheDevice, Config, ContainerArgs, Credentials, DebugPanic, Error, Expiration, Filesystem,
    IfaceConfig, ImageName, KernelIp, MinioAlias, Nbd, NtpPeer, Platform, Proxy, PullPolicy,
    ReferenceError, Registries, Remote, Swap, VolumeMount, VolumeOptions, VolumeSource,
};

/// Where the boot keeps images, container scratch and volumes: the cache
/// partition, or a tmpfs. Every path below it is named here, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new(Layout::ROOT)
    }
}

impl Layout {
    /// boot2container's mount point of the cache.
    pub const ROOT: &'static str = "/storage";

    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content-addressed image store (layers, blobs, image records).
    pub fn image_store(&self) -> PathBuf {
        self.root.join("oci")
    }

    /// Container scratch: what an earlier boot left there is garbage.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// One container's overlay upper/work dirs, rootfs and bundle.
    pub fn container(&self, id: &ContainerId) -> PathBuf {
        self.containers().join(&id.0)
    }

    /// The output of detached containers (services): `<id>.log`, kept on
    /// a cache until the next boot overwrites it.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log(&self, id: &ContainerId) -> PathBuf {
        self.logs().join(format!("{}.log", id.0))
    }

    /// A scratch directory kept across boots on a cache: boot2container's
    /// `/container/tmp`, which old lines bind (`-v /container/tmp:/tmp`).
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Named volumes: one directory each, shared by the containers naming it.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes().join(name)
    }

    /// Where every named volume lives.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// What b2c remembers about the volumes across boots (expiration, a
    /// push still owed): a name no volume can have (volume names start
    /// with a letter or digit).
    pub fn volume_state(&self) -> PathBuf {
        self.volumes().join(".b2c")
    }
}

/// Which list of the command line a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `b2c.run_service`: started detached first, stopped at the end.
    Service,
    /// `b2c.run`: run in order; decides the status.
    Run,
    /// `b2c.post_container`: always runs, never changes the status.
    Post,
}

impl Stage {
    /// The option that declares containers of this stage.
    pub fn option(self) -> &'static str {
        match self {
            Stage::Service => "b2c.run_service",
            Stage::Run => "b2c.run",
            Stage::Post => "b2c.post_container",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Stage::Service => "service",
            Stage::Run => "run",
            Stage::Post => "post",
        }
    }
}

/// Stable for the boot: names the crun container and its directory
/// (`service-0`, `run-1`, `post-0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Index of an image in [`BootPlan::images`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageId(pub usize);

/// Index of an env file in [`BootPlan::env_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvFileId(pub usize);

/// One image to get before the pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    /// A registry reference, or an image ID (only image stores have those).
    pub name: ImageName,
    /// As written in the option (for messages).
    pub written: String,
    pub policy: PullPolicy,
    /// `--tls-verify`; `b2c.insecure_registry` applies on top, per host.
    pub tls_verify: bool,
    /// `--creds`: for the image's own registry; over the authfile's.
    pub creds: Option<Credentials>,
    /// `--authfile`: podman's auth.json, a file of the initramfs or a URL.
    pub authfile: Option<EnvFileSource>,
    /// `--platform`/`--arch`/`--os`/`--variant`: which manifest of an
    /// image index (the default: this machine's).
    pub platform: Platform,
}

/// Where an `--env-file` is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvFileSource {
    /// A file of the initramfs.
    Path(PathBuf),
    /// Fetched over HTTP(S) once the network is up.
    Url(String),
}

impl fmt::Display for EnvFileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvFileSource::Path(p) => write!(f, "{}", p.display()),
            EnvFileSource::Url(u) => f.write_str(u),
        }
    }
}

/// A `-v`, `--mount` or `--tmpfs` resolved to what is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    /// The host path bound; for a kernel filesystem, its type.
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// A named or anonymous volume (created on first use) rather than a
    /// host path (which must exist).
    pub named: bool,
    /// `Some("tmpfs")` (or `ramfs`, `devpts`) for a kernel filesystem
    /// mounted fresh; `None` for a bind mount.
    pub filesystem: Option<String>,
    /// Further mount options (`nosuid`, `rprivate`, `size=64m`…).
    pub options: Vec<String>,
    /// Bind mounts: `rbind` rather than `bind`.
    pub recursive: bool,
    /// `U`: chown the source to the container's user first.
    pub chown: bool,
}

/// One container of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub id: ContainerId,
    pub stage: Stage,
    pub args: ContainerArgs,
    pub image: ImageId,
    pub env_files: Vec<EnvFileId>,
    pub volumes: Vec<VolumePlan>,
}

impl ContainerPlan {
    /// Its image as written, for console lines (with its id).
    pub fn name(&self) -> &str {
        &self.args.image
    }

    /// The whole value of its option (flags, image and command, secrets
    /// masked): what `B2C_PIPELINE_FAILED_BY` and
    /// `B2C_PIPELINE_PREV_CONTAINER` hold, as in boot2container.
    pub fn option_value(&self) -> &str {
        &self.args.written
    }
}

/// How the network comes up: `b2c.iface` entries, else `ip=`, else DHCP
/// on every ethernet link.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPlan {
    pub ifaces: Vec<IfaceConfig>,
    pub kernel_ip: Option<KernelIp>,
    /// `b2c.dhcp_timeout`: how long DHCP may take to get a first lease.
    pub dhcp_timeout: Duration,
}

impl Default for NetworkPlan {
    fn default() -> Self {
        NetworkPlan {
            ifaces: Vec::new(),
            kernel_ip: None,
            dhcp_timeout: crate::DEFAULT_DHCP_TIMEOUT,
        }
    }
}

/// `b2c.cache_device`, `b2c.filesystem`, `b2c.swap`, `b2c.storage`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoragePlan {
    pub cache_device: CacheDevice,
    pub filesystems: Vec<Filesystem>,
    pub swap: Option<Swap>,
    /// `b2c.storage=additionalimagestores=…`, in the order written: the
    /// first store that has an image wins.
    pub image_stores: Vec<ImageStorePlan>,
    /// `b2c.nbd`: attached before the cache and swap, which may use them.
    pub nbds: Vec<Nbd>,
}

/// A read-only image store of containers-storage on a `b2c.filesystem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStorePlan {
    pub filesystem: Filesystem,
    /// Where it is mounted: outside the cache, which may be mounted later
    /// or be a tmpfs.
    pub mountpoint: PathBuf,
}

/// Where `b2c.storage`'s image stores are mounted, each under its name.
pub const IMAGE_STORES_DIR: &str = "/run/b2c/imagestores";

/// A `b2c.volume`, checked against the `b2c.minio` aliases and the
/// `b2c.filesystem`s, with its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedVolume {
    pub options: VolumeOptions,
    /// [`Layout::volume`] of its name.
    pub path: PathBuf,
    /// Synced with S3: boot2container syncs a volume only when both a pull
    /// and a push location are known (`mirror=`, or both `pull_from=` and
    /// `push_to=`), and then both aliases are declared.
    pub syncs: bool,
}

impl NamedVolume {
    pub fn name(&self) -> &str {
        &self.options.name
    }
}

/// How registries and URLs are reached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustPlan {
    /// `b2c.ca_cert`: paths or URLs of extra CA certificates (PEM).
    pub ca_certs: Vec<String>,
    pub proxy: Proxy,
    /// `b2c.insecure_registry` and `b2c.registry_mirror`.
    pub registries: Registries,
    /// `b2c.pull_retry` (`None`: the default).
    pub pull_retry: Option<Duration>,
    /// `b2c.pull_stall` as (bytes, window) (`None`: the default).
    pub pull_stall: Option<(u64, Duration)>,
}

/// How the boot ends, whatever happened before.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndPlan {
    /// `b2c.shell`: a shell on the console after a failure.
    pub shell: bool,
    /// `b2c.poweroff_delay`, before a power-off only.
    pub poweroff_delay: Duration,
    pub shutdown_cmd: Option<String>,
    pub reboot_cmd: Option<String>,
}

/// Everything a boot will do.
#[derive(Debug, Clone, PartialEq)]
pub struct BootPlan {
    pub network: NetworkPlan,
    pub ntp_peer: NtpPeer,
    pub extra_args_url: Option<String>,
    pub hostname: String,
    /// `b2c.insmods` / `b2c.modules`.
    pub modules: Vec<String>,
    pub storage: StoragePlan,
    pub layout: Layout,
    pub trust: TrustPlan,
    /// Every distinct image, pulled before the pipeline runs.
    pub images: Vec<ImagePlan>,
    /// Every distinct `--env-file`, read before the pipeline runs.
    pub env_files: Vec<EnvFileSource>,
    /// Services, then `b2c.run`, then post containers, each in order.
    pub containers: Vec<ContainerPlan>,
    /// `b2c.minio`: the S3 endpoints volumes sync with. The keys are
    /// [`crate::Secret`]s: printing the plan never shows them.
    pub minio: Vec<MinioAlias>,
    /// `b2c.volume`, in the order written.
    pub volumes: Vec<NamedVolume>,
    pub pipefail: bool,
    /// `b2c.timeout`: the pipeline's containers are stopped once it ran
    /// this long, and the status is 124.
    pub timeout: Option<Duration>,
    /// `b2c.watchdog`: the hardware watchdog's timeout, if it is used.
    pub watchdog: Option<Duration>,
    pub end: EndPlan,
    /// `b2c.log=debug`.
    pub debug: bool,
    /// `b2c.gitlab_sections`.
    pub gitlab_sections: bool,
    /// `b2c.debug_panic`: a test aid (see [`Config::debug_panic`]).
    pub debug_panic: Option<DebugPanic>,
    /// Things to tell the user about, not failures.
    pub warnings: Vec<String>,
}

impl BootPlan {
    pub fn image(&self, id: ImageId) -> &ImagePlan {
        &self.images[id.0]
    }

    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &ContainerPlan> {
        self.containers.iter().filter(move |c| c.stage == stage)
    }

    /// The `b2c.minio` endpoint of an alias.
    pub fn endpoint(&self, alias: &str) -> Option<&MinioAlias> {
        self.minio.iter().find(|m| m.alias == alias)
    }
}

/// Why a configuration cannot be booted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Option(#[from] Error),
    #[error("{key}: image {written:?}: {source} (check the image name)")]
    Image {
        key: &'static str,
        written: String,
        source: ReferenceError,
    },
    #[error(
        "{key}: {written:?} is an image ID: only an image store holds images by ID \
         (b2c.storage=additionalimagestores=NAME, NAME a b2c.filesystem holding podman's store); \
         a registry image needs its name"
    )]
    ImageIdWithoutStore { key: &'static str, written: String },
}

impl PlanError {
    /// The option to fix.
    pub fn key(&self) -> &str {
        match self {
            PlanError::Option(e) => &e.key,
            PlanError::Image { key, .. } | PlanError::ImageIdWithoutStore { key, .. } => key,
        }
    }
}

/// Derives the plan from parsed options, checking everything that needs
/// no I/O.
pub fn derive(mut config: Config) -> Result<BootPlan, PlanError> {
    if let CacheDevice::Filesystem(name) = &config.cache_device {
        if !config.filesystems.iter().any(|f| &f.name == name) {
            // boot2container: "neither 'none', 'auto', a path to a block
            // device, or a valid b2c.filesystem name. Defaulting to 'none'".
            config.warnings.push(format!(
                "b2c.cache_device={name}: no b2c.filesystem is named {name:?} (expected none, \
                 auto, reset, /dev/DEVICE or a b2c.filesystem name): no cache"
            ));
            config.cache_device = CacheDevice::None;
        }
    }
    let layout = Layout::default();
    let mut warnings = config.warnings;
    let mut image_stores = Vec::new();
    for name in &config.image_stores {
        match config.filesystems.iter().find(|f| &f.name == name) {
            Some(fs) => image_stores.push(ImageStorePlan {
                filesystem: fs.clone(),
                mountpoint: Path::new(IMAGE_STORES_DIR).join(name),
            }),
            // containers-storage skips a store it cannot open.
            None => warnings.push(format!(
                "b2c.storage: additionalimagestores={name}: no b2c.filesystem is named \
                 {name:?}: ignored"
            )),
        }
    }
    let volumes = derive_volumes(
        config.volumes,
        &config.minio,
        &config.filesystems,
        &layout,
        &mut warnings,
    )?;
    let mut images: Vec<ImagePlan> = Vec::new();
    let mut env_files: Vec<EnvFileSource> = Vec::new();
    let mut containers = Vec::new();
    let stages = [
        (Stage::Service, config.services),
        (Stage::Run, config.containers),
        (Stage::Post, config.post_containers),
    ];
    for (stage, list) in stages {
        for (i, args) in list.into_iter().enumerate() {
            let name = ImageName::parse(&args.image).map_err(|source| PlanError::Image {
                key: stage.option(),
                written: args.image.clone(),
                source,
            })?;
            if matches!(name, ImageName::Id(_)) && image_stores.is_empty() {
                return Err(PlanError::ImageIdWithoutStore {
                    key: stage.option(),
                    written: args.image.clone(),
                });
            }
            let image = ImagePlan {
                name,
                written: args.image.clone(),
                policy: args.pull,
                tls_verify: args.tls_verify,
                creds: args.creds.clone(),
                authfile: args.authfile.as_deref().map(env_file_source),
                platform: args.platform.clone(),
            };
            let image = ImageId(index_of(&mut images, image, same_pull));
            let files = args
                .env_files
                .iter()
                .map(|s| EnvFileId(index_of(&mut env_files, env_file_source(s), PartialEq::eq)))
                .collect();
            let id = ContainerId(format!("{}-{i}", stage.id_prefix()));
            let volumes = args
                .volumes
                .iter()
                .enumerate()
                .map(|(n, v)| volume_plan(&layout, &id, n, v))
                .collect();
            containers.push(ContainerPlan {
                id,
                stage,
                args,
                image,
                env_files: files,
                volumes,
            });
        }
    }
    Ok(BootPlan {
        network: NetworkPlan {
            ifaces: config.ifaces,
            kernel_ip: config.kernel_ip,
            dhcp_timeout: config.dhcp_timeout,
        },
        ntp_peer: config.ntp_peer,
        extra_args_url: config.extra_args_url,
        hostname: config.hostname,
        modules: config.modules,
        storage: StoragePlan {
            cache_device: config.cache_device,
            filesystems: config.filesystems,
            swap: config.swap,
            image_stores,
            nbds: config.nbds,
        },
        layout,
        trust: TrustPlan {
            ca_certs: config.ca_certs,
            proxy: config.proxy,
            registries: config.registries,
            pull_retry: config.pull_retry,
            pull_stall: config.pull_stall,
        },
        images,
        env_files,
        containers,
        minio: config.minio,
        volumes,
        pipefail: config.pipefail,
        timeout: config.timeout,
        watchdog: config.watchdog,
        end: EndPlan {
            shell: config.shell,
            poweroff_delay: config.poweroff_delay,
            shutdown_cmd: config.shutdown_cmd,
            reboot_cmd: config.reboot_cmd,
        },
        debug: config.debug,
        gitlab_sections: config.gitlab_sections,
        debug_panic: config.debug_panic,
        warnings,
    })
}

/// Whether two images are pulled once: same reference and same pull
/// settings (policy, TLS, credentials).
fn same_pull(a: &ImagePlan, b: &ImagePlan) -> bool {
    (
        &a.name,
        a.policy,
        a.tls_verify,
        &a.creds,
        &a.authfile,
        &a.platform,
    ) == (
        &b.name,
        b.policy,
        b.tls_verify,
        &b.creds,
        &b.authfile,
        &b.platform,
    )
}

fn derive_volumes(
    volumes: Vec<VolumeOptions>,
    minio: &[MinioAlias],
    filesystems: &[Filesystem],
    layout: &Layout,
    warnings: &mut Vec<String>,
) -> Result<Vec<NamedVolume>, PlanError> {
    let mut out = Vec::with_capacity(volumes.len());
    for options in volumes {
        let name = options.name.clone();
        let bad = |problem: String| Error {
            key: "b2c.volume".into(),
            value: name.clone(),
            problem,
        };
        if let Some(fs) = &options.filesystem {
            if !filesystems.iter().any(|f| &f.name == fs) {
                return Err(
                    bad(format!("filesystem={fs}: no b2c.filesystem has this name")).into(),
                );
            }
        }
        let syncs = match (&options.pull_from, &options.push_to) {
            (Some(pull), Some(push)) => {
                for remote in [pull, push] {
                    if !minio.iter().any(|m| m.alias == remote.alias) {
                        return Err(bad(format!(
                            "{remote}: no b2c.minio declares the alias {:?}",
                            remote.alias
                        ))
                        .into());
                    }
                }
                true
            }
            (None, None) => false,
            (pull, _) => {
                warnings.push(format!(
                    "b2c.volume={name}: only {} is set: as in boot2container, the volume is                      synced only when both a pull and a push location are known (use mirror=)",
                    if pull.is_some() { "pull_from" } else { "push_to" }
                ));
                false
            }
        };
        if syncs
            && options.pull_on.is_empty()
            && options.push_on.is_empty()
            && !options.push_on_changes
        {
            warnings.push(format!(
                "b2c.volume={name}: no pull_on or push_on event: it is never synced"
            ));
        }
        out.push(NamedVolume {
            path: layout.volume(&name),
            options,
            syncs,
        });
    }
    Ok(out)
}

/// Where one mount of container `id` comes from.
fn volume_plan(layout: &Layout, id: &ContainerId, n: usize, v: &VolumeMount) -> VolumePlan {
    let (source, named, filesystem) = match &v.source {
        VolumeSource::Named(name) => (layout.volume(name), true, None),
        VolumeSource::HostPath(path) => (PathBuf::from(path), false, None),
        // Inside the container's directory: gone with it.
        VolumeSource::Anonymous => (layout.container(id).join(format!("volume-{n}")), true, None),
        VolumeSource::Filesystem(fs) => (PathBuf::from(fs), false, Some(fs.clone())),
    };
    VolumePlan {
        source,
        destination: v.destination.clone(),
        read_only: v.read_only,
        named,
        filesystem,
        options: v.options.clone(),
        recursive: v.recursive,
        chown: v.chown,
    }
}

/// The position of `item` in `list`, appended if no entry is `same`.
fn index_of<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) -> usize {
    match list.iter().position(|x| same(x, &item)) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

fn env_file_source(s: &str) -> EnvFileSource {
    if s.starts_with("http://") || s.starts_with("https://") {
        EnvFileSource::Url(s.to_string())
    } else {
        EnvFileSource::Path(PathBuf::from(s))
    }
}

/// What a boot with this plan does, in order: `b2c cmdline` prints it.
impl fmt::Display for BootPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = |f: &mut fmt::Formatter<'_>, text: fmt::Arguments| writeln!(f, "  - {text}");
        writeln!(f, "plan:")?;
        if !self.modules.is_empty() {
            step(
                f,
                format_args!("load kernel modules {}", self.modules.join(", ")),
            )?;
        }
        let net = &self.network;
        if !net.ifaces.is_empty() {
            let names: Vec<&str> = net.ifaces.iter().map(|i| i.name.as_str()).collect();
            step(f, format_args!("network: b2c.iface {}", names.join(", ")))?;
        } else if let Some(ip) = &net.kernel_ip {
            step(f, format_args!("network: kernel ip= {ip:?}"))?;
        } else {
            step(
                f,
                format_args!(
                    "network: DHCP on every ethernet link, first lease wins (waiting up to {} s)",
                    net.dhcp_timeout.as_secs_f64()
                ),
            )?;
        }
        match &self.ntp_peer {
            NtpPeer::None => step(f, format_args!("clock: left alone"))?,
            NtpPeer::Auto => step(
                f,
                format_args!("clock: SNTP from the DHCP NTP server, else pool.ntp.org"),
            )?,
            NtpPeer::Host(h) => step(f, format_args!("clock: SNTP from {h}"))?,
        }
        if let Some(url) = &self.extra_args_url {
            step(f, format_args!("fetch more options from {url}"))?;
        }
        step(f, format_args!("host name {}", self.hostname))?;
        for nbd in &self.storage.nbds {
            step(
                f,
                format_args!(
                    "network block device {}: {}, {} connection(s)",
                    nbd.device,
                    nbd.server(),
                    nbd.connections
                ),
            )?;
        }
        match &self.storage.cache_device {
            CacheDevice::None => step(
                f,
                format_args!("storage: RAM ({})", self.layout.root().display()),
            )?,
            device => step(
                f,
                format_args!(
                    "storage: cache b2c.cache_device={device} on {}",
                    self.layout.root().display()
                ),
            )?,
        }
        for store in &self.storage.image_stores {
            let fs = &store.filesystem;
            step(
                f,
                format_args!(
                    "image store {}: {} ({}) on {}, read-only",
                    fs.name,
                    fs.src,
                    fs.fstype.as_deref().unwrap_or("auto"),
                    store.mountpoint.display()
                ),
            )?;
        }
        for m in &self.minio {
            step(
                f,
                format_args!("S3 endpoint {}: {} (keys hidden)", m.alias, m.url),
            )?;
        }
        for v in &self.volumes {
            step(f, format_args!("volume {}", describe_volume(v)))?;
        }
        if self.images.is_empty() {
            step(f, format_args!("no container to run"))?;
        }
        for image in &self.images {
            let mut how = image.policy.flag().to_string();
            if let Some(creds) = &image.creds {
                how.push_str(&format!(", --creds {creds}"));
            }
            if let Some(file) = &image.authfile {
                how.push_str(&format!(", --authfile {file}"));
            }
            if !image.platform.is_default() {
                how.push_str(&format!(", platform {}", image.platform));
            }
            match &image.name {
                ImageName::Id(id) => {
                    step(f, format_args!("image {id} from the image stores"))?;
                }
                ImageName::Registry(r) if self.storage.image_stores.is_empty() => {
                    step(f, format_args!("pull {r} ({how})"))?;
                }
                ImageName::Registry(r) => step(
                    f,
                    format_args!("{r} from the image stores, else pull it ({how})"),
                )?,
            }
        }
        for c in &self.containers {
            let verb = match c.stage {
                Stage::Service => "start service",
                Stage::Run => "run",
                Stage::Post => "run post container",
            };
            step(f, format_args!("{verb} {}: {}", c.id, describe(&c.args)))?;
        }
        if self.pipefail {
            step(
                f,
                format_args!("b2c.pipefail: the first failing b2c.run container skips the rest"),
            )?;
        }
        if let Some(t) = self.timeout {
            step(
                f,
                format_args!(
                    "b2c.timeout: after {} s, stop the containers (status 124)",
                    t.as_secs_f64()
                ),
            )?;
        }
        step(f, format_args!("print the pipeline status"))?;
        match (&self.end.shutdown_cmd, self.end.poweroff_delay.is_zero()) {
            (Some(cmd), _) => step(f, format_args!("run the shutdown command {cmd:?}")),
            (None, true) => step(f, format_args!("power off")),
            (None, false) => step(
                f,
                format_args!("power off after {:?}", self.end.poweroff_delay),
            ),
        }
    }
}

fn describe_volume(v: &NamedVolume) -> String {
    let o = &v.options;
    let mut s = format!("{} ({})", o.name, v.path.display());
    let events =
        |evs: &[crate::SyncEvent]| evs.iter().map(|e| e.name()).collect::<Vec<_>>().join("|");
    let side = |remote: &Option<Remote>| remote.as_ref().map(|r| r.to_string()).unwrap_or_default();
    if v.syncs {
        if !o.pull_on.is_empty() {
            s.push_str(&format!(
                ": pull from {} on {}",
                side(&o.pull_from),
                events(&o.pull_on)
            ));
        }
        if o.push_on_changes {
            s.push_str(&format!(
                ": push to {} as files change, and at pipeline_end",
                side(&o.push_to)
            ));
        } else if !o.push_on.is_empty() {
            s.push_str(&format!(
                ": push to {} on {}",
                side(&o.push_to),
                events(&o.push_on)
            ));
        }
        let mut flags: Vec<String> = Vec::new();
        if o.overwrite {
            flags.push("overwrite".into());
        }
        if o.remove {
            flags.push("remove".into());
        }
        if o.preserve {
            flags.push("preserve".into());
        }
        for e in &o.exclude {
            flags.push(format!("exclude={e}"));
        }
        if o.encrypt_key.is_some() {
            flags.push("SSE-C".into());
        }
        if !flags.is_empty() {
            s.push_str(&format!(" [{}]", flags.join(", ")));
        }
    }
    if o.fscrypt_key.is_some() {
        s.push_str(if o.fscrypt_reset_key {
            "; fscrypt-encrypted (reset if under another key)"
        } else {
            "; fscrypt-encrypted"
        });
    }
    if let Some(fs) = &o.filesystem {
        s.push_str(&format!("; on b2c.filesystem {fs}"));
    }
    if o.expiration == Expiration::PipelineEnd {
        s.push_str("; deleted after the pipeline");
    }
    s
}

fn describe(args: &ContainerArgs) -> String {
    let mut s = args.image.clone();
    if let Some(e) = args.entrypoint_words() {
        s.push_str(&format!(" (entrypoint {e:?})"));
    }
    if !args.command.is_empty() {
        s.push_str(&format!(" {:?}", args.command));
    }
    if !args.tls_verify {
        s.push_str(" [--tls-verify=false]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(line: &str) -> Result<BootPlan, PlanError> {
        derive(crate::parse(line)?)
    }

    #[test]
    fn containers_get_stable_ids_in_pipeline_order() {
        let p = plan(
            r#"b2c.run="a:1 true" b2c.run_service=svc b2c.post_container=post b2c.run=b:2 b2c.container="a:1 false""#,
        )
        .unwrap();
        let ids: Vec<(&str, Stage)> = p
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.stage))
            .collect();
        assert_eq!(
            ids,
            [
                ("service-0", Stage::Service),
                ("run-0", Stage::Run),
                ("run-1", Stage::Run),
                ("run-2", Stage::Run),
                ("post-0", Stage::Post),
            ]
        );
        assert_eq!(p.stage(Stage::Run).count(), 3);
    }

    #[test]
    fn images_are_typed_and_shared() {
        let p = plan(
            r#"b2c.run="docker://a:1 true" b2c.run="a:1 false" b2c.run="--pull=missing a:1" b2c.run=quay.io/x/y@sha256:0123456789012345678901234567890123456789012345678901234567890123"#,
        )
        .unwrap();
        let refs: Vec<String> = p.images.iter().map(|i| i.name.to_string()).collect();
        assert_eq!(
            refs,
            [
                "docker.io/library/a:1",
                "docker.io/library/a:1",
                "quay.io/x/y@sha256:0123456789012345678901234567890123456789012345678901234567890123",
            ]
        );
        let images: Vec<usize> = p.containers.iter().map(|c| c.image.0).collect();
        assert_eq!(images, [0, 0, 1, 2], "same image and settings: pulled once");
        assert_eq!(p.images[1].policy, PullPolicy::Missing);
        assert_eq!(
            p.image(p.containers[3].image).written,
            p.containers[3].args.image
        );
    }

    #[test]
    fn a_bad_image_is_a_plan_error_naming_its_option() {
        for (line, key) in [
            ("b2c.run=Foo/Bar", "b2c.run"),
            ("b2c.run_service=oci:/tmp/x", "b2c.run_service"),
            ("b2c.post_container=\"x:-bad\"", "b2c.post_container"),
        ] {
            let e = plan(line).unwrap_err();
            assert_eq!(e.key(), key, "{line}");
            assert!(e.to_string().starts_with(key), "{e}");
        }
    }

    #[test]
    fn env_files_and_volumes_are_resolved_once() {
        let p = plan(
            "b2c.run=\"--env-file /etc/e -v job:/job -v /dev/shm:/shm:ro a\" \
             b2c.run=\"--env-file http://h/e --env-file /etc/e -v job:/j b\"",
        )
        .unwrap();
        assert_eq!(
            p.env_files,
            [
                EnvFileSource::Path("/etc/e".into()),
                EnvFileSource::Url("http://h/e".into())
            ]
        );
        assert_eq!(p.containers[1].env_files, [EnvFileId(1), EnvFileId(0)]);
        let v = &p.containers[0].volumes;
        assert_eq!(v[0].source, Path::new("/storage/volumes/job"));
        assert!(v[0].named);
        assert_eq!(v[1].source, Path::new("/dev/shm"));
        assert!(!v[1].named && v[1].read_only);
        assert_eq!(p.containers[1].volumes[0].source, v[0].source);
    }

    #[test]
    fn registry_secrets_are_never_shown() {
        let line = r#"b2c.run="--creds bob:s3cr3t img:1" b2c.run="--authfile http://h/auth.json img:1" b2c.run="--creds bob:s3cr3t img:1 true""#;
        let p = plan(line).unwrap();
        // Same image with other credentials: pulled apart; the same twice: once.
        let images: Vec<usize> = p.containers.iter().map(|c| c.image.0).collect();
        assert_eq!(images, [0, 1, 0]);
        assert_eq!(
            p.images[0]
                .creds
                .as_ref()
                .unwrap()
                .password
                .as_ref()
                .map(|s| s.expose()),
            Some("s3cr3t")
        );
        assert_eq!(
            p.images[1].authfile,
            Some(EnvFileSource::Url("http://h/auth.json".into()))
        );
        let shown = format!("{p}\n{p:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("--creds bob:***"), "{shown}");
        assert_eq!(p.containers[0].option_value(), "--creds bob:*** img:1");
        // Nor in the errors of the option that holds them.
        let e = plan(r#"b2c.run="--creds bob:s3cr3t --bogus img""#).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(!format!("{e:?}").contains("s3cr3t"), "{e:?}");
    }

    #[test]
    fn layout_names_every_path_under_the_root() {
        let l = Layout::default();
        assert_eq!(l.root(), Path::new("/storage"));
        assert_eq!(l.image_store(), Path::new("/storage/oci"));
        assert_eq!(l.tmp(), Path::new("/storage/tmp"));
        let p = plan("b2c.run=a").unwrap();
        assert_eq!(
            l.container(&p.containers[0].id),
            Path::new("/storage/containers/run-0")
        );
        assert_eq!(
            l.log(&p.containers[0].id),
            Path::new("/storage/logs/run-0.log")
        );
    }

    #[test]
    fn images_by_id_need_an_image_store() {
        let id = "0123456789abcdef".repeat(4);
        let e = plan(&format!("b2c.run={id}")).unwrap_err();
        assert!(matches!(e, PlanError::ImageIdWithoutStore { .. }), "{e}");
        assert_eq!(e.key(), "b2c.run");
        assert!(
            e.to_string().contains("b2c.storage=additionalimagestores"),
            "{e}"
        );
        let p = plan(&format!(
            r#"b2c.filesystem=public,type=nfs,src=gw:/imagestore/public,opts=ro|vers=4.2|nolock b2c.storage="additionalimagestores=public,gone" b2c.run_service="--privileged --tls-verify=false --pid=host {id}" b2c.run=alpine"#
        ))
        .unwrap();
        assert_eq!(p.images[0].name, ImageName::Id(id.clone()));
        assert!(matches!(p.images[1].name, ImageName::Registry(_)));
        assert_eq!(p.storage.image_stores.len(), 1);
        let store = &p.storage.image_stores[0];
        assert_eq!(store.filesystem.name, "public");
        assert_eq!(store.mountpoint, Path::new("/run/b2c/imagestores/public"));
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("additionalimagestores=gone")),
            "{:?}",
            p.warnings
        );
        let shown = p.to_string();
        assert!(
            shown.contains(&format!("image {id} from the image stores")),
            "{shown}"
        );
        assert!(
            shown.contains(
                "image store public: gw:/imagestore/public (nfs) on /run/b2c/imagestores/public"
            ),
            "{shown}"
        );
    }

    #[test]
    fn cache_on_an_unknown_filesystem_warns_and_uses_none() {
        let p = plan("b2c.cache_device=nfs").unwrap();
        assert_eq!(p.storage.cache_device, CacheDevice::None);
        assert!(
            p.warnings[0].contains("b2c.cache_device=nfs"),
            "{:?}",
            p.warnings
        );
        let p = plan("b2c.filesystem=nfs,src=h:/x b2c.cache_device=nfs").unwrap();
        assert_eq!(
            p.storage.cache_device,
            CacheDevice::Filesystem("nfs".into())
        );
    }

    #[test]
    fn the_plan_reads_in_boot_order() {
        let p = plan(
            r#"b2c.run_service="svc:1" b2c.run="docker://alpine:3 echo hi" b2c.post_container=post:2 b2c.ntp_peer=none b2c.dhcp_timeout=90"#,
        )
        .unwrap()
        .to_string();
        let svc = p.find("start service service-0: svc:1").unwrap();
        let run = p.find(r#"run run-0: alpine:3 ["echo", "hi"]"#).unwrap();
        let post = p.find("run post container post-0: post:2").unwrap();
        assert!(svc < run && run < post, "{p}");
        assert!(p.contains("clock: left alone"), "{p}");
        assert!(p.contains("first lease wins (waiting up to 90 s)"), "{p}");
        assert!(
            p.contains("pull docker.io/library/alpine:3 (--pull=always)"),
            "{p}"
        );
    }

    const MINIO: &str = "b2c.minio=\"gateway,http://10.42.0.1:9000,job-4242-dut,Xk3pQ9sLr2Tz\"";

    #[test]
    fn volumes_are_typed_and_their_keys_never_printed() {
        let line = format!(
            "{MINIO} b2c.volume=\"job-4242-results,mirror=gateway/job-4242,pull_on=pipeline_start,\
             push_on=changes,overwrite,exclude=install/*,exclude=*.shader_cache,remove,\
             expiration=pipeline_end,preserve\" b2c.volume=scratch \
             b2c.run=\"-v job-4242-results:/results registry.example/mesa/test:42 ./run-tests\""
        );
        let p = plan(&line).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.volumes.len(), 2);
        let v = &p.volumes[0];
        assert!(v.syncs);
        assert_eq!(v.path, Path::new("/storage/volumes/job-4242-results"));
        assert_eq!(p.containers[0].volumes[0].source, v.path);
        assert_eq!(
            p.endpoint("gateway").unwrap().secret_key.expose(),
            "Xk3pQ9sLr2Tz"
        );
        assert!(!p.volumes[1].syncs);
        let shown = format!("{p}\n{p:#?}");
        for secret in ["Xk3pQ9sLr2Tz", "job-4242-dut"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("volume job-4242-results (/storage/volumes/job-4242-results): pull from gateway/job-4242 on pipeline_start: push to gateway/job-4242 as files change, and at pipeline_end [overwrite, remove, preserve, exclude=install/*, exclude=*.shader_cache]; deleted after the pipeline"),
            "{shown}"
        );
        assert!(
            shown.contains("S3 endpoint gateway: http://10.42.0.1:9000 (keys hidden)"),
            "{shown}"
        );
        assert_eq!(
            Layout::default().volume_state(),
            Path::new("/storage/volumes/.b2c")
        );
    }

    #[test]
    fn volume_errors_name_the_option_and_hide_the_keys() {
        for (line, key, why) in [
            (
                "b2c.volume=v,mirror=nowhere/bkt",
                "b2c.volume",
                "no b2c.minio declares the alias \"nowhere\"",
            ),
            (
                "b2c.volume=v,filesystem=nfs",
                "b2c.volume",
                "no b2c.filesystem",
            ),
            ("b2c.minio=gw,http://h,AK", "b2c.minio", "4 fields"),
            (
                "b2c.volume=v,expiration=tomorrow",
                "b2c.volume",
                "expiration",
            ),
        ] {
            let e = plan(&format!("{MINIO} {line}")).unwrap_err();
            assert_eq!(e.key(), key, "{line}");
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
        let e = plan("b2c.minio=\"gw,ftp://h,AKIA-SECRET,SK-SECRET\"").unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        // One side only: boot2container syncs nothing, and says so.
        let p = plan(&format!(
            "{MINIO} b2c.volume=v,pull_from=gateway/bkt,pull_on=pipeline_start"
        ))
        .unwrap();
        assert!(!p.volumes[0].syncs);
        assert!(
            p.warnings[0].contains("only pull_from is set"),
            "{:?}",
            p.warnings
        );
        // The last declaration of a name or alias wins.
        let p = plan(&format!(
            "{MINIO} b2c.minio=gateway,http://other:9000,a,b b2c.volume=v,remove b2c.volume=v,overwrite"
        ))
        .unwrap();
        assert_eq!(p.minio.len(), 1);
        assert_eq!(p.minio[0].url, "http://other:9000");
        assert_eq!(p.volumes.len(), 1);
        assert!(p.volumes[0].options.overwrite && !p.volumes[0].options.remove);
    }
}
