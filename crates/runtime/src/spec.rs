//! The OCI runtime spec of one container, from its image configuration and
//! its `b2c.run` arguments.
//!
//! Containers run privileged on the host network, as with boot2container:
//! the job is hardware testing, so it needs every capability, the host's
//! devices and a writable /sys. The podman flags of [`ContainerArgs`]
//! change that spec as podman would: namespaces shared with the host,
//! capabilities dropped, limits, mounts, the environment podman gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use b2c_cmdline::{ContainerArgs, EnvArg, Namespace, VolumePlan, CAPABILITIES};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResources, Mount, MountBuilder, PosixRlimit, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use serde_json::json;

use crate::user::ResolvedUser;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `--init` puts its init in the container, as podman does.
pub const INIT_IN_CONTAINER: &str = "/run/podman-init";

/// The ambient capabilities a process that is not root keeps.
const AMBIENT: &[&str] = &["CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"];

/// Variables podman passes from its own environment with `--http-proxy`.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
];

/// The /etc files a container gets from the host.
#[derive(Debug, Clone, Copy)]
pub struct HostFiles<'a> {
    /// `None` with `--dns=none`: the image keeps its own.
    pub resolv_conf: Option<&'a Path>,
    pub hostname: &'a Path,
    /// `None` with `--no-hosts`.
    pub hosts: Option<&'a Path>,
}

/// What the spec is made from.
#[derive(Debug)]
pub struct SpecInputs<'a> {
    pub args: &'a ContainerArgs,
    pub image: &'a ImageConfiguration,
    /// The merged (overlay) root filesystem.
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub host_files: HostFiles<'a>,
    /// Volumes (`-v`, `--mount`, `--tmpfs`), already resolved.
    pub volumes: &'a [VolumePlan],
    /// From `-u`/`User` and `--group-add`, resolved in the image.
    pub user: &'a ResolvedUser,
    /// From `--env-file`: after the image's variables, before `-e`.
    pub env_file: &'a [(String, String)],
    /// Set after the image's and the user's variables: the pipeline's.
    pub extra_env: &'a [(String, String)],
    /// b2c's own environment: `-e NAME`, `--env-host`, `--http-proxy`.
    pub host_env: &'a [(String, String)],
    /// `--init`: the init binary on the host, bound at
    /// [`INIT_IN_CONTAINER`].
    pub init: Option<&'a Path>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("image {0} has no command: give one after the image in b2c.run")]
    NoCommand(String),
    #[error("cannot build the runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("cannot build the runtime spec: {0}")]
    Json(#[from] serde_json::Error),
}

/// The command line, podman's way: `--entrypoint` replaces the image's
/// entrypoint and drops its `Cmd`; a command after the image replaces `Cmd`.
pub fn process_args(args: &ContainerArgs, image: &ImageConfiguration) -> Vec<String> {
    let config = image.config().as_ref();
    let (entrypoint, default_cmd) = match args.entrypoint_words() {
        Some(e) => (e, Vec::new()),
        None => (
            config
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default(),
            config.and_then(|c| c.cmd().clone()).unwrap_or_default(),
        ),
    };
    let cmd = if args.command.is_empty() {
        default_cmd
    } else {
        args.command.clone()
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// An ordered environment where setting a variable replaces it in place.
#[derive(Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// `${NAME}` and `$NAME` replaced by their current values.
    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, len) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) => (&braced[..end], end + 2),
                    None => ("", 0),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            if name.is_empty() {
                out.push('$');
                rest = after;
            } else {
                out.push_str(self.get(name).unwrap_or(""));
                rest = &after[len..];
            }
        }
        out.push_str(rest);
        out
    }
}

