//! How to reach registries ([`RegistryOptions`]: trust, proxies, insecure
//! registries, mirrors, retries), and registry failures mapped into
//! [`PullError`]s. The protocol itself is in [`crate::client`].

use std::fmt;
use std::time::Duration;

use b2c_cmdline::Proxy;
use b2c_net::http::{self, split_host_port, FailureKind, MinProgress, Proxies, RetryPolicy};
use b2c_net::http::{Retryable, Trust};
use oci_spec::distribution::Reference;

use crate::PullError;

/// How to reach registries.
///
/// `RegistryOptions::default()` verifies TLS against the bundled roots, uses
/// no proxy (not even `HTTP_PROXY`/`HTTPS_PROXY` from the environment, which
/// the kernel passes to init for such words on its command line) and no
/// mirror.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// `false` is podman's `--tls-verify=false`: HTTPS without certificate
    /// verification, falling back to plain HTTP when the registry does not
    /// speak TLS. It covers every registry of the pull, mirrors included.
    pub tls_verify: bool,
    /// The bundled roots and `b2c.ca_cert` ([`Trust::load`]), used for
    /// every registry with verification on.
    pub trust: Trust,
    /// How long transient failures (connection errors, 5xx, 429, stalls)
    /// are retried: `b2c.pull_retry` ([`RetryPolicy::for_time`], 2 minutes
    /// by default). A cut layer download resumes where it stopped.
    pub retry: RetryPolicy,
    /// `b2c.pull_stall`: a layer download that brings less than this is
    /// stalled, and retried (32 KiB in 30 s by default).
    pub min_progress: MinProgress,
    /// `b2c.proxy` (see [`Proxies`]); the default: direct connections.
    pub proxy: Proxy,
    /// `b2c.insecure_registry`: registries (`host` or `host:port`, as users
    /// write them) pulled as with `tls_verify: false`. An entry with a port
    /// matches that port only (`10.0.0.1:5000`); an entry without one
    /// matches the host on every port (`10.0.0.1` covers `10.0.0.1:5000`
    /// and `10.0.0.1`), since whoever can intercept one port of a host can
    /// intercept all of them. Hosts compare case-insensitively; `docker.io`,
    /// `index.docker.io` and `registry-1.docker.io` are one registry.
    pub insecure_registries: Vec<String>,
    /// `b2c.registry_mirror=REGISTRY=MIRROR`: (registry, mirror) pairs. The
    /// registry is matched exactly as written in image references (port
    /// included; the Docker Hub names are one registry, as above). The
    /// mirror is `host[:port]`, optionally followed by a path prefix put
    /// before the repository (`harbor.example/hub-proxy` serves
    /// `docker.io/library/alpine` as `hub-proxy/library/alpine`, as Harbor
    /// proxy projects do). Several mirrors of a registry are tried in order,
    /// then the registry itself; see [`crate::pull`]. A mirror gets at most
    /// 3 of `retry`'s attempts before the next source is tried.
    pub mirrors: Vec<(String, String)>,
}

/// How long a pull rides out transient failures by default.
pub const DEFAULT_PULL_RETRY: Duration = Duration::from_secs(120);

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            trust: Trust::bundled(),
            retry: RetryPolicy::for_time(DEFAULT_PULL_RETRY),
            min_progress: MinProgress::default(),
            proxy: Proxy::default(),
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
        }
    }
}

impl RegistryOptions {
    /// Checks the mirror and proxy settings, so that mistakes can be
    /// reported before anything is pulled ([`crate::pull`] checks too).
    pub fn validate(&self) -> Result<(), PullError> {
        for (registry, mirror) in &self.mirrors {
            if registry.trim().is_empty() || registry.contains(['/', ' ']) {
                return Err(PullError::BadOption {
                    option: "b2c.registry_mirror",
                    detail: format!("{registry:?} is not a registry name (host[:port])"),
                });
            }
            Mirror::parse(mirror)?;
        }
        for entry in &self.insecure_registries {
            let e = entry.trim();
            if e.is_empty() || e.contains(['/', ' ']) {
                return Err(PullError::BadOption {
                    option: "b2c.insecure_registry",
                    detail: format!("{entry:?}: expected host[:port], such as 10.0.0.1:5000"),
                });
            }
        }
        self.proxies()?;
        Ok(())
    }

