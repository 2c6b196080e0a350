//! Domain names as the relay compares them: one normaliser and one parent walk.
//!
//! A leaf with no crate-internal dependencies. Every domain the relay compares — the header-From
//! domain that picks the DKIM key (DMARC aligns on it), configured `[domains]` keys, a user's
//! allowed domains, the simulator's identities — goes through [`normalize`], so two spellings of
//! one name (case, a trailing dot, U-label vs A-label) never compare different (RFC 5890: a
//! name is compared as its lower-case A-label).
//!
//! [`normalize`] trims surrounding white space and at most ONE trailing dot (the root), lower-
//! cases and converts to the A-label with IDNA (UTS #46). It refuses (returns `None`):
//! the empty name, a name longer than 253 octets, a second trailing dot (`example.org..`),
//! empty labels, labels over 63 octets, labels that begin or end with `-`, and any octet other
//! than letters, digits and `-` after conversion (no `_`, no white space): a sending domain is a
//! host name.
//!
//! [`parents`] is the one walk from a name up through its parents (`a.b.example` →
//! `b.example` → `example`), used wherever "this domain or a parent with `subdomains = true`"
//! is decided.

/// A domain as a lower-case A-label without a trailing dot, or `None` if it is not a domain.
pub fn normalize(domain: &str) -> Option<String> {
    let d = domain.trim();
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() || d.len() > 253 {
        return None;
    }
    let ascii = idna::domain_to_ascii(d).ok()?;
    let ok = ascii.len() <= 253
        && ascii.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(ascii)
}

/// A DNS owner name as it is looked up and compared: trimmed, without the root dot, ASCII
/// lower case. Unlike [`normalize`] it refuses nothing and does no IDNA: owner names such as
/// `_dmarc.example.org` or `s1._domainkey.example.org` are not host names, and what is looked
/// up was normalised when it entered the configuration.
pub fn dns_name(name: &str) -> String {
    let n = name.trim();
    n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase()
}

/// The name itself, then each parent up to the last label: `a.b.c` → `a.b.c`, `b.c`, `c`.
/// Works on the text as given (normalise first).
pub fn parents(name: &str) -> impl Iterator<Item = &str> {
    let first = (!name.is_empty()).then_some(name);
    std::iter::successors(first, |n| n.split_once('.').map(|(_, rest)| rest))
}

/// Whether `name` is `domain` or, when `subdomains` is set, one of its subdomains. Both are
/// compared as given (normalise first).
pub fn covers(domain: &str, subdomains: bool, name: &str) -> bool {
    parents(name)
        .enumerate()
        .any(|(i, p)| p == domain && (i == 0 || subdomains))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_a_labels() {
        assert_eq!(normalize("Example.ORG.").as_deref(), Some("example.org"));
        assert_eq!(normalize(" example.org ").as_deref(), Some("example.org"));
        assert_eq!(
            normalize("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(
            normalize("xn--bcher-kva.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            ".",
            "bad domain",
            "example.org..",
            "a..b",
            "-a.example",
            "a-.example",
            "under_score.example",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}a", "a.".repeat(127)),
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dns_names_keep_underscores() {
        assert_eq!(dns_name(" _DMARC.Example.ORG. "), "_dmarc.example.org");
        assert_eq!(
            dns_name("s1._domainkey.example.org"),
            "s1._domainkey.example.org"
        );
    }

    #[test]
    fn parent_walk() {
        let all: Vec<&str> = parents("a.b.example").collect();
        assert_eq!(all, ["a.b.example", "b.example", "example"]);
        assert_eq!(parents("").count(), 0);
        assert_eq!(parents("example").collect::<Vec<_>>(), ["example"]);
    }

    #[test]
    fn coverage() {
        assert!(covers("example.org", false, "example.org"));
        assert!(!covers("example.org", false, "a.example.org"));
        assert!(covers("example.org", true, "a.b.example.org"));
        assert!(!covers("example.org", true, "badexample.org"));
        assert!(!covers("example.org", true, "org"));
    }
}
