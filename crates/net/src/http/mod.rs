//! The one HTTP layer of b2c: what every client (`b2c.extra_args_url`,
//! `--env-file URL`, `b2c.ca_cert URL`, registries, S3) is made of.
//!
//! - [`Trust`]: the bundled webpki roots plus `b2c.ca_cert`, built once per
//!   boot ([`Trust::load`]) and handed to every client.
//! - [`Proxies`]: `b2c.proxy` as reqwest proxies; the environment's proxy
//!   variables are never used, proxy credentials never shown.
//! - [`with_retries`] and [`RetryPolicy`]: exponential backoff that honours
//!   a server's `Retry-After` (capped at [`MAX_RETRY_AFTER`]), bounded in
//!   attempts and, for registries, in time ([`RetryPolicy::for_time`]).
//! - [`Failure`]: one classification of what went wrong ([`FailureKind`]),
//!   [`redact`] for URLs with credentials.
//! - [`read_bounded`]: a body read bounded by size and by time;
//!   [`read_prefix`] for the start of an error body; [`deadline`] for an
//!   answer's headers; [`Progress`]: the minimum-progress rule
//!   ([`MinProgress`]) of a long download.
//! - [`client_builder`]: a reqwest client with all of b2c's settings.
//! - [`fetch`]: one small document, all of the above put together.
//!
//! The registry protocol (b2c-oci's `client.rs`) is built on these
//! pieces. Whatever a server sends goes into messages through
//! [`b2c_system::log::printable`]: escaped and cut short.

mod body;
mod failure;
mod proxy;
mod retry;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use b2c_cmdline::Proxy;
use log::debug;
use reqwest::{Client, Url};

use crate::NetError;

pub use body::{
    chunks, deadline, read_bounded, read_prefix, BodyError, BodyLimit, MinProgress, Progress,
};
pub use failure::{redact, Failure, FailureKind};
pub use proxy::{Proxies, ProxyError, ProxyFields};
pub use retry::{
    parse_http_date, parse_retry_after, with_retries, RetryPolicy, Retryable, MAX_RETRY_AFTER,
};
pub use trust::{Trust, TrustError};

pub const USER_AGENT: &str = concat!("b2c/", env!("CARGO_PKG_VERSION"));
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A stalled read (no byte for this long) fails the attempt, which is then
/// retried, rather than hanging the boot.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes ring rustls's crypto provider: reqwest is built
/// without a default one. Idempotent.
pub fn use_ring() {
    // Another crate having installed ring already is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How to [`fetch`]. [`Default`] gives the boot-time settings.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The bundled roots, and `b2c.ca_cert` once [`Trust::load`]ed.
    pub trust: Trust,
    /// `b2c.proxy`.
    pub proxy: Proxy,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// For one whole attempt, body included.
    pub timeout: Duration,
    /// Bodies beyond this are refused: the result is kept in memory, and
    /// these documents are a few kilobytes.
    pub max_size: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            trust: Trust::bundled(),
            proxy: Proxy::default(),
            // 3 tries over about 10 s: 3 s, then 6 s between them.
            retry: RetryPolicy {
                attempts: 3,
                first_delay: Duration::from_secs(3),
                ..RetryPolicy::default()
            },
            connect_timeout: CONNECT_TIMEOUT,
            timeout: Duration::from_secs(30),
            max_size: 4 << 20,
        }
    }
}

/// GETs `url` (http or https) and returns the body of a 2xx answer.
///
/// Connection failures, timeouts, 5xx, 408 and 429 answers are retried as
/// `opts.retry` says, with a warning each time (after the server's
/// `Retry-After`, if it sent one); other answers, TLS failures and a body
/// over `opts.max_size` are final. Errors and warnings show the URL
/// without its credentials, which become basic auth.
pub async fn fetch(url: &str, opts: &FetchOptions) -> Result<Vec<u8>, NetError> {
    let shown = redact(url);
    let fail = |f: Failure, tries: u32| NetError::Fetch {
        url: shown.clone(),
        reason: if tries > 1 {
            format!("{f} (after {tries} attempts)")
        } else {
            f.to_string()
        },
        status: f.status,
    };
    let parsed = parse_url(url).map_err(|f| fail(f, 1))?;
    let proxies = Proxies::new(&opts.proxy)
        .map_err(|e| fail(Failure::other(format!("b2c.proxy: {e}")), 1))?;
    let client = client(opts, &proxies).map_err(|f| fail(f, 1))?;
    let host = match parsed.port() {
        Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
        None => parsed.host_str().unwrap_or_default().to_string(),
    };
    let limit = BodyLimit {
        max_size: opts.max_size as u64,
        timeout: opts.timeout,
    };
    let what = format!("fetching {shown}");
    let body = with_retries(&opts.retry, &what, || async {
        get(&client, &parsed, limit)
            .await
            .map_err(|f| proxies.explain(f, parsed.scheme(), &host))
    })
    .await
    .map_err(|(f, tries)| fail(f, tries))?;
    debug!("fetched {shown}: {} bytes", body.len());
    Ok(body)
}

