//! Addresses: the header From (which picks the signing domain, because DMARC aligns on it) and
//! domain names compared as lower-case A-labels (IDNA, RFC 5890) through the one normaliser,
//! [`crate::domain_name::normalize`].

use super::headers::Message;

/// The single author address of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub address: String,
    /// The A-label of the address's domain.
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
    #[error("the From header has no usable address")]
    Unreadable,
}

/// Finds the one address of the one From header (RFC 5322 §3.6.2, RFC 7489 §6.6.1).
/// Display names, comments, quoted local parts and encoded words are handled by mail-parser.
pub fn author(message: &Message) -> Result<Author, FromError> {
    let froms: Vec<_> = message.get("From").collect();
    let field = match froms.len() {
        0 => return Err(FromError::Missing),
        1 => froms[0],
        n => return Err(FromError::Several(n)),
    };
    let mut raw = field.raw.to_vec();
    raw.extend_from_slice(b"\r\n");
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(&raw)
        .ok_or(FromError::Unreadable)?;
    let from = parsed.from().ok_or(FromError::Unreadable)?;
    let addrs: Vec<_> = from.iter().collect();
    match addrs.len() {
        0 => return Err(FromError::Unreadable),
        1 => {}
        n => return Err(FromError::SeveralAddresses(n)),
    }
    let address = addrs[0]
        .address()
        .ok_or(FromError::Unreadable)?
        .trim()
        .to_string();
    let (_, domain) = address.rsplit_once('@').ok_or(FromError::Unreadable)?;
    let domain = crate::domain_name::normalize(domain).ok_or(FromError::Unreadable)?;
    Ok(Author { address, domain })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(h: &str) -> Result<Author, FromError> {
        author(&Message::parse(format!("{h}\r\nTo: x@y\r\n\r\n").as_bytes()).unwrap())
    }

    #[test]
    fn display_names_comments_and_quotes() {
        assert_eq!(
            from("From: App <app@Example.ORG>").unwrap().domain,
            "example.org"
        );
        assert_eq!(
            from("From: \"Doe, John\" (the boss) <\"john doe\"@example.org>")
                .unwrap()
                .domain,
            "example.org"
        );
        assert_eq!(from("FROM:app@example.org").unwrap().domain, "example.org");
        assert_eq!(
            from("From: =?utf-8?q?J=C3=B6rg?= <j@example.org>")
                .unwrap()
                .address,
            "j@example.org"
        );
        assert_eq!(
            from("From: x@b\u{fc}cher.example").unwrap().domain,
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            author(&Message::parse(b"To: x@y\r\n\r\n").unwrap()),
            Err(FromError::Missing)
        );
        assert_eq!(
            author(&Message::parse(b"From: a@b.c\r\nFrom: d@e.f\r\n\r\n").unwrap()),
            Err(FromError::Several(2))
        );
        assert_eq!(
            from("From: a@b.c, d@e.f"),
            Err(FromError::SeveralAddresses(2))
        );
        assert!(from("From: nobody").is_err());
        assert!(from("From: undisclosed:;").is_err());
    }

    #[test]
    fn domains_compare_as_a_labels() {
        assert_eq!(
            crate::domain_name::normalize("Example.ORG.").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            crate::domain_name::normalize("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(crate::domain_name::normalize("bad domain"), None);
        assert_eq!(crate::domain_name::normalize(""), None);
    }
}
