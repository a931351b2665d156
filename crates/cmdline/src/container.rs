//! podman-run-style container arguments: `[OPTIONS] IMAGE [COMMAND [ARG...]]`.
//!
//! boot2container hands these to `podman create`, so every flag of
//! `podman run` (podman 4.3, see `podman-run-flags.txt`) is accepted here,
//! parsed as cobra/pflag does (`-ti`, `-dit`, `--flag=value`, `--flag value`,
//! comma-separated lists). Flags with a meaning for a privileged
//! host-network container become typed fields; the others are recorded in
//! [`ContainerArgs::ignored`], so that the boot can say once that they have
//! no effect. A flag podman does not know is an error naming it.

use std::fmt;
use std::net::IpAddr;

use crate::podman::{self, Takes};
use crate::Secret;

/// One container to run, as written in a `b2c.run` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerArgs {
    /// The whole option value, with its secrets masked ([`redact`]): what
    /// boot2container puts in `B2C_PIPELINE_FAILED_BY` and friends.
    pub written: String,
    /// The image reference without the `docker://` transport prefix.
    pub image: String,
    /// Replaces the image's `Cmd` when not empty.
    pub command: Vec<String>,
    /// `-e`, in order; later ones override earlier ones.
    pub env: Vec<EnvArg>,
    /// `--env-host`: all of b2c's own environment, below the image's.
    pub env_host: bool,
    /// `--http-proxy` (default true): b2c's `http_proxy`, `https_proxy`,
    /// `ftp_proxy`, `no_proxy` (either case) are passed on.
    pub http_proxy: bool,
    /// `--env-merge NAME=VALUE`: `${NAME}` in VALUE is the image's value.
    pub env_merge: Vec<(String, String)>,
    /// `--unsetenv NAME`: a default (podman's or the image's) removed.
    pub unsetenv: Vec<String>,
    /// `--unsetenv-all`: no default variable at all.
    pub unsetenv_all: bool,
    /// `--env-file URL-or-path`, read before `-e` variables apply.
    pub env_files: Vec<String>,
    /// `--entrypoint`: replaces the image's `Entrypoint` (and drops its
    /// `Cmd`); a JSON array gives several words (see [`Self::entrypoint_words`]).
    pub entrypoint: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `--group-add`: supplementary groups, names or ids.
    pub group_add: Vec<String>,
    /// `--umask`, octal.
    pub umask: Option<u32>,
    /// `-t`: the container's stdio is a pty.
    pub tty: bool,
    pub interactive: bool,
    /// `--init`: a small init runs as PID 1, reaps and forwards signals.
    pub init: bool,
    /// `--init-path`: the init binary on the host (default: b2c itself).
    pub init_path: Option<String>,
    pub tls_verify: bool,
    pub pull: PullPolicy,
    /// `--platform`, `--arch`, `--os`, `--variant`.
    pub platform: Platform,
    /// `--creds USER[:PASSWORD]` for the registry.
    pub creds: Option<Credentials>,
    /// `--authfile PATH-or-URL`: podman's auth.json.
    pub authfile: Option<String>,
    /// `-v`, `--mount` and `--tmpfs`, in order.
    pub volumes: Vec<VolumeMount>,
    /// `--read-only`: the root filesystem is read-only.
    pub read_only: bool,
    /// `--read-only-tmpfs` (default true): with `--read-only`, tmpfs on
    /// /run, /tmp and /var/tmp.
    pub read_only_tmpfs: bool,
    /// `--shm-size`: a private /dev/shm of this size (else the host's).
    pub shm_size: Option<u64>,
    /// `--device`.
    pub devices: Vec<DeviceArg>,
    /// `--hostname`: the container's own host name.
    pub hostname: Option<String>,
    /// `--dns=none` (no resolv.conf from the host) or server addresses.
    pub dns: Option<Dns>,
    /// `--dns-search`; `.` alone means none.
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP` (names may be `;`-separated).
    pub add_hosts: Vec<(String, IpAddr)>,
    /// `--no-hosts`: the image's own /etc/hosts.
    pub no_hosts: bool,
    /// `--pid`, `--ipc`, `--uts`, `--cgroupns`, `--network`.
    pub namespaces: Namespaces,
    /// `--cap-add`, `CAP_` names or `ALL`. Containers start with every
    /// capability, so this only undoes a `--cap-drop`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`, `CAP_` names or `ALL`.
    pub cap_drop: Vec<String>,
    /// `--security-opt` settings with an effect.
    pub security: Security,
    /// `--sysctl KEY=VALUE`.
    pub sysctls: Vec<(String, String)>,
    /// `--ulimit`.
    pub ulimits: Ulimits,
    /// `--memory`, `--cpus`, `--pids-limit`…: cgroup v2 limits.
    pub resources: Resources,
    /// `--oom-score-adj`.
    pub oom_score_adj: Option<i32>,
    /// `--personality LINUX|LINUX32`.
    pub personality: Option<String>,
    /// `--stop-signal`, as a number: what stops a service.
    pub stop_signal: Option<i32>,
    /// `--stop-timeout`: seconds between the stop signal and SIGKILL.
    pub stop_timeout: Option<u64>,
    /// `--tz`: the `TZ` variable (`local` keeps b2c's).
    pub tz: Option<String>,
    /// Flags accepted without effect here, as written (`--rm`, `--name`).
    pub ignored: Vec<String>,
    /// Values taken in their nearest meaning, said once at boot.
    pub warnings: Vec<String>,
}

