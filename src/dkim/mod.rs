//! DKIM: the key store (domain → selectors → keys), key generation, the signer with its own
//! canonicalization ([`canon`]), and an independent verifier ([`verify`]) that shares no
//! canonicalization code with it, used for the self-check before hand-off ([`self_check`]) and
//! by the SES simulator's verdict.
//!
//! The signing domain is always the header From domain (DMARC aligns on it). Under the SES
//! profile exactly one DKIM-Signature is added, and the headers SES rewrites are never signed.

pub mod canon;
pub mod domain;
pub mod key;
pub mod keygen;
pub mod private_key;
pub mod self_check;
pub mod signer;
pub mod verify;

use serde::{Deserialize, Serialize};

/// A DKIM signing algorithm we support. `rsa-sha1` is deliberately absent (RFC 8301).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The `k=` tag value of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
