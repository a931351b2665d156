//! Image references as users write them on the kernel command line,
//! parsed once, when the plan is derived, so that a bad one is reported by
//! `b2c cmdline` and before a boot does any I/O.

use std::fmt;

/// A registry image: `registry/repository` with a tag, a digest or both.
///
/// Short names are completed as podman does (`alpine` is
/// `docker.io/library/alpine:latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference the way podman does for registry images:
    /// `docker://host:port/name:tag`, `host/name@sha256:…`, or a short name.
    ///
    /// Other containers-image transports (`oci:`, `docker-archive:`, …)
    /// name local files that do not exist in an initramfs, so they are
    /// refused with an error that says so rather than being misread as a
    /// registry host.
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        parse_reference(s)
    }

    /// `host[:port]`, as written (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `latest` when neither a tag nor a digest was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

/// `registry/repository[:tag][@digest]`: the whole reference, as the image
/// store records it.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// What names the image of a container: a registry reference, or the ID
/// of an image in a read-only image store (`b2c.storage`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageName {
    Registry(ImageRef),
    /// 64 lowercase hex digits: the image's config digest, as podman shows
    /// it. Only an image store can hold an image by ID.
    Id(String),
}

impl ImageName {
    /// An image ID (`0123…cdef`, 64 hex digits, or `sha256:` and those), as
    /// podman takes one; else a registry reference. Pure.
    pub fn parse(s: &str) -> Result<ImageName, ReferenceError> {
        let trimmed = s.trim();
        let hex = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
        if is_image_id(hex) {
            return Ok(ImageName::Id(hex.to_ascii_lowercase()));
        }
        ImageRef::parse(s).map(ImageName::Registry)
    }

    pub fn registry(&self) -> Option<&ImageRef> {
        match self {
            ImageName::Registry(r) => Some(r),
            ImageName::Id(_) => None,
        }
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageName::Registry(r) => r.fmt(f),
            ImageName::Id(id) => f.write_str(id),
        }
    }
}

/// 64 hex digits: what distribution's grammar refuses as a repository
/// name, because it is an image ID.
fn is_image_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Whether `written` could be a short image ID: hex digits only, as podman
/// looks such a name up among stored image IDs before it pulls.
pub fn could_be_short_id(written: &str) -> bool {
    (3..=64).contains(&written.len()) && written.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Why a reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

fn parse_reference(s: &str) -> Result<ImageRef, ReferenceError> {
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
/// the first time (0.6 s under QEMU TCG), on every boot. b2c-oci's tests
/// hold this parser against oci-spec's.
fn parse_name(s: &str) -> Result<ImageRef, &'static str> {
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
    if is_image_id(name) {
        return Err("a 64-hex-digit name is an image ID, not a repository name");
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
    let tag = match (tag, digest) {
        (None, None) => Some("latest"),
        (tag, _) => tag,
    };
    Ok(ImageRef {
        registry,
        repository,
        tag: tag.map(String::from),
        digest: digest.map(String::from),
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
        let r = ImageRef::parse(s).unwrap();
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
        let (reg, repo, tag, digest) = parts(&format!("quay.io/x/y@{d}"));
        assert_eq!((reg.as_str(), repo.as_str()), ("quay.io", "x/y"));
        assert_eq!(tag, None);
        assert_eq!(digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn shown_whole() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (written, whole) in [
            ("alpine", "docker.io/library/alpine:latest".to_string()),
            (
                "docker://10.0.0.1:5000/b2c/busybox:1",
                "10.0.0.1:5000/b2c/busybox:1".into(),
            ),
            (&format!("quay.io/x:t@{d}"), format!("quay.io/x:t@{d}")),
            (&format!("quay.io/x@{d}"), format!("quay.io/x@{d}")),
        ] {
            assert_eq!(ImageRef::parse(written).unwrap().to_string(), whole);
        }
    }

    #[test]
    fn image_ids_are_not_docker_hub_repositories() {
        let id = "0123456789abcdef".repeat(4);
        assert!(matches!(
            ImageRef::parse(&id),
            Err(ReferenceError::Invalid { .. })
        ));
        assert_eq!(ImageName::parse(&id), Ok(ImageName::Id(id.clone())));
        assert_eq!(
            ImageName::parse(&format!("sha256:{}", id.to_uppercase())),
            Ok(ImageName::Id(id.clone()))
        );
        assert!(matches!(
            ImageName::parse("alpine"),
            Ok(ImageName::Registry(_))
        ));
        // A short ID is also a valid repository name: it stays one, and
        // is looked up among the stores' IDs first.
        assert!(matches!(
            ImageName::parse("0123abcd"),
            Ok(ImageName::Registry(_))
        ));
        assert!(could_be_short_id("0123abcd"));
        assert!(!could_be_short_id("alpine"));
        assert!(!could_be_short_id("ab"));
    }

    #[test]
    fn refused() {
        assert!(matches!(
            ImageRef::parse("oci:/tmp/dir:tag"),
            Err(ReferenceError::UnsupportedTransport { .. })
        ));
        assert!(matches!(
            ImageRef::parse("http://registry/x"),
            Err(ReferenceError::UnsupportedTransport { .. })
        ));
        assert!(matches!(
            ImageRef::parse("foo/Bar"),
            Err(ReferenceError::Invalid { .. })
        ));
        assert!(matches!(
            ImageRef::parse(""),
            Err(ReferenceError::Invalid { .. })
        ));
    }
}