impl Default for ContainerArgs {
    fn default() -> Self {
        ContainerArgs {
            written: String::new(),
            image: String::new(),
            command: Vec::new(),
            env: Vec::new(),
            env_host: false,
            http_proxy: true,
            env_merge: Vec::new(),
            unsetenv: Vec::new(),
            unsetenv_all: false,
            env_files: Vec::new(),
            entrypoint: None,
            workdir: None,
            user: None,
            group_add: Vec::new(),
            umask: None,
            tty: false,
            interactive: false,
            init: false,
            init_path: None,
            tls_verify: true,
            pull: PullPolicy::default(),
            platform: Platform::default(),
            creds: None,
            authfile: None,
            volumes: Vec::new(),
            read_only: false,
            read_only_tmpfs: true,
            shm_size: None,
            devices: Vec::new(),
            hostname: None,
            dns: None,
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            add_hosts: Vec::new(),
            no_hosts: false,
            namespaces: Namespaces::default(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security: Security::default(),
            sysctls: Vec::new(),
            ulimits: Ulimits::default(),
            resources: Resources::default(),
            oom_score_adj: None,
            personality: None,
            stop_signal: None,
            stop_timeout: None,
            tz: None,
            ignored: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl ContainerArgs {
    /// `--entrypoint` as words: a JSON array gives several, anything else
    /// is one word (podman's rule).
    pub fn entrypoint_words(&self) -> Option<Vec<String>> {
        let e = self.entrypoint.as_ref()?;
        Some(podman::json_string_array(e).unwrap_or_else(|| vec![e.clone()]))
    }
}

/// One `-e`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvArg {
    /// `-e NAME=VALUE`.
    Set(String, String),
    /// `-e NAME`: the value of b2c's own `NAME`, dropped when unset; `-e
    /// PREFIX*`: every variable of b2c's starting with PREFIX.
    FromHost(String),
}

/// `--creds USER[:PASSWORD]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Option<Secret>,
}

/// `USER:***`: the password never shows.
impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***", self.username)
    }
}

/// `--platform OS/ARCH[/VARIANT]`, `--os`, `--arch`, `--variant`: which
/// image of a multi-platform index to run (architectures in the OCI
/// spelling: `amd64`, `arm64`…).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Platform {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
}

impl Platform {
    pub fn is_default(&self) -> bool {
        *self == Platform::default()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = self.os.as_deref().unwrap_or("linux");
        let arch = self.architecture.as_deref().unwrap_or("(this machine's)");
        write!(f, "{os}/{arch}")?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The architecture names podman normalizes to the OCI ones.
fn normalize_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" | "armv8" => "arm64",
        "i386" | "i486" | "i586" | "i686" => "386",
        "armhf" | "armel" | "armv7l" | "armv6l" => "arm",
        other => other,
    }
    .to_string()
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A named volume: lives for the whole boot, shared between containers.
    Named(String),
    /// A path of the host (the initramfs), bind-mounted.
    HostPath(String),
    /// `-v /dest` alone: a fresh empty directory for this container.
    Anonymous,
    /// `--tmpfs`, `--mount type=tmpfs|ramfs|devpts`: a kernel filesystem.
    Filesystem(String),
}

/// One `-v`, `--mount` or `--tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: VolumeSource,
    pub destination: String,
    pub read_only: bool,
    /// Other mount options, as the kernel and crun name them (`nosuid`,
    /// `noexec`, `rprivate`, `size=64m`…), in order.
    pub options: Vec<String>,
    /// Bind mounts only: `rbind` (the default) rather than `bind`.
    pub recursive: bool,
    /// `U`: the source is chowned to the container's user.
    pub chown: bool,
}

impl VolumeMount {
    fn new(source: VolumeSource, destination: &str) -> VolumeMount {
        VolumeMount {
            source,
            destination: destination.to_string(),
            read_only: false,
            options: Vec::new(),
            recursive: true,
            chown: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    None,
    Servers(Vec<IpAddr>),
}

/// `--device HOST[:CONTAINER][:PERMISSIONS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceArg {
    pub host: String,
    pub container: String,
    /// Some of `r`, `w`, `m`.
    pub permissions: String,
}

/// Whose namespace a container uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Namespace {
    /// Its own.
    #[default]
    Private,
    /// b2c's (`host`).
    Host,
    /// `ns:PATH`: the one at PATH.
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    pub pid: Namespace,
    pub ipc: Namespace,
    pub uts: Namespace,
    pub cgroup: Namespace,
    /// Host by default: containers share b2c's network.
    pub network: Namespace,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            pid: Namespace::Private,
            ipc: Namespace::Private,
            uts: Namespace::Private,
            cgroup: Namespace::Private,
            network: Namespace::Host,
        }
    }
}

