//! The kernel command line of b2c, parsed into one typed [`Config`].
//!
//! Pure code: no I/O. The reference for what is accepted is
//! `B2C-OPTIONS.md`; APPEND lines written for boot2container must parse.

mod container;
mod duration;
mod image;
mod network;
mod plan;
mod podman;
mod proxy;
mod registry;
mod storage;
mod tokenize;
mod volume;

use std::time::Duration;

pub use container::{
    parse_container_args, parse_env_file, redact, ContainerArgs, ContainerArgsError, Credentials,
    DeviceArg, DeviceRule, Dns, EnvArg, Namespace, Namespaces, Platform, PullPolicy, Resources,
    Security, Ulimits, VolumeMount, VolumeSource,
};
pub use duration::parse_duration;
pub use image::{could_be_short_id, ImageName, ImageRef, ReferenceError};
pub use network::{
    parse_iface, parse_kernel_ip, IfaceConfig, IfaceMode, Ipv4Cidr, KernelIp, Route,
};
pub use plan::{
    derive, BootPlan, ContainerId, ContainerPlan, EndPlan, EnvFileId, EnvFileSource, ImageId,
    ImagePlan, ImageStorePlan, Layout, NamedVolume, NetworkPlan, PlanError, Stage, StoragePlan,
    TrustPlan, VolumePlan,
};
pub use podman::{signal_name, CAPABILITIES};
pub use proxy::{Proxy, ProxyUrl};
pub use registry::{split_host_port, Mirror, Registries};
pub use storage::{
    parse_cache_device, parse_filesystem, parse_nbd, parse_size, parse_storage, parse_swap,
    CacheDevice, Filesystem, Nbd, Swap, SwapSpace, MAX_NBD_CONNECTIONS,
};
pub use tokenize::{tokenize, Token};
pub use volume::{
    parse_minio, parse_volume, redact_cmdline, redact_value, valid_volume_name, Expiration,
    FscryptKey, MinioAlias, Remote, Secret, SseKey, SyncEvent, VolumeOptions,
};

pub const DEFAULT_HOSTNAME: &str = "boot2container";
/// How long a hung machine waits for its hardware watchdog's reset.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(60);

/// How long DHCP may take to get a first lease, as boot2container waits:
/// a switch port running spanning tree takes 30 s and more to forward.
pub const DEFAULT_DHCP_TIMEOUT: Duration = Duration::from_secs(70);

/// Where to get the time from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtpPeer {
    /// Leave the clock alone.
    None,
    /// The DHCP-provided server, else pool.ntp.org.
    Auto,
    /// A host name or address, optionally with `:port`.
    Host(String),
}

/// Where `b2c.debug_panic` makes b2c crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugPanic {
    /// After the services started, just before the first container.
    Pipeline,
}

