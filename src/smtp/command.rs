//! SMTP command parsing (RFC 5321 §4.1), shared by the relay listener and the SES simulator.
//!
//! A command line arrives here without its CRLF and already length-checked by the codec.
//! Parsing is strict about what matters for mail routing (the reverse-path and forward-paths)
//! and lenient about case and surrounding spaces, as RFC 5321 §4.1.1 asks.
//!
//! Errors are typed ([`CommandError`]); each protocol words its own reply. The RFC 5321 /
//! RFC 3463 wording the relay sends is [`CommandError::reply`]; the simulator words its own
//! for a malformed MAIL or RCPT (SES's `501`/`553` address texts).

use super::reply::Reply;

/// Why a command line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command line is not valid UTF-8")]
    NotUtf8,
    #[error("empty command")]
    Empty,
    /// A verb that takes no parameters got some (DATA, RSET, QUIT, STARTTLS).
    #[error("no parameters allowed")]
    UnexpectedParameters,
    /// EHLO or HELO without exactly one hostname; carries the verb.
    #[error("{0} needs one hostname")]
    Hello(String),
    /// MAIL without `FROM:`.
    #[error("MAIL syntax")]
    MailSyntax,
    /// A reverse-path that is not a valid address.
    #[error("bad sender address")]
    BadSender,
    /// RCPT without `TO:`.
    #[error("RCPT syntax")]
    RcptSyntax,
    /// A forward-path that is not a valid address.
    #[error("bad recipient address")]
    BadRecipient,
    /// A reverse-path over the RFC 5321 §4.5.3.1 size limits.
    #[error("sender path too long")]
    SenderTooLong,
    /// A forward-path over the RFC 5321 §4.5.3.1 size limits.
    #[error("recipient path too long")]
    RecipientTooLong,
    /// AUTH without a mechanism.
    #[error("AUTH without a mechanism")]
    AuthMechanism,
    /// AUTH with more than a mechanism and an initial response.
    #[error("AUTH with too many arguments")]
    AuthArguments,
}

impl CommandError {
    /// The standard reply (RFC 5321 codes, RFC 3463 enhanced codes), as the relay sends it.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::NotUtf8 => Reply::new(500, "5.5.2", "Command line is not valid UTF-8"),
            CommandError::Empty => Reply::new(500, "5.5.2", "Empty command"),
            CommandError::UnexpectedParameters => {
                Reply::new(501, "5.5.4", "Syntax error: no parameters allowed")
            }
            CommandError::Hello(verb) => {
                Reply::new(501, "5.5.4", format!("Syntax: {verb} hostname"))
            }
            CommandError::MailSyntax => Reply::new(501, "5.5.4", "Syntax: MAIL FROM:<address>"),
            CommandError::BadSender => Reply::new(501, "5.1.7", "Bad sender address syntax"),
            CommandError::RcptSyntax => Reply::new(501, "5.5.4", "Syntax: RCPT TO:<address>"),
            CommandError::BadRecipient => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
            CommandError::SenderTooLong => Reply::new(553, "5.1.7", PATH_TOO_LONG),
            CommandError::RecipientTooLong => Reply::new(553, "5.1.3", PATH_TOO_LONG),
            CommandError::AuthMechanism => Reply::new(501, "5.5.4", "Syntax: AUTH mechanism"),
            CommandError::AuthArguments => {
                Reply::new(501, "5.5.4", "Syntax: AUTH mechanism [response]")
            }
        }
    }
}

const PATH_TOO_LONG: &str =
    "Path too long (RFC 5321 4.5.3.1: local part 64, domain 255, path 256 octets at most)";

/// RFC 5321 §4.5.3.1.1–3: local part 64 octets, domain 255, the whole path 256 (with its
/// angle brackets).
pub const MAX_LOCAL_PART: usize = 64;
pub const MAX_DOMAIN: usize = 255;
pub const MAX_PATH: usize = 256;

/// Whether `path` (without brackets or source route) is within the RFC 5321 size limits.
fn path_fits(path: &str) -> bool {
    if path.len() + 2 > MAX_PATH {
        return false;
    }
    match path.rfind('@') {
        Some(at) => at <= MAX_LOCAL_PART && path.len() - at - 1 <= MAX_DOMAIN,
        None => true,
    }
}

/// Whether a local part, as written in the path, is an RFC 5321 §4.1.2 `Dot-string`
/// (atoms joined by single dots: no leading, trailing or doubled dot) or `Quoted-string`
/// (`qtextSMTP` and `quoted-pairSMTP` only), in ASCII — 8-bit needs SMTPUTF8, which is not
/// offered. A local part that passes can be written back into a path unchanged.
pub fn valid_local_part(local: &str) -> bool {
    let b = local.as_bytes();
    if b.is_empty() || b.len() > MAX_LOCAL_PART {
        return false;
    }
    if let Some(inner) = local.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return false;
        };
        let mut escaped = false;
        for c in inner.bytes() {
            if escaped {
                if !(32..=126).contains(&c) {
                    return false;
                }
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if !(c == 32 || c == 33 || (35..=91).contains(&c) || (93..=126).contains(&c)) {
                return false;
            }
        }
        return !escaped;
    }
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c))
    })
}

