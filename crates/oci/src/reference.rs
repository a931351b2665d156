//! Image references as users write them on the kernel command line.

use oci_client::Reference;

/// Why a reference could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error(
        "image reference {reference:?} uses the transport {transport:?}: only registry \
         references (docker://… or a plain name) can be pulled"
    )]
    UnsupportedTransport {
        reference: String,
        transport: String,
    },
}

/// Parse a reference the way podman does for registry images:
/// `docker://host:port/name:tag`, `host/name@sha256:…`, or a short name
/// (`alpine` is `docker.io/library/alpine:latest`).
///
/// Other containers-image transports (`oci:`, `docker-archive:`, …) name
/// local files that do not exist in an initramfs, so they are refused with an
/// error that says so rather than being misread as a registry host.
pub fn parse_reference(s: &str) -> Result<Reference, ReferenceError> {
    let trimmed = s.trim();
    let name = match trimmed.split_once("://") {
        Some(("docker", rest)) => rest,
        Some((transport, _)) => {
            return Err(ReferenceError::UnsupportedTransport {
                reference: s.to_string(),
                transport: transport.to_string(),
            })
        }
        None => {
            // `oci:dir:tag` and friends: a known transport name before the
            // first ':' that is not followed by a port number.
            if let Some((transport, _)) = trimmed.split_once(':') {
                if KNOWN_TRANSPORTS.contains(&transport) {
                    return Err(ReferenceError::UnsupportedTransport {
                        reference: s.to_string(),
                        transport: transport.to_string(),
                    });
                }
            }
            trimmed
        }
    };
    parse_name(name).map_err(|reason| ReferenceError::Invalid {
        reference: s.to_string(),
        reason: reason.to_string(),
    })
}

/// The distribution reference grammar, by hand: oci-spec's `FromStr`
/// compiles a regex whose Unicode `\w{0,127}` takes ~380 M instructions
/// the first time (0.6 s under QEMU TCG), on every boot.
fn parse_name(s: &str) -> Result<Reference, &'static str> {
    if s.is_empty() {
        return Err("repository name must have at least one component");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    const INVALID: &str = "invalid reference format";
    if let Some(tag) = tag {
        let b = tag.as_bytes();
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        if b.is_empty()
            || b.len() > 128
            || !word(b[0])
            || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
        {
            return Err(INVALID);
        }
    }
    if let Some(d) = digest {
        let (alg, hex) = d.split_once(':').ok_or(INVALID)?;
        let alg_ok = alg.split(['-', '_', '+', '.']).all(|part| {
            part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && part.bytes().all(|c| c.is_ascii_alphanumeric())
        });
        if !alg_ok || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(INVALID);
        }
        let want = match alg {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err("unsupported digest algorithm"),
        };
        if hex.len() != want {
            return Err("invalid checksum digest length");
        }
    }
    // An optional domain (host[:port]) before the path components.
    let components: Vec<&str> = name.split('/').collect();
    let (domain, path) = match components.split_first() {
        Some((first, rest)) if !rest.is_empty() && valid_domain(first) => (Some(*first), rest),
        _ => (None, &components[..]),
    };
    if !path.iter().all(|c| valid_path_component(c)) {
        return Err(INVALID);
    }
    // oci-spec's split_domain: which first component is a registry.
    let (mut registry, mut repository) = match domain {
        Some(d) if d.contains(['.', ':']) || d == "localhost" => (d.to_string(), path.join("/")),
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if registry == "index.docker.io" {
        registry = "docker.io".into();
    }
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if repository.len() > 255 {
        return Err("repository name must not be more than 255 characters");
    }
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.into(), d.into())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").into()),
    })
}

/// `host[:port]`: dot-separated labels of `[a-zA-Z0-9-]`, not starting or
/// ending with '-', then an optional numeric port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

