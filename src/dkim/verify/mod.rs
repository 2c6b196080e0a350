//! The independent DKIM verifier (RFC 6376 §6, RFC 8463): checks every DKIM-Signature of a
//! message against public keys it is given, and shares no canonicalization code with the signer.
//!
//! It has two users: the relay's self-check before hand-off ([`crate::dkim::self_check`]:
//! keys are the ones it loaded) and the SES simulator's outbox verdict (keys come from the
//! simulated DNS). Why not mail-auth's verifier: mail-auth 0.13's relaxed body canonicalization
//! is wrong for bodies ending in whitespace-only lines, and a verifier that shares a signer's
//! canonicalization reports `pass` for exactly the signatures that fail at receivers. Why not
//! our signer's canonicalizer: the same reason. So this module parses the message, the tag
//! lists and the key record itself (`tags`), canonicalizes with its own second
//! implementation (`canon`), and uses aws-lc-rs only for SHA-256 and the public-key check
//! (RSASSA-PKCS1-v1_5 with SHA-256 for keys of 1024 bits and more; Ed25519 over the SHA-256 of
//! the header data, RFC 8463 §3).
//!
//! Scope: `v=1`, `a=rsa-sha256 | ed25519-sha256` (rsa-sha1 is refused, RFC 8301), `c=` any
//! combination, `l=` honoured, `x=` checked, `h=` must name From (RFC 6376 §5.4).

mod canon;
mod tags;

use aws_lc_rs::{digest, signature};

pub use self::tags::{KeyRecord, PublicKey, key_record};
use super::Algorithm;

/// A `c=` half, as the verifier reads it (its own type: nothing shared with the signer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalization {
    Simple,
    Relaxed,
}

/// What looking up `s._domainkey.d` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAnswer {
    /// The TXT record values published there (the first that parses is used).
    Records(Vec<String>),
    /// A key known directly (the relay's own loaded key).
    Key(PublicKey),
    /// Nothing published.
    NotFound,
    /// The lookup could not be made.
    TempError(String),
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the signature field is malformed: {0}")]
    Syntax(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the signature expired (x= is in the past)")]
    Expired,
    #[error("no key record published at the selector's _domainkey name")]
    NoKey,
    #[error("the key record has an empty p= (key revoked)")]
    Revoked,
    #[error("the key record is unusable: {0}")]
    BadKey(String),
    #[error("key lookup failed: {0}")]
    TempError(String),
    #[error("body hash did not verify: the body changed after signing")]
    BodyHash,
    #[error(
        "signature did not verify: a signed header changed after signing, or the published key does not match"
    )]
    Signature,
}

/// One signature's outcome, in header order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// `d=` as written (empty if the field could not be read that far).
    pub domain: String,
    pub selector: String,
    /// `a=` as written.
    pub algorithm: String,
    pub result: Result<(), Failure>,
}

/// The header section split into raw fields (each with its folds and final CRLF) and the body.
pub(crate) fn split_message(message: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut pos = 0;
    let mut start = 0;
    loop {
        if message[pos..].starts_with(b"\r\n") {
            // The empty line: the body follows it.
            if pos > start {
                fields.push(&message[start..pos]);
            }
            return (fields, &message[pos + 2..]);
        }
        let next = memchr::memmem::find(&message[pos..], b"\r\n").map(|i| pos + i + 2);
        let Some(next) = next else {
            // No separator: everything is header.
            if message.len() > start {
                fields.push(&message[start..]);
            }
            return (fields, &[]);
        };
        if !matches!(message.get(next), Some(b' ' | b'\t')) && next > start {
            // The line after this one starts a new field (or is the separator).
            fields.push(&message[start..next]);
            start = next;
        }
        pos = next;
    }
}

fn field_name(raw: &[u8]) -> &[u8] {
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let name = &raw[..colon];
    let end = name
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &name[..end]
}

/// Verifies every DKIM-Signature field of `message` (the exact bytes a receiver gets, CRLF
/// line ends, not dot-stuffed). `now` is for `x=`; `lookup(d, s)` finds the key.
pub fn verify(message: &[u8], now: u64, lookup: &dyn Fn(&str, &str) -> KeyAnswer) -> Vec<Checked> {
    let (fields, body) = split_message(message);
    verify_fields(&fields, body, now, lookup)
}

