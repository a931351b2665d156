//! `b2c.proxy` for every client (fetches and registries): reqwest's
//! proxies.
//! Proxy variables of the environment are never used (the kernel hands init
//! the words of its command line it does not know as environment
//! variables); proxy credentials are sent to the proxy and never shown.

use std::net::IpAddr;

use b2c_cmdline::{split_host_port, Proxy, ProxyUrl};
use reqwest::{ClientBuilder, NoProxy};

use super::{Failure, FailureKind};

/// `b2c.proxy`, checked: proxy URLs (`http://[user:password@]host:port`;
/// without a scheme, `http://` is assumed) for `http://` and `https://`
/// requests (HTTPS goes through the proxy with `CONNECT`), and the hosts
/// that bypass them: comma-separated, curl-style, `example.com` (and its
/// subdomains), `.example.com`, IP addresses, CIDR networks (`10.0.0.0/8`),
/// `*` for every host name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxies {
    http: Option<String>,
    https: Option<String>,
    no_proxy: Option<String>,
    /// The credentials of the proxy URLs, as written and percent-decoded,
    /// longest first.
    secrets: Vec<String>,
}

/// The proxies of a client, as URLs: what [`Proxies::apply`] sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyFields {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

/// A `b2c.proxy` URL that cannot be used; the message shows it without its
/// credentials.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProxyError(String);

/// Never contacted: every host is in [`BYPASS_ALL`].
const UNUSED_PROXY: &str = "http://127.0.0.1:9";
/// `*` matches host names only; addresses need the networks.
const BYPASS_ALL: &str = "*,0.0.0.0/0,::/0";

