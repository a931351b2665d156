//! The kernel command line of b2c, parsed into one typed [`Config`].
//!
//! Pure code: no I/O. The reference for what is accepted is
//! `B2C-OPTIONS.md`; APPEND lines written for boot2container must parse.

mod container;
mod tokenize;

use std::time::Duration;

pub use container::{parse_container_args, ContainerArgs, ContainerArgsError};
pub use tokenize::{tokenize, Token};

pub const DEFAULT_HOSTNAME: &str = "boot2container";

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

/// Everything b2c was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `b2c.run` / `b2c.container`, in order.
    pub containers: Vec<ContainerArgs>,
    pub ntp_peer: NtpPeer,
    pub hostname: String,
    pub poweroff_delay: Duration,
    /// `b2c.ca_cert`: paths of extra CA certificates (PEM) for registries.
    pub ca_certs: Vec<String>,
    /// `b2c.insmods` / `b2c.modules`.
    pub modules: Vec<String>,
    /// `b2c.log=debug`.
    pub debug: bool,
    /// Things to tell the user about, not failures: unknown keys and
    /// options accepted but not acted on yet.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            containers: Vec::new(),
            ntp_peer: NtpPeer::Auto,
            hostname: DEFAULT_HOSTNAME.to_string(),
            poweroff_delay: Duration::ZERO,
            ca_certs: Vec::new(),
            modules: Vec::new(),
            debug: false,
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
const NOT_YET_IMPLEMENTED: &[&str] = &[
    "b2c.run_service",
    "b2c.service",
    "b2c.post_container",
    "b2c.run_post",
    "b2c.pipefail",
    "b2c.cache_device",
    "b2c.swap",
    "b2c.filesystem",
    "b2c.extra_args_url",
    "b2c.iface",
    "b2c.keymap",
    "b2c.shutdown_cmd",
    "b2c.reboot_cmd",
    "b2c.proxy",
    "b2c.minio",
    "b2c.volume",
    "b2c.insecure_registry",
    "b2c.registry_mirror",
    "b2c.shell",
];

/// Parses a whole kernel command line.
pub fn parse(cmdline: &str) -> Result<Config, Error> {
    let mut config = Config::default();
    for Token { key, value } in tokenize(cmdline) {
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
        match key.as_str() {
            "b2c.run" | "b2c.container" => {
                let args = parse_container_args(&need()?).map_err(|e| bad(e.to_string()))?;
                for ignored in &args.ignored {
                    config.warnings.push(format!(
                        "{key}: container option {ignored} is not supported yet and is ignored"
                    ));
                }
                config.containers.push(args);
            }
            "b2c.ntp_peer" => {
                config.ntp_peer = match need()?.as_str() {
                    "" => return Err(bad("expected none, auto or a host name".into())),
                    "none" => NtpPeer::None,
                    "auto" => NtpPeer::Auto,
                    host => NtpPeer::Host(host.to_string()),
                }
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
            "b2c.ca_cert" => {
                let v = need()?;
                if v.is_empty() {
                    return Err(bad("expected the path of a PEM file".into()));
                }
                config.ca_certs.push(v);
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
    fn real_world_line() {
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
        assert!(!run.tls_verify);
        assert_eq!(c.ntp_peer, NtpPeer::Host("10.42.0.1".into()));
        assert_eq!(c.poweroff_delay, Duration::from_secs(15));
        assert_eq!(c.hostname, DEFAULT_HOSTNAME);
        // --dns, -v, b2c.pipefail and b2c.cache_device are reported, not dropped silently.
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
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
    fn unknown_keys_warn_and_other_keys_are_ignored() {
        let c = parse("quiet ip=dhcp b2c.frobnicate=1").unwrap();
        assert_eq!(c.warnings, ["unknown option b2c.frobnicate is ignored"]);
        assert_eq!(c.ntp_peer, NtpPeer::Auto);
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
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e.key, key, "{line}");
            assert!(e.to_string().starts_with(&format!("invalid {key}=")), "{e}");
        }
        let e = parse("b2c.run=\"--no-such-flag img\"").unwrap_err();
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
    }
}