/// A mailbox from a MAIL or RCPT path: `local@domain`. The local part keeps its quotes if it
/// had them, so it can be written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    /// Parses `local@domain` (no angle brackets). Accepts quoted local parts.
    pub fn parse(s: &str) -> Option<Mailbox> {
        let at = if s.starts_with('"') {
            // Find the closing quote, honouring backslash escapes.
            let mut escaped = false;
            let mut close = None;
            for (i, c) in s.char_indices().skip(1) {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close?;
            if s.as_bytes().get(close + 1) != Some(&b'@') {
                return None;
            }
            close + 1
        } else {
            s.rfind('@')?
        };
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if local.is_empty() || local.len() > 64 || domain.is_empty() || domain.len() > 255 {
            return None;
        }
        if !local.starts_with('"')
            && !local.bytes().all(|b| {
                b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b) || b >= 0x80
            })
        {
            return None;
        }
        if local.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return None;
        }
        let domain_ok = if domain.starts_with('[') && domain.ends_with(']') {
            domain.len() > 2
        } else {
            domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
            })
        };
        domain_ok.then(|| Mailbox {
            local: local.to_string(),
            domain: domain.to_string(),
        })
    }

    pub fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

impl std::fmt::Display for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// ESMTP parameters after a path, e.g. `SIZE=1000 BODY=8BITMIME`.
pub type Params = Vec<(String, Option<String>)>;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    /// `None` is the null reverse-path `<>`.
    Mail(Option<Mailbox>, Params),
    Rcpt(Mailbox, Params),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// A verb we do not implement (BDAT, ETRN, …).
    Unknown(String),
}

impl Command {
    /// The verb, for logs and error counting.
    pub fn verb(&self) -> &str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail(..) => "MAIL",
            Command::Rcpt(..) => "RCPT",
            Command::Data => "DATA",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy => "VRFY",
            Command::Help => "HELP",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
            Command::Unknown(v) => v,
        }
    }
}

/// Parses one command line.
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::NotUtf8)?;
    let line = line.trim_end_matches(' ');
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_start()),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::UnexpectedParameters)
        }
    };
    match upper.as_str() {
        "EHLO" | "HELO" => {
            if rest.is_empty() || rest.contains(' ') {
                return Err(CommandError::Hello(upper));
            }
            Ok(if upper == "EHLO" {
                Command::Ehlo(rest.to_string())
            } else {
                Command::Helo(rest.to_string())
            })
        }
        "MAIL" => {
            let arg = strip_prefix_ci(rest, "FROM:").ok_or(CommandError::MailSyntax)?;
            let (path, params) = split_path(arg.trim_start()).ok_or(CommandError::BadSender)?;
            if path.is_empty() {
                return Ok(Command::Mail(None, params));
            }
            if !path_fits(strip_source_route(path)) {
                return Err(CommandError::SenderTooLong);
            }
            let mailbox =
                Mailbox::parse(strip_source_route(path)).ok_or(CommandError::BadSender)?;
            Ok(Command::Mail(Some(mailbox), params))
        }
        "RCPT" => {
            let arg = strip_prefix_ci(rest, "TO:").ok_or(CommandError::RcptSyntax)?;
            let (path, params) = split_path(arg.trim_start()).ok_or(CommandError::BadRecipient)?;
            if !path_fits(strip_source_route(path)) {
                return Err(CommandError::RecipientTooLong);
            }
            let mailbox =
                Mailbox::parse(strip_source_route(path)).ok_or(CommandError::BadRecipient)?;
            Ok(Command::Rcpt(mailbox, params))
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        // NOOP, HELP and VRFY may carry an argument that we ignore (RFC 5321 §4.1.1.9–10).
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "AUTH" => {
            let mut parts = rest.split_ascii_whitespace();
            let mechanism = parts
                .next()
                .ok_or(CommandError::AuthMechanism)?
                .to_ascii_uppercase();
            let initial = parts.next().map(str::to_string);
            if parts.next().is_some() {
                return Err(CommandError::AuthArguments);
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "" => Err(CommandError::Empty),
        _ => Ok(Command::Unknown(upper)),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) {
        let (head, tail) = s.split_at(prefix.len());
        head.eq_ignore_ascii_case(prefix).then_some(tail)
    } else {
        None
    }
}

/// Splits `<path> PARAM=VALUE …` into the path (without brackets) and its parameters.
fn split_path(s: &str) -> Option<(&str, Params)> {
    let rest = s.strip_prefix('<')?;
    // The closing bracket is the first '>' outside a quoted string.
    let mut in_quotes = false;
    let mut escaped = false;
    let mut close = None;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => {
                close = Some(i);
                break;
            }
            _ => {}
        }
    }
    let close = close?;
    let path = &rest[..close];
    let tail = &rest[close + 1..];
    if !tail.is_empty() && !tail.starts_with(' ') {
        return None;
    }
    let mut params = Vec::new();
    for param in tail.split_ascii_whitespace() {
        let (k, v) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (param, None),
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        params.push((k.to_ascii_uppercase(), v));
    }
    Some((path, params))
}

