//! Mailpit's JSON shapes (API v1), built from an outbox record and its delivered message.
//!
//! Field names and casing are Mailpit's exactly (`internal/storage/structs.go`,
//! `server/apiv1/messages.go` in axllent/mailpit), because existing clients — the npm
//! `mailpit-api` package, Cypress and Playwright helpers — decode them by name. Where Mailpit
//! has a value we do not model, we send its empty form (`[]`, `""`, `0`) rather than omit the
//! field, as Mailpit does. The `ID` is the SES message ID the simulator answered `250 Ok <id>`
//! with, so a test can look up exactly the message it sent. Tags carry the verdict
//! (`dkim-pass`, `spf-softfail`, `dmarc-fail`, …) and the mailbox-simulator outcome
//! (`simulator-bounce`, …), so Mailpit's `tag:` search filters by them.

use std::collections::{BTreeMap, BTreeSet};

use mail_parser::{Address, MessageParser, MimeHeaders};
use serde::Serialize;

use crate::sim::outbox::{Record, auth_summary};

/// Mailpit's `mail.Address` (Go's `net/mail`): `{"Name": "", "Address": "a@b"}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MailAddress {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
}

/// Mailpit's `MessageSummary`: one row of `GET /api/v1/messages` and `/search`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageSummary {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    pub read: bool,
    pub from: Option<MailAddress>,
    pub to: Vec<MailAddress>,
    pub cc: Vec<MailAddress>,
    pub bcc: Vec<MailAddress>,
    pub reply_to: Vec<MailAddress>,
    pub subject: String,
    pub created: String,
    pub username: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub attachments: usize,
    pub snippet: String,
}

/// Mailpit's `Attachment`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    #[serde(rename = "PartID")]
    pub part_id: String,
    pub file_name: String,
    pub content_type: String,
    #[serde(rename = "ContentID")]
    pub content_id: String,
    pub size: u64,
    pub checksums: Checksums,
}

/// Mailpit's attachment checksums (not computed here: empty strings).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checksums {
    #[serde(rename = "MD5")]
    pub md5: String,
    #[serde(rename = "SHA1")]
    pub sha1: String,
    #[serde(rename = "SHA256")]
    pub sha256: String,
}

/// Mailpit's `ListUnsubscribe`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListUnsubscribe {
    pub header: String,
    pub links: Vec<String>,
    pub errors: String,
    pub header_post: String,
}

/// Mailpit's `Message`: `GET /api/v1/message/{ID}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    pub from: Option<MailAddress>,
    pub to: Vec<MailAddress>,
    pub cc: Vec<MailAddress>,
    pub bcc: Vec<MailAddress>,
    pub reply_to: Vec<MailAddress>,
    pub return_path: String,
    pub subject: String,
    pub list_unsubscribe: ListUnsubscribe,
    pub date: String,
    pub tags: Vec<String>,
    pub username: String,
    pub text: String,
    #[serde(rename = "HTML")]
    pub html: String,
    pub size: u64,
    pub inline: Vec<Attachment>,
    pub attachments: Vec<Attachment>,
}

/// The parts of a delivered message the API shows, parsed once when the message is indexed.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub message_id: String,
    pub from: Option<MailAddress>,
    pub to: Vec<MailAddress>,
    pub cc: Vec<MailAddress>,
    pub reply_to: Vec<MailAddress>,
    pub subject: String,
    pub date: Option<String>,
    pub text: String,
    pub html: String,
    pub inline: Vec<Attachment>,
    pub attachments: Vec<Attachment>,
    pub list_unsubscribe: String,
    pub list_unsubscribe_post: String,
}

