//! The delivered form of an accepted message: what SES hands to the recipient's MTA
//! (ses-smtp.md §5 and §8.8).
//!
//! SES strips every `X-SES-*` header, replaces Message-ID with `<id@REGION.amazonses.com>`
//! (`email.amazonses.com` in us-east-1) and Date with the acceptance time, adds `Feedback-ID`
//! and `X-SES-Outgoing`, prepends its own `d=amazonses.com` DKIM-Signature (`c=relaxed/simple`,
//! signing Message-ID and Feedback-ID) and sends from the VERP address `<id>@<MAIL FROM domain>`.
//! The client's own DKIM-Signature is left byte for byte as it came, so a signature broken by
//! the Message-ID/Date rewrites fails verification here as it would at a real receiver.

use base64::Engine;
use chrono::{DateTime, Utc};
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rand::Rng;

use super::config::SimSettings;
use super::rules::MAILBOX_SIMULATOR;
use crate::message::headers::{Field, Message};

/// The selector of the simulator's `d=amazonses.com` key.
pub const SES_SELECTOR: &str = "dkimrelaysim";
/// The signing domain of SES's own signature.
pub const SES_DKIM_DOMAIN: &str = "amazonses.com";
/// The sending IP in `X-SES-Outgoing` (and the verdict's SPF check).
pub const SES_OUTGOING_IP: &str = "54.240.27.27";

/// Headers SES's own signature covers when present, in `h=` order.
const SES_SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "References",
    "In-Reply-To",
    "Date",
    "Message-ID",
    "Feedback-ID",
];

/// Why the delivered form could not be produced (answered with a 451: nothing is stored).
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("simulator DKIM key: {0}")]
    Key(String),
    #[error("simulator DKIM signing failed: {0}")]
    Sign(String),
}

/// The simulator's `d=amazonses.com` signing key (Ed25519, made at start).
pub struct SesKey {
    pkcs8: Vec<u8>,
    public_key: Vec<u8>,
}

impl std::fmt::Debug for SesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SesKey").finish_non_exhaustive()
    }
}

impl SesKey {
    pub fn generate() -> Result<SesKey, DeliverError> {
        let pkcs8 = Ed25519Key::generate_pkcs8().map_err(|e| DeliverError::Key(e.to_string()))?;
        let key =
            Ed25519Key::from_pkcs8_der(&pkcs8).map_err(|e| DeliverError::Key(e.to_string()))?;
        Ok(SesKey {
            public_key: key.public_key(),
            pkcs8,
        })
    }

    /// The DNS name and TXT value that publish this key.
    pub fn dns_record(&self) -> (String, String) {
        (
            format!("{SES_SELECTOR}._domainkey.{SES_DKIM_DOMAIN}"),
            format!(
                "v=DKIM1; k=ed25519; p={}",
                base64::engine::general_purpose::STANDARD.encode(&self.public_key)
            ),
        )
    }
}

/// An SES message ID: `0100` + 12 hex digits of Unix ms + `-` + a v4-style UUID + `-000000`.
pub fn new_message_id(now: DateTime<Utc>) -> String {
    let ms = now.timestamp_millis().max(0) as u64 & 0xffff_ffff_ffff;
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "0100{ms:012x}-{}-{}-{}-{}-{}-000000",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The Message-ID domain: `email.amazonses.com` in us-east-1, else `<region>.amazonses.com`.
pub fn message_id_domain(region: &str) -> String {
    if region == "us-east-1" {
        "email.amazonses.com".into()
    } else {
        format!("{region}.amazonses.com")
    }
}

/// SES's Date form: RFC 5322, no zero-padded day, `+0000`.
pub fn ses_date(now: DateTime<Utc>) -> String {
    now.format("%a, %-d %b %Y %H:%M:%S +0000").to_string()
}

/// The envelope-sender domain: the custom MAIL FROM domain of the From identity (else of the
/// MAIL FROM identity) when its MX check is OK; otherwise SES's default (`amazonses.com` in
/// us-east-1, `<region>.amazonses.com` elsewhere), as under BehaviorOnMXFailure=UseDefaultValue.
pub fn envelope_domain(
    settings: &SimSettings,
    header_from: Option<&str>,
    mail_from: &str,
) -> String {
    settings
        .custom_mail_from(header_from, mail_from)
        .filter(|m| m.mx_ok)
        .map(|m| m.domain.clone())
        .unwrap_or_else(|| {
            if settings.region == "us-east-1" {
                "amazonses.com".into()
            } else {
                format!("{}.amazonses.com", settings.region)
            }
        })
}

/// The mailbox-simulator outcome for a recipient, if it is one (ses-smtp.md §4).
pub fn mailbox_simulator_outcome(rcpt: &str) -> Option<&'static str> {
    let (local, domain) = rcpt.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(MAILBOX_SIMULATOR) {
        return None;
    }
    let base = local
        .split('+')
        .next()
        .unwrap_or(local)
        .to_ascii_lowercase();
    Some(match base.as_str() {
        "success" => "delivered",
        "bounce" => "bounce 550 5.1.1",
        "complaint" => "complaint",
        "ooto" => "ooto",
        "suppressionlist" => "suppressed",
        _ => "delivered",
    })
}

