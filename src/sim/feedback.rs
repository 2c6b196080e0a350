//! The feedback SES would send for the mailbox simulator's recipients (ses-smtp.md §4, §6).
//!
//! Over SMTP, SES forwards bounce and complaint notifications by email to the message's
//! "Source", the SMTP MAIL FROM (not Reply-To, not the VERP envelope sender). For the mailbox
//! simulator (`bounce@`, `complaint@`, `ooto@`, `suppressionlist@simulator.amazonses.com`) the
//! simulator writes that notification into the outbox beside the original, so the web list and
//! the API show it:
//!
//! - `bounce@`: a delivery status notification (RFC 3464, `multipart/report;
//!   report-type=delivery-status`): `Action: failed`, `Status: 5.1.1`, the remote MTA's
//!   `550 5.1.1` as the diagnostic, and the original header section (`text/rfc822-headers`);
//! - `suppressionlist@`: the same DSN with SES's suppression-list wording (`5.1.1`, sent by SES
//!   itself, no remote MTA);
//! - `complaint@`: an abuse report (ARF, RFC 5965, `multipart/report;
//!   report-type=feedback-report`): `Feedback-Type: abuse`, the original message
//!   (`message/rfc822`, headers only, as SES redacts the body);
//! - `ooto@`: the recipient's automatic reply (RFC 3834 `Auto-Submitted: auto-replied`).
//!
//! What is modelled: who sends (SES's `MAILER-DAEMON@<region domain>`, its complaints address,
//! the simulator mailbox), to whom (the MAIL FROM), the report structure and its key fields,
//! and the link to the original (`In-Reply-To`/`References` to the delivered Message-ID; the
//! record's `client` is `feedback:<original ID>`). Not modelled: delays (SES sends feedback
//! seconds to hours later; here at once), SNS notifications and event publishing, feedback
//! forwarding being off, the exact text SES words its bounces with (it changes), the
//! `X-Original-To`/`Received` chains of a real report, and DKIM signatures on the report (none;
//! its verdict is marked as not evaluated).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::deliver::{message_id_domain, new_message_id, ses_date};
use super::outbox::{OutboxError, Record, SimOutcome};
use super::verdict::{DmarcOutcome, DmarcPolicy, DmarcVerdict, SpfOutcome, SpfVerdict, Verdict};

/// The `client` of a feedback record: `feedback:<original ID>`.
pub const CLIENT_PREFIX: &str = "feedback:";

/// The kind of feedback a mailbox-simulator outcome produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bounce,
    Suppressed,
    Complaint,
    AutoReply,
}

impl Kind {
    /// From the outcome word the outbox records (`bounce 550 5.1.1`, `complaint`, …).
    pub fn of(outcome: &str) -> Option<Kind> {
        match outcome.split_whitespace().next()? {
            "bounce" => Some(Kind::Bounce),
            "suppressed" => Some(Kind::Suppressed),
            "complaint" => Some(Kind::Complaint),
            "ooto" => Some(Kind::AutoReply),
            _ => None,
        }
    }

    /// The word in the feedback record's outcome and tags (`feedback-bounce`, …).
    pub fn word(self) -> &'static str {
        match self {
            Kind::Bounce => "bounce",
            Kind::Suppressed => "suppressed",
            Kind::Complaint => "complaint",
            Kind::AutoReply => "auto-reply",
        }
    }
}

/// The header section of a message (up to the blank line), CRLF line ends kept.
fn header_section(eml: &[u8]) -> &[u8] {
    match eml.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &eml[..i + 2],
        None => eml,
    }
}

