//! The registry protocol of a pull (the part of the OCI distribution spec
//! a pull needs), on the HTTP layer: the manifest asked once without
//! credentials, to learn how to authenticate (an open registry serves it
//! at once, without podman's `GET /v2/` first); a Bearer token when the
//! registry asks for one (anonymous, or for the `--creds`/`--authfile`
//! credentials of the repository; renewed once when a request is
//! refused), or HTTP Basic with those credentials when that is what the
//! registry asks; manifests with their `Accept` types; blobs, resumed
//! with `Range`.
//!
//! Everything a registry sends is untrusted. Every body read into memory is
//! bounded in size (manifests and configs 4 MiB and tokens 1 MiB, as
//! podman; only the first 64 KiB of an error body is read) and in time; a
//! token is checked before it becomes a header; server text reaches
//! messages escaped and cut short ([`b2c_system::log::printable`]); every
//! answer's `Retry-After` is seen.

use std::time::Duration;

use b2c_net::http::{self, read_bounded, BodyError, BodyLimit, FailureKind, Proxies};
use b2c_system::log::printable;
use oci_spec::distribution::Reference;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use crate::authfile::{credential_for, Credential};
use crate::digest::Digest;
use crate::registry::{Failure, RegistryOptions};
use crate::PullError;

/// Podman's bounds (containers/image `iolimits`).
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;
pub(crate) const MAX_CONFIG: u64 = 4 << 20;
const MAX_TOKEN: u64 = 1 << 20;
/// What is read of an error answer's body, for its message.
const MAX_ERROR_BODY: usize = 64 << 10;
/// How much of a server's text a message shows.
const SHOWN: usize = 200;
/// For an answer's headers, and for a whole small body (manifest, config,
/// token, error): a registry that trickles them fails the attempt.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Both kinds of both formats: asking for Docker types only gets
/// `MANIFEST_UNKNOWN` from the distribution registry for an OCI image.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// How requests to the registry are authenticated, learnt from the first
/// answer ([`Endpoint::probe`]).
enum Auth {
    Unknown,
    /// No authentication asked.
    Open,
    /// HTTP Basic with the credentials, on every request.
    Basic,
    /// A token from `challenge`'s realm (for the credentials, if any), once
    /// fetched.
    Bearer {
        challenge: Challenge,
        token: Option<String>,
    },
}

/// A `WWW-Authenticate: Bearer realm=…,service=…` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) realm: String,
    pub(crate) service: Option<String>,
}

/// A manifest or an index, as served, verified against the digest the
/// reference pins (if any) and the one the registry announced (if any).
pub(crate) struct Manifest {
    pub(crate) bytes: Vec<u8>,
    /// The reference's digest, or the sha256 of `bytes`.
    pub(crate) digest: Digest,
    /// One of the four b2c pulls.
    pub(crate) media_type: String,
}

impl Manifest {
    pub(crate) fn is_index(&self) -> bool {
        matches!(self.media_type.as_str(), OCI_INDEX | DOCKER_LIST)
    }
}

/// One way of talking to one repository of a registry: a client and the
/// scheme it uses. Shared by the concurrent requests of a pull.
pub(crate) struct Endpoint {
    client: reqwest::Client,
    pub(crate) scheme: &'static str,
    /// `host[:port]`.
    registry: String,
    repository: String,
    proxies: Proxies,
    /// `--creds`/`--authfile` for this repository.
    credential: Option<Credential>,
    /// Every registry password, kept out of every message.
    passwords: Vec<String>,
    auth: tokio::sync::Mutex<Auth>,
}

