//! What `podman run` accepts, as data: every flag of podman 4.3 with its
//! value arity (the reference list is `podman-run-flags.txt`, checked by a
//! unit test), and the syntaxes of the values b2c acts on (sizes, signals,
//! capabilities, ulimits).

/// How a flag takes its value, as cobra/pflag parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Takes {
    /// A boolean: `--flag`, `--flag=false`; never the next word.
    Bool,
    /// One value: `--flag=V`, `--flag V`, `-fV`, `-f V`.
    Value,
    /// A value split on commas (pflag's `strings`): `--cap-add=A,B`.
    List,
}

pub(crate) struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    pub takes: Takes,
}

const fn flag(long: &'static str, short: Option<char>, takes: Takes) -> Flag {
    Flag { long, short, takes }
}

use Takes::{Bool, List, Value};

/// Every flag `podman run` knows (podman 4.3.1), by its canonical name;
/// hidden ones and podman's global flags included.
pub(crate) const FLAGS: &[Flag] = &[
    flag("add-host", None, List),
    flag("annotation", None, List),
    flag("arch", None, Value),
    flag("attach", Some('a'), List),
    flag("authfile", None, Value),
    flag("blkio-weight", None, Value),
    flag("blkio-weight-device", None, Value),
    flag("cap-add", None, List),
    flag("cap-drop", None, List),
    flag("cgroup-conf", None, List),
    flag("cgroup-parent", None, Value),
    flag("cgroupns", None, Value),
    flag("cgroups", None, Value),
    flag("chrootdirs", None, List),
    flag("cidfile", None, Value),
    flag("conmon-pidfile", None, Value),
    flag("cpu-period", None, Value),
    flag("cpu-quota", None, Value),
    flag("cpu-rt-period", None, Value),
    flag("cpu-rt-runtime", None, Value),
    flag("cpu-shares", Some('c'), Value),
    flag("cpus", None, Value),
    flag("cpuset-cpus", None, Value),
    flag("cpuset-mems", None, Value),
    flag("detach", Some('d'), Bool),
    flag("detach-keys", None, Value),
    flag("device", None, List),
    flag("device-cgroup-rule", None, List),
    flag("device-read-bps", None, List),
    flag("device-read-iops", None, List),
    flag("device-write-bps", None, List),
    flag("device-write-iops", None, List),
    flag("disable-content-trust", None, Bool),
    flag("dns", None, List),
    flag("dns-option", None, List),
    flag("dns-search", None, List),
    flag("entrypoint", None, Value),
    flag("env", Some('e'), Value),
    flag("env-file", None, List),
    flag("env-host", None, Bool),
    flag("env-merge", None, Value),
    flag("expose", None, List),
    flag("gidmap", None, List),
    flag("group-add", None, List),
    flag("health-cmd", None, Value),
    flag("health-interval", None, Value),
    flag("health-on-failure", None, Value),
    flag("health-retries", None, Value),
    flag("health-start-period", None, Value),
    flag("health-timeout", None, Value),
    flag("help", None, Bool),
    flag("hostname", Some('h'), Value),
    flag("hostuser", None, List),
    flag("http-proxy", None, Bool),
    flag("image-volume", None, Value),
    flag("init", None, Bool),
    flag("init-path", None, Value),
    flag("interactive", Some('i'), Bool),
    flag("ip", None, Value),
    flag("ip6", None, Value),
    flag("ipc", None, Value),
    flag("label", Some('l'), Value),
    flag("label-file", None, List),
    flag("log-driver", None, Value),
    flag("log-opt", None, List),
    flag("mac-address", None, Value),
    flag("memory", Some('m'), Value),
    flag("memory-reservation", None, Value),
    flag("memory-swap", None, Value),
    flag("memory-swappiness", None, Value),
    flag("mount", None, Value),
    flag("name", None, Value),
    flag("network", None, Value),
    flag("network-alias", None, List),
    flag("no-healthcheck", None, Bool),
    flag("no-hosts", None, Bool),
    flag("oom-kill-disable", None, Bool),
    flag("oom-score-adj", None, Value),
    flag("os", None, Value),
    flag("passwd", None, Bool),
    flag("passwd-entry", None, Value),
    flag("personality", None, Value),
    flag("pid", None, Value),
    flag("pidfile", None, Value),
    flag("pids-limit", None, Value),
    flag("platform", None, Value),
    flag("pod", None, Value),
    flag("pod-id-file", None, Value),
    flag("preserve-fds", None, Value),
    flag("privileged", None, Bool),
    flag("publish", Some('p'), List),
    flag("publish-all", Some('P'), Bool),
    flag("pull", None, Value),
    flag("quiet", Some('q'), Bool),
    flag("read-only", None, Bool),
    flag("read-only-tmpfs", None, Bool),
    flag("replace", None, Bool),
    flag("requires", None, List),
    flag("restart", None, Value),
    flag("rm", None, Bool),
    flag("rmi", None, Bool),
    flag("rootfs", None, Bool),
    flag("sdnotify", None, Value),
    flag("seccomp-policy", None, Value),
    flag("secret", None, Value),
    flag("security-opt", None, Value),
    flag("shm-size", None, Value),
    flag("sig-proxy", None, Bool),
    flag("stop-signal", None, Value),
    flag("stop-timeout", None, Value),
    flag("subgidname", None, Value),
    flag("subuidname", None, Value),
    flag("sysctl", None, List),
    flag("systemd", None, Value),
    flag("timeout", None, Value),
    flag("tls-verify", None, Bool),
    flag("tmpfs", None, Value),
    flag("tty", Some('t'), Bool),
    flag("tz", None, Value),
    flag("uidmap", None, List),
    flag("ulimit", None, List),
    flag("umask", None, Value),
    flag("unsetenv", None, Value),
    flag("unsetenv-all", None, Bool),
    flag("user", Some('u'), Value),
    flag("userns", None, Value),
    flag("uts", None, Value),
    flag("variant", None, Value),
    flag("volume", Some('v'), Value),
    flag("volumes-from", None, Value),
    flag("workdir", Some('w'), Value),
    // Hidden in `podman run --help`, known all the same.
    flag("gpus", None, Value),
    flag("kernel-memory", None, Value),
    flag("signature-policy", None, Value),
    // podman's global flags, which cobra accepts after `run` too.
    flag("cgroup-manager", None, Value),
    flag("conmon", None, Value),
    flag("cpu-profile", None, Value),
    flag("default-mounts-file", None, Value),
    flag("events-backend", None, Value),
    flag("hooks-dir", None, List),
    flag("log-level", None, Value),
    flag("max-workers", None, Value),
    flag("memory-profile", None, Value),
    flag("namespace", None, Value),
    flag("network-cmd-path", None, Value),
    flag("network-config-dir", None, Value),
    flag("registries-conf", None, Value),
    flag("root", None, Value),
    flag("runroot", None, Value),
    flag("runtime", None, Value),
    flag("runtime-flag", None, Value),
    flag("storage-driver", None, Value),
    flag("storage-opt", None, Value),
    flag("syslog", None, Bool),
    flag("tmpdir", None, Value),
    flag("trace", None, Bool),
    flag("volumepath", None, Value),
];