fn field(eml: &[u8], name: &str) -> Option<String> {
    super::http::mailpit::header_fields(eml)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn not_evaluated() -> Verdict {
    let reason = "feedback written by the simulator; not evaluated".to_string();
    Verdict {
        dkim: Vec::new(),
        spf: SpfVerdict {
            domain: String::new(),
            result: SpfOutcome::None,
            aligned: false,
            reason: reason.clone(),
        },
        dmarc: DmarcVerdict {
            from_domain: String::new(),
            result: DmarcOutcome::None,
            policy: DmarcPolicy::NoRecord,
            disposition: DmarcPolicy::None,
            record: None,
            reason,
        },
    }
}

/// The notification for one recipient of `original` (delivered as `eml`), as
/// (record, message).
pub fn notification(
    original: &Record,
    eml: &[u8],
    recipient: &str,
    kind: Kind,
    region: &str,
    now: DateTime<Utc>,
) -> (Record, Vec<u8>) {
    let id = new_message_id(now);
    let region_domain = message_id_domain(region);
    let to = original.mail_from.clone();
    let original_mid = field(eml, "Message-ID").unwrap_or_default();
    let original_subject = original.subject.clone().unwrap_or_default();
    let boundary = format!("{}-report", &id[..16]);
    let date = ses_date(now);
    let common = |from: &str, subject: &str, content_type: &str| {
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n\
             Message-ID: <{id}@{region_domain}>\r\nIn-Reply-To: {original_mid}\r\n\
             References: {original_mid}\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
        )
    };
    let headers = String::from_utf8_lossy(header_section(eml)).into_owned();
    let (from, subject, body) = match kind {
        Kind::Bounce | Kind::Suppressed => {
            let from = format!("MAILER-DAEMON@{region_domain}");
            let subject = "Delivery Status Notification (Failure)";
            let (text, status, diagnostic, remote) = if kind == Kind::Bounce {
                (
                    format!(
                        "An error occurred while trying to deliver the mail to the following \
                         recipients:\r\n{recipient}\r\n"
                    ),
                    "5.1.1",
                    "smtp; 550 5.1.1 user unknown",
                    "Remote-MTA: dns; simulator.amazonses.com\r\n",
                )
            } else {
                (
                    format!(
                        "Amazon SES did not send the message to {recipient} because the address \
                         is on the suppression list for your account.\r\n"
                    ),
                    "5.1.1",
                    "smtp; 550 5.1.1 Recipient address is on the suppression list",
                    "",
                )
            };
            let head = common(
                &from,
                subject,
                &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
            );
            let body = format!(
                "{head}Auto-Submitted: auto-replied\r\n\r\n--{boundary}\r\n\
                 Content-Type: text/plain; charset=UTF-8\r\n\r\n{text}\r\n--{boundary}\r\n\
                 Content-Type: message/delivery-status\r\n\r\n\
                 Reporting-MTA: dns; a27-27.smtp-out.amazonses.com\r\n\
                 Original-Envelope-Id: {orig}\r\nArrival-Date: {date}\r\n\r\n\
                 Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n\
                 {remote}Diagnostic-Code: {diagnostic}\r\nLast-Attempt-Date: {date}\r\n\r\n\
                 --{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n\
                 --{boundary}--\r\n",
                orig = original.id,
            );
            (from, subject.to_string(), body)
        }
        Kind::Complaint => {
            let from = format!("complaints@{region}.email-abuse.amazonses.com");
            let subject = format!("Complaint about message: {original_subject}");
            let head = common(
                &from,
                &subject,
                &format!("multipart/report; report-type=feedback-report; boundary=\"{boundary}\""),
            );
            let body = format!(
                "{head}\r\n--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n\
                 This is an email abuse report for an email message received from the Amazon SES \
                 mailbox simulator ({recipient}).\r\n\r\n--{boundary}\r\n\
                 Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n\
                 User-Agent: Amazon SES mailbox simulator\r\nVersion: 1\r\n\
                 Original-Mail-From: <{to}>\r\nOriginal-Rcpt-To: <{recipient}>\r\n\
                 Arrival-Date: {date}\r\nReported-Domain: {domain}\r\n\r\n--{boundary}\r\n\
                 Content-Type: message/rfc822\r\n\r\n{headers}\r\n--{boundary}--\r\n",
                domain = to.rsplit_once('@').map(|(_, d)| d).unwrap_or(""),
            );
            (from, subject, body)
        }
        Kind::AutoReply => {
            let from = recipient.to_string();
            let subject = format!("Out of the office: {original_subject}");
            let head = common(&from, &subject, "text/plain; charset=UTF-8");
            let body = format!(
                "{head}Auto-Submitted: auto-replied\r\n\r\nI am out of the office and will reply \
                 when I am back.\r\n(Amazon SES mailbox simulator: {recipient})\r\n"
            );
            (from, subject, body)
        }
    };
    let bytes = body.into_bytes();
    let record = Record {
        id,
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        client: format!("{CLIENT_PREFIX}{}", original.id),
        user: String::new(),
        mail_from: String::new(),
        envelope_from: String::new(),
        recipients: vec![to],
        size: bytes.len(),
        mailbox_simulator: vec![SimOutcome {
            recipient: recipient.to_string(),
            outcome: format!("feedback {}", kind.word()),
        }],
        subject: Some(subject),
        header_from: Some(from),
        verdict: not_evaluated(),
    };
    (record, bytes)
}

/// The original's ID when `record` is feedback.
pub fn original_of(record: &Record) -> Option<&str> {
    record.client.strip_prefix(CLIENT_PREFIX)
}