/// `--security-opt` settings that change the spec. Containers run
/// unconfined (no seccomp filter, no LSM label), so `seccomp=unconfined`,
/// `label=disable`, `apparmor=unconfined` are already the case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// `no-new-privileges`.
    pub no_new_privileges: bool,
    /// `mask=/a:/b`: paths hidden in the container.
    pub masked_paths: Vec<String>,
}

/// `--ulimit`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ulimits {
    /// `--ulimit host`: b2c's own limits, unchanged.
    pub host: bool,
    /// `(RLIMIT_NAME, soft, hard)`, `u64::MAX` meaning unlimited.
    pub limits: Vec<(String, u64, u64)>,
}

/// cgroup limits, as the OCI spec's `linux.resources`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resources {
    /// `--memory`, bytes.
    pub memory: Option<i64>,
    /// `--memory-reservation`, bytes.
    pub memory_reservation: Option<i64>,
    /// `--memory-swap`, bytes (memory plus swap), -1 for unlimited.
    pub memory_swap: Option<i64>,
    pub memory_swappiness: Option<u64>,
    pub oom_kill_disable: bool,
    /// `--cpus` (as quota/period) or `--cpu-quota`/`--cpu-period`.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpu_rt_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// `--pids-limit`, -1 for unlimited.
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    /// `--device-cgroup-rule TYPE MAJOR:MINOR ACCESS`.
    pub device_rules: Vec<DeviceRule>,
    /// `--cgroup-conf KEY=VALUE`: cgroup v2 files written as they are.
    pub unified: Vec<(String, String)>,
}

/// `c 1:3 rwm`, `a *:* r`: `None` stands for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    /// `a`, `b` or `c`.
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: String,
}

/// podman's `--pull`: when the registry is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PullPolicy {
    /// Ask the registry for the manifest every time and download only the
    /// blobs the store lacks (none when the image is unchanged). When the
    /// registry cannot be reached and the image is stored, the stored
    /// image is used, with a warning.
    #[default]
    Always,
    /// Use the stored image without asking the registry; pull it only if
    /// the store does not have it.
    Missing,
    /// Only ever use the stored image.
    Never,
}

impl PullPolicy {
    /// As written on the command line.
    pub fn flag(self) -> &'static str {
        match self {
            PullPolicy::Always => "--pull=always",
            PullPolicy::Missing => "--pull=missing",
            PullPolicy::Never => "--pull=never",
        }
    }
}

/// Why a container argument string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerArgsError {
    #[error("unbalanced quotes")]
    Quotes,
    #[error("no image given (expected: [OPTIONS] IMAGE [COMMAND [ARG...]])")]
    NoImage,
    #[error("unknown flag {0}: podman run has no such flag")]
    UnknownFlag(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("flag {flag}: {problem}")]
    BadValue { flag: String, problem: String },
}

/// Flags whose effect is what b2c always does: accepted without a word.
const ALWAYS_SO: &[&str] = &["rm", "privileged", "sig-proxy", "passwd"];

/// Parses the value of a `b2c.run` option.
pub fn parse_container_args(value: &str) -> Result<ContainerArgs, ContainerArgsError> {
    let words = shlex::split(value).ok_or(ContainerArgsError::Quotes)?;
    let mut args = ContainerArgs {
        written: redact(value.trim()),
        ..ContainerArgs::default()
    };
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        if word == "--" {
            let image = words.next().ok_or(ContainerArgsError::NoImage)?;
            return finish(args, image, words.collect());
        }
        if !word.starts_with('-') || word == "-" {
            return finish(args, word, words.collect());
        }
        if let Some(name) = word.strip_prefix("--") {
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            let flag = podman::long(name)
                .ok_or_else(|| ContainerArgsError::UnknownFlag(format!("--{name}")))?;
            let written = format!("--{name}");
            let value = match (flag.takes, inline) {
                (Takes::Bool, v) => v,
                (_, Some(v)) => Some(v),
                (_, None) => Some(
                    words
                        .next()
                        .ok_or_else(|| ContainerArgsError::MissingValue(written.clone()))?,
                ),
            };
            apply(&mut args, flag, &written, value)?;
            continue;
        }
        // Shorthands, grouped as pflag does: `-ti`, `-dit`, `-eA=1`, `-e A=1`.
        let chars: Vec<char> = word[1..].chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let flag =
                podman::short(c).ok_or_else(|| ContainerArgsError::UnknownFlag(format!("-{c}")))?;
            let written = format!("-{c}");
            let rest: String = chars[i + 1..].iter().collect();
            match flag.takes {
                Takes::Bool => {
                    if let Some(v) = rest.strip_prefix('=') {
                        apply(&mut args, flag, &written, Some(v.to_string()))?;
                        break;
                    }
                    apply(&mut args, flag, &written, None)?;
                    i += 1;
                }
                _ => {
                    let value = if let Some(v) = rest.strip_prefix('=') {
                        v.to_string()
                    } else if !rest.is_empty() {
                        rest
                    } else {
                        words
                            .next()
                            .ok_or_else(|| ContainerArgsError::MissingValue(written.clone()))?
                    };
                    apply(&mut args, flag, &written, Some(value))?;
                    break;
                }
            }
        }
    }
    Err(ContainerArgsError::NoImage)
}

