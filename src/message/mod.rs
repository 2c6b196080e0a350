//! The message and its envelope on their way through the relay: header-From lookup, the SES
//! header policy and the envelope MAIL FROM rewrite. Pure functions over bytes and config.
//!
//! Order matters: the policy runs before signing (so removed headers are not signed and added
//! ones are), and dot-stuffing happens after signing, on the way out.

pub mod address;
pub mod headers;

use std::sync::Arc;

use crate::config::{Domain, EnvelopeLocalPart, Profile, Snapshot};
use crate::smtp::command::Mailbox;
use crate::smtp::reply::Reply;
use address::{Author, FromError};
use headers::{Field, Message};

/// What the client asked for in MAIL and RCPT.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `None` is the null sender `<>`.
    pub mail_from: Option<Mailbox>,
    pub rcpts: Vec<Mailbox>,
    /// The authenticated user, when the client logged in: its domains bound `From:`.
    pub submitter: Option<crate::users::Submitter>,
}

/// A message ready to sign: the domain that signs it, its rewritten envelope sender and its
/// header section after the SES policy.
#[derive(Debug)]
pub struct Prepared {
    pub domain: Arc<Domain>,
    pub author: Author,
    pub envelope_from: Mailbox,
    pub message: Message,
    /// DKIM-Signature fields the application had put on (removed under the SES profile).
    pub removed_signatures: usize,
    /// Return-Path fields removed (a receiving MTA writes its own).
    pub removed_return_path: usize,
}

/// Applies the relay's rules to one message. An `Err` is the reply the client gets; nothing is
/// sent upstream then.
///
/// `data` is the DATA buffer; it moves into the [`Message`], which parses it in place.
pub fn prepare(snapshot: &Snapshot, envelope: &Envelope, data: Vec<u8>) -> Result<Prepared, Reply> {
    let mut message = Message::from_buffer(data).map_err(|e| {
        Reply::new(
            554,
            "5.6.0",
            format!("Malformed message header section: {e}"),
        )
    })?;
    let author = address::author(&message).map_err(|e| {
        let why = match e {
            FromError::Missing | FromError::Several(_) | FromError::SeveralAddresses(_) => {
                "; exactly one From address is needed to choose the DKIM signing domain (DMARC)"
            }
            FromError::Unreadable => "",
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
    let domain = snapshot.domain_for(&author.domain).ok_or_else(|| {
        Reply::new(
            550,
            "5.7.1",
            format!(
                "No DKIM key for the From domain {}; this relay signs only for its configured domains",
                author.domain
            ),
        )
    })?;

    let profile = snapshot.upstream.profile;
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
        && let Some(set) = &domain.configuration_set
        && message.count("X-SES-CONFIGURATION-SET") == 0
    {
        message
            .fields
            .push(Field::new("X-SES-CONFIGURATION-SET", set));
    }

    let envelope_from = rewrite_envelope_from(domain, envelope.mail_from.as_ref());
    Ok(Prepared {
        domain: Arc::clone(domain),
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
pub fn rewrite_envelope_from(domain: &Domain, original: Option<&Mailbox>) -> Mailbox {
    let local = match (original, &domain.envelope_local_part) {
        (None, _) => domain.null_sender_local_part.clone(),
        (Some(_), EnvelopeLocalPart::Fixed(l)) => l.clone(),
        (Some(m), EnvelopeLocalPart::Keep) => m.local.clone(),
    };
    Mailbox {
        local,
        domain: domain.mail_from.clone(),
    }
}