/// The endpoints to try for `repository` on `registry`, in order. With
/// verification on there is one (HTTPS, `opts.trust`). Without, as podman
/// does: HTTPS accepting any certificate, then plain HTTP; the first that
/// answers at all is used for the whole pull.
pub(crate) fn endpoints(
    opts: &RegistryOptions,
    registry: &str,
    repository: &str,
    verify: bool,
) -> Result<Vec<Endpoint>, PullError> {
    let proxies = opts.proxies()?;
    let client = |verify: bool| {
        http::client_builder(&opts.trust, &proxies, verify)
            .and_then(|b| proxies.apply(b))
            .and_then(|b| b.build().map_err(|e| http::setup_failure(&proxies, &e)))
            .map_err(|f| PullError::Client { detail: f.detail })
    };
    let endpoint = |client, scheme| Endpoint {
        client,
        scheme,
        registry: registry.to_string(),
        repository: repository.to_string(),
        proxies: proxies.clone(),
        credential: credential_for(&opts.credentials, registry, repository).cloned(),
        passwords: opts.passwords(),
        auth: tokio::sync::Mutex::new(Auth::Unknown),
    };
    if verify {
        return Ok(vec![endpoint(client(true)?, "https")]);
    }
    Ok(vec![
        endpoint(client(false)?, "https"),
        // Verification only matters for a token realm on HTTPS.
        endpoint(client(true)?, "http"),
    ])
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.registry)
    }

    /// The manifest `reference` names, asked without credentials while
    /// how to authenticate is not known yet (`None` once it is): an open
    /// registry serves it at once, one round trip sooner than after a
    /// `GET /v2/`; one that wants credentials says how in its 401, and no
    /// credential or token has gone to an endpoint the pull may not use
    /// (plain HTTP is asked beside HTTPS without verification). Whether
    /// this endpoint holds a conversation at all shows here too.
    pub(crate) async fn probe(&self, reference: &Reference) -> Result<Option<Manifest>, Failure> {
        let mut auth = self.auth.lock().await;
        if !matches!(*auth, Auth::Unknown) {
            return Ok(None);
        }
        let req = self
            .client
            .get(self.url(&manifest_path(&self.repository, reference)))
            .header(ACCEPT, MANIFEST_ACCEPT);
        let res = self.send(req).await?;
        match res.status().as_u16() {
            200..=299 => {
                *auth = Auth::Open;
                drop(auth);
                self.read_manifest(res, reference).await.map(Some)
            }
            401 => {
                *auth = match bearer_challenge(res.headers()) {
                    Some(challenge) => Auth::Bearer {
                        challenge,
                        token: None,
                    },
                    None if self.credential.is_some() => Auth::Basic,
                    None => {
                        return Err(Failure::Http(http::Failure::status(
                            401,
                            "the registry asks for credentials: give them with --creds \
                             USER:PASSWORD or --authfile",
                        )))
                    }
                };
                Ok(None)
            }
            _ => Err(self.error_answer(res).await),
        }
    }

    /// The manifest or index `reference` names.
    pub(crate) async fn manifest(&self, reference: &Reference) -> Result<Manifest, Failure> {
        if let Some(manifest) = self.probe(reference).await? {
            return Ok(manifest);
        }
        let path = manifest_path(&self.repository, reference);
        let res = self.get(&path, Some(MANIFEST_ACCEPT), 0).await?;
        self.read_manifest(res, reference).await
    }

    /// A manifest answer's body, checked against the digests it must have.
    async fn read_manifest(
        &self,
        res: Response,
        reference: &Reference,
    ) -> Result<Manifest, Failure> {
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        };
        let announced = header("docker-content-digest");
        let content_type = header(CONTENT_TYPE.as_str());
        let bytes = self.read_small(res, MAX_MANIFEST, "manifest").await?;

        let digest = match reference.digest() {
            Some(pinned) => {
                let pinned: Digest = pinned
                    .parse()
                    .map_err(|e: crate::DigestParseError| Failure::other(e.to_string()))?;
                verify(&pinned, &bytes, "the manifest")?;
                pinned
            }
            None => Digest::sha256_of(&bytes),
        };
        if let Some(announced) = announced.and_then(|d| d.parse::<Digest>().ok()) {
            verify(&announced, &bytes, "the manifest (Docker-Content-Digest)")?;
        }
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
        }
        let in_body = serde_json::from_slice::<Head>(&bytes)
            .map_err(|e| {
                Failure::other(format!(
                    "the manifest is not valid JSON ({})",
                    printable(&e.to_string(), SHOWN)
                ))
            })?
            .media_type;
        let media_type = in_body.or(content_type).unwrap_or_default();
        if ![DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX].contains(&media_type.as_str()) {
            return Err(Failure::other(format!(
                "unsupported manifest media type {:?} (b2c pulls OCI and Docker v2 schema 2 \
                 images)",
                printable(&media_type, SHOWN)
            )));
        }
        Ok(Manifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// A small blob (a config), at most `max` bytes, verified.
    pub(crate) async fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Failure> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let res = self.get(&path, None, 0).await?;
        let bytes = self.read_small(res, max, "config").await?;
        verify(digest, &bytes, "the config")?;
        Ok(bytes)
    }

    /// A blob's body from byte `offset` on (a `Range` request when it is
    /// not 0), and the offset the body really starts at: a registry that
    /// ignores `Range` sends it all again.
    pub(crate) async fn blob(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<(Response, u64), Failure> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let res = self.get(&path, None, offset).await?;
        if res.status() != StatusCode::PARTIAL_CONTENT {
            return Ok((res, 0));
        }
        let start = res
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|s| s.parse::<u64>().ok());
        match start {
            Some(start) if start == offset => Ok((res, start)),
            _ => Err(Failure::other(format!(
                "the registry answered a request for bytes {offset}- with another range ({})",
                printable(
                    res.headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none"),
                    SHOWN
                )
            ))),
        }
    }

    /// A GET below `/v2/`, authenticated as the registry asked; a refusal
    /// that comes with a new challenge (an expired token, another scope)
    /// gets one more try with a new token.
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        offset: u64,
    ) -> Result<Response, Failure> {
        let mut renewed = false;
        loop {
            let mut req = self.client.get(self.url(path));
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            if offset > 0 {
                req = req.header(RANGE, format!("bytes={offset}-"));
            }
            match self.token().await? {
                Some(token) => req = req.bearer_auth(token),
                None => {
                    if let (Auth::Basic, Some(c)) = (&*self.auth.lock().await, &self.credential) {
                        req = req.basic_auth(&c.username, Some(&c.password));
                    }
                }
            }
            let res = self.send(req).await?;
            if res.status().is_success() {
                return Ok(res);
            }
            if res.status() == StatusCode::UNAUTHORIZED && !renewed {
                if let Some(challenge) = bearer_challenge(res.headers()) {
                    renewed = true;
                    *self.auth.lock().await = Auth::Bearer {
                        challenge,
                        token: None,
                    };
                    continue;
                }
            }
            return Err(self.error_answer(res).await);
        }
    }

    /// The token to send, fetched first if needed (once for all the
    /// concurrent requests: they wait on the lock).
    async fn token(&self) -> Result<Option<String>, Failure> {
        let mut auth = self.auth.lock().await;
        match &mut *auth {
            Auth::Bearer {
                token: Some(token), ..
            } => Ok(Some(token.clone())),
            Auth::Bearer { challenge, token } => {
                let fresh = self.fetch_token(challenge).await?;
                *token = Some(fresh.clone());
                Ok(Some(fresh))
            }
            Auth::Unknown | Auth::Open | Auth::Basic => Ok(None),
        }
    }

    /// A pull token from the challenge's realm: anonymous, or for the
    /// credentials (HTTP Basic to the token service, as Docker's token
    /// protocol has it).
    async fn fetch_token(&self, challenge: &Challenge) -> Result<String, Failure> {
        let realm = printable(&challenge.realm, SHOWN).into_owned();
        let mut url = reqwest::Url::parse(&challenge.realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Failure::other(format!(
                    "the registry's token service {realm:?} is not an http(s) URL"
                ))
            })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &format!("repository:{}:pull", self.repository));
        }
        let mut req = self.client.get(url);
        if let Some(c) = &self.credential {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let res = self.send(req).await?;
        if !res.status().is_success() {
            let f = self.error_answer(res).await;
            return Err(f.map_http(|f| f.map_detail(|d| format!("token service {realm}: {d}"))));
        }
        let body = self.read_small(res, MAX_TOKEN, "token answer").await?;
        parse_token(&body).map_err(|why| {
            Failure::other(format!(
                "the token service {realm} answered a malformed token ({why})"
            ))
        })
    }

    /// One request's answer (its headers), within [`ANSWER_TIMEOUT`].
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Response, Failure> {
        match http::deadline(ANSWER_TIMEOUT, req.send()).await {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => {
                Err(self.explain(Failure::Http(http::Failure::from_error(&e.without_url()))))
            }
            Err(f) => Err(self.explain(Failure::Http(f))),
        }
    }

    /// A small body, bounded in size and time.
    async fn read_small(&self, res: Response, max: u64, what: &str) -> Result<Vec<u8>, Failure> {
        let announced = res.content_length();
        let limit = BodyLimit {
            max_size: max,
            timeout: ANSWER_TIMEOUT,
        };
        read_bounded(http::chunks(res), announced, limit)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(max) => {
                    Failure::other(format!("the {what} is larger than {max} bytes: refused"))
                }
                e => self.explain(Failure::Http(
                    e.into_failure(|e| http::Failure::from_error(&e.without_url())),
                )),
            })
    }

    /// An error answer: its status (and `Retry-After`), and what the
    /// registry says in the first [`MAX_ERROR_BODY`] bytes of its body,
    /// escaped and cut short.
    async fn error_answer(&self, res: Response) -> Failure {
        let mut f = http::Failure::response(res.status(), res.headers());
        let body = http::read_prefix(res, MAX_ERROR_BODY, Duration::from_secs(10)).await;
        let (kind, said) = parse_error_body(&body);
        // The status says more than a code, except that a 2xx or a plain
        // 400 carrying a code says less.
        if let Some(kind) = kind.filter(|_| f.kind == FailureKind::Other) {
            f.kind = kind;
        }
        if !said.is_empty() {
            f.detail = format!("{}: {said}", f.detail);
        }
        self.explain(Failure::Http(f))
    }

    /// Keeps proxy and registry credentials out of the message and, when
    /// the registry was not reached, names the proxy.
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

