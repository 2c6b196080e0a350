//! Submission users: who may send through the relay after authenticating, and as which domains.
//!
//! Why this exists: the relay signs whatever it accepts with the domain's DKIM key, so anyone
//! who can submit can send mail that passes DKIM and DMARC for that domain. Each user is
//! therefore tied to the domains it may put in `From:` (and in the envelope sender); a message
//! outside them is refused with `550 5.7.1` before anything is signed.
//!
//! Passwords are stored only as hashes (argon2 — `$argon2id$…` — or bcrypt — `$2b$…`), never as
//! plaintext; [`PasswordHash`] masks itself in `Debug` so a hash never reaches a log line.
//! Verification is CPU-bound by design (that is what makes a stolen hash expensive), so the
//! connection driver runs it on the blocking pool, not on an async worker.

use std::fmt;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash as PhcHash};

/// A password hash as configured, checked at load time to be argon2 or bcrypt.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<password hash>\"")
    }
}

/// Why a configured `password_hash` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error(
        "not an argon2 ($argon2id$…) or bcrypt ($2b$…) hash; never put a plaintext password \
         here: create a hash with `dkim-relay hash-password`"
    )]
    NotAHash,
    #[error("malformed {0} hash")]
    Malformed(&'static str),
}

impl PasswordHash {
    /// Accepts argon2 (PHC string, `$argon2id$`, `$argon2i$`, `$argon2d$`) and bcrypt
    /// (`$2a$`, `$2b$`, `$2y$`, 60 characters) hashes; anything else is refused.
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        let s = s.trim();
        if s.starts_with("$argon2") {
            let h = PhcHash::new(s).map_err(|_| HashError::Malformed("argon2"))?;
            if h.hash.is_none() || h.salt.is_none() {
                return Err(HashError::Malformed("argon2"));
            }
            return Ok(PasswordHash(s.to_string()));
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            let cost_ok = s
                .get(4..6)
                .and_then(|c| c.parse::<u32>().ok())
                .is_some_and(|c| (4..=31).contains(&c));
            if s.len() != 60 || s.as_bytes().get(6) != Some(&b'$') || !cost_ok {
                return Err(HashError::Malformed("bcrypt"));
            }
            return Ok(PasswordHash(s.to_string()));
        }
        Err(HashError::NotAHash)
    }

    /// Whether `password` matches. Never panics; a malformed hash never matches.
    pub fn verify(&self, password: &[u8]) -> bool {
        if self.0.starts_with("$argon2") {
            match PhcHash::new(&self.0) {
                Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
                Err(_) => false,
            }
        } else {
            bcrypt::verify(password, &self.0).unwrap_or(false)
        }
    }
}

/// An argon2id hash (default parameters, random salt) of `password`, for the configuration.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of a random password, verified against when the user name is unknown, so a failed
/// login costs the same time whether or not the user exists.
pub fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: std::sync::OnceLock<PasswordHash> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        let hash = hash_password(&random).unwrap_or_default();
        PasswordHash(hash)
    })
}

/// A hash of a random password with the same algorithm and cost parameters as `like` (argon2
/// variant, version, memory, iterations, lanes; bcrypt cost), made once per parameter set and
/// kept: checking an unknown user against it costs what checking `like`'s user costs, so a
/// failed login takes the same time whether or not the name exists — even when the
/// configured hashes are bcrypt or argon2 with non-default parameters.
pub fn dummy_like(like: &PasswordHash) -> PasswordHash {
    static CACHE: std::sync::Mutex<Vec<(String, PasswordHash)>> = std::sync::Mutex::new(Vec::new());
    let kind = like.kind();
    let mut cache = match CACHE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some((_, h)) = cache.iter().find(|(k, _)| *k == kind) {
        return h.clone();
    }
    let random: [u8; 16] = rand::random();
    let made = if like.0.starts_with("$argon2") {
        PhcHash::new(&like.0).ok().and_then(|phc| {
            let params = argon2::Params::try_from(&phc).ok()?;
            let algorithm = argon2::Algorithm::new(phc.algorithm.as_str()).ok()?;
            let version = match phc.version {
                Some(v) => argon2::Version::try_from(v).ok()?,
                None => argon2::Version::default(),
            };
            let salt = SaltString::generate(&mut OsRng);
            Argon2::new(algorithm, version, params)
                .hash_password(&random, &salt)
                .ok()
                .map(|h| PasswordHash(h.to_string()))
        })
    } else {
        like.0
            .get(4..6)
            .and_then(|c| c.parse::<u32>().ok())
            .and_then(|cost| bcrypt::hash(random, cost).ok())
            .map(PasswordHash)
    };
    let made = made.unwrap_or_else(|| dummy_hash().clone());
    if cache.len() < 16 {
        cache.push((kind, made.clone()));
    }
    made
}

impl PasswordHash {
    /// The algorithm and cost part of the hash (no salt, no digest): what its check costs.
    fn kind(&self) -> String {
        if self.0.starts_with("$argon2") {
            // `$argon2id$v=19$m=…,t=…,p=…$salt$hash`: the first three fields.
            self.0.split('$').take(4).collect::<Vec<_>>().join("$")
        } else {
            self.0.chars().take(7).collect()
        }
    }
}

