//! Reaching registries: TLS roots, HTTP clients, classification of failures
//! and the retry policy.

pub(crate) use b2c_system::error_chain::error_chain;
use b2c_system::error_chain::find_in_chain;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use oci_client::client::{
    current_platform_resolver, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::{Client, Reference};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

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
    /// Extra trusted CAs (PEM, possibly several certificates per entry),
    /// trusted in addition to the bundled webpki roots.
    pub extra_ca_pem: Vec<Vec<u8>>,
    pub retry: RetryPolicy,
    /// `b2c.proxy`. `None`: direct connections.
    pub proxy: Option<ProxyOptions>,
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
    /// then the registry itself; see [`crate::pull`].
    pub mirrors: Vec<(String, String)>,
    /// `--platform`/`--arch`/`--os`/`--variant`: the manifest of an image
    /// index to take; this machine's by default.
    pub platform: b2c_cmdline::Platform,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            extra_ca_pem: Vec::new(),
            retry: RetryPolicy::default(),
            proxy: None,
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            platform: b2c_cmdline::Platform::default(),
        }
    }
}

/// `b2c.proxy`: proxy URLs (`http://[user:password@]host:port`; without a
/// scheme, `http://` is assumed) for requests to `http://` and `https://`
/// registries, and hosts that bypass them. HTTPS goes through the proxy
/// with `CONNECT`. Credentials are sent to the proxy and never shown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Proxy for plain-HTTP registries (insecure ones).
    pub http: Option<String>,
    /// Proxy for HTTPS registries: the usual case.
    pub https: Option<String>,
    /// Comma-separated hosts reached directly, curl-style: `example.com`
    /// (and its subdomains), `.example.com`, IP addresses, CIDR networks
    /// (`10.0.0.0/8`), `*` for every host name.
    pub no_proxy: Option<String>,
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
        if let Some(p) = &self.proxy {
            for url in [&p.http, &p.https].into_iter().flatten() {
                ProxyUrl::parse(url)?;
            }
        }
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

    /// Credentials of the proxy URLs, to be kept out of messages.
    fn secrets(&self) -> Vec<String> {
        let Some(p) = &self.proxy else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for url in [&p.http, &p.https].into_iter().flatten() {
            if let Some(userinfo) = ProxyUrl::split(url).userinfo {
                out.push(userinfo.to_string());
                out.push(percent_decode(userinfo));
                if let Some((_, password)) = userinfo.split_once(':') {
                    out.push(password.to_string());
                    out.push(percent_decode(password));
                }
            }
        }
        out.retain(|s| !s.is_empty());
        // Longest first, so that a password inside the userinfo does not
        // leave the user name behind.
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out.dedup();
        out
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

/// `host[:port]`, IPv6 literals in brackets (`[::1]:5000`); a bare IPv6
/// address has no port.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (s, None),
    }
}

/// A proxy URL taken apart just enough to show it without its credentials.
struct ProxyUrl<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host_port: &'a str,
}

impl<'a> ProxyUrl<'a> {
    fn split(url: &'a str) -> ProxyUrl<'a> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let authority = rest.split('/').next().unwrap_or("");
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        ProxyUrl {
            scheme,
            userinfo,
            host_port,
        }
    }

    fn parse(url: &'a str) -> Result<ProxyUrl<'a>, PullError> {
        let p = ProxyUrl::split(url);
        let shown = p.to_string();
        let bad = |why: String| PullError::BadOption {
            option: "b2c.proxy",
            detail: format!("proxy {shown}: {why}"),
        };
        if !matches!(p.scheme, "http" | "https") {
            return Err(bad(format!(
                "unsupported scheme {:?} (http or https)",
                p.scheme
            )));
        }
        let (host, port) = split_host_port(p.host_port);
        if host.is_empty() || host.contains(' ') {
            return Err(bad("no host".into()));
        }
        if port.is_some_and(|port| port.parse::<u16>().is_err()) {
            return Err(bad("invalid port".into()));
        }
        Ok(p)
    }
}

impl fmt::Display for ProxyUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host_port)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether curl-style `no_proxy` lists `host`, by the rules reqwest (hyper-
/// util) applies: IP entries and CIDR networks match addresses; `*`, names
/// and `.names` match host names and their subdomains.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host.parse::<IpAddr>().ok();
    list.split(',').map(str::trim).any(|entry| {
        let net = cidr(entry);
        let addr = entry.parse::<IpAddr>().ok();
        match ip {
            Some(ip) => match (net, addr) {
                (Some((net, len)), _) => in_network(ip, net, len),
                (None, Some(a)) => a == ip,
                (None, None) => false,
            },
            None if net.is_some() || addr.is_some() || entry.is_empty() => false,
            None => {
                let name = entry.strip_prefix('.').unwrap_or(entry);
                entry == "*"
                    || name.eq_ignore_ascii_case(host)
                    || (host.len() > name.len()
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.'
                        && host[host.len() - name.len()..].eq_ignore_ascii_case(name))
            }
        }
    })
}

