//! podman-run-style container arguments: `[OPTIONS] IMAGE [COMMAND [ARG...]]`.

/// One container to run, as written in a `b2c.run` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerArgs {
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
    /// Options we accept for compatibility but do not act on yet.
    pub ignored: Vec<String>,
}

/// Why a container argument string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerArgsError {
    #[error("unbalanced quotes")]
    Quotes,
    #[error("no image given (expected: [OPTIONS] IMAGE [COMMAND [ARG...]])")]
    NoImage,
    #[error("unknown flag {0} (supported: -e, -w, -u, -t, -i, --entrypoint, --tls-verify, --privileged, --network=host, --rm)")]
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
            "-v" | "--volume" | "--env-file" | "--dns" | "--hostname" | "--pull" => {
                let v = value(&flag)?;
                args.ignored.push(format!("{flag}={v}"));
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
    fn accepted_but_not_yet_acted_on_are_reported() {
        let a = parse_container_args("--dns=none -v tmp:/mnt/tmp img").unwrap();
        assert_eq!(a.ignored, vec!["--dns=none", "-v=tmp:/mnt/tmp"]);
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
