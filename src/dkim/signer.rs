//! The signer: picks the header list for one message and adds the DKIM-Signature field(s).
//!
//! Rules (RFC 6376, RFC 8301, SES manual DKIM guide): relaxed/relaxed, `t=` always, `x=` when
//! configured, never `l=`, never rsa-sha1. Headers in the domain's list are signed only when
//! present (SES adds Message-ID and Date, so naming an absent one would break the signature),
//! and the oversigned ones are named once more than they occur, so a copy added in transit
//! breaks the signature.
//!
//! One buffer per message: the signer hashes the message's slices ([`Message::parts`]: the kept
//! header spans of the DATA buffer, the added fields, the body span) through mail-auth's
//! `sign_chained`, and [`with_signatures`] puts the signature fields in front of the field list;
//! no whole-message copy is made for signing or sending.

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};

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

/// The `h=` list for this message under this domain's policy.
pub fn header_list(domain: &Domain, message: &Message) -> Vec<String> {
    let mut list = Vec::new();
    for name in &domain.headers {
        let present = message.count(name);
        let over = domain.oversign.iter().any(|o| o.eq_ignore_ascii_case(name));
        let times = if over { present + 1 } else { present };
        for _ in 0..times {
            list.push(name.clone());
        }
    }
    // Oversigned names missing from `headers` still guard against additions.
    for name in &domain.oversign {
        if !domain.headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            for _ in 0..=message.count(name) {
                list.push(name.clone());
            }
        }
    }
    list
}

/// Signs with every active selector of `domain` (one under the SES profile) and returns the
/// DKIM-Signature fields, to be placed above all other fields.
pub fn sign(domain: &Domain, message: &Message) -> Result<Vec<Field>, SignError> {
    if domain.active.is_empty() {
        return Err(SignError::NoSelector(domain.name.clone()));
    }
    // The header section exactly as it will go out, then the separator and body: the same
    // bytes `to_bytes` would join, hashed in place.
    let parts = message.parts();
    let headers = header_list(domain, message);
    let mut out = Vec::with_capacity(domain.active.len());
    for key in &domain.active {
        let mut signer = DkimSigner::from_key(key.key.clone())
            .domain(domain.name.clone())
            .selector(key.selector.clone())
            .headers(headers.iter().cloned())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        if let Some(x) = domain.expiration {
            signer = signer.expiration(x);
        }
        let signature =
            signer
                .sign_chained(parts.iter().copied())
                .map_err(|e| SignError::Crypto {
                    domain: domain.name.clone(),
                    selector: key.selector.clone(),
                    detail: e.to_string(),
                })?;
        out.push(to_field(&signature.to_header()));
    }
    Ok(out)
}

/// mail-auth's `DKIM-Signature: ...\r\n` as a header field.
fn to_field(header: &str) -> Field {
    let (name, value) = header.split_once(':').unwrap_or(("DKIM-Signature", header));
    let value = value.trim_start().trim_end_matches(['\r', '\n']);
    Field::new(name, value)
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
    use std::path::Path;

    fn domain() -> std::sync::Arc<Domain> {
        let root = env!("CARGO_MANIFEST_DIR");
        let text = format!(
            "[upstream]\nsimulator = true\n\
             [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s\"]\n\
             [domains.\"example.org\".selectors.s]\nalgorithm = \"rsa-sha256\"\n\
             key_file = \"{root}/keys/example.org/s2026a.pem\"\n"
        );
        let snap = crate::config::load_str(Path::new("t.toml"), &text).unwrap();
        snap.domains.get("example.org").cloned().unwrap()
    }

    /// Signing the slices (header spans, added field, body span) gives the very signature that
    /// signing one contiguous copy gives, so nothing changed for verifiers.
    #[test]
    fn signature_over_slices_equals_signature_over_one_buffer() {
        let domain = domain();
        let input = b"From: App <app@example.org>\r\nTo: a@example.net\r\nSubject: one\r\n two\r\n\
                      DKIM-Signature: v=1; old\r\n\r\n.dot\r\n..two\r\nlast line without crlf"
            .to_vec();
        let mut message = Message::from_buffer(input).unwrap();
        message.remove_all("DKIM-Signature");
        message
            .fields
            .push(Field::new("X-SES-CONFIGURATION-SET", "set"));
        let contiguous = message.to_bytes();
        let headers = header_list(&domain, &message);
        for _ in 0..5 {
            let ours = sign(&domain, &message).unwrap();
            let key = &domain.active[0];
            let reference = DkimSigner::from_key(key.key.clone())
                .domain(domain.name.clone())
                .selector(key.selector.clone())
                .headers(headers.iter().cloned())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
                .sign(&contiguous)
                .unwrap();
            let reference = to_field(&reference.to_header());
            // t= is the current second: retry if the clock ticked in between.
            if ours[0] == reference {
                return;
            }
        }
        panic!("the signature over slices differs from the one over a contiguous copy");
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
