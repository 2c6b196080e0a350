//! The relay's SMTP session state machine (RFC 5321 §4.1.4 command order), sans I/O.
//!
//! Each command line goes in, an [`Action`] comes out; the relay's protocol
//! (`relay::protocol`) hands it to the server shell, which performs it (write, switch to DATA,
//! close). Handlers never write — one place does (`server::connection`). Transaction state is
//! reset after RSET, after EHLO/HELO, after every DATA whatever its outcome, after STARTTLS
//! (RFC 3207 §4.2: back to the greeting, the client must EHLO again, nothing learnt before TLS
//! is kept) and around AUTH (RFC 4954: AUTH is refused inside a transaction, and allowed once
//! per session).
//!
//! Who may submit: a client in `allow_networks`, or one that authenticated as a configured
//! user. AUTH is offered only over TLS (or, when configured, to loopback clients) so a password
//! never crosses a network in clear. The PLAIN/LOGIN exchange is the shared SASL machine
//! (`smtp::sasl`); this module only words its steps. Checking a password is slow on purpose and
//! is done by `relay::protocol` ([`Action::Authenticate`] → [`Session::auth_result`]), so this
//! state machine stays free of I/O and of CPU-heavy work.

use super::codec::{DataError, LineError};
use super::command::{self, Command, Mailbox};
use super::reply::Reply;
use super::sasl::{self, Exchange, SaslError, Step};
use crate::smtp::envelope::Envelope;
use crate::users::Submitter;

use super::sasl::Credentials;

/// What this session offers and enforces: its name, the size and recipient limits, the error
/// budget, and whether STARTTLS and AUTH may be offered. Built by the relay from the settings
/// in force when the connection was accepted.
#[derive(Debug, Clone)]
pub struct Rules {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_errors: u32,
    /// A listener certificate is configured: STARTTLS can be offered.
    pub starttls: bool,
    /// Users are configured: AUTH can be offered (over TLS).
    pub auth_users: bool,
    /// AUTH may be offered without TLS (a loopback client, `auth_plaintext_loopback`).
    pub auth_plaintext: bool,
    /// Failed AUTH attempts before 421 and close.
    pub max_auth_failures: u32,
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
    /// Write this reply to a refused DATA and close the connection: whatever the client sent
    /// after the command, or is still sending, may be message content (a client streaming
    /// without waiting for the 354), never commands — so none of it is read as commands.
    ReplyDiscard(Reply),
    /// Write this reply (220), discard any buffered input (CVE-2011-0411: nothing sent before
    /// the handshake may be executed after it), run the TLS handshake, then call
    /// [`Session::tls_started`].
    StartTls(Reply),
    /// Check these credentials, then call [`Session::auth_result`].
    Authenticate(Credentials),
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
    rules: Rules,
    /// May this client submit mail without authenticating (allow_networks)?
    allowed: bool,
    state: State,
    envelope: Envelope,
    errors: u32,
    tls: bool,
    user: Option<Submitter>,
    /// The AUTH exchange waiting for a continuation line (RFC 4954), if any.
    auth: Option<Exchange>,
    auth_failures: u32,
    /// RCPTs refused with `452 4.5.3` in this transaction.
    rcpts_over_cap: usize,
}

/// `452 4.5.3` (too many recipients) is not a client error: RFC 5321 §4.5.3.1.10 has the
/// client send to the accepted recipients and retry the rest, so it does not count toward
/// `max_errors` (up to [`Session::free_over_cap`] of them per transaction).
fn is_recipient_cap(r: &Reply) -> bool {
    r.code == 452 && r.enhanced() == Some("4.5.3")
}

impl Session {
    /// How many over-cap RCPTs a transaction may send before they count as errors: as many
    /// as the cap itself, and at least 100 (a client with a long list is not a prober).
    fn free_over_cap(&self) -> usize {
        self.rules.max_recipients.max(100)
    }

    pub fn new(rules: Rules, allowed: bool) -> Self {
        Session {
            rules,
            allowed,
            state: State::Connected,
            envelope: Envelope::default(),
            errors: 0,
            tls: false,
            user: None,
            auth: None,
            auth_failures: 0,
            rcpts_over_cap: 0,
        }
    }

    /// TLS is now active (after STARTTLS, or from the first byte on an implicit-TLS listener):
    /// back to the start — EHLO again, no transaction, not authenticated.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.state = State::Connected;
        self.envelope = Envelope::default();
        self.user = None;
        self.auth = None;
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&Submitter> {
        self.user.as_ref()
    }

    fn auth_offered(&self) -> bool {
        self.rules.auth_users && (self.tls || self.rules.auth_plaintext)
    }

