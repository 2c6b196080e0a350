//! DKIM key generation, public-key extraction and the DNS TXT value that publishes a key.
//!
//! Implements the key side of RFC 6376 §3.6.1 (the `v=DKIM1; k=…; p=…` key record), RFC 8301
//! (RSA keys: verifiers refuse < 1024 bits, signers should use ≥ 2048) and RFC 8463 (Ed25519: `p=`
//! holds the raw 32-byte public key, not a SubjectPublicKeyInfo). Keys are generated with aws-lc-rs
//! and stored as PKCS#8 PEM; RSA keys in the older PKCS#1 PEM form are also accepted on input,
//! because `openssl genrsa` and many existing DKIM setups still produce them. Reading a key back
//! (its structure, size and public half) is [`super::private_key`]'s job, with RustCrypto's
//! `pkcs8`/`pkcs1` codecs rather than a DER reader of our own.

use super::Algorithm;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// RSA sizes we generate. aws-lc-rs can only generate these (and 8192, which is too big for
/// a single DNS TXT record set in practice and slows every signature).
pub const SUPPORTED_RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// RFC 8301 §3.2: verifiers must not accept RSA keys below 1024 bits, so smaller is useless.
pub const MIN_RSA_BITS: u32 = 1024;

/// A freshly generated key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, 64-column base64).
    pub pkcs8_pem: String,
    /// What goes, base64-encoded, in the DKIM `p=` tag: the DER SubjectPublicKeyInfo for RSA,
    /// the raw 32-byte key for Ed25519 (RFC 8463 §4).
    pub public_key: Vec<u8>,
}

impl std::fmt::Debug for GeneratedKey {
    // Never print private key material into logs by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("pkcs8_pem", &"<redacted>")
            .field("public_key_len", &self.public_key.len())
            .finish()
    }
}

/// Everything that can go wrong with keys; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "RSA key size {bits} is too small: RFC 8301 forbids keys under {MIN_RSA_BITS} bits; use 2048"
    )]
    RsaTooSmall { bits: u32 },
    #[error(
        "unsupported RSA key size {bits}; supported sizes are 2048, 3072 and 4096 (2048 recommended)"
    )]
    RsaUnsupportedSize { bits: u32 },
    #[error(
        "RSA key has {bits} bits; the signing library accepts 2048 to 8192 bits, so generate a new 2048-bit key"
    )]
    RsaKeyUnusable { bits: usize },
    #[error("key generation failed in the crypto library; retry, and report it if it persists")]
    Generate,
    #[error(
        "could not read a private key from the PEM text ({0}); expected '-----BEGIN PRIVATE KEY-----' (PKCS#8) or, for RSA, '-----BEGIN RSA PRIVATE KEY-----'"
    )]
    Pem(String),
    #[error(
        "the PEM holds {found}, but the selector is configured for {expected}; fix the algorithm or the key file"
    )]
    WrongKeyType {
        expected: Algorithm,
        found: &'static str,
    },
    #[error(
        "Ed25519 keys must be PKCS#8 ('-----BEGIN PRIVATE KEY-----'); convert with `openssl pkey -in old.pem -out new.pem`"
    )]
    Ed25519NotPkcs8,
    #[error("the private key is malformed: {0}")]
    InvalidKey(String),
    #[error("refusing to overwrite existing key file {0}; move it away or choose another selector")]
    AlreadyExists(PathBuf),
    #[error("cannot write key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Generates a new private key. `bits` is the RSA modulus size and is ignored for Ed25519
/// (Ed25519 keys have a fixed size).
pub fn generate(algorithm: Algorithm, bits: u32) -> Result<GeneratedKey, KeyError> {
    match algorithm {
        Algorithm::RsaSha256 => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                b if b < MIN_RSA_BITS => return Err(KeyError::RsaTooSmall { bits: b }),
                b => return Err(KeyError::RsaUnsupportedSize { bits: b }),
            };
            let pair = RsaKeyPair::generate(size).map_err(|_| KeyError::Generate)?;
            let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| KeyError::Generate)?;
            let spki: PublicKeyX509Der<'static> =
                pair.public_key().as_der().map_err(|_| KeyError::Generate)?;
            Ok(GeneratedKey {
                pkcs8_pem: pem_encode("PRIVATE KEY", pkcs8.as_ref()),
                public_key: spki.as_ref().to_vec(),
            })
        }
        Algorithm::Ed25519Sha256 => {
            let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?;
            // PKCS#8 v1 (no embedded public key) is what OpenSSL writes and reads everywhere.
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
            Ok(GeneratedKey {
                pkcs8_pem: pem_encode("PRIVATE KEY", pkcs8.as_ref()),
                public_key: pair.public_key().as_ref().to_vec(),
            })
        }
    }
}

