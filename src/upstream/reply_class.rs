//! What an SES reply (or a failure to get one) affects: one message, one connection, or the
//! whole account. The spool decides from this whether to deliver, dead-letter, back off, or
//! pause the queue; the pipeline decides from it what the client hears in `on-defer` mode.
//!
//! SES's wording is the evidence (see the README's classification table and
//! `/work/shared/reference/ses-smtp.md` §3): both throttles are `454 Throttling failure: …`
//! (`Maximum sending rate exceeded.` vs `Daily message quota exceeded.`); a paused account is a
//! **554** at end of data (`Sending paused for this account`) — a 5xx that is NOT about the
//! message, so it must never dead-letter queued mail; `535` refuses the credentials at AUTH;
//! `421 Too many concurrent SMTP connections` and the per-session cap (`421 … Too many messages
//! in one session` / `Maximum message count per session reached.`) are about the connection,
//! not the message. Everything else 5xx is the message's own fault (unverified identity, too
//! big, duplicate header): dead-letter with the reply. Connection, TLS and timeout failures are
//! retried.

use super::client::UpstreamError;
use super::pool::Delivery;
use crate::smtp::reply::Reply;

/// What a reply or failure affects, and therefore what to do with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// 2xx: SES took the message.
    Accepted,
    /// `454 Throttling failure: Maximum sending rate exceeded.`: back off seconds, slow the pace.
    RateThrottled,
    /// `454 Throttling failure: Daily message quota exceeded.`: pause the queue, probe later.
    DailyQuota,
    /// `421 Too many concurrent SMTP connections`, the per-session message cap, SES's idle
    /// close: about the connection; retry on another one, not counted as an attempt.
    ConnectionLimit,
    /// `535` (or no usable AUTH): the relay's credentials. Pause the whole queue.
    CredentialsRefused,
    /// `554 … Sending paused for this account`: pause the whole queue, never bounce.
    AccountPaused,
    /// Any other 5xx: this message is refused for good. Dead-letter with the reply.
    MessageRejected,
    /// Any other 4xx (`451/454 Temporary service failure`, …): retry with backoff.
    Temporary,
    /// No answer: connect, TLS, timeout, connection lost. Retry with backoff.
    ConnectionFailure,
}

/// How far a class reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The message alone (delivered, refused, or to retry later).
    Message,
    /// The connection it went over; the message is fine.
    Connection,
    /// The account: every queued message would meet the same answer.
    Account,
}

impl ReplyClass {
    /// The class of a delivery attempt's result.
    pub fn of(delivery: &Delivery) -> ReplyClass {
        match delivery {
            Delivery::Answered { reply, .. } => ReplyClass::of_reply(reply),
            Delivery::Failed(e) => ReplyClass::of_failure(e),
        }
    }

    /// The class of an SES reply.
    pub fn of_reply(reply: &Reply) -> ReplyClass {
        let text = reply.lines.join(" ").to_ascii_lowercase();
        match reply.code {
            200..=399 => ReplyClass::Accepted,
            535 | 530 => ReplyClass::CredentialsRefused,
            _ if text.contains("sending paused") => ReplyClass::AccountPaused,
            _ if text.contains("daily message quota") => ReplyClass::DailyQuota,
            _ if text.contains("maximum sending rate") || text.contains("throttl") => {
                ReplyClass::RateThrottled
            }
            421 => ReplyClass::ConnectionLimit,
            400..=499 => ReplyClass::Temporary,
            _ => ReplyClass::MessageRejected,
        }
    }

