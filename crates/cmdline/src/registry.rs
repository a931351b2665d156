//! `b2c.insecure_registry` and `b2c.registry_mirror`: parsed and checked
//! with the command line, matched against image registries by the pull.

use std::fmt;

/// Which registries are reached without TLS verification, and which are
/// mirrored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registries {
    /// `host` or `host:port`, as users write them.
    insecure: Vec<String>,
    /// (registry as written, its mirror), in the order given.
    mirrors: Vec<(String, Mirror)>,
}

impl Registries {
    /// Adds a `b2c.insecure_registry` value.
    pub fn add_insecure(&mut self, entry: &str) -> Result<(), String> {
        let e = entry.trim();
        if e.is_empty() || e.contains(['/', ' ']) {
            return Err("expected host[:port], such as 10.0.0.1:5000".into());
        }
        self.insecure.push(e.to_string());
        Ok(())
    }

    /// Adds a `b2c.registry_mirror=REGISTRY=MIRROR` value.
    pub fn add_mirror(&mut self, value: &str) -> Result<(), String> {
        let usage = "expected REGISTRY=MIRROR, such as docker.io=mirror.example:5000";
        let (registry, mirror) = value.split_once('=').ok_or(usage)?;
        let registry = registry.trim();
        if registry.is_empty() || registry.contains(['/', ' ']) {
            return Err(format!(
                "{registry:?} is not a registry name (host[:port]); {usage}"
            ));
        }
        self.mirrors
            .push((registry.to_string(), Mirror::parse(mirror)?));
        Ok(())
    }

    /// An entry with a port matches that port only (`10.0.0.1:5000`); an
    /// entry without one matches the host on every port, since whoever can
    /// intercept one port of a host can intercept all of them. Hosts
    /// compare case-insensitively; `docker.io`, `index.docker.io` and
    /// `registry-1.docker.io` are one registry.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let registry = normalize_registry(registry);
        let (host, port) = split_host_port(&registry);
        self.insecure.iter().any(|entry| {
            let entry = normalize_registry(entry);
            let (h, p) = split_host_port(&entry);
            h == host && (p.is_none() || p == port)
        })
    }

    /// The mirrors of `registry` (as written in an image reference, port
    /// included; the Docker Hub names are one registry), in order.
    pub fn mirrors_of(&self, registry: &str) -> Vec<&Mirror> {
        let registry = normalize_registry(registry);
        self.mirrors
            .iter()
            .filter(|(r, _)| normalize_registry(r) == registry)
            .map(|(_, m)| m)
            .collect()
    }
}

/// Where to fetch instead of a registry: `host[:port]`, optionally with a
/// path prefix put before the repository (`harbor.example/hub-proxy`
/// serves `docker.io/library/alpine` as `hub-proxy/library/alpine`, as
/// Harbor proxy projects do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    pub host: String,
    pub prefix: Option<String>,
}

impl Mirror {
    fn parse(spec: &str) -> Result<Mirror, String> {
        let bad = |why: &str| format!("mirror {spec:?}: {why}");
        let spec = spec.trim().trim_end_matches('/');
        if spec.contains("://") {
            return Err(bad(
                "write host[:port][/path] without a scheme; for a plain-HTTP mirror add \
                 b2c.insecure_registry=HOST",
            ));
        }
        let (host, prefix) = match spec.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (spec, None),
        };
        if host.is_empty() || host.contains([' ', '@']) {
            return Err(bad("expected host[:port][/path]"));
        }
        if prefix.is_some_and(|p| p.split('/').any(str::is_empty) || p.contains(' ')) {
            return Err(bad("the path has an empty component"));
        }
        Ok(Mirror {
            host: host.to_string(),
            prefix: prefix.map(String::from),
        })
    }

    /// The repository to fetch from the mirror for `repository`.
    pub fn repository(&self, repository: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{repository}"),
            None => repository.to_string(),
        }
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(p) = &self.prefix {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// A registry name as written by users or in references, comparable: no
/// scheme or trailing slash, lower case, the Docker Hub aliases folded into
/// `docker.io` (oci-client resolves `docker.io` to `index.docker.io`; Docker
/// itself talks to `registry-1.docker.io`).
fn normalize_registry(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s)
        .trim_end_matches('/')
        .to_ascii_lowercase();
    match s.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => s,
    }
}

/// `host[:port]`, IPv6 literals in brackets (`[::1]:5000`); a bare IPv6
/// address has no port.
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insecure(entries: &[&str]) -> Registries {
        let mut r = Registries::default();
        for e in entries {
            r.add_insecure(e).unwrap();
        }
        r
    }

    #[test]
    fn insecure_entries_match_host_any_port_or_exact_port() {
        let o = insecure(&["10.0.0.1", "Reg.Test:5000", "[fd00::1]:443", "docker.io"]);
        assert!(o.is_insecure("10.0.0.1"));
        assert!(o.is_insecure("10.0.0.1:5000"));
        assert!(!o.is_insecure("10.0.0.11"));
        assert!(o.is_insecure("reg.test:5000"));
        assert!(!o.is_insecure("reg.test:5001"));
        assert!(!o.is_insecure("reg.test"));
        assert!(o.is_insecure("[fd00::1]:443"));
        assert!(!o.is_insecure("[fd00::1]:444"));
        assert!(o.is_insecure("index.docker.io"));
        assert!(!Registries::default().is_insecure("10.0.0.1"));
    }

    #[test]
    fn mirrors_match_docker_hub_aliases_and_keep_order() {
        let mut o = Registries::default();
        for m in [
            "docker.io=m1.test:5000",
            "quay.io=m2.test",
            "index.docker.io=m3.test/hub/",
            "reg.test:5000=m4.test",
        ] {
            o.add_mirror(m).unwrap();
        }
        let hosts =
            |r: &str| -> Vec<String> { o.mirrors_of(r).iter().map(|m| m.to_string()).collect() };
        assert_eq!(hosts("docker.io"), ["m1.test:5000", "m3.test/hub"]);
        assert_eq!(
            hosts("registry-1.docker.io"),
            ["m1.test:5000", "m3.test/hub"]
        );
        assert_eq!(hosts("reg.test:5000"), ["m4.test"]);
        assert!(hosts("reg.test").is_empty());
        assert_eq!(
            o.mirrors_of("docker.io")[1].repository("library/alpine"),
            "hub/library/alpine"
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let mirror = |m: &str| Registries::default().add_mirror(m);
        for bad in [
            "docker.io=http://m.test",
            "docker.io=m.test//x",
            "docker.io=",
            "docker.io",
            "=m.test",
            "a/b=m.test",
        ] {
            assert!(mirror(bad).is_err(), "{bad}");
        }
        assert!(Registries::default().add_insecure("").is_err());
        assert!(Registries::default().add_insecure("h/x").is_err());
    }
}
