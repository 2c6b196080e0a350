//! Addresses: the header From (which picks the signing domain, because DMARC aligns on it), the
//! other author fields a tenant is bound by (Sender, Resent-From, Resent-Sender), and domain
//! names compared as lower-case A-labels (IDNA, RFC 5890) through the one normaliser,
//! [`crate::domain_name::normalize`].
//!
//! One meaning for From (issue 9): the relay signs for the From domain, and a receiver applies
//! DMARC to the From domain *it* reads. If the two parsers could disagree, the relay would sign
//! mail that a receiver attributes to someone else. So the relay accepts only the part of
//! RFC 5322 §3.4 whose parse is unambiguous, and refuses everything else (`550 5.6.0`):
//!
//! - a mailbox list of plain mailboxes: `addr-spec` or `[display-name] <addr-spec>`; no group
//!   syntax (`:` `;`), no comments (`(` `)`), no domain literals (`[` `]`), no obsolete forms
//!   (RFC 5322 §4: no `obs-phrase` dots, no `obs-local-part`, no routes, no CFWS inside the
//!   addr-spec);
//! - a display name is words only (atoms, which include RFC 2047 encoded-words, and
//!   quoted-strings): an `@`, `.` or `<` in it must be quoted; nothing may follow `>`;
//! - a bare addr-spec has no white space inside and exactly one `@`; a second `@`, a trailing
//!   dot or any text after it is refused;
//! - no control characters (C0 except folding white space, DEL, C1), valid UTF-8 only
//!   (RFC 6532 allows UTF-8 in atoms and quoted-strings);
//! - the domain is written as receivers compare it: ASCII letter-digit-hyphen labels (A-labels
//!   included), or U-labels of letters and digits that IDNA maps to nothing but their own lower-
//!   case A-label. A spelling that UTS #46 would *map* (full-width letters, upper-case non-ASCII,
//!   the ideographic full stops U+3002, U+FF0E, U+FF61) is refused: such a look-alike is not
//!   the configured name to a strict receiver, and is to a lenient one.
//!
//! Why this subset: Python's `email.headerregistry` (a strict parser) reads every value accepted
//! here as one mailbox with the same domain; the differential suite (`tests/it/from_policy.rs`)
//! checks that on generated and collected hostile values.

use super::headers::Message;

/// The single author address of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// `local@domain`, the domain as written.
    pub address: String,
    /// The A-label of the address's domain.
    pub domain: String,
}

/// One mailbox of an address field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part as written (quoted-strings keep their quotes).
    pub local: String,
    /// The domain as written in the field.
    pub written_domain: String,
    /// The lower-case A-label of the domain.
    pub domain: String,
}

/// Why no signing domain can be chosen (DMARC could not evaluate such a message either).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromError {
    #[error("the message has no From header")]
    Missing,
    #[error("the message has {0} From headers")]
    Several(usize),
    #[error("the From header has {0} addresses")]
    SeveralAddresses(usize),
    #[error("the From header is refused: {0}")]
    Syntax(AddressError),
}

/// Why an address field is not one this relay reads the same way as every receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("it is not valid UTF-8")]
    NotUtf8,
    #[error("it contains a control character")]
    Control,
    #[error("it contains a CR or LF that is not folding white space")]
    BareLineBreak,
    #[error("it has no address")]
    Empty,
    #[error("comments in parentheses are not accepted")]
    Comment,
    #[error("group syntax (`:` and `;`) is not accepted")]
    Group,
    #[error("domain literals in brackets are not accepted")]
    DomainLiteral,
    #[error("a `{0}` in the display name must be quoted")]
    UnquotedSpecial(char),
    #[error("a backslash outside a quoted string is not accepted")]
    Backslash,
    #[error("a quoted string is not terminated")]
    UnterminatedQuote,
    #[error("a quoted string contains a character it may not")]
    BadQuotedChar,
    #[error("the address has no `@`")]
    NoAt,
    #[error("the address has more than one `@`")]
    SeveralAt,
    #[error("the address has an empty or invalid local part")]
    BadLocalPart,
    #[error("a non-ASCII local part needs SMTPUTF8, which the relay does not offer")]
    NonAsciiLocalPart,
    #[error(
        "an encoded-word in the display name is malformed, not set off by white space, or \
         inside quotes (RFC 2047)"
    )]
    EncodedWord,
    #[error("the domain is missing or not a host name")]
    BadDomain,
    #[error("the domain ends with a dot")]
    TrailingDot,
    #[error("white space inside an address is not accepted")]
    SpaceInAddress,
    #[error("there is text after the address")]
    TrailingText,
    #[error("an empty entry in the address list")]
    EmptyListEntry,
    #[error("`<` without a matching `>`")]
    Unclosed,
    #[error(
        "the domain is not written as receivers compare it (IDNA would map it to another \
         spelling: full-width or upper-case letters, ideographic full stops)"
    )]
    MappedDomain,
}