/// RFC 5321 §4.1.2: a source route (`@a,@b:user@c`) must be accepted and ignored.
fn strip_source_route(path: &str) -> &str {
    if path.starts_with('@')
        && let Some(i) = path.find(':')
    {
        return &path[i + 1..];
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(l: &str, d: &str) -> Mailbox {
        Mailbox {
            local: l.into(),
            domain: d.into(),
        }
    }

    #[test]
    fn mail_and_rcpt() {
        assert_eq!(
            parse(b"MAIL FROM:<a@b.org> SIZE=100 BODY=8BITMIME").unwrap(),
            Command::Mail(
                Some(mb("a", "b.org")),
                vec![
                    ("SIZE".into(), Some("100".into())),
                    ("BODY".into(), Some("8BITMIME".into()))
                ]
            )
        );
        assert_eq!(
            parse(b"mail from: <>").unwrap(),
            Command::Mail(None, vec![])
        );
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:\"john doe\"@x.org>").unwrap(),
            Command::Rcpt(mb("\"john doe\"", "x.org"), vec![])
        );
    }

    #[test]
    fn bad_paths_get_specific_codes() {
        assert_eq!(parse(b"MAIL FROM:a@b").unwrap_err().reply().code, 501);
        assert_eq!(
            parse(b"MAIL FROM:<a b@c>").unwrap_err().reply().enhanced(),
            Some("5.1.7")
        );
        assert_eq!(
            parse(b"RCPT TO:<nobody>").unwrap_err().reply().enhanced(),
            Some("5.1.3")
        );
        assert_eq!(
            parse(b"RCPT TO:<>").unwrap_err().reply().enhanced(),
            Some("5.1.3")
        );
        assert_eq!(parse(b"MAIL FROM:<a@b>x").unwrap_err().reply().code, 501);
    }

    #[test]
    fn verbs() {
        assert_eq!(
            parse(b"ehlo client.example").unwrap(),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(parse(b"DATA").unwrap(), Command::Data);
        assert!(parse(b"DATA now").is_err());
        assert_eq!(parse(b"NOOP hi").unwrap(), Command::Noop);
        assert_eq!(
            parse(b"AUTH plain AGZvbwBiYXI=").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGZvbwBiYXI=".into())
            }
        );
        assert_eq!(
            parse(b"BDAT 10 LAST").unwrap(),
            Command::Unknown("BDAT".into())
        );
        assert!(parse(b"").is_err());
        assert!(parse(b"EHLO").is_err());
    }

    #[test]
    fn mailbox_rules() {
        assert!(Mailbox::parse("a@b").is_some());
        assert!(Mailbox::parse("\"a\\\"b\"@c.d").is_some());
        assert!(Mailbox::parse("@b").is_none());
        assert!(Mailbox::parse("a@").is_none());
        assert!(Mailbox::parse("a@b..c").is_none());
        assert!(Mailbox::parse("a\x01@b").is_none());
        assert!(Mailbox::parse(&format!("{}@b", "x".repeat(65))).is_none());
    }

    #[test]
    fn path_size_limits() {
        let local = |n| format!("{}@b.org", "x".repeat(n));
        assert!(parse(format!("RCPT TO:<{}>", local(64)).as_bytes()).is_ok());
        let r = parse(format!("RCPT TO:<{}>", local(65)).as_bytes()).unwrap_err();
        assert_eq!((r.reply().code, r.reply().enhanced()), (553, Some("5.1.3")));
        let r = parse(format!("MAIL FROM:<{}>", local(65)).as_bytes()).unwrap_err();
        assert_eq!((r.reply().code, r.reply().enhanced()), (553, Some("5.1.7")));
        // 254 octets + brackets = 256: fine; one more is not.
        let label = "d".repeat(60);
        let domain = format!("{label}.{label}.{label}.{}", "e".repeat(10));
        let ok = format!("{}@{domain}", "x".repeat(254 - 1 - domain.len()));
        assert_eq!(ok.len(), 254);
        assert!(parse(format!("RCPT TO:<{ok}>").as_bytes()).is_ok());
        assert_eq!(
            parse(format!("RCPT TO:<x{ok}>").as_bytes()).unwrap_err(),
            CommandError::RecipientTooLong
        );
    }

    #[test]
    fn local_part_syntax() {
        for ok in [
            "a",
            "a.b",
            "a+tag",
            "\"john doe\"",
            "\"a\\\"b\"",
            "\"a..b\"",
        ] {
            assert!(valid_local_part(ok), "{ok}");
        }
        for bad in [
            "a..b",
            ".a",
            "a.",
            "\u{e9}t\u{e9}",
            "\"a\u{e9}\"",
            "\"a",
            "\"a\\\"",
            "",
        ] {
            assert!(!valid_local_part(bad), "{bad}");
        }
    }
}
