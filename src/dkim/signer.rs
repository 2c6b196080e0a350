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

use crate::config::Domain;
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
        let signature = signer.sign_chained(parts.iter().copied()).map_err(|e| SignError::Crypto {
            domain: domain.name.clone(),
            selector: key.selector.clone(),
            detail: e.to_string(),
        })?;
        let header = signature.to_header();
        let (name, value) = header
            .split_once(':')
            .unwrap_or(("DKIM-Signature", &header));
        let value = value.trim_start().trim_end_matches(['\r', '\n']);
        out.push(Field::new(name, value));
    }
    Ok(out)
}

/// The message as it goes upstream: signatures first, then the fields and body. Only the
/// field list changes; the header spans and the body stay where they are.
pub fn with_signatures(signatures: Vec<Field>, mut message: Message) -> Message {
    message.fields.splice(0..0, signatures);
    message
}