/// The message as delivered.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub bytes: Vec<u8>,
    pub envelope_from: String,
}

fn replace_or_append(message: &mut Message, name: &str, value: &str) {
    let field = Field::new(name, value);
    match message.fields.iter().position(|f| f.is(name)) {
        Some(i) => {
            message.fields[i] = field;
            let mut seen = false;
            message.fields.retain(|f| {
                if f.is(name) {
                    let keep = !seen;
                    seen = true;
                    keep
                } else {
                    true
                }
            });
        }
        None => message.fields.push(field),
    }
}

/// Applies SES's rewrites to an accepted message and signs it as `d=amazonses.com`.
pub fn deliver(
    settings: &SimSettings,
    key: &SesKey,
    mut message: Message,
    id: &str,
    now: DateTime<Utc>,
    header_from: Option<&str>,
    mail_from: &str,
) -> Result<Delivered, DeliverError> {
    message.fields.retain(|f| {
        !f.name()
            .trim_end()
            .to_ascii_lowercase()
            .starts_with("x-ses-")
    });
    replace_or_append(
        &mut message,
        "Message-ID",
        &format!("<{id}@{}>", message_id_domain(&settings.region)),
    );
    replace_or_append(&mut message, "Date", &ses_date(now));
    let mut fb = [0u8; 32];
    rand::rng().fill(&mut fb);
    let fb = base64::engine::general_purpose::STANDARD.encode(fb);
    message.fields.push(Field::new(
        "Feedback-ID",
        &format!("::1.{}.{fb}:AmazonSES", settings.region),
    ));
    message.fields.push(Field::new(
        "X-SES-Outgoing",
        &format!("{}-{SES_OUTGOING_IP}", now.format("%Y.%m.%d")),
    ));

    // (mail-auth writes `h=` in bottom-up field order; the set is what matters.)
    let headers: Vec<String> = SES_SIGNED
        .iter()
        .filter(|h| message.count(h) > 0)
        .map(|h| h.to_string())
        .collect();
    let signing_key =
        Ed25519Key::from_pkcs8_der(&key.pkcs8).map_err(|e| DeliverError::Key(e.to_string()))?;
    let bytes = message.to_bytes();
    let signature = DkimSigner::from_key(signing_key)
        .domain(SES_DKIM_DOMAIN)
        .selector(SES_SELECTOR)
        .headers(headers)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Simple)
        .sign(&bytes)
        .map_err(|e| DeliverError::Sign(e.to_string()))?;
    let header = signature.to_header();
    let (name, value) = header
        .split_once(':')
        .unwrap_or(("DKIM-Signature", &header));
    let value = value.trim_start().trim_end_matches(['\r', '\n']);
    message.fields.insert(0, Field::new(name, value));

    let domain = envelope_domain(settings, header_from, mail_from);
    Ok(Delivered {
        bytes: message.to_bytes(),
        envelope_from: format!("{id}@{domain}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_date_shapes() {
        let now = DateTime::parse_from_rfc3339("2023-04-12T09:58:45.472Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = new_message_id(now);
        assert!(id.starts_with("0100018774e741e0-"), "{id}");
        assert!(id.ends_with("-000000"));
        assert_eq!(id.len(), 4 + 12 + 1 + 36 + 7);
        assert_eq!(&id[17 + 14..17 + 15], "4");
        let d = DateTime::parse_from_rfc3339("2023-08-06T23:32:47Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ses_date(d), "Sun, 6 Aug 2023 23:32:47 +0000");
        assert_eq!(
            mailbox_simulator_outcome("bounce+x@simulator.amazonses.com"),
            Some("bounce 550 5.1.1")
        );
        assert_eq!(mailbox_simulator_outcome("a@b.c"), None);
    }
}
