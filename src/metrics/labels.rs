//! The label values of the relay's metrics: closed enums, each with its Prometheus spelling.
//!
//! Invariant: a label value is either one of these variants or a name taken from the
//! configuration (a signing domain, a selector) — never a string a client sent. A From domain the
//! configuration does not list, a reply text, an address: none of them can become a label,
//! because the only way to record a rejection is with a [`Stage`] and a [`Reason`]. That bounds
//! the number of series (Prometheus keeps one per label combination, for ever) and keeps one
//! client from filling the operator's time-series database.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use std::fmt::Write;

/// Implements [`EncodeLabelValue`] through an `as_str` with the Prometheus spelling.
macro_rules! label_value {
    ($t:ty) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}

/// Where in a session something was refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Stage {
    /// Before or at the greeting: too many connections, pregreet, shutting down.
    Connect,
    /// EHLO/HELO, STARTTLS, RSET, NOOP, unknown verbs, malformed lines, timeouts between commands.
    Command,
    Auth,
    Mail,
    Rcpt,
    /// The DATA command and the message bytes (size, framing, timeouts).
    Data,
    /// The accepted message: header From, signing domain, SES header policy.
    Message,
    /// The DKIM signer (fail closed: a 451).
    Sign,
    /// The upstream could not be used (no pool, no endpoint).
    Upstream,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Command => "command",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Message => "message",
            Stage::Sign => "sign",
            Stage::Upstream => "upstream",
        }
    }

    /// The stage of a command line, from its verb (the bytes before the first space).
    pub fn of_command(line: &[u8]) -> Stage {
        let verb = line.split(|b| *b == b' ').next().unwrap_or(&[]);
        let is = |v: &str| verb.eq_ignore_ascii_case(v.as_bytes());
        if is("MAIL") {
            Stage::Mail
        } else if is("RCPT") {
            Stage::Rcpt
        } else if is("DATA") || is("BDAT") {
            Stage::Data
        } else if is("AUTH") {
            Stage::Auth
        } else {
            Stage::Command
        }
    }
}
label_value!(Stage);

/// Why: the connection-level events by name, everything else by the subject of its RFC 3463
/// enhanced status code (`5.7.1` → `policy`), which every refusal of this relay carries.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Reason {
    TooManyConnections,
    Pregreet,
    Timeout,
    ShuttingDown,
    /// X.1.X: a bad sender or recipient address.
    Addressing,
    /// X.2.X: mailbox status.
    Mailbox,
    /// X.3.X: mail system: too big, bytes-in-flight budget full.
    System,
    /// X.4.X: network and routing.
    Network,
    /// X.5.X: protocol: syntax, sequence, too many recipients.
    Protocol,
    /// X.6.X: message content: unparsable header section, missing From.
    Content,
    /// X.7.X: security and policy: not allowed to relay, unknown From domain, AUTH.
    Policy,
    /// No enhanced status code, or one outside RFC 3463's subjects.
    Other,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooManyConnections => "too_many_connections",
            Reason::Pregreet => "pregreet",
            Reason::Timeout => "timeout",
            Reason::ShuttingDown => "shutting_down",
            Reason::Addressing => "addressing",
            Reason::Mailbox => "mailbox",
            Reason::System => "system",
            Reason::Network => "network",
            Reason::Protocol => "protocol",
            Reason::Content => "content",
            Reason::Policy => "policy",
            Reason::Other => "other",
        }
    }

    /// The reason for a reply carrying the enhanced status code `enhanced` (`"5.7.1"`).
    pub fn of_enhanced(enhanced: Option<&str>) -> Reason {
        let subject = enhanced.and_then(|e| e.split('.').nth(1));
        match subject {
            Some("1") => Reason::Addressing,
            Some("2") => Reason::Mailbox,
            Some("3") => Reason::System,
            Some("4") => Reason::Network,
            Some("5") => Reason::Protocol,
            Some("6") => Reason::Content,
            Some("7") => Reason::Policy,
            _ => Reason::Other,
        }
    }
}
label_value!(Reason);

/// How signing one message with one selector went.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SignOutcome {
    Signed,
    Error,
}

impl SignOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SignOutcome::Signed => "signed",
            SignOutcome::Error => "error",
        }
    }
}
label_value!(SignOutcome);

/// The relay's own check of its signature, by an independent verifier.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum VerifyResult {
    Pass,
    Fail,
    /// The verifier could not decide (a temporary error).
    Error,
}

impl VerifyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyResult::Pass => "pass",
            VerifyResult::Fail => "fail",
            VerifyResult::Error => "error",
        }
    }
}
label_value!(VerifyResult);

/// Application header fields the SES policy removes before signing.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RemovedHeader {
    DkimSignature,
    ReturnPath,
}

impl RemovedHeader {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovedHeader::DkimSignature => "dkim-signature",
            RemovedHeader::ReturnPath => "return-path",
        }
    }
}
label_value!(RemovedHeader);

/// What the upstream said, or why it said nothing.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum UpstreamClass {
    /// 2xx: accepted.
    Accepted,
    /// SES's `454 Throttling failure: Maximum sending rate exceeded`.
    Throttled,
    /// SES's `454 Throttling failure: Daily message quota exceeded`.
    Quota,
    /// Any other 4xx.
    Transient,
    /// 5xx.
    Permanent,
    /// No reply: connect failed, connection lost or timed out, malformed reply.
    Connection,
    /// TLS could not be established or verified (or STARTTLS was not offered).
    Tls,
    /// The upstream refused our credentials (or offered no usable mechanism).
    Auth,
    /// Not sent: no pool slot or pacing turn within `max_wait_secs` (the relay holding itself
    /// to `max_send_rate`, not an answer from the upstream).
    Congested,
}