/// Finds the one address of the one From header (RFC 5322 §3.6.2, RFC 7489 §6.6.1) under the
/// strict reading described in the module documentation.
pub fn author(message: &Message) -> Result<Author, FromError> {
    let froms: Vec<_> = message.get("From").collect();
    let field = match froms.len() {
        0 => return Err(FromError::Missing),
        1 => froms[0],
        n => return Err(FromError::Several(n)),
    };
    author_of_value(field.value())
}

/// The author from the raw value of a From field (the bytes after the colon, folding kept).
pub fn author_of_value(value: &[u8]) -> Result<Author, FromError> {
    let list = mailbox_list(value).map_err(FromError::Syntax)?;
    match list.as_slice() {
        [one] => Ok(Author {
            address: format!("{}@{}", one.local, one.written_domain),
            domain: one.domain.clone(),
        }),
        many => Err(FromError::SeveralAddresses(many.len())),
    }
}

/// Parses an address field value (`mailbox-list`, RFC 5322 §3.4) strictly: see the module
/// documentation for what is refused.
pub fn mailbox_list(value: &[u8]) -> Result<Vec<Mailbox>, AddressError> {
    let text = std::str::from_utf8(value).map_err(|_| AddressError::NotUtf8)?;
    let chars = unfold(text)?;
    let mut p = Parser { s: &chars, i: 0 };
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if p.at_end() {
            return Err(if out.is_empty() {
                AddressError::Empty
            } else {
                AddressError::EmptyListEntry
            });
        }
        if p.peek() == Some(',') {
            return Err(AddressError::EmptyListEntry);
        }
        out.push(p.mailbox()?);
        p.skip_ws();
        match p.peek() {
            None => return Ok(out),
            Some(',') => p.i += 1,
            Some(_) => return Err(AddressError::TrailingText),
        }
    }
}

