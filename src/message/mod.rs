//! The message and its envelope on their way through the relay: header-From lookup, the SES
//! header policy and the envelope MAIL FROM rewrite. Pure functions over bytes and the
//! message-owned settings below ([`Profile`], [`EnvelopeRules`]), which `config` builds.
//!
//! The signing domain itself belongs to `dkim` (which sits above this module): [`prepare`] finds
//! it through a caller-supplied lookup and sees it only as a [`SendingDomain`], so `message`
//! imports neither `dkim` nor `config`. The envelope type is [`crate::smtp::envelope::Envelope`].
//!
//! Order matters: the policy runs before signing (so removed headers are not signed and added
//! ones are), and dot-stuffing happens after signing, on the way out.

pub mod address;
pub mod headers;
pub mod printable;
pub mod tenant;

use crate::smtp::command::Mailbox;
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::Reply;
use address::{Author, FromError};
use headers::{Field, Message};

/// Which rules the upstream imposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Amazon SES: one DKIM-Signature, never sign what SES rewrites.
    Ses,
    /// Any smarthost: several selectors may sign.
    Generic,
}

/// What to put left of the @ of the rewritten envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeLocalPart {
    Keep,
    Fixed(String),
}

/// A sending domain's envelope rules: SPF is checked (and aligns) on the custom MAIL FROM
/// domain, and SES refuses the null sender, so `<>` gets a fixed bounce mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRules {
    /// The custom MAIL FROM domain (A-label): the domain itself or one of its subdomains.
    pub mail_from: String,
    pub envelope_local_part: EnvelopeLocalPart,
    pub null_sender_local_part: String,
}

/// What [`prepare`] needs to know about the domain that will sign (implemented by the signing
/// domain type in `dkim`).
pub trait SendingDomain {
    /// The configured `[domains."…"]` entry's name (A-label): what a user's allowed domains
    /// are checked against.
    fn name(&self) -> &str;
    fn envelope(&self) -> &EnvelopeRules;
    /// The SES configuration set to add as `X-SES-CONFIGURATION-SET`, if any.
    fn configuration_set(&self) -> Option<&str>;
}

/// A message ready to sign: the domain that signs it, its rewritten envelope sender and its
/// header section after the SES policy.
#[derive(Debug)]
pub struct Prepared<D> {
    pub domain: D,
    pub author: Author,
    pub envelope_from: Mailbox,
    pub message: Message,
    /// DKIM-Signature fields the application had put on (removed under the SES profile).
    pub removed_signatures: usize,
    /// Return-Path fields removed (a receiving MTA writes its own).
    pub removed_return_path: usize,
}

/// The fields RFC 5322 §3.6 allows at most once, besides From (refused by its own rule).
pub const SINGLE_FIELDS: &[&str] = &[
    "Date",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
];