/// The environment podman gives, in its order: b2c's own (`--env-host`,
/// else the proxy variables of `--http-proxy`), podman's defaults (`PATH`,
/// `TERM=xterm`, `container=podman`), the image's, `--env-merge`,
/// `--env-file`, `-e`, then `HOSTNAME` and `HOME` when still unset, and the
/// pipeline's variables last.
pub fn process_env(inputs: &SpecInputs) -> Vec<String> {
    let args = inputs.args;
    let host = inputs.host_env;
    let mut env = Env::default();
    if args.env_host {
        for (k, v) in host {
            env.set(k, v);
        }
    } else if args.http_proxy {
        for (k, v) in host
            .iter()
            .filter(|(k, _)| PROXY_VARS.contains(&k.as_str()))
        {
            env.set(k, v);
        }
    }
    env.set("PATH", DEFAULT_PATH);
    env.set("TERM", "xterm");
    env.set("container", "podman");
    let image_env = inputs
        .image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    for entry in &image_env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        env.set(k, v);
    }
    if args.unsetenv_all {
        env = Env::default();
    }
    for name in &args.unsetenv {
        env.remove(name);
    }
    for (k, v) in &args.env_merge {
        let value = env.expand(v);
        env.set(k, &value);
    }
    if let Some(tz) = &args.tz {
        let host_tz = host
            .iter()
            .find(|(k, _)| k == "TZ")
            .map(|(_, v)| v.as_str());
        match (tz.as_str(), host_tz) {
            ("local", Some(v)) => env.set("TZ", v),
            ("local", None) => {}
            (zone, _) => env.set("TZ", zone),
        }
    }
    for (k, v) in inputs.env_file {
        env.set(k, v);
    }
    for e in &args.env {
        match e {
            EnvArg::Set(k, v) => env.set(k, v),
            EnvArg::FromHost(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => {
                    for (k, v) in host.iter().filter(|(k, _)| k.starts_with(prefix)) {
                        env.set(k, v);
                    }
                }
                // Dropped when b2c does not have it, as podman does.
                None => {
                    if let Some((_, v)) = host.iter().find(|(k, _)| k == pattern) {
                        env.set(pattern, v);
                    }
                }
            },
        }
    }
    let unset = |name: &str| args.unsetenv_all || args.unsetenv.iter().any(|u| u == name);
    if env.get("HOSTNAME").is_none() && !unset("HOSTNAME") {
        env.set("HOSTNAME", inputs.hostname);
    }
    if env.get("HOME").is_none() && !unset("HOME") {
        env.set("HOME", inputs.user.home.as_deref().unwrap_or("/"));
    }
    for (k, v) in inputs.extra_env {
        env.set(k, v);
    }
    env.0.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Every capability, less `--cap-drop`, plus `--cap-add` (which only
/// matters after `--cap-drop=ALL`), as containers/common merges them.
pub fn capabilities(args: &ContainerArgs) -> Vec<String> {
    let all = || CAPABILITIES.iter().map(|c| c.to_string());
    let drops: Vec<&str> = args.cap_drop.iter().map(String::as_str).collect();
    if args.cap_add.iter().any(|c| c == "ALL") {
        return all().filter(|c| !drops.contains(&c.as_str())).collect();
    }
    let mut caps: Vec<String> = if drops.contains(&"ALL") {
        Vec::new()
    } else {
        all().filter(|c| !drops.contains(&c.as_str())).collect()
    };
    for add in &args.cap_add {
        if !caps.contains(add) {
            caps.push(add.clone());
        }
    }
    caps
}

fn mount(destination: &str, typ: &str, source: impl Into<PathBuf>, options: Vec<String>) -> Mount {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source.into())
        .options(options)
        .build()
        .expect("a mount has every field")
}

fn bind(source: impl Into<PathBuf>, destination: &str, recursive: bool, read_only: bool) -> Mount {
    let kind = if recursive { "rbind" } else { "bind" };
    let access = if read_only { "ro" } else { "rw" };
    mount(
        destination,
        "bind",
        source,
        vec![kind.to_string(), access.to_string()],
    )
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mounts(inputs: &SpecInputs) -> Vec<Mount> {
    let args = inputs.args;
    let files = &inputs.host_files;
    let mut mounts = vec![
        mount(
            "/proc",
            "proc",
            "proc",
            strings(&["nosuid", "noexec", "nodev"]),
        ),
        // Privileged: the host's devices, including devpts, shm and mqueue.
        bind("/dev", "/dev", true, false),
        bind("/sys", "/sys", true, false),
        // As podman: cgroup2 mounted afresh, so that in its own cgroup
        // namespace a container reads its own limits there.
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            strings(&["rw", "nosuid", "noexec", "nodev", "relatime"]),
        ),
    ];
    if let Some(bytes) = args.shm_size {
        mounts.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "mode=1777".into(),
                format!("size={bytes}"),
            ],
        ));
    }
    mounts.push(bind(files.hostname, "/etc/hostname", false, false));
    if let Some(hosts) = files.hosts {
        mounts.push(bind(hosts, "/etc/hosts", false, false));
    }
    if let Some(resolv_conf) = files.resolv_conf {
        mounts.push(bind(resolv_conf, "/etc/resolv.conf", false, false));
    }
    if args.read_only && args.read_only_tmpfs {
        for dir in ["/run", "/tmp", "/var/tmp"] {
            mounts.push(mount(
                dir,
                "tmpfs",
                "tmpfs",
                strings(&["rw", "nosuid", "nodev"]),
            ));
        }
    }
    if let Some(init) = inputs.init {
        mounts.push(bind(init, INIT_IN_CONTAINER, false, true));
    }
    // `--device HOST:OTHER`: the host's node under the other name. Those
    // under their own name are there already, with the host's /dev.
    for d in args.devices.iter().filter(|d| d.host != d.container) {
        mounts.push(bind(
            &d.host,
            &d.container,
            true,
            !d.permissions.contains('w'),
        ));
    }
    // Volumes last: they may sit below any of the above.
    mounts.extend(inputs.volumes.iter().map(volume_mount));
    mounts
}