/// b2c's own flags, beyond podman's: `--creds USER[:PASSWORD]` (podman
/// has it for `pull`, not `run`) gives registry credentials.
pub(crate) const B2C_FLAGS: &[Flag] = &[flag("creds", None, Value)];

/// podman's `AliasFlags`: old names normalized to the current ones.
pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("dns-opt", "dns-option"),
    ("healthcheck-command", "health-cmd"),
    ("healthcheck-interval", "health-interval"),
    ("healthcheck-retries", "health-retries"),
    ("healthcheck-start-period", "health-start-period"),
    ("healthcheck-timeout", "health-timeout"),
    ("net", "network"),
    ("override-arch", "arch"),
    ("override-os", "os"),
    ("override-variant", "variant"),
];

/// The flag `--name` means, after podman's aliases.
pub(crate) fn long(name: &str) -> Option<&'static Flag> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, canonical)| canonical);
    FLAGS.iter().chain(B2C_FLAGS).find(|f| f.long == name)
}

pub(crate) fn short(c: char) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.short == Some(c))
}

/// pflag's `strconv.ParseBool`.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// go-units' `RAMInBytes`, as podman reads `--memory` and `--shm-size`:
/// a number (fractions allowed), an optional space, then b, k, m, g, t
/// or p (binary multiples), optionally followed by `b` or `ib`.
pub(crate) fn parse_ram(value: &str) -> Result<i64, String> {
    let bad = || format!("{value:?} is not a size such as 512m or 2g");
    let v = value.trim();
    let number_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(number_end);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let shift = match unit {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// Linux signal numbers (x86, arm, riscv: the generic table).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// podman's `ParseSignal`: `SIGTERM`, `TERM`, `term`, `15`, `RTMIN+3`.
/// Returns the signal number.
pub(crate) fn parse_signal(value: &str) -> Result<i32, String> {
    let bad = || format!("{value:?} is not a signal such as SIGTERM, TERM or 15");
    if let Ok(n) = value.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n).ok_or_else(bad);
    }
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(s, _)| *s == name) {
        return Ok(*n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let offset: i32 = if rest.is_empty() {
            0
        } else {
            rest.parse().ok()?
        };
        Some(base + sign * offset).filter(|n| (SIGRTMIN..=SIGRTMAX).contains(n))
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        rt(SIGRTMIN, rest.strip_prefix('+').unwrap_or(rest), 1)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        rt(SIGRTMAX, rest.strip_prefix('-').unwrap_or(rest), -1)
    } else {
        None
    };
    n.ok_or_else(bad)
}