impl Proxies {
    /// Checks the proxy URLs of `b2c.proxy`; empty ones count as none.
    pub fn new(p: &Proxy) -> Result<Proxies, ProxyError> {
        let setting = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let (http, https) = (setting(&p.http), setting(&p.https));
        let mut secrets = Vec::new();
        for url in [&http, &https].into_iter().flatten() {
            let url = ProxyUrl::parse(url).map_err(ProxyError)?;
            if let Some(userinfo) = url.userinfo {
                secrets.push(userinfo.to_string());
                secrets.push(percent_decode(userinfo));
                if let Some((_, password)) = userinfo.split_once(':') {
                    secrets.push(password.to_string());
                    secrets.push(percent_decode(password));
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        // Longest first, so that a password inside the userinfo does not
        // leave the user name behind.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Ok(Proxies {
            http,
            https,
            no_proxy: setting(&p.no_proxy),
            secrets,
        })
    }

    /// No proxy at all: every request goes direct.
    pub fn is_none(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxies [`Proxies::apply`] sets. Without a proxy, a proxy that
    /// every host bypasses (besides `no_proxy()`, belt and braces: reqwest
    /// must never read `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` or
    /// `NO_PROXY` from the environment).
    pub fn client_fields(&self) -> ProxyFields {
        if self.is_none() {
            return ProxyFields {
                http_proxy: None,
                https_proxy: Some(UNUSED_PROXY.into()),
                no_proxy: Some(BYPASS_ALL.into()),
            };
        }
        ProxyFields {
            http_proxy: self.http.clone(),
            https_proxy: self.https.clone(),
            no_proxy: self.no_proxy.clone(),
        }
    }

    /// `builder` with these proxies ([`Proxies::client_fields`]), and
    /// nothing from the environment.
    pub fn apply(&self, builder: ClientBuilder) -> Result<ClientBuilder, Failure> {
        let fields = self.client_fields();
        let no_proxy = || fields.no_proxy.as_deref().and_then(NoProxy::from_string);
        let bad = |e: reqwest::Error| {
            Failure::other(format!(
                "b2c.proxy: {}",
                self.scrub(b2c_system::error_chain::error_chain(&e.without_url()))
            ))
        };
        let mut builder = builder.no_proxy();
        if let Some(url) = &fields.https_proxy {
            let proxy = reqwest::Proxy::https(url.as_str()).map_err(bad)?;
            builder = builder.proxy(proxy.no_proxy(no_proxy()));
        }
        if let Some(url) = &fields.http_proxy {
            let proxy = reqwest::Proxy::http(url.as_str()).map_err(bad)?;
            builder = builder.proxy(proxy.no_proxy(no_proxy()));
        }
        Ok(builder)
    }

    /// The proxy (shown without credentials) that requests with `scheme`
    /// (`http` or `https`) to `host` (`host[:port]`, IPv6 in brackets) go
    /// through, if any.
    pub fn used_for(&self, scheme: &str, host: &str) -> Option<String> {
        let url = match scheme {
            "http" => self.http.as_deref()?,
            _ => self.https.as_deref()?,
        };
        let (host, _) = split_host_port(host);
        if self
            .no_proxy
            .as_deref()
            .is_some_and(|n| no_proxy_matches(n, host))
        {
            return None;
        }
        Some(ProxyUrl::split(url).to_string())
    }

    /// `text` with every proxy credential replaced by `***`.
    pub fn scrub(&self, mut text: String) -> String {
        for s in &self.secrets {
            if text.contains(s.as_str()) {
                text = text.replace(s.as_str(), "***");
            }
        }
        text
    }

    /// `f` without proxy credentials and, when the server was not reached
    /// and requests with `scheme` to `host` go through a proxy, naming it:
    /// reqwest's errors only name the server, even when it was the proxy
    /// that could not be reached.
    pub fn explain(&self, f: Failure, scheme: &str, host: &str) -> Failure {
        let via = match f.kind {
            FailureKind::Transport | FailureKind::Certificate { .. } | FailureKind::Tls => {
                self.used_for(scheme, host)
            }
            _ => None,
        };
        f.map_detail(|d| {
            let d = self.scrub(d);
            match via {
                Some(p) => format!("{d} (through proxy {p}, from b2c.proxy)"),
                None => d,
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(http: Option<&str>, https: Option<&str>, no_proxy: Option<&str>) -> Proxy {
        Proxy {
            http: http.map(String::from),
            https: https.map(String::from),
            no_proxy: no_proxy.map(String::from),
        }
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
    }

    #[test]
    fn proxies_map_to_client_fields_and_routes() {
        let p = Proxies::new(&proxy(
            None,
            Some("http://u:p@proxy.test:3128"),
            Some(" 10.0.0.0/8 "),
        ))
        .unwrap();
        assert_eq!(
            p.client_fields(),
            ProxyFields {
                http_proxy: None,
                https_proxy: Some("http://u:p@proxy.test:3128".into()),
                no_proxy: Some("10.0.0.0/8".into()),
            }
        );
        assert_eq!(
            p.used_for("https", "reg.test:5000").as_deref(),
            Some("http://proxy.test:3128")
        );
        assert_eq!(p.used_for("https", "10.0.0.1:5000"), None);
        assert_eq!(p.used_for("http", "reg.test:5000"), None);

        // No proxy (empty settings count as none): a proxy every host
        // bypasses, so that reqwest does not read the environment.
        for none in [Proxy::default(), proxy(Some(" "), Some(""), Some("x"))] {
            let p = Proxies::new(&none).unwrap();
            assert!(p.is_none());
            assert_eq!(
                p.client_fields(),
                ProxyFields {
                    http_proxy: None,
                    https_proxy: Some(UNUSED_PROXY.into()),
                    no_proxy: Some(BYPASS_ALL.into()),
                }
            );
            assert_eq!(p.used_for("https", "reg.test"), None);
            assert!(p.apply(reqwest::Client::builder()).is_ok());
        }

        let both = Proxies::new(&proxy(
            Some("proxy.test:3128"),
            Some("proxy.test:3128"),
            None,
        ))
        .unwrap();
        assert_eq!(
            both.used_for("http", "[fd00::1]:80").as_deref(),
            Some("http://proxy.test:3128")
        );
        assert!(both.apply(reqwest::Client::builder()).is_ok());
    }

    #[test]
    fn bad_urls_are_refused_without_their_credentials() {
        let bad = |u: &str| {
            Proxies::new(&proxy(None, Some(u), None))
                .unwrap_err()
                .to_string()
        };
        let msg = bad("socks5://joe:hunter2@proxy.test:1080");
        assert!(
            msg.contains("proxy.test:1080") && msg.contains("unsupported scheme"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2") && !msg.contains("joe"), "{msg}");
        let msg = bad("http://joe:hunter2@proxy.test:31x");
        assert!(
            msg.contains("invalid port") && !msg.contains("hunter2"),
            "{msg}"
        );
        assert!(bad("http://joe@/").contains("no host"));
        Proxies::new(&proxy(None, Some("http://u:p@proxy.test:3128/"), None)).unwrap();
    }

    #[test]
    fn credentials_are_scrubbed_and_the_proxy_named() {
        let p = Proxies::new(&proxy(
            Some("http://joe:p%40ss@proxy.test:3128"),
            Some("http://joe:p%40ss@proxy.test:3128"),
            None,
        ))
        .unwrap();
        let text = "x http://joe:p%40ss@proxy.test y p@ss z".to_string();
        assert_eq!(p.scrub(text), "x http://***@proxy.test y *** z");

        let refused = Failure::new(FailureKind::Transport, "refused by joe:p%40ss");
        assert_eq!(
            p.explain(refused, "https", "reg.test").detail,
            "refused by *** (through proxy http://proxy.test:3128, from b2c.proxy)"
        );
        // The server answered: the proxy is not the story.
        let answered = Failure::status(404, "HTTP 404 Not Found");
        assert_eq!(
            p.explain(answered, "https", "reg.test").detail,
            "HTTP 404 Not Found"
        );
    }
}
