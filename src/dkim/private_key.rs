//! Reading a DKIM private key: one PEM decode and one DER parse yield the algorithm check, the
//! RSA modulus size, the `p=` public key bytes and (in a second, crypto step) the signing key.
//!
//! Why one parse: the relay loads every selector's key at start and on each reload, and the
//! doctor, `require_published` and the DNS output all need the public half, the size and the
//! algorithm of the same key. Reading the structure with RustCrypto's `pkcs8`/`pkcs1`/`spki`
//! (well-kept DER codecs) instead of a hand-written TLV reader means malformed input is refused
//! by code that is fuzzed and reviewed elsewhere, and the size is known even for keys the signing
//! library refuses (so the error can say "your key is 1024 bits", RFC 8301 §3.2).
//!
//! Accepted forms: PKCS#8 (`BEGIN PRIVATE KEY`, RFC 5208/5958) for RSA (rsaEncryption) and
//! Ed25519 (id-Ed25519, RFC 8410), and PKCS#1 (`BEGIN RSA PRIVATE KEY`, RFC 8017 A.1.2) for RSA,
//! which `openssl genrsa` and many existing DKIM setups still produce. The `p=` value is the DER
//! SubjectPublicKeyInfo for RSA and the raw 32-byte key for Ed25519 (RFC 8463 §4).

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use pkcs1::der::Encode as _;
use pkcs1::der::asn1::BitStringRef;
use pkcs8::ObjectIdentifier;
use pkcs8::spki::SubjectPublicKeyInfoRef;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::Algorithm;
use super::keygen::KeyError;

/// id-Ed25519 (RFC 8410 §3).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A private key whose structure has been read (PEM decoded, DER parsed, algorithm checked), but
/// not yet handed to the crypto library.
pub struct InspectedKey {
    pub algorithm: Algorithm,
    /// RSA modulus size in bits (any size, also ones the signing library refuses).
    pub bits: Option<usize>,
    /// The RSA `p=` value (SubjectPublicKeyInfo DER), known from the structure alone. Ed25519's
    /// public key is derived from the seed by [`InspectedKey::load`].
    rsa_public_key: Option<Vec<u8>>,
    der: PrivateKeyDer<'static>,
}

/// The signing half, as mail-auth signs with it.
pub enum SigningPair {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// A usable key: the signing half plus what DNS publishes.
pub struct PrivateKey {
    pub algorithm: Algorithm,
    pub bits: Option<usize>,
    /// The `p=` value before base64.
    pub public_key: Vec<u8>,
    pub pair: SigningPair,
}

fn found_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RsaSha256 => "an RSA key",
        Algorithm::Ed25519Sha256 => "an Ed25519 key",
    }
}

fn invalid(e: impl std::fmt::Display) -> KeyError {
    KeyError::InvalidKey(e.to_string())
}

/// Reads an RSAPrivateKey (PKCS#1): its size and its SubjectPublicKeyInfo.
fn rsa_parts(pkcs1_der: &[u8]) -> Result<(usize, Vec<u8>), KeyError> {
    let key = pkcs1::RsaPrivateKey::try_from(pkcs1_der).map_err(invalid)?;
    // `as_bytes` has the leading zero bytes stripped.
    let modulus = key.modulus.as_bytes();
    let bits = match modulus.first() {
        Some(top) => (modulus.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => return Err(invalid("the RSA modulus is zero")),
    };
    let public = key.public_key().to_der().map_err(invalid)?;
    let spki = SubjectPublicKeyInfoRef {
        algorithm: pkcs1::ALGORITHM_ID,
        subject_public_key: BitStringRef::from_bytes(&public).map_err(invalid)?,
    };
    Ok((bits, spki.to_der().map_err(invalid)?))
}

/// Reads `pem` as a private key for `expected`, refusing another algorithm.
pub fn inspect(expected: Algorithm, pem: &str) -> Result<InspectedKey, KeyError> {
    let der =
        PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| KeyError::Pem(e.to_string()))?;
    let wrong = |found: &'static str| KeyError::WrongKeyType { expected, found };
    let (algorithm, rsa) = match &der {
        PrivateKeyDer::Pkcs8(k) => {
            let info = pkcs8::PrivateKeyInfo::try_from(k.secret_pkcs8_der())
                .map_err(|_| invalid("not a valid PKCS#8 structure"))?;
            let found = if info.algorithm.oid == pkcs1::ALGORITHM_OID {
                Algorithm::RsaSha256
            } else if info.algorithm.oid == ED25519_OID {
                Algorithm::Ed25519Sha256
            } else {
                return Err(wrong("a key of another type (neither RSA nor Ed25519)"));
            };
            if found != expected {
                return Err(wrong(found_name(found)));
            }
            let rsa = match found {
                Algorithm::RsaSha256 => Some(rsa_parts(info.private_key)?),
                Algorithm::Ed25519Sha256 => None,
            };
            (found, rsa)
        }
        PrivateKeyDer::Pkcs1(k) => {
            if expected != Algorithm::RsaSha256 {
                return Err(wrong("an RSA key"));
            }
            (expected, Some(rsa_parts(k.secret_pkcs1_der())?))
        }
        _ if expected == Algorithm::Ed25519Sha256 => return Err(KeyError::Ed25519NotPkcs8),
        _ => return Err(wrong("an EC (SEC1) key")),
    };
    let (bits, rsa_public_key) = match rsa {
        Some((bits, spki)) => (Some(bits), Some(spki)),
        None => (None, None),
    };
    Ok(InspectedKey {
        algorithm,
        bits,
        rsa_public_key,
        der,
    })
}