/// Everything b2c was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `b2c.run` / `b2c.container`, in order.
    pub containers: Vec<ContainerArgs>,
    /// `b2c.run_service` / `b2c.service`: detached, for the whole pipeline.
    pub services: Vec<ContainerArgs>,
    /// `b2c.post_container` / `b2c.run_post`: always run, never change the status.
    pub post_containers: Vec<ContainerArgs>,
    pub pipefail: bool,
    /// `b2c.iface` entries.
    pub ifaces: Vec<IfaceConfig>,
    /// The kernel's `ip=`.
    pub kernel_ip: Option<KernelIp>,
    /// `b2c.dhcp_timeout`: how long DHCP may take to get a first lease.
    pub dhcp_timeout: Duration,
    pub ntp_peer: NtpPeer,
    pub extra_args_url: Option<String>,
    pub hostname: String,
    /// `b2c.insmods` / `b2c.modules`.
    pub modules: Vec<String>,
    pub poweroff_delay: Duration,
    /// `b2c.timeout`: the longest the pipeline may run.
    pub timeout: Option<Duration>,
    /// `b2c.watchdog`: the hardware watchdog's timeout; `None`: off.
    pub watchdog: Option<Duration>,
    pub shutdown_cmd: Option<String>,
    pub reboot_cmd: Option<String>,
    pub proxy: Proxy,
    /// Drop to a console shell on failure instead of powering off.
    pub shell: bool,
    /// `b2c.ca_cert`: paths or URLs of extra CA certificates (PEM).
    pub ca_certs: Vec<String>,
    /// `b2c.insecure_registry` and `b2c.registry_mirror`.
    pub registries: Registries,
    /// `b2c.pull_retry`: how long transient registry failures are retried
    /// (`None`: b2c-oci's default).
    pub pull_retry: Option<Duration>,
    /// `b2c.pull_stall=BYTES/DURATION`: less than BYTES in DURATION is a
    /// stalled download (`None`: b2c-net's default).
    pub pull_stall: Option<(u64, Duration)>,
    pub cache_device: CacheDevice,
    pub swap: Option<Swap>,
    /// `b2c.filesystem` entries.
    pub filesystems: Vec<Filesystem>,
    /// `b2c.nbd`: network block devices, by device (the last one of a
    /// device wins).
    pub nbds: Vec<Nbd>,
    /// `b2c.storage=additionalimagestores=NAME,…`: the `b2c.filesystem`s
    /// holding read-only image stores.
    pub image_stores: Vec<String>,
    /// `b2c.minio`: S3 endpoints by alias (the last one of an alias wins).
    pub minio: Vec<MinioAlias>,
    /// `b2c.volume`: named volumes (the last one of a name wins).
    pub volumes: Vec<VolumeOptions>,
    /// `b2c.log=debug`.
    pub debug: bool,
    /// `b2c.gitlab_sections`: GitLab collapsible-section markers around
    /// b2c's phases and each container (on by default).
    pub gitlab_sections: bool,
    /// `b2c.debug_panic=PHASE`: a test aid, not an option for users (and
    /// so not in the README's tables). b2c panics on purpose there, so that
    /// the QEMU tests can check that a crash ends the boot as any failure
    /// does, without an initramfs built for it.
    pub debug_panic: Option<DebugPanic>,
    /// Things to tell the user about, not failures: unknown keys and
    /// options accepted but not acted on yet.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            containers: Vec::new(),
            services: Vec::new(),
            post_containers: Vec::new(),
            pipefail: false,
            ifaces: Vec::new(),
            kernel_ip: None,
            dhcp_timeout: DEFAULT_DHCP_TIMEOUT,
            ntp_peer: NtpPeer::Auto,
            extra_args_url: None,
            hostname: DEFAULT_HOSTNAME.to_string(),
            modules: Vec::new(),
            poweroff_delay: Duration::ZERO,
            timeout: None,
            watchdog: Some(DEFAULT_WATCHDOG),
            shutdown_cmd: None,
            reboot_cmd: None,
            proxy: Proxy::default(),
            shell: false,
            ca_certs: Vec::new(),
            registries: Registries::default(),
            pull_retry: None,
            pull_stall: None,
            cache_device: CacheDevice::None,
            swap: None,
            filesystems: Vec::new(),
            image_stores: Vec::new(),
            nbds: Vec::new(),
            minio: Vec::new(),
            volumes: Vec::new(),
            debug: false,
            gitlab_sections: true,
            debug_panic: None,
            warnings: Vec::new(),
        }
    }
}

/// A known option with a value we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key}={value:?}: {problem}")]
pub struct Error {
    pub key: String,
    pub value: String,
    pub problem: String,
}

/// Parses a whole kernel command line. Checks that need several options
/// together are [`derive`]'s: see [`plan`].
pub fn parse(cmdline: &str) -> Result<Config, Error> {
    parse_tokens(tokenize(cmdline))
}

/// The boot plan of a kernel command line: [`parse`], then [`derive`].
pub fn plan(cmdline: &str) -> Result<BootPlan, PlanError> {
    derive(parse(cmdline)?)
}

/// The plan of the command line merged with the options fetched from
/// `b2c.extra_args_url` (see [`parse_with_extra`]), and the keys that came
/// from the fetched text.
pub fn plan_with_extra(cmdline: &str, extra: &str) -> Result<(BootPlan, Vec<String>), PlanError> {
    let (config, keys) = parse_with_extra(cmdline, extra)?;
    Ok((derive(config)?, keys))
}

/// The command line merged with the options fetched from
/// `b2c.extra_args_url` (same syntax, newlines allowed): repeatable options
/// add up, the others take the fetched value. Returns the configuration and
/// the keys that came from the fetched text, so the console can say so.
pub fn parse_with_extra(cmdline: &str, extra: &str) -> Result<(Config, Vec<String>), Error> {
    let extra_tokens = tokenize(extra);
    let mut from_extra: Vec<String> = extra_tokens
        .iter()
        .map(|t| t.key.clone())
        .filter(|k| k.starts_with("b2c.") || k == "ip")
        .collect();
    from_extra.dedup();
    let mut tokens = tokenize(cmdline);
    tokens.extend(extra_tokens);
    Ok((parse_tokens(tokens)?, from_extra))
}

