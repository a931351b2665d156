//! /etc/resolv.conf.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

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

/// What one interface contributes to resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Contribution {
    /// Where it comes from, for the file's header comment.
    pub origin: String,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
}

/// One resolv.conf fed by several interfaces, rewritten whenever one of them
/// changes.
///
/// A lease renewal must not overwrite what the other interfaces put there,
/// so every writer goes through the same slots. Slots are numbered in the
/// order the interfaces were listed on the command line: that order, not
/// which DHCP server answered first, decides whose name servers come first.
#[derive(Debug, Clone)]
pub(crate) struct SharedResolvConf {
    inner: Arc<Mutex<Slots>>,
}

#[derive(Debug)]
struct Slots {
    path: PathBuf,
    slots: Vec<Option<Contribution>>,
}

impl SharedResolvConf {
    pub fn new(path: impl Into<PathBuf>, slots: usize) -> Self {
        SharedResolvConf {
            inner: Arc::new(Mutex::new(Slots {
                path: path.into(),
                slots: vec![None; slots],
            })),
        }
    }

    /// Fills a slot without writing the file.
    pub fn set(&self, slot: usize, contribution: Contribution) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = inner.slots.get_mut(slot) {
            *s = Some(contribution);
        }
    }

    /// Writes the file from every filled slot. The lock is held while
    /// writing so that two renewals cannot interleave their renames.
    pub fn write(&self) -> Result<(), NetError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        write_resolv_conf(&inner.path, &merge(inner.slots.iter().flatten()))
    }

    pub fn update(&self, slot: usize, contribution: Contribution) -> Result<(), NetError> {
        self.set(slot, contribution);
        self.write()
    }
}

/// The text of a resolv.conf holding every contribution, in order, without
/// duplicates.
pub(crate) fn merge<'a>(parts: impl IntoIterator<Item = &'a Contribution>) -> String {
    let mut origins: Vec<&str> = Vec::new();
    let mut dns: Vec<Ipv4Addr> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    for part in parts {
        origins.push(&part.origin);
        for server in &part.dns {
            if !dns.contains(server) {
                dns.push(*server);
            }
        }
        search.extend(part.search.iter().cloned());
    }
    if origins.is_empty() {
        origins.push("no configured interface");
    }
    render_resolv_conf(&origins.join(", "), &dns, &search)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(origin: &str, dns: &[[u8; 4]], search: &[&str]) -> Contribution {
        Contribution {
            origin: origin.into(),
            dns: dns.iter().map(|&o| o.into()).collect(),
            search: search.iter().map(|&s| s.into()).collect(),
        }
    }

    #[test]
    fn merges_in_order_without_duplicates() {
        let text = merge(&[
            part("the static configuration of eth0", &[[10, 0, 0, 53]], &[]),
            part(
                "the DHCP lease on eth1",
                &[[10, 1, 0, 1], [10, 0, 0, 53]],
                &["lab.test"],
            ),
            part(
                "the static configuration of eth2",
                &[],
                &["lab.test", "x.test"],
            ),
        ]);
        assert_eq!(
            text,
            "# written by b2c from the static configuration of eth0, the DHCP lease on eth1, \
             the static configuration of eth2\n\
             search lab.test x.test\n\
             nameserver 10.0.0.53\n\
             nameserver 10.1.0.1\n"
        );
    }

    #[test]
    fn shared_slots_keep_their_order_across_updates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let shared = SharedResolvConf::new(&path, 2);
        // The DHCP interface listed first answers last.
        shared.set(1, part("static b", &[[10, 0, 0, 2]], &[]));
        shared
            .update(0, part("lease a", &[[10, 0, 0, 1]], &[]))
            .unwrap();
        let first = fs::read_to_string(&path).unwrap();
        assert!(
            first.ends_with("nameserver 10.0.0.1\nnameserver 10.0.0.2\n"),
            "{first}"
        );
        // A renewal that changes the lease's server keeps the other slot.
        shared
            .update(0, part("lease a", &[[10, 0, 0, 9]], &[]))
            .unwrap();
        let renewed = fs::read_to_string(&path).unwrap();
        assert!(
            renewed.ends_with("nameserver 10.0.0.9\nnameserver 10.0.0.2\n"),
            "{renewed}"
        );
        // A slot out of range is ignored rather than panicking a renewal.
        shared.set(7, part("nowhere", &[[1, 1, 1, 1]], &[]));
        shared.write().unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("1.1.1.1"));
    }

    #[test]
    fn nothing_configured_still_writes_a_file() {
        assert_eq!(
            merge(&[]),
            "# written by b2c from no configured interface\n"
        );
    }

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