fn volume_mount(v: &VolumePlan) -> Mount {
    let access = if v.read_only { "ro" } else { "rw" };
    match &v.filesystem {
        Some(fs) => {
            let mut options = vec![access.to_string()];
            options.extend(v.options.iter().cloned());
            mount(&v.destination, fs, fs, options)
        }
        None => {
            let kind = if v.recursive { "rbind" } else { "bind" };
            let mut options = vec![kind.to_string(), access.to_string()];
            options.extend(v.options.iter().cloned());
            mount(&v.destination, "bind", &v.source, options)
        }
    }
}

/// `-u`, else the image's `User`: resolved against the image's own files.
pub fn user_spec(args: &ContainerArgs, image: &ImageConfiguration) -> String {
    args.user
        .clone()
        .or_else(|| image.config().as_ref().and_then(|c| c.user().clone()))
        .unwrap_or_default()
}

fn namespaces(args: &ContainerArgs) -> Result<Vec<LinuxNamespace>, SpecError> {
    let ns = &args.namespaces;
    let mut out = vec![LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::Mount)
        .build()?];
    for (mode, typ) in [
        (&ns.pid, LinuxNamespaceType::Pid),
        (&ns.ipc, LinuxNamespaceType::Ipc),
        (&ns.uts, LinuxNamespaceType::Uts),
        (&ns.cgroup, LinuxNamespaceType::Cgroup),
        (&ns.network, LinuxNamespaceType::Network),
    ] {
        match mode {
            // No entry: the host's (b2c's) namespace.
            Namespace::Host => {}
            Namespace::Private => out.push(LinuxNamespaceBuilder::default().typ(typ).build()?),
            Namespace::Path(path) => out.push(
                LinuxNamespaceBuilder::default()
                    .typ(typ)
                    .path(PathBuf::from(path))
                    .build()?,
            ),
        }
    }
    Ok(out)
}

fn rlimits(args: &ContainerArgs) -> Result<Vec<PosixRlimit>, SpecError> {
    // `--ulimit host`: none set, crun passes b2c's own on.
    let mut limits: Vec<(String, u64, u64)> = if args.ulimits.host {
        Vec::new()
    } else {
        vec![("RLIMIT_NOFILE".into(), 1_048_576, 1_048_576)]
    };
    for (name, soft, hard) in &args.ulimits.limits {
        limits.retain(|(n, _, _)| n != name);
        limits.push((name.clone(), *soft, *hard));
    }
    limits
        .into_iter()
        .map(|(typ, soft, hard)| {
            Ok(serde_json::from_value(
                json!({"type": typ, "soft": soft, "hard": hard}),
            )?)
        })
        .collect()
}