/// As [`verify`], over a message already in pieces: its header fields (each with its line
/// end, in order) and its body (after the blank line). The relay checks its own signatures
/// this way, over the very slices it sends, without joining a copy of the message.
pub fn verify_fields(
    fields: &[&[u8]],
    body: &[u8],
    now: u64,
    lookup: &dyn Fn(&str, &str) -> KeyAnswer,
) -> Vec<Checked> {
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| field_name(f).eq_ignore_ascii_case(b"DKIM-Signature"))
        .map(|(i, _)| verify_one(fields, i, body, now, lookup))
        .collect()
}

fn verify_one(
    fields: &[&[u8]],
    index: usize,
    body: &[u8],
    now: u64,
    lookup: &dyn Fn(&str, &str) -> KeyAnswer,
) -> Checked {
    let raw = fields[index];
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let value = raw.get(colon + 1..).unwrap_or_default();
    let mut checked = Checked {
        domain: String::new(),
        selector: String::new(),
        algorithm: String::new(),
        result: Ok(()),
    };
    let tags = match tags::parse(value) {
        Ok(t) => t,
        Err(e) => {
            checked.result = Err(Failure::Syntax(e));
            return checked;
        }
    };
    let text = |name: &str| tags::get(&tags, name).map(|v| String::from_utf8_lossy(v).into_owned());
    checked.domain = text("d").unwrap_or_default().to_ascii_lowercase();
    checked.selector = text("s").unwrap_or_default();
    checked.algorithm = text("a").unwrap_or_default();
    checked.result = check(&tags, fields, raw, body, now, lookup, &checked);
    checked
}

