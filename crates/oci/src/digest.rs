//! Content digests: parsing and streaming verification.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::Digest as _;

/// A validated content digest (`sha256:<64 hex>` or `sha512:<128 hex>`).
///
/// Validation matters beyond correctness: digests from a manifest become
/// directory names in the layer store, so nothing but lowercase hex may reach
/// a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Algorithm {
    Sha256,
    Sha512,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid or unsupported digest {0:?} (expected sha256:<64 hex> or sha512:<128 hex>)")]
pub struct DigestParseError(String);

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DigestParseError(s.to_string());
        let (algo, hex) = s.split_once(':').ok_or_else(err)?;
        let (algorithm, len) = match algo {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(err()),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm_name(), self.hex)
    }
}

impl Digest {
    /// `sha256` or `sha512`.
    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// A file name for this digest: no ':' (the overlayfs lowerdir separator).
    pub fn file_name(&self) -> String {
        format!("{}-{}", self.algorithm_name(), self.hex)
    }

    /// The hexadecimal part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `data`.
    pub(crate) fn sha256_of(data: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(sha2::Sha256::digest(data)),
        }
    }

    /// The digest of `data`, with this digest's algorithm.
    pub(crate) fn of(&self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }

    /// The short form used in console lines (`sha256:0123456789ab`).
    pub fn short(&self) -> String {
        format!("{}:{}", self.algorithm_name(), &self.hex[..12])
    }

    pub(crate) fn hasher(&self) -> Hasher {
        match self.algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// Hashes everything read through it, and refuses to read past the size the
/// manifest announced: a registry streaming garbage forever must not be able
/// to fill the disk before the digest check gets a chance to fail.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
    limit: Option<u64>,
    exceeded: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub(crate) fn new(inner: R, expected: &Digest, limit: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            hasher: expected.hasher(),
            read: 0,
            limit,
            exceeded: false,
        }
    }

    pub(crate) fn exceeded_limit(&self) -> bool {
        self.exceeded
    }

    /// Reads whatever is left, then returns the digest of the whole stream.
    pub(crate) fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.limit.is_some_and(|limit| self.read > limit) {
            self.exceeded = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "blob is larger than its descriptor says",
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let s = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.file_name(), s.replace(':', "-"));
        assert_eq!(d.short(), "sha256:0123456789ab");
        for bad in [
            "sha256:abc",
            "md5:0123",
            "sha256:../../etc/passwd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}/", "a".repeat(63)),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn verifying_reader() {
        let data = b"hello world";
        let expected: Digest =
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
                .parse()
                .unwrap();
        let mut r = VerifyingReader::new(&data[..], &expected, Some(11));
        let mut first = [0u8; 4];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish().unwrap(), expected);

        let r = VerifyingReader::new(&data[..], &expected, Some(5));
        assert!(r.finish().is_err());
    }

    /// Reads of any size, over a megabyte, give the digest of the whole.
    #[test]
    fn reads_of_any_size_give_the_digest_of_the_whole() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        for algorithm in ["sha256", "sha512"] {
            let zero = match algorithm {
                "sha256" => "0".repeat(64),
                _ => "0".repeat(128),
            };
            let kind: Digest = format!("{algorithm}:{zero}").parse().unwrap();
            let expected = kind.of(&data);
            let mut r = VerifyingReader::new(&data[..], &expected, Some(data.len() as u64));
            let mut buf = [0u8; 4096];
            for size in [1, 511, 512, 4096].iter().cycle().take(100) {
                r.read_exact(&mut buf[..*size]).unwrap();
            }
            assert_eq!(r.finish().unwrap(), expected, "{algorithm}");
        }
    }
}
