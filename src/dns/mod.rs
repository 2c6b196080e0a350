//! DNS records a sending domain publishes (DKIM selectors, custom MAIL FROM MX + SPF, DMARC).
//!
//! STUB for helper-a's module: minimal stand-ins with the agreed signatures so the simulator
//! compiles; the merge takes helper-a's real implementation.

use crate::dkim::Algorithm;

/// placeholder (helper-a writes the real module)
pub fn region_from_host(_host: &str) -> Option<String> {
    None
}

// STUB
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub data: RecordData,
}

// STUB
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    Txt(String),
    Mx { preference: u16, exchange: String },
}

// STUB
#[derive(Debug, Clone)]
pub struct SelectorInfo {
    pub selector: String,
    pub algorithm: Algorithm,
    pub public_key: Vec<u8>,
    pub active: bool,
}

// STUB
#[derive(Debug, Clone)]
pub struct DomainRecordsInput {
    pub domain: String,
    pub mail_from: String,
    pub region: String,
    pub selectors: Vec<SelectorInfo>,
    pub dmarc: Option<String>,
}

// STUB
pub fn domain_records(input: &DomainRecordsInput) -> Vec<Record> {
    let mut out = vec![
        Record {
            name: input.mail_from.clone(),
            data: RecordData::Mx {
                preference: 10,
                exchange: format!("feedback-smtp.{}.amazonses.com", input.region),
            },
        },
        Record {
            name: input.mail_from.clone(),
            data: RecordData::Txt("v=spf1 include:amazonses.com ~all".into()),
        },
    ];
    if let Some(d) = &input.dmarc {
        out.push(Record {
            name: format!("_dmarc.{}", input.domain),
            data: RecordData::Txt(d.clone()),
        });
    }
    out
}

// STUB
#[derive(Debug, Clone, thiserror::Error)]
#[error("zone line {line}: {message}")]
pub struct ZoneError {
    pub line: usize,
    pub message: String,
}

// STUB: accepts `name TXT "…"` and `name MX pref exchange` lines only.
pub fn parse_zone(text: &str) -> Result<Vec<Record>, ZoneError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |m: &str| ZoneError {
            line: i + 1,
            message: m.to_string(),
        };
        let mut parts = line.split_whitespace();
        let name = parts.next().ok_or_else(|| err("no name"))?;
        let name = name.trim_end_matches('.').to_string();
        match parts.next() {
            Some(t) if t.eq_ignore_ascii_case("TXT") => {
                let rest: String = parts.collect::<Vec<_>>().join(" ");
                let value: String = rest.split('"').skip(1).step_by(2).collect();
                out.push(Record {
                    name,
                    data: RecordData::Txt(value),
                });
            }
            Some(t) if t.eq_ignore_ascii_case("MX") => {
                let pref = parts
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| err("bad MX preference"))?;
                let exchange = parts.next().ok_or_else(|| err("no MX exchange"))?;
                out.push(Record {
                    name,
                    data: RecordData::Mx {
                        preference: pref,
                        exchange: exchange.trim_end_matches('.').to_string(),
                    },
                });
            }
            _ => return Err(err("expected TXT or MX")),
        }
    }
    Ok(out)
}
