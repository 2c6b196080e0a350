//! Mailpit's search syntax (`GET /api/v1/search?query=`), the common terms: `from:`, `to:`,
//! `cc:`, `reply-to:`, `addressed:`, `subject:`, `message-id:`, `tag:`, `is:read`,
//! `is:unread`, `is:tagged`, `has:attachment`, and plain words (matched in the subject, the
//! addresses and the text). A term starting with `-` or `!` excludes; `"quoted words"` are one
//! term; every term must hold (AND). Matching is case-insensitive substring, like Mailpit's SQL
//! `LIKE`, except `tag:`, which is an exact tag name as in Mailpit. Unknown `key:value` terms are
//! plain words, as in Mailpit.

use super::mailpit::{MailAddress, MessageSummary};

/// One parsed term.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    From(String),
    To(String),
    Cc(String),
    ReplyTo(String),
    Addressed(String),
    Subject(String),
    MessageId(String),
    Tag(String),
    Read,
    Unread,
    Tagged,
    HasAttachment,
    Word(String),
}

/// A parsed query: every term must hold (`bool` = excluded).
#[derive(Debug, Clone, Default)]
pub struct Query {
    terms: Vec<(bool, Term)>,
}

/// Splits on spaces, keeping `"quoted words"` (quotes removed) together.
fn args(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in query.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Query {
    pub fn parse(query: &str) -> Query {
        let mut terms = Vec::new();
        for arg in args(query) {
            let (exclude, w) = match arg.strip_prefix(['-', '!']) {
                Some(rest) if !rest.is_empty() => (true, rest.to_string()),
                _ => (false, arg),
            };
            let lw = w.to_lowercase();
            let value = |prefix: &str| w[prefix.len()..].to_lowercase();
            let term = if lw.starts_with("from:") {
                Term::From(value("from:"))
            } else if lw.starts_with("to:") {
                Term::To(value("to:"))
            } else if lw.starts_with("cc:") {
                Term::Cc(value("cc:"))
            } else if lw.starts_with("reply-to:") {
                Term::ReplyTo(value("reply-to:"))
            } else if lw.starts_with("addressed:") {
                Term::Addressed(value("addressed:"))
            } else if lw.starts_with("subject:") {
                Term::Subject(value("subject:"))
            } else if lw.starts_with("message-id:") {
                Term::MessageId(value("message-id:"))
            } else if lw.starts_with("tag:") {
                Term::Tag(w["tag:".len()..].to_string())
            } else if lw == "is:read" {
                Term::Read
            } else if lw == "is:unread" {
                Term::Unread
            } else if lw == "is:tagged" {
                Term::Tagged
            } else if lw == "has:attachment" || lw == "has:attachments" {
                Term::HasAttachment
            } else {
                Term::Word(lw)
            };
            // An empty value (`from:`) matches everything in Mailpit: skip it.
            let empty = matches!(&term, Term::From(v) | Term::To(v) | Term::Cc(v) | Term::ReplyTo(v)
                | Term::Addressed(v) | Term::Subject(v) | Term::MessageId(v) | Term::Tag(v)
                | Term::Word(v) if v.is_empty());
            if !empty {
                terms.push((exclude, term));
            }
        }
        Query { terms }
    }

    /// Whether `m` (with its plain-text body `text`) matches every term.
    pub fn matches(&self, m: &MessageSummary, text: &str) -> bool {
        self.terms
            .iter()
            .all(|(exclude, term)| term_matches(term, m, text) != *exclude)
    }
}

fn any_address(list: &[MailAddress], needle: &str) -> bool {
    list.iter().any(|a| {
        a.address.to_lowercase().contains(needle) || a.name.to_lowercase().contains(needle)
    })
}

fn term_matches(term: &Term, m: &MessageSummary, text: &str) -> bool {
    let from: Vec<MailAddress> = m.from.iter().cloned().collect();
    match term {
        Term::From(v) => any_address(&from, v),
        Term::To(v) => any_address(&m.to, v),
        Term::Cc(v) => any_address(&m.cc, v),
        Term::ReplyTo(v) => any_address(&m.reply_to, v),
        Term::Addressed(v) => [&from, &m.to, &m.cc, &m.bcc, &m.reply_to]
            .iter()
            .any(|l| any_address(l, v)),
        Term::Subject(v) => m.subject.to_lowercase().contains(v),
        Term::MessageId(v) => m.message_id.to_lowercase().contains(v),
        Term::Tag(v) => m.tags.iter().any(|t| t == v),
        Term::Read => m.read,
        Term::Unread => !m.read,
        Term::Tagged => !m.tags.is_empty(),
        Term::HasAttachment => m.attachments > 0,
        Term::Word(v) => {
            m.subject.to_lowercase().contains(v)
                || [&from, &m.to, &m.cc, &m.reply_to]
                    .iter()
                    .any(|l| any_address(l, v))
                || text.to_lowercase().contains(v)
                || m.id.contains(v.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> MessageSummary {
        MessageSummary {
            id: "0100-abc".into(),
            message_id: "0100-abc@email.amazonses.com".into(),
            read: false,
            from: Some(MailAddress {
                name: "Ann".into(),
                address: "ann@example.org".into(),
            }),
            to: vec![MailAddress {
                name: String::new(),
                address: "bob@example.net".into(),
            }],
            cc: Vec::new(),
            bcc: Vec::new(),
            reply_to: Vec::new(),
            subject: "Invoice 42".into(),
            created: String::new(),
            username: String::new(),
            tags: vec!["dkim-pass".into(), "dmarc-fail".into()],
            size: 1,
            attachments: 0,
            snippet: String::new(),
        }
    }

    #[test]
    fn terms() {
        let m = msg();
        let q = |s: &str| Query::parse(s).matches(&m, "the body text");
        assert!(q("from:example.org"));
        assert!(q("FROM:ANN"));
        assert!(!q("from:example.net"));
        assert!(q("to:bob"));
        assert!(q("subject:invoice"));
        assert!(q("subject:\"invoice 42\""));
        assert!(q("tag:dmarc-fail"));
        assert!(!q("tag:dmarc"));
        assert!(q("-tag:spf-fail"));
        assert!(!q("!tag:dkim-pass"));
        assert!(q("is:unread"));
        assert!(!q("is:read"));
        assert!(q("body"));
        assert!(q("invoice tag:dkim-pass to:example.net"));
        assert!(!q("invoice tag:spf-pass"));
        assert!(q("from:"));
    }
}