/// The token of a token service's answer (`token`, or OAuth2's
/// `access_token`), checked to be something that can be sent in a header;
/// else why not.
pub(crate) fn parse_token(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| printable(&e.to_string(), SHOWN).into_owned())?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("no token in it")?;
    // It becomes a header: visible ASCII only (RFC 6750's token68 is
    // narrower still). A control character once made oci-client panic.
    if let Some(at) = token.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        let c = token[at..].chars().next().unwrap_or(' ').to_string();
        return Err(format!(
            "byte {at} is {:?}, which cannot be sent in a header",
            printable(&c, 8)
        ));
    }
    Ok(token)
}

/// What an error answer's body says, for its message (escaped, cut
/// short), and the kind of failure its error codes name, if any.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<FailureKind>, String) {
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<Error>,
    }
    #[derive(Deserialize)]
    struct Error {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        let text = String::from_utf8_lossy(body);
        return (None, printable(text.trim(), SHOWN).into_owned());
    };
    let mut kind = None;
    let mut said = Vec::new();
    for e in envelope.errors.iter().take(3) {
        let code = e.code.as_deref().unwrap_or("");
        kind = kind.or(match code {
            "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN" | "NOT_FOUND" => {
                Some(FailureKind::NotFound)
            }
            "UNAUTHORIZED" | "DENIED" => Some(FailureKind::Denied),
            "TOOMANYREQUESTS" => Some(FailureKind::TooManyRequests),
            _ => None,
        });
        said.push(format!("{code}: {}", e.message.as_deref().unwrap_or("")));
    }
    (kind, printable(&said.join("; "), SHOWN).into_owned())
}