fn parse_tokens(tokens: Vec<Token>) -> Result<Config, Error> {
    let mut config = Config::default();
    for Token { key, value } in tokens {
        if key == "ip" {
            let v = value.clone().unwrap_or_default();
            config.kernel_ip = Some(parse_kernel_ip(&v).map_err(|problem| Error {
                key: key.clone(),
                value: v,
                problem,
            })?);
            continue;
        }
        if !key.starts_with("b2c.") {
            continue;
        }
        // Values that hold keys are shown without them.
        let bad = |problem: String| Error {
            key: key.clone(),
            // Errors are printed: no `--creds` password or S3 key in them.
            value: redact(&redact_value(&key, value.as_deref().unwrap_or_default())),
            problem,
        };
        let need = || {
            value
                .clone()
                .ok_or_else(|| bad("a value is required (write it as KEY=VALUE)".into()))
        };
        let flag = || match value.as_deref() {
            None | Some("") | Some("1") | Some("true") | Some("yes") => Ok(true),
            Some("0") | Some("false") | Some("no") => Ok(false),
            Some(_) => Err(bad("expected no value, true or false".into())),
        };
        let container = |warnings: &mut Vec<String>| {
            let args = parse_container_args(&need()?).map_err(|e| bad(e.to_string()))?;
            container_warnings(&key, &args, warnings);
            Ok::<_, Error>(args)
        };
        match key.as_str() {
            "b2c.run" | "b2c.container" => {
                let args = container(&mut config.warnings)?;
                config.containers.push(args)
            }
            "b2c.run_service" | "b2c.service" => {
                let args = container(&mut config.warnings)?;
                config.services.push(args)
            }
            "b2c.post_container" | "b2c.run_post" => {
                let args = container(&mut config.warnings)?;
                config.post_containers.push(args)
            }
            "b2c.pipefail" => {
                config.pipefail = lenient(flag(), &mut config.warnings, false, "not set")
            }
            "b2c.shell" => config.shell = lenient(flag(), &mut config.warnings, false, "not set"),
            "b2c.iface" => {
                let (iface, warnings) = parse_iface(&need()?).map_err(bad)?;
                config.warnings.extend(warnings);
                config.ifaces.push(iface);
            }
            "b2c.dhcp_timeout" => match need().ok().as_deref().and_then(parse_seconds) {
                Some(timeout) => config.dhcp_timeout = timeout,
                None => config.warnings.push(format!(
                    "b2c.dhcp_timeout={:?} is not a number of seconds: waiting up to {} s \
                     for a DHCP lease",
                    value.clone().unwrap_or_default(),
                    DEFAULT_DHCP_TIMEOUT.as_secs()
                )),
            },
            "b2c.ntp_peer" => {
                config.ntp_peer = match value.as_deref().unwrap_or_default() {
                    "" => {
                        config
                            .warnings
                            .push("b2c.ntp_peer has no value: using the default (auto)".into());
                        NtpPeer::Auto
                    }
                    "none" => NtpPeer::None,
                    "auto" => NtpPeer::Auto,
                    host => NtpPeer::Host(host.to_string()),
                }
            }
            "b2c.extra_args_url" => {
                let url = need()?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad("expected an http:// or https:// URL".into()));
                }
                config.extra_args_url = Some(url);
            }
            "b2c.hostname" => {
                let (name, warning) = hostname(value.as_deref().unwrap_or_default());
                config.warnings.extend(warning);
                config.hostname = name;
            }
            "b2c.poweroff_delay" => {
                let v = value.as_deref().unwrap_or_default();
                config.poweroff_delay = match parse_sleep(v) {
                    Some(delay) => delay,
                    None => {
                        config.warnings.push(format!(
                            "invalid b2c.poweroff_delay={v:?}: expected seconds as `sleep` \
                             reads them (15, 15s, 1.5m, 1h); no delay"
                        ));
                        Duration::ZERO
                    }
                };
            }
            "b2c.timeout" => {
                let d = parse_duration(&need()?).map_err(bad)?;
                // 0 is no timeout, as for coreutils' timeout.
                config.timeout = Some(d).filter(|d| !d.is_zero());
            }
            "b2c.watchdog" => {
                config.watchdog = match need()?.as_str() {
                    "off" | "0" => None,
                    v => Some(
                        Some(parse_duration(v).map_err(&bad)?)
                            .filter(|d| d.as_secs() >= 1)
                            .ok_or_else(|| {
                                bad("expected off or a duration of 1 s or more".into())
                            })?,
                    ),
                }
            }
            "b2c.shutdown_cmd" => config.shutdown_cmd = Some(need()?).filter(|c| !c.is_empty()),
            "b2c.reboot_cmd" => config.reboot_cmd = Some(need()?).filter(|c| !c.is_empty()),
            "b2c.proxy" => {
                config.proxy = Proxy::parse(&need()?).map_err(|problem| Error {
                    key: key.clone(),
                    value: Proxy::shown(value.as_deref().unwrap_or_default()),
                    problem,
                })?
            }
            "b2c.ca_cert" => {
                let v = need()?;
                if v.is_empty() {
                    return Err(bad("expected the path or URL of a PEM file".into()));
                }
                config.ca_certs.push(v);
            }
            "b2c.insecure_registry" => config.registries.add_insecure(&need()?).map_err(bad)?,
            "b2c.registry_mirror" => config.registries.add_mirror(&need()?).map_err(bad)?,
            "b2c.pull_retry" => config.pull_retry = Some(parse_duration(&need()?).map_err(bad)?),
            "b2c.pull_stall" => {
                let v = need()?;
                let (bytes, window) = v
                    .split_once('/')
                    .ok_or_else(|| bad("expected SIZE/DURATION, such as 32K/30s".into()))?;
                let bytes = parse_size(bytes).map_err(&bad)?;
                let window = parse_duration(window)
                    .ok()
                    .filter(|w| !w.is_zero())
                    .ok_or_else(|| bad(format!("{window:?} is not a duration such as 30s")))?;
                config.pull_stall = Some((bytes, window));
            }
            "b2c.insmods" | "b2c.modules" => config.modules.extend(
                need()?
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(String::from),
            ),
            "b2c.log" => {
                let level = match need()?.as_str() {
                    "debug" => Ok(true),
                    "info" => Ok(false),
                    _ => Err(bad("expected debug or info".into())),
                };
                config.debug = lenient(level, &mut config.warnings, false, "using info");
            }
            "b2c.cache_device" => {
                let device = need().and_then(|v| parse_cache_device(&v).map_err(bad));
                config.cache_device = lenient(
                    device,
                    &mut config.warnings,
                    CacheDevice::None,
                    "no cache (none), as boot2container defaults to",
                )
            }
            "b2c.swap" => {
                let swap = need().and_then(|v| parse_swap(&v).map_err(bad));
                if let Some((swap, warnings)) =
                    lenient(swap.map(Some), &mut config.warnings, None, "no swap")
                {
                    config.warnings.extend(warnings);
                    config.swap = Some(swap);
                }
            }
            "b2c.filesystem" => {
                let fs = need().and_then(|v| parse_filesystem(&v).map_err(bad));
                if let Some((fs, warnings)) =
                    lenient(fs.map(Some), &mut config.warnings, None, "ignored")
                {
                    config.warnings.extend(warnings);
                    config.filesystems.retain(|f| f.name != fs.name);
                    config.filesystems.push(fs);
                }
            }
            "b2c.nbd" => {
                let nbd = need().and_then(|v| parse_nbd(&v).map_err(bad));
                if let Some((nbd, warnings)) =
                    lenient(nbd.map(Some), &mut config.warnings, None, "ignored")
                {
                    config.warnings.extend(warnings);
                    config.nbds.retain(|n| n.device != nbd.device);
                    config.nbds.push(nbd);
                }
            }
            "b2c.storage" => {
                let (stores, warnings) = parse_storage(&need()?);
                config.warnings.extend(warnings);
                config.image_stores = stores;
            }
            "b2c.gitlab_sections" => match flag() {
                Ok(on) => config.gitlab_sections = on,
                Err(_) => config.warnings.push(format!(
                    "b2c.gitlab_sections={:?} is not 0 or 1: GitLab sections stay on",
                    value.clone().unwrap_or_default()
                )),
            },
            "b2c.minio" => {
                let alias = parse_minio(&need()?).map_err(bad)?;
                config.minio.retain(|m| m.alias != alias.alias);
                config.minio.push(alias);
            }
            "b2c.volume" => {
                let (volume, warnings) = parse_volume(&need()?).map_err(bad)?;
                config.warnings.extend(warnings);
                config.volumes.retain(|v| v.name != volume.name);
                config.volumes.push(volume);
            }
            "b2c.debug_panic" => match need()?.as_str() {
                "pipeline" => config.debug_panic = Some(DebugPanic::Pipeline),
                other => config.warnings.push(format!(
                    "b2c.debug_panic={other} is ignored (a test aid; the only phase is pipeline)"
                )),
            },
            "b2c.keymap" => config
                .warnings
                .push("b2c.keymap is ignored: the serial console needs no keymap".into()),
            _ => config
                .warnings
                .push(format!("unknown option {key} is ignored")),
        }
    }
    Ok(config)
}