fn finish(
    mut args: ContainerArgs,
    image: String,
    command: Vec<String>,
) -> Result<ContainerArgs, ContainerArgsError> {
    args.image = image
        .strip_prefix("docker://")
        .unwrap_or(&image)
        .to_string();
    if args.image.is_empty() {
        return Err(ContainerArgsError::NoImage);
    }
    args.command = command;
    if args.namespaces.uts == Namespace::Host && args.hostname.is_some() {
        // podman refuses it; the nearest meaning is the host's name.
        args.warnings
            .push("--hostname with --uts=host: the container keeps the host's name".into());
    }
    Ok(args)
}

/// One flag and its value (`None` for a boolean written without one).
fn apply(
    args: &mut ContainerArgs,
    flag: &podman::Flag,
    written: &str,
    value: Option<String>,
) -> Result<(), ContainerArgsError> {
    let bad = |problem: String| ContainerArgsError::BadValue {
        flag: written.to_string(),
        problem,
    };
    if flag.takes == Takes::Bool {
        let on = match value.as_deref() {
            None => true,
            Some(v) => {
                podman::parse_bool(v).ok_or_else(|| bad(format!("{v:?} is not true or false")))?
            }
        };
        return apply_bool(args, flag.long, written, on);
    }
    let value = value.unwrap_or_default();
    let items: Vec<String> = if flag.takes == Takes::List {
        value
            .split(',')
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect()
    } else {
        vec![value.clone()]
    };
    let int = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| bad(format!("{v:?} is not a number")))
    };
    let uint = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("{v:?} is not a positive number")))
    };
    match flag.long {
        "env" => args.env.push(parse_env(&value).map_err(bad)?),
        "env-file" => args.env_files.extend(items),
        "env-merge" => {
            let (k, v) = value
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| bad(format!("{value:?} is not NAME=VALUE")))?;
            args.env_merge.push((k.to_string(), v.to_string()));
        }
        "unsetenv" => args.unsetenv.push(value),
        "entrypoint" => args.entrypoint = Some(value),
        "workdir" => {
            if !value.starts_with('/') {
                return Err(bad(format!("{value:?} is not an absolute path")));
            }
            args.workdir = Some(value)
        }
        "user" => args.user = Some(value),
        "group-add" => args
            .group_add
            .extend(items.into_iter().filter(|g| g != "keep-groups")),
        "umask" => {
            let mask = u32::from_str_radix(&value, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| bad(format!("{value:?} is not an octal umask such as 0022")))?;
            args.umask = Some(mask);
        }
        "init-path" => args.init_path = Some(value),
        "pull" => {
            args.pull = match value.to_ascii_lowercase().as_str() {
                "always" | "true" => PullPolicy::Always,
                // Pulling only what changed is what `always` does here.
                "newer" | "ifnewer" => PullPolicy::Always,
                "missing" | "ifmissing" | "ifnotpresent" | "" => PullPolicy::Missing,
                "never" | "false" => PullPolicy::Never,
                _ => {
                    return Err(bad(format!(
                        "{value:?} is not always, missing, newer or never"
                    )))
                }
            }
        }
        "platform" => {
            let mut parts = value.split('/');
            let os = parts.next().filter(|s| !s.is_empty());
            let arch = parts.next().filter(|s| !s.is_empty());
            let variant = parts.next().filter(|s| !s.is_empty());
            if os.is_none() || parts.next().is_some() {
                return Err(bad(format!("{value:?} is not OS[/ARCH[/VARIANT]]")));
            }
            args.platform.os = os.map(String::from);
            args.platform.architecture = arch.map(normalize_arch);
            args.platform.variant = variant.map(String::from);
        }
        "arch" => args.platform.architecture = Some(normalize_arch(&value)),
        "os" => args.platform.os = Some(value),
        "variant" => args.platform.variant = Some(value),
        "creds" => {
            let (username, password) = match value.split_once(':') {
                Some((u, p)) => (u, Some(Secret::new(p))),
                None => (value.as_str(), None),
            };
            if username.is_empty() {
                return Err(bad("expected USER[:PASSWORD]".into()));
            }
            args.creds = Some(Credentials {
                username: username.to_string(),
                password,
            });
        }
        "authfile" => args.authfile = Some(value),
        "volume" => args.volumes.push(parse_volume(&value).map_err(bad)?),
        "mount" => {
            if let Some(m) = parse_mount(&value, &mut args.warnings).map_err(bad)? {
                args.volumes.push(m);
            }
        }
        "tmpfs" => args.volumes.push(parse_tmpfs(&value).map_err(bad)?),
        "shm-size" => {
            let bytes = podman::parse_ram(&value).map_err(bad)?;
            args.shm_size = Some(bytes as u64).filter(|b| *b > 0);
        }
        "device" => {
            for d in items {
                args.devices.push(parse_device(&d).map_err(bad)?);
            }
        }
        "hostname" => args.hostname = Some(value),
        "dns" => {
            for v in items {
                let dns = parse_dns(&v, args.dns.take()).map_err(bad)?;
                args.dns = Some(dns);
            }
        }
        "dns-search" => args.dns_search.extend(items),
        "dns-option" => args.dns_options.extend(items),
        "add-host" => {
            for v in items {
                let (names, ip) = v
                    .split_once(':')
                    .ok_or_else(|| bad(format!("{v:?} is not HOST:IP")))?;
                let ip: IpAddr = ip
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| bad(format!("{v:?}: {ip:?} is not an IP address")))?;
                for name in names.split(';').filter(|n| !n.is_empty()) {
                    args.add_hosts.push((name.to_string(), ip));
                }
            }
        }
        "pid" | "ipc" | "uts" | "cgroupns" | "network" => {
            let ns = parse_namespace(flag.long, &value, &mut args.warnings).map_err(bad)?;
            let slot = match flag.long {
                "pid" => &mut args.namespaces.pid,
                "ipc" => &mut args.namespaces.ipc,
                "uts" => &mut args.namespaces.uts,
                "cgroupns" => &mut args.namespaces.cgroup,
                _ => &mut args.namespaces.network,
            };
            *slot = ns;
        }
        "cap-add" | "cap-drop" => {
            for c in items {
                let cap = podman::parse_capability(&c).map_err(bad)?;
                if flag.long == "cap-add" {
                    args.cap_add.push(cap);
                } else {
                    args.cap_drop.push(cap);
                }
            }
        }
        "security-opt" => parse_security_opt(&value, args).map_err(bad)?,
        "sysctl" => {
            for v in items {
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| bad(format!("{v:?} is not KEY=VALUE")))?;
                args.sysctls.push((k.to_string(), val.to_string()));
            }
        }
        "ulimit" => {
            for v in items {
                if v == "host" {
                    args.ulimits.host = true;
                } else {
                    args.ulimits
                        .limits
                        .push(podman::parse_ulimit(&v).map_err(bad)?);
                }
            }
        }
        "memory" => args.resources.memory = Some(podman::parse_ram(&value).map_err(bad)?),
        "memory-reservation" => {
            args.resources.memory_reservation = Some(podman::parse_ram(&value).map_err(bad)?)
        }
        "memory-swap" => {
            args.resources.memory_swap = Some(if value == "-1" {
                -1
            } else {
                podman::parse_ram(&value).map_err(bad)?
            })
        }
        "memory-swappiness" => match int(&value)? {
            -1 => args.resources.memory_swappiness = None,
            n @ 0..=100 => args.resources.memory_swappiness = Some(n as u64),
            _ => return Err(bad(format!("{value:?} is not -1 or 0 to 100"))),
        },
        "cpus" => {
            let cpus: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|c: &f64| c.is_finite() && *c >= 0.0)
                .ok_or_else(|| bad(format!("{value:?} is not a number of CPUs such as 1.5")))?;
            if cpus > 0.0 {
                args.resources.cpu_period = Some(100_000);
                args.resources.cpu_quota = Some((cpus * 100_000.0) as i64);
            }
        }
        "cpu-quota" => args.resources.cpu_quota = Some(int(&value)?),
        "cpu-period" => args.resources.cpu_period = Some(uint(&value)?),
        "cpu-shares" => args.resources.cpu_shares = Some(uint(&value)?),
        "cpu-rt-runtime" => args.resources.cpu_rt_runtime = Some(int(&value)?),
        "cpu-rt-period" => args.resources.cpu_rt_period = Some(uint(&value)?),
        "cpuset-cpus" | "cpuset-mems" => {
            if !podman::valid_cpuset(&value) {
                return Err(bad(format!("{value:?} is not a list such as 0-3 or 0,2")));
            }
            if flag.long == "cpuset-cpus" {
                args.resources.cpuset_cpus = Some(value);
            } else {
                args.resources.cpuset_mems = Some(value);
            }
        }
        "pids-limit" => {
            let n = int(&value)?;
            args.resources.pids_limit = Some(if n <= 0 { -1 } else { n });
        }
        "blkio-weight" => {
            let w = value
                .parse::<u16>()
                .ok()
                .filter(|w| (10..=1000).contains(w))
                .ok_or_else(|| bad(format!("{value:?} is not a weight from 10 to 1000")))?;
            args.resources.blkio_weight = Some(w);
        }
        "device-cgroup-rule" => {
            for v in items {
                args.resources
                    .device_rules
                    .push(parse_device_rule(&v).map_err(bad)?);
            }
        }
        "cgroup-conf" => {
            for v in items {
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| bad(format!("{v:?} is not KEY=VALUE")))?;
                args.resources
                    .unified
                    .push((k.to_string(), val.to_string()));
            }
        }
        "oom-score-adj" => {
            let n = int(&value)?;
            if !(-1000..=1000).contains(&n) {
                return Err(bad(format!("{value:?} is not from -1000 to 1000")));
            }
            args.oom_score_adj = Some(n as i32);
        }
        "personality" => match value.as_str() {
            "LINUX" | "LINUX32" => args.personality = Some(value),
            _ => return Err(bad(format!("{value:?} is not LINUX or LINUX32"))),
        },
        "stop-signal" => args.stop_signal = Some(podman::parse_signal(&value).map_err(bad)?),
        "stop-timeout" => args.stop_timeout = Some(uint(&value)?),
        "tz" => args.tz = Some(value),
        // Everything else is known to podman and means nothing here.
        _ => ignore(args, written),
    }
    Ok(())
}