fn addresses(a: Option<&Address<'_>>) -> Vec<MailAddress> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| {
                Some(MailAddress {
                    name: x.name().unwrap_or("").to_string(),
                    address: x.address()?.to_string(),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Parses a delivered message (mail-parser: MIME, encoded words, transfer encodings).
pub fn parse(eml: &[u8]) -> Parsed {
    let Some(m) = MessageParser::default().parse(eml) else {
        return Parsed::default();
    };
    let attachment = |pos: u32| -> Option<Attachment> {
        let part = m.part(pos)?;
        Some(Attachment {
            part_id: pos.to_string(),
            file_name: part.attachment_name().unwrap_or("").to_string(),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into()),
            content_id: part
                .content_id()
                .unwrap_or("")
                .trim_matches(['<', '>'])
                .to_string(),
            size: part.contents().len() as u64,
            checksums: Checksums::default(),
        })
    };
    let mut inline = Vec::new();
    let mut attachments = Vec::new();
    for &pos in &m.attachments {
        let Some(a) = attachment(pos) else { continue };
        let is_inline = m
            .part(pos)
            .and_then(|p| p.content_disposition())
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"))
            && !a.content_id.is_empty();
        if is_inline {
            inline.push(a);
        } else {
            attachments.push(a);
        }
    }
    let header_text = |name: &str| {
        m.header_raw(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    Parsed {
        message_id: m.message_id().unwrap_or("").to_string(),
        from: addresses(m.from()).into_iter().next(),
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        reply_to: addresses(m.reply_to()),
        subject: m.subject().unwrap_or("").to_string(),
        date: m.date().map(|d| d.to_rfc3339()),
        text: m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        html: m.body_html(0).map(|t| t.into_owned()).unwrap_or_default(),
        inline,
        attachments,
        list_unsubscribe: header_text("List-Unsubscribe"),
        list_unsubscribe_post: header_text("List-Unsubscribe-Post"),
    }
}

/// The tags of a message: its verdict (the best DKIM result, SPF, DMARC, as in
/// `dkim-relay outbox list`), `dkim-aligned` when an aligned signature passed, `spf-aligned`
/// when SPF passed for a MAIL FROM domain aligned with From (DMARC counts both), and each
/// mailbox-simulator outcome (`simulator-bounce`, `simulator-complaint`, …). Feedback the
/// simulator wrote on SES's behalf is tagged `feedback` and `feedback-<kind>` instead (it has
/// no verdict). Sorted, as Mailpit sorts tags.
pub fn tags(record: &Record) -> Vec<String> {
    let mut tags = BTreeSet::new();
    if crate::sim::feedback::original_of(record).is_some() {
        tags.insert("feedback".to_string());
        for o in &record.mailbox_simulator {
            if let Some(kind) = o.outcome.strip_prefix("feedback ") {
                tags.insert(format!("feedback-{kind}"));
            }
        }
        return tags.into_iter().collect();
    }
    for word in auth_summary(&record.verdict).split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            tags.insert(format!("{k}-{v}"));
        }
    }
    if record
        .verdict
        .dkim
        .iter()
        .any(|d| d.aligned && d.result == "pass")
    {
        tags.insert("dkim-aligned".into());
    }
    if record.verdict.spf.aligned && record.verdict.spf.result == "pass" {
        tags.insert("spf-aligned".into());
    }
    for o in &record.mailbox_simulator {
        let word = o.outcome.split_whitespace().next().unwrap_or("delivered");
        tags.insert(format!("simulator-{word}"));
    }
    tags.into_iter().collect()
}

/// Up to 250 characters of the text body, whitespace collapsed (Mailpit's snippet).
pub fn snippet(parsed: &Parsed) -> String {
    let source = if parsed.text.trim().is_empty() {
        strip_tags(&parsed.html)
    } else {
        parsed.text.clone()
    };
    let words: Vec<&str> = source.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.chars().count() <= 250 {
        joined
    } else {
        let mut s: String = joined.chars().take(250).collect();
        s.push_str("...");
        s
    }
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The summary row for a message.
pub fn summary(record: &Record, parsed: &Parsed, read: bool) -> MessageSummary {
    MessageSummary {
        id: record.id.clone(),
        message_id: parsed.message_id.clone(),
        read,
        from: parsed.from.clone(),
        to: parsed.to.clone(),
        cc: parsed.cc.clone(),
        bcc: Vec::new(),
        reply_to: parsed.reply_to.clone(),
        subject: parsed.subject.clone(),
        created: record.time.clone(),
        username: record.user.clone(),
        tags: tags(record),
        size: record.size as u64,
        attachments: parsed.attachments.len(),
        snippet: snippet(parsed),
    }
}

/// The full message.
pub fn message(record: &Record, parsed: &Parsed) -> Message {
    Message {
        id: record.id.clone(),
        message_id: parsed.message_id.clone(),
        from: parsed.from.clone(),
        to: parsed.to.clone(),
        cc: parsed.cc.clone(),
        bcc: Vec::new(),
        reply_to: parsed.reply_to.clone(),
        return_path: record.envelope_from.clone(),
        subject: parsed.subject.clone(),
        list_unsubscribe: ListUnsubscribe {
            header: parsed.list_unsubscribe.clone(),
            links: Vec::new(),
            errors: String::new(),
            header_post: parsed.list_unsubscribe_post.clone(),
        },
        date: parsed.date.clone().unwrap_or_else(|| record.time.clone()),
        tags: tags(record),
        username: record.user.clone(),
        text: parsed.text.clone(),
        html: parsed.html.clone(),
        size: record.size as u64,
        inline: parsed.inline.clone(),
        attachments: parsed.attachments.clone(),
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `dkim-signature` → `Dkim-Signature`,
/// `Message-ID` → `Message-Id`. Mailpit's `/headers` answers with Go's `mail.Header`, whose
/// keys are in this form.
pub fn canonical_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

/// The header section as Mailpit's `/headers` returns it: canonical keys, each with its values
/// in order, folded lines joined with single spaces (Go's `textproto` reader).
pub fn headers(eml: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in header_fields(eml) {
        out.entry(canonical_key(&name)).or_default().push(value);
    }
    out
}

/// The header fields of a message in order, as (name, unfolded value).
pub fn header_fields(eml: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(eml);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                let more = line.trim();
                if !more.is_empty() {
                    if !v.is_empty() {
                        v.push(' ');
                    }
                    v.push_str(more);
                }
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_canonical_keys() {
        assert_eq!(canonical_key("DKIM-Signature"), "Dkim-Signature");
        assert_eq!(canonical_key("message-id"), "Message-Id");
        assert_eq!(canonical_key("X-SES-Outgoing"), "X-Ses-Outgoing");
    }

    #[test]
    fn headers_unfold_and_group() {
        let eml = b"Received: a\r\n\tb\r\nReceived: c\r\nSubject: hi\r\n\r\nbody\r\nX: no\r\n";
        let h = headers(eml);
        assert_eq!(h["Received"], vec!["a b".to_string(), "c".to_string()]);
        assert_eq!(h["Subject"], vec!["hi".to_string()]);
        assert!(!h.contains_key("X"));
    }

    #[test]
    fn parses_addresses_and_bodies() {
        let eml = b"From: \"Ann\" <ann@example.org>\r\nTo: b@x.test, c@y.test\r\n\
                    Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <m1@example.org>\r\n\r\nHello  there\r\n";
        let p = parse(eml);
        assert_eq!(p.from.as_ref().unwrap().name, "Ann");
        assert_eq!(p.to.len(), 2);
        assert_eq!(p.subject, "café");
        assert_eq!(p.message_id, "m1@example.org");
        assert_eq!(snippet(&p), "Hello there");
    }
}