/// Applies the relay's rules to one message. `domain_for` finds the signing domain for the
/// header-From domain (an A-label). An `Err` is the reply the client gets; nothing is sent
/// upstream then.
///
/// `data` is the DATA buffer; it moves into the [`Message`], which parses it in place.
pub fn prepare<D: SendingDomain>(
    profile: Profile,
    domain_for: impl FnOnce(&str) -> Option<D>,
    envelope: &Envelope,
    data: Vec<u8>,
) -> Result<Prepared<D>, Reply> {
    let mut message = Message::from_buffer(data).map_err(|e| {
        Reply::new(
            554,
            "5.6.0",
            format!("Malformed message header section: {e}"),
        )
    })?;
    // A field name followed by white space before the colon (`From : …`) is obsolete syntax
    // (RFC 5322 §4.5) that signers and verifiers treat differently: mail-auth would not sign
    // it, so its value could be changed after signing. Refused rather than signed around.
    if let Some(f) = message
        .fields
        .iter()
        .find(|f| f.name() != f.name().trim_end())
    {
        return Err(Reply::new(
            554,
            "5.6.0",
            format!(
                "Header field name `{}` is followed by white space before the colon; write `{}:`",
                f.name().trim_end(),
                f.name().trim_end()
            ),
        ));
    }
    // RFC 5322 §3.6 allows these fields once. Receivers disagree on which copy counts (OpenDKIM
    // refuses such a message outright as a syntax error), so a second copy is refused before
    // signing rather than signed for one reader and shown differently by another. From has its
    // own, more specific refusal below.
    if let Some(name) = SINGLE_FIELDS.iter().find(|name| message.count(name) > 1) {
        return Err(Reply::new(
            554,
            "5.6.0",
            format!(
                "Header field {name} appears {} times; RFC 5322 allows it once",
                message.count(name)
            ),
        ));
    }
    let author = address::author(&message).map_err(|e| {
        let why = match e {
            FromError::Missing | FromError::Several(_) | FromError::SeveralAddresses(_) => {
                "; exactly one From address is needed to choose the DKIM signing domain (DMARC)"
            }
            FromError::Syntax(_) => {
                "; the relay signs only a From that every receiver reads the same way \
                 (one plain mailbox, RFC 5322 without obsolete forms)"
            }
        };
        Reply::new(550, "5.6.0", format!("{e}{why}"))
    })?;
    // An authenticated user may only send as its own domains: checked before the key is even
    // chosen, so a message outside them is never signed.
    if let Some(sub) = &envelope.submitter
        && !sub.may_use(&author.domain)
    {
        return Err(Reply::new(
            550,
            "5.7.1",
            format!(
                "User {} may not send as From domain {}",
                sub.user, author.domain
            ),
        ));
    }
    let domain = domain_for(&author.domain).ok_or_else(|| {
        Reply::new(
            550,
            "5.7.1",
            format!(
                "No DKIM key for the From domain {}; this relay signs only for its configured domains",
                author.domain
            ),
        )
    })?;
    // Tenant binding on the names that matter: the entry whose key signs, and every other
    // identity a receiver or SES reads from the header (Sender, Resent-*, delegate ARNs).
    if let Some(sub) = &envelope.submitter {
        tenant::check(sub, domain.name(), &message)?;
    }

    let removed_signatures = if profile == Profile::Ses {
        // SES refuses a second DKIM-Signature (554 Duplicate header): we add exactly one.
        message.remove_all("DKIM-Signature")
    } else {
        0
    };
    // Return-Path is written by the final delivery MTA (RFC 5321 §4.4); SES also checks it as an
    // identity and substitutes its own.
    let removed_return_path = message.remove_all("Return-Path");
    if profile == Profile::Ses
        && let Some(set) = domain.configuration_set()
        && message.count("X-SES-CONFIGURATION-SET") == 0
    {
        message
            .fields
            .push(Field::new("X-SES-CONFIGURATION-SET", set));
    }

    let envelope_from = rewrite_envelope_from(domain.envelope(), envelope.mail_from.as_ref());
    Ok(Prepared {
        domain,
        author,
        envelope_from,
        message,
        removed_signatures,
        removed_return_path,
    })
}

/// `MAIL FROM:<local@whatever>` becomes `<local@MAIL_FROM_DOMAIN>`, so SPF is checked (and
/// aligns) on the domain's custom MAIL FROM subdomain. SES refuses the null sender, so `<>`
/// becomes the domain's fixed bounce mailbox.
pub fn rewrite_envelope_from(rules: &EnvelopeRules, original: Option<&Mailbox>) -> Mailbox {
    let local = match (original, &rules.envelope_local_part) {
        (None, _) => rules.null_sender_local_part.clone(),
        (Some(_), EnvelopeLocalPart::Fixed(l)) => l.clone(),
        (Some(m), EnvelopeLocalPart::Keep) => m.local.clone(),
    };
    Mailbox {
        local,
        domain: rules.mail_from.clone(),
    }
}