/// Extracts the `p=` public key (before base64) from a private key PEM (one parse, through
/// [`super::private_key`]).
pub fn public_key_from_pem(algorithm: Algorithm, pem: &str) -> Result<Vec<u8>, KeyError> {
    Ok(super::private_key::read(algorithm, pem)?.public_key)
}

/// The modulus size of an RSA private key in PKCS#8 or PKCS#1 PEM. Works for any size (also
/// ones the signing library would refuse), so callers can report "your key is 1024 bits".
pub fn rsa_modulus_bits(pem: &str) -> Result<usize, KeyError> {
    super::private_key::inspect(Algorithm::RsaSha256, pem)?
        .bits
        .ok_or_else(|| KeyError::InvalidKey("cannot find the RSA modulus in the key".into()))
}

/// The TXT record value publishing `public_key` (RFC 6376 §3.6.1, RFC 8463 §4).
pub fn dkim_txt_value(algorithm: Algorithm, public_key: &[u8]) -> String {
    format!(
        "v=DKIM1; k={}; p={}",
        algorithm.key_type(),
        STANDARD.encode(public_key)
    )
}

/// Writes a private key file: parent directories are created (mode 0700), an existing file is
/// never replaced (losing a published key breaks every message in flight), and the file is
/// created with mode 0600 so there is no window in which it is world-readable.
pub fn write_private_key(path: &Path, pem: &str) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::AlreadyExists(path.to_path_buf())
            } else {
                io_err(e)
            }
        })?;
    file.write_all(pem.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(())
}