    /// The outcome of checking [`Action::Authenticate`]'s credentials.
    pub fn auth_result(&mut self, user: Option<Submitter>) -> Action {
        match user {
            Some(u) => {
                self.user = Some(u);
                self.envelope = Envelope::default();
                Action::Reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            None => {
                self.auth_failures += 1;
                if self.auth_failures >= self.rules.max_auth_failures {
                    Action::Close(Reply::new(
                        421,
                        "4.7.0",
                        format!(
                            "{} Too many failed authentication attempts, closing connection",
                            self.rules.hostname
                        ),
                    ))
                } else {
                    Action::Reply(Reply::new(
                        535,
                        "5.7.8",
                        "Authentication credentials invalid",
                    ))
                }
            }
        }
    }

    /// A line sent in answer to a `334` continuation.
    fn auth_response(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        let Some(mut exchange) = self.auth.take() else {
            return Action::Reply(Reply::new(501, "5.5.2", "No AUTH in progress"));
        };
        let Ok(line) = line else {
            return Action::Reply(Reply::new(501, "5.5.2", "Malformed AUTH response"));
        };
        let plain = exchange.waiting_for() == Some("PLAIN");
        let step = exchange.step(&line);
        self.sasl_step(exchange, step, plain)
    }

    /// Words one step of the SASL machine as the relay's reply.
    /// `plain`: the mechanism is PLAIN (its structural errors are worded apart).
    fn sasl_step(&mut self, exchange: Exchange, step: Step, plain: bool) -> Action {
        match step {
            Step::Challenge(text) => {
                self.auth = Some(exchange);
                Action::Reply(Reply::plain(334, text))
            }
            Step::Done(creds) => Action::Authenticate(creds),
            Step::Cancelled => Action::Reply(Reply::new(501, "5.7.0", "Authentication cancelled")),
            Step::Failed(SaslError::UnknownMechanism) => Action::Reply(Reply::new(
                504,
                "5.5.4",
                "Unrecognized authentication mechanism (PLAIN and LOGIN are offered)",
            )),
            Step::Failed(e) if plain && e.is_plain_structure() => {
                Action::Reply(Reply::new(501, "5.5.2", "Malformed AUTH PLAIN response"))
            }
            Step::Failed(_) => Action::Reply(Reply::new(501, "5.5.2", "Malformed AUTH response")),
        }
    }

    fn auth_command(&mut self, mechanism: String, initial: Option<String>) -> Action {
        if !self.rules.auth_users {
            return Action::Reply(Reply::new(
                502,
                "5.5.1",
                "AUTH not offered on this listener",
            ));
        }
        if !self.auth_offered() {
            return Action::Reply(if self.rules.starttls {
                Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
            } else {
                Reply::new(538, "5.7.11", "Encryption required for authentication")
            });
        }
        if self.state == State::Connected {
            return Action::Reply(Reply::new(503, "5.5.1", "Send EHLO first"));
        }
        if self.user.is_some() {
            return Action::Reply(Reply::new(503, "5.5.1", "Already authenticated"));
        }
        if self.in_transaction() {
            return Action::Reply(Reply::new(
                503,
                "5.5.1",
                "AUTH not permitted during a mail transaction",
            ));
        }
        let (exchange, step) = Exchange::start(&mechanism, initial.as_deref().map(str::as_bytes));
        let plain = mechanism.eq_ignore_ascii_case("PLAIN");
        self.sasl_step(exchange, step, plain)
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(
            220,
            format!("{} ESMTP dkim-relay ready", self.rules.hostname),
        )
    }

    /// Whether a transaction is under way (MAIL given and not finished).
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Mail | State::Rcpt | State::Data)
    }

    /// Handles one command line (or a framing error in reading it).
    pub fn command(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        if self.auth.is_some() {
            let action = self.auth_response(line);
            return self.count_errors(action);
        }
        let action = match line {
            Err(LineError::TooLong) => Action::Reply(Reply::new(
                500,
                "5.5.6",
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
                Err(e) => Action::Reply(e.reply()),
            },
        };
        self.count_errors(action)
    }

    /// Too many errors in one session: the client is broken or probing (RFC 5321 §4.3.2 allows
    /// a 421 at any time).
    fn count_errors(&mut self, action: Action) -> Action {
        if let Action::Reply(r) | Action::ReplyDiscard(r) = &action
            && r.code >= 400
            && !(is_recipient_cap(r) && self.rcpts_over_cap <= self.free_over_cap())
        {
            self.errors += 1;
            if self.errors >= self.rules.max_errors {
                return Action::Close(Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "{} Too many errors, closing connection",
                        self.rules.hostname
                    ),
                ));
            }
        }
        action
    }

    fn handle(&mut self, cmd: Command) -> Action {
        let h = &self.rules.hostname.clone();
        match cmd {
            Command::Ehlo(_) => {
                self.reset();
                self.state = State::Ready;
                let mut caps = vec![
                    h.clone(),
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    format!("SIZE {}", self.rules.max_message_size),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                if self.rules.starttls && !self.tls {
                    caps.push("STARTTLS".into());
                }
                if self.auth_offered() && self.user.is_none() {
                    caps.push(format!("AUTH {}", sasl::MECHANISMS));
                }
                caps.push("HELP".into());
                Action::Reply(Reply::multi(250, caps))
            }
            Command::Helo(_) => {
                self.reset();
                self.state = State::Ready;
                Action::Reply(Reply::plain(250, h.clone()))
            }
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to, params) => self.rcpt(to, params),
            Command::Data => match self.state {
                State::Rcpt => {
                    self.state = State::Data;
                    Action::StartData(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
                }
                State::Mail => {
                    Action::ReplyDiscard(Reply::new(554, "5.5.1", "No valid recipients"))
                }
                _ => Action::ReplyDiscard(Reply::new(
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
            Command::StartTls => {
                if !self.rules.starttls {
                    Action::Reply(Reply::new(
                        502,
                        "5.5.1",
                        "STARTTLS not offered on this listener",
                    ))
                } else if self.tls {
                    Action::Reply(Reply::new(503, "5.5.1", "TLS already active"))
                } else {
                    Action::StartTls(Reply::new(220, "2.0.0", "Ready to start TLS"))
                }
            }
            Command::Auth { mechanism, initial } => self.auth_command(mechanism, initial),
            // The verb is not echoed: a client that pipelines AUTH continuations after a refused
            // AUTH sends base64 credentials here, and replies are logged.
            Command::Unknown(_) => {
                Action::Reply(Reply::new(500, "5.5.2", "Command not recognized"))
            }
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
        if !self.allowed && self.user.is_none() {
            return Action::Reply(Reply::new(
                530,
                "5.7.0",
                "Authentication required: this address may not submit mail here",
            ));
        }
        // The envelope sender's local part may be kept in the rewritten path (`keep` mode), so
        // it must be a valid RFC 5321 Dot-string or Quoted-string, in ASCII (no SMTPUTF8).
        if let Some(from) = &from
            && !command::valid_local_part(&from.local)
        {
            return Action::Reply(Reply::new(
                553,
                "5.1.7",
                "Bad sender address syntax: the local part must be a dot-atom or a quoted string (RFC 5321 4.1.2)",
            ));
        }
        if let (Some(user), Some(from)) = (&self.user, &from)
            && !user.may_use(&from.domain)
        {
            return Action::Reply(Reply::new(
                550,
                "5.7.1",
                format!(
                    "User {} may not use the envelope sender domain {}",
                    user.user, from.domain
                ),
            ));
        }
        for (key, value) in &params {
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if n > self.rules.max_message_size as u64 => {
                        return Action::Reply(Reply::new(
                            552,
                            "5.3.4",
                            format!(
                                "Message size exceeds fixed maximum of {} bytes",
                                self.rules.max_message_size
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
                // RFC 4954 §5: a server that advertises AUTH accepts the AUTH parameter; the
                // identity it names is not trusted, so it is treated as AUTH=<> (ignored).
                ("AUTH", Some(_)) if self.auth_offered() => {}
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
            submitter: self.user.clone(),
        };
        self.state = State::Mail;
        self.rcpts_over_cap = 0;
        Action::Reply(Reply::new(250, "2.1.0", "Sender ok"))
    }

    fn rcpt(&mut self, to: Mailbox, params: command::Params) -> Action {
        if !matches!(self.state, State::Mail | State::Rcpt) {
            return Action::Reply(Reply::new(503, "5.5.1", "Bad sequence: MAIL first"));
        }
        // No RCPT extension is advertised (no DSN): NOTIFY=, ORCPT= and anything else would
        // be silently dropped on the way upstream, so they are refused (RFC 5321 §4.1.1.11).
        if let Some((key, _)) = params.first() {
            return Action::Reply(Reply::new(
                555,
                "5.5.4",
                format!("RCPT parameter {key} not supported"),
            ));
        }
        if self.envelope.rcpts.len() >= self.rules.max_recipients {
            self.rcpts_over_cap += 1;
            return Action::Reply(Reply::new(
                452,
                "4.5.3",
                format!(
                    "Too many recipients (at most {} per message)",
                    self.rules.max_recipients
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
        self.rcpts_over_cap = 0;
        let max = self.rules.max_message_size;
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
                    DataError::OverBudget => Reply::new(
                        452,
                        "4.3.1",
                        "Insufficient system storage: too many message bytes in flight; try again later",
                    ),
                })
            }
        }
    }

    fn reset(&mut self) {
        self.envelope = Envelope::default();
        self.rcpts_over_cap = 0;
        if self.state != State::Connected {
            self.state = State::Ready;
        }
    }
}

#[cfg(test)]
mod tests;
