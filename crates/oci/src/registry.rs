//! How to reach registries ([`RegistryOptions`]: trust, proxies, insecure
//! registries, mirrors, credentials, retries), and registry failures mapped
//! into [`PullError`]s. The protocol itself is in [`crate::client`].

use std::fmt;
use std::time::Duration;

use b2c_cmdline::{Mirror, Proxy, Registries};
use b2c_net::http::{self, FailureKind, MinProgress, Proxies, RetryPolicy, Retryable, Trust};
use oci_spec::distribution::Reference;

use crate::authfile::Credential;
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
    /// `b2c.insecure_registry` (registries pulled as with `tls_verify:
    /// false`) and `b2c.registry_mirror` (several mirrors of a registry are
    /// tried in order, then the registry itself; see [`crate::pull`]; a mirror gets at most 3
    /// of `retry`'s attempts before the next source is tried).
    pub registries: Registries,
    /// `--creds` and `--authfile`: presented (HTTP Basic, or to get a
    /// Bearer token) to the registries they cover, the most specific
    /// scope first; anonymous elsewhere. The passwords are scrubbed from
    /// every message.
    pub credentials: Vec<Credential>,
    /// `--platform`/`--arch`/`--os`/`--variant`: the manifest of an image
    /// index to take; this machine's by default.
    pub platform: b2c_cmdline::Platform,
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
            registries: Registries::default(),
            credentials: Vec::new(),
            platform: b2c_cmdline::Platform::default(),
        }
    }
}

impl RegistryOptions {
    /// Checks the proxy settings, so that mistakes can be reported before
    /// anything is pulled ([`crate::pull`] checks too); mirrors and
    /// insecure registries were checked when the command line was parsed.
    pub fn validate(&self) -> Result<(), PullError> {
        self.proxies()?;
        Ok(())
    }

    /// The registry passwords, kept out of every message.
    pub(crate) fn passwords(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .credentials
            .iter()
            .map(|c| c.password.clone())
            .filter(|p| !p.is_empty())
            .collect();
        // Longest first, so that a password inside another is not left half.
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }

    /// `b2c.proxy`, checked.
    pub(crate) fn proxies(&self) -> Result<Proxies, PullError> {
        Proxies::new(&self.proxy).map_err(|e| PullError::BadOption {
            option: "b2c.proxy",
            detail: e.to_string(),
        })
    }
}

/// The reference to fetch from `mirror` for `origin`.
pub(crate) fn mirror_reference(mirror: &Mirror, origin: &Reference) -> Reference {
    let repository = mirror.repository(origin.repository());
    let registry = mirror.host.clone();
    match (origin.tag(), origin.digest()) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest").into()),
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
    use crate::authfile::credential_for;

    #[test]
    fn mirror_references_keep_tag_and_digest() {
        let mut registries = Registries::default();
        registries.add_mirror("docker.io=m1.test:5000").unwrap();
        registries.add_mirror("quay.io=m3.test/hub").unwrap();
        // oci-spec folds index.docker.io into docker.io when parsing, and
        // resolves docker.io to index.docker.io for requests.
        let alpine: Reference = "index.docker.io/alpine".parse().unwrap();
        assert_eq!(alpine.registry(), "docker.io");
        assert_eq!(alpine.resolve_registry(), "index.docker.io");
        let m = registries.mirrors_of(alpine.registry());
        let r = mirror_reference(m[0], &alpine);
        assert_eq!(r.whole(), "m1.test:5000/library/alpine:latest");
        assert_eq!(r.resolve_registry(), "m1.test:5000");
        let pinned: Reference = format!("quay.io/a/b:v1@sha256:{}", "0".repeat(64))
            .parse()
            .unwrap();
        let r = mirror_reference(registries.mirrors_of("quay.io")[0], &pinned);
        assert_eq!(
            r.whole(),
            format!("m3.test/hub/a/b:v1@sha256:{}", "0".repeat(64))
        );
    }

    #[test]
    fn registry_credentials_are_presented_where_they_belong() {
        let o = RegistryOptions {
            credentials: vec![Credential {
                scope: "registry.test:5002".into(),
                username: "b2c".into(),
                password: "s3cr3t".into(),
            }],
            ..RegistryOptions::default()
        };
        let auth_for = |registry| credential_for(&o.credentials, registry, "b2c/busybox");
        assert!(matches!(
            auth_for("registry.test:5002"),
            Some(Credential { username, password, .. }) if username == "b2c" && password == "s3cr3t"
        ));
        assert!(auth_for("registry.test:5000").is_none());
        assert_eq!(o.passwords(), ["s3cr3t"]);
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_settings_name_their_option() {
        let bad = |o: RegistryOptions| o.validate().unwrap_err().to_string();
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