fn parse_url(url: &str) -> Result<Url, Failure> {
    let parsed = Url::parse(url).map_err(|e| {
        Failure::other(match e {
            // See idna_adapter in Cargo.toml.
            url::ParseError::IdnaError => "not a valid URL: its host name is not ASCII \
                 (write an international domain name in its xn-- form)"
                .to_string(),
            e => format!("not a valid URL: {e}"),
        })
    })?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(Failure::other(format!(
            "unsupported scheme {other:?} (http or https only)"
        ))),
    }
}

fn client(opts: &FetchOptions, proxies: &Proxies) -> Result<Client, Failure> {
    build_client(
        &opts.trust,
        proxies,
        opts.connect_timeout,
        Some(opts.timeout),
    )
}

/// A client for long transfers (S3 volumes): the boot's trust roots and
/// `b2c.proxy`, [`CONNECT_TIMEOUT`] and [`READ_TIMEOUT`] (a stalled
/// transfer fails and is retried), but no bound on a whole request, which
/// may carry gigabytes. Bodies are the caller's to stream.
pub fn transfer_client(trust: &Trust, proxy: &Proxy) -> Result<Client, Failure> {
    let proxies = Proxies::new(proxy).map_err(|e| Failure::other(format!("b2c.proxy: {e}")))?;
    build_client(trust, &proxies, CONNECT_TIMEOUT, None)
}

/// Every client of b2c but the registries' (which add `--tls-verify`):
/// these roots only (never the OS store), `b2c.proxy` only (never the
/// environment's), [`READ_TIMEOUT`], our user agent.
fn build_client(
    trust: &Trust,
    proxies: &Proxies,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<Client, Failure> {
    let mut builder = client_builder(trust, proxies, true)?.connect_timeout(connect_timeout);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    proxies
        .apply(builder)?
        .build()
        .map_err(|e| setup_failure(proxies, &e))
}

/// A reqwest client builder with b2c's settings: `trust`'s roots (or no
/// certificate verification at all when `verify` is false:
/// `--tls-verify=false`), [`CONNECT_TIMEOUT`], [`READ_TIMEOUT`],
/// [`USER_AGENT`]. Add `proxies` with [`Proxies::apply`] last.
pub fn client_builder(
    trust: &Trust,
    proxies: &Proxies,
    verify: bool,
) -> Result<reqwest::ClientBuilder, Failure> {
    use_ring();
    let builder = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT);
    Ok(if verify {
        builder.tls_backend_preconfigured(verifying_tls(trust).map_err(|e| {
            Failure::other(format!(
                "setting up the HTTP client: {}",
                proxies.scrub(e.to_string())
            ))
        })?)
    } else {
        builder.tls_danger_accept_invalid_certs(true)
    })
}

/// What reqwest would build from `tls_certs_only`, from the roots `trust`
/// parsed once rather than once per client.
fn verifying_tls(trust: &Trust) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .with_root_certificates(trust.store())
        .with_no_client_auth();
    // reqwest is built for HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// reqwest refused the settings (proxy secrets kept out).
pub fn setup_failure(proxies: &Proxies, e: &reqwest::Error) -> Failure {
    Failure::other(format!(
        "setting up the HTTP client: {}",
        proxies.scrub(b2c_system::error_chain::error_chain(e))
    ))
}

/// One attempt. The URL's credentials, if any, become basic auth (reqwest
/// does that).
async fn get(client: &Client, url: &Url, limit: BodyLimit) -> Result<Vec<u8>, Failure> {
    // reqwest's messages embed the URL, credentials and all.
    let transport = |e: reqwest::Error| Failure::from_error(&e.without_url());
    let response = client.get(url.clone()).send().await.map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::response(status, response.headers()));
    }
    let announced = response.content_length();
    read_bounded(body::chunks(response), announced, limit)
        .await
        .map_err(|e| e.into_failure(transport))
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn host_names_are_ascii_and_idns_are_written_in_their_xn_form() {
        let err = parse_url("https://例え.jp/extra-args").unwrap_err();
        assert!(err.detail.contains("xn--"), "{}", err.detail);
        let url = parse_url("https://xn--r8jz45g.jp/extra-args").unwrap();
        assert_eq!(url.host_str(), Some("xn--r8jz45g.jp"));
        assert!(parse_url("ftp://host/x")
            .unwrap_err()
            .detail
            .contains("http or https"));
    }
}