/// What a container's arguments accepted without acting on them: one line
/// for the flags without effect, one per value taken in its nearest meaning.
fn container_warnings(key: &str, args: &ContainerArgs, warnings: &mut Vec<String>) {
    if !args.ignored.is_empty() {
        warnings.push(format!(
            "{key}: {} accepted, without effect here ({})",
            args.ignored.join(", "),
            args.image
        ));
    }
    warnings.extend(args.warnings.iter().map(|w| format!("{key}: {w}")));
}

/// A duration as busybox `sleep` reads it: seconds (`70`, `2.5`), with an
/// optional unit `s`, `m`, `h` or `d`.
fn parse_seconds(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (number, unit) = match v.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&v[..i], c),
        _ => (v, 's'),
    };
    let scale = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        _ => return None,
    };
    let secs = number.parse::<f64>().ok()? * scale;
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// A value that boot2container would have taken, and b2c cannot: a
/// warning naming the key, and the nearest meaning instead.
fn lenient<T>(result: Result<T, Error>, warnings: &mut Vec<String>, nearest: T, what: &str) -> T {
    result.unwrap_or_else(|e| {
        warnings.push(format!("{e}; {what}"));
        nearest
    })
}

/// `b2c.hostname`: set as is when the kernel takes it (1 to 64 bytes, as
/// `hostname` in boot2container); else the nearest name, with a warning.
fn hostname(name: &str) -> (String, Option<String>) {
    let mut clean: String = name
        .chars()
        .map(|c| if c.is_control() { '-' } else { c })
        .collect();
    if clean.is_empty() {
        return (
            DEFAULT_HOSTNAME.to_string(),
            Some(format!("b2c.hostname is empty: using {DEFAULT_HOSTNAME}")),
        );
    }
    let mut warning = (clean != name)
        .then(|| format!("b2c.hostname={name:?}: control characters replaced by '-'"));
    if clean.len() > 64 {
        let mut end = 64;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
        warning = Some(format!(
            "b2c.hostname={name:?} is longer than the kernel's 64 bytes: using {clean:?}"
        ));
    }
    (clean, warning)
}

