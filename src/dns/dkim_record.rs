//! The DKIM key-record rule: does what DNS publishes at `SELECTOR._domainkey.DOMAIN` match a
//! loaded key?
//!
//! One rule, two users: `doctor` reports it, and `require_published` refuses to activate a
//! selector it does not pass. The record must be the only DKIM record at the name (verifiers may
//! pick any of several), parse as a tag list (RFC 6376 §3.2), carry `v=DKIM1` if any `v=`, a `k=`
//! matching the key's algorithm (default `rsa`, RFC 6376 §3.6.1) and a `p=` that is the key's
//! public half. An empty `p=` is a revoked key (every signature fails); another key is a stale
//! record from before a rotation. `t=y` (testing) matches but deserves a warning.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::dkim::Algorithm;
use crate::dkim::key::SelectorKey;

/// How a published key record compares with the configured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimRecordOutcome {
    /// Exactly one record, and it publishes this key.
    Matches,
    /// It publishes this key, but with `t=y`: receivers may treat signatures as unsigned.
    Testing,
    /// Signatures with this selector would fail (or the record is unusable).
    Problem(DkimRecordProblem),
}

/// Why a key record does not publish the configured key. `Display` is the one-line finding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkimRecordProblem {
    #[error("no DKIM key record")]
    Missing,
    #[error("no DKIM key record among {0} TXT record(s)")]
    NoneAmong(usize),
    #[error("{0} DKIM key records; verifiers may pick any of them")]
    Several(usize),
    #[error("the record does not parse as a DKIM tag list (tag=value; …)")]
    Unparseable,
    #[error("v={0}: must be DKIM1")]
    WrongVersion(String),
    #[error("k={published}, but the configured key is {configured} (k={})", configured.key_type())]
    WrongKeyType {
        published: String,
        configured: Algorithm,
    },
    #[error("the record has no p= tag")]
    NoPublicKey,
    #[error("p= is empty: the key is revoked, every signature with this selector fails")]
    Revoked,
    #[error("p= is not valid base64")]
    BadBase64,
    #[error(
        "p= is a different key than {key_file} (a stale record from before a rotation, or the \
         wrong file)"
    )]
    OtherKey { key_file: String },
}

/// `tag=value` pairs of a DKIM key record or DMARC record (RFC 6376 §3.2 tag-list), names
/// lowercased, values trimmed. Returns `None` when a non-empty element has no `=`.
pub fn tag_list(value: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in value.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=')?;
        out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some(out)
}

/// The value of tag `name` in a parsed tag list.
pub fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether a published `p=` (base64-decoded) is the public half of `key`. RSA keys are
/// accepted as SubjectPublicKeyInfo (what keygen prints) or as the bare PKCS#1 RSAPublicKey
/// some tools publish (the tail of the SPKI); mail-auth verifies with either.
fn same_public_key(key: &SelectorKey, published: &[u8]) -> bool {
    if published == key.public_key.as_slice() {
        return true;
    }
    key.algorithm == Algorithm::RsaSha256
        && published.len() >= 64
        && key.public_key.ends_with(published)
}

/// Compares the TXT records at the selector's `_domainkey` name with `key`.
pub fn check(key: &SelectorKey, records: &[String]) -> DkimRecordOutcome {
    use DkimRecordProblem as P;
    let problem = |p| DkimRecordOutcome::Problem(p);
    let dkim: Vec<&String> = records
        .iter()
        .filter(|r| {
            let t = r.trim_start();
            t.starts_with("v=DKIM1") || t.contains("p=")
        })
        .collect();
    let record = match dkim.as_slice() {
        [] if records.is_empty() => return problem(P::Missing),
        [] => return problem(P::NoneAmong(records.len())),
        [one] => *one,
        many => return problem(P::Several(many.len())),
    };
    let Some(tags) = tag_list(record) else {
        return problem(P::Unparseable);
    };
    if let Some(v) = tag(&tags, "v")
        && v != "DKIM1"
    {
        return problem(P::WrongVersion(v.to_string()));
    }
    let k = tag(&tags, "k").unwrap_or("rsa");
    if !k.eq_ignore_ascii_case(key.algorithm.key_type()) {
        return problem(P::WrongKeyType {
            published: k.to_string(),
            configured: key.algorithm,
        });
    }
    let Some(p) = tag(&tags, "p") else {
        return problem(P::NoPublicKey);
    };
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    if p.is_empty() {
        return problem(P::Revoked);
    }
    let Ok(published) = B64.decode(p.as_bytes()) else {
        return problem(P::BadBase64);
    };
    if !same_public_key(key, &published) {
        return problem(P::OtherKey {
            key_file: key.key_file.display().to_string(),
        });
    }
    if tag(&tags, "t").is_some_and(|t| t.split(':').any(|f| f.trim() == "y")) {
        DkimRecordOutcome::Testing
    } else {
        DkimRecordOutcome::Matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::keygen::dkim_txt_value;
    use std::path::Path;

    fn rsa() -> SelectorKey {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/example.org/s2026a.pem");
        SelectorKey::load("s2026a", Algorithm::RsaSha256, &path)
            .unwrap()
            .0
    }

    #[test]
    fn outcomes() {
        let key = rsa();
        let good = dkim_txt_value(key.algorithm, &key.public_key);
        assert_eq!(
            check(&key, std::slice::from_ref(&good)),
            DkimRecordOutcome::Matches
        );
        assert_eq!(
            check(&key, &[format!("{good}; t=y")]),
            DkimRecordOutcome::Testing
        );
        assert_eq!(
            check(&key, &[]),
            DkimRecordOutcome::Problem(DkimRecordProblem::Missing)
        );
        assert_eq!(
            check(&key, &["v=DKIM1; k=rsa; p=".into()]),
            DkimRecordOutcome::Problem(DkimRecordProblem::Revoked)
        );
        let DkimRecordOutcome::Problem(p) = check(&key, &["v=DKIM1; k=ed25519; p=AAAA".into()])
        else {
            panic!("k mismatch must be a problem");
        };
        assert_eq!(
            p.to_string(),
            "k=ed25519, but the configured key is rsa-sha256 (k=rsa)"
        );
    }
}
