//! The simulator's SMTP session as a sans-IO state machine: command lines in, [`Action`]s out.
//!
//! Implements the SES dialogue of ses-smtp.md §3 and §8 items 2–6 and 9: the banner, the EHLO
//! list (STARTTLS only before TLS; `AUTH PLAIN LOGIN`; `250 Ok` last), `530 Must issue a
//! STARTTLS command first` before TLS, `530 Authentication required` before AUTH, AUTH PLAIN and
//! LOGIN (the shared `smtp::sasl` exchange, every malformed response worded as SES's `535`)
//! checked against the SigV4 SMTP password of the simulator's region (constant time; a SigV2
//! password gets the deprecation 535), SES's `501`/`553` address replies, and the per-session
//! message cap. End-of-data checks live in [`super::rules`]; [`super::server`] runs this
//! session on the shared server shell (`crate::server`: socket, TLS, timers).

use rand::Rng;

use super::fault::Greeting;
use crate::ses_password;
use crate::smtp::codec::LineError;
use crate::smtp::command::{self, Command};
use crate::smtp::reply::Reply;
use crate::smtp::sasl::{self, Exchange, Step};

/// The name SES gives itself in every region.
pub const SES_HOST: &str = "email-smtp.amazonaws.com";

/// What the connection loop must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the reply and keep reading commands.
    Reply(Reply),
    /// Write the reply, then close the connection.
    Close(Reply),
    /// Write the reply, discard any buffered input, then run the TLS handshake.
    StartTls(Reply),
    /// Write the reply (354), then read the message with the DATA reader.
    Data(Reply),
}

/// The envelope of a message whose DATA has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The SMTP MAIL FROM as given (the feedback destination).
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// The authenticated access key ID.
    pub user: String,
}

/// The immutable parts of the account a session needs.
#[derive(Clone)]
pub struct Policy {
    pub region: String,
    /// (access key ID, v4 password for the region, v2 password).
    pub credentials: Vec<(String, String, String)>,
    pub legacy_ehlo_size: bool,
    pub starttls_after_tls: bool,
    pub max_messages_per_session: u32,
    /// Scripted greeting deviations ([`super::fault::Greeting`]); default: none.
    pub greeting: Greeting,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("region", &self.region)
            .field("accounts", &self.credentials.len())
            .finish_non_exhaustive()
    }
}

impl Policy {
    pub fn from_settings(s: &super::config::SimSettings) -> Policy {
        Policy {
            region: s.region.clone(),
            credentials: s
                .accounts
                .iter()
                .map(|a| {
                    (
                        a.access_key_id.clone(),
                        ses_password::smtp_password_v4(a.secret.expose(), &s.region),
                        ses_password::smtp_password_v2(a.secret.expose()),
                    )
                })
                .collect(),
            legacy_ehlo_size: s.legacy_ehlo_size,
            starttls_after_tls: s.starttls_after_tls,
            max_messages_per_session: s.max_messages_per_session,
            greeting: Greeting::default(),
        }
    }
}

/// Envelope recipients kept per message; SES refuses more than 50 at end of data anyway.
const MAX_STORED_RCPTS: usize = 1000;

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    policy: Policy,
    tls: bool,
    user: Option<String>,
    /// The AUTH exchange waiting for a continuation line, if any.
    auth: Option<Exchange>,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    messages: u32,
}

/// The greeting: `220 email-smtp.amazonaws.com ESMTP SimpleEmailService-d-<9> <20>`.
pub fn banner() -> Reply {
    let mut rng = rand::rng();
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |rng: &mut rand::rngs::ThreadRng, set: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| set[rng.random_range(0..set.len())] as char)
            .collect()
    };
    let fleet = pick(&mut rng, UPPER, 9);
    let token = pick(&mut rng, ALNUM, 20);
    Reply::plain(
        220,
        format!("{SES_HOST} ESMTP SimpleEmailService-d-{fleet} {token}"),
    )
}

/// The reply when the connection limit is reached.
pub fn too_many_connections() -> Reply {
    Reply::plain(421, "Too many concurrent SMTP connections")
}

/// The unsolicited reply when the client stays silent for the idle timeout.
pub fn idle_timeout() -> Reply {
    Reply::plain(451, "4.4.2 Timeout waiting for data from client.")
}

/// The wire form of a reply; SES's empty AUTH challenge is `334 ` with its space.
pub fn wire(reply: &Reply) -> Vec<u8> {
    if reply.code == 334 && reply.lines.len() == 1 && reply.lines[0].is_empty() {
        return b"334 \r\n".to_vec();
    }
    reply.to_wire()
}

