//! TXT and MX data as DNS presentation text: splitting TXT values into character-strings,
//! quoting and escaping them, and the lexer that reads them back.
//!
//! Zone files and Route 53 change batches write record data the same way (RFC 1035 §5.1:
//! quoted character-strings with `\"`, `\\` and `\DDD` escapes; a TXT value longer than 255
//! bytes is several strings, RFC 1035 §3.3 / RFC 6376 §3.6.2.2, which verifiers concatenate), so
//! both share this one writer and one lexer instead of each escaping on its own.

use super::records::{MAX_TXT_CHUNK, RecordData};
use crate::domain_name::dns_name;

/// Splits a TXT value into character-strings of at most 255 bytes, never inside a UTF-8
/// sequence. An empty value is one empty string (a TXT record needs at least one).
pub fn split_txt(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_TXT_CHUNK);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        out.push(chunk.to_string());
        rest = tail;
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// Quotes one character-string for zone files / Route 53 (RFC 1035 §5.1 escapes).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Control characters would break the line-oriented format; use \DDD.
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `"chunk1" "chunk2"` for a TXT value.
fn quoted_chunks(value: &str) -> String {
    split_txt(value)
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn rdata_text(data: &RecordData) -> String {
    match data {
        RecordData::Txt(v) => quoted_chunks(v),
        RecordData::Mx {
            preference,
            exchange,
        } => format!("{preference} {}.", dns_name(exchange)),
    }
}

/// One lexical token of a zone line.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Quoted(String),
}

/// Splits master-file text into tokens, handling quotes, `\X` / `\DDD` escapes inside quotes,
/// and `;` comments. Returns (tokens, comment text).
pub(super) fn tokenize(line: &str) -> Result<(Vec<Tok>, Option<String>), String> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    let mut comment = None;
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == ';' {
            chars.next();
            let text: String = chars.by_ref().collect();
            let text = text.trim();
            if !text.is_empty() {
                comment = Some(text.to_string());
            }
        } else if c == '"' {
            chars.next();
            let mut bytes: Vec<u8> = Vec::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some(d) if d.is_ascii_digit() => {
                            let mut digits = String::from(d);
                            for _ in 0..2 {
                                match chars.next() {
                                    Some(d) if d.is_ascii_digit() => digits.push(d),
                                    _ => return Err("\\DDD escape needs three digits".into()),
                                }
                            }
                            let v: u32 = digits.parse().map_err(|_| "bad \\DDD escape")?;
                            let b = u8::try_from(v)
                                .map_err(|_| format!("\\{digits} is not a byte value"))?;
                            bytes.push(b);
                        }
                        Some(e) => {
                            let mut buf = [0u8; 4];
                            bytes.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
                        }
                        None => return Err("line ends inside an escape".into()),
                    },
                    c => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            if !closed {
                return Err("unterminated quoted string".into());
            }
            let s = String::from_utf8(bytes).map_err(|_| "TXT string is not valid UTF-8")?;
            toks.push(Tok::Quoted(s));
        } else if c == '(' || c == ')' {
            // Parentheses only group lines; the caller joins the lines first.
            chars.next();
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ';' || c == '"' || c == '(' || c == ')' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            toks.push(Tok::Word(w));
        }
    }
    Ok((toks, comment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::Algorithm;
    use crate::dkim::keygen::dkim_txt_value;
    use crate::dns::{Record, format_route53, format_zone, parse_route53, parse_zone};

    #[test]
    fn split_txt_chunks() {
        assert_eq!(split_txt(""), vec![String::new()]);
        assert_eq!(split_txt("abc"), vec!["abc".to_string()]);
        let long = "x".repeat(600);
        let parts = split_txt(&long);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        // Multi-byte characters are never cut in half.
        let utf = "é".repeat(200); // 400 bytes
        let parts = split_txt(&utf);
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts.concat(), utf);
    }

    #[test]
    fn rsa_4096_record_splits_and_rejoins() {
        let key = crate::dkim::keygen::generate(Algorithm::RsaSha256, 4096).unwrap();
        let value = dkim_txt_value(Algorithm::RsaSha256, &key.public_key);
        assert!(value.len() > 255 * 2);
        let parts = split_txt(&value);
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| p.len() <= 255 && !p.is_empty()));
        assert_eq!(parts.concat(), value);
        let rec = Record {
            name: "big._domainkey.example.org".into(),
            data: RecordData::Txt(value.clone()),
            comment: None,
        };
        let zone = format_zone(std::slice::from_ref(&rec));
        assert_eq!(zone.matches("\" \"").count(), parts.len() - 1);
        assert_eq!(parse_zone(&zone).unwrap(), vec![rec.clone()]);
        assert_eq!(
            parse_route53(&format_route53(std::slice::from_ref(&rec))).unwrap(),
            vec![rec]
        );
    }
}