/// Removes folding (CRLF before white space); refuses any other CR, LF or control character.
fn unfold(text: &str) -> Result<Vec<char>, AddressError> {
    let mut out = Vec::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\r' => {
                if it.next() != Some('\n') || !matches!(it.peek(), Some(' ' | '\t')) {
                    return Err(AddressError::BareLineBreak);
                }
            }
            '\n' => return Err(AddressError::BareLineBreak),
            '\t' | ' ' => out.push(c),
            c if c.is_control() => return Err(AddressError::Control),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// RFC 5322 `atext`, extended by RFC 6532 to non-ASCII characters.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (!c.is_ascii())
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.i += 1;
        }
    }

    /// A character that is never allowed outside a quoted string in the forms accepted here.
    fn refuse_special(c: char) -> Result<(), AddressError> {
        match c {
            '(' | ')' => Err(AddressError::Comment),
            ':' | ';' => Err(AddressError::Group),
            '[' | ']' => Err(AddressError::DomainLiteral),
            '\\' => Err(AddressError::Backslash),
            _ => Ok(()),
        }
    }

    /// Whether a `<` starts an angle-addr in this list entry (outside quoted strings).
    fn angle_ahead(&self) -> Result<bool, AddressError> {
        let mut quoted = false;
        let mut j = self.i;
        while let Some(&c) = self.s.get(j) {
            if quoted {
                match c {
                    '\\' => j += 1,
                    '"' => quoted = false,
                    _ => {}
                }
            } else {
                match c {
                    '"' => quoted = true,
                    '<' => return Ok(true),
                    ',' => return Ok(false),
                    _ => {}
                }
            }
            j += 1;
        }
        Ok(false)
    }

    fn mailbox(&mut self) -> Result<Mailbox, AddressError> {
        if self.angle_ahead()? {
            self.display_name()?;
            // display_name stops at '<'.
            self.i += 1;
            let mailbox = self.addr_spec()?;
            match self.peek() {
                Some('>') => self.i += 1,
                Some(' ' | '\t') => return Err(AddressError::SpaceInAddress),
                Some('@') => return Err(AddressError::SeveralAt),
                None => return Err(AddressError::Unclosed),
                Some(c) => {
                    Self::refuse_special(c)?;
                    return Err(AddressError::TrailingText);
                }
            }
            self.skip_ws();
            match self.peek() {
                None | Some(',') => Ok(mailbox),
                Some(c) => {
                    Self::refuse_special(c)?;
                    Err(AddressError::TrailingText)
                }
            }
        } else {
            let mailbox = self.addr_spec()?;
            match self.peek() {
                None | Some(',') => Ok(mailbox),
                Some(' ' | '\t') => {
                    self.skip_ws();
                    match self.peek() {
                        None | Some(',') => Ok(mailbox),
                        Some(c) => {
                            Self::refuse_special(c)?;
                            Err(AddressError::TrailingText)
                        }
                    }
                }
                Some('@') => Err(AddressError::SeveralAt),
                Some('>') => Err(AddressError::TrailingText),
                Some(c) => {
                    Self::refuse_special(c)?;
                    Err(AddressError::TrailingText)
                }
            }
        }
    }

    /// `phrase` without obsolete forms: words (atoms and quoted-strings) and white space, up
    /// to the `<`. May be empty.
    fn display_name(&mut self) -> Result<(), AddressError> {
        loop {
            match self.peek() {
                Some('<') => return Ok(()),
                Some(' ' | '\t') => self.i += 1,
                Some('"') => {
                    let start = self.i;
                    self.quoted_string()?;
                    if self.s[start..self.i].windows(2).any(|w| w == ['=', '?']) {
                        return Err(AddressError::EncodedWord);
                    }
                }
                Some(c) if is_atext(c) => {
                    let start = self.i;
                    while self.peek().is_some_and(is_atext) {
                        self.i += 1;
                    }
                    let atom: String = self.s[start..self.i].iter().collect();
                    if atom.contains("=?") {
                        // An encoded-word (RFC 2047 §5(3)): whole, well formed, and set off by
                        // white space, or decoders disagree on the display name.
                        let before = start.checked_sub(1).map(|j| self.s[j]);
                        let spaced_before = before.is_none_or(|c| c == ' ' || c == '\t');
                        let spaced_after = matches!(self.peek(), Some(' ' | '\t'));
                        if !spaced_before || !spaced_after || !encoded_word(&atom) {
                            return Err(AddressError::EncodedWord);
                        }
                    }
                }
                Some(c @ ('@' | '.' | '>' | ',')) => return Err(AddressError::UnquotedSpecial(c)),
                Some(c) => {
                    Self::refuse_special(c)?;
                    return Err(AddressError::UnquotedSpecial(c));
                }
                None => return Err(AddressError::Unclosed),
            }
        }
    }

    /// A quoted-string starting at `"`; the cursor ends after the closing quote.
    fn quoted_string(&mut self) -> Result<(), AddressError> {
        self.i += 1;
        loop {
            match self.peek() {
                None => return Err(AddressError::UnterminatedQuote),
                Some('"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some('\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c) if c == ' ' || c == '\t' || c.is_ascii_graphic() => self.i += 1,
                        Some(c) if !c.is_ascii() => self.i += 1,
                        _ => return Err(AddressError::BadQuotedChar),
                    }
                }
                Some(c) if c == ' ' || c == '\t' || c.is_ascii_graphic() || !c.is_ascii() => {
                    self.i += 1
                }
                Some(_) => return Err(AddressError::BadQuotedChar),
            }
        }
    }

    /// `dot-atom-text`; the cursor ends after it. Refuses a leading, doubled or trailing dot.
    fn dot_atom_text(&mut self) -> Result<String, ()> {
        let start = self.i;
        loop {
            let label_start = self.i;
            while self.peek().is_some_and(is_atext) {
                self.i += 1;
            }
            if self.i == label_start {
                return Err(());
            }
            if self.peek() == Some('.') {
                self.i += 1;
            } else {
                return Ok(self.s[start..self.i].iter().collect());
            }
        }
    }

    /// `local-part "@" domain` with no white space or comments inside.
    fn addr_spec(&mut self) -> Result<Mailbox, AddressError> {
        let local = match self.peek() {
            Some('"') => {
                let start = self.i;
                self.quoted_string()?;
                self.s[start..self.i].iter().collect()
            }
            Some(c) if is_atext(c) => self
                .dot_atom_text()
                .map_err(|()| AddressError::BadLocalPart)?,
            Some('<') => return Err(AddressError::UnquotedSpecial('<')),
            Some(' ' | '\t') => return Err(AddressError::SpaceInAddress),
            Some(c) => {
                Self::refuse_special(c)?;
                return Err(AddressError::BadLocalPart);
            }
            None => return Err(AddressError::Empty),
        };
        if !local.is_ascii() {
            return Err(AddressError::NonAsciiLocalPart);
        }
        if local.contains("=?") {
            return Err(AddressError::EncodedWord);
        }
        match self.peek() {
            Some('@') => self.i += 1,
            Some(' ' | '\t') => return Err(AddressError::SpaceInAddress),
            Some(c) => {
                Self::refuse_special(c)?;
                return Err(AddressError::NoAt);
            }
            None => return Err(AddressError::NoAt),
        }
        match self.peek() {
            Some('[') => return Err(AddressError::DomainLiteral),
            Some(' ' | '\t') => return Err(AddressError::SpaceInAddress),
            Some(c) if is_atext(c) => {}
            Some(c) => {
                Self::refuse_special(c)?;
                return Err(AddressError::BadDomain);
            }
            None => return Err(AddressError::BadDomain),
        }
        let written = self.dot_atom_text().map_err(|()| {
            if self.peek() == Some('.') {
                AddressError::BadDomain
            } else {
                AddressError::TrailingDot
            }
        })?;
        let domain = receivers_domain(&written)?;
        Ok(Mailbox {
            local,
            written_domain: written,
            domain,
        })
    }
}

