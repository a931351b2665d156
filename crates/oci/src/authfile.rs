//! Registry credentials: `--creds USER:PASSWORD` and podman's auth.json
//! (`--authfile`), resolved to the credential of the registry (and
//! repository) a pull talks to.
//!
//! auth.json, as `podman login` writes it:
//!
//! ```json
//! {"auths": {"registry.example:5000": {"auth": "base64(user:password)"}}}
//! ```
//!
//! A key may name a repository namespace (`registry.example/team`): the
//! most specific key that covers the image wins, as in podman. Docker's
//! `https://index.docker.io/v1/` key stands for `docker.io`.
//!
//! Passwords are secrets: [`Credential`]'s `Debug` masks them, and
//! [`parse_auth_file`]'s errors never quote the file.

use std::fmt;

use base64::Engine as _;

/// A user name and password for a registry, or a part of one.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `host[:port]`, optionally followed by `/namespace`: what it is for.
    pub scope: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("scope", &self.scope)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl Credential {
    /// Whether it applies to `repository` (`name/space`) on `registry`
    /// (`host[:port]`, as written in the reference).
    pub(crate) fn covers(&self, registry: &str, repository: &str) -> bool {
        let (host, path) = match self.scope.split_once('/') {
            Some((host, path)) => (host, Some(path.trim_end_matches('/'))),
            None => (self.scope.as_str(), None),
        };
        if normalize(host) != normalize(registry) {
            return false;
        }
        match path {
            None | Some("") => true,
            Some(path) => {
                repository == path
                    || repository
                        .strip_prefix(path)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }
}

/// The Docker Hub names are one registry.
fn normalize(registry: &str) -> String {
    let r = registry.to_ascii_lowercase();
    match r.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => r,
    }
}

/// The credential for `repository` on `registry` among `credentials`: the
/// one with the most specific scope; `None` for an anonymous pull.
pub(crate) fn credential_for<'a>(
    credentials: &'a [Credential],
    registry: &str,
    repository: &str,
) -> Option<&'a Credential> {
    credentials
        .iter()
        .filter(|c| c.covers(registry, repository))
        .max_by_key(|c| c.scope.len())
}

/// The credentials of an auth.json. Entries without a usable `auth` (a
/// credential helper's, say) are skipped; what cannot be read at all is an
/// error that says where, without quoting the file.
pub fn parse_auth_file(json: &[u8]) -> Result<Vec<Credential>, String> {
    const FORMAT: &str = r#"{"auths": {"HOST[:PORT]": {"auth": "BASE64(USER:PASSWORD)"}}}"#;
    let doc: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
        format!(
            "not JSON (line {}, column {}); expected {FORMAT}",
            e.line(),
            e.column()
        )
    })?;
    let auths = doc
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or_else(|| format!("no \"auths\" object; expected {FORMAT}"))?;
    let mut out = Vec::new();
    for (key, entry) in auths {
        let scope = scope_of(key);
        let (username, password) = if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("{scope}: \"auth\" is not base64 of USER:PASSWORD"))?;
            match decoded.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string()),
                None => return Err(format!("{scope}: \"auth\" is not base64 of USER:PASSWORD")),
            }
        } else {
            // Docker's older form.
            match (
                entry.get("username").and_then(|u| u.as_str()),
                entry.get("password").and_then(|p| p.as_str()),
            ) {
                (Some(u), Some(p)) => (u.to_string(), p.to_string()),
                _ => continue,
            }
        };
        out.push(Credential {
            scope,
            username,
            password,
        });
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → `docker.io`; `registry.example/team/`
/// → `registry.example/team`.
fn scope_of(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key
        .strip_suffix("/v1/")
        .or_else(|| key.strip_suffix("/v2/"))
        .unwrap_or(key)
        .trim_end_matches('/');
    match key.split_once('/') {
        Some((host, path)) => format!("{}/{path}", normalize(host)),
        None => normalize(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn podman_auth_json() {
        let json = format!(
            r#"{{"auths": {{
                "registry.test:5000": {{"auth": "{}"}},
                "registry.test:5000/team": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "helper.example": {{}},
                "old.example": {{"username": "u", "password": "p"}}
            }}}}"#,
            b64("bob:pa:ss"),
            b64("team:t"),
            b64("hub:h")
        );
        let creds = parse_auth_file(json.as_bytes()).unwrap();
        let who = |registry, repository| {
            credential_for(&creds, registry, repository).map(|c| c.username.as_str())
        };
        assert_eq!(who("registry.test:5000", "b2c/busybox"), Some("bob"));
        assert_eq!(who("registry.test:5000", "team/x"), Some("team"));
        assert_eq!(who("registry.test:5000", "teamx/y"), Some("bob"));
        assert_eq!(who("registry.test", "b2c/busybox"), None, "another port");
        assert_eq!(who("docker.io", "library/alpine"), Some("hub"));
        assert_eq!(who("index.docker.io", "library/alpine"), Some("hub"));
        assert_eq!(who("old.example", "x"), Some("u"));
        assert_eq!(who("helper.example", "x"), None);
        let bob = credential_for(&creds, "registry.test:5000", "a").unwrap();
        assert_eq!(bob.password, "pa:ss");
        assert!(!format!("{bob:?}").contains("pa:ss"));
    }

    #[test]
    fn errors_say_where_without_quoting_the_file() {
        let secret = b64("bob:s3cr3t");
        for bad in [
            format!(r#"{{"auths": {{"r": {{"auth": "{secret}"}}"#),
            format!(r#"{{"auth": {{"r": {{"auth": "{secret}"}}}}}}"#),
            r#"{"auths": {"r": {"auth": "not base64!"}}}"#.to_string(),
            format!(r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#, b64("nocolon")),
        ] {
            let e = parse_auth_file(bad.as_bytes()).unwrap_err();
            assert!(!e.contains(&secret) && !e.contains("s3cr3t"), "{e}");
            assert!(!e.contains("nocolon"), "{e}");
        }
    }
}