/// The name crun takes for signal `n` (`TERM`, `RTMIN+3`), as
/// [`parse_signal`] read it.
pub fn signal_name(n: i32) -> String {
    match SIGNALS.iter().find(|(_, number)| *number == n) {
        Some((name, _)) => (*name).to_string(),
        None if (SIGRTMIN..=SIGRTMAX).contains(&n) => format!("RTMIN+{}", n - SIGRTMIN),
        None => n.to_string(),
    }
}

/// Every capability of Linux 6.x, as the OCI spec names them.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `net_raw`, `NET_RAW`, `CAP_NET_RAW` → `CAP_NET_RAW`; `all` → `ALL`.
pub(crate) fn parse_capability(value: &str) -> Result<String, String> {
    let upper = value.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if CAPABILITIES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!(
            "{value:?} is not a Linux capability (such as NET_RAW or SYS_ADMIN)"
        ))
    }
}

/// go-units' ulimit names, and the OCI spec's names for them.
const ULIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// `name=soft[:hard]`, -1 meaning unlimited: `(RLIMIT_NAME, soft, hard)`.
pub(crate) fn parse_ulimit(value: &str) -> Result<(String, u64, u64), String> {
    let bad = |why: &str| {
        format!("{value:?}: {why} (expected NAME=SOFT[:HARD], such as nofile=1024:2048)")
    };
    let (name, limits) = value.split_once('=').ok_or_else(|| bad("no '='"))?;
    let rlimit = ULIMITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| r.to_string())
        .ok_or_else(|| bad("unknown limit name"))?;
    let number = |s: &str| -> Result<u64, String> {
        match s.parse::<i64>() {
            Ok(-1) => Ok(u64::MAX),
            Ok(n) if n >= 0 => Ok(n as u64),
            _ => Err(bad("not a number")),
        }
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => {
            let n = number(limits)?;
            (n, n)
        }
    };
    if soft > hard {
        return Err(bad("the soft limit is above the hard one"));
    }
    Ok((rlimit, soft, hard))
}