fn apply_bool(
    args: &mut ContainerArgs,
    long: &str,
    written: &str,
    on: bool,
) -> Result<(), ContainerArgsError> {
    match long {
        "tty" => args.tty = on,
        "interactive" => args.interactive = on,
        "tls-verify" => args.tls_verify = on,
        "env-host" => args.env_host = on,
        "http-proxy" => args.http_proxy = on,
        "unsetenv-all" => args.unsetenv_all = on,
        "init" => args.init = on,
        "read-only" => args.read_only = on,
        "read-only-tmpfs" => args.read_only_tmpfs = on,
        "no-hosts" => args.no_hosts = on,
        "oom-kill-disable" => args.resources.oom_kill_disable = on,
        "privileged" if !on => args.warnings.push(format!(
            "{written}=false: containers always run privileged, as with boot2container"
        )),
        l if ALWAYS_SO.contains(&l) => {}
        _ if !on => {}
        _ => ignore(args, written),
    }
    Ok(())
}

/// Recorded once per flag; values are not kept (they may be secrets).
fn ignore(args: &mut ContainerArgs, written: &str) {
    if !args.ignored.iter().any(|i| i == written) {
        args.ignored.push(written.to_string());
    }
}

/// `NAME=VALUE`, `NAME` or `PREFIX*`.
fn parse_env(v: &str) -> Result<EnvArg, String> {
    match v.split_once('=') {
        Some(("", _)) => Err(format!("{v:?} has no variable name")),
        Some((k, val)) => Ok(EnvArg::Set(k.to_string(), val.to_string())),
        None if v.is_empty() => Err("an empty variable name".into()),
        None => Ok(EnvArg::FromHost(v.to_string())),
    }
}

