//! Loaded DKIM keys. A [`SelectorKey`] is one selector of one domain with its private key in
//! memory (shared, never copied per message) and its public half for DNS checks.
//!
//! The key file is read and parsed once ([`super::private_key`]): that one parse gives the
//! signing key, the `p=` bytes, the RSA size and the algorithm check, so a reload of many
//! selectors does not decode each PEM several times.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_auth::common::crypto::{Sha256, SigningKey};
use mail_auth::common::headers::Writable;

use super::Algorithm;
use super::keygen::KeyError;
use super::private_key::SigningPair as KeyPair;

/// The private key, behind an `Arc` so every message's signer shares one parsed key.
#[derive(Clone)]
pub struct SharedKey(Arc<KeyPair>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match &*self.0 {
            KeyPair::Rsa(k) => k.sign(input),
            KeyPair::Ed25519(k) => k.sign(input),
        }
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        match &*self.0 {
            KeyPair::Rsa(_) => mail_auth::common::crypto::Algorithm::RsaSha256,
            KeyPair::Ed25519(_) => mail_auth::common::crypto::Algorithm::Ed25519Sha256,
        }
    }
}

/// One selector of one domain.
pub struct SelectorKey {
    pub selector: String,
    pub algorithm: Algorithm,
    pub key_file: PathBuf,
    pub key: SharedKey,
    /// The `p=` value before base64 (SPKI DER for RSA, 32 raw bytes for Ed25519).
    pub public_key: Vec<u8>,
    /// RSA modulus size.
    pub bits: Option<usize>,
    /// When the key file was last modified (rotation age).
    pub modified: Option<std::time::SystemTime>,
}

impl std::fmt::Debug for SelectorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectorKey")
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("key_file", &self.key_file)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// A key that loads but deserves a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    GroupReadable(u32),
    WeakRsa(usize),
}

/// A key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a {algorithm} private key in PEM (PKCS#8, or PKCS#1 for RSA): {detail}")]
    Malformed {
        path: PathBuf,
        algorithm: Algorithm,
        detail: String,
    },
    #[error(
        "{path}: {bits}-bit RSA key refused; DKIM verifiers reject keys under 1024 bits (RFC 8301), use 2048"
    )]
    TooSmall { path: PathBuf, bits: usize },
}

impl SelectorKey {
    /// Reads and parses a key file, refusing what no verifier would accept.
    pub fn load(
        selector: &str,
        algorithm: Algorithm,
        path: &Path,
    ) -> Result<(SelectorKey, Vec<KeyProblem>), KeyLoadError> {
        // Only a regular, bounded, not world-writable file: a FIFO or a device is an error,
        // never a hang.
        let pem =
            crate::regular_file::read_to_string(path).map_err(|source| KeyLoadError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let meta = std::fs::metadata(path).ok();
        let mut problems = Vec::new();
        if let Some(m) = &meta {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                problems.push(KeyProblem::GroupReadable(mode));
            }
        }
        let malformed = |detail: String| KeyLoadError::Malformed {
            path: path.to_path_buf(),
            algorithm,
            detail,
        };
        let parsed =
            super::private_key::inspect(algorithm, &pem).map_err(|e| malformed(e.to_string()))?;
        // Size first: a key under 1024 bits gets the RFC 8301 refusal, whatever else is wrong.
        if let Some(bits) = parsed.bits {
            if bits < 1024 {
                return Err(KeyLoadError::TooSmall {
                    path: path.to_path_buf(),
                    bits,
                });
            }
            if bits < 2048 {
                problems.push(KeyProblem::WeakRsa(bits));
            }
        }
        let loaded = parsed
            .load()
            .map_err(|e: KeyError| malformed(e.to_string()))?;
        let (pair, public_key, bits) = (loaded.pair, loaded.public_key, loaded.bits);
        Ok((
            SelectorKey {
                selector: selector.to_string(),
                algorithm,
                key_file: path.to_path_buf(),
                key: SharedKey(Arc::new(pair)),
                public_key,
                bits,
                modified: meta.and_then(|m| m.modified().ok()),
            },
            problems,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::keygen::{generate, pem_encode, write_private_key};
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn loads_pkcs1_and_pkcs8_alike() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = generate(Algorithm::RsaSha256, 2048).unwrap();
        let der =
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(rsa.pkcs8_pem.as_bytes()).unwrap();
        let inner = pkcs8::PrivateKeyInfo::try_from(der.secret_pkcs8_der())
            .unwrap()
            .private_key;
        let pkcs1 = dir.path().join("pkcs1.pem");
        write_private_key(&pkcs1, &pem_encode("RSA PRIVATE KEY", inner)).unwrap();
        let pkcs8 = dir.path().join("pkcs8.pem");
        write_private_key(&pkcs8, &rsa.pkcs8_pem).unwrap();
        for path in [&pkcs1, &pkcs8] {
            let (key, problems) = SelectorKey::load("s1", Algorithm::RsaSha256, path).unwrap();
            assert_eq!(key.public_key, rsa.public_key);
            assert_eq!(key.bits, Some(2048));
            assert!(problems.is_empty(), "{problems:?}");
        }
        // The same file configured as Ed25519 names the mismatch.
        let err = SelectorKey::load("s1", Algorithm::Ed25519Sha256, &pkcs8).unwrap_err();
        assert!(err.to_string().contains("an RSA key"), "{err}");
    }
}