/// `0-3`, `0,2`, `1-2,5`: a cpuset list.
pub(crate) fn valid_cpuset(value: &str) -> bool {
    !value.is_empty()
        && value.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let first = ends.next().unwrap_or_default();
            let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            num(first) && ends.next().is_none_or(num)
        })
}

/// A JSON array of strings, as podman accepts for `--entrypoint`; None
/// when `text` is not one (podman then takes it as one word).
pub(crate) fn json_string_array(text: &str) -> Option<Vec<String>> {
    let mut rest = text.trim().strip_prefix('[')?.trim_start();
    let mut out = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        return after.trim().is_empty().then_some(out);
    }
    loop {
        rest = rest.strip_prefix('"')?;
        let mut s = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => {
                    let (_, e) = chars.next()?;
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '/' => '/',
                        '\\' => '\\',
                        '"' => '"',
                        _ => return None,
                    });
                }
                c => s.push(c),
            }
        };
        out.push(s);
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(']') {
            return after.trim().is_empty().then_some(out);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_go_units_reads_them() {
        for (text, bytes) in [
            ("512m", 512 << 20),
            ("512M", 512 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("2GiB", 2 << 30),
            ("64MB", 64 << 20),
            ("65536k", 64 << 20),
            ("100 k", 100 << 10),
            ("4096", 4096),
            ("4096b", 4096),
        ] {
            assert_eq!(parse_ram(text), Ok(bytes), "{text}");
        }
        for bad in ["", "lots", "12x", "-1", "1.2.3g", "g"] {
            assert!(parse_ram(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_by_name_or_number() {
        for (text, n) in [
            ("SIGTERM", 15),
            ("TERM", 15),
            ("term", 15),
            ("9", 9),
            ("SIGKILL", 9),
            ("RTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("RTMAX-1", 63),
            ("SIGPWR", 30),
        ] {
            assert_eq!(parse_signal(text), Ok(n), "{text}");
        }
        for bad in ["", "SIGNOPE", "0", "65", "RTMIN+40"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
        for name in ["TERM", "INT", "KILL", "RTMIN+3", "PWR"] {
            assert_eq!(signal_name(parse_signal(name).unwrap()), name);
        }
    }

    #[test]
    fn capabilities_in_every_spelling() {
        assert_eq!(parse_capability("net_raw").unwrap(), "CAP_NET_RAW");
        assert_eq!(parse_capability("CAP_SYS_ADMIN").unwrap(), "CAP_SYS_ADMIN");
        assert_eq!(parse_capability("all").unwrap(), "ALL");
        assert!(parse_capability("FLY").is_err());
    }

    #[test]
    fn ulimits() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048"),
            Ok(("RLIMIT_NOFILE".into(), 1024, 2048))
        );
        assert_eq!(
            parse_ulimit("core=-1"),
            Ok(("RLIMIT_CORE".into(), u64::MAX, u64::MAX))
        );
        for bad in ["nofile", "files=1", "nofile=2:1", "nofile=x"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpusets_and_json_arrays() {
        for ok in ["0", "0-3", "0,2", "1-2,5"] {
            assert!(valid_cpuset(ok), "{ok}");
        }
        for bad in ["", "a", "0-", "1,,2", "-1"] {
            assert!(!valid_cpuset(bad), "{bad}");
        }
        assert_eq!(
            json_string_array(r#"["/bin/sh", "-c"]"#),
            Some(vec!["/bin/sh".to_string(), "-c".to_string()])
        );
        assert_eq!(json_string_array(r#"["a\"b"]"#), Some(vec!["a\"b".into()]));
        assert_eq!(json_string_array("[]"), Some(vec![]));
        for not in ["/bin/sh", "[/bin/sh]", r#"["a""#, r#"["a"] x"#] {
            assert_eq!(json_string_array(not), None, "{not}");
        }
    }
}