/// PEM with 64-column base64 lines (RFC 7468 §2).
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // base64 output is ASCII, so slicing at any byte offset is a char boundary.
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::dkim::DkimSigner;
    use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, ResolverCache, Txt};
    use pkcs1::der::Encode as _;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::borrow::Borrow;
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::os::unix::fs::PermissionsExt as _;

    /// rsaEncryption (1.2.840.113549.1.1.1), DER contents octets.
    const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

    /// A fixed TXT cache for the DKIM key lookup; anything else is "not found".
    struct KeyCache(HashMap<Box<str>, String>);

    impl ResolverCache<Box<str>, Txt> for KeyCache {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            Some(match self.0.get(name) {
                Some(v) => DomainKey::parse(v.as_bytes()).into(),
                None => Txt::Error(mail_auth::Error::Dns(
                    mail_auth::DnsError::InvalidRecordType,
                )),
            })
        }
        fn remove<Q>(&self, _: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            None
        }
        fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
    }

    const MSG: &str = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello, world.\r\n";

    fn sign(alg: Algorithm, pem: &str) -> String {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let headers = ["From", "To", "Subject"];
        let sig = match alg {
            Algorithm::RsaSha256 => {
                let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).unwrap();
                DkimSigner::from_key(key)
                    .domain("example.org")
                    .selector("sel")
                    .headers(headers)
                    .sign(MSG.as_bytes())
                    .unwrap()
            }
            Algorithm::Ed25519Sha256 => {
                let key = Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()).unwrap();
                DkimSigner::from_key(key)
                    .domain("example.org")
                    .selector("sel")
                    .headers(headers)
                    .sign(MSG.as_bytes())
                    .unwrap()
            }
        };
        format!("{}{}", sig.to_header(), MSG)
    }

    async fn verify(signed: &str, txt: &str) -> DkimResult {
        let auth = MessageAuthenticator::new(
            ResolverConfig::from_name_servers(vec![]),
            ResolverOpts::default(),
        )
        .unwrap();
        let cache = KeyCache(HashMap::from([(
            Box::<str>::from("sel._domainkey.example.org."),
            txt.to_string(),
        )]));
        let msg = AuthenticatedMessage::parse(signed.as_bytes()).unwrap();
        let params = mail_auth::Parameters::new(&msg).with_txt_cache(&cache);
        let out = auth.verify_dkim(params).await;
        assert_eq!(out.len(), 1);
        out[0].result().clone()
    }

    async fn roundtrip(alg: Algorithm, bits: u32) {
        let key = generate(alg, bits).unwrap();
        assert!(key.pkcs8_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(key.pkcs8_pem.ends_with("-----END PRIVATE KEY-----\n"));
        for line in key.pkcs8_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(line.len() <= 64, "PEM line too long: {}", line.len());
        }
        // The public key extracted from the PEM is the one generated.
        assert_eq!(
            public_key_from_pem(alg, &key.pkcs8_pem).unwrap(),
            key.public_key
        );
        let txt = dkim_txt_value(alg, &key.public_key);
        assert_eq!(
            verify(&sign(alg, &key.pkcs8_pem), &txt).await,
            DkimResult::Pass
        );
        // A different key of the same type must not verify the signature.
        let other = generate(alg, bits).unwrap();
        let wrong_txt = dkim_txt_value(alg, &other.public_key);
        assert!(matches!(
            verify(&sign(alg, &key.pkcs8_pem), &wrong_txt).await,
            DkimResult::Fail(_)
        ));
    }

    #[tokio::test]
    async fn rsa_generate_sign_verify() {
        roundtrip(Algorithm::RsaSha256, 2048).await;
    }

    #[tokio::test]
    async fn ed25519_generate_sign_verify() {
        roundtrip(Algorithm::Ed25519Sha256, 0).await;
    }

    #[test]
    fn public_key_shapes() {
        let ed = generate(Algorithm::Ed25519Sha256, 0).unwrap();
        assert_eq!(ed.public_key.len(), 32, "RFC 8463: raw 32-byte key");
        let rsa = generate(Algorithm::RsaSha256, 2048).unwrap();
        // SPKI DER: SEQUENCE, with the rsaEncryption OID inside.
        assert_eq!(rsa.public_key[0], 0x30);
        assert!(
            rsa.public_key
                .windows(OID_RSA_ENCRYPTION.len())
                .any(|w| w == OID_RSA_ENCRYPTION)
        );
        let spki = pkcs8::SubjectPublicKeyInfoRef::try_from(rsa.public_key.as_slice()).unwrap();
        assert_eq!(spki.algorithm.oid, pkcs1::ALGORITHM_OID);
        assert_eq!(rsa_modulus_bits(&rsa.pkcs8_pem).unwrap(), 2048);
        assert!(
            dkim_txt_value(Algorithm::Ed25519Sha256, &ed.public_key)
                .starts_with("v=DKIM1; k=ed25519; p=")
        );
        assert!(
            dkim_txt_value(Algorithm::RsaSha256, &rsa.public_key)
                .starts_with("v=DKIM1; k=rsa; p=MII")
        );
    }

    #[test]
    fn rsa_3072_bits() {
        let k = generate(Algorithm::RsaSha256, 3072).unwrap();
        assert_eq!(rsa_modulus_bits(&k.pkcs8_pem).unwrap(), 3072);
    }

    #[test]
    fn refuses_small_and_odd_sizes() {
        let err = generate(Algorithm::RsaSha256, 512).unwrap_err();
        assert!(matches!(err, KeyError::RsaTooSmall { bits: 512 }));
        assert!(err.to_string().contains("1024"));
        let err = generate(Algorithm::RsaSha256, 1023).unwrap_err();
        assert!(matches!(err, KeyError::RsaTooSmall { .. }));
        let err = generate(Algorithm::RsaSha256, 1024).unwrap_err();
        assert!(matches!(err, KeyError::RsaUnsupportedSize { bits: 1024 }));
        let err = generate(Algorithm::RsaSha256, 2000).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("2048") && msg.contains("3072") && msg.contains("4096"),
            "{msg}"
        );
    }

    #[test]
    fn pkcs1_rsa_pem_accepted() {
        let k = generate(Algorithm::RsaSha256, 2048).unwrap();
        // Re-wrap the inner RSAPrivateKey as PKCS#1 ("BEGIN RSA PRIVATE KEY").
        let der = PrivatePkcs8KeyDer::from_pem_slice(k.pkcs8_pem.as_bytes()).unwrap();
        let inner = pkcs8::PrivateKeyInfo::try_from(der.secret_pkcs8_der())
            .unwrap()
            .private_key;
        let pkcs1_pem = pem_encode("RSA PRIVATE KEY", inner);
        assert!(pkcs1_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(
            public_key_from_pem(Algorithm::RsaSha256, &pkcs1_pem).unwrap(),
            k.public_key
        );
        assert_eq!(rsa_modulus_bits(&pkcs1_pem).unwrap(), 2048);
        // …but not for Ed25519.
        assert!(matches!(
            public_key_from_pem(Algorithm::Ed25519Sha256, &pkcs1_pem),
            Err(KeyError::WrongKeyType { .. })
        ));
    }

    #[test]
    fn wrong_type_and_garbage() {
        let ed = generate(Algorithm::Ed25519Sha256, 0).unwrap();
        let err = public_key_from_pem(Algorithm::RsaSha256, &ed.pkcs8_pem).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::WrongKeyType {
                    found: "an Ed25519 key",
                    ..
                }
            ),
            "{err}"
        );
        assert!(rsa_modulus_bits(&ed.pkcs8_pem).is_err());
        let err = public_key_from_pem(Algorithm::RsaSha256, "not a pem").unwrap_err();
        assert!(matches!(err, KeyError::Pem(_)));
        assert!(err.to_string().contains("BEGIN PRIVATE KEY"));
        // Truncated body: PEM decodes but the key is broken.
        let broken = "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6\n-----END PRIVATE KEY-----\n";
        assert!(public_key_from_pem(Algorithm::RsaSha256, broken).is_err());
        assert!(rsa_modulus_bits(broken).is_err());
    }

    #[test]
    fn rsa_bits_of_small_key_is_reported() {
        // A syntactically valid (not mathematically valid) 1024-bit PKCS#1 key: only the modulus
        // length matters for rsa_modulus_bits, and the signer refuses it with a clear message.
        let mut modulus = vec![0xC0];
        modulus.extend(std::iter::repeat_n(0x11, 127));
        let one = pkcs1::UintRef::new(&[1]).unwrap();
        let der = pkcs1::RsaPrivateKey {
            modulus: pkcs1::UintRef::new(&modulus).unwrap(),
            public_exponent: pkcs1::UintRef::new(&[1, 0, 1]).unwrap(),
            private_exponent: one,
            prime1: one,
            prime2: one,
            exponent1: one,
            exponent2: one,
            coefficient: one,
            other_prime_infos: None,
        }
        .to_der()
        .unwrap();
        let pem = pem_encode("RSA PRIVATE KEY", &der);
        assert_eq!(rsa_modulus_bits(&pem).unwrap(), 1024);
        let err = public_key_from_pem(Algorithm::RsaSha256, &pem).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaKeyUnusable { bits: 1024 }),
            "{err}"
        );
    }

    #[test]
    fn write_refuses_overwrite_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/example.org/s1.pem");
        write_private_key(&path, "first").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let err = write_private_key(&path, "second").unwrap_err();
        assert!(matches!(err, KeyError::AlreadyExists(_)));
        assert!(err.to_string().contains("refusing to overwrite"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
    }

    #[test]
    fn pem_encoding_wraps_at_64() {
        let pem = pem_encode("PRIVATE KEY", &[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PRIVATE KEY-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 136 - 128);
        assert_eq!(lines[4], "-----END PRIVATE KEY-----");
    }

    fn demo_key_path(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("keys/example.org")
            .join(name)
    }

    /// Regenerates the committed demo keys (run once with `--ignored`; refuses to overwrite).
    #[test]
    #[ignore]
    fn write_demo_keys() {
        let rsa = generate(Algorithm::RsaSha256, 2048).unwrap();
        write_private_key(&demo_key_path("s2026a.pem"), &rsa.pkcs8_pem).unwrap();
        let ed = generate(Algorithm::Ed25519Sha256, 0).unwrap();
        write_private_key(&demo_key_path("e2026a.pem"), &ed.pkcs8_pem).unwrap();
    }

    #[test]
    fn committed_demo_keys_are_valid() {
        let rsa = std::fs::read_to_string(demo_key_path("s2026a.pem")).unwrap();
        assert_eq!(rsa_modulus_bits(&rsa).unwrap(), 2048);
        assert!(public_key_from_pem(Algorithm::RsaSha256, &rsa).is_ok());
        let ed = std::fs::read_to_string(demo_key_path("e2026a.pem")).unwrap();
        assert_eq!(
            public_key_from_pem(Algorithm::Ed25519Sha256, &ed)
                .unwrap()
                .len(),
            32
        );
    }
}
