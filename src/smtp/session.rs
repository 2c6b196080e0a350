//! The relay's SMTP session state machine (RFC 5321 §4.1.4 command order), sans I/O.
//!
//! Each command line goes in, an [`Action`] comes out; the connection driver performs it
//! (write, switch to DATA, close). Handlers never write — one place does (see
//! `server::connection`). Transaction state is reset after RSET, after EHLO/HELO, and after
//! every DATA, whatever its outcome.

use super::codec::{DataError, LineError};
use super::command::{self, Command, Mailbox};
use super::reply::Reply;
use crate::message::Envelope;

/// What the session needs to know about its limits; copied from the config snapshot taken
/// when the connection was accepted.
#[derive(Debug, Clone)]
pub struct Limits {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_errors: u32,
}

/// What the connection driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this reply and read the next command.
    Reply(Reply),
    /// Write this reply (354) and read the message with the DATA reader.
    StartData(Reply),
    /// Write this reply and close the connection.
    Close(Reply),
}

/// A message received in full, ready to be relayed.
#[derive(Debug)]
pub struct Transaction {
    pub envelope: Envelope,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connected, no EHLO/HELO yet.
    Connected,
    /// Greeted; no transaction.
    Ready,
    /// MAIL accepted.
    Mail,
    /// At least one RCPT accepted.
    Rcpt,
    /// Reading DATA.
    Data,
}

#[derive(Debug)]
pub struct Session {
    limits: Limits,
    /// May this client submit mail (allow_networks)?
    allowed: bool,
    state: State,
    envelope: Envelope,
    errors: u32,
}

