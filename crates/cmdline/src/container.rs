//! podman-run-style container arguments: `[OPTIONS] IMAGE [COMMAND [ARG...]]`.

/// One container to run, as written in a `b2c.run` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerArgs {
    /// The whole value of the option (flags, image and command), as
    /// boot2container gives it in `B2C_PIPELINE_FAILED_BY` and
    /// `B2C_PIPELINE_PREV_CONTAINER`; secrets masked ([`redact`]).
    pub written: String,
    /// The image reference without the `docker://` transport prefix.
    pub image: String,
    /// Replaces the image's `Cmd` when not empty.
    pub command: Vec<String>,
    /// `-e KEY=VALUE`, in order; later ones override earlier ones.
    pub env: Vec<(String, String)>,
    /// `--entrypoint`: replaces the image's `Entrypoint` (and drops its `Cmd`).
    pub entrypoint: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub tls_verify: bool,
    /// `-v SOURCE:DEST[:ro]`.
    pub volumes: Vec<VolumeMount>,
    /// `--env-file URL-or-path`, read before `-e` variables apply.
    pub env_files: Vec<String>,
    /// `--dns=none` (no resolv.conf from the host) or a server address.
    pub dns: Option<Dns>,
    /// `--hostname`: the container's own host name.
    pub hostname: Option<String>,
    pub pull: PullPolicy,
    /// `--creds USER[:PASSWORD]`: for the image's registry.
    pub creds: Option<Credentials>,
    /// `--authfile PATH-or-URL`: podman's auth.json, read (or fetched)
    /// before the pull.
    pub authfile: Option<String>,
}

/// A registry user name and password (`--creds`). The password is a
/// secret: `Debug` and `Display` mask it, so that no plan, message or
/// variable shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// `USER:PASSWORD`, split at the first `:`; without one, podman asks
    /// for the password: here it is empty.
    pub fn parse(value: &str) -> Credentials {
        let (username, password) = value.split_once(':').unwrap_or((value, ""));
        Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl std::fmt::Display for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:***", self.username)
    }
}

/// Where a volume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A named volume: lives for the whole boot, shared between containers.
    Named(String),
    /// A path of the host (the initramfs), bind-mounted.
    HostPath(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: VolumeSource,
    pub destination: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    None,
    Servers(Vec<std::net::Ipv4Addr>),
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
    #[error("unknown flag {0} (supported: -e, --env-file, -v, -w, -u, -t, -i, --entrypoint, --tls-verify, --dns, --hostname, --pull, --privileged, --network=host, --rm)")]
    UnknownFlag(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("flag {flag}: {problem}")]
    BadValue { flag: String, problem: String },
}

/// Parses the value of a `b2c.run` option.
pub fn parse_container_args(value: &str) -> Result<ContainerArgs, ContainerArgsError> {
    let words = shlex::split(value).ok_or(ContainerArgsError::Quotes)?;
    let mut args = ContainerArgs {
        written: redact(value.trim()),
        tls_verify: true,
        ..Default::default()
    };
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        if !word.starts_with('-') || word == "-" {
            args.image = word.strip_prefix("docker://").unwrap_or(&word).to_string();
            if args.image.is_empty() {
                return Err(ContainerArgsError::NoImage);
            }
            args.command = words.collect();
            return Ok(args);
        }
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (word.clone(), None),
        };
        let mut value = |flag: &str| -> Result<String, ContainerArgsError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => words
                    .next()
                    .ok_or_else(|| ContainerArgsError::MissingValue(flag.to_string())),
            }
        };
        match flag.as_str() {
            "-e" | "--env" => {
                let kv = value(&flag)?;
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => args.env.push((k.into(), v.into())),
                    _ => {
                        return Err(ContainerArgsError::BadValue {
                            flag,
                            problem: format!("{kv:?} is not KEY=VALUE"),
                        })
                    }
                }
            }
            "--entrypoint" => args.entrypoint = Some(value(&flag)?),
            "-w" | "--workdir" => args.workdir = Some(value(&flag)?),
            "-u" | "--user" => args.user = Some(value(&flag)?),
            "--tls-verify" => args.tls_verify = bool_value(&flag, inline.as_deref())?,
            "--privileged" => {
                if !bool_value(&flag, inline.as_deref())? {
                    return Err(ContainerArgsError::BadValue {
                        flag,
                        problem: "containers always run privileged".into(),
                    });
                }
            }
            "--network" | "--net" => {
                let v = value(&flag)?;
                if v != "host" {
                    return Err(ContainerArgsError::BadValue {
                        flag,
                        problem: format!("{v:?}: only \"host\" is supported"),
                    });
                }
            }
            "--tty" => args.tty = bool_value(&flag, inline.as_deref())?,
            "--interactive" => args.interactive = bool_value(&flag, inline.as_deref())?,
            "--rm" => {}
            "-v" | "--volume" => {
                let v = value(&flag)?;
                let volume = parse_volume(&v).map_err(|problem| ContainerArgsError::BadValue {
                    flag: flag.clone(),
                    problem,
                })?;
                args.volumes.push(volume);
            }
            "--env-file" => args.env_files.push(value(&flag)?),
            "--dns" => {
                let v = value(&flag)?;
                let dns = parse_dns(&v, args.dns.take()).map_err(|problem| {
                    ContainerArgsError::BadValue {
                        flag: flag.clone(),
                        problem,
                    }
                })?;
                args.dns = Some(dns);
            }
            "--hostname" | "-h" => args.hostname = Some(value(&flag)?),
            "--creds" => args.creds = Some(Credentials::parse(&value(&flag)?)),
            "--authfile" => args.authfile = Some(value(&flag)?),
            "--pull" => {
                args.pull = match value(&flag)?.as_str() {
                    "always" => PullPolicy::Always,
                    "missing" => PullPolicy::Missing,
                    "never" => PullPolicy::Never,
                    v => {
                        return Err(ContainerArgsError::BadValue {
                            flag,
                            problem: format!("{v:?} is not always, missing or never"),
                        })
                    }
                }
            }
            short if is_tty_cluster(short) => {
                args.tty |= short.contains('t');
                args.interactive |= short.contains('i');
            }
            _ => return Err(ContainerArgsError::UnknownFlag(flag)),
        }
    }
    Err(ContainerArgsError::NoImage)
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

