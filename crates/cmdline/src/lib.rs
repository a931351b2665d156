//! The kernel command line of b2c, parsed into one typed [`Config`].
//!
//! Pure code: no I/O. The reference for what is accepted is
//! `B2C-OPTIONS.md`; APPEND lines written for boot2container must parse.

mod container;
mod duration;
mod image;
mod network;
mod plan;
mod storage;
mod tokenize;

use std::time::Duration;

pub use container::{
    parse_container_args, parse_env_file, ContainerArgs, ContainerArgsError, Dns, PullPolicy,
    VolumeMount, VolumeSource,
};
pub use duration::parse_duration;
pub use image::{ImageRef, ReferenceError};
pub use network::{
    parse_iface, parse_kernel_ip, IfaceConfig, IfaceMode, Ipv4Cidr, KernelIp, Route,
};
pub use plan::{
    derive, BootPlan, ContainerId, ContainerPlan, EndPlan, EnvFileId, EnvFileSource, ImageId,
    ImagePlan, Layout, NetworkPlan, PlanError, Stage, StoragePlan, TrustPlan, VolumePlan,
};
pub use storage::{
    parse_cache_device, parse_filesystem, parse_size, parse_swap, CacheDevice, Filesystem, Swap,
    SwapSpace,
};
pub use tokenize::{tokenize, Token};

pub const DEFAULT_HOSTNAME: &str = "boot2container";
/// How long a hung machine waits for its hardware watchdog's reset.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(60);

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

/// `b2c.proxy`: proxies for registry and extra-args traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxy {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
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
    /// `b2c.insecure_registry`: `host[:port]` reached without TLS verification.
    pub insecure_registries: Vec<String>,
    /// `b2c.registry_mirror=host=mirror`: (registry, mirror) pairs.
    pub registry_mirrors: Vec<(String, String)>,
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
    /// `b2c.log=debug`.
    pub debug: bool,
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
            insecure_registries: Vec::new(),
            registry_mirrors: Vec::new(),
            pull_retry: None,
            pull_stall: None,
            cache_device: CacheDevice::None,
            swap: None,
            filesystems: Vec::new(),
            debug: false,
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

/// Options of boot2container that belong to later work: accepted with a
/// warning so that existing APPEND lines still boot.
const NOT_YET_IMPLEMENTED: &[&str] = &["b2c.minio", "b2c.volume"];

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
        let bad = |problem: String| Error {
            key: key.clone(),
            value: value.clone().unwrap_or_default(),
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
        let container = || parse_container_args(&need()?).map_err(|e| bad(e.to_string()));
        match key.as_str() {
            "b2c.run" | "b2c.container" => config.containers.push(container()?),
            "b2c.run_service" | "b2c.service" => config.services.push(container()?),
            "b2c.post_container" | "b2c.run_post" => config.post_containers.push(container()?),
            "b2c.pipefail" => config.pipefail = flag()?,
            "b2c.shell" => config.shell = flag()?,
            "b2c.iface" => {
                let (iface, warnings) = parse_iface(&need()?).map_err(bad)?;
                config.warnings.extend(warnings);
                config.ifaces.push(iface);
            }
            "b2c.ntp_peer" => {
                config.ntp_peer = match need()?.as_str() {
                    "" => return Err(bad("expected none, auto or a host name".into())),
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
                let name = need()?;
                if !valid_hostname(&name) {
                    return Err(bad(
                        "expected a host name: 1 to 64 letters, digits, '-' or '.'".into(),
                    ));
                }
                config.hostname = name;
            }
            "b2c.poweroff_delay" => {
                let v = need()?;
                config.poweroff_delay = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| bad("expected a number of seconds, such as 15".into()))?;
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
            "b2c.proxy" => config.proxy = parse_proxy(&need()?).map_err(bad)?,
            "b2c.ca_cert" => {
                let v = need()?;
                if v.is_empty() {
                    return Err(bad("expected the path or URL of a PEM file".into()));
                }
                config.ca_certs.push(v);
            }
            "b2c.insecure_registry" => {
                let v = need()?;
                if v.is_empty() || v.contains('/') {
                    return Err(bad("expected host[:port], such as 10.0.0.1:5000".into()));
                }
                config.insecure_registries.push(v);
            }
            "b2c.registry_mirror" => {
                let v = need()?;
                match v.split_once('=') {
                    Some((registry, mirror)) if !registry.is_empty() && !mirror.is_empty() => {
                        config
                            .registry_mirrors
                            .push((registry.to_string(), mirror.to_string()))
                    }
                    _ => {
                        return Err(bad(
                            "expected REGISTRY=MIRROR, such as docker.io=mirror.example:5000"
                                .into(),
                        ))
                    }
                }
            }
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
                config.debug = match need()?.as_str() {
                    "debug" => true,
                    "info" => false,
                    _ => return Err(bad("expected debug or info".into())),
                }
            }
            "b2c.cache_device" => {
                config.cache_device = parse_cache_device(&need()?).map_err(bad)?
            }
            "b2c.swap" => {
                let (swap, warnings) = parse_swap(&need()?).map_err(bad)?;
                config.warnings.extend(warnings);
                config.swap = Some(swap);
            }
            "b2c.filesystem" => {
                let (fs, warnings) = parse_filesystem(&need()?).map_err(bad)?;
                config.warnings.extend(warnings);
                config.filesystems.retain(|f| f.name != fs.name);
                config.filesystems.push(fs);
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
            k if NOT_YET_IMPLEMENTED.contains(&k) => config
                .warnings
                .push(format!("{key} is not supported yet and is ignored")),
            _ => config
                .warnings
                .push(format!("unknown option {key} is ignored")),
        }
    }
    Ok(config)
}

