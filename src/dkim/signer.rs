//! The signer: picks the header list for one message and adds the DKIM-Signature field(s).
//!
//! Rules (RFC 6376, RFC 8301, SES manual DKIM guide): relaxed/relaxed, `t=` always, `x=` when
//! configured, never `l=`, never rsa-sha1. Headers in the domain's list are signed only when
//! present (SES adds Message-ID and Date, so naming an absent one would break the signature),
//! and the oversigned ones are named once more than they occur, so a copy added in transit
//! breaks the signature. `h=` names every header in lower case, one spelling per name whatever
//! the message or the configuration writes (`fRoM:` and an oversigned `From` are both `from`):
//! go-msgauth and other receivers reject a signature that spells one name two ways.
//!
//! The hashing is ours ([`super::canon`], SHA-256 from aws-lc-rs), not mail-auth's: mail-auth
//! 0.13 hashes bodies that end in whitespace-only lines wrongly (see [`super::canon`]). mail-auth
//! still provides the private-key operation ([`super::key::SharedKey`], RSASSA-PKCS1-v1_5 with
//! SHA-256 over the header data; Ed25519 over its SHA-256, RFC 8463 §3), which it does right.
//!
//! One buffer per message: the body is hashed in place from the message's body span and the
//! header fields from their spans ([`Message::fields`]); [`with_signatures`] puts the signature
//! fields in front of the field list; no whole-message copy is made for signing.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::SigningKey as _;

use super::canon::{self, Canon};
use super::domain::Domain;
use crate::message::headers::{Field, Message};

/// Why a message could not be signed. The relay answers 451 and sends nothing.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing with {domain}/{selector} failed: {detail}")]
    Crypto {
        domain: String,
        selector: String,
        detail: String,
    },
    #[error("domain {0} has no active selector")]
    NoSelector(String),
}

/// The `h=` list for this message under this domain's policy, every name in lower case.
pub fn header_list(domain: &Domain, message: &Message) -> Vec<String> {
    let mut list = Vec::new();
    for name in &domain.headers {
        let present = message.count(name);
        let over = domain.oversign.iter().any(|o| o.eq_ignore_ascii_case(name));
        let times = if over { present + 1 } else { present };
        for _ in 0..times {
            list.push(name.to_ascii_lowercase());
        }
    }
    // Oversigned names missing from `headers` still guard against additions.
    for name in &domain.oversign {
        if !domain.headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            for _ in 0..=message.count(name) {
                list.push(name.to_ascii_lowercase());
            }
        }
    }
    list
}

/// The current time as `t=` writes it.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs with every active selector of `domain` (one under the SES profile) and returns the
/// DKIM-Signature fields, to be placed above all other fields. relaxed/relaxed.
pub fn sign(domain: &Domain, message: &Message) -> Result<Vec<Field>, SignError> {
    sign_with(domain, message, Canon::Relaxed, Canon::Relaxed, now())
}

/// [`sign`] with a chosen `c=` and signing time (the differential tests sign simple too).
pub fn sign_with(
    domain: &Domain,
    message: &Message,
    header_canon: Canon,
    body_canon: Canon,
    now: u64,
) -> Result<Vec<Field>, SignError> {
    if domain.active.is_empty() {
        return Err(SignError::NoSelector(domain.name.clone()));
    }
    let names = header_list(domain, message);
    let mut body_hash = BASE64.encode(body_hash(body_canon, message.body()));
    if fault::is_broken(&domain.name) {
        body_hash = BASE64.encode([0u8; 32]);
    }
    let signed = signed_headers(header_canon, message, &names);
    let mut out = Vec::with_capacity(domain.active.len());
    for key in &domain.active {
        let mut value = format!(
            "v=1; a={}; c={}/{}; d={}; s={};\r\n\tt={now};",
            key.algorithm,
            header_canon.as_str(),
            body_canon.as_str(),
            domain.name,
            key.selector,
        );
        if let Some(x) = domain.expiration {
            value.push_str(&format!(" x={};", now.saturating_add(x)));
        }
        value.push_str(&format!(
            " h={};\r\n\tbh={body_hash};\r\n\tb=",
            names.join(":")
        ));
        // The header data: the signed fields, then this field with an empty b= and without
        // its final CRLF (RFC 6376 §3.7).
        let mut data = signed.clone();
        let unsigned = format!("DKIM-Signature: {value}");
        canon::header(header_canon, unsigned.as_bytes(), &mut data);
        data.truncate(data.len() - 2);
        let signature = key.key.sign(&data[..]).map_err(|e| SignError::Crypto {
            domain: domain.name.clone(),
            selector: key.selector.clone(),
            detail: e.to_string(),
        })?;
        push_folded(&mut value, &BASE64.encode(signature));
        out.push(Field::new("DKIM-Signature", &value));
    }
    Ok(out)
}