/// Whether `atom` is one well-formed RFC 2047 encoded-word as a phrase may hold it:
/// `=?charset?Q|B?text?=`, Q text only of the characters §5(3) allows there (letters, digits,
/// `!*+-/=_`, `=` starting two hex digits), B text valid padded base64.
fn encoded_word(atom: &str) -> bool {
    let Some(inner) = atom.strip_prefix("=?").and_then(|a| a.strip_suffix("?=")) else {
        return false;
    };
    let parts: Vec<&str> = inner.split('?').collect();
    let [charset, encoding, text] = parts.as_slice() else {
        return false;
    };
    if charset.is_empty()
        || !charset
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_*".contains(&b))
        || text.is_empty()
    {
        return false;
    }
    match *encoding {
        "q" | "Q" => {
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'=' {
                    let hex = |j: usize| b.get(j).is_some_and(|c| c.is_ascii_hexdigit());
                    if !(hex(i + 1) && hex(i + 2)) {
                        return false;
                    }
                    i += 3;
                } else if b[i].is_ascii_alphanumeric() || b"!*+-/_".contains(&b[i]) {
                    i += 1;
                } else {
                    return false;
                }
            }
            true
        }
        "b" | "B" => {
            use base64::Engine;
            text.len() % 4 == 0
                && base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_ok()
        }
        _ => false,
    }
}

/// The A-label of a domain written as receivers compare it, or why it is not (see the module
/// documentation).
pub fn receivers_domain(written: &str) -> Result<String, AddressError> {
    let a_label = crate::domain_name::normalize(written).ok_or(AddressError::BadDomain)?;
    if !written.is_ascii() {
        // A U-label must be the IDNA form of its own A-label, letter for letter (only ASCII
        // case may differ): anything UTS #46 mapped is a look-alike.
        let (unicode, result) = idna::domain_to_unicode(&a_label);
        if result.is_err() || unicode != written.to_ascii_lowercase() {
            return Err(AddressError::MappedDomain);
        }
    }
    // Host-name labels: letters, digits and inner hyphens (IDNA 2008 admits no symbols).
    let labels_ok = written.split('.').all(|l| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c == '-' || c.is_alphanumeric())
    });
    if !labels_ok {
        return Err(AddressError::BadDomain);
    }
    Ok(a_label)
}

#[cfg(test)]
mod tests;
