//! Unit tests of the strict From reading: accepted forms, the issue 9 families refused, and
//! the domain spelling rule.

use super::*;

fn from(h: &str) -> Result<Author, FromError> {
    author(&Message::parse(format!("{h}\r\nTo: x@y\r\n\r\n").as_bytes()).unwrap())
}

fn refused(v: &str) -> AddressError {
    match author_of_value(v.as_bytes()) {
        Err(FromError::Syntax(e)) => e,
        other => panic!("{v:?} was not refused for syntax: {other:?}"),
    }
}

#[test]
fn display_names_and_quotes() {
    assert_eq!(
        from("From: App <app@Example.ORG>").unwrap().domain,
        "example.org"
    );
    assert_eq!(
        from("From: \"Doe, John\" <\"john doe\"@example.org>")
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
    assert_eq!(
        from("From: \"x@evil.example\" <a@example.org>")
            .unwrap()
            .domain,
        "example.org"
    );
    assert_eq!(
        from("From: App\r\n <app@example.org>\r\n").unwrap().domain,
        "example.org"
    );
    assert_eq!(from("From: <a@example.org>").unwrap().domain, "example.org");
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

/// The families from issue 9: each is read differently by some receiver.
#[test]
fn ambiguous_forms_are_refused() {
    use AddressError::*;
    assert_eq!(refused("x@evil.example@example.org"), SeveralAt);
    assert_eq!(
        refused("x@evil.example <a@example.org>"),
        UnquotedSpecial('@')
    );
    assert_eq!(refused("<x@evil.example> <a@example.org>"), TrailingText);
    assert_eq!(refused("u@example.org."), TrailingDot);
    assert_eq!(refused("App <u@example.org.>"), TrailingDot);
    assert_eq!(refused("a@example.org (comment)"), Comment);
    assert_eq!(refused("(c) a@example.org"), Comment);
    assert_eq!(refused("g: a@example.org;"), Group);
    assert_eq!(refused("a@[127.0.0.1]"), DomainLiteral);
    assert_eq!(refused("J. Doe <a@example.org>"), UnquotedSpecial('.'));
    assert_eq!(refused("a@example.org x"), TrailingText);
    assert_eq!(refused("<a@example.org> x"), TrailingText);
    assert_eq!(refused("< a@example.org>"), SpaceInAddress);
    assert_eq!(refused("a @example.org"), SpaceInAddress);
    assert_eq!(refused("a\u{1b}[31m <a@example.org>"), Control);
    assert_eq!(refused("a@example.org\r\nBcc: x@y"), BareLineBreak);
    assert_eq!(refused("a@\u{ff45}xample.org"), MappedDomain);
    assert_eq!(refused("a@example\u{3002}org"), MappedDomain);
    assert_eq!(refused("a@example\u{ff0e}org"), MappedDomain);
    assert_eq!(refused("a@example\u{ff61}org"), MappedDomain);
    assert_eq!(refused("a@B\u{dc}CHER.example"), MappedDomain);
    assert_eq!(refused("a@ex_ample.org"), BadDomain);
    assert_eq!(refused("j\u{f6}rg@example.org"), NonAsciiLocalPart);
    assert_eq!(refused("=?utf-8?q?a=40b?=<a@example.org>"), EncodedWord);
    assert_eq!(refused("=?utf-8?q?a?=b <a@example.org>"), EncodedWord);
    assert_eq!(refused("=?utf-8?q?a b?= <a@example.org>"), EncodedWord);
    assert_eq!(refused("=?utf-8?b?QUJ?= <a@example.org>"), EncodedWord);
    assert_eq!(refused("\"=?utf-8?q?a?=\" <a@example.org>"), EncodedWord);
    assert_eq!(refused("=?utf-8?q?x?=@example.org"), EncodedWord);
    assert_eq!(refused("<@route:a@example.org>"), BadLocalPart);
    assert_eq!(refused("a.@example.org"), BadLocalPart);
    assert_eq!(refused("\"unterminated <a@example.org>"), UnterminatedQuote);
    assert_eq!(refused("App <a@example.org"), Unclosed);
    assert_eq!(refused(""), Empty);
    assert_eq!(refused("a@example.org,"), EmptyListEntry);
    assert!(matches!(
        author_of_value(b"\xff@example.org"),
        Err(FromError::Syntax(NotUtf8))
    ));
}

#[test]
fn domains_compare_as_a_labels() {
    assert_eq!(
        receivers_domain("xn--bcher-kva.example").as_deref(),
        Ok("xn--bcher-kva.example")
    );
    assert_eq!(
        receivers_domain("Example.ORG").as_deref(),
        Ok("example.org")
    );
    assert_eq!(
        receivers_domain("\u{2603}.example"),
        Err(AddressError::BadDomain)
    );
}