/// The body hash (`bh=`): the canonical body streamed into SHA-256 in 8 KB batches.
fn body_hash(canon: Canon, body: &[u8]) -> Vec<u8> {
    const BATCH: usize = 8192;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = Vec::with_capacity(BATCH + 2);
    {
        let mut sink = |b: &[u8]| {
            buf.extend_from_slice(b);
            if buf.len() >= BATCH {
                ctx.update(&buf);
                buf.clear();
            }
        };
        let mut c = canon::Body::new(canon);
        c.update(body, &mut sink);
        c.finish(&mut sink);
    }
    ctx.update(&buf);
    ctx.finish().as_ref().to_vec()
}

/// The canonical form of the fields `names` selects: for each name, the last instance not yet
/// used, from the bottom up (RFC 6376 §5.4.2); a name with no instance left adds nothing.
fn signed_headers(canon: Canon, message: &Message, names: &[String]) -> Vec<u8> {
    let mut used = vec![false; message.fields.len()];
    let mut out = Vec::with_capacity(1024);
    for name in names {
        let found = (0..message.fields.len())
            .rev()
            .find(|&i| !used[i] && message.fields[i].is(name));
        if let Some(i) = found {
            used[i] = true;
            canon::header(canon, &message.fields[i].raw, &mut out);
        }
    }
    out
}

/// Appends `b64` folded into lines of at most 72 characters (FWS inside b= is ignored by
/// verifiers, RFC 6376 §3.5).
fn push_folded(value: &mut String, b64: &str) {
    let mut rest = b64;
    let mut first = true;
    while !rest.is_empty() {
        let take = rest.len().min(if first { 70 } else { 72 });
        if !first {
            value.push_str("\r\n\t");
        }
        value.push_str(&rest[..take]);
        rest = &rest[take..];
        first = false;
    }
}

/// Test support: makes the signer write a wrong body hash for one domain name, so the relay's
/// refusal path (self-check fails → `451 4.3.0`, nothing sent) can be exercised end to end
/// through a real socket. Nothing in the relay calls [`fault::break_body_hash`]; an unused hook
/// costs one relaxed atomic load per message.
#[doc(hidden)]
pub mod fault {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    static ANY: AtomicBool = AtomicBool::new(false);
    static DOMAINS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// From now on, signatures for `domain` (this process) carry a wrong `bh=`.
    pub fn break_body_hash(domain: &str) {
        let mut d = DOMAINS.lock().unwrap_or_else(|p| p.into_inner());
        d.push(domain.to_string());
        ANY.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_broken(domain: &str) -> bool {
        ANY.load(Ordering::Relaxed)
            && DOMAINS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|d| d == domain)
    }
}

