//! Zone-file fragments (RFC 1035 master format): writing the records to publish, and reading
//! hand-edited fragments back.
//!
//! The parser exists so `dkim-relay` (and the simulator's `zone_file`) can check hand-edited
//! zone fragments and round-trip its own output. It models TXT and MX only (what a sending
//! domain publishes), skips other common types so a whole zone can be fed in, and names the
//! line of anything it cannot read.

use super::records::{DEFAULT_TTL, Record, RecordData};
use super::text::{Tok, rdata_text, tokenize};
use crate::domain_name::dns_name;

/// A zone-file fragment (RFC 1035 master format): absolute names, TTL 3600, class IN, long TXT
/// values split into quoted strings, the record's comment after `;`.
pub fn format_zone(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&format!(
            "{}. {DEFAULT_TTL} IN {} {}",
            dns_name(&r.name),
            r.data.rtype(),
            rdata_text(&r.data)
        ));
        if let Some(c) = &r.comment {
            // A newline inside a comment would start a new (garbage) record line.
            out.push_str(" ; ");
            out.push_str(&c.replace(['\r', '\n'], " "));
        }
        out.push('\n');
    }
    out
}

/// A zone-file parse error, naming the (1-based) line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ZoneError {
    pub line: usize,
    pub message: String,
}

/// Record types we recognise but do not model; parse_zone skips them so a whole zone can be
/// fed in.
const SKIPPED_TYPES: &[&str] = &[
    "A", "AAAA", "CNAME", "NS", "SOA", "CAA", "SRV", "PTR", "DS", "DNSKEY", "HTTPS", "SVCB",
    "TLSA", "SSHFP", "NAPTR", "SPF", "ALIAS",
];

fn is_ttl(w: &str) -> bool {
    // Plain seconds or BIND units (1h, 1d2h, 30m, 1w).
    !w.is_empty()
        && w.as_bytes()[0].is_ascii_digit()
        && w.chars().all(|c| {
            c.is_ascii_digit() || matches!(c.to_ascii_lowercase(), 's' | 'm' | 'h' | 'd' | 'w')
        })
}

fn is_class(w: &str) -> bool {
    matches!(w.to_ascii_uppercase().as_str(), "IN" | "CH" | "HS" | "CS")
}

/// Makes `name` absolute: `@` is the origin, names ending in `.` are absolute, others are
/// relative to `$ORIGIN` if one was set and taken as already fully qualified otherwise (the
/// usual way people write records in docs and registrar forms).
fn qualify(name: &str, origin: Option<&str>) -> String {
    if name == "@" {
        return origin.unwrap_or_default().to_string();
    }
    if name.ends_with('.') {
        return dns_name(name);
    }
    match origin {
        Some(o) if !o.is_empty() => format!("{}.{o}", dns_name(name)),
        _ => dns_name(name),
    }
}

