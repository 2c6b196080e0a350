//! The SMTP envelope of one transaction: what the client said in MAIL FROM and RCPT TO, and
//! who it authenticated as. Built by the session, handed with the DATA bytes to the pipeline.
//!
//! It lives in `smtp` (not `message`) because the session fills it in; `message` reads it. The
//! authenticated identity is [`crate::users::Submitter`], a leaf.

use super::command::Mailbox;

/// What the client asked for in MAIL and RCPT.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `None` is the null sender `<>`.
    pub mail_from: Option<Mailbox>,
    pub rcpts: Vec<Mailbox>,
    /// The authenticated user, when the client logged in: its domains bound `From:`.
    pub submitter: Option<crate::users::Submitter>,
}