impl Session {
    pub fn new(limits: Limits, allowed: bool) -> Self {
        Session {
            limits,
            allowed,
            state: State::Connected,
            envelope: Envelope::default(),
            errors: 0,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(
            220,
            format!("{} ESMTP dkim-relay ready", self.limits.hostname),
        )
    }

    /// Whether a transaction is under way (MAIL given and not finished).
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Mail | State::Rcpt | State::Data)
    }

    /// Handles one command line (or a framing error in reading it).
    pub fn command(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        let action = match line {
            Err(LineError::TooLong) => Action::Reply(Reply::new(
                500,
                "5.5.2",
                "Line too long (RFC 5321: 512 octets for a command)",
            )),
            Err(LineError::BareNewline) => Action::Reply(Reply::new(
                500,
                "5.5.2",
                "Bare CR or LF in command; lines must end with CRLF",
            )),
            Err(LineError::Nul) => Action::Reply(Reply::new(500, "5.5.2", "NUL byte in command")),
            Ok(bytes) => match command::parse(&bytes) {
                Ok(cmd) => self.handle(cmd),
                Err(reply) => Action::Reply(reply),
            },
        };
        self.count_errors(action)
    }

    /// Too many errors in one session: the client is broken or probing (RFC 5321 §4.3.2 allows
    /// a 421 at any time).
    fn count_errors(&mut self, action: Action) -> Action {
        if let Action::Reply(r) = &action
            && r.code >= 400
        {
            self.errors += 1;
            if self.errors >= self.limits.max_errors {
                return Action::Close(Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "{} Too many errors, closing connection",
                        self.limits.hostname
                    ),
                ));
            }
        }
        action
    }

    fn handle(&mut self, cmd: Command) -> Action {
        let h = &self.limits.hostname.clone();
        match cmd {
            Command::Ehlo(_) => {
                self.reset();
                self.state = State::Ready;
                Action::Reply(Reply::multi(
                    250,
                    [
                        h.clone(),
                        "PIPELINING".into(),
                        "8BITMIME".into(),
                        format!("SIZE {}", self.limits.max_message_size),
                        "ENHANCEDSTATUSCODES".into(),
                        "HELP".into(),
                    ],
                ))
            }
            Command::Helo(_) => {
                self.reset();
                self.state = State::Ready;
                Action::Reply(Reply::plain(250, h.clone()))
            }
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to, _params) => self.rcpt(to),
            Command::Data => match self.state {
                State::Rcpt => {
                    self.state = State::Data;
                    Action::StartData(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
                }
                State::Mail => Action::Reply(Reply::new(554, "5.5.1", "No valid recipients")),
                _ => Action::Reply(Reply::new(
                    503,
                    "5.5.1",
                    "Bad sequence: MAIL and RCPT first",
                )),
            },
            Command::Rset => {
                self.reset();
                Action::Reply(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Noop => Action::Reply(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => {
                Action::Close(Reply::new(221, "2.0.0", format!("{h} closing connection")))
            }
            Command::Vrfy => Action::Reply(Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => Action::Reply(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
            )),
            Command::StartTls => Action::Reply(Reply::new(
                502,
                "5.5.1",
                "STARTTLS not offered on this listener",
            )),
            Command::Auth { .. } => Action::Reply(Reply::new(
                502,
                "5.5.1",
                "AUTH not offered on this listener",
            )),
            Command::Unknown(verb) => Action::Reply(Reply::new(
                500,
                "5.5.2",
                format!("Command {verb} not recognized"),
            )),
        }
    }

    fn mail(&mut self, from: Option<Mailbox>, params: command::Params) -> Action {
        match self.state {
            State::Connected => {
                return Action::Reply(Reply::new(503, "5.5.1", "Send EHLO or HELO first"));
            }
            State::Mail | State::Rcpt | State::Data => {
                return Action::Reply(Reply::new(503, "5.5.1", "Nested MAIL command"));
            }
            State::Ready => {}
        }
        if !self.allowed {
            return Action::Reply(Reply::new(
                530,
                "5.7.0",
                "Authentication required: this address may not submit mail here",
            ));
        }
        for (key, value) in &params {
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if n > self.limits.max_message_size as u64 => {
                        return Action::Reply(Reply::new(
                            552,
                            "5.3.4",
                            format!(
                                "Message size exceeds fixed maximum of {} bytes",
                                self.limits.max_message_size
                            ),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => return Action::Reply(Reply::new(501, "5.5.4", "Bad SIZE value")),
                },
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("8BITMIME") || v.eq_ignore_ascii_case("7BIT") => {}
                ("BODY", _) => {
                    return Action::Reply(Reply::new(
                        555,
                        "5.5.4",
                        "BODY must be 7BIT or 8BITMIME",
                    ));
                }
                (other, _) => {
                    return Action::Reply(Reply::new(
                        555,
                        "5.5.4",
                        format!("MAIL parameter {other} not supported"),
                    ));
                }
            }
        }
        self.envelope = Envelope {
            mail_from: from,
            rcpts: Vec::new(),
        };
        self.state = State::Mail;
        Action::Reply(Reply::new(250, "2.1.0", "Sender ok"))
    }

    fn rcpt(&mut self, to: Mailbox) -> Action {
        if !matches!(self.state, State::Mail | State::Rcpt) {
            return Action::Reply(Reply::new(503, "5.5.1", "Bad sequence: MAIL first"));
        }
        if self.envelope.rcpts.len() >= self.limits.max_recipients {
            return Action::Reply(Reply::new(
                452,
                "4.5.3",
                format!(
                    "Too many recipients (at most {} per message)",
                    self.limits.max_recipients
                ),
            ));
        }
        self.envelope.rcpts.push(to);
        self.state = State::Rcpt;
        Action::Reply(Reply::new(250, "2.1.5", "Recipient ok"))
    }

    /// The DATA reader finished. Either the transaction to relay, or the reply to send.
    /// The transaction is reset in both cases.
    pub fn data_finished(
        &mut self,
        result: Result<Vec<u8>, DataError>,
    ) -> Result<Transaction, Reply> {
        let envelope = std::mem::take(&mut self.envelope);
        self.state = State::Ready;
        let max = self.limits.max_message_size;
        match result {
            Ok(data) => Ok(Transaction { envelope, data }),
            Err(e) => {
                self.errors += 1;
                Err(match e {
                    DataError::TooBig => Reply::new(
                        552,
                        "5.3.4",
                        format!("Message size exceeds fixed maximum of {max} bytes"),
                    ),
                    DataError::HeaderTooBig => {
                        Reply::new(552, "5.3.4", "Header section exceeds its size limit")
                    }
                    DataError::LineTooLong => Reply::new(
                        554,
                        "5.6.0",
                        "Message has a line longer than 1000 octets (RFC 5321 4.5.3.1.6); encode it with quoted-printable or base64",
                    ),
                    DataError::BareNewline => Reply::new(
                        554,
                        "5.6.0",
                        "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)",
                    ),
                    DataError::Nul => Reply::new(554, "5.6.0", "Message contains a NUL byte"),
                })
            }
        }
    }

    fn reset(&mut self) {
        self.envelope = Envelope::default();
        if self.state != State::Connected {
            self.state = State::Ready;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(
            Limits {
                hostname: "relay.test".into(),
                max_message_size: 1000,
                max_recipients: 2,
                max_errors: 8,
            },
            true,
        )
    }

    fn cmd(s: &mut Session, line: &str) -> Action {
        s.command(Ok(line.as_bytes().to_vec()))
    }

    fn code(a: &Action) -> u16 {
        match a {
            Action::Reply(r) | Action::StartData(r) | Action::Close(r) => r.code,
        }
    }

    #[test]
    fn happy_path() {
        let mut s = session();
        assert_eq!(code(&cmd(&mut s, "EHLO c")), 250);
        assert_eq!(
            code(&cmd(&mut s, "MAIL FROM:<a@b.c> SIZE=10 BODY=8BITMIME")),
            250
        );
        assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.z>")), 250);
        assert!(matches!(cmd(&mut s, "DATA"), Action::StartData(_)));
        let t = s
            .data_finished(Ok(b"From: a@b.c\r\n\r\n".to_vec()))
            .unwrap();
        assert_eq!(t.envelope.rcpts.len(), 1);
        assert!(!s.in_transaction());
        // A new transaction can start straight away.
        assert_eq!(code(&cmd(&mut s, "MAIL FROM:<>")), 250);
    }

    #[test]
    fn sequence_errors() {
        let mut s = session();
        assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 503);
        cmd(&mut s, "HELO c");
        assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.z>")), 503);
        assert_eq!(code(&cmd(&mut s, "DATA")), 503);
        cmd(&mut s, "MAIL FROM:<a@b.c>");
        assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 503);
        assert_eq!(code(&cmd(&mut s, "DATA")), 554);
    }

    #[test]
    fn recipient_cap_and_size() {
        let mut s = session();
        cmd(&mut s, "EHLO c");
        assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c> SIZE=5000")), 552);
        cmd(&mut s, "MAIL FROM:<a@b.c>");
        cmd(&mut s, "RCPT TO:<1@y.z>");
        cmd(&mut s, "RCPT TO:<2@y.z>");
        match cmd(&mut s, "RCPT TO:<3@y.z>") {
            Action::Reply(r) => {
                assert_eq!(r.code, 452);
                assert_eq!(r.enhanced(), Some("4.5.3"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rset_clears_transaction() {
        let mut s = session();
        cmd(&mut s, "EHLO c");
        cmd(&mut s, "MAIL FROM:<a@b.c>");
        cmd(&mut s, "RCPT TO:<1@y.z>");
        assert_eq!(code(&cmd(&mut s, "RSET")), 250);
        assert!(!s.in_transaction());
        assert_eq!(code(&cmd(&mut s, "DATA")), 503);
    }

    #[test]
    fn failed_data_resets_and_replies() {
        let mut s = session();
        cmd(&mut s, "EHLO c");
        cmd(&mut s, "MAIL FROM:<a@b.c>");
        cmd(&mut s, "RCPT TO:<1@y.z>");
        cmd(&mut s, "DATA");
        let r = s.data_finished(Err(DataError::TooBig)).unwrap_err();
        assert_eq!((r.code, r.enhanced()), (552, Some("5.3.4")));
        assert_eq!(code(&cmd(&mut s, "RCPT TO:<1@y.z>")), 503);
    }

    #[test]
    fn too_many_errors_closes() {
        let mut s = session();
        let mut last = None;
        for _ in 0..8 {
            last = Some(cmd(&mut s, "BOGUS"));
        }
        assert!(matches!(last, Some(Action::Close(r)) if r.code == 421));
    }

    #[test]
    fn clients_outside_allow_networks_cannot_send() {
        let mut s = Session::new(session().limits, false);
        cmd(&mut s, "EHLO c");
        assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 530);
    }
}