fn check(
    tags: &[(String, Vec<u8>)],
    fields: &[&[u8]],
    raw: &[u8],
    body: &[u8],
    now: u64,
    lookup: &dyn Fn(&str, &str) -> KeyAnswer,
    id: &Checked,
) -> Result<(), Failure> {
    let syntax = |s: &str| Failure::Syntax(s.to_string());
    let required =
        |name: &str| tags::get(tags, name).ok_or_else(|| syntax(&format!("no {name}= tag")));
    if required("v")? != b"1" {
        return Err(syntax("v= is not 1"));
    }
    let algorithm = match required("a")? {
        b"rsa-sha256" => Algorithm::RsaSha256,
        b"ed25519-sha256" => Algorithm::Ed25519Sha256,
        other => {
            return Err(Failure::Unsupported(format!(
                "a={}",
                String::from_utf8_lossy(other)
            )));
        }
    };
    let (header_c, body_c) = canonicalization(tags::get(tags, "c").unwrap_or(b"simple/simple"))?;
    if id.domain.is_empty() || id.selector.is_empty() {
        return Err(syntax("d= or s= is empty"));
    }
    let signed_names: Vec<Vec<u8>> = required("h")?
        .split(|&b| b == b':')
        .map(|n| n.trim_ascii().to_ascii_lowercase())
        .collect();
    if !signed_names.iter().any(|n| n == b"from") {
        return Err(syntax("h= does not name From"));
    }
    let number = |name: &str| -> Result<Option<u64>, Failure> {
        tags::get(tags, name)
            .map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| syntax(&format!("{name}= is not a number")))
            })
            .transpose()
    };
    if let Some(x) = number("x")? {
        if number("t")?.is_some_and(|t| t > x) {
            return Err(syntax("t= is after x="));
        }
        if x < now {
            return Err(Failure::Expired);
        }
    }
    let body_hash = tags::base64(required("bh")?).map_err(|e| syntax(&format!("bh=: {e}")))?;
    let signature = tags::base64(required("b")?).map_err(|e| syntax(&format!("b=: {e}")))?;

    let key = match lookup(&id.domain, &id.selector) {
        KeyAnswer::Key(k) => k,
        KeyAnswer::NotFound => return Err(Failure::NoKey),
        KeyAnswer::TempError(e) => return Err(Failure::TempError(e)),
        KeyAnswer::Records(values) => {
            let mut parsed = Err(Failure::NoKey);
            for v in &values {
                parsed = match key_record(v) {
                    Ok(KeyRecord::Key(k)) => Ok(k),
                    Ok(KeyRecord::Revoked) => Err(Failure::Revoked),
                    Err(e) => Err(Failure::BadKey(e)),
                };
                if parsed.is_ok() {
                    break;
                }
            }
            parsed?
        }
    };
    if key.algorithm != algorithm {
        return Err(Failure::BadKey(format!(
            "the key is for {}, the signature says {}",
            key.algorithm, algorithm
        )));
    }

    // Body first (RFC 6376 §6.1.3 step 4).
    // Hashed as it is canonicalized: no canonical copy of the body is held.
    let limit = match number("l")? {
        Some(l) => Some(usize::try_from(l).map_err(|_| syntax("l= too large"))?),
        None => None,
    };
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut hashed = 0usize;
    canon::body_into(body_c, body, &mut |piece| {
        let take = limit.map_or(piece.len(), |l| piece.len().min(l.saturating_sub(hashed)));
        hash.update(&piece[..take]);
        hashed += piece.len();
    });
    if limit.is_some_and(|l| l > hashed) || hash.finish().as_ref() != body_hash.as_slice() {
        return Err(Failure::BodyHash);
    }

    // Header data: the named fields, bottom-up, each instance once; then this field without
    // its b= value and without the final CRLF.
    let mut taken = vec![false; fields.len()];
    let mut data = Vec::new();
    for name in &signed_names {
        let pick = fields
            .iter()
            .enumerate()
            .rev()
            .find(|(i, f)| !taken[*i] && field_name(f).eq_ignore_ascii_case(name));
        if let Some((i, f)) = pick {
            taken[i] = true;
            data.extend_from_slice(&canon::header(header_c, f));
        }
    }
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let mut own = raw.get(..=colon).unwrap_or(raw).to_vec();
    own.extend_from_slice(&tags::without_b_value(
        raw.get(colon + 1..).unwrap_or_default(),
    ));
    let mut own = canon::header(header_c, &own);
    own.truncate(own.len().saturating_sub(2));
    data.extend_from_slice(&own);

    let ok = match algorithm {
        Algorithm::RsaSha256 => signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            &key.key,
        )
        .verify(&data, &signature),
        Algorithm::Ed25519Sha256 => {
            let hash = digest::digest(&digest::SHA256, &data);
            signature::UnparsedPublicKey::new(&signature::ED25519, &key.key)
                .verify(hash.as_ref(), &signature)
        }
    };
    ok.map_err(|_| Failure::Signature)
}

fn canonicalization(c: &[u8]) -> Result<(Canonicalization, Canonicalization), Failure> {
    let one = |s: &[u8]| match s {
        b"simple" => Ok(Canonicalization::Simple),
        b"relaxed" => Ok(Canonicalization::Relaxed),
        other => Err(Failure::Syntax(format!(
            "unknown canonicalization {}",
            String::from_utf8_lossy(other)
        ))),
    };
    match c.iter().position(|&b| b == b'/') {
        Some(slash) => Ok((one(&c[..slash])?, one(&c[slash + 1..])?)),
        None => Ok((one(c)?, Canonicalization::Simple)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_split() {
        let (f, b) = split_message(b"A: 1\r\nB: 2\r\n 3\r\n\r\nbody\r\n");
        assert_eq!(f, vec![&b"A: 1\r\n"[..], &b"B: 2\r\n 3\r\n"[..]]);
        assert_eq!(b, b"body\r\n");
        let (f, b) = split_message(b"A: 1\r\n");
        assert_eq!(f, vec![&b"A: 1\r\n"[..]]);
        assert_eq!(b, b"");
        let (f, b) = split_message(b"\r\nbody");
        assert!(f.is_empty());
        assert_eq!(b, b"body");
    }

    #[test]
    fn no_signature_no_result() {
        assert!(verify(b"From: a@b\r\n\r\nx\r\n", 0, &|_, _| KeyAnswer::NotFound).is_empty());
    }
}