    /// The class of a failure to get an answer.
    pub fn of_failure(e: &UpstreamError) -> ReplyClass {
        match e {
            UpstreamError::Auth(reply) => match ReplyClass::of_reply(reply) {
                // `454 Temporary authentication failure` is SES's own trouble: retry.
                ReplyClass::Temporary => ReplyClass::Temporary,
                _ => ReplyClass::CredentialsRefused,
            },
            UpstreamError::NoAuth => ReplyClass::CredentialsRefused,
            UpstreamError::Greeting(reply) | UpstreamError::Refused { reply, .. } => {
                match ReplyClass::of_reply(reply) {
                    // A 5xx to EHLO/STARTTLS is not about this message: retry, do not
                    // dead-letter it.
                    ReplyClass::MessageRejected => ReplyClass::ConnectionFailure,
                    c => c,
                }
            }
            _ => ReplyClass::ConnectionFailure,
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            ReplyClass::Accepted
            | ReplyClass::RateThrottled
            | ReplyClass::MessageRejected
            | ReplyClass::Temporary
            | ReplyClass::ConnectionFailure => Scope::Message,
            ReplyClass::ConnectionLimit => Scope::Connection,
            ReplyClass::DailyQuota | ReplyClass::CredentialsRefused | ReplyClass::AccountPaused => {
                Scope::Account
            }
        }
    }

    /// Whether the answer is final for the message (delivered or refused for good).
    pub fn is_final(self) -> bool {
        matches!(self, ReplyClass::Accepted | ReplyClass::MessageRejected)
    }

    /// A short name for logs and `queue show`.
    pub fn name(self) -> &'static str {
        match self {
            ReplyClass::Accepted => "accepted",
            ReplyClass::RateThrottled => "rate-throttled",
            ReplyClass::DailyQuota => "daily-quota",
            ReplyClass::ConnectionLimit => "connection-limit",
            ReplyClass::CredentialsRefused => "credentials-refused",
            ReplyClass::AccountPaused => "account-paused",
            ReplyClass::MessageRejected => "message-rejected",
            ReplyClass::Temporary => "temporary",
            ReplyClass::ConnectionFailure => "connection-failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: u16, text: &str) -> ReplyClass {
        ReplyClass::of_reply(&Reply::plain(code, text))
    }

    #[test]
    fn ses_replies_by_what_they_affect() {
        assert_eq!(c(250, "Ok 0100-abc"), ReplyClass::Accepted);
        assert_eq!(
            c(454, "Throttling failure: Maximum sending rate exceeded."),
            ReplyClass::RateThrottled
        );
        assert_eq!(
            c(454, "Throttling failure: Daily message quota exceeded."),
            ReplyClass::DailyQuota
        );
        assert_eq!(
            c(
                554,
                "Message rejected: Sending paused for this account. For more information, \
                 please check the inbox of the email address associated with your AWS account."
            ),
            ReplyClass::AccountPaused
        );
        assert_eq!(
            c(535, "Authentication Credentials Invalid"),
            ReplyClass::CredentialsRefused
        );
        assert_eq!(
            c(421, "Too many concurrent SMTP connections"),
            ReplyClass::ConnectionLimit
        );
        assert_eq!(
            c(
                421,
                "Connection closed by server. Maximum message count per session reached."
            ),
            ReplyClass::ConnectionLimit
        );
        assert_eq!(c(451, "Temporary service failure"), ReplyClass::Temporary);
        assert_eq!(
            c(554, "Message rejected: Email address is not verified."),
            ReplyClass::MessageRejected
        );
        assert_eq!(c(552, "Message is too long."), ReplyClass::MessageRejected);
    }

    #[test]
    fn failures_by_what_they_affect() {
        let auth = UpstreamError::Auth(Reply::plain(535, "Authentication Credentials Invalid"));
        assert_eq!(
            ReplyClass::of_failure(&auth),
            ReplyClass::CredentialsRefused
        );
        let tmp = UpstreamError::Auth(Reply::plain(454, "Temporary authentication failure"));
        assert_eq!(ReplyClass::of_failure(&tmp), ReplyClass::Temporary);
        let greet =
            UpstreamError::Greeting(Reply::plain(421, "Too many concurrent SMTP connections"));
        assert_eq!(ReplyClass::of_failure(&greet), ReplyClass::ConnectionLimit);
        assert_eq!(
            ReplyClass::of_failure(&UpstreamError::Timeout("connect")),
            ReplyClass::ConnectionFailure
        );
        assert_eq!(ReplyClass::AccountPaused.scope(), Scope::Account);
        assert!(!ReplyClass::AccountPaused.is_final());
        assert!(ReplyClass::MessageRejected.is_final());
    }
}
