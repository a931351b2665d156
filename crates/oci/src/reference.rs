//! Image references: the plan's typed [`ImageRef`], which b2c-cmdline
//! parses, as oci-spec's `Reference`.

pub use b2c_cmdline::{ImageRef, ReferenceError};
use oci_spec::distribution::Reference;

/// `image` as oci-spec names it.
pub fn to_reference(image: &ImageRef) -> Reference {
    let (registry, repository) = (image.registry().into(), image.repository().into());
    match (image.tag(), image.digest()) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.into(), d.into())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").into()),
    }
}

/// Parses `s` as a boot does ([`ImageRef::parse`]) into oci-client's type.
pub fn parse_reference(s: &str) -> Result<Reference, ReferenceError> {
    ImageRef::parse(s).map(|r| to_reference(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let ours = parse_reference(c).ok();
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
        assert!(parse_reference("x:ü").is_err());
    }
}