/// One domain a user may send as: the configured sending domain, and whether that domain's
/// entry accepts subdomains (`[domains."…"] subdomains = true`).
///
/// `carved_out` lists the other configured `[domains]` entries below this one, each with its
/// own `subdomains` switch: a name such an entry signs for is that entry's, not this one's, so
/// allowing `example.org` never allows `tenant.example.org` when that is its own entry (the
/// same most-specific-entry rule the signer's domain lookup applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDomain {
    pub name: String,
    pub subdomains: bool,
    pub carved_out: Vec<(String, bool)>,
}

impl AllowedDomain {
    /// Whether this entry is the one that signs for `name` (a normalised A-label): walking up
    /// from `name`, the first configured entry that covers it is this one.
    pub fn owns(&self, name: &str) -> bool {
        for (i, parent) in crate::domain_name::parents(name).enumerate() {
            if parent == self.name {
                return i == 0 || self.subdomains;
            }
            if self
                .carved_out
                .iter()
                .any(|(n, sub)| n == parent && (i == 0 || *sub))
            {
                return false;
            }
        }
        false
    }
}

/// A configured submission user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub hash: PasswordHash,
    pub domains: Vec<AllowedDomain>,
}

/// The authenticated identity of a session, carried with the envelope so the From check can be
/// made where the signing domain is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    pub user: String,
    pub domains: Vec<AllowedDomain>,
}

impl Submitter {
    /// Whether this user may use `domain` (From domain, envelope sender domain, Sender …). A
    /// subdomain counts only when the configured domain allows subdomains, and never when
    /// another configured entry signs for it ([`AllowedDomain::owns`]).
    pub fn may_use(&self, domain: &str) -> bool {
        let Some(d) = crate::domain_name::normalize(domain) else {
            return false;
        };
        self.domains.iter().any(|a| a.owns(&d))
    }

    /// Whether this user may have mail signed with the key of the `[domains]` entry `entry`
    /// (its name, an A-label).
    pub fn may_sign_with(&self, entry: &str) -> bool {
        self.domains.iter().any(|a| a.name == entry)
    }
}

/// Checks `name`/`password` against the users; the [`Submitter`] on success. Runs the same
/// hash work for an unknown user: a check against [`dummy_like`] the first user's hash.
/// CPU-bound: call from a blocking context.
pub fn authenticate(users: &[User], name: &str, password: &[u8]) -> Option<Submitter> {
    match users.iter().find(|u| u.name == name) {
        Some(u) => u.hash.verify(password).then(|| Submitter {
            user: u.name.clone(),
            domains: u.domains.clone(),
        }),
        None => {
            match users.first() {
                Some(u) => {
                    let _ = dummy_like(&u.hash).verify(password);
                }
                None => {
                    let _ = dummy_hash().verify(password);
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip_and_plaintext_refused() {
        let h = hash_password(b"s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let p = PasswordHash::parse(&h).unwrap();
        assert!(p.verify(b"s3cret"));
        assert!(!p.verify(b"S3cret"));
        assert_eq!(PasswordHash::parse("hunter2"), Err(HashError::NotAHash));
        assert!(PasswordHash::parse("$argon2id$garbage").is_err());
        assert!(PasswordHash::parse("$2b$10$short").is_err());
        assert!(!format!("{p:?}").contains("argon2"));
    }

    #[test]
    fn bcrypt_hashes_verify() {
        let h = bcrypt::hash("pw", 4).unwrap();
        let p = PasswordHash::parse(&h).unwrap();
        assert!(p.verify(b"pw"));
        assert!(!p.verify(b"pw2"));
    }

    #[test]
    fn unknown_users_are_checked_against_a_hash_of_the_same_kind() {
        let b = PasswordHash::parse(&bcrypt::hash("pw", 5).unwrap()).unwrap();
        let d = dummy_like(&b);
        assert!(d.0.starts_with("$2b$05$"), "{}", d.0);
        assert_ne!(d.0, b.0);
        assert!(!d.verify(b"pw"));
        let salt = SaltString::generate(&mut OsRng);
        let light = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(1024, 3, 1, None).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        let a = PasswordHash::parse(&light).unwrap();
        let d = dummy_like(&a);
        assert!(d.0.starts_with("$argon2id$v=19$m=1024,t=3,p=1$"), "{}", d.0);
        assert_eq!(dummy_like(&a), d, "made once per parameter set");
    }

    #[test]
    fn subdomains_only_when_allowed() {
        let s = Submitter {
            user: "app".into(),
            domains: vec![
                AllowedDomain {
                    name: "example.org".into(),
                    subdomains: false,
                    carved_out: vec![],
                },
                AllowedDomain {
                    name: "example.net".into(),
                    subdomains: true,
                    carved_out: vec![
                        ("tenant.example.net".into(), false),
                        ("group.example.net".into(), true),
                    ],
                },
            ],
        };
        assert!(s.may_use("Example.ORG"));
        assert!(!s.may_use("news.example.org"));
        assert!(!s.may_use("badexample.org"));
        assert!(s.may_use("news.example.net"));
        assert!(!s.may_use("xexample.net"));
        assert!(!s.may_use("example.com"));
        // Another entry's names are that entry's.
        assert!(!s.may_use("tenant.example.net"));
        assert!(s.may_use("a.tenant.example.net"));
        assert!(!s.may_use("group.example.net"));
        assert!(!s.may_use("a.group.example.net"));
        assert!(s.may_sign_with("example.net"));
        assert!(!s.may_sign_with("tenant.example.net"));
    }
}
