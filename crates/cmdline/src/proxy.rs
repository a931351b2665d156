//! `b2c.proxy`: proxies for registry and extra-args traffic, checked with
//! the command line. Proxy credentials are never shown.

use std::fmt;

use crate::split_host_port;

/// Proxy URLs (`http://[user:password@]host:port`; without a scheme,
/// `http://` is assumed) for `http://` and `https://` requests, and the
/// hosts that bypass them (curl-style `no_proxy`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Proxy {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

impl Proxy {
    /// `URL` (for both schemes) or `http=URL,https=URL,no_proxy=HOSTS`;
    /// every URL is checked ([`ProxyUrl::parse`]). Errors show URLs
    /// without their credentials.
    pub fn parse(v: &str) -> Result<Proxy, String> {
        let proxy = Proxy::split(v)?;
        for url in [&proxy.http, &proxy.https].into_iter().flatten() {
            ProxyUrl::parse(url)?;
        }
        Ok(proxy)
    }

    fn split(v: &str) -> Result<Proxy, String> {
        // A URL alone, with or without its scheme, is for both schemes.
        if !v.contains('=')
            || v.contains("://") && !v.split("://").next().unwrap_or("").contains('=')
        {
            return Ok(Proxy {
                http: Some(v.into()),
                https: Some(v.into()),
                no_proxy: None,
            });
        }
        let mut proxy = Proxy::default();
        // no_proxy lists hosts with commas, so it must come last.
        let (main, no_proxy) = match v.find("no_proxy=") {
            Some(i) => (
                v[..i].trim_end_matches(','),
                Some(&v[i + "no_proxy=".len()..]),
            ),
            None => (v, None),
        };
        proxy.no_proxy = no_proxy.map(String::from);
        for part in main.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("http", url)) => proxy.http = Some(url.into()),
                Some(("https", url)) => proxy.https = Some(url.into()),
                _ => {
                    return Err(format!(
                        "{:?}: expected URL or http=URL,https=URL[,no_proxy=HOSTS]",
                        ProxyUrl::split(part).to_string()
                    ))
                }
            }
        }
        Ok(proxy)
    }

    /// The value as written, with every URL's credentials removed.
    pub fn shown(value: &str) -> String {
        value
            .split(',')
            .map(|part| match part.split_once('=') {
                Some((k @ ("http" | "https"), url)) => format!("{k}={}", ProxyUrl::split(url)),
                _ if part.contains("://") || part.contains('@') => {
                    ProxyUrl::split(part).to_string()
                }
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Without the URLs' credentials, which `b2c cmdline` would print.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |u: &Option<String>| u.as_deref().map(|u| ProxyUrl::split(u).to_string());
        f.debug_struct("Proxy")
            .field("http", &shown(&self.http))
            .field("https", &shown(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// A proxy URL taken apart just enough to check it and show it without its
/// credentials.
pub struct ProxyUrl<'a> {
    pub scheme: &'a str,
    pub userinfo: Option<&'a str>,
    pub host_port: &'a str,
}

impl<'a> ProxyUrl<'a> {
    pub fn split(url: &'a str) -> ProxyUrl<'a> {
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

    /// An http or https URL with a host and, if any, a numeric port. The
    /// error names the URL without its credentials.
    pub fn parse(url: &'a str) -> Result<ProxyUrl<'a>, String> {
        let p = ProxyUrl::split(url);
        let bad = |why: String| format!("proxy {p}: {why}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_credentials() {
        Proxy::parse("proxy.test:3128").unwrap();
        Proxy::parse("http://u:p@proxy.test:3128/").unwrap();
        let e = Proxy::parse("socks5://joe:hunter2@proxy.test:1080").unwrap_err();
        assert!(e.contains("proxy.test:1080") && e.contains("scheme"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("joe"), "{e}");
        let e = Proxy::parse("https=http://joe:hunter2@proxy.test:31x").unwrap_err();
        assert!(e.contains("invalid port") && !e.contains("hunter2"), "{e}");
        let e = Proxy::parse("http=http://a:1,joe:hunter2@x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(
            Proxy::shown("http=http://joe:pw@p:1,https=https://joe:pw@p:2,no_proxy=a"),
            "http=http://p:1,https=https://p:2,no_proxy=a"
        );
        assert_eq!(
            ProxyUrl::split("http://joe:p%40ss@proxy.test:3128/").to_string(),
            "http://proxy.test:3128"
        );
        assert_eq!(
            ProxyUrl::split("proxy.test:3128").to_string(),
            "http://proxy.test:3128"
        );
        let debug = format!("{:?}", Proxy::parse("http://joe:hunter2@p:1").unwrap());
        assert!(
            !debug.contains("hunter2") && debug.contains("p:1"),
            "{debug}"
        );
    }
}