    /// Whether `registry` (`host[:port]`) is listed in
    /// `insecure_registries`.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let registry = normalize_registry(registry);
        let (host, port) = split_host_port(&registry);
        self.insecure_registries.iter().any(|entry| {
            let entry = normalize_registry(entry);
            let (h, p) = split_host_port(&entry);
            h == host && (p.is_none() || p == port)
        })
    }

    /// The mirrors of `registry` (as written in the reference), in order.
    pub(crate) fn mirrors_of(&self, registry: &str) -> Result<Vec<Mirror>, PullError> {
        let registry = normalize_registry(registry);
        self.mirrors
            .iter()
            .filter(|(r, _)| normalize_registry(r) == registry)
            .map(|(_, m)| Mirror::parse(m))
            .collect()
    }

    /// `b2c.proxy`, checked.
    pub(crate) fn proxies(&self) -> Result<Proxies, PullError> {
        Proxies::new(&self.proxy).map_err(|e| PullError::BadOption {
            option: "b2c.proxy",
            detail: e.to_string(),
        })
    }
}

/// A mirror: where to fetch instead, and what to put before the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mirror {
    pub(crate) host: String,
    pub(crate) prefix: Option<String>,
}

impl Mirror {
    fn parse(spec: &str) -> Result<Mirror, PullError> {
        let bad = |why: &str| PullError::BadOption {
            option: "b2c.registry_mirror",
            detail: format!("mirror {spec:?}: {why}"),
        };
        let spec = spec.trim().trim_end_matches('/');
        if spec.contains("://") {
            return Err(bad(
                "write host[:port][/path] without a scheme; for a plain-HTTP mirror add \
                 b2c.insecure_registry=HOST",
            ));
        }
        let (host, prefix) = match spec.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (spec, None),
        };
        if host.is_empty() || host.contains([' ', '@']) {
            return Err(bad("expected host[:port][/path]"));
        }
        if prefix.is_some_and(|p| p.split('/').any(str::is_empty) || p.contains(' ')) {
            return Err(bad("the path has an empty component"));
        }
        Ok(Mirror {
            host: host.to_string(),
            prefix: prefix.map(String::from),
        })
    }

    /// The reference to fetch from the mirror.
    pub(crate) fn reference(&self, origin: &Reference) -> Reference {
        let repository = match &self.prefix {
            Some(p) => format!("{p}/{}", origin.repository()),
            None => origin.repository().to_string(),
        };
        let registry = self.host.clone();
        match (origin.tag(), origin.digest()) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
            }
            (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
            (tag, None) => {
                Reference::with_tag(registry, repository, tag.unwrap_or("latest").into())
            }
        }
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(p) = &self.prefix {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// A registry name as written by users or in references, comparable: no
/// scheme or trailing slash, lower case, the Docker Hub aliases folded into
/// `docker.io` (oci-client resolves `docker.io` to `index.docker.io`; Docker
/// itself talks to `registry-1.docker.io`).
fn normalize_registry(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s)
        .trim_end_matches('/')
        .to_ascii_lowercase();
    match s.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => s,
    }
}

/// A registry failure: the HTTP layer's classification, or content that
/// does not match its digest.
#[derive(Debug)]
pub(crate) enum Failure {
    Http(http::Failure),
    /// Never retried, and never a reason to try elsewhere.
    Digest(String),
}

impl Failure {
    pub(crate) fn other(detail: String) -> Failure {
        Failure::Http(http::Failure::other(detail))
    }

    pub(crate) fn map_http(self, f: impl FnOnce(http::Failure) -> http::Failure) -> Failure {
        match self {
            Failure::Http(h) => Failure::Http(f(h)),
            d => d,
        }
    }

    pub(crate) fn retryable(&self) -> bool {
        matches!(self, Failure::Http(f) if f.retryable())
    }

    /// Whether a different endpoint (HTTP after HTTPS) might do better: the
    /// registry was not talked to at all.
    pub(crate) fn is_connection_level(&self) -> bool {
        matches!(self, Failure::Http(f) if f.is_connection_level())
    }

    pub(crate) fn into_pull_error(self, image: &str, registry: &str, attempts: u32) -> PullError {
        let (image, registry) = (image.to_string(), registry.to_string());
        let f = match self {
            Failure::Http(f) => f,
            Failure::Digest(detail) => {
                return PullError::DigestMismatch {
                    image,
                    registry,
                    detail,
                }
            }
        };
        let detail = f.detail;
        match f.kind {
            FailureKind::Certificate { clock_suspect } => PullError::Certificate {
                image,
                registry,
                detail,
                clock_suspect,
            },
            FailureKind::Tls => PullError::Tls {
                image,
                registry,
                detail,
            },
            // A registry that keeps answering 429 is as good as unreachable:
            // `--pull=always` then uses a stored image.
            FailureKind::Transport | FailureKind::Server | FailureKind::TooManyRequests => {
                PullError::Unreachable {
                    image,
                    registry,
                    attempts,
                    detail,
                }
            }
            FailureKind::NotFound => PullError::NotFound {
                image,
                registry,
                detail,
            },
            FailureKind::Denied => PullError::Denied {
                image,
                registry,
                detail,
            },
            FailureKind::Other => PullError::Registry {
                image,
                registry,
                detail,
            },
        }
    }
}

