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
    name.parse::<Reference>()
        .map_err(|e| ReferenceError::Invalid {
            reference: s.to_string(),
            reason: e.to_string(),
        })
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
