//! The DNS records a sending domain must publish, and their zone-file / Route 53 / JSON forms.
//!
//! A domain that sends through SES with this relay publishes: one DKIM key TXT record per selector
//! at `S._domainkey.D` (RFC 6376 §3.6.2.1), the custom MAIL FROM domain's single MX
//! `10 feedback-smtp.<region>.amazonses.com` and its SPF TXT `v=spf1 include:amazonses.com ~all`
//! (SES "custom MAIL FROM domain" guide; RFC 7208), and a DMARC policy at `_dmarc.D` (RFC 7489).
//! TXT values longer than 255 bytes are split into several character-strings (RFC 1035 §3.3,
//! RFC 6376 §3.6.2.2), which verifiers concatenate. The zone-file parser exists so `dkim-relay`
//! can check hand-edited zone fragments and round-trip its own output.

use crate::dkim::Algorithm;
use crate::dkim::keygen::dkim_txt_value;
use serde::{Deserialize, Serialize};

/// TTL written into generated records. An hour keeps key rotation and fixes reasonably quick.
pub const DEFAULT_TTL: u32 = 3600;

/// The SPF record SES's custom MAIL FROM guide prescribes for the MAIL FROM domain.
pub const SES_MAIL_FROM_SPF: &str = "v=spf1 include:amazonses.com ~all";

/// Maximum length of one DNS character-string (RFC 1035 §3.3: a length octet, so ≤ 255).
pub const MAX_TXT_CHUNK: usize = 255;

/// The data of a record; only the two types a sending domain needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordData {
    /// The full TXT value, already joined (chunking is a presentation detail).
    Txt(String),
    Mx {
        preference: u16,
        exchange: String,
    },
}

impl RecordData {
    /// The record type mnemonic.
    pub fn rtype(&self) -> &'static str {
        match self {
            RecordData::Txt(_) => "TXT",
            RecordData::Mx { .. } => "MX",
        }
    }
}

/// One DNS record to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Fully qualified name without the trailing dot, lowercase.
    pub name: String,
    pub data: RecordData,
    /// A human explanation (why this record exists), printed as a zone-file comment.
    pub comment: Option<String>,
}

/// A DKIM selector whose key should be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorInfo {
    pub selector: String,
    pub algorithm: Algorithm,
    /// The `p=` key bytes (SPKI DER for RSA, raw 32 bytes for Ed25519).
    pub public_key: Vec<u8>,
    /// Whether the relay signs with it now (others are published for rotation only).
    pub active: bool,
}

/// Everything needed to compute a domain's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecordsInput {
    pub domain: String,
    /// The custom MAIL FROM domain (e.g. `mail.example.org`); empty means SES's default
    /// `amazonses.com` MAIL FROM, for which the domain publishes nothing.
    pub mail_from: String,
    /// The SES region, which names the feedback MX host.
    pub region: String,
    pub selectors: Vec<SelectorInfo>,
    /// `None` → `v=DMARC1; p=none; rua=mailto:dmarc-reports@<domain>` (monitoring first, as the
    /// SES DMARC guide advises).
    pub dmarc: Option<String>,
}

