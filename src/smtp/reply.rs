//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463), in both directions:
//! the replies the relay writes to its clients, and the replies it reads from the upstream.
//!
//! A reply keeps its text lines as they came, so an upstream answer such as SES's
//! `250 Ok 0100…-000000` can be handed back to the application verbatim.

use std::fmt;

/// One SMTP reply: a three-digit code and one or more text lines (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply whose text begins with an enhanced status code, e.g. `550 5.7.1 …`.
    pub fn new(code: u16, enhanced: &str, text: impl AsRef<str>) -> Self {
        Reply {
            code,
            lines: vec![clean(&format!("{enhanced} {}", text.as_ref()))],
        }
    }

    /// A reply without an enhanced code (greetings, SES-style texts).
    pub fn plain(code: u16, text: impl AsRef<str>) -> Self {
        Reply {
            code,
            lines: vec![clean(text.as_ref())],
        }
    }

    /// A multi-line reply (EHLO).
    pub fn multi(code: u16, lines: impl IntoIterator<Item = String>) -> Self {
        let lines: Vec<String> = lines.into_iter().map(|l| clean(&l)).collect();
        Reply {
            code,
            lines: if lines.is_empty() {
                vec![String::new()]
            } else {
                lines
            },
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code at the start of the first line, if there is one.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let token = first.split(' ').next()?;
        let mut parts = token.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        let ok = matches!(class, "2" | "4" | "5")
            && parts.next().is_none()
            && !subject.is_empty()
            && !detail.is_empty()
            && subject
                .bytes()
                .chain(detail.bytes())
                .all(|b| b.is_ascii_digit());
        ok.then_some(token)
    }

    /// The whole text on one line, for logs.
    pub fn one_line(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }

    /// The reply as it goes on the wire, every line CRLF-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            if line.is_empty() && i == last {
                out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
            } else {
                out.extend_from_slice(format!("{}{}{}\r\n", self.code, sep, line).as_bytes());
            }
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// Reply text must never carry CR or LF (that would forge extra reply lines).
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// Why a reply from a peer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply code changed within a multi-line reply")]
    CodeMismatch,
    #[error("reply has too many lines")]
    TooLong,
}

/// Incremental reader of (possibly multi-line) replies; fed one line at a time, without CRLF.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

/// A peer that sends more continuation lines than this is broken or hostile.
const MAX_REPLY_LINES: usize = 100;

impl ReplyParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line. Returns the complete reply when this line was its last.
    pub fn feed(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let text = String::from_utf8_lossy(line);
        let bytes = text.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::Malformed(text.into_owned()));
        }
        let code: u16 = text[..3]
            .parse()
            .map_err(|_| ReplyError::Malformed(text.to_string()))?;
        if !(200..600).contains(&code) {
            return Err(ReplyError::Malformed(text.into_owned()));
        }
        if let Some(previous) = self.code
            && previous != code
        {
            return Err(ReplyError::CodeMismatch);
        }
        self.code = Some(code);
        let (last, rest) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &text[4..]),
            Some(b'-') => (false, &text[4..]),
            Some(_) => return Err(ReplyError::Malformed(text.into_owned())),
        };
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooLong);
        }
        self.lines.push(rest.to_string());
        if last {
            let lines = std::mem::take(&mut self.lines);
            self.code = None;
            Ok(Some(Reply { code, lines }))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_single_and_multi() {
        assert_eq!(
            Reply::new(550, "5.7.1", "no").to_wire(),
            b"550 5.7.1 no\r\n".to_vec()
        );
        let r = Reply::multi(250, vec!["a".into(), "PIPELINING".into()]);
        assert_eq!(r.to_wire(), b"250-a\r\n250 PIPELINING\r\n".to_vec());
    }

    #[test]
    fn text_cannot_inject_lines() {
        let r = Reply::plain(250, "x\r\n250 forged");
        assert_eq!(r.to_wire(), b"250 x  250 forged\r\n".to_vec());
    }

    #[test]
    fn enhanced_code_detection() {
        assert_eq!(Reply::new(451, "4.4.2", "t").enhanced(), Some("4.4.2"));
        assert_eq!(Reply::plain(250, "Ok 0100abc").enhanced(), None);
        assert_eq!(Reply::plain(554, "5.x.1 nope").enhanced(), None);
    }

    #[test]
    fn parses_multiline_reply() {
        let mut p = ReplyParser::new();
        assert_eq!(p.feed(b"250-email-smtp.amazonaws.com").unwrap(), None);
        assert_eq!(p.feed(b"250-8BITMIME").unwrap(), None);
        let r = p.feed(b"250 Ok").unwrap().unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["email-smtp.amazonaws.com", "8BITMIME", "Ok"]);
        // The parser is ready for the next reply.
        assert_eq!(p.feed(b"221").unwrap().unwrap().lines, vec![""]);
    }

    #[test]
    fn rejects_garbage() {
        let mut p = ReplyParser::new();
        assert!(p.feed(b"hello").is_err());
        assert!(p.feed(b"25").is_err());
        assert!(p.feed(b"250x").is_err());
        let mut p = ReplyParser::new();
        p.feed(b"250-a").unwrap();
        assert_eq!(p.feed(b"251 b"), Err(ReplyError::CodeMismatch));
    }
}
