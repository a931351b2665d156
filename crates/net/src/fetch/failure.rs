//! Why an attempt failed, whether trying again can help, and how to say it
//! without leaking credentials.

pub(super) use b2c_system::error_chain::error_chain as chain;
use b2c_system::error_chain::find_in_chain;

use reqwest::StatusCode;

#[derive(Debug)]
pub(super) struct Failure {
    pub reason: String,
    pub retryable: bool,
    pub status: Option<u16>,
}

impl Failure {
    pub fn fatal(reason: String) -> Self {
        Failure {
            reason,
            retryable: false,
            status: None,
        }
    }

    /// The server answered, with an error.
    pub fn status(status: StatusCode) -> Self {
        Failure {
            reason: format!("HTTP {status}"),
            // 408 and 429 ask the client to come back later; the other 4xx
            // will give the same answer again.
            retryable: status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS,
            status: Some(status.as_u16()),
        }
    }

    /// A failure below HTTP: connecting, TLS, a timeout, a cut body.
    pub fn transport(e: reqwest::Error) -> Self {
        // reqwest's message embeds the URL, credentials and all.
        let e = e.without_url();
        let tls = find_in_chain::<rustls::Error>(&e);
        Failure {
            reason: match tls {
                Some(tls) => format!("TLS: {tls}"),
                None => chain(&e),
            },
            // A certificate does not become valid by asking again, nor does a
            // redirect loop end.
            retryable: tls.is_none() && !e.is_builder() && !e.is_redirect(),
            status: None,
        }
    }
}

/// The URL with any `user:password@` removed.
pub(crate) fn redact(url: &str) -> String {
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
        let retried = |code| Failure::status(StatusCode::from_u16(code).unwrap()).retryable;
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(retried(code), "{code}");
        }
        for code in [400, 401, 403, 404, 410] {
            assert!(!retried(code), "{code}");
        }
        let f = Failure::status(StatusCode::NOT_FOUND);
        assert_eq!(f.reason, "HTTP 404 Not Found");
        assert_eq!(f.status, Some(404));
    }

    #[test]
    fn tls_errors_are_found_through_io_errors() {
        use std::io;
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, inner));
        let found = find_in_chain::<rustls::Error>(&wrapped);
        assert!(
            matches!(found, Some(rustls::Error::InvalidCertificate(_))),
            "{found:?}"
        );
        assert!(find_in_chain::<rustls::Error>(&io::Error::other("plain")).is_none());
    }
}
