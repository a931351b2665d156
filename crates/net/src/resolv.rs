//! /etc/resolv.conf.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::NetError;

/// glibc and musl both read only the first three `nameserver` lines (MAXNS);
/// more would only suggest they are used.
const MAX_NAMESERVERS: usize = 3;

/// The text of a resolv.conf: the search domains first (so the domain the
/// lease names is tried first), then the name servers.
pub fn render_resolv_conf(origin: &str, dns: &[Ipv4Addr], search: &[String]) -> String {
    let mut out = format!("# written by b2c from {origin}\n");
    let mut domains: Vec<&str> = Vec::new();
    for domain in search {
        let domain = domain.trim().trim_end_matches('.');
        // A name with spaces or control characters (a newline from a broken
        // or hostile server) would corrupt the file's line structure.
        let valid = !domain.is_empty() && domain.chars().all(|c| c.is_ascii_graphic());
        if valid && !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    if !domains.is_empty() {
        let _ = writeln!(out, "search {}", domains.join(" "));
    }
    for server in dns.iter().take(MAX_NAMESERVERS) {
        let _ = writeln!(out, "nameserver {server}");
    }
    out
}

/// Writes the file, creating its directory: an initramfs may have no /etc.
///
/// The new text goes to a temporary file that is renamed over the old one, so
/// a resolver reading concurrently (a service container during a lease
/// renewal) never sees a half-written file.
pub fn write_resolv_conf(path: &Path, text: &str) -> Result<(), NetError> {
    let err = |source| NetError::ResolvConf {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".b2c-tmp");
    fs::write(&tmp, text).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_search_then_nameservers() {
        let text = render_resolv_conf(
            "the DHCP lease on eth0",
            &[
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 3),
                Ipv4Addr::new(10, 0, 0, 4),
            ],
            &[
                "ci.example.".into(),
                "example.org".into(),
                "ci.example".into(),
                "evil\nnameserver 6.6.6.6".into(),
            ],
        );
        assert_eq!(
            text,
            "# written by b2c from the DHCP lease on eth0\n\
             search ci.example example.org\n\
             nameserver 10.0.0.1\n\
             nameserver 10.0.0.2\n\
             nameserver 10.0.0.3\n"
        );
    }

    #[test]
    fn renders_without_domain() {
        let text = render_resolv_conf("x", &[Ipv4Addr::new(192, 168, 1, 1)], &[]);
        assert_eq!(text, "# written by b2c from x\nnameserver 192.168.1.1\n");
    }

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/resolv.conf");
        write_resolv_conf(&path, "one\n").unwrap();
        write_resolv_conf(&path, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
