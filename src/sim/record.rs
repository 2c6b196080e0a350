//! What the simulator saw, per connection, for tests and an operator UI: a [`Recorder`]
//! (enabled with [`super::RunningSim::record`]) that stores the events the connection handler
//! reports — each accepted connection, each command line with whether TLS was active, and each
//! message as received (envelope and bytes before the simulator's SES rewrites, the AUTH user,
//! the reply sent and the SES ID it was stored under).
//!
//! Secrets never enter it: an AUTH line keeps its verb and mechanism only, and SASL responses
//! (which carry the password) are stored as `AUTH-DATA`; the AUTH user is the access key ID the
//! session authenticated, never the password. Off by default: without a recorder the handler
//! does no copying, and a message's bytes are cloned only while one is enabled. The session stays
//! sans-IO; the handler reports, the recorder only stores.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One command line as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSeen {
    /// Which connection (0-based, in accept order since recording began).
    pub conn: usize,
    /// Whether TLS was active when the line arrived.
    pub tls: bool,
    /// The line without CRLF, lossily UTF-8, AUTH payloads redacted.
    pub line: String,
}

/// One message whose DATA was read, whatever became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSeen {
    pub conn: usize,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// The message as received (dot-stuffing removed, before SES's rewrites); empty when the
    /// DATA reader refused it.
    pub data: Vec<u8>,
    pub tls: bool,
    /// The access key ID the session authenticated with.
    pub auth_user: Option<String>,
    /// The end-of-data reply as sent, without CRLF (empty when none was sent).
    pub reply: String,
    /// The SES message ID it was stored under in the outbox, when accepted.
    pub stored: Option<String>,
}

#[derive(Debug, Default)]
struct Log {
    connections: usize,
    commands: Vec<CommandSeen>,
    messages: Vec<MessageSeen>,
}

/// The simulator's event log; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Log>>);

/// The form of a command line stored: AUTH keeps its verb and mechanism only.
pub fn redact(line: &[u8], in_auth: bool) -> String {
    if in_auth {
        return "AUTH-DATA".into();
    }
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_ascii_whitespace();
    match words.next() {
        Some(verb) if verb.eq_ignore_ascii_case("AUTH") => {
            let mut out = verb.to_string();
            if let Some(mech) = words.next() {
                out.push(' ');
                out.push_str(mech);
            }
            if words.next().is_some() {
                out.push_str(" [initial response]");
            }
            out
        }
        _ => text.into_owned(),
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // Append-only data: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Every command line so far, in arrival order.
    pub fn commands(&self) -> Vec<CommandSeen> {
        self.lock().commands.clone()
    }

    /// Every message so far, in end-of-data order.
    pub fn messages(&self) -> Vec<MessageSeen> {
        self.lock().messages.clone()
    }

    /// A connection was accepted; returns its number.
    pub fn connection(&self) -> usize {
        let mut log = self.lock();
        log.connections += 1;
        log.connections - 1
    }

    /// A command line arrived on `conn` (`in_auth`: it answers a SASL challenge).
    pub fn command(&self, conn: usize, tls: bool, line: &[u8], in_auth: bool) {
        let line = redact(line, in_auth);
        self.lock().commands.push(CommandSeen { conn, tls, line });
    }

    /// A message's end of data was handled.
    pub fn message(&self, seen: MessageSeen) {
        self.lock().messages.push(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_payloads_never_stored() {
        assert_eq!(
            redact(b"AUTH PLAIN AGZvbwBzZWNyZXQ=", false),
            "AUTH PLAIN [initial response]"
        );
        assert_eq!(redact(b"AUTH LOGIN", false), "AUTH LOGIN");
        assert_eq!(redact(b"c2VjcmV0", true), "AUTH-DATA");
        assert_eq!(redact(b"MAIL FROM:<a@b.c>", false), "MAIL FROM:<a@b.c>");
        let r = Recorder::new();
        assert_eq!(r.connection(), 0);
        assert_eq!(r.clone().connection(), 1);
        r.command(1, true, b"AUTH PLAIN AGZvbwBzZWNyZXQ=", false);
        assert_eq!(r.connections(), 2);
        assert!(!format!("{:?}", r.commands()).contains("AGZvbw"));
    }
}
