//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`) and the streaming hasher behind them.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm kiln can verify. Registries and OCI layouts may name others; those are
/// refused rather than trusted unverified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated `algorithm:hex` digest. The hex part is always lowercase, so two equal
/// contents always have equal `Digest` values and equal strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {input:?}: missing \"algorithm:\" prefix (expected sha256:<64 hex> or sha512:<128 hex>)")]
    MissingAlgorithm { input: String },
    #[error(
        "invalid digest {input:?}: unsupported algorithm {algorithm:?} (supported: sha256, sha512)"
    )]
    UnsupportedAlgorithm { input: String, algorithm: String },
    #[error(
        "invalid digest {input:?}: {algorithm} needs {expected} hex characters, found {found}"
    )]
    WrongLength {
        input: String,
        algorithm: Algorithm,
        expected: usize,
        found: usize,
    },
    #[error("invalid digest {input:?}: encoded part must be lowercase hex [a-f0-9]")]
    NotLowerHex { input: String },
}

impl Digest {
    pub fn parse(input: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = input.split_once(':') else {
            return Err(DigestError::MissingAlgorithm {
                input: input.to_string(),
            });
        };
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(DigestError::UnsupportedAlgorithm {
                    input: input.to_string(),
                    algorithm: other.to_string(),
                })
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::WrongLength {
                input: input.to_string(),
                algorithm,
                expected: algorithm.hex_len(),
                found: hex.len(),
            });
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::NotLowerHex {
                input: input.to_string(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// Digest of an in-memory byte string (manifests, configs: small documents).
    pub fn of_bytes(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = algorithm.hasher();
        hasher.update(bytes);
        hasher.finish()
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of_bytes(Algorithm::Sha256, bytes)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as `docker images` shows image IDs.
    pub fn short_hex(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Digest::parse(d.as_ref())
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        // A kiln Digest is always a valid OCI digest: sha256/sha512 with lowercase hex.
        oci_spec::image::Digest::from_str(&d.to_string())
            .unwrap_or_else(|e| unreachable!("valid digest {d} rejected by oci-spec: {e}"))
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// A writer that hashes everything passed through it (for diff IDs computed on the fly).
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: std::io::Write> HashingWriter<W> {
    pub fn new(inner: W, algorithm: Algorithm) -> Self {
        HashingWriter {
            inner,
            hasher: algorithm.hasher(),
            written: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.written)
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_known_vectors() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY_SHA256);
        let d = Digest::of_bytes(Algorithm::Sha512, b"abc");
        assert!(d.to_string().starts_with("sha512:ddaf35a193617aba"));
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn parses_and_round_trips() {
        let d = Digest::parse(EMPTY_SHA256).expect("valid");
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(d.short_hex(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_malformed_digests_naming_the_problem() {
        let cases = [
            ("e3b0c44298fc", "missing \"algorithm:\""),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e",
                "unsupported algorithm \"md5\"",
            ),
            ("sha256:abc", "needs 64 hex characters, found 3"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "lowercase hex",
            ),
            ("sha512:00", "needs 128 hex characters, found 2"),
            ("sha256:", "found 0"),
        ];
        for (input, want) in cases {
            let err = Digest::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
