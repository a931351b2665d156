//! The boot plan: everything a boot will do, derived from the parsed
//! options by pure code and checked before any I/O, so that `b2c cmdline`
//! reports exactly the errors a boot would, and every phase reads one typed
//! value instead of re-parsing strings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    CacheDevice, Config, ContainerArgs, DebugPanic, Error, Filesystem, IfaceConfig, ImageRef,
    KernelIp, NtpPeer, Proxy, PullPolicy, ReferenceError, Swap, VolumeSource,
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

    /// Named volumes: one directory each, shared by the containers naming it.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
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
    pub reference: ImageRef,
    /// As written in the option (for messages).
    pub written: String,
    pub policy: PullPolicy,
    /// `--tls-verify`; `b2c.insecure_registry` applies on top, per host.
    pub tls_verify: bool,
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

/// A `-v` resolved to a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// A named volume (created on first use) rather than a host path
    /// (which must exist).
    pub named: bool,
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
    /// How the pipeline names it (`B2C_PIPELINE_*`, console lines).
    pub fn name(&self) -> &str {
        &self.args.image
    }
}

/// How the network comes up: `b2c.iface` entries, else `ip=`, else DHCP
/// on every ethernet link.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkPlan {
    pub ifaces: Vec<IfaceConfig>,
    pub kernel_ip: Option<KernelIp>,
}

/// `b2c.cache_device`, `b2c.filesystem`, `b2c.swap`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoragePlan {
    pub cache_device: CacheDevice,
    pub filesystems: Vec<Filesystem>,
    pub swap: Option<Swap>,
}

/// How registries and URLs are reached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustPlan {
    /// `b2c.ca_cert`: paths or URLs of extra CA certificates (PEM).
    pub ca_certs: Vec<String>,
    pub proxy: Proxy,
    /// `b2c.insecure_registry`.
    pub insecure_registries: Vec<String>,
    /// `b2c.registry_mirror`: (registry, mirror) pairs.
    pub registry_mirrors: Vec<(String, String)>,
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
    pub pipefail: bool,
    /// `b2c.timeout`: the pipeline's containers are stopped once it ran
    /// this long, and the status is 124.
    pub timeout: Option<Duration>,
    /// `b2c.watchdog`: the hardware watchdog's timeout, if it is used.
    pub watchdog: Option<Duration>,
    pub end: EndPlan,
    /// `b2c.log=debug`.
    pub debug: bool,
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
}

impl PlanError {
    /// The option to fix.
    pub fn key(&self) -> &str {
        match self {
            PlanError::Option(e) => &e.key,
            PlanError::Image { key, .. } => key,
        }
    }
}

/// Derives the plan from parsed options, checking everything that needs
/// no I/O.
pub fn derive(config: Config) -> Result<BootPlan, PlanError> {
    if let CacheDevice::Filesystem(name) = &config.cache_device {
        if !config.filesystems.iter().any(|f| &f.name == name) {
            return Err(Error {
                key: "b2c.cache_device".into(),
                value: name.clone(),
                problem: format!(
                    "no b2c.filesystem is named {name:?} (expected none, auto, reset, \
                     /dev/DEVICE or a b2c.filesystem name)"
                ),
            }
            .into());
        }
    }
    let layout = Layout::default();
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
            let reference = ImageRef::parse(&args.image).map_err(|source| PlanError::Image {
                key: stage.option(),
                written: args.image.clone(),
                source,
            })?;
            let image = ImagePlan {
                reference,
                written: args.image.clone(),
                policy: args.pull,
                tls_verify: args.tls_verify,
            };
            let image = ImageId(index_of(&mut images, image, |a, b| {
                (&a.reference, a.policy, a.tls_verify) == (&b.reference, b.policy, b.tls_verify)
            }));
            let files = args
                .env_files
                .iter()
                .map(|s| EnvFileId(index_of(&mut env_files, env_file_source(s), PartialEq::eq)))
                .collect();
            let id = ContainerId(format!("{}-{i}", stage.id_prefix()));
            let volumes = args
                .volumes
                .iter()
                .map(|v| match &v.source {
                    VolumeSource::Named(name) => VolumePlan {
                        source: layout.volume(name),
                        destination: v.destination.clone(),
                        read_only: v.read_only,
                        named: true,
                    },
                    VolumeSource::HostPath(path) => VolumePlan {
                        source: PathBuf::from(path),
                        destination: v.destination.clone(),
                        read_only: v.read_only,
                        named: false,
                    },
                })
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
        },
        ntp_peer: config.ntp_peer,
        extra_args_url: config.extra_args_url,
        hostname: config.hostname,
        modules: config.modules,
        storage: StoragePlan {
            cache_device: config.cache_device,
            filesystems: config.filesystems,
            swap: config.swap,
        },
        layout,
        trust: TrustPlan {
            ca_certs: config.ca_certs,
            proxy: config.proxy,
            insecure_registries: config.insecure_registries,
            registry_mirrors: config.registry_mirrors,
            pull_retry: config.pull_retry,
            pull_stall: config.pull_stall,
        },
        images,
        env_files,
        containers,
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
        debug_panic: config.debug_panic,
        warnings: config.warnings,
    })
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
                format_args!("network: DHCP on every ethernet link, first lease wins"),
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
        if self.images.is_empty() {
            step(f, format_args!("no container to run"))?;
        }
        for image in &self.images {
            step(
                f,
                format_args!("pull {} ({})", image.reference, image.policy.flag()),
            )?;
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

fn describe(args: &ContainerArgs) -> String {
    let mut s = args.image.clone();
    if let Some(e) = &args.entrypoint {
        s.push_str(&format!(" (entrypoint {e})"));
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
        let refs: Vec<String> = p.images.iter().map(|i| i.reference.to_string()).collect();
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
    fn layout_names_every_path_under_the_root() {
        let l = Layout::default();
        assert_eq!(l.root(), Path::new("/storage"));
        assert_eq!(l.image_store(), Path::new("/storage/oci"));
        let p = plan("b2c.run=a").unwrap();
        assert_eq!(
            l.container(&p.containers[0].id),
            Path::new("/storage/containers/run-0")
        );
    }

    #[test]
    fn cache_on_an_unknown_filesystem_is_refused() {
        assert_eq!(
            plan("b2c.cache_device=nfs").unwrap_err().key(),
            "b2c.cache_device"
        );
        assert!(plan("b2c.filesystem=nfs,src=h:/x b2c.cache_device=nfs").is_ok());
    }

    #[test]
    fn the_plan_reads_in_boot_order() {
        let p = plan(
            r#"b2c.run_service="svc:1" b2c.run="docker://alpine:3 echo hi" b2c.post_container=post:2 b2c.ntp_peer=none"#,
        )
        .unwrap()
        .to_string();
        let svc = p.find("start service service-0: svc:1").unwrap();
        let run = p.find(r#"run run-0: alpine:3 ["echo", "hi"]"#).unwrap();
        let post = p.find("run post container post-0: post:2").unwrap();
        assert!(svc < run && run < post, "{p}");
        assert!(p.contains("clock: left alone"), "{p}");
        assert!(
            p.contains("pull docker.io/library/alpine:3 (--pull=always)"),
            "{p}"
        );
    }
}