impl InspectedKey {
    /// Hands the key to the crypto library. An RSA key it refuses for its size (aws-lc signs
    /// with 2048 to 8192 bits) gets [`KeyError::RsaKeyUnusable`] naming the size.
    pub fn load(self) -> Result<PrivateKey, KeyError> {
        let InspectedKey {
            algorithm,
            bits,
            rsa_public_key,
            der,
        } = self;
        let (pair, public_key) = match (algorithm, der) {
            (Algorithm::RsaSha256, der) => {
                let key = match RsaKey::<Sha256>::from_key_der(der) {
                    Ok(key) => key,
                    Err(e) => {
                        return Err(match bits {
                            Some(bits) if bits < 2048 => KeyError::RsaKeyUnusable { bits },
                            _ => invalid(e),
                        });
                    }
                };
                let public = rsa_public_key.ok_or_else(|| invalid("no RSA public key"))?;
                (SigningPair::Rsa(key), public)
            }
            (Algorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(k)) => {
                // Accepts PKCS#8 v1 (seed only, what OpenSSL writes) as well as v2.
                let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der())
                    .map_err(invalid)?;
                let public = key.public_key();
                (SigningPair::Ed25519(key), public)
            }
            (Algorithm::Ed25519Sha256, _) => return Err(KeyError::Ed25519NotPkcs8),
        };
        Ok(PrivateKey {
            algorithm,
            bits,
            public_key,
            pair,
        })
    }
}

/// [`inspect`] then [`InspectedKey::load`]: the whole key from one PEM parse.
pub fn read(expected: Algorithm, pem: &str) -> Result<PrivateKey, KeyError> {
    inspect(expected, pem)?.load()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::keygen::{generate, pem_encode};
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

    #[test]
    fn one_read_gives_everything() {
        let rsa = generate(Algorithm::RsaSha256, 2048).unwrap();
        let key = read(Algorithm::RsaSha256, &rsa.pkcs8_pem).unwrap();
        assert_eq!(key.algorithm, Algorithm::RsaSha256);
        assert_eq!(key.bits, Some(2048));
        assert_eq!(key.public_key, rsa.public_key);
        assert!(matches!(key.pair, SigningPair::Rsa(_)));
        let ed = generate(Algorithm::Ed25519Sha256, 0).unwrap();
        let key = read(Algorithm::Ed25519Sha256, &ed.pkcs8_pem).unwrap();
        assert_eq!(key.bits, None);
        assert_eq!(key.public_key, ed.public_key);
        assert!(matches!(key.pair, SigningPair::Ed25519(_)));
    }

    #[test]
    fn pkcs1_pem_gives_the_same_key() {
        let rsa = generate(Algorithm::RsaSha256, 2048).unwrap();
        let der =
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(rsa.pkcs8_pem.as_bytes()).unwrap();
        let inner = pkcs8::PrivateKeyInfo::try_from(der.secret_pkcs8_der())
            .unwrap()
            .private_key;
        let pkcs1_pem = pem_encode("RSA PRIVATE KEY", inner);
        let key = read(Algorithm::RsaSha256, &pkcs1_pem).unwrap();
        assert_eq!(key.bits, Some(2048));
        assert_eq!(key.public_key, rsa.public_key);
    }

    #[test]
    fn pkcs8_of_another_algorithm_is_refused() {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
        for alg in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
            let err = inspect(alg, &pem).err().unwrap();
            assert!(
                matches!(
                    err,
                    KeyError::WrongKeyType {
                        found: "a key of another type (neither RSA nor Ed25519)",
                        ..
                    }
                ),
                "{err}"
            );
        }
        // The same key as SEC1 ("BEGIN EC PRIVATE KEY").
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref()).unwrap();
        let sec1 = pair.private_key().as_der().unwrap();
        let pem = pem_encode("EC PRIVATE KEY", sec1.as_ref());
        let err = inspect(Algorithm::RsaSha256, &pem).err().unwrap();
        assert!(
            matches!(
                err,
                KeyError::WrongKeyType {
                    found: "an EC (SEC1) key",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            inspect(Algorithm::Ed25519Sha256, &pem),
            Err(KeyError::Ed25519NotPkcs8)
        ));
    }

    #[test]
    fn rsa_pkcs8_for_ed25519_names_the_mismatch() {
        let rsa = generate(Algorithm::RsaSha256, 2048).unwrap();
        let err = inspect(Algorithm::Ed25519Sha256, &rsa.pkcs8_pem)
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                KeyError::WrongKeyType {
                    found: "an RSA key",
                    ..
                }
            ),
            "{err}"
        );
    }
}