/// `SOURCE:DEST[:OPTIONS]` or `DEST` alone: a SOURCE starting with `/` or
/// `.` is a host path, anything else names a volume.
fn parse_volume(v: &str) -> Result<VolumeMount, String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [dest] => (None, *dest, None),
        [src, dest] => (Some(*src), *dest, None),
        [src, dest, opts] => (Some(*src), *dest, Some(*opts)),
        _ => return Err(format!("{v:?} is not SOURCE:/DESTINATION[:OPTIONS]")),
    };
    if !destination.starts_with('/') {
        return Err(format!(
            "{v:?}: the destination {destination:?} is not an absolute path"
        ));
    }
    let source = match source {
        None => VolumeSource::Anonymous,
        Some("") => return Err(format!("{v:?} has an empty source")),
        Some(s) if s.starts_with('/') => VolumeSource::HostPath(s.to_string()),
        Some(s) if s.starts_with('.') => {
            // Relative to podman's working directory; b2c's is /.
            let path = std::path::Path::new("/").join(s);
            VolumeSource::HostPath(normalize_path(&path.to_string_lossy()))
        }
        Some(s) if valid_volume_name(s) => VolumeSource::Named(s.to_string()),
        Some(s) => {
            return Err(format!(
                "volume name {s:?} may only hold letters, digits, '_', '.' and '-'"
            ))
        }
    };
    let mut mount = VolumeMount::new(source, destination);
    for opt in options.into_iter().flat_map(|o| o.split(',')) {
        volume_option(&mut mount, opt).map_err(|e| format!("{v:?}: {e}"))?;
    }
    Ok(mount)
}

/// `/a/./b/../c` → `/a/c`.
fn normalize_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    format!("/{}", out.join("/"))
}