/// `URL` (for both schemes) or `http=URL,https=URL,no_proxy=HOSTS`.
fn parse_proxy(v: &str) -> Result<Proxy, String> {
    if v.contains("://") && !v.split("://").next().unwrap_or("").contains('=') {
        return Ok(Proxy {
            http: Some(v.into()),
            https: Some(v.into()),
            no_proxy: None,
        });
    }
    let mut proxy = Proxy::default();
    // no_proxy lists hosts with commas, so it must come last.
    let (main, no_proxy) = match v.find("no_proxy=") {
        Some(i) => (
            v[..i].trim_end_matches(','),
            Some(&v[i + "no_proxy=".len()..]),
        ),
        None => (v, None),
    };
    proxy.no_proxy = no_proxy.map(String::from);
    for part in main.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("http", url)) => proxy.http = Some(url.into()),
            Some(("https", url)) => proxy.https = Some(url.into()),
            _ => {
                return Err(format!(
                    "{part:?}: expected URL or http=URL,https=URL[,no_proxy=HOSTS]"
                ))
            }
        }
    }
    Ok(proxy)
}

fn valid_hostname(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
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
            [("CI_JOB_ID".to_string(), "123".to_string())]
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
        assert_eq!(c.insecure_registries, ["10.0.0.1:5000"]);
        assert_eq!(
            c.registry_mirrors,
            [("docker.io".to_string(), "mirror:5000".to_string())]
        );
        assert_eq!(c.warnings.len(), 1);
        let p =
            parse_proxy("http=http://a:1,https=http://b:2,no_proxy=localhost,10.0.0.1").unwrap();
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
        let e = parse_with_extra("", "b2c.poweroff_delay=x").unwrap_err();
        assert_eq!(e.key, "b2c.poweroff_delay");
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
        for (line, key) in [
            ("b2c.run=\"--no-such-flag img\"", "b2c.run"),
            ("b2c.run", "b2c.run"),
            ("b2c.container=\"\"", "b2c.container"),
            ("b2c.poweroff_delay=soon", "b2c.poweroff_delay"),
            ("b2c.poweroff_delay=-1", "b2c.poweroff_delay"),
            ("b2c.hostname=bad_name!", "b2c.hostname"),
            ("b2c.ntp_peer=", "b2c.ntp_peer"),
            ("b2c.log=loud", "b2c.log"),
            ("b2c.pipefail=maybe", "b2c.pipefail"),
            ("b2c.iface=eth0,address=1.2.3.4", "b2c.iface"),
            ("ip=10.0.0.300", "ip"),
            ("b2c.extra_args_url=ftp://x", "b2c.extra_args_url"),
            ("b2c.registry_mirror=docker.io", "b2c.registry_mirror"),
            ("b2c.proxy=http=a,bogus", "b2c.proxy"),
            ("b2c.run_service=\"--bogus img\"", "b2c.run_service"),
            ("b2c.post_container", "b2c.post_container"),
            ("b2c.swap=lots", "b2c.swap"),
            ("b2c.filesystem=x,type=ext4", "b2c.filesystem"),
            ("b2c.pull_retry=soon", "b2c.pull_retry"),
            ("b2c.pull_stall=32K", "b2c.pull_stall"),
            ("b2c.pull_stall=32K/0", "b2c.pull_stall"),
            ("b2c.pull_stall=lots/30s", "b2c.pull_stall"),
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e.key, key, "{line}");
            assert!(e.to_string().starts_with(&format!("invalid {key}=")), "{e}");
        }
        let e = parse("b2c.run=\"--no-such-flag img\"").unwrap_err();
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
    }
}
