//! The certificates every HTTPS client of a boot trusts: the bundled
//! webpki roots and `b2c.ca_cert`. The OS store is never used: an initramfs
//! has none.

use std::fmt;
use std::sync::{Arc, OnceLock};

use b2c_cmdline::Proxy;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::{fetch, FetchOptions};

/// Trust roots: built once per boot, then handed (cheaply cloned) to every
/// client. [`Default`] is the bundled roots alone.
#[derive(Clone)]
pub struct Trust {
    /// From PEM files, every certificate of a bundle; the bundled roots
    /// are static and not copied.
    extra: Arc<[CertificateDer<'static>]>,
    /// All of them parsed, as rustls verifies with them: done once, not
    /// for every client (the ~150 bundled roots took ~30 ms under TCG,
    /// on the way of every pull).
    store: Arc<RootCertStore>,
}

impl Default for Trust {
    fn default() -> Trust {
        Trust {
            extra: Arc::new([]),
            store: bundled_store(),
        }
    }
}

/// The bundled roots, parsed on first use; [`Trust::prepare`] has a thread
/// do it while the boot waits for the network.
fn bundled_store() -> Arc<RootCertStore> {
    static STORE: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let (_, unusable) =
                store.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec());
            debug_assert_eq!(unusable, 0, "a bundled root rustls cannot use");
            Arc::new(store)
        })
        .clone()
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trust {{ bundled roots + {} added }}", self.added())
    }
}

/// A `b2c.ca_cert` source that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct TrustError {
    /// The path or URL (without credentials).
    pub what: String,
    pub problem: String,
}

impl Trust {
    /// The bundled webpki roots alone.
    pub fn bundled() -> Trust {
        Trust::default()
    }

    /// Parses the bundled roots now, so that the first client need not:
    /// for a thread of its own, early in the boot.
    pub fn prepare() {
        bundled_store();
    }

    /// These roots and every certificate of the PEM text `pem` (a file or
    /// a bundle), which `what` names in errors. A PEM without any
    /// certificate is an error.
    pub fn with_pem(self, what: &str, pem: &[u8]) -> Result<Trust, TrustError> {
        let bad = |problem: String| TrustError {
            what: super::redact(what),
            problem,
        };
        let mut extra = self.extra.to_vec();
        let mut store = (*self.store).clone();
        let before = extra.len();
        // Every certificate of a bundle, not only its first.
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| bad(format!("not a valid PEM file: {e}")))?;
            store.add(cert.clone()).map_err(|e| {
                bad(format!(
                    "certificate {} cannot be a trust root: {e}",
                    extra.len() - before + 1
                ))
            })?;
            extra.push(cert);
        }
        if extra.len() == before {
            return Err(bad("holds no PEM certificate".into()));
        }
        Ok(Trust {
            extra: extra.into(),
            store: Arc::new(store),
        })
    }

    /// The bundled roots and the `b2c.ca_cert` sources: paths (in the
    /// initramfs) or http(s) URLs, fetched through `proxy` with the bundled
    /// roots only. Read once per boot.
    pub async fn load(sources: &[String], proxy: &Proxy) -> Result<Trust, TrustError> {
        let mut trust = Trust::bundled();
        for source in sources {
            let bad = |problem: String| TrustError {
                what: super::redact(source),
                problem,
            };
            let pem = if source.starts_with("http://") || source.starts_with("https://") {
                let options = FetchOptions {
                    proxy: proxy.clone(),
                    ..FetchOptions::default()
                };
                fetch(source, &options)
                    .await
                    .map_err(|e| bad(format!("cannot fetch it: {e}")))?
            } else {
                tokio::fs::read(source)
                    .await
                    .map_err(|e| bad(format!("cannot read it: {e}")))?
            };
            trust = trust.with_pem(source, &pem)?;
        }
        Ok(trust)
    }

    /// Every trusted certificate, DER-encoded: the bundled roots, then the
    /// added ones in order.
    pub fn certificates(&self) -> impl Iterator<Item = &[u8]> {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .chain(self.extra.iter())
            .map(|c| c.as_ref())
    }

    /// How many certificates were added to the bundled roots.
    pub fn added(&self) -> usize {
        self.extra.len()
    }

    /// The roots as rustls verifies with them.
    pub(crate) fn store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `der` as a PEM block.
    pub(crate) fn pem(der: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                b64.push(if i <= chunk.len() {
                    T[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(line).unwrap());
            s.push('\n');
        }
        s.push_str("-----END CERTIFICATE-----\n");
        s
    }

    #[test]
    fn bundles_are_split_into_every_certificate() {
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let base = Trust::bundled().certificates().count();
        assert_eq!(base, roots.len());
        let bundle = format!(
            "{}some comment\n{}{}",
            pem(roots[0].as_ref()),
            pem(roots[1].as_ref()),
            pem(roots[2].as_ref())
        );
        let trust = Trust::bundled()
            .with_pem("bundle.pem", bundle.as_bytes())
            .unwrap()
            .with_pem("one.pem", pem(roots[3].as_ref()).as_bytes())
            .unwrap();
        assert_eq!(trust.added(), 4);
        let all: Vec<&[u8]> = trust.certificates().collect();
        assert_eq!(all.len(), base + 4);
        assert_eq!(all[base + 1], roots[1].as_ref());
        assert_eq!(all[base + 3], roots[3].as_ref());
        assert_eq!(trust.store().len(), base + 4);
        assert_eq!(Trust::bundled().store().len(), base);
        // Clones share the certificates; Debug does not dump them.
        assert_eq!(trust.clone().added(), 4);
        assert_eq!(format!("{trust:?}"), "Trust { bundled roots + 4 added }");
    }

    #[test]
    fn a_certificate_that_cannot_be_a_root_is_an_error_naming_it() {
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let bundle = format!("{}{}", pem(roots[0].as_ref()), pem(b"not DER at all"));
        let err = Trust::bundled()
            .with_pem("/etc/farm-ca.pem", bundle.as_bytes())
            .unwrap_err();
        assert_eq!(err.what, "/etc/farm-ca.pem");
        assert!(
            err.problem
                .starts_with("certificate 2 cannot be a trust root: "),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_an_error_naming_it() {
        let err = Trust::bundled()
            .with_pem("https://u:pw@ca.test/ca.pem", b"not a certificate")
            .unwrap_err();
        assert_eq!(err.what, "https://ca.test/ca.pem");
        assert!(
            err.to_string().ends_with("holds no PEM certificate"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn load_reads_paths_and_names_the_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        let bundle = [pem(roots[0].as_ref()), pem(roots[1].as_ref())].concat();
        std::fs::write(&path, bundle).unwrap();
        let path = path.to_string_lossy().into_owned();
        let trust = Trust::load(std::slice::from_ref(&path), &Proxy::default())
            .await
            .unwrap();
        assert_eq!(trust.added(), 2);
        let missing = format!("{path}.missing");
        let err = Trust::load(&[path, missing.clone()], &Proxy::default())
            .await
            .unwrap_err();
        assert_eq!(err.what, missing);
        assert!(err.problem.contains("No such file"), "{err}");
    }
}