fn valid_volume_name(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// One option of `-v` (also used by `--mount` for the shared ones).
fn volume_option(mount: &mut VolumeMount, opt: &str) -> Result<(), String> {
    match opt {
        "" => {}
        "ro" | "readonly" => mount.read_only = true,
        "rw" => mount.read_only = false,
        // SELinux relabelling: there is no SELinux here.
        "z" | "Z" => {}
        "U" => mount.chown = true,
        "rbind" => mount.recursive = true,
        "bind" => mount.recursive = false,
        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
        | "runbindable" | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "sync"
        | "async" | "atime" | "noatime" | "relatime" | "norelatime" | "strictatime"
        | "nostrictatime" | "diratime" | "nodiratime" => mount.options.push(opt.to_string()),
        // Named volumes' copy-up of the image's content: volumes start
        // empty here, as bind mounts do.
        "copy" | "nocopy" => {}
        "O" | "idmap" => {
            return Err(format!(
                "option {opt:?} (overlay/idmapped volumes) is not supported"
            ))
        }
        _ if opt.starts_with("idmap=") => {
            return Err(format!(
                "option {opt:?} (idmapped volumes) is not supported"
            ))
        }
        _ => return Err(format!("unknown option {opt:?}")),
    }
    Ok(())
}

/// `--tmpfs /path[:options]`; podman's defaults are `rw,noexec,nosuid,nodev`.
fn parse_tmpfs(v: &str) -> Result<VolumeMount, String> {
    let (dest, opts) = v.split_once(':').unwrap_or((v, ""));
    if !dest.starts_with('/') {
        return Err(format!("{dest:?} is not an absolute path"));
    }
    let mut m = VolumeMount::new(VolumeSource::Filesystem("tmpfs".into()), dest);
    m.recursive = false;
    let given: Vec<&str> = opts.split(',').filter(|o| !o.is_empty()).collect();
    for default in ["noexec", "nosuid", "nodev"] {
        let opposite = &default[2..];
        if !given.iter().any(|g| *g == default || *g == opposite) {
            m.options.push(default.to_string());
        }
    }
    for opt in given {
        match opt {
            "ro" => m.read_only = true,
            "rw" => m.read_only = false,
            "tmpcopyup" | "notmpcopyup" => {}
            o => m.options.push(o.to_string()),
        }
    }
    Ok(m)
}

/// `--mount type=bind|volume|tmpfs|ramfs|devpts,…`; `None` (with a warning)
/// for the types that mean nothing here.
fn parse_mount(v: &str, warnings: &mut Vec<String>) -> Result<Option<VolumeMount>, String> {
    let mut kind = None;
    let mut source = None;
    let mut target = None;
    let mut rest = Vec::new();
    for field in v.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "type" => kind = Some(value),
            "source" | "src" => source = Some(value),
            "target" | "destination" | "dst" => target = Some(value),
            _ => rest.push((key, value, field)),
        }
    }
    let kind = kind.ok_or_else(|| format!("{v:?} has no type= (bind, volume, tmpfs…)"))?;
    let target = target
        .filter(|t| t.starts_with('/'))
        .ok_or_else(|| format!("{v:?} has no absolute target="))?;
    let truthy = |value: &str| value.is_empty() || podman::parse_bool(value) == Some(true);
    let mut m = match kind {
        "bind" => {
            let src = source
                .filter(|s| s.starts_with('/') || s.starts_with('.'))
                .ok_or_else(|| format!("{v:?}: a bind mount needs an absolute source="))?;
            let src = if src.starts_with('.') {
                normalize_path(&format!("/{src}"))
            } else {
                src.to_string()
            };
            VolumeMount::new(VolumeSource::HostPath(src), target)
        }
        "volume" => match source {
            None | Some("") => VolumeMount::new(VolumeSource::Anonymous, target),
            Some(s) if valid_volume_name(s) => {
                VolumeMount::new(VolumeSource::Named(s.to_string()), target)
            }
            Some(s) => {
                return Err(format!(
                    "volume name {s:?} may only hold letters, digits, '_', '.' and '-'"
                ))
            }
        },
        "tmpfs" | "ramfs" | "devpts" => {
            let mut m = VolumeMount::new(VolumeSource::Filesystem(kind.to_string()), target);
            m.recursive = false;
            if kind == "tmpfs" {
                m.options.extend(["nosuid", "nodev"].map(String::from));
            }
            m
        }
        "image" | "glob" => {
            warnings.push(format!(
                "--mount type={kind} is not supported: {v:?} is ignored"
            ));
            return Ok(None);
        }
        _ => return Err(format!("unknown mount type {kind:?}")),
    };
    for (key, value, field) in rest {
        match key {
            "ro" | "readonly" => m.read_only = truthy(value),
            "rw" => m.read_only = !truthy(value),
            "bind-propagation" => volume_option(&mut m, value)?,
            "bind-nonrecursive" => m.recursive = !truthy(value),
            "relabel" | "consistency" | "volume-nocopy" | "nocopy" | "tmpcopyup"
            | "notmpcopyup" | "volume-opt" | "volume-label" | "volume-driver" => {}
            "U" | "chown" => m.chown = truthy(value),
            "tmpfs-size" => m.options.push(format!("size={value}")),
            "tmpfs-mode" => m.options.push(format!("mode={value}")),
            "uid" | "gid" | "mode" | "max" | "size" => m.options.push(field.to_string()),
            "z" | "Z" => {}
            _ => volume_option(&mut m, field)?,
        }
    }
    Ok(Some(m))
}

/// `--device HOST[:CONTAINER][:PERMISSIONS]`.
fn parse_device(v: &str) -> Result<DeviceArg, String> {
    let is_perms = |s: &str| !s.is_empty() && s.chars().all(|c| "rwm".contains(c));
    let parts: Vec<&str> = v.split(':').collect();
    let (host, container, permissions) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if is_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if is_perms(p) => (*h, *c, *p),
        _ => return Err(format!("{v:?} is not HOST[:CONTAINER][:PERMISSIONS]")),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(format!("{v:?}: device paths must be absolute"));
    }
    Ok(DeviceArg {
        host: host.to_string(),
        container: container.to_string(),
        permissions: permissions.to_string(),
    })
}