fn cidr(entry: &str) -> Option<(IpAddr, u8)> {
    let (net, len) = entry.split_once('/')?;
    let net = net.parse::<IpAddr>().ok()?;
    let len = len.parse::<u8>().ok()?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((net, len))
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
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
    /// The proxy this endpoint's requests to the registry go through, as
    /// shown to users (no credentials).
    proxy: Option<String>,
    /// Proxy credentials, scrubbed from every message.
    secrets: Vec<String>,
}

impl Endpoint {
    /// Classifies an error from this endpoint's client.
    pub(crate) fn classify(&self, e: &OciDistributionError) -> Failure {
        self.explain(classify(e))
    }

    pub(crate) fn classify_io(&self, e: &std::io::Error) -> Failure {
        self.explain(classify_io(e))
    }

    /// Keeps proxy credentials out of the message and, when the registry was
    /// not reached, names the proxy: reqwest's errors only name the
    /// registry's URL, even when it was the proxy that could not be reached.
    fn explain(&self, f: Failure) -> Failure {
        let via = match &self.proxy {
            Some(p) if f.is_connection_level() => Some(p.as_str()),
            _ => None,
        };
        f.map_detail(|d| {
            let d = scrub(d, &self.secrets);
            match via {
                Some(p) => format!("{d} (through proxy {p}, from b2c.proxy)"),
                None => d,
            }
        })
    }
}

/// The endpoints to try, in order. With verification on there is one
/// (HTTPS, bundled roots + extra CAs). Without, as podman does: HTTPS
/// accepting any certificate, then plain HTTP; the first that answers at
/// all is used for the whole pull.
pub(crate) fn endpoints(
    opts: &RegistryOptions,
    registry: &str,
    verify: bool,
) -> Result<Vec<Endpoint>, PullError> {
    // An initramfs has no OS certificate store and reqwest is built without
    // a default provider: ring, once, here. Another crate having installed
    // a provider already is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let roots = root_certificates(&opts.extra_ca_pem)?;
    let secrets = opts.secrets();
    let proxies = Proxies::new(opts.proxy.as_ref());
    let endpoint = |config: ClientConfig, scheme: &'static str| {
        let config = proxies.apply(config);
        // Not `Client::new`: on a bad config it logs and silently falls
        // back to a default client (OS roots, no timeouts).
        let client = Client::try_from(config).map_err(|e| PullError::Client {
            detail: scrub(error_chain(&e), &secrets),
        })?;
        Ok(Endpoint {
            client,
            scheme,
            proxy: proxies.used_for(scheme, registry),
            secrets: secrets.clone(),
        })
    };
    let https = |verify: bool| ClientConfig {
        protocol: ClientProtocol::Https,
        accept_invalid_certificates: !verify,
        tls_certs_only: roots.clone(),
        ..base_config()
    };
    let mut out = Vec::new();
    if verify {
        out.push(endpoint(https(true), "https")?);
    } else {
        out.push(endpoint(https(false), "https")?);
        out.push(endpoint(
            ClientConfig {
                protocol: ClientProtocol::HttpsExcept(vec![registry.to_string()]),
                tls_certs_only: roots.clone(),
                ..base_config()
            },
            "http",
        )?);
    }
    Ok(out)
}

/// The proxy settings given to oci-client (and so to reqwest).
struct Proxies {
    http: Option<String>,
    https: Option<String>,
    no_proxy: Option<String>,
    /// No proxy configured: reqwest must still be given one, or it reads
    /// `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` from the
    /// environment. A proxy that every host bypasses turns that off.
    none: bool,
}

/// Never contacted: every host is in [`BYPASS_ALL`].
const UNUSED_PROXY: &str = "http://127.0.0.1:9";
/// `*` matches host names only; addresses need the networks.
const BYPASS_ALL: &str = "*,0.0.0.0/0,::/0";

impl Proxies {
    fn new(opts: Option<&ProxyOptions>) -> Proxies {
        let url = |u: &Option<String>| {
            u.as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
        };
        let (http, https) = opts
            .map(|p| (url(&p.http), url(&p.https)))
            .unwrap_or_default();
        let no_proxy = opts
            .and_then(|p| p.no_proxy.as_deref())
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from);
        Proxies {
            none: http.is_none() && https.is_none(),
            http,
            https,
            no_proxy,
        }
    }

    fn apply(&self, config: ClientConfig) -> ClientConfig {
        if self.none {
            return ClientConfig {
                https_proxy: Some(UNUSED_PROXY.into()),
                no_proxy: Some(BYPASS_ALL.into()),
                ..config
            };
        }
        ClientConfig {
            http_proxy: self.http.clone(),
            https_proxy: self.https.clone(),
            no_proxy: self.no_proxy.clone(),
            ..config
        }
    }

    /// The proxy (shown without credentials) that requests with `scheme` to
    /// `registry` go through, if any.
    fn used_for(&self, scheme: &str, registry: &str) -> Option<String> {
        let url = match scheme {
            "http" => self.http.as_deref()?,
            _ => self.https.as_deref()?,
        };
        let (host, _) = split_host_port(registry);
        if self
            .no_proxy
            .as_deref()
            .is_some_and(|n| no_proxy_matches(n, host))
        {
            return None;
        }
        Some(ProxyUrl::split(url).to_string())
    }
}