/// Parses a zone-file fragment: what [`format_zone`] prints and ordinary hand-written lines
/// (`;` comments, optional TTL and class in either order, several quoted strings concatenated,
/// parentheses across lines, `$ORIGIN`, `$TTL`, owner-less continuation lines, `@`). TXT and
/// MX records are returned; other common types are skipped; anything else is an error naming
/// its line. A trailing comment on a record line becomes the record's comment.
pub fn parse_zone(text: &str) -> Result<Vec<Record>, ZoneError> {
    let mut out = Vec::new();
    let mut origin: Option<String> = None;
    let mut last_owner: Option<String> = None;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((idx, first)) = lines.next() {
        let line_no = idx + 1;
        let err = |message: String| ZoneError {
            line: line_no,
            message,
        };
        // Parenthesised records continue over several physical lines; each physical line
        // has its own `;` comment, so tokenize them one by one and concatenate.
        let mut depth = paren_depth(first);
        let mut physical = vec![first];
        while depth > 0 {
            match lines.next() {
                Some((_, next)) => {
                    depth += paren_depth(next);
                    physical.push(next);
                }
                None => return Err(err("unbalanced '(' at end of input".into())),
            }
        }
        let mut toks = Vec::new();
        let mut comments = Vec::new();
        for part in physical {
            let (t, c) = tokenize(part).map_err(&err)?;
            toks.extend(t);
            comments.extend(c);
        }
        if toks.is_empty() {
            continue;
        }
        let starts_blank = first.starts_with([' ', '\t']);
        let mut it = toks.into_iter().peekable();

        // Directives.
        if let Some(Tok::Word(w)) = it.peek()
            && w.starts_with('$')
        {
            let directive = w.to_ascii_uppercase();
            it.next();
            match directive.as_str() {
                "$ORIGIN" => match it.next() {
                    Some(Tok::Word(o)) => origin = Some(dns_name(&qualify(&o, origin.as_deref()))),
                    _ => return Err(err("$ORIGIN needs a domain name".into())),
                },
                "$TTL" => {}
                other => return Err(err(format!("unsupported directive {other}"))),
            }
            continue;
        }

        let owner = if starts_blank {
            last_owner.clone().ok_or_else(|| {
                err("record line starts with whitespace but no owner name precedes it".into())
            })?
        } else {
            match it.next() {
                Some(Tok::Word(n)) => qualify(&n, origin.as_deref()),
                _ => return Err(err("expected an owner name".into())),
            }
        };
        if owner.is_empty() {
            return Err(err("empty owner name ('@' without $ORIGIN?)".into()));
        }
        last_owner = Some(owner.clone());

        // Optional TTL and class, either order.
        let mut rtype = None;
        for tok in it.by_ref() {
            match tok {
                Tok::Word(w) if is_ttl(&w) || is_class(&w) => continue,
                Tok::Word(w) => {
                    rtype = Some(w.to_ascii_uppercase());
                    break;
                }
                Tok::Quoted(_) => {
                    return Err(err("expected a record type before the quoted string".into()));
                }
            }
        }
        let rtype = rtype.ok_or_else(|| err("missing record type".into()))?;
        let rest: Vec<Tok> = it.collect();
        let data = match rtype.as_str() {
            "TXT" => {
                if rest.is_empty() {
                    return Err(err("TXT record without a value".into()));
                }
                let mut value = String::new();
                for t in rest {
                    match t {
                        Tok::Quoted(s) | Tok::Word(s) => value.push_str(&s),
                    }
                }
                RecordData::Txt(value)
            }
            "MX" => {
                let mut rest = rest.into_iter();
                let preference = match rest.next() {
                    Some(Tok::Word(p)) => p
                        .parse::<u16>()
                        .map_err(|_| err(format!("MX preference '{p}' is not a number 0-65535")))?,
                    _ => return Err(err("MX record needs a preference and an exchange".into())),
                };
                let exchange = match rest.next() {
                    Some(Tok::Word(e)) => qualify(&e, origin.as_deref()),
                    _ => {
                        return Err(err(
                            "MX record needs an exchange host after the preference".into()
                        ));
                    }
                };
                if rest.next().is_some() {
                    return Err(err("unexpected text after the MX exchange".into()));
                }
                RecordData::Mx {
                    preference,
                    exchange,
                }
            }
            t if SKIPPED_TYPES.contains(&t) => continue,
            t => return Err(err(format!("unknown record type or token '{t}'"))),
        };
        out.push(Record {
            name: owner,
            data,
            comment: if comments.is_empty() {
                None
            } else {
                Some(comments.join(" "))
            },
        });
    }
    Ok(out)
}