fn ok() -> Reply {
    Reply::plain(250, "Ok")
}

fn bad_sequence(text: &str) -> Reply {
    Reply::plain(503, text)
}

fn invalid_credentials() -> Reply {
    Reply::plain(535, "Authentication Credentials Invalid")
}

fn sigv2_deprecated() -> Reply {
    Reply::multi(
        535,
        [
            "Signature Version 2 is deprecated for use with SES from March 26, 2021.".to_string(),
            "Please use Signature Version 4 SMTP credentials. For more information, see".into(),
            "https://docs.aws.amazon.com/ses/latest/dg/smtp-credentials.html".into(),
        ],
    )
}

/// The verb of a command line, upper case (for fault injection and logs).
pub fn verb(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// The address as the client wrote it in `RCPT TO:<…>` (for the 553 text).
fn written_rcpt(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let rest = s.split_once(':').map(|(_, r)| r.trim()).unwrap_or("");
    let rest = rest.strip_prefix('<').unwrap_or(rest);
    let end = rest.find('>').unwrap_or(rest.len());
    rest[..end].to_string()
}

impl Session {
    pub fn new(policy: Policy, tls: bool) -> Session {
        Session {
            policy,
            tls,
            user: None,
            auth: None,
            mail_from: None,
            rcpts: Vec::new(),
            messages: 0,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The authenticated access key ID.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether a transaction is under way (MAIL given, message not yet read).
    pub fn in_transaction(&self) -> bool {
        self.mail_from.is_some()
    }

    /// Whether the next line is an AUTH response rather than a command.
    pub fn in_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// The TLS handshake finished: RFC 3207 §4.2, forget everything learnt before it.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.user = None;
        self.auth = None;
        self.reset();
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    /// A line the codec refused.
    pub fn on_line_error(&mut self, e: LineError) -> Action {
        self.auth = None;
        Action::Reply(match e {
            LineError::TooLong => Reply::plain(500, "Line too long"),
            LineError::BareNewline => Reply::plain(500, "Bare CR or LF in command line"),
            LineError::Nul => Reply::plain(500, "NUL byte in command line"),
        })
    }

    /// The end of DATA was read: hands over the envelope and clears the transaction.
    pub fn end_of_data(&mut self) -> Transaction {
        let tx = Transaction {
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpts: std::mem::take(&mut self.rcpts),
            user: self.user.clone().unwrap_or_default(),
        };
        self.reset();
        tx
    }

    /// A message was accepted (`250 Ok <id>`): counts toward the per-session cap.
    pub fn accepted(&mut self) {
        self.messages = self.messages.saturating_add(1);
    }

    /// SES's order: no TLS beats no AUTH.
    fn gate(&self) -> Option<Reply> {
        if !self.tls {
            Some(Reply::plain(530, "Must issue a STARTTLS command first"))
        } else if self.user.is_none() {
            Some(Reply::plain(530, "Authentication required"))
        } else {
            None
        }
    }

    /// One command line (without CRLF).
    pub fn on_line(&mut self, line: &[u8]) -> Action {
        if self.in_auth() {
            return Action::Reply(self.auth_response(line));
        }
        let parsed = command::parse(line);
        let cmd = match parsed {
            Ok(c) => c,
            Err(e) => {
                let v = verb(line);
                return Action::Reply(match v.as_str() {
                    "MAIL" => self
                        .gate()
                        .unwrap_or_else(|| Reply::plain(501, "Invalid MAIL FROM address provided")),
                    "RCPT" => self.gate().unwrap_or_else(|| {
                        Reply::plain(553, format!("<{}> address unknown", written_rcpt(line)))
                    }),
                    _ => e.reply(),
                });
            }
        };
        match cmd {
            Command::Ehlo(_) => {
                self.reset();
                let mut lines = vec![SES_HOST.to_string(), "8BITMIME".to_string()];
                if self.policy.legacy_ehlo_size {
                    lines.push("SIZE 10485760".into());
                }
                if (!self.tls || self.policy.starttls_after_tls)
                    && !self.policy.greeting.hide_starttls
                {
                    lines.push("STARTTLS".into());
                }
                let mechanisms = self.policy.greeting.auth_mechanisms.as_deref();
                lines.push(format!("AUTH {}", mechanisms.unwrap_or("PLAIN LOGIN")));
                lines.push("Ok".into());
                Action::Reply(Reply::multi(250, lines))
            }
            Command::Helo(_) => {
                self.reset();
                Action::Reply(Reply::plain(250, SES_HOST))
            }
            Command::StartTls => {
                if self.policy.greeting.hide_starttls {
                    Action::Reply(Reply::plain(502, "5.5.1 Unrecognized command"))
                } else if self.tls {
                    Action::Reply(bad_sequence("TLS already active"))
                } else {
                    Action::StartTls(Reply::plain(220, "Ready to start TLS"))
                }
            }
            Command::Auth { mechanism, initial } => {
                if !self.tls {
                    return Action::Reply(Reply::plain(530, "Must issue a STARTTLS command first"));
                }
                if self.user.is_some() {
                    return Action::Reply(bad_sequence("Already authenticated"));
                }
                let (exchange, step) =
                    Exchange::start(&mechanism, initial.as_deref().map(str::as_bytes));
                Action::Reply(self.sasl_step(exchange, step))
            }
            Command::Mail(from, _) => {
                if let Some(r) = self.gate() {
                    return Action::Reply(r);
                }
                if self.messages >= self.policy.max_messages_per_session {
                    return Action::Close(Reply::plain(
                        421,
                        "Connection closed by server. Maximum message count per session reached.",
                    ));
                }
                if self.mail_from.is_some() {
                    return Action::Reply(bad_sequence("Sender already specified"));
                }
                match from {
                    None => Action::Reply(Reply::plain(501, "Invalid MAIL FROM address provided")),
                    Some(mb) => {
                        self.mail_from = Some(mb.address());
                        Action::Reply(ok())
                    }
                }
            }
            Command::Rcpt(to, _) => {
                if let Some(r) = self.gate() {
                    return Action::Reply(r);
                }
                if self.mail_from.is_none() {
                    return Action::Reply(bad_sequence("Error: need MAIL command"));
                }
                if self.rcpts.len() >= MAX_STORED_RCPTS {
                    return Action::Reply(Reply::plain(452, "Too many recipients"));
                }
                self.rcpts.push(to.address());
                Action::Reply(ok())
            }
            Command::Data => {
                if let Some(r) = self.gate() {
                    return Action::Reply(r);
                }
                if self.mail_from.is_none() {
                    return Action::Reply(bad_sequence("Error: need MAIL command"));
                }
                if self.rcpts.is_empty() {
                    return Action::Reply(bad_sequence("Error: need RCPT command"));
                }
                Action::Data(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
            }
            Command::Rset => {
                self.reset();
                Action::Reply(ok())
            }
            Command::Noop => Action::Reply(ok()),
            Command::Quit => Action::Close(Reply::plain(221, "Bye")),
            Command::Vrfy | Command::Help | Command::Unknown(_) => {
                Action::Reply(Reply::plain(502, "Command not implemented"))
            }
        }
    }

    fn auth_response(&mut self, line: &[u8]) -> Reply {
        match self.auth.take() {
            Some(mut exchange) => {
                let step = exchange.step(line);
                self.sasl_step(exchange, step)
            }
            None => invalid_credentials(),
        }
    }

    /// SES's wording of a SASL step: every malformed response is a plain 535.
    fn sasl_step(&mut self, exchange: Exchange, step: Step) -> Reply {
        match step {
            Step::Challenge(text) => {
                self.auth = Some(exchange);
                Reply::plain(334, text)
            }
            Step::Done(creds) => self.verify(&creds.username, &creds.password),
            Step::Cancelled => Reply::plain(501, "Authentication cancelled"),
            Step::Failed(sasl::SaslError::UnknownMechanism) => {
                Reply::plain(504, "Unrecognized authentication type")
            }
            Step::Failed(_) => invalid_credentials(),
        }
    }

    fn verify(&mut self, user: &str, pass: &[u8]) -> Reply {
        let account = self.policy.credentials.iter().find(|(id, _, _)| id == user);
        let Some((id, v4, v2)) = account else {
            // Same work for unknown users, so timing does not reveal which IDs exist.
            let _ = ses_password::constant_time_eq(pass, &[0u8; 44]);
            return invalid_credentials();
        };
        if ses_password::constant_time_eq(pass, v4.as_bytes()) {
            self.user = Some(id.clone());
            return Reply::plain(235, "Authentication successful.");
        }
        if pass.first() == Some(&b'A') && ses_password::constant_time_eq(pass, v2.as_bytes()) {
            return sigv2_deprecated();
        }
        invalid_credentials()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn session() -> Session {
        let policy = Policy {
            region: "us-east-1".into(),
            credentials: vec![(
                "AKIAIOSFODNN7EXAMPLE".into(),
                ses_password::smtp_password_v4(
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                    "us-east-1",
                ),
                ses_password::smtp_password_v2("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            )],
            legacy_ehlo_size: false,
            starttls_after_tls: false,
            max_messages_per_session: 1,
            greeting: Greeting::default(),
        };
        Session::new(policy, false)
    }

    fn text(a: Action) -> String {
        match a {
            Action::Reply(r) | Action::Close(r) | Action::StartTls(r) | Action::Data(r) => {
                String::from_utf8(wire(&r)).unwrap()
            }
        }
    }

    #[test]
    fn dialogue() {
        let mut s = session();
        let e = text(s.on_line(b"EHLO x"));
        assert_eq!(
            e,
            "250-email-smtp.amazonaws.com\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 Ok\r\n"
        );
        assert_eq!(
            text(s.on_line(b"AUTH LOGIN")),
            "530 Must issue a STARTTLS command first\r\n"
        );
        assert_eq!(
            text(s.on_line(b"MAIL FROM:<a@b.c>")),
            "530 Must issue a STARTTLS command first\r\n"
        );
        assert!(matches!(s.on_line(b"STARTTLS"), Action::StartTls(_)));
        s.tls_started();
        assert!(!text(s.on_line(b"EHLO x")).contains("STARTTLS"));
        assert_eq!(
            text(s.on_line(b"MAIL FROM:<a@b.c>")),
            "530 Authentication required\r\n"
        );
        assert_eq!(text(s.on_line(b"AUTH PLAIN")), "334 \r\n");
        let cred = base64::engine::general_purpose::STANDARD
            .encode(b"\0AKIAIOSFODNN7EXAMPLE\0BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9");
        assert_eq!(
            text(s.on_line(cred.as_bytes())),
            "235 Authentication successful.\r\n"
        );
        assert_eq!(
            text(s.on_line(b"MAIL FROM:<>")),
            "501 Invalid MAIL FROM address provided\r\n"
        );
        assert_eq!(
            text(s.on_line(b"MAIL FROM:<not an address>")),
            "501 Invalid MAIL FROM address provided\r\n"
        );
        assert_eq!(text(s.on_line(b"MAIL FROM:<a@b.c>")), "250 Ok\r\n");
        assert_eq!(
            text(s.on_line(b"RCPT TO:<bad address>")),
            "553 <bad address> address unknown\r\n"
        );
        assert_eq!(text(s.on_line(b"RCPT TO:<x@y.z>")), "250 Ok\r\n");
        assert!(matches!(s.on_line(b"DATA"), Action::Data(_)));
        let tx = s.end_of_data();
        assert_eq!(tx.rcpts, vec!["x@y.z".to_string()]);
        s.accepted();
        assert!(matches!(s.on_line(b"MAIL FROM:<a@b.c>"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn scripted_greeting_hides_starttls_and_lists_other_mechanisms() {
        let mut s = session();
        s.policy.greeting = Greeting {
            hide_starttls: true,
            auth_mechanisms: Some("LOGIN".into()),
            starttls_trailer: None,
        };
        assert_eq!(
            text(s.on_line(b"EHLO x")),
            "250-email-smtp.amazonaws.com\r\n250-8BITMIME\r\n250-AUTH LOGIN\r\n250 Ok\r\n"
        );
        assert_eq!(
            text(s.on_line(b"STARTTLS")),
            "502 5.5.1 Unrecognized command\r\n"
        );
    }

    #[test]
    fn login_and_v2() {
        let mut s = session();
        s.tls_started();
        assert_eq!(text(s.on_line(b"AUTH LOGIN")), "334 VXNlcm5hbWU6\r\n");
        let user = base64::engine::general_purpose::STANDARD.encode("AKIAIOSFODNN7EXAMPLE");
        assert_eq!(text(s.on_line(user.as_bytes())), "334 UGFzc3dvcmQ6\r\n");
        let pass = base64::engine::general_purpose::STANDARD
            .encode("An60U4ZD3sd4fg+FvXUjayOipTt8LO4rUUmhpdX6ctDy");
        let r = text(s.on_line(pass.as_bytes()));
        assert!(
            r.starts_with("535-Signature Version 2 is deprecated"),
            "{r}"
        );
        let pass = base64::engine::general_purpose::STANDARD
            .encode("BMPPgbAHoFVbze1Ud0oA5uNdXRwUXUZ+qOwphGJbl/cS"); // us-east-2
        let line = format!("AUTH LOGIN {user}");
        assert_eq!(text(s.on_line(line.as_bytes())), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(
            text(s.on_line(pass.as_bytes())),
            "535 Authentication Credentials Invalid\r\n"
        );
    }
}
