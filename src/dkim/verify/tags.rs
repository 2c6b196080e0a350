//! Tag lists (RFC 6376 §3.2) as the verifier reads them: the DKIM-Signature field's value and
//! the `_domainkey` TXT record. Tag names and values have folding whitespace around them
//! removed; `b=`, `bh=` and `p=` (base64) lose whitespace inside as well when decoded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::dkim::Algorithm;

fn is_fws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_fws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_fws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_fws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// `name=value` pairs in order. A duplicate tag or a segment without `=` is a syntax error.
pub(super) fn parse(value: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for segment in value.split(|&b| b == b';') {
        if trim_fws(segment).is_empty() {
            continue;
        }
        let eq = segment
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("tag without '=': {}", String::from_utf8_lossy(segment)))?;
        let name = String::from_utf8_lossy(trim_fws(&segment[..eq])).into_owned();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("tag {name}= appears twice"));
        }
        out.push((name, trim_fws(&segment[eq + 1..]).to_vec()));
    }
    Ok(out)
}

pub(super) fn get<'a>(tags: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    tags.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Base64 with any folding whitespace inside removed.
pub(super) fn base64(value: &[u8]) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = value.iter().copied().filter(|&b| !is_fws(b)).collect();
    BASE64
        .decode(&compact)
        .map_err(|e| format!("bad base64: {e}"))
}

/// The field value with the `b=` tag's value removed (RFC 6376 §3.7): every byte else, FWS
/// included, stays where it is.
pub(super) fn without_b_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for (i, segment) in value.split(|&b| b == b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        match segment.iter().position(|&b| b == b'=') {
            Some(eq) if trim_fws(&segment[..eq]) == b"b" => out.extend_from_slice(&segment[..=eq]),
            _ => out.extend_from_slice(segment),
        }
    }
    out
}

/// A public key as a verifier uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub algorithm: Algorithm,
    /// SubjectPublicKeyInfo DER (RSA) or the raw 32 bytes (Ed25519), as in `p=`.
    pub key: Vec<u8>,
}

/// What a `_domainkey` TXT record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRecord {
    Key(PublicKey),
    /// `p=` empty: the key is revoked (RFC 6376 §3.6.1).
    Revoked,
}

/// Parses a key record (RFC 6376 §3.6.1): `v=DKIM1` if present, `k=` (default rsa), `h=` must
/// allow sha256 if present, `s=` must allow email if present, `p=`.
pub fn key_record(txt: &str) -> Result<KeyRecord, String> {
    let tags = parse(txt.as_bytes())?;
    if let Some(v) = get(&tags, "v")
        && v != b"DKIM1"
    {
        return Err("v= is not DKIM1".into());
    }
    let algorithm = match get(&tags, "k").unwrap_or(b"rsa") {
        b"rsa" => Algorithm::RsaSha256,
        b"ed25519" => Algorithm::Ed25519Sha256,
        other => return Err(format!("unknown k={}", String::from_utf8_lossy(other))),
    };
    if let Some(h) = get(&tags, "h")
        && !h.split(|&b| b == b':').any(|a| trim_fws(a) == b"sha256")
    {
        return Err("h= does not allow sha256".into());
    }
    if let Some(s) = get(&tags, "s")
        && !s
            .split(|&b| b == b':')
            .any(|a| matches!(trim_fws(a), b"email" | b"*"))
    {
        return Err("s= does not allow email".into());
    }
    let p = get(&tags, "p").ok_or("no p= tag")?;
    if p.is_empty() {
        return Ok(KeyRecord::Revoked);
    }
    Ok(KeyRecord::Key(PublicKey {
        algorithm,
        key: base64(p)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_value_removed_and_nothing_else() {
        assert_eq!(
            without_b_value(b" v=1; bh=abc;\r\n\tb=xy\r\n\t z; d=a"),
            b" v=1; bh=abc;\r\n\tb=; d=a".to_vec()
        );
        assert_eq!(without_b_value(b"a=1; b = q"), b"a=1; b =".to_vec());
    }

    #[test]
    fn key_records() {
        assert_eq!(key_record("v=DKIM1; p="), Ok(KeyRecord::Revoked));
        assert!(matches!(
            key_record("v=DKIM1; k=ed25519; p=AAAA"),
            Ok(KeyRecord::Key(PublicKey {
                algorithm: Algorithm::Ed25519Sha256,
                ..
            }))
        ));
        assert!(key_record("v=DKIM2; p=AAAA").is_err());
        assert!(key_record("k=rsa; h=sha1; p=AAAA").is_err());
    }
}
