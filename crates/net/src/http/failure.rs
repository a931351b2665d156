//! Why an HTTP attempt failed, sorted by what to do about it, and URLs
//! shown without their credentials.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use b2c_system::error_chain::{error_chain, find_in_chain};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use super::retry::parse_retry_after;

/// What kind of failure, which decides whether to retry and what to tell
/// the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The server's certificate was refused. `clock_suspect`: it is expired
    /// or not yet valid, which often means the local clock is wrong.
    Certificate { clock_suspect: bool },
    /// Any other TLS failure (typically a server speaking plain HTTP).
    Tls,
    /// Below HTTP: refused, reset, timed out, a body cut short.
    Transport,
    /// 5xx, and 408: the server's trouble, which may pass.
    Server,
    /// 429: come back later (see [`Failure::retry_after`]).
    TooManyRequests,
    /// 404, 410.
    NotFound,
    /// 401, 403.
    Denied,
    /// The rest (other 4xx, a bad URL, a body too large...).
    Other,
}

/// One failed attempt.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// For humans. Never holds credentials: URLs go through [`redact`],
    /// proxy secrets through [`Proxies::scrub`](super::Proxies::scrub).
    pub detail: String,
    /// The HTTP status, when the server answered with an error.
    pub status: Option<u16>,
    /// The server's `Retry-After` (429 and 503 only), capped at
    /// [`MAX_RETRY_AFTER`](super::MAX_RETRY_AFTER).
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
            status: None,
            retry_after: None,
        }
    }

    /// A failure that asking again will not change.
    pub fn other(detail: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Other, detail)
    }

    /// The server answered `status`; `detail` says so.
    pub fn status(status: u16, detail: impl Into<String>) -> Failure {
        let kind = match status {
            429 => FailureKind::TooManyRequests,
            408 | 500..=599 => FailureKind::Server,
            404 | 410 => FailureKind::NotFound,
            401 | 403 => FailureKind::Denied,
            _ => FailureKind::Other,
        };
        Failure {
            status: Some(status),
            ..Failure::new(kind, detail)
        }
    }

    /// An error answer, with the server's `Retry-After` if it is a 429 or
    /// a 503.
    pub fn response(status: StatusCode, headers: &HeaderMap) -> Failure {
        let mut f = Failure::status(status.as_u16(), format!("HTTP {status}"));
        if matches!(status.as_u16(), 429 | 503) {
            f.retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
        }
        f
    }

    /// An error from below HTTP: reqwest's (strip its URL first: it may hold
    /// credentials), or the `io::Error` of a body stream. A TLS error is
    /// found anywhere in the chain, even inside `io::Error`s.
    pub fn from_error(e: &(dyn StdError + 'static)) -> Failure {
        use rustls::CertificateError as C;
        if let Some(tls) = find_in_chain::<rustls::Error>(e) {
            let kind = match tls {
                rustls::Error::InvalidCertificate(c) => FailureKind::Certificate {
                    clock_suspect: matches!(
                        c,
                        C::Expired
                            | C::ExpiredContext { .. }
                            | C::NotValidYet
                            | C::NotValidYetContext { .. }
                    ),
                },
                _ => FailureKind::Tls,
            };
            return Failure::new(kind, tls.to_string());
        }
        let detail = error_chain(e);
        match find_in_chain::<reqwest::Error>(e) {
            // A redirect loop does not end by asking again.
            Some(re) if re.is_builder() || re.is_redirect() => Failure::other(detail),
            Some(re) => match re.status() {
                Some(status) => Failure::status(status.as_u16(), detail),
                None => Failure::new(FailureKind::Transport, detail),
            },
            None => Failure::new(FailureKind::Transport, detail),
        }
    }

    /// Whether asking again may help: transport failures, 5xx, 408, 429.
    /// Certificates do not become valid by asking again.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Transport | FailureKind::Server | FailureKind::TooManyRequests
        )
    }

    /// Whether the server was not talked to at all (another route, such as
    /// plain HTTP after HTTPS, might do better).
    pub fn is_connection_level(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Transport | FailureKind::Certificate { .. } | FailureKind::Tls
        )
    }

    pub fn map_detail(self, f: impl FnOnce(String) -> String) -> Failure {
        Failure {
            detail: f(self.detail),
            ..self
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::Certificate { .. } | FailureKind::Tls => {
                write!(f, "TLS: {}", self.detail)
            }
            _ => f.write_str(&self.detail),
        }
    }
}

/// The URL with any `user:password@` removed.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{head}{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn credentials_are_stripped() {
        for (url, shown) in [
            ("https://user:s3cret@host/a", "https://host/a"),
            ("http://token@host:8080", "http://host:8080"),
            ("http://u:p@ss@host/x?y=1", "http://host/x?y=1"),
            ("https://host/p@th", "https://host/p@th"),
            ("https://host/?to=a@b", "https://host/?to=a@b"),
            ("no-scheme@host", "no-scheme@host"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn only_answers_that_may_change_are_retried() {
        let retried = |code| Failure::status(code, "").retryable();
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(retried(code), "{code}");
        }
        for code in [400, 401, 403, 404, 410] {
            assert!(!retried(code), "{code}");
        }
        let f = Failure::response(StatusCode::NOT_FOUND, &HeaderMap::new());
        assert_eq!(f.to_string(), "HTTP 404 Not Found");
        assert_eq!((f.kind, f.status), (FailureKind::NotFound, Some(404)));
        assert_eq!(Failure::status(401, "").kind, FailureKind::Denied);
        assert_eq!(Failure::status(429, "").kind, FailureKind::TooManyRequests);
        assert_eq!(Failure::status(418, "").kind, FailureKind::Other);
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let after = |code, value| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            Failure::response(StatusCode::from_u16(code).unwrap(), &headers).retry_after
        };
        assert_eq!(after(429, "7"), Some(Duration::from_secs(7)));
        assert_eq!(after(503, "7"), Some(Duration::from_secs(7)));
        assert_eq!(after(500, "7"), None);
        assert_eq!(after(404, "7"), None);
        assert_eq!(after(429, "soon"), None);
        assert_eq!(after(429, "3600"), Some(crate::http::MAX_RETRY_AFTER));
    }

    #[test]
    fn tls_errors_are_found_through_io_errors() {
        use rustls::CertificateError as C;
        use std::io;
        let wrap = |c: C| {
            let inner = rustls::Error::InvalidCertificate(c);
            io::Error::other(io::Error::new(io::ErrorKind::InvalidData, inner))
        };
        let f = Failure::from_error(&wrap(C::UnknownIssuer));
        assert_eq!(
            f.kind,
            FailureKind::Certificate {
                clock_suspect: false
            }
        );
        assert!(
            f.to_string().starts_with("TLS: invalid peer certificate"),
            "{f}"
        );
        assert!(!f.retryable() && f.is_connection_level());
        let f = Failure::from_error(&wrap(C::Expired));
        assert_eq!(
            f.kind,
            FailureKind::Certificate {
                clock_suspect: true
            }
        );
        let f = Failure::from_error(&io::Error::other(rustls::Error::DecryptError));
        assert_eq!(f.kind, FailureKind::Tls);
        let f = Failure::from_error(&io::Error::other("connection reset"));
        assert_eq!(f.kind, FailureKind::Transport);
        assert!(f.retryable());
    }
}