impl UpstreamClass {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamClass::Accepted => "2xx",
            UpstreamClass::Throttled => "throttled",
            UpstreamClass::Quota => "quota",
            UpstreamClass::Transient => "4xx",
            UpstreamClass::Permanent => "5xx",
            UpstreamClass::Connection => "connection",
            UpstreamClass::Tls => "tls",
            UpstreamClass::Auth => "auth",
            UpstreamClass::Congested => "congested",
        }
    }

    /// The class of an upstream reply, from its code and text (SES words its two throttling
    /// cases in the text of a 454; docs: "Sending quotas" / SMTP response codes).
    pub fn of_reply(code: u16, text: &str) -> UpstreamClass {
        let lower = text.to_ascii_lowercase();
        match code {
            200..=399 => UpstreamClass::Accepted,
            400..=499 if lower.contains("daily message quota") => UpstreamClass::Quota,
            400..=499 if lower.contains("maximum sending rate") || lower.contains("throttl") => {
                UpstreamClass::Throttled
            }
            400..=499 => UpstreamClass::Transient,
            _ => UpstreamClass::Permanent,
        }
    }
}
label_value!(UpstreamClass);

/// What became of a message the relay accepted for delivery.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum MessageOutcome {
    /// The upstream accepted it.
    Delivered,
    /// The upstream refused it for good (5xx).
    Failed,
    /// Not delivered yet: the client got a 4xx (or the spool holds it for a retry).
    Deferred,
}

impl MessageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Delivered => "delivered",
            MessageOutcome::Failed => "failed",
            MessageOutcome::Deferred => "deferred",
        }
    }

    /// The outcome an upstream class means for the message.
    pub fn of(class: UpstreamClass) -> MessageOutcome {
        match class {
            UpstreamClass::Accepted => MessageOutcome::Delivered,
            UpstreamClass::Permanent => MessageOutcome::Failed,
            _ => MessageOutcome::Deferred,
        }
    }
}
label_value!(MessageOutcome);

/// A reload's outcome.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReloadOutcome {
    Success,
    Failure,
}

impl ReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Success => "success",
            ReloadOutcome::Failure => "failure",
        }
    }
}
label_value!(ReloadOutcome);

/// `true`/`false` as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct Flag(pub bool);

impl Flag {
    pub fn as_str(self) -> &'static str {
        if self.0 { "true" } else { "false" }
    }
}
label_value!(Flag);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RejectionLabels {
    pub stage: Stage,
    pub reason: Reason,
}

/// `domain` and `selector` come from the configuration only (the signing entry that matched).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SignatureLabels {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub outcome: SignOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VerifyLabels {
    pub domain: String,
    pub result: VerifyResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HeaderLabels {
    pub header: RemovedHeader,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClassLabels {
    pub class: UpstreamClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub outcome: MessageOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReloadLabels {
    pub outcome: ReloadOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KeyLabels {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    /// Whether the selector signs now (`sign = [...]`) or is only configured.
    pub active: Flag,
}

/// A configured selector, for whether DNS publishes its key.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct SelectorLabels {
    pub domain: String,
    pub selector: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_the_rfc_3463_subject() {
        assert_eq!(Reason::of_enhanced(Some("5.7.1")), Reason::Policy);
        assert_eq!(Reason::of_enhanced(Some("4.3.1")), Reason::System);
        assert_eq!(Reason::of_enhanced(Some("5.5.4")), Reason::Protocol);
        assert_eq!(Reason::of_enhanced(Some("5.1.7")), Reason::Addressing);
        assert_eq!(Reason::of_enhanced(Some("5.6.0")), Reason::Content);
        assert_eq!(Reason::of_enhanced(Some("5.9.9")), Reason::Other);
        assert_eq!(Reason::of_enhanced(None), Reason::Other);
    }

    #[test]
    fn stages_follow_the_verb() {
        assert_eq!(Stage::of_command(b"mail FROM:<a@b>"), Stage::Mail);
        assert_eq!(Stage::of_command(b"RCPT TO:<a@b>"), Stage::Rcpt);
        assert_eq!(Stage::of_command(b"DATA"), Stage::Data);
        assert_eq!(Stage::of_command(b"AUTH PLAIN"), Stage::Auth);
        assert_eq!(Stage::of_command(b"EHLO x"), Stage::Command);
        assert_eq!(Stage::of_command(b""), Stage::Command);
    }

    #[test]
    fn upstream_classes_read_ses_throttling_texts() {
        let c = UpstreamClass::of_reply;
        assert_eq!(c(250, "Ok 0100-abc"), UpstreamClass::Accepted);
        assert_eq!(
            c(454, "Throttling failure: Maximum sending rate exceeded."),
            UpstreamClass::Throttled
        );
        assert_eq!(
            c(454, "Throttling failure: Daily message quota exceeded."),
            UpstreamClass::Quota
        );
        assert_eq!(c(451, "Temporary failure"), UpstreamClass::Transient);
        assert_eq!(c(554, "Message rejected"), UpstreamClass::Permanent);
        assert_eq!(
            MessageOutcome::of(UpstreamClass::Throttled),
            MessageOutcome::Deferred
        );
    }
}
