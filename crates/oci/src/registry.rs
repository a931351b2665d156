//! Reaching registries: oci-client clients made from the HTTP layer's
//! pieces (trust roots, proxies, timeouts), and the layer's classification
//! of failures mapped into [`PullError`]s.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use b2c_cmdline::{Mirror, Proxy, Registries};
use b2c_net::http::{self, FailureKind, Proxies, RetryPolicy, Retryable, Trust};
use b2c_system::error_chain::{error_chain, find_in_chain};
use oci_client::client::{
    current_platform_resolver, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::authfile::{credential_for, Credential};
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
    pub retry: RetryPolicy,
    /// `b2c.proxy` (see [`Proxies`]); the default: direct connections.
    pub proxy: Proxy,
    /// `b2c.insecure_registry` (registries pulled as with `tls_verify:
    /// false`) and `b2c.registry_mirror` (several mirrors of a registry are
    /// tried in order, then the registry itself; see [`crate::pull`]).
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

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            trust: Trust::bundled(),
            retry: RetryPolicy::default(),
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

    /// What to present to the registry of `reference` (`--creds`,
    /// `--authfile`), or an anonymous pull.
    pub(crate) fn auth_for(&self, reference: &Reference) -> RegistryAuth {
        match credential_for(
            &self.credentials,
            reference.registry(),
            reference.repository(),
        ) {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The registry passwords, kept out of every message.
    fn passwords(&self) -> Vec<String> {
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
    fn proxies(&self) -> Result<Proxies, PullError> {
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

/// One way of talking to the registry: a client and the scheme it uses.
pub(crate) struct Endpoint {
    pub(crate) client: Client,
    pub(crate) scheme: &'static str,
    /// The registry (`host[:port]`), for messages about its proxy.
    registry: String,
    proxies: Proxies,
    passwords: Vec<String>,
}

impl Endpoint {
    /// Classifies an error from this endpoint's client.
    pub(crate) fn classify(&self, e: &OciDistributionError) -> Failure {
        self.explain(classify(e))
    }

    pub(crate) fn classify_io(&self, e: &std::io::Error) -> Failure {
        self.explain(classify_io(e))
    }

    /// `request`'s answer, classified, or a failure if it takes longer than
    /// `limit` (oci-client reads such bodies itself, with no bound of its
    /// own but the read timeout).
    pub(crate) async fn within<T>(
        &self,
        limit: Duration,
        request: impl std::future::Future<Output = Result<T, OciDistributionError>>,
    ) -> Result<T, Failure> {
        match http::deadline(limit, request).await {
            Ok(answer) => answer.map_err(|e| self.classify(&e)),
            Err(f) => Err(self.explain(Failure::Http(f))),
        }
    }

    /// Keeps proxy credentials out of the message and, when the registry was
    /// not reached, names the proxy.
    pub(crate) fn explain(&self, f: Failure) -> Failure {
        match f {
            Failure::Http(mut f) => {
                f.detail = self.scrub_passwords(f.detail);
                Failure::Http(self.proxies.explain(f, self.scheme, &self.registry))
            }
            Failure::Digest(d) => Failure::Digest(self.scrub_passwords(self.proxies.scrub(d))),
        }
    }

    fn scrub_passwords(&self, mut text: String) -> String {
        for p in &self.passwords {
            text = text.replace(p.as_str(), "***");
        }
        text
    }
}

/// The endpoints to try, in order. With verification on there is one
/// (HTTPS, `opts.trust`). Without, as podman does: HTTPS accepting any
/// certificate, then plain HTTP; the first that answers at all is used for
/// the whole pull.
pub(crate) fn endpoints(
    opts: &RegistryOptions,
    registry: &str,
    verify: bool,
) -> Result<Vec<Endpoint>, PullError> {
    http::use_ring();
    let proxies = opts.proxies()?;
    let fields = proxies.client_fields();
    // oci-client cannot be handed a reqwest client: it gets the pieces.
    let roots: Vec<Certificate> = opts
        .trust
        .certificates()
        .map(|der| Certificate {
            encoding: CertificateEncoding::Der,
            data: der.to_vec(),
        })
        .collect();
    let config = |protocol: ClientProtocol, verify: bool| ClientConfig {
        protocol,
        accept_invalid_certificates: !verify,
        tls_certs_only: roots.clone(),
        platform_resolver: Some(Box::new(current_platform_resolver)),
        connect_timeout: Some(http::CONNECT_TIMEOUT),
        read_timeout: Some(http::READ_TIMEOUT),
        user_agent: http::USER_AGENT,
        http_proxy: fields.http_proxy.clone(),
        https_proxy: fields.https_proxy.clone(),
        no_proxy: fields.no_proxy.clone(),
        ..ClientConfig::default()
    };
    let endpoint = |config: ClientConfig, scheme: &'static str| {
        // Not `Client::new`: on a bad config it logs and silently falls
        // back to a default client (OS roots, no timeouts).
        let client = Client::try_from(config).map_err(|e| PullError::Client {
            detail: proxies.scrub(error_chain(&e)),
        })?;
        Ok(Endpoint {
            client,
            scheme,
            registry: registry.to_string(),
            proxies: proxies.clone(),
            passwords: opts.passwords(),
        })
    };
    if verify {
        return Ok(vec![endpoint(
            config(ClientProtocol::Https, true),
            "https",
        )?]);
    }
    let plain = ClientProtocol::HttpsExcept(vec![registry.to_string()]);
    Ok(vec![
        endpoint(config(ClientProtocol::Https, false), "https")?,
        endpoint(config(plain, true), "http")?,
    ])
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

/// oci-client's errors sorted by the HTTP layer's kinds. oci-client keeps
/// no response headers: a registry's `Retry-After` is not seen, and 429s
/// are retried with the policy's backoff.
fn classify(e: &OciDistributionError) -> Failure {
    use http::Failure as F;
    let detail = error_chain(e);
    if is_digest_mismatch(e) {
        return Failure::Digest(detail);
    }
    Failure::Http(match e {
        OciDistributionError::RequestError(_) => F::from_error(e),
        OciDistributionError::IoError(io) => return classify_io(io),
        OciDistributionError::ServerError { code: 429, .. } => too_many_requests(detail),
        OciDistributionError::ServerError { code, .. } => F::status(*code, detail),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => F::new(FailureKind::Denied, detail),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes = || envelope.errors.iter().map(|e| &e.code);
            if codes().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                F::new(FailureKind::NotFound, detail)
            } else if codes()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                F::new(FailureKind::Denied, detail)
            } else if codes().any(|c| matches!(c, OciErrorCode::Toomanyrequests)) {
                too_many_requests(detail)
            } else {
                F::other(detail)
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            F::new(FailureKind::NotFound, detail)
        }
        _ => F::other(detail),
    })
}

/// oci-client's message does not always give the status (a `TOOMANYREQUESTS`
/// error envelope does not): say it.
fn too_many_requests(detail: String) -> http::Failure {
    http::Failure::status(429, format!("HTTP 429 Too Many Requests: {detail}"))
}

/// Errors from a blob body: oci-client wraps the transport error (or its
/// own digest verdict) in an `io::Error`.
fn classify_io(e: &std::io::Error) -> Failure {
    if is_digest_mismatch(e) {
        Failure::Digest(error_chain(e))
    } else if find_in_chain::<oci_client::errors::DigestError>(e).is_some() {
        Failure::other(error_chain(e))
    } else {
        Failure::Http(http::Failure::from_error(e))
    }
}

/// oci-client's verdict that a manifest or blob does not hash to the digest
/// it was asked for (or that the registry announced).
fn is_digest_mismatch(e: &(dyn StdError + 'static)) -> bool {
    matches!(
        find_in_chain::<oci_client::errors::DigestError>(e),
        Some(oci_client::errors::DigestError::VerificationError { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mine: Reference = "registry.test:5002/b2c/busybox:latest".parse().unwrap();
        let other: Reference = "registry.test:5000/b2c/busybox:latest".parse().unwrap();
        assert!(matches!(
            o.auth_for(&mine),
            RegistryAuth::Basic(u, p) if u == "b2c" && p == "s3cr3t"
        ));
        assert!(matches!(o.auth_for(&other), RegistryAuth::Anonymous));
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

    #[test]
    fn too_many_requests_is_retried_and_says_429() {
        let plain = OciDistributionError::ServerError {
            code: 429,
            url: "http://reg.test/v2/x/manifests/v1".into(),
            message: "slow down".into(),
        };
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}"#,
        )
        .unwrap();
        let enveloped = OciDistributionError::RegistryError {
            envelope,
            url: "http://reg.test/v2/x/manifests/v1".into(),
        };
        for e in [plain, enveloped] {
            let f = classify(&e);
            assert!(f.retryable(), "{f}");
            assert!(f.to_string().contains("429"), "{f}");
            let err = f.into_pull_error("reg.test/x:v1", "reg.test", 3);
            assert!(
                matches!(err, PullError::Unreachable { attempts: 3, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("429"), "{err}");
        }
    }

    #[test]
    fn status_answers_map_to_their_pull_errors() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "http://reg.test/v2/".into(),
            message: String::new(),
        };
        let pulled = |code| classify(&server(code)).into_pull_error("i", "r", 1);
        assert!(matches!(pulled(503), PullError::Unreachable { .. }));
        assert!(matches!(pulled(404), PullError::NotFound { .. }));
        assert!(matches!(pulled(403), PullError::Denied { .. }));
        assert!(matches!(pulled(400), PullError::Registry { .. }));
        assert!(classify(&server(503)).retryable());
        assert!(!classify(&server(404)).retryable());
        let io = std::io::Error::other(oci_client::errors::DigestError::VerificationError {
            expected: "sha256:aa".into(),
            actual: "sha256:bb".into(),
        });
        assert!(classify_io(&io)
            .into_pull_error("i", "r", 1)
            .is_digest_mismatch());
    }
}