impl From<http::Failure> for Failure {
    fn from(f: http::Failure) -> Failure {
        Failure::Http(f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Http(e) => e.fmt(f),
            Failure::Digest(d) => f.write_str(d),
        }
    }
}

impl Retryable for Failure {
    fn retryable(&self) -> bool {
        Failure::retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Http(f) => f.retry_after,
            Failure::Digest(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts_insecure(entries: &[&str]) -> RegistryOptions {
        RegistryOptions {
            insecure_registries: entries.iter().map(|s| s.to_string()).collect(),
            ..RegistryOptions::default()
        }
    }

    #[test]
    fn insecure_entries_match_host_any_port_or_exact_port() {
        let o = opts_insecure(&["10.0.0.1", "Reg.Test:5000", "[fd00::1]:443", "docker.io"]);
        assert!(o.is_insecure("10.0.0.1"));
        assert!(o.is_insecure("10.0.0.1:5000"));
        assert!(!o.is_insecure("10.0.0.11"));
        assert!(o.is_insecure("reg.test:5000"));
        assert!(!o.is_insecure("reg.test:5001"));
        assert!(!o.is_insecure("reg.test"));
        assert!(o.is_insecure("[fd00::1]:443"));
        assert!(!o.is_insecure("[fd00::1]:444"));
        assert!(o.is_insecure("index.docker.io"));
        assert!(!RegistryOptions::default().is_insecure("10.0.0.1"));
    }

    #[test]
    fn mirrors_match_docker_hub_aliases_and_keep_order() {
        let o = RegistryOptions {
            mirrors: vec![
                ("docker.io".into(), "m1.test:5000".into()),
                ("quay.io".into(), "m2.test".into()),
                ("index.docker.io".into(), "m3.test/hub/".into()),
                ("reg.test:5000".into(), "m4.test".into()),
            ],
            ..RegistryOptions::default()
        };
        o.validate().unwrap();
        let hosts = |r: &str| -> Vec<String> {
            o.mirrors_of(r)
                .unwrap()
                .iter()
                .map(|m| m.to_string())
                .collect()
        };
        // oci-spec folds index.docker.io into docker.io when parsing, and
        // resolves docker.io to index.docker.io for requests.
        let alpine: Reference = "index.docker.io/alpine".parse().unwrap();
        assert_eq!(alpine.registry(), "docker.io");
        assert_eq!(alpine.resolve_registry(), "index.docker.io");
        assert_eq!(hosts(alpine.registry()), ["m1.test:5000", "m3.test/hub"]);
        assert_eq!(
            hosts("registry-1.docker.io"),
            ["m1.test:5000", "m3.test/hub"]
        );
        assert_eq!(hosts("reg.test:5000"), ["m4.test"]);
        assert!(hosts("reg.test").is_empty());

        let m = o.mirrors_of("docker.io").unwrap();
        let r = m[0].reference(&alpine);
        assert_eq!(r.whole(), "m1.test:5000/library/alpine:latest");
        assert_eq!(r.resolve_registry(), "m1.test:5000");
        let pinned: Reference = format!("quay.io/a/b:v1@sha256:{}", "0".repeat(64))
            .parse()
            .unwrap();
        let r = m[1].reference(&pinned);
        assert_eq!(
            r.whole(),
            format!("m3.test/hub/a/b:v1@sha256:{}", "0".repeat(64))
        );
    }

    #[test]
    fn bad_settings_name_their_option() {
        let bad = |o: RegistryOptions| o.validate().unwrap_err().to_string();
        let mirror = |m: &str| RegistryOptions {
            mirrors: vec![("docker.io".into(), m.into())],
            ..RegistryOptions::default()
        };
        assert!(bad(mirror("http://m.test")).contains("b2c.registry_mirror"));
        assert!(bad(mirror("m.test//x")).contains("b2c.registry_mirror"));
        assert!(bad(mirror("")).contains("b2c.registry_mirror"));
        let proxy = |u: &str| RegistryOptions {
            proxy: Proxy {
                https: Some(u.into()),
                ..Proxy::default()
            },
            ..RegistryOptions::default()
        };
        proxy("proxy.test:3128").validate().unwrap();
        proxy("http://u:p@proxy.test:3128/").validate().unwrap();
        let msg = bad(proxy("socks5://joe:hunter2@proxy.test:1080"));
        assert!(
            msg.contains("b2c.proxy") && msg.contains("proxy.test:1080"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2") && !msg.contains("joe"), "{msg}");
        let msg = bad(proxy("http://joe:hunter2@proxy.test:31x"));
        assert!(
            msg.contains("invalid port") && !msg.contains("hunter2"),
            "{msg}"
        );
    }
}