/// Writes the notifications SES would send for `original`'s mailbox-simulator recipients (none
/// for feedback itself, or for a null MAIL FROM, which has nowhere to go).
pub fn write_for(dir: &Path, original: &Record, eml: &[u8]) -> Result<(), OutboxError> {
    if original_of(original).is_some() || original.mail_from.is_empty() {
        return Ok(());
    }
    let region = region_of(eml);
    for o in &original.mailbox_simulator {
        let Some(kind) = Kind::of(&o.outcome) else {
            continue;
        };
        // Just after the original, so it lists above it (newest first).
        let now = Utc::now();
        let (record, bytes) = notification(original, eml, &o.recipient, kind, &region, now);
        super::outbox::write_record(dir, &record, &bytes)?;
    }
    Ok(())
}

/// The region, from the delivered Message-ID's domain (`<id@eu-west-1.amazonses.com>`).
fn region_of(eml: &[u8]) -> String {
    field(eml, "Message-ID")
        .and_then(|m| {
            let d = m.trim_matches(['<', '>']).rsplit_once('@')?.1.to_string();
            let r = d.strip_suffix(".amazonses.com")?.to_string();
            Some(if r == "email" { "us-east-1".into() } else { r })
        })
        .unwrap_or_else(|| "us-east-1".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> (Record, Vec<u8>) {
        let eml = b"From: app@example.org\r\nTo: bounce@simulator.amazonses.com\r\nSubject: Hi\r\n\
                    Message-ID: <0100abc-000000@eu-west-1.amazonses.com>\r\n\r\nbody\r\n"
            .to_vec();
        let record = Record {
            id: "0100abc-000000".into(),
            time: "2026-01-01T00:00:00.000Z".into(),
            client: "127.0.0.1:1".into(),
            user: "AKIA".into(),
            mail_from: "app@mail.example.org".into(),
            envelope_from: "0100abc-000000@mail.example.org".into(),
            recipients: vec!["bounce@simulator.amazonses.com".into()],
            size: eml.len(),
            mailbox_simulator: vec![SimOutcome {
                recipient: "bounce@simulator.amazonses.com".into(),
                outcome: "bounce 550 5.1.1".into(),
            }],
            subject: Some("Hi".into()),
            header_from: Some("app@example.org".into()),
            verdict: not_evaluated(),
        };
        (record, eml)
    }

    #[test]
    fn bounce_is_a_dsn_to_the_mail_from() {
        let (rec, eml) = original();
        let (fb, bytes) = notification(
            &rec,
            &eml,
            "bounce@simulator.amazonses.com",
            Kind::Bounce,
            "eu-west-1",
            Utc::now(),
        );
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(fb.recipients, ["app@mail.example.org"]);
        assert_eq!(original_of(&fb), Some("0100abc-000000"));
        assert!(text.contains("report-type=delivery-status"), "{text}");
        assert!(text.contains("From: MAILER-DAEMON@eu-west-1.amazonses.com"));
        assert!(text.contains("Final-Recipient: rfc822; bounce@simulator.amazonses.com"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1"));
        assert!(text.contains("In-Reply-To: <0100abc-000000@eu-west-1.amazonses.com>"));
        assert_eq!(region_of(&eml), "eu-west-1");
        // mail-parser reads it as a report with the original headers attached.
        let p = crate::sim::http::mailpit::parse(text.as_bytes());
        assert_eq!(p.subject, "Delivery Status Notification (Failure)");
    }

    #[test]
    fn complaint_is_arf_and_ooto_an_auto_reply() {
        let (rec, eml) = original();
        let (_, c) = notification(
            &rec,
            &eml,
            "complaint@simulator.amazonses.com",
            Kind::Complaint,
            "us-east-1",
            Utc::now(),
        );
        let c = String::from_utf8(c).unwrap();
        assert!(c.contains("report-type=feedback-report"));
        assert!(c.contains("Feedback-Type: abuse\r\n"));
        assert!(c.contains("Content-Type: message/rfc822"));
        let (_, o) = notification(
            &rec,
            &eml,
            "ooto@simulator.amazonses.com",
            Kind::AutoReply,
            "us-east-1",
            Utc::now(),
        );
        let o = String::from_utf8(o).unwrap();
        assert!(o.contains("From: ooto@simulator.amazonses.com"));
        assert!(o.contains("Auto-Submitted: auto-replied"));
        assert_eq!(Kind::of("suppressed"), Some(Kind::Suppressed));
        assert_eq!(Kind::of("delivered"), None);
    }
}
