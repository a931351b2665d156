//! The reqwest client and one GET with it.

use reqwest::{Certificate, Client, NoProxy, Url};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::failure::{redact, Failure};
use super::FetchOptions;

pub(super) fn parse_url(url: &str) -> Result<Url, Failure> {
    let parsed = Url::parse(url).map_err(|e| Failure::fatal(format!("not a valid URL: {e}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(Failure::fatal(format!(
            "unsupported scheme {other:?} (http or https only)"
        ))),
    }
}

pub(super) fn build(opts: &FetchOptions) -> Result<Client, Failure> {
    // reqwest is built without a default crypto provider; another crate may
    // have installed ring already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = Client::builder()
        // Only b2c.proxy counts, not whatever the environment says.
        .no_proxy()
        .tls_certs_only(roots(&opts.extra_ca_pem)?)
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout)
        .user_agent(concat!("b2c/", env!("CARGO_PKG_VERSION")));
    let no_proxy = opts
        .proxy
        .no_proxy
        .as_deref()
        .and_then(NoProxy::from_string);
    let bad_proxy = |url: &str, e: reqwest::Error| {
        Failure::fatal(format!(
            "b2c.proxy {}: {}",
            redact(url),
            super::failure::chain(&e.without_url())
        ))
    };
    if let Some(url) = &opts.proxy.http {
        let proxy = reqwest::Proxy::http(url.as_str()).map_err(|e| bad_proxy(url, e))?;
        builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
    }
    if let Some(url) = &opts.proxy.https {
        let proxy = reqwest::Proxy::https(url.as_str()).map_err(|e| bad_proxy(url, e))?;
        builder = builder.proxy(proxy.no_proxy(no_proxy));
    }
    builder.build().map_err(|e| {
        Failure::fatal(format!(
            "setting up the HTTP client: {}",
            super::failure::chain(&e)
        ))
    })
}

fn roots(extra_pem: &[Vec<u8>]) -> Result<Vec<Certificate>, Failure> {
    let der = |bytes: &[u8]| {
        Certificate::from_der(bytes).map_err(|e| Failure::fatal(format!("a CA certificate: {e}")))
    };
    let mut roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| der(c.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pem) in extra_pem.iter().enumerate() {
        // reqwest's own PEM loader keeps only the first certificate of a
        // bundle: split it here.
        let before = roots.len();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| Failure::fatal(format!("CA certificate file #{}: {e}", i + 1)))?;
            roots.push(der(cert.as_ref())?);
        }
        if roots.len() == before {
            return Err(Failure::fatal(format!(
                "CA certificate file #{} holds no PEM certificate",
                i + 1
            )));
        }
    }
    Ok(roots)
}

/// One attempt. The URL's credentials, if any, become basic auth (reqwest
/// does that).
pub(super) async fn get(client: &Client, url: &Url, max_size: usize) -> Result<Vec<u8>, Failure> {
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(Failure::transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::status(status));
    }
    let too_big = || Failure::fatal(format!("the body is larger than {max_size} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > max_size as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::transport)? {
        if body.len() + chunk.len() > max_size {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