/// The message as it goes upstream: signatures first, then the fields and body. Only the
/// field list changes; the header spans and the body stay where they are.
pub fn with_signatures(signatures: Vec<Field>, mut message: Message) -> Message {
    message.fields.splice(0..0, signatures);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::verify::{self, KeyAnswer, PublicKey};
    use std::path::Path;

    fn domain(algorithm: &str, key: &str) -> std::sync::Arc<Domain> {
        let root = env!("CARGO_MANIFEST_DIR");
        let text = format!(
            "[upstream]\nsimulator = true\n\
             [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s\"]\n\
             [domains.\"example.org\".selectors.s]\nalgorithm = \"{algorithm}\"\n\
             key_file = \"{root}/keys/example.org/{key}\"\n"
        );
        let snap = crate::config::load_str(Path::new("t.toml"), &text).unwrap();
        snap.domains.get("example.org").cloned().unwrap()
    }

    fn verify_with(domain: &Domain, bytes: &[u8]) -> Vec<verify::Checked> {
        let key = &domain.active[0];
        let answer = KeyAnswer::Key(PublicKey {
            algorithm: key.algorithm,
            key: key.public_key.clone(),
        });
        verify::verify(bytes, 0, &|_, _| answer.clone())
    }

    /// Every name once in one spelling: the message's `fRoM:` and the oversigned entry alike.
    #[test]
    fn h_spells_each_name_one_way() {
        let domain = domain("rsa-sha256", "s2026a.pem");
        let message =
            Message::parse(b"fRoM: a@example.org\r\nSUBJECT: x\r\nto: b@example.net\r\n\r\nhi\r\n")
                .unwrap();
        let list = header_list(&domain, &message);
        assert!(
            list.iter().all(|n| *n == n.to_ascii_lowercase()),
            "{list:?}"
        );
        assert_eq!(list.iter().filter(|n| *n == "from").count(), 2, "{list:?}");
        let sig = sign(&domain, &message).unwrap();
        let text = String::from_utf8_lossy(&sig[0].raw).into_owned();
        let h = text
            .split(';')
            .find_map(|t| t.trim().strip_prefix("h="))
            .unwrap()
            .to_string();
        assert!(h.starts_with("from:from:"), "h={h}");
        assert_eq!(h, h.to_ascii_lowercase(), "h={h}");
    }

    /// The mail-auth 0.13 bug's bodies sign and verify, for both algorithms and all four c=.
    #[test]
    fn whitespace_only_trailing_lines_verify() {
        for (alg, key) in [
            ("rsa-sha256", "s2026a.pem"),
            ("ed25519-sha256", "e2026a.pem"),
        ] {
            let domain = domain(alg, key);
            for body in [&b"line\r\n \r\n"[..], b"</html>\r\n    \r\n", b"", b"x"] {
                let mut input =
                    b"From: App <app@example.org>\r\nSubject:  a \r\n\tb\r\n\r\n".to_vec();
                input.extend_from_slice(body);
                let message = Message::parse(&input).unwrap();
                for hc in [Canon::Relaxed, Canon::Simple] {
                    for bc in [Canon::Relaxed, Canon::Simple] {
                        let sigs = sign_with(&domain, &message, hc, bc, 1_700_000_000).unwrap();
                        let out = with_signatures(sigs, message.clone()).to_bytes();
                        let checked = verify_with(&domain, &out);
                        assert_eq!(checked.len(), 1);
                        assert_eq!(checked[0].result, Ok(()), "{alg} {hc:?}/{bc:?} {body:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_changed_body_or_header_fails() {
        let domain = domain("rsa-sha256", "s2026a.pem");
        let message = Message::parse(b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n").unwrap();
        let sigs = sign(&domain, &message).unwrap();
        let out = with_signatures(sigs, message).to_bytes();
        let body_changed = [&out[..out.len() - 6], b"bodY\r\n"].concat();
        assert_eq!(
            verify_with(&domain, &body_changed)[0].result,
            Err(verify::Failure::BodyHash)
        );
        let text = String::from_utf8(out).unwrap();
        let header_changed = text.replace("Subject: s", "Subject: t");
        assert_eq!(
            verify_with(&domain, header_changed.as_bytes())[0].result,
            Err(verify::Failure::Signature)
        );
    }

    #[test]
    fn signatures_go_first_and_the_rest_stays_in_place() {
        let message = Message::from_buffer(b"From: a@b\r\n\r\nbody".to_vec()).unwrap();
        let from_ptr = message.fields[0].raw.as_ptr();
        let out = with_signatures(vec![Field::new("DKIM-Signature", "v=1")], message);
        assert_eq!(
            out.to_bytes(),
            b"DKIM-Signature: v=1\r\nFrom: a@b\r\n\r\nbody".to_vec()
        );
        assert_eq!(out.fields[1].raw.as_ptr(), from_ptr);
    }
}