/// `text` with every secret replaced by `***`.
pub(crate) fn scrub(mut text: String, secrets: &[String]) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), "***");
        }
    }
    text
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
    /// Content that does not hash to its digest: never retried, and never
    /// a reason to try elsewhere.
    Digest(String),
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

    fn map_detail(self, f: impl FnOnce(String) -> String) -> Failure {
        match self {
            Failure::Certificate {
                detail,
                clock_suspect,
            } => Failure::Certificate {
                detail: f(detail),
                clock_suspect,
            },
            Failure::Tls(d) => Failure::Tls(f(d)),
            Failure::Transport(d) => Failure::Transport(f(d)),
            Failure::Server(d) => Failure::Server(f(d)),
            Failure::NotFound(d) => Failure::NotFound(f(d)),
            Failure::Denied(d) => Failure::Denied(f(d)),
            Failure::Digest(d) => Failure::Digest(f(d)),
            Failure::Other(d) => Failure::Other(f(d)),
        }
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
            Failure::Digest(detail) => PullError::DigestMismatch {
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
            | Failure::Digest(d)
            | Failure::Other(d) => f.write_str(d),
        }
    }
}

fn classify(e: &OciDistributionError) -> Failure {
    let detail = error_chain(e);
    if is_digest_mismatch(e) {
        return Failure::Digest(detail);
    }
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
fn classify_io(e: &std::io::Error) -> Failure {
    if let Some(f) = certificate_failure(e) {
        return f;
    }
    let detail = error_chain(e);
    if is_digest_mismatch(e) {
        Failure::Digest(detail)
    } else if find_in_chain::<oci_client::errors::DigestError>(e).is_some() {
        Failure::Other(detail)
    } else {
        Failure::Transport(detail)
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
            proxy: Some(ProxyOptions {
                https: Some(u.into()),
                ..ProxyOptions::default()
            }),
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
    fn proxy_credentials_are_scrubbed() {
        let o = RegistryOptions {
            proxy: Some(ProxyOptions {
                http: Some("http://joe:p%40ss@proxy.test:3128".into()),
                https: Some("http://joe:p%40ss@proxy.test:3128".into()),
                no_proxy: None,
            }),
            ..RegistryOptions::default()
        };
        let secrets = o.secrets();
        let text = "x http://joe:p%40ss@proxy.test y p@ss z".to_string();
        assert_eq!(scrub(text, &secrets), "x http://***@proxy.test y *** z");
        assert_eq!(
            ProxyUrl::split("http://joe:p%40ss@proxy.test:3128/").to_string(),
            "http://proxy.test:3128"
        );
        assert_eq!(
            ProxyUrl::split("proxy.test:3128").to_string(),
            "http://proxy.test:3128"
        );
    }

    #[test]
    fn no_proxy_follows_curl_rules() {
        let list = "example.com, .corp.test,10.0.0.0/8, 192.168.1.7,::1";
        assert!(no_proxy_matches(list, "example.com"));
        assert!(no_proxy_matches(list, "reg.example.com"));
        assert!(!no_proxy_matches(list, "notexample.com"));
        assert!(no_proxy_matches(list, "corp.test"));
        assert!(no_proxy_matches(list, "a.corp.test"));
        assert!(no_proxy_matches(list, "10.42.0.1"));
        assert!(!no_proxy_matches(list, "11.0.0.1"));
        assert!(no_proxy_matches(list, "192.168.1.7"));
        assert!(no_proxy_matches(list, "[::1]"));
        assert!(no_proxy_matches("*", "anything.test"));
        assert!(!no_proxy_matches("*", "127.0.0.1"));
        assert!(no_proxy_matches(BYPASS_ALL, "127.0.0.1"));
        assert!(no_proxy_matches(BYPASS_ALL, "[fd00::1]"));
        assert!(no_proxy_matches(BYPASS_ALL, "registry.test"));
        assert!(!no_proxy_matches("", "registry.test"));

        let p = Proxies::new(Some(&ProxyOptions {
            http: None,
            https: Some("http://u:p@proxy.test:3128".into()),
            no_proxy: Some("10.0.0.0/8".into()),
        }));
        assert_eq!(
            p.used_for("https", "reg.test:5000").as_deref(),
            Some("http://proxy.test:3128")
        );
        assert_eq!(p.used_for("https", "10.0.0.1:5000"), None);
        assert_eq!(p.used_for("http", "reg.test:5000"), None);
        assert!(Proxies::new(None).none);
    }

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