/// Net count of unquoted '(' minus ')' outside comments.
fn paren_depth(s: &str) -> i32 {
    let mut depth = 0;
    let mut in_quote = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            ';' if !in_quote => break,
            '(' if !in_quote => depth += 1,
            ')' if !in_quote => depth -= 1,
            _ => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::SES_MAIL_FROM_SPF;
    use crate::dns::domain_records;
    use crate::dns::records::tests::sample_input;

    #[test]
    fn zone_round_trip() {
        let mut recs = domain_records(&sample_input(2048));
        // Exercise escaping of quotes, backslashes and semicolons inside values.
        recs.push(Record {
            name: "odd.example.org".into(),
            data: RecordData::Txt(r#"say "hi"; path\to ; done"#.into()),
            comment: Some("weird; comment".into()),
        });
        let zone = format_zone(&recs);
        assert!(zone.contains("s2026a._domainkey.example.org. 3600 IN TXT \"v=DKIM1; k=rsa; p="));
        assert!(
            zone.contains(
                "mail.example.org. 3600 IN MX 10 feedback-smtp.us-east-1.amazonses.com. ;"
            )
        );
        assert!(zone.contains(r#""say \"hi\"; path\\to ; done""#));
        assert_eq!(parse_zone(&zone).unwrap(), recs);
    }

    #[test]
    fn parses_hand_written_zone() {
        let text = r#"
; records from the docs, written by hand
$ORIGIN example.org.
$TTL 1h
s2026a._domainkey.example.org  TXT  "v=DKIM1; k=rsa; " "p=MIIBIjANBgkq"   ; our selector(s)
mail                 IN 300 MX   10 feedback-smtp.us-east-1.amazonses.com.
                     TXT "v=spf1 include:amazonses.com ~all"
_dmarc 600 IN TXT ( "v=DMARC1; p=none; "
                    "rua=mailto:dmarc@example.org" )  ; start monitoring
@ IN A 192.0.2.1
www CNAME example.org.
"#;
        let recs = parse_zone(text).unwrap();
        assert_eq!(
            recs,
            vec![
                Record {
                    // A dotless name with $ORIGIN set is relative, so the origin is appended.
                    name: "s2026a._domainkey.example.org.example.org".into(),
                    data: RecordData::Txt("v=DKIM1; k=rsa; p=MIIBIjANBgkq".into()),
                    comment: Some("our selector(s)".into()),
                },
                Record {
                    name: "mail.example.org".into(),
                    data: RecordData::Mx {
                        preference: 10,
                        exchange: "feedback-smtp.us-east-1.amazonses.com".into()
                    },
                    comment: None,
                },
                Record {
                    name: "mail.example.org".into(),
                    data: RecordData::Txt(SES_MAIL_FROM_SPF.into()),
                    comment: None,
                },
                Record {
                    name: "_dmarc.example.org".into(),
                    data: RecordData::Txt("v=DMARC1; p=none; rua=mailto:dmarc@example.org".into()),
                    comment: Some("start monitoring".into()),
                },
            ]
        );
        // Without $ORIGIN, dotless names are taken as fully qualified (docs style).
        let recs = parse_zone(
            "s2026a._domainkey.Example.org  TXT  \"v=DKIM1; k=ed25519; p=AAAA\"\n\
             _dmarc.example.org TXT \"v=DMARC1;\" \" p=none\"\n",
        )
        .unwrap();
        assert_eq!(recs[0].name, "s2026a._domainkey.example.org");
        assert_eq!(recs[1].data, RecordData::Txt("v=DMARC1; p=none".into()));
        // \DDD escapes.
        let recs = parse_zone("a.example. TXT \"x\\059y\"\n").unwrap();
        assert_eq!(recs[0].data, RecordData::Txt("x;y".into()));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "ok.example. TXT \"fine\"\nbad.example. TXT \"unterminated\n",
                2,
                "unterminated",
            ),
            ("\n\nx.example. MX ten host.example.\n", 3, "preference"),
            ("x.example. MX 10\n", 1, "exchange"),
            ("x.example. TXT\n", 1, "without a value"),
            ("x.example. 3600 IN\n", 1, "missing record type"),
            ("a.example. TXT \"a\"\nb.example. BOGUS foo\n", 2, "BOGUS"),
            ("  TXT \"orphan\"\n", 1, "owner"),
            ("x.example. TXT ( \"a\"\n\"b\"\n", 1, "unbalanced"),
            ("$INCLUDE other.zone\n", 1, "directive"),
        ];
        for (text, line, needle) in cases {
            let err = parse_zone(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?} → {err}");
            assert!(
                err.to_string().starts_with(&format!("line {line}: ")),
                "{err}"
            );
            assert!(err.message.contains(needle), "{text:?} → {err}");
        }
    }
}
