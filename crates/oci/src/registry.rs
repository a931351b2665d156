//! Reaching registries: TLS roots, HTTP clients, classification of failures
//! and the retry policy.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use oci_client::client::{
    current_platform_resolver, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::Client;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::PullError;

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// `false` is podman's `--tls-verify=false`: HTTPS without certificate
    /// verification, falling back to plain HTTP when the registry does not
    /// speak TLS.
    pub tls_verify: bool,
    /// Extra trusted CAs (PEM, possibly several certificates per entry),
    /// trusted in addition to the bundled webpki roots.
    pub extra_ca_pem: Vec<Vec<u8>>,
    pub retry: RetryPolicy,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            extra_ca_pem: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }
}

/// How often transient registry failures (connection errors, timeouts, 5xx)
/// are retried. 4xx answers and certificate errors are never retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, waiting 2 s then 4 s: about 10 s with the requests.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, failed_attempt: u32) -> Duration {
        self.first_delay * 2u32.saturating_pow(failed_attempt.saturating_sub(1))
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A stalled body (no byte for this long) fails the attempt, which is then
/// retried, rather than hanging the boot.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One way of talking to the registry: a client and the scheme it uses.
pub(crate) struct Endpoint {
    pub(crate) client: Client,
    pub(crate) scheme: &'static str,
}

/// The endpoints to try, in order. With verification on there is one
/// (HTTPS, bundled roots + extra CAs). Without, as podman does: HTTPS
/// accepting any certificate, then plain HTTP; the first that answers at
/// all is used for the whole pull.
pub(crate) fn endpoints(
    opts: &RegistryOptions,
    registry: &str,
) -> Result<Vec<Endpoint>, PullError> {
    // An initramfs has no OS certificate store and reqwest is built without
    // a default provider: ring, once, here. Another crate having installed
    // a provider already is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let roots = root_certificates(&opts.extra_ca_pem)?;
    let https = |verify: bool| ClientConfig {
        protocol: ClientProtocol::Https,
        accept_invalid_certificates: !verify,
        tls_certs_only: roots.clone(),
        ..base_config()
    };
    let mut out = Vec::new();
    if opts.tls_verify {
        out.push(endpoint(https(true), "https")?);
    } else {
        out.push(endpoint(https(false), "https")?);
        out.push(endpoint(
            ClientConfig {
                protocol: ClientProtocol::HttpsExcept(vec![registry.to_string()]),
                tls_certs_only: roots,
                ..base_config()
            },
            "http",
        )?);
    }
    Ok(out)
}

fn base_config() -> ClientConfig {
    ClientConfig {
        platform_resolver: Some(Box::new(current_platform_resolver)),
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: concat!("b2c/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    }
}

fn endpoint(config: ClientConfig, scheme: &'static str) -> Result<Endpoint, PullError> {
    // Not `Client::new`: on a bad config it logs and silently falls back to
    // a default client (OS roots, no timeouts).
    let client = Client::try_from(config).map_err(|e| PullError::Client {
        detail: error_chain(&e),
    })?;
    Ok(Endpoint { client, scheme })
}

fn root_certificates(extra_pem: &[Vec<u8>]) -> Result<Vec<Certificate>, PullError> {
    let der = |data: &[u8]| Certificate {
        encoding: CertificateEncoding::Der,
        data: data.to_vec(),
    };
    let mut roots: Vec<Certificate> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| der(c.as_ref()))
        .collect();
    for (i, pem) in extra_pem.iter().enumerate() {
        // reqwest's PEM loader keeps only the first certificate of a bundle:
        // split bundles here and hand over DER.
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| PullError::CaCert {
                detail: format!("certificate file #{}: {e}", i + 1),
            })?;
            roots.push(der(cert.as_ref()));
            found += 1;
        }
        if found == 0 {
            return Err(PullError::CaCert {
                detail: format!("certificate file #{} holds no PEM certificate", i + 1),
            });
        }
    }
    Ok(roots)
}

/// A registry failure, sorted by what to do about it.
#[derive(Debug)]
pub(crate) enum Failure {
    Certificate {
        detail: String,
        clock_suspect: bool,
    },
    /// Any other TLS failure: not transient (typically a plain HTTP
    /// registry), so not retried.
    Tls(String),
    /// Connection refused/reset, timeouts, truncated bodies: retried.
    Transport(String),
    /// 5xx: retried.
    Server(String),
    NotFound(String),
    Denied(String),
    Other(String),
}

impl Failure {
    pub(crate) fn retryable(&self) -> bool {
        matches!(self, Failure::Transport(_) | Failure::Server(_))
    }

    /// Whether a different endpoint (HTTP after HTTPS) might do better: the
    /// registry was not talked to at all.
    pub(crate) fn is_connection_level(&self) -> bool {
        matches!(
            self,
            Failure::Transport(_) | Failure::Certificate { .. } | Failure::Tls(_)
        )
    }