/// busybox `sleep`'s durations, as boot2container's `sleep
/// $ARG_POWEROFF_DELAY` reads them: numbers with an optional fraction and
/// an `s`, `m`, `h` or `d` suffix, several adding up (`1m 30s`); `inf`
/// waits forever. None when sleep would refuse it.
pub fn parse_sleep(value: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut any = false;
    for word in value.split_whitespace() {
        any = true;
        let lower = word.to_ascii_lowercase();
        if lower == "inf" || lower == "infinity" {
            return Some(Duration::MAX);
        }
        let (number, unit) = match lower.char_indices().last() {
            Some((i, c)) if "smhd".contains(c) => (&lower[..i], c),
            _ => (lower.as_str(), 's'),
        };
        let scale = match unit {
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => 1.0,
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        let seconds = number.parse::<f64>().ok()? * scale;
        total = total.checked_add(Duration::try_from_secs_f64(seconds).ok()?)?;
    }
    any.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_world_line_ci_tron() {
        let c = parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0,115200 b2c.container=\"-ti --dns=none -v tmp:/mnt/tmp \
             --tls-verify=false --entrypoint=/bin/sh docker://10.42.0.1:8002/infra/machine_registration:latest \
             -c 'echo hi'\" b2c.ntp_peer=10.42.0.1 b2c.pipefail b2c.cache_device=auto b2c.poweroff_delay=15",
        )
        .unwrap();
        assert_eq!(c.containers.len(), 1);
        let run = &c.containers[0];
        assert_eq!(
            run.image,
            "10.42.0.1:8002/infra/machine_registration:latest"
        );
        assert_eq!(run.command, vec!["-c", "echo hi"]);
        assert_eq!(run.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(run.dns, Some(Dns::None));
        assert_eq!(run.volumes[0].source, VolumeSource::Named("tmp".into()));
        assert!(!run.tls_verify && run.tty && run.interactive);
        assert_eq!(c.ntp_peer, NtpPeer::Host("10.42.0.1".into()));
        assert!(c.pipefail);
        assert_eq!(c.poweroff_delay, Duration::from_secs(15));
        assert_eq!(c.hostname, DEFAULT_HOSTNAME);
        assert_eq!(c.cache_device, CacheDevice::Auto);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn real_world_line_mesa() {
        let c = parse(
            "b2c.run=\"-v job:/job -e CI_JOB_ID=123 registry.freedesktop.org/mesa/mesa/debian/x86_64_test-gl:2024 /job/run.sh\" \
             b2c.run_service=\"docker.io/library/telegraf:latest\" \
             b2c.post_container=\"-v job:/job docker://alpine:3 sh -c 'ls /job'\" b2c.hostname=dut-7 \
             b2c.iface=eth0,address=192.168.1.7/24,gateway=192.168.1.1,nameserver=192.168.1.1",
        )
        .unwrap();
        assert_eq!(
            c.containers[0].image,
            "registry.freedesktop.org/mesa/mesa/debian/x86_64_test-gl:2024"
        );
        assert_eq!(c.containers[0].command, ["/job/run.sh"]);
        assert_eq!(
            c.containers[0].env,
            [EnvArg::Set("CI_JOB_ID".into(), "123".into())]
        );
        assert_eq!(c.services[0].image, "docker.io/library/telegraf:latest");
        assert_eq!(c.post_containers[0].image, "alpine:3");
        assert_eq!(c.post_containers[0].command, ["sh", "-c", "ls /job"]);
        assert_eq!(c.hostname, "dut-7");
        assert_eq!(c.ifaces.len(), 1);
        assert_eq!(
            c.ifaces[0].nameservers,
            [std::net::Ipv4Addr::new(192, 168, 1, 1)]
        );
        assert!(!c.pipefail);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn every_other_option() {
        let c = parse(
            "ip=dhcp b2c.extra_args_url=http://10.0.0.1/args b2c.shutdown_cmd=\"echo bye\" \
             b2c.reboot_cmd=reboot b2c.proxy=http://proxy:3128 b2c.shell b2c.insecure_registry=10.0.0.1:5000 \
             b2c.registry_mirror=docker.io=mirror:5000 b2c.keymap=fr",
        )
        .unwrap();
        assert_eq!(c.kernel_ip, Some(KernelIp::Dhcp { device: None }));
        assert_eq!(c.extra_args_url.as_deref(), Some("http://10.0.0.1/args"));
        assert_eq!(c.shutdown_cmd.as_deref(), Some("echo bye"));
        assert_eq!(c.reboot_cmd.as_deref(), Some("reboot"));
        assert_eq!(c.proxy.https.as_deref(), Some("http://proxy:3128"));
        assert!(c.shell);
        assert!(c.registries.is_insecure("10.0.0.1:5000"));
        assert_eq!(
            c.registries.mirrors_of("docker.io")[0].to_string(),
            "mirror:5000"
        );
        assert_eq!(c.warnings.len(), 1);
        let p =
            Proxy::parse("http=http://a:1,https=http://b:2,no_proxy=localhost,10.0.0.1").unwrap();
        assert_eq!(p.http.as_deref(), Some("http://a:1"));
        assert_eq!(p.https.as_deref(), Some("http://b:2"));
        assert_eq!(p.no_proxy.as_deref(), Some("localhost,10.0.0.1"));
    }

    #[test]
    fn storage_options() {
        let c = parse(
            "b2c.filesystem=nfs,type=nfs,src=10.0.0.1:/cache,opts=vers=4|ro b2c.cache_device=nfs \
             b2c.swap=4G,swappiness=20",
        )
        .unwrap();
        assert_eq!(c.cache_device, CacheDevice::Filesystem("nfs".into()));
        assert_eq!(c.filesystems[0].opts.as_deref(), Some("vers=4,ro"));
        assert_eq!(c.swap.unwrap().space, SwapSpace::File { bytes: 4 << 30 });
    }

    #[test]
    fn extra_args_merge_and_are_reported() {
        let (c, keys) = parse_with_extra(
            "b2c.run=a:1 b2c.hostname=x b2c.extra_args_url=http://h/a",
            "b2c.hostname=from-url\nb2c.run=\"b:2 true\"\n  b2c.ntp_peer=none\n",
        )
        .unwrap();
        assert_eq!(c.hostname, "from-url");
        let images: Vec<_> = c.containers.iter().map(|r| r.image.as_str()).collect();
        assert_eq!(images, ["a:1", "b:2"]);
        assert_eq!(c.ntp_peer, NtpPeer::None);
        assert_eq!(keys, ["b2c.hostname", "b2c.run", "b2c.ntp_peer"]);
        let e = parse_with_extra("", "b2c.run=\"--bogus img\"").unwrap_err();
        assert_eq!(e.key, "b2c.run");
    }

    #[test]
    fn repeated_runs_keep_their_order_and_last_scalar_wins() {
        let c = parse(
            "b2c.run=a:1 b2c.container=\"b:2 true\" b2c.hostname=x b2c.hostname=dut-7 \
             b2c.ntp_peer=none b2c.ca_cert=/etc/b2c/ca.pem b2c.modules=e1000e,igb b2c.log=debug",
        )
        .unwrap();
        let images: Vec<_> = c.containers.iter().map(|r| r.image.as_str()).collect();
        assert_eq!(images, ["a:1", "b:2"]);
        assert_eq!(c.hostname, "dut-7");
        assert_eq!(c.ntp_peer, NtpPeer::None);
        assert_eq!(c.ca_certs, ["/etc/b2c/ca.pem"]);
        assert_eq!(c.modules, ["e1000e", "igb"]);
        assert!(c.debug);
    }

    #[test]
    fn debug_panic_is_a_test_aid() {
        assert_eq!(parse("").unwrap().debug_panic, None);
        let c = parse("b2c.debug_panic=pipeline").unwrap();
        assert_eq!(c.debug_panic, Some(DebugPanic::Pipeline));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Lenient as every option: an unknown phase warns.
        let c = parse("b2c.debug_panic=pull").unwrap();
        assert_eq!(c.debug_panic, None);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }

    /// B2C-OPTIONS' leniency rule: a value boot2container would have taken
    /// warns, naming the key, and takes its nearest meaning.
    #[test]
    fn values_boot2container_takes_warn_and_take_their_nearest_meaning() {
        let warned = |line: &str, key: &str| -> Config {
            let c = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(
                c.warnings.iter().any(|w| w.contains(key)),
                "{line}: no warning naming {key}: {:?}",
                c.warnings
            );
            c
        };
        // Farm names with '_': any 1 to 64 bytes the kernel takes, as is.
        let c = parse("b2c.hostname=dut-my_farm-1").unwrap();
        assert_eq!(c.hostname, "dut-my_farm-1");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            parse("b2c.hostname=\"lab dut 7\"").unwrap().hostname,
            "lab dut 7"
        );
        let long = "x".repeat(70);
        assert_eq!(
            warned(&format!("b2c.hostname={long}"), "b2c.hostname").hostname,
            "x".repeat(64)
        );
        assert_eq!(
            warned("b2c.hostname=", "b2c.hostname").hostname,
            DEFAULT_HOSTNAME
        );
        // busybox sleep's syntax.
        for (v, secs) in [
            ("15s", 15.0),
            ("15", 15.0),
            ("1.5m", 90.0),
            ("2h", 7200.0),
            ("1d", 86400.0),
            ("0.25", 0.25),
        ] {
            let c = parse(&format!("b2c.poweroff_delay={v}")).unwrap();
            assert_eq!(c.poweroff_delay, Duration::from_secs_f64(secs), "{v}");
            assert!(c.warnings.is_empty(), "{v}: {:?}", c.warnings);
        }
        assert_eq!(
            parse("b2c.poweroff_delay=\"1m 30s\"")
                .unwrap()
                .poweroff_delay,
            Duration::from_secs(90)
        );
        assert_eq!(
            parse("b2c.poweroff_delay=inf").unwrap().poweroff_delay,
            Duration::MAX
        );
        for v in ["soon", "-1", "", "1x"] {
            let c = warned(&format!("b2c.poweroff_delay={v}"), "b2c.poweroff_delay");
            assert_eq!(c.poweroff_delay, Duration::ZERO, "{v}");
        }
        // An empty NTP peer is the default.
        assert_eq!(
            warned("b2c.ntp_peer=", "b2c.ntp_peer").ntp_peer,
            NtpPeer::Auto
        );
        assert_eq!(
            warned("b2c.ntp_peer=none b2c.ntp_peer", "b2c.ntp_peer").ntp_peer,
            NtpPeer::Auto
        );
        // An address without a prefix is a /32, as `ip addr add` makes it.
        let c = warned("b2c.iface=eth0,address=192.168.1.7", "address=192.168.1.7");
        assert_eq!(
            c.ifaces[0].mode,
            IfaceMode::Static {
                address: "192.168.1.7/32".parse().unwrap(),
                gateway: None
            }
        );
        // Container values podman takes.
        let c = parse("b2c.run=\"-e VAR -v /srv:/srv:z img\"").unwrap();
        assert_eq!(c.containers[0].env, [EnvArg::FromHost("VAR".into())]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Flags and switches boot2container ignores or shrugs off.
        assert!(!warned("b2c.pipefail=maybe", "b2c.pipefail").pipefail);
        assert!(!warned("b2c.log=loud", "b2c.log").debug);
        assert_eq!(
            warned("b2c.cache_device=/srv/x", "b2c.cache_device").cache_device,
            CacheDevice::None
        );
        assert_eq!(warned("b2c.swap=lots", "b2c.swap").swap, None);
        assert!(warned("b2c.filesystem=x,type=ext4", "b2c.filesystem")
            .filesystems
            .is_empty());
    }

    #[test]
    fn gitlab_sections_are_on_unless_turned_off() {
        assert!(parse("").unwrap().gitlab_sections);
        for (line, on) in [
            ("b2c.gitlab_sections=0", false),
            ("b2c.gitlab_sections=false", false),
            ("b2c.gitlab_sections=1", true),
            ("b2c.gitlab_sections", true),
        ] {
            let c = parse(line).unwrap();
            assert_eq!(c.gitlab_sections, on, "{line}");
            assert!(c.warnings.is_empty(), "{line}");
        }
        let c = parse("b2c.gitlab_sections=maybe").unwrap();
        assert!(c.gitlab_sections);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }

    #[test]
    fn dhcp_timeout_is_lenient() {
        assert_eq!(parse("").unwrap().dhcp_timeout, Duration::from_secs(70));
        for (v, secs) in [("20", 20.0), ("90s", 90.0), ("2m", 120.0), ("0.5", 0.5)] {
            let c = parse(&format!("b2c.dhcp_timeout={v}")).unwrap();
            assert_eq!(c.dhcp_timeout, Duration::from_secs_f64(secs), "{v}");
            assert!(c.warnings.is_empty(), "{v}: {:?}", c.warnings);
        }
        // boot2container never failed a boot on a value: warn, keep 70 s.
        for v in [
            "b2c.dhcp_timeout=soon",
            "b2c.dhcp_timeout=",
            "b2c.dhcp_timeout=-3",
        ] {
            let c = parse(v).unwrap();
            assert_eq!(c.dhcp_timeout, DEFAULT_DHCP_TIMEOUT, "{v}");
            assert_eq!(c.warnings.len(), 1, "{v}: {:?}", c.warnings);
            assert!(
                c.warnings[0].starts_with("b2c.dhcp_timeout="),
                "{:?}",
                c.warnings
            );
        }
        let c = parse("b2c.dhcp_timeout").unwrap();
        assert_eq!(c.dhcp_timeout, DEFAULT_DHCP_TIMEOUT);
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn unknown_keys_warn_and_other_keys_are_ignored() {
        let c = parse("quiet ip=dhcp b2c.frobnicate=1").unwrap();
        assert_eq!(c.warnings, ["unknown option b2c.frobnicate is ignored"]);
        assert_eq!(c.ntp_peer, NtpPeer::Auto);
    }

    #[test]
    fn timeout() {
        assert_eq!(
            parse("b2c.timeout=2h").unwrap().timeout,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            parse("b2c.timeout=90").unwrap().timeout,
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse("b2c.timeout=0").unwrap().timeout, None);
        assert_eq!(parse("b2c.timeout=soon").unwrap_err().key, "b2c.timeout");
        assert_eq!(parse("").unwrap().watchdog, Some(DEFAULT_WATCHDOG));
        assert_eq!(parse("b2c.watchdog=off").unwrap().watchdog, None);
        assert_eq!(
            parse("b2c.watchdog=10s").unwrap().watchdog,
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse("b2c.watchdog=0.5").unwrap_err().key, "b2c.watchdog");
    }

    #[test]
    fn pull_retry_and_stall() {
        let c = parse("b2c.pull_retry=10m b2c.pull_stall=1M/1m").unwrap();
        assert_eq!(c.pull_retry, Some(Duration::from_secs(600)));
        assert_eq!(c.pull_stall, Some((1 << 20, Duration::from_secs(60))));
        let c = parse("").unwrap();
        assert_eq!((c.pull_retry, c.pull_stall), (None, None));
    }

    #[test]
    fn malformed_values_name_the_key() {
        // Only what cannot mean anything: no image, a flag podman does not
        // know, and our own options' syntax.
        for (line, key) in [
            ("b2c.run=\"--no-such-flag img\"", "b2c.run"),
            ("b2c.run", "b2c.run"),
            ("b2c.container=\"\"", "b2c.container"),
            ("ip=10.0.0.300", "ip"),
            ("b2c.extra_args_url=ftp://x", "b2c.extra_args_url"),
            ("b2c.registry_mirror=docker.io", "b2c.registry_mirror"),
            (
                "b2c.registry_mirror=docker.io=http://m",
                "b2c.registry_mirror",
            ),
            ("b2c.insecure_registry=a/b", "b2c.insecure_registry"),
            ("b2c.proxy=http=a,bogus", "b2c.proxy"),
            (
                "b2c.proxy=socks5://joe:hunter2@proxy.test:1080",
                "b2c.proxy",
            ),
            ("b2c.proxy=https=http://proxy.test:31x", "b2c.proxy"),
            ("b2c.run_service=\"--bogus img\"", "b2c.run_service"),
            ("b2c.post_container", "b2c.post_container"),
            ("b2c.iface=eth0,address=1.2.3.400", "b2c.iface"),
            ("b2c.pull_retry=soon", "b2c.pull_retry"),
            ("b2c.pull_stall=32K", "b2c.pull_stall"),
            ("b2c.pull_stall=32K/0", "b2c.pull_stall"),
            ("b2c.pull_stall=lots/30s", "b2c.pull_stall"),
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e.key, key, "{line}");
            assert!(e.to_string().starts_with(&format!("invalid {key}=")), "{e}");
        }
        let e = parse("b2c.proxy=socks5://joe:hunter2@proxy.test:1080").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse("b2c.run=\"--no-such-flag img\"").unwrap_err();
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
    }
}