/// Normalises a domain name: lowercase, no trailing dot, no surrounding whitespace.
fn norm_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The records `input.domain` must publish, in a stable order: DKIM selectors, MAIL FROM MX,
/// MAIL FROM SPF, DMARC.
pub fn domain_records(input: &DomainRecordsInput) -> Vec<Record> {
    let domain = norm_name(&input.domain);
    let mut out = Vec::with_capacity(input.selectors.len() + 3);
    for s in &input.selectors {
        let state = if s.active {
            "active: the relay signs with this key"
        } else {
            "published only: not used for signing (keep it during key rotation)"
        };
        out.push(Record {
            name: format!("{}._domainkey.{domain}", norm_name(&s.selector)),
            data: RecordData::Txt(dkim_txt_value(s.algorithm, &s.public_key)),
            comment: Some(format!(
                "DKIM selector {} ({}), {state}",
                s.selector, s.algorithm
            )),
        });
    }
    let mail_from = norm_name(&input.mail_from);
    if !mail_from.is_empty() {
        let region = input.region.trim().to_ascii_lowercase();
        out.push(Record {
            name: mail_from.clone(),
            data: RecordData::Mx {
                preference: 10,
                exchange: format!("feedback-smtp.{region}.amazonses.com"),
            },
            comment: Some(
                "custom MAIL FROM: SES bounce/complaint feedback; must be the only MX".into(),
            ),
        });
        out.push(Record {
            name: mail_from,
            data: RecordData::Txt(SES_MAIL_FROM_SPF.into()),
            comment: Some("custom MAIL FROM: SPF authorising SES's sending IPs".into()),
        });
    }
    let dmarc = input
        .dmarc
        .clone()
        .unwrap_or_else(|| format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"));
    out.push(Record {
        name: format!("_dmarc.{domain}"),
        data: RecordData::Txt(dmarc),
        comment: Some("DMARC policy for the From domain".into()),
    });
    out
}

/// The SES region named by an SES SMTP endpoint host, e.g. `email-smtp.us-east-1.amazonaws.com`
/// → `us-east-1`. Also FIPS (`email-smtp-fips.R.amazonaws.com`), dual-stack
/// (`email-smtp.R.api.aws`), China (`….amazonaws.com.cn`) and VPC endpoint
/// (`vpce-….email-smtp.R.vpce.amazonaws.com`) names.
pub fn region_from_host(host: &str) -> Option<String> {
    let host = norm_name(host);
    let labels: Vec<&str> = host.split('.').collect();
    let pos = labels
        .iter()
        .position(|l| *l == "email-smtp" || *l == "email-smtp-fips")?;
    let region = *labels.get(pos + 1)?;
    let suffix = labels.get(pos + 2..)?.join(".");
    let ok_suffix = match suffix.as_str() {
        "amazonaws.com" | "api.aws" | "amazonaws.com.cn" => pos == 0,
        // VPC endpoint DNS names carry an endpoint-specific prefix.
        "vpce.amazonaws.com" => pos > 0,
        _ => false,
    };
    let looks_like_region = region.contains('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.as_bytes().last().is_some_and(u8::is_ascii_digit);
    (ok_suffix && looks_like_region).then(|| region.to_string())
}

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

fn rdata_text(data: &RecordData) -> String {
    match data {
        RecordData::Txt(v) => quoted_chunks(v),
        RecordData::Mx {
            preference,
            exchange,
        } => format!("{preference} {}.", norm_name(exchange)),
    }
}

/// A zone-file fragment (RFC 1035 master format): absolute names, TTL 3600, class IN, long TXT
/// values split into quoted strings, the record's comment after `;`.
pub fn format_zone(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&format!(
            "{}. {DEFAULT_TTL} IN {} {}",
            norm_name(&r.name),
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

#[derive(Serialize, Deserialize)]
struct R53Batch {
    #[serde(rename = "Comment", default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(rename = "Changes")]
    changes: Vec<R53Change>,
}

#[derive(Serialize, Deserialize)]
struct R53Change {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "ResourceRecordSet")]
    rrset: R53RrSet,
}

#[derive(Serialize, Deserialize)]
struct R53RrSet {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Type")]
    rtype: String,
    #[serde(rename = "TTL", default, skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
    #[serde(rename = "ResourceRecords", default)]
    records: Vec<R53Value>,
}

#[derive(Serialize, Deserialize)]
struct R53Value {
    #[serde(rename = "Value")]
    value: String,
}

/// A change batch for `aws route53 change-resource-record-sets --change-batch file://…`.
/// Records with the same name and type become one ResourceRecordSet (Route 53 rejects a batch
/// that UPSERTs the same name/type twice), in first-seen order.
pub fn format_route53(records: &[Record]) -> String {
    let mut changes: Vec<R53Change> = Vec::new();
    for r in records {
        let name = format!("{}.", norm_name(&r.name));
        let rtype = r.data.rtype();
        let value = R53Value {
            value: rdata_text(&r.data),
        };
        match changes
            .iter_mut()
            .find(|c| c.rrset.name == name && c.rrset.rtype == rtype)
        {
            Some(c) => c.rrset.records.push(value),
            None => changes.push(R53Change {
                action: "UPSERT".into(),
                rrset: R53RrSet {
                    name,
                    rtype: rtype.into(),
                    ttl: Some(DEFAULT_TTL),
                    records: vec![value],
                },
            }),
        }
    }
    let batch = R53Batch {
        comment: Some("DKIM, custom MAIL FROM and DMARC records generated by dkim-relay".into()),
        changes,
    };
    // Serialising plain strings and integers cannot fail.
    serde_json::to_string_pretty(&batch).unwrap_or_default()
}

#[derive(Serialize, Deserialize)]
struct JsonRecord {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    value: String,
    comment: Option<String>,
}

/// A simple JSON array `[{"name","type","value","comment"}]` for scripts; TXT values unsplit,
/// MX values as `"10 host"`.
pub fn format_json(records: &[Record]) -> String {
    let rows: Vec<JsonRecord> = records
        .iter()
        .map(|r| JsonRecord {
            name: norm_name(&r.name),
            rtype: r.data.rtype().into(),
            value: match &r.data {
                RecordData::Txt(v) => v.clone(),
                RecordData::Mx {
                    preference,
                    exchange,
                } => format!("{preference} {}", norm_name(exchange)),
            },
            comment: r.comment.clone(),
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

/// A zone-file parse error, naming the (1-based) line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ZoneError {
    pub line: usize,
    pub message: String,
}

/// Errors reading a Route 53 change batch.
#[derive(Debug, thiserror::Error)]
pub enum Route53Error {
    #[error("not a Route 53 change batch: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record set {name} {rtype}: {message}")]
    Invalid {
        name: String,
        rtype: String,
        message: String,
    },
}

/// One lexical token of a zone line.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
}

/// Splits master-file text into tokens, handling quotes, `\X` / `\DDD` escapes inside quotes,
/// and `;` comments. Returns (tokens, comment text).
fn tokenize(line: &str) -> Result<(Vec<Tok>, Option<String>), String> {
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
        return norm_name(name);
    }
    match origin {
        Some(o) if !o.is_empty() => format!("{}.{o}", norm_name(name)),
        _ => norm_name(name),
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
                    Some(Tok::Word(o)) => origin = Some(norm_name(&qualify(&o, origin.as_deref()))),
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

/// Reads back a Route 53 change batch (as [`format_route53`] writes it); one record per
/// ResourceRecord value. Route 53 has no per-record comments, so `comment` is `None`.
pub fn parse_route53(json: &str) -> Result<Vec<Record>, Route53Error> {
    let batch: R53Batch = serde_json::from_str(json)?;
    let mut out = Vec::new();
    for change in batch.changes {
        let set = change.rrset;
        let invalid = |message: String| Route53Error::Invalid {
            name: set.name.clone(),
            rtype: set.rtype.clone(),
            message,
        };
        let name = norm_name(&set.name);
        for v in &set.records {
            let data = match set.rtype.to_ascii_uppercase().as_str() {
                "TXT" => {
                    let (toks, _) = tokenize(&v.value).map_err(&invalid)?;
                    let mut value = String::new();
                    for t in toks {
                        match t {
                            Tok::Quoted(s) => value.push_str(&s),
                            Tok::Word(w) => {
                                return Err(invalid(format!(
                                    "TXT values must be quoted strings, found '{w}'"
                                )));
                            }
                        }
                    }
                    RecordData::Txt(value)
                }
                "MX" => {
                    let mut parts = v.value.split_whitespace();
                    let (Some(p), Some(e), None) = (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(invalid(format!(
                            "MX value '{}' is not 'PREFERENCE HOST'",
                            v.value
                        )));
                    };
                    RecordData::Mx {
                        preference: p
                            .parse()
                            .map_err(|_| invalid(format!("bad MX preference '{p}'")))?,
                        exchange: norm_name(e),
                    }
                }
                other => return Err(invalid(format!("unsupported record type {other}"))),
            };
            out.push(Record {
                name: name.clone(),
                data,
                comment: None,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_input(key_bits: usize) -> DomainRecordsInput {
        DomainRecordsInput {
            domain: "Example.ORG.".into(),
            mail_from: "mail.example.org".into(),
            region: "us-east-1".into(),
            selectors: vec![
                SelectorInfo {
                    selector: "s2026a".into(),
                    algorithm: Algorithm::RsaSha256,
                    // Stand-in SPKI bytes of realistic size (content is irrelevant to layout).
                    public_key: (0..key_bits / 8 + 38).map(|i| i as u8).collect(),
                    active: true,
                },
                SelectorInfo {
                    selector: "e2026a".into(),
                    algorithm: Algorithm::Ed25519Sha256,
                    public_key: vec![7u8; 32],
                    active: false,
                },
            ],
            dmarc: None,
        }
    }

    #[test]
    fn records_for_domain() {
        let recs = domain_records(&sample_input(2048));
        let summary: Vec<(&str, &str)> = recs
            .iter()
            .map(|r| (r.name.as_str(), r.data.rtype()))
            .collect();
        assert_eq!(
            summary,
            [
                ("s2026a._domainkey.example.org", "TXT"),
                ("e2026a._domainkey.example.org", "TXT"),
                ("mail.example.org", "MX"),
                ("mail.example.org", "TXT"),
                ("_dmarc.example.org", "TXT"),
            ]
        );
        let RecordData::Txt(v) = &recs[0].data else {
            panic!()
        };
        assert!(v.starts_with("v=DKIM1; k=rsa; p="));
        assert!(recs[0].comment.as_deref().unwrap().contains("active"));
        assert!(
            recs[1]
                .comment
                .as_deref()
                .unwrap()
                .contains("published only")
        );
        assert_eq!(
            recs[2].data,
            RecordData::Mx {
                preference: 10,
                exchange: "feedback-smtp.us-east-1.amazonses.com".into()
            }
        );
        assert_eq!(recs[3].data, RecordData::Txt(SES_MAIL_FROM_SPF.into()));
        assert_eq!(
            recs[4].data,
            RecordData::Txt("v=DMARC1; p=none; rua=mailto:dmarc-reports@example.org".into())
        );
        let mut custom = sample_input(2048);
        custom.dmarc = Some("v=DMARC1; p=reject".into());
        custom.mail_from = String::new();
        let recs = domain_records(&custom);
        assert_eq!(
            recs.len(),
            3,
            "no MAIL FROM records without a custom MAIL FROM"
        );
        assert_eq!(recs[2].data, RecordData::Txt("v=DMARC1; p=reject".into()));
    }

    #[test]
    fn region_parsing() {
        for (host, want) in [
            ("email-smtp.us-east-1.amazonaws.com", Some("us-east-1")),
            ("EMAIL-SMTP.eu-west-1.amazonaws.com.", Some("eu-west-1")),
            (
                "email-smtp-fips.us-gov-west-1.amazonaws.com",
                Some("us-gov-west-1"),
            ),
            ("email-smtp.ap-northeast-1.api.aws", Some("ap-northeast-1")),
            ("email-smtp.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            (
                "vpce-0123-abcd.email-smtp.us-west-2.vpce.amazonaws.com",
                Some("us-west-2"),
            ),
            ("email-smtp.amazonaws.com", None),
            ("smtp.example.org", None),
            ("email-smtp.us-east-1.example.com", None),
            ("x.email-smtp.us-east-1.amazonaws.com", None),
            ("email-smtp.not_a_region.amazonaws.com", None),
            ("", None),
        ] {
            assert_eq!(region_from_host(host).as_deref(), want, "{host}");
        }
    }

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
    fn route53_round_trip_and_merge() {
        let mut recs = domain_records(&sample_input(4096));
        // A second TXT at the MAIL FROM name must be merged into the same record set.
        recs.push(Record {
            name: "mail.example.org".into(),
            data: RecordData::Txt("google-site-verification=abc".into()),
            comment: None,
        });
        let json = format_route53(&recs);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let changes = v["Changes"].as_array().unwrap();
        assert_eq!(changes.len(), 5, "{json}");
        for c in changes {
            assert_eq!(c["Action"], "UPSERT");
            assert_eq!(c["ResourceRecordSet"]["TTL"], 3600);
            assert!(
                c["ResourceRecordSet"]["Name"]
                    .as_str()
                    .unwrap()
                    .ends_with('.')
            );
        }
        let mail_txt = changes
            .iter()
            .find(|c| {
                c["ResourceRecordSet"]["Name"] == "mail.example.org."
                    && c["ResourceRecordSet"]["Type"] == "TXT"
            })
            .unwrap();
        let values = mail_txt["ResourceRecordSet"]["ResourceRecords"]
            .as_array()
            .unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0]["Value"], "\"v=spf1 include:amazonses.com ~all\"");
        let dkim = &changes[0]["ResourceRecordSet"]["ResourceRecords"][0]["Value"];
        assert!(
            dkim.as_str().unwrap().contains("\" \""),
            "long value split into strings"
        );

        let back = parse_route53(&json).unwrap();
        let strip = |rs: &[Record]| -> Vec<(String, RecordData)> {
            let mut v: Vec<_> = rs
                .iter()
                .map(|r| (r.name.clone(), r.data.clone()))
                .collect();
            v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            v
        };
        assert_eq!(strip(&back), strip(&recs));
        assert!(back.iter().all(|r| r.comment.is_none()));
    }

    #[test]
    fn json_format() {
        let recs = domain_records(&sample_input(2048));
        let v: serde_json::Value = serde_json::from_str(&format_json(&recs)).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), recs.len());
        assert_eq!(arr[2]["type"], "MX");
        assert_eq!(arr[2]["value"], "10 feedback-smtp.us-east-1.amazonses.com");
        assert_eq!(arr[3]["value"], SES_MAIL_FROM_SPF);
        assert_eq!(arr[4]["name"], "_dmarc.example.org");
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

    #[test]
    fn route53_errors() {
        assert!(matches!(parse_route53("{"), Err(Route53Error::Json(_))));
        let bad = r#"{"Changes":[{"Action":"UPSERT","ResourceRecordSet":{"Name":"x.","Type":"MX","TTL":1,"ResourceRecords":[{"Value":"ten host."}]}}]}"#;
        let err = parse_route53(bad).unwrap_err();
        assert!(err.to_string().contains("x. MX"), "{err}");
    }
}