/// `c 1:3 rwm`, `a *:* r`.
fn parse_device_rule(v: &str) -> Result<DeviceRule, String> {
    let bad = || format!("{v:?} is not a device rule such as 'c 1:3 rwm'");
    let mut words = v.split_whitespace();
    let kind = match words.next() {
        Some("a") => 'a',
        Some("b") => 'b',
        Some("c") => 'c',
        _ => return Err(bad()),
    };
    let (major, minor) = words
        .next()
        .and_then(|n| n.split_once(':'))
        .ok_or_else(bad)?;
    let number = |s: &str| -> Result<Option<i64>, String> {
        if s == "*" {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| bad())
        }
    };
    let access = words.next().unwrap_or("rwm");
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) || words.next().is_some() {
        return Err(bad());
    }
    Ok(DeviceRule {
        kind,
        major: number(major)?,
        minor: number(minor)?,
        access: access.to_string(),
    })
}

/// `--dns` may repeat to list several servers; `none` stands alone.
fn parse_dns(v: &str, previous: Option<Dns>) -> Result<Dns, String> {
    if v == "none" {
        return Ok(Dns::None);
    }
    let ip = v
        .parse()
        .map_err(|_| format!("{v:?} is not none or an IP address"))?;
    Ok(match previous {
        Some(Dns::Servers(mut servers)) => {
            servers.push(ip);
            Dns::Servers(servers)
        }
        _ => Dns::Servers(vec![ip]),
    })
}

/// `host`, `private`, `ns:PATH`; the podman modes that need another
/// container or a network stack take their nearest meaning, with a warning.
fn parse_namespace(
    which: &str,
    value: &str,
    warnings: &mut Vec<String>,
) -> Result<Namespace, String> {
    if let Some(path) = value.strip_prefix("ns:").filter(|p| p.starts_with('/')) {
        return Ok(Namespace::Path(path.to_string()));
    }
    if which == "network" {
        return Ok(match value {
            "" | "host" => Namespace::Host,
            // Its own network namespace, with only a loopback.
            "none" => Namespace::Private,
            v => {
                warnings.push(format!(
                    "--network={v}: containers share the host's network here, as \
                     boot2container's do"
                ));
                Namespace::Host
            }
        });
    }
    Ok(match value {
        "host" => Namespace::Host,
        "" | "private" => Namespace::Private,
        "shareable" | "none" if which == "ipc" => Namespace::Private,
        v if v.starts_with("container:") => {
            warnings.push(format!(
                "--{which}={v}: there are no named containers here; the container gets \
                 its own namespace"
            ));
            Namespace::Private
        }
        v => return Err(format!("{v:?} is not host, private or ns:PATH")),
    })
}

/// One `--security-opt`.
fn parse_security_opt(v: &str, args: &mut ContainerArgs) -> Result<(), String> {
    let (key, value) = v
        .split_once('=')
        .or_else(|| v.split_once(':'))
        .unwrap_or((v, ""));
    match key {
        "no-new-privileges" => {
            args.security.no_new_privileges = value.is_empty()
                || podman::parse_bool(value)
                    .ok_or_else(|| format!("{v:?}: {value:?} is not true or false"))?
        }
        // Already so: no SELinux, no AppArmor, no seccomp filter here.
        "label" | "systempaths" | "unmask" => {}
        "seccomp" | "apparmor" if value == "unconfined" => {}
        "seccomp" | "apparmor" | "proc-opts" => args.warnings.push(format!(
            "--security-opt {v}: not applied (containers run unconfined, as privileged ones)"
        )),
        "mask" => args
            .security
            .masked_paths
            .extend(value.split(':').filter(|p| !p.is_empty()).map(String::from)),
        _ => return Err(format!("{v:?} is not a security option podman knows")),
    }
    Ok(())
}

/// The content of an `--env-file`: `KEY=VALUE` lines; blank lines and
/// lines starting with `#` are skipped.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_start()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| match line.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                Ok((k.to_string(), v.trim_end_matches('\r').to_string()))
            }
            _ => Err(format!("line {n}: {line:?} is not KEY=VALUE")),
        })
        .collect()
}

/// Flags whose value is a secret: `--creds USER:PASSWORD`.
const SECRET_FLAGS: &[&str] = &["--creds"];

/// `text` (a container option's value, or a whole command line) with the
/// secrets of [`SECRET_FLAGS`] masked: `--creds USER:***`. For every text
/// that may be printed or handed to a program.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, flag)) = SECRET_FLAGS
        .iter()
        .filter_map(|f| rest.find(f).map(|i| (i, *f)))
        .min()
    {
        let after = at + flag.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        // `--creds=V` or `--creds V`; a longer flag (`--credsx`) is not it.
        let sep = rest
            .chars()
            .next()
            .filter(|c| *c == '=' || c.is_whitespace());
        let Some(sep) = sep else { continue };
        let start = rest[sep.len_utf8()..]
            .find(|c: char| !c.is_whitespace())
            .map_or(rest.len(), |i| i + sep.len_utf8());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        let value = &rest[..end];
        match value.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:***")),
            None if value.is_empty() => {}
            None => out.push_str("***"),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