const KNOWN_TRANSPORTS: &[&str] = &[
    "oci",
    "oci-archive",
    "docker-archive",
    "docker-daemon",
    "containers-storage",
    "dir",
    "ostree",
    "sif",
    "tarball",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = parse_reference(s).unwrap();
        (
            r.registry().to_string(),
            r.repository().to_string(),
            r.tag().map(str::to_string),
            r.digest().map(str::to_string),
        )
    }

    #[test]
    fn short_names_resolve_to_docker_hub() {
        assert_eq!(
            parts("alpine"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parts("gfx-ci/ci-tron:v2"),
            (
                "docker.io".into(),
                "gfx-ci/ci-tron".into(),
                Some("v2".into()),
                None
            )
        );
    }

    #[test]
    fn docker_transport_and_ports() {
        assert_eq!(
            parts("docker://127.0.0.1:5000/x/y:t1"),
            (
                "127.0.0.1:5000".into(),
                "x/y".into(),
                Some("t1".into()),
                None
            )
        );
        assert_eq!(
            parts("registry.test/busybox"),
            (
                "registry.test".into(),
                "busybox".into(),
                Some("latest".into()),
                None
            )
        );
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let (reg, repo, _tag, digest) = parts(&format!("quay.io/x/y@{d}"));
        assert_eq!((reg.as_str(), repo.as_str()), ("quay.io", "x/y"));
        assert_eq!(digest.as_deref(), Some(d.as_str()));
    }

    /// The hand-written parser agrees with oci-spec's regex.
    #[test]
    fn same_answers_as_oci_spec() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let cases = [
            "alpine".to_string(),
            "alpine:3".into(),
            "library/alpine".into(),
            "docker.io/alpine".into(),
            "index.docker.io/alpine:1".into(),
            "docker.io/a/b/c:t".into(),
            "localhost/x".into(),
            "localhost:5000/x:y".into(),
            "10.0.0.1:5000/b2c/busybox:latest".into(),
            "registry.example/mesa/test:42".into(),
            "quay.io/x/y@".to_string() + &d,
            "quay.io/x/y:t@".to_string() + &d,
            "a__b/c-d/e.f".into(),
            "a---b".into(),
            "a___b".into(),
            "a..b".into(),
            "A/b".into(),
            "foo/Bar".into(),
            "x:".into(),
            ":x".into(),
            "x:-bad".into(),
            "x:_ok".into(),
            "x:".to_string() + &"t".repeat(128),
            "x:".to_string() + &"t".repeat(129),
            "-a.b/c".into(),
            "a-.b/c".into(),
            "a.b:/c".into(),
            "a.b:x/c".into(),
            "x@sha256:abc".into(),
            "x@md5:".to_string() + &"a".repeat(32),
            "x@sha512:".to_string() + &"a".repeat(64),
            "x/".into(),
            "/x".into(),
            "x//y".into(),
            "host:5000".into(),
            "host:5000/".into(),
            "a/b:c/d".into(),
            "UPPER.example/x".into(),
            "r.io/".to_string() + &"a".repeat(300),
        ];
        for c in &cases {
            let ours = parse_name(c).ok();
            let theirs = c.parse::<Reference>().ok();
            let key = |r: &Reference| {
                (
                    r.registry().to_string(),
                    r.repository().to_string(),
                    r.tag().map(String::from),
                    r.digest().map(String::from),
                )
            };
            assert_eq!(ours.as_ref().map(key), theirs.as_ref().map(key), "{c}");
        }
        // The one difference: oci-spec's Unicode `\\w` lets non-ASCII tags
        // through; the distribution spec (and registries) only allow ASCII.
        assert!(parse_name("x:ü").is_err());
    }

    #[test]
    fn refused() {
        assert!(matches!(
            parse_reference("oci:/tmp/dir:tag"),
            Err(ReferenceError::UnsupportedTransport { .. })
        ));
        assert!(matches!(
            parse_reference("http://registry/x"),
            Err(ReferenceError::UnsupportedTransport { .. })
        ));
        assert!(matches!(
            parse_reference("foo/Bar"),
            Err(ReferenceError::Invalid { .. })
        ));
        assert!(matches!(
            parse_reference(""),
            Err(ReferenceError::Invalid { .. })
        ));
    }
}