/// `SOURCE:DEST[:ro|rw]`: a SOURCE starting with `/` is a host path,
/// anything else names a volume.
fn parse_volume(v: &str) -> Result<VolumeMount, String> {
    let mut parts = v.split(':');
    let (source, destination) = match (parts.next(), parts.next()) {
        (Some(s), Some(d)) if !s.is_empty() && d.starts_with('/') => (s, d),
        _ => return Err(format!("{v:?} is not SOURCE:/DESTINATION[:ro]")),
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => return Err(format!("{v:?}: option {o:?} is not ro or rw")),
    };
    if parts.next().is_some() {
        return Err(format!("{v:?} has too many ':'"));
    }
    let source = if source.starts_with('/') {
        VolumeSource::HostPath(source.into())
    } else if source
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        VolumeSource::Named(source.into())
    } else {
        return Err(format!(
            "volume name {source:?} may only hold letters, digits, '_', '.' and '-'"
        ));
    };
    Ok(VolumeMount {
        source,
        destination: destination.into(),
        read_only,
    })
}

/// `--dns` may repeat to list several servers; `none` stands alone.
fn parse_dns(v: &str, previous: Option<Dns>) -> Result<Dns, String> {
    if v == "none" {
        return Ok(Dns::None);
    }
    let ip = v
        .parse()
        .map_err(|_| format!("{v:?} is not none or an IPv4 address"))?;
    Ok(match previous {
        Some(Dns::Servers(mut servers)) => {
            servers.push(ip);
            Dns::Servers(servers)
        }
        _ => Dns::Servers(vec![ip]),
    })
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

/// `-t`, `-i`, `-ti`, `-it`.
fn is_tty_cluster(word: &str) -> bool {
    word.len() > 1 && !word.starts_with("--") && word[1..].chars().all(|c| c == 't' || c == 'i')
}

fn bool_value(flag: &str, inline: Option<&str>) -> Result<bool, ContainerArgsError> {
    match inline {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(ContainerArgsError::BadValue {
            flag: flag.to_string(),
            problem: format!("{v:?} is not true or false"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_with_command_and_flags() {
        let a = parse_container_args(
            "-ti --tls-verify=false --entrypoint=/bin/sh -e A=1 --env B=x=y -w /job \
             docker://10.42.0.1:8002/infra/reg:latest -c 'echo hi; exit 3'",
        )
        .unwrap();
        assert_eq!(a.image, "10.42.0.1:8002/infra/reg:latest");
        assert_eq!(a.command, vec!["-c", "echo hi; exit 3"]);
        assert_eq!(a.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(
            a.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(a.workdir.as_deref(), Some("/job"));
        assert!(a.tty && a.interactive && !a.tls_verify);
    }

    #[test]
    fn registry_credentials() {
        let a = parse_container_args("--creds bob:pa:ss --authfile /etc/auth.json img").unwrap();
        let creds = a.creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("bob", "pa:ss")
        );
        assert_eq!(a.authfile.as_deref(), Some("/etc/auth.json"));
        assert_eq!(creds.to_string(), "bob:***");
        assert!(!format!("{creds:?}").contains("pa:ss"));
        let a = parse_container_args("--creds=token --authfile=http://h/a.json img").unwrap();
        assert_eq!(a.creds.unwrap().password, "");
        assert_eq!(a.authfile.as_deref(), Some("http://h/a.json"));
    }

    #[test]
    fn the_whole_value_is_kept_with_its_secrets_masked() {
        let a = parse_container_args("  -e A=1 docker://img:1 sh -c 'exit 3' ").unwrap();
        assert_eq!(a.written, "-e A=1 docker://img:1 sh -c 'exit 3'");
        for (text, masked) in [
            ("--creds bob:s3cr3t img", "--creds bob:*** img"),
            ("--creds=bob:s3cr3t img", "--creds=bob:*** img"),
            ("--creds   token img", "--creds   *** img"),
            (
                r#"b2c.run="--creds bob:pw img" b2c.run="--creds=al:x:y other""#,
                r#"b2c.run="--creds bob:*** img" b2c.run="--creds=al:*** other""#,
            ),
            ("--credsx a:b --creds", "--credsx a:b --creds"),
            ("img --help", "img --help"),
        ] {
            assert_eq!(redact(text), masked, "{text}");
        }
    }

    #[test]
    fn plain_image_keeps_defaults() {
        let a = parse_container_args("alpine:3").unwrap();
        assert_eq!(a.image, "alpine:3");
        assert!(a.command.is_empty() && a.tls_verify && !a.tty);
    }

    #[test]
    fn flags_after_the_image_belong_to_the_command() {
        let a = parse_container_args("img -e X=1 --help").unwrap();
        assert_eq!(a.command, vec!["-e", "X=1", "--help"]);
        assert!(a.env.is_empty());
    }

    #[test]
    fn volumes_dns_hostname_pull() {
        let a = parse_container_args(
            "--dns=none -v tmp:/mnt/tmp -v /dev/shm:/shm:ro --volume=job:/job:rw \
             --hostname dut --pull=missing --env-file /etc/env img",
        )
        .unwrap();
        assert_eq!(a.dns, Some(Dns::None));
        assert_eq!(
            a.volumes,
            vec![
                VolumeMount {
                    source: VolumeSource::Named("tmp".into()),
                    destination: "/mnt/tmp".into(),
                    read_only: false
                },
                VolumeMount {
                    source: VolumeSource::HostPath("/dev/shm".into()),
                    destination: "/shm".into(),
                    read_only: true
                },
                VolumeMount {
                    source: VolumeSource::Named("job".into()),
                    destination: "/job".into(),
                    read_only: false
                },
            ]
        );
        assert_eq!(a.hostname.as_deref(), Some("dut"));
        assert_eq!(a.pull, PullPolicy::Missing);
        assert_eq!(a.env_files, ["/etc/env"]);
        let b = parse_container_args("--dns 1.1.1.1 --dns=9.9.9.9 img").unwrap();
        assert_eq!(
            b.dns,
            Some(Dns::Servers(vec![[1, 1, 1, 1].into(), [9, 9, 9, 9].into()]))
        );
        for bad in [
            "-v tmp img",
            "-v tmp:relative img",
            "-v tmp:/a:rx img",
            "-v a/b:/c img",
            "--dns=dns.example img",
            "--pull=sometimes img",
        ] {
            assert!(
                matches!(
                    parse_container_args(bad),
                    Err(ContainerArgsError::BadValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn env_files() {
        assert_eq!(
            parse_env_file("# comment\n\nA=1\r\n  B=two words\nC=\n").unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "".into())
            ]
        );
        assert_eq!(
            parse_env_file("A=1\nNOVALUE\n").unwrap_err(),
            "line 2: \"NOVALUE\" is not KEY=VALUE"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        use ContainerArgsError::*;
        assert_eq!(
            parse_container_args("--bogus img"),
            Err(UnknownFlag("--bogus".into()))
        );
        assert_eq!(parse_container_args("-ti"), Err(NoImage));
        assert_eq!(parse_container_args(""), Err(NoImage));
        assert_eq!(parse_container_args("img 'sh"), Err(Quotes));
        assert_eq!(parse_container_args("-e"), Err(MissingValue("-e".into())));
        assert!(matches!(
            parse_container_args("-e NOVALUE img"),
            Err(BadValue { .. })
        ));
        assert!(matches!(
            parse_container_args("--tls-verify=maybe img"),
            Err(BadValue { .. })
        ));
        assert!(matches!(
            parse_container_args("--network=bridge img"),
            Err(BadValue { .. })
        ));
        assert_eq!(
            parse_container_args("-x img"),
            Err(UnknownFlag("-x".into()))
        );
    }
}
