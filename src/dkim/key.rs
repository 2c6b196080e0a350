//! Loaded DKIM keys. A [`SelectorKey`] is one selector of one domain with its private key in
//! memory (shared, never copied per message) and its public half for DNS checks.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

use super::Algorithm;

/// The private key, behind an `Arc` so every message's signer shares one parsed key.
#[derive(Clone)]
pub struct SharedKey(Arc<KeyPair>);

enum KeyPair {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

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
        let pem = std::fs::read_to_string(path).map_err(|source| KeyLoadError::Read {
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
        let der =
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| malformed(e.to_string()))?;
        // Size first: a key under 1024 bits gets the RFC 8301 refusal, whatever else is wrong.
        if algorithm == Algorithm::RsaSha256
            && let Ok(bits) = super::keygen::rsa_modulus_bits(&pem)
            && bits < 1024
        {
            return Err(KeyLoadError::TooSmall {
                path: path.to_path_buf(),
                bits,
            });
        }
        let public_key = super::keygen::public_key_from_pem(algorithm, &pem)
            .map_err(|e| malformed(e.to_string()))?;
        let (pair, bits) = match algorithm {
            Algorithm::RsaSha256 => {
                let bits =
                    super::keygen::rsa_modulus_bits(&pem).map_err(|e| malformed(e.to_string()))?;
                if bits < 1024 {
                    return Err(KeyLoadError::TooSmall {
                        path: path.to_path_buf(),
                        bits,
                    });
                }
                if bits < 2048 {
                    problems.push(KeyProblem::WeakRsa(bits));
                }
                let k =
                    RsaKey::<Sha256>::from_key_der(der).map_err(|e| malformed(e.to_string()))?;
                (KeyPair::Rsa(k), Some(bits))
            }
            Algorithm::Ed25519Sha256 => {
                let PrivateKeyDer::Pkcs8(p8) = der else {
                    return Err(malformed("Ed25519 keys must be PKCS#8".into()));
                };
                let k = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                    .map_err(|e| malformed(e.to_string()))?;
                (KeyPair::Ed25519(k), None)
            }
        };
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