fn verify(expected: &Digest, bytes: &[u8], what: &str) -> Result<(), Failure> {
    let actual = expected.of(bytes);
    if actual == *expected {
        Ok(())
    } else {
        Err(Failure::Digest(format!(
            "{what} hashes to {actual}, not {expected}"
        )))
    }
}

fn manifest_path(repository: &str, reference: &Reference) -> String {
    let name = reference.digest().or(reference.tag()).unwrap_or("latest");
    format!("/v2/{repository}/manifests/{name}")
}

/// The Bearer challenge among an answer's `WWW-Authenticate` headers.
fn bearer_challenge(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer)
}

/// `Bearer realm="…",service="…",scope="…"` (RFC 6750, as registries
/// write it); `None` for another scheme or without a realm.
pub(crate) fn parse_bearer(value: &str) -> Option<Challenge> {
    let value = value.trim_start();
    let (scheme, mut rest) = value.split_at(value.find(' ').unwrap_or(value.len()));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (val, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                // A quoted string: backslash escapes one character.
                let mut val = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => val.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => val.push(c),
                    }
                }
                (val, &quoted[end?..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(val),
            "service" => service = Some(val),
            _ => {}
        }
        rest = after;
    }
    Some(Challenge {
        realm: realm.filter(|r| !r.is_empty())?,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_error_bodies() {
        assert_eq!(parse_token(br#"{"token":"a.b-c_d"}"#).unwrap(), "a.b-c_d");
        assert_eq!(parse_token(br#"{"access_token":"x"}"#).unwrap(), "x");
        assert!(parse_token(br#"{"token":"a\nb"}"#)
            .unwrap_err()
            .contains("byte 1 is \"\\\\n\""));
        assert!(parse_token("{\"token\":\"é\"}".as_bytes())
            .unwrap_err()
            .contains("byte 0"));
        assert_eq!(
            parse_token(br#"{"token":""}"#).unwrap_err(),
            "no token in it"
        );
        let (kind, said) = parse_error_body(
            br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow"},{"code":"X"}]}"#,
        );
        assert_eq!(kind, Some(FailureKind::TooManyRequests));
        assert_eq!(said, "TOOMANYREQUESTS: slow; X: ");
        let (kind, said) = parse_error_body(b"<html>\x1b[2J</html>");
        assert_eq!((kind, said.as_str()), (None, "<html>\\u{1b}[2J</html>"));
    }

    #[test]
    fn bearer_challenges() {
        let c = parse_bearer(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        let c = parse_bearer(r#"bearer service=x, realm="http://a/t\"q""#).unwrap();
        assert_eq!(
            (c.realm.as_str(), c.service.as_deref()),
            ("http://a/t\"q", Some("x"))
        );
        for bad in [
            r#"Basic realm="x""#,
            "Bearer",
            r#"Bearer service="x""#,
            r#"Bearer realm="unterminated"#,
            r#"Bearer realm="""#,
            "",
        ] {
            assert_eq!(parse_bearer(bad), None, "{bad}");
        }
    }
}
