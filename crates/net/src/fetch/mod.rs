//! HTTP(S) GET of small documents: `b2c.extra_args_url` and `--env-file URL`.
//!
//! Boot-time fetches meet servers that are still starting and links that
//! just came up, so transient failures are retried with backoff; answers
//! that will not change (a 404, a bad certificate) fail at once.

mod client;
mod failure;

use std::time::Duration;

use b2c_cmdline::Proxy;
use log::{debug, warn};

use crate::NetError;
use failure::{redact, Failure};

/// How to fetch. [`Default`] gives the boot-time settings.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// PEM files (each may hold several certificates) trusted in addition
    /// to the bundled webpki roots. The OS store is never used: an
    /// initramfs has none.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// `b2c.proxy`. Proxy variables in the environment are ignored.
    pub proxy: Proxy,
    /// Tries in all, including the first.
    pub attempts: u32,
    /// Pause before the first retry, doubled before each next one.
    pub retry_delay: Duration,
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
            extra_ca_pem: Vec::new(),
            proxy: Proxy::default(),
            // 3 tries over about 10 s: 3 s, then 6 s between them.
            attempts: 3,
            retry_delay: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_size: 4 << 20,
        }
    }
}

/// GETs `url` (http or https) and returns the body of a 2xx answer.
///
/// Connection failures, timeouts and 5xx answers (and 408/429, which ask
/// to come back later) are retried up to `opts.attempts` times in all, with
/// a warning each time; other answers and TLS failures are final. Errors
/// and warnings show the URL without its credentials.
pub async fn fetch(url: &str, opts: &FetchOptions) -> Result<Vec<u8>, NetError> {
    let shown = redact(url);
    let fail = |f: Failure, tries: u32| NetError::Fetch {
        url: shown.clone(),
        reason: if tries > 1 {
            format!("{} (after {tries} attempts)", f.reason)
        } else {
            f.reason
        },
        status: f.status,
    };
    let parsed = client::parse_url(url).map_err(|f| fail(f, 1))?;
    let http = client::build(opts).map_err(|f| fail(f, 1))?;
    let attempts = opts.attempts.max(1);
    let mut delay = opts.retry_delay;
    let mut tries = 1;
    loop {
        match client::get(&http, &parsed, opts.max_size).await {
            Ok(body) => {
                debug!("fetched {shown}: {} bytes", body.len());
                return Ok(body);
            }
            Err(f) if f.retryable && tries < attempts => {
                warn!(
                    "fetching {shown} failed ({}); retrying in {:.1} s (attempt {}/{attempts})",
                    f.reason,
                    delay.as_secs_f32(),
                    tries + 1
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
            Err(f) => return Err(fail(f, tries)),
        }
    }
}