    pub(crate) fn into_pull_error(self, image: &str, registry: &str, attempts: u32) -> PullError {
        let (image, registry) = (image.to_string(), registry.to_string());
        match self {
            Failure::Certificate {
                detail,
                clock_suspect,
            } => PullError::Certificate {
                image,
                registry,
                detail,
                clock_suspect,
            },
            Failure::Tls(detail) => PullError::Tls {
                image,
                registry,
                detail,
            },
            Failure::Transport(detail) | Failure::Server(detail) => PullError::Unreachable {
                image,
                registry,
                attempts,
                detail,
            },
            Failure::NotFound(detail) => PullError::NotFound {
                image,
                registry,
                detail,
            },
            Failure::Denied(detail) => PullError::Denied {
                image,
                registry,
                detail,
            },
            Failure::Other(detail) => PullError::Registry {
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
            Failure::Certificate { detail, .. } => write!(f, "certificate not verified: {detail}"),
            Failure::Tls(d)
            | Failure::Transport(d)
            | Failure::Server(d)
            | Failure::NotFound(d)
            | Failure::Denied(d)
            | Failure::Other(d) => f.write_str(d),
        }
    }
}

pub(crate) fn classify(e: &OciDistributionError) -> Failure {
    let detail = error_chain(e);
    match e {
        OciDistributionError::RequestError(re) => {
            if let Some(f) = certificate_failure(re) {
                return f;
            }
            match re.status() {
                Some(s) if s.is_server_error() => Failure::Server(detail),
                Some(s) if s.as_u16() == 404 => Failure::NotFound(detail),
                Some(s) if matches!(s.as_u16(), 401 | 403) => Failure::Denied(detail),
                Some(_) => Failure::Other(detail),
                None if re.is_builder() => Failure::Other(detail),
                None => Failure::Transport(detail),
            }
        }
        OciDistributionError::IoError(io) => classify_io(io),
        OciDistributionError::ServerError { code, .. } => match code {
            404 => Failure::NotFound(detail),
            401 | 403 => Failure::Denied(detail),
            500..=599 => Failure::Server(detail),
            _ => Failure::Other(detail),
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Failure::Denied(detail),
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
                Failure::NotFound(detail)
            } else if codes()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Failure::Denied(detail)
            } else {
                Failure::Other(detail)
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => Failure::NotFound(detail),
        _ => Failure::Other(detail),
    }
}

/// Errors from a blob body: oci-client wraps the transport error (or its
/// own digest verdict) in an `io::Error`.
pub(crate) fn classify_io(e: &std::io::Error) -> Failure {
    if let Some(f) = certificate_failure(e) {
        return f;
    }
    let detail = error_chain(e);
    if find_in_chain::<oci_client::errors::DigestError>(e).is_some() {
        Failure::Other(detail)
    } else {
        Failure::Transport(detail)
    }
}

fn certificate_failure(e: &(dyn StdError + 'static)) -> Option<Failure> {
    use rustls::CertificateError as C;
    match find_in_chain::<rustls::Error>(e)? {
        rustls::Error::InvalidCertificate(c) => Some(Failure::Certificate {
            detail: c.to_string(),
            clock_suspect: matches!(
                c,
                C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. }
            ),
        }),
        other => Some(Failure::Tls(other.to_string())),
    }
}

/// Finds an error of type `T` in a source chain. `io::Error` needs a special
/// case: its `source()` skips the error it wraps and returns *that* error's
/// source, so what it wraps is only reachable through `get_ref`. (A rustls
/// certificate error arrives as io::Error(Other, io::Error(InvalidData,
/// rustls::Error)) inside hyper-util's error inside reqwest's.)
fn find_in_chain<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}

/// An error and its sources on one line: reqwest's own message is just
/// "error sending request for url (…)", the useful part ("Connection
/// refused") is three sources down.
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let msg = err.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = err.source();
    }
    s
}

/// Runs `f` until it succeeds, fails for good, or the policy's attempts are
/// used up; says on the console what is retried. Returns the failure and
/// how many attempts were made.
pub(crate) async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &dyn fmt::Display,
    mut f: F,
) -> Result<T, (E, u32)>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() && attempt < policy.attempts.max(1) => {
                let delay = policy.delay(attempt);
                log::warn!(
                    "{what} failed ({e}); retrying in {:.1} s (attempt {}/{})",
                    delay.as_secs_f32(),
                    attempt + 1,
                    policy.attempts
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}

pub(crate) trait Retryable: fmt::Display {
    fn retryable(&self) -> bool;
}

impl Retryable for Failure {
    fn retryable(&self) -> bool {
        Failure::retryable(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_secs(2));
        assert_eq!(p.delay(2), Duration::from_secs(4));
    }

    #[test]
    fn pem_bundles_are_split() {
        assert!(matches!(
            root_certificates(&[b"not a pem".to_vec()]),
            Err(PullError::CaCert { .. })
        ));
        let base = root_certificates(&[]).unwrap().len();
        let one = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
        let pem = |der: &[u8]| {
            let b64 = base64_encode(der);
            let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                s.push_str(std::str::from_utf8(line).unwrap());
                s.push('\n');
            }
            s.push_str("-----END CERTIFICATE-----\n");
            s
        };
        let bundle = format!("{}{}", pem(one), pem(one));
        assert_eq!(
            root_certificates(&[bundle.into_bytes()]).unwrap().len(),
            base + 2
        );
    }

    fn base64_encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
