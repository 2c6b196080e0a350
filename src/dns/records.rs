//! The records a sending domain must publish, computed from its configuration.
//!
//! A domain that sends through SES with this relay publishes: one DKIM key TXT record per selector
//! at `S._domainkey.D` (RFC 6376 §3.6.2.1), the custom MAIL FROM domain's single MX
//! `10 feedback-smtp.<region>.amazonses.com` and its SPF TXT `v=spf1 include:amazonses.com ~all`
//! (SES "custom MAIL FROM domain" guide; RFC 7208), and a DMARC policy at `_dmarc.D` (RFC 7489).
//! Records are kept as data ([`Record`]); how they are written out is the formats' business
//! ([`super::zone`], [`super::route53`], [`super::json`]), so every format prints the same set.

use crate::dkim::Algorithm;
use crate::dkim::keygen::dkim_txt_value;
use crate::domain_name::dns_name;
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

/// The records `input.domain` must publish, in a stable order: DKIM selectors, MAIL FROM MX,
/// MAIL FROM SPF, DMARC.
pub fn domain_records(input: &DomainRecordsInput) -> Vec<Record> {
    let domain = dns_name(&input.domain);
    let mut out = Vec::with_capacity(input.selectors.len() + 3);
    for s in &input.selectors {
        let state = if s.active {
            "active: the relay signs with this key"
        } else {
            "published only: not used for signing (keep it during key rotation)"
        };
        out.push(Record {
            name: format!("{}._domainkey.{domain}", dns_name(&s.selector)),
            data: RecordData::Txt(dkim_txt_value(s.algorithm, &s.public_key)),
            comment: Some(format!(
                "DKIM selector {} ({}), {state}",
                s.selector, s.algorithm
            )),
        });
    }
    let mail_from = dns_name(&input.mail_from);
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
    let host = dns_name(host);
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A domain with two selectors (one active), a custom MAIL FROM and the default DMARC; the
    /// other formats' tests use it too.
    pub(crate) fn sample_input(key_bits: usize) -> DomainRecordsInput {
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
}