/// `linux.resources`: every device allowed (privileged), and the cgroup
/// limits asked for.
fn resources(args: &ContainerArgs) -> Result<LinuxResources, SpecError> {
    let r = &args.resources;
    let mut devices = vec![json!({"allow": true, "access": "rwm"})];
    for rule in &r.device_rules {
        devices.push(json!({
            "allow": true,
            "type": rule.kind.to_string(),
            "major": rule.major,
            "minor": rule.minor,
            "access": rule.access,
        }));
    }
    let mut res = json!({ "devices": devices });
    let mut memory = serde_json::Map::new();
    let put =
        |map: &mut serde_json::Map<String, serde_json::Value>, key: &str, v: serde_json::Value| {
            if !v.is_null() {
                map.insert(key.into(), v);
            }
        };
    put(&mut memory, "limit", json!(r.memory));
    put(&mut memory, "reservation", json!(r.memory_reservation));
    put(&mut memory, "swap", json!(r.memory_swap));
    put(&mut memory, "swappiness", json!(r.memory_swappiness));
    if r.oom_kill_disable {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if !memory.is_empty() {
        res["memory"] = memory.into();
    }
    let mut cpu = serde_json::Map::new();
    put(&mut cpu, "quota", json!(r.cpu_quota));
    put(&mut cpu, "period", json!(r.cpu_period));
    put(&mut cpu, "shares", json!(r.cpu_shares));
    put(&mut cpu, "realtimeRuntime", json!(r.cpu_rt_runtime));
    put(&mut cpu, "realtimePeriod", json!(r.cpu_rt_period));
    put(&mut cpu, "cpus", json!(r.cpuset_cpus));
    put(&mut cpu, "mems", json!(r.cpuset_mems));
    if !cpu.is_empty() {
        res["cpu"] = cpu.into();
    }
    if let Some(limit) = r.pids_limit {
        res["pids"] = json!({ "limit": limit });
    }
    if let Some(weight) = r.blkio_weight {
        res["blockIO"] = json!({ "weight": weight });
    }
    if !r.unified.is_empty() {
        let unified: HashMap<&str, &str> = r
            .unified
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        res["unified"] = json!(unified);
    }
    Ok(serde_json::from_value(res)?)
}

/// Builds the runtime spec (config.json) of one container.
pub fn runtime_spec(inputs: &SpecInputs, id: &str) -> Result<Spec, SpecError> {
    let args = inputs.args;
    let mut command = process_args(args, inputs.image);
    if command.is_empty() {
        return Err(SpecError::NoCommand(args.image.clone()));
    }
    if inputs.init.is_some() {
        command.splice(0..0, [INIT_IN_CONTAINER.to_string(), "--".to_string()]);
    }
    let image_config = inputs.image.config().as_ref();
    let cwd = args
        .workdir
        .clone()
        .or_else(|| image_config.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());

    let cap_names = capabilities(args);
    let caps: Capabilities = serde_json::from_value(json!(cap_names))?;
    // oci-spec's default ambient set, less what was dropped: the kernel
    // refuses an ambient capability that is not permitted.
    let ambient: Capabilities = serde_json::from_value(json!(AMBIENT
        .iter()
        .filter(|c| cap_names.iter().any(|n| n == *c))
        .collect::<Vec<_>>()))?;
    let capabilities = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(caps)
        .ambient(ambient)
        .build()?;
    let mut user = UserBuilder::default()
        .uid(inputs.user.uid)
        .gid(inputs.user.gid);
    if !inputs.user.additional_gids.is_empty() {
        user = user.additional_gids(inputs.user.additional_gids.clone());
    }
    if let Some(umask) = args.umask {
        user = user.umask(umask);
    }
    let mut process = ProcessBuilder::default()
        .terminal(args.tty)
        .args(command)
        .env(process_env(inputs))
        .cwd(cwd)
        .user(user.build()?)
        .capabilities(capabilities)
        .no_new_privileges(args.security.no_new_privileges)
        .rlimits(rlimits(args)?);
    if let Some(adj) = args.oom_score_adj {
        process = process.oom_score_adj(adj);
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(args)?)
        .resources(resources(args)?)
        .cgroups_path(PathBuf::from(format!(
            "/{}/{id}",
            crate::crun::CGROUP_PARENT
        )))
        .masked_paths(args.security.masked_paths.clone())
        .readonly_paths(Vec::<String>::new());
    if !args.sysctls.is_empty() {
        linux = linux.sysctl(args.sysctls.iter().cloned().collect::<HashMap<_, _>>());
    }
    if let Some(domain) = &args.personality {
        linux = linux.personality(
            serde_json::from_value::<oci_spec::runtime::LinuxPersonality>(
                json!({ "domain": domain }),
            )?,
        );
    }

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(inputs.rootfs)
                .readonly(args.read_only)
                .build()?,
        )
        .mounts(mounts(inputs))
        .process(process.build()?)
        .linux(linux.build()?);
    // A host name needs a UTS namespace of its own.
    if args.namespaces.uts != Namespace::Host {
        spec = spec.hostname(inputs.hostname);
    }
    let mut spec = spec.build()?;
    if args.namespaces.uts == Namespace::Host {
        // oci-spec's default has one.
        spec.set_hostname(None);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests;
