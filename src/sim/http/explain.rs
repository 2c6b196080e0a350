//! The verdict explained, the way learndmarc.com walks through it: which domains a receiver
//! compares (header From, MAIL FROM, each DKIM `d=`) and whether each aligns, one card per DKIM
//! signature (ours and SES's) with its reason, SPF and DMARC, what SES changed on the way
//! (Message-ID, Date, headers added and removed), the `Authentication-Results` header a
//! receiver would add (RFC 8601), and a fix-it hint for each failure.
//!
//! Everything here is derived from the stored verdict and the delivered message; nothing is
//! re-verified. This is the JSON of `GET /api/v1/message/{ID}/verdict` and what the verdict page
//! renders, so the two never disagree.

use serde::Serialize;

use super::mailpit::header_fields;
use crate::sim::deliver::{SES_DKIM_DOMAIN, SES_SELECTOR};
use crate::sim::outbox::Record;
use crate::sim::verdict::{DkimOutcome, DmarcOutcome, SpfOutcome, Verdict};

/// The host name our pretend receiver writes in `Authentication-Results`.
pub const RECEIVER: &str = "mx.verdict.dkim-relay.invalid";

/// One identifier a receiver compares with the header From domain.
#[derive(Debug, Clone, Serialize)]
pub struct Identifier {
    /// `header From`, `MAIL FROM (SPF)`, `DKIM d= (selector s1)`.
    pub role: String,
    pub domain: String,
    pub aligned: bool,
    /// Whether the check behind it passed (always true for the From domain itself).
    pub passed: bool,
}

/// One DKIM signature, explained.
#[derive(Debug, Clone, Serialize)]
pub struct Signature {
    /// `yours` or `ses` (the `d=amazonses.com` signature SES adds).
    pub signer: &'static str,
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub result: DkimOutcome,
    pub aligned: bool,
    pub reason: String,
    /// The `h=` list as signed (lower case).
    pub signed_headers: Vec<String>,
    pub hint: Option<String>,
}

/// What SES changed on the way (ses-smtp.md §5).
#[derive(Debug, Clone, Serialize)]
pub struct SesChanges {
    /// The Message-ID SES set (`<id@region.amazonses.com>`).
    pub message_id: String,
    /// The Date SES set (the acceptance time).
    pub date: String,
    /// Header fields SES added.
    pub added: Vec<String>,
    /// What SES removes (every `X-SES-*` field, the client's own Message-ID and Date).
    pub removed: Vec<String>,
    pub envelope_from: String,
}

/// The verdict explained.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub id: String,
    pub from_domain: String,
    pub mail_from: String,
    pub envelope_from: String,
    pub identifiers: Vec<Identifier>,
    pub dkim: Vec<Signature>,
    pub spf: crate::sim::verdict::SpfVerdict,
    pub spf_hint: Option<String>,
    pub dmarc: crate::sim::verdict::DmarcVerdict,
    pub dmarc_hint: Option<String>,
    /// `pass` when a receiver would deliver as authenticated (DMARC pass), else the DMARC word.
    pub summary: String,
    pub authentication_results: String,
    pub ses_changes: SesChanges,
    /// The raw verdict, as stored.
    pub verdict: Verdict,
}

/// The `h=` and `d=`/`s=` of each DKIM-Signature in the delivered message, in order.
fn signatures_in(eml: &[u8]) -> Vec<(String, String, Vec<String>)> {
    header_fields(eml)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .map(|(_, v)| {
            let mut d = String::new();
            let mut s = String::new();
            let mut h = Vec::new();
            for tag in v.split(';') {
                let Some((k, val)) = tag.split_once('=') else {
                    continue;
                };
                let val: String = val.chars().filter(|c| !c.is_whitespace()).collect();
                match k.trim() {
                    "d" => d = val.to_ascii_lowercase(),
                    "s" => s = val,
                    "h" => {
                        h = val
                            .split(':')
                            .map(|x| x.to_ascii_lowercase())
                            .filter(|x| !x.is_empty())
                            .collect()
                    }
                    _ => {}
                }
            }
            (d, s, h)
        })
        .collect()
}

fn dkim_hint(sig: &Signature, from_domain: &str) -> Option<String> {
    if sig.signer == "ses" {
        return (sig.result != DkimOutcome::Pass).then(|| {
            "SES's own signature failed: the delivered message was altered after SES signed it."
                .to_string()
        });
    }
    let key = format!("{}._domainkey.{}", sig.selector, sig.domain);
    match sig.result {
        DkimOutcome::Pass if !sig.aligned => Some(format!(
            "Signed by {} but the From domain is {from_domain}: sign with d={from_domain} (or a \
             domain sharing its organizational domain) so this signature counts for DMARC.",
            sig.domain
        )),
        DkimOutcome::Pass => None,
        DkimOutcome::Fail if sig.reason.contains("body hash") => Some(
            "The body changed after signing: sign the exact bytes you send, after any footer or \
             line-ending rewrite, and do not let a later hop re-encode the body."
                .into(),
        ),
        DkimOutcome::Fail if sig.reason.contains("revoked") => Some(format!(
            "The key at {key} is revoked (empty p=): sign with a published selector."
        )),
        DkimOutcome::Fail => {
            let rewritten: Vec<&str> = ["message-id", "date"]
                .into_iter()
                .filter(|h| sig.signed_headers.iter().any(|x| x == h))
                .collect();
            Some(if rewritten.is_empty() {
                format!(
                    "Check that the key published at {key} is the public half of the key that \
                     signs, and that nothing rewrites signed headers after signing."
                )
            } else {
                format!(
                    "Your signature covers {} which SES replaces: remove {} from the signed \
                     headers (dkim-relay's defaults leave them out).",
                    rewritten.join(" and "),
                    if rewritten.len() > 1 { "them" } else { "it" }
                )
            })
        }
        DkimOutcome::PermError if sig.reason.contains("no key record") => Some(format!(
            "Publish the selector's TXT record at {key} (`dkim-relay dns` prints it)."
        )),
        DkimOutcome::PermError | DkimOutcome::Neutral => Some(format!(
            "The signature or the key record at {key} is malformed: re-publish the record \
             `dkim-relay dns` prints and check the signature's tags."
        )),
        DkimOutcome::TempError => Some(format!(
            "The key at {key} could not be fetched: check the DNS zone serving it."
        )),
    }
}

fn spf_hint(v: &Verdict, from_domain: &str) -> Option<String> {
    let spf = &v.spf;
    let ses_default = spf.domain == SES_DKIM_DOMAIN || spf.domain.ends_with(".amazonses.com");
    match spf.result {
        SpfOutcome::Pass if spf.aligned => None,
        SpfOutcome::Pass if ses_default => Some(format!(
            "Custom MAIL FROM not configured: SPF passes for {} but does not align with \
             {from_domain}. Set a custom MAIL FROM domain (e.g. mail.{from_domain}) in SES and \
             publish its MX and `v=spf1 include:amazonses.com ~all` records.",
            spf.domain
        )),
        SpfOutcome::Pass => Some(format!(
            "SPF passes for {} but it is not under {from_domain}: use a MAIL FROM subdomain of \
             the From domain.",
            spf.domain
        )),
        SpfOutcome::None => Some(format!(
            "No SPF record at {}: publish `v=spf1 include:amazonses.com ~all` there.",
            spf.domain
        )),
        SpfOutcome::TempError => Some(format!(
            "The SPF record at {} could not be fetched: check the DNS zone serving it.",
            spf.domain
        )),
        _ => Some(format!(
            "SPF at {} does not authorize SES's sending IPs: include amazonses.com \
             (`v=spf1 include:amazonses.com ~all`).",
            spf.domain
        )),
    }
}

fn dmarc_hint(v: &Verdict) -> Option<String> {
    let d = &v.dmarc;
    match d.result {
        DmarcOutcome::Pass => None,
        DmarcOutcome::None if d.record.is_none() && !d.from_domain.is_empty() => Some(format!(
            "No DMARC record for {0}: publish `v=DMARC1; p=none; rua=mailto:…` at _dmarc.{0} \
             (Gmail and Yahoo require one from bulk senders).",
            d.from_domain
        )),
        DmarcOutcome::None => None,
        DmarcOutcome::Fail => Some(
            "DMARC needs one identifier that both passes and aligns: an aligned DKIM signature \
             (sign with the From domain) or SPF on a custom MAIL FROM under the From domain."
                .into(),
        ),
        _ => Some(format!(
            "The DMARC record could not be evaluated ({}): fix the record at _dmarc.{}.",
            d.reason, d.from_domain
        )),
    }
}

fn domain_of(addr: &str) -> String {
    addr.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The `Authentication-Results` header a receiver would add (RFC 8601).
pub fn authentication_results(v: &Verdict, envelope_from: &str) -> String {
    let mut parts = vec![RECEIVER.to_string()];
    for d in &v.dkim {
        parts.push(format!(
            "dkim={} header.d={} header.s={} header.a={}",
            d.result, d.domain, d.selector, d.algorithm
        ));
    }
    if v.dkim.is_empty() {
        parts.push("dkim=none".into());
    }
    parts.push(format!(
        "spf={} smtp.mailfrom={}",
        v.spf.result,
        if envelope_from.is_empty() {
            v.spf.domain.as_str()
        } else {
            envelope_from
        }
    ));
    let policy = match v.dmarc.policy.as_str() {
        "" => "none",
        p => p,
    };
    let dis = match v.dmarc.disposition.as_str() {
        "" => "none",
        p => p,
    };
    parts.push(format!(
        "dmarc={} (p={policy} dis={dis}) header.from={}",
        v.dmarc.result, v.dmarc.from_domain
    ));
    format!("Authentication-Results: {}", parts.join(";\r\n\t"))
}

/// Explains `record`'s verdict, reading the signatures' `h=` lists from the delivered `eml`.
pub fn explain(record: &Record, eml: &[u8]) -> Explanation {
    let v = &record.verdict;
    let from_domain = if v.dmarc.from_domain.is_empty() {
        domain_of(record.header_from.as_deref().unwrap_or(""))
    } else {
        v.dmarc.from_domain.clone()
    };
    let in_message = signatures_in(eml);
    let mut used = vec![false; in_message.len()];
    let dkim: Vec<Signature> = v
        .dkim
        .iter()
        .map(|d| {
            // Pair each verdict entry with its header by (d=, s=), in order.
            let found = in_message
                .iter()
                .enumerate()
                .find(|(i, (dd, ss, _))| !used[*i] && *dd == d.domain && *ss == d.selector);
            let signed_headers = match found {
                Some((i, (_, _, h))) => {
                    used[i] = true;
                    h.clone()
                }
                None => Vec::new(),
            };
            let signer = if d.domain == SES_DKIM_DOMAIN && d.selector == SES_SELECTOR {
                "ses"
            } else {
                "yours"
            };
            let mut sig = Signature {
                signer,
                domain: d.domain.clone(),
                selector: d.selector.clone(),
                algorithm: d.algorithm.clone(),
                result: d.result,
                aligned: d.aligned,
                reason: d.reason.clone(),
                signed_headers,
                hint: None,
            };
            sig.hint = dkim_hint(&sig, &from_domain);
            sig
        })
        .collect();
    let mut identifiers = vec![Identifier {
        role: "header From".into(),
        domain: from_domain.clone(),
        aligned: true,
        passed: true,
    }];
    identifiers.push(Identifier {
        role: "MAIL FROM (SPF)".into(),
        domain: v.spf.domain.clone(),
        aligned: v.spf.aligned,
        passed: v.spf.result == SpfOutcome::Pass,
    });
    for d in &dkim {
        identifiers.push(Identifier {
            role: format!("DKIM d= (selector {})", d.selector),
            domain: d.domain.clone(),
            aligned: d.aligned,
            passed: d.result == DkimOutcome::Pass,
        });
    }
    let fields = header_fields(eml);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let ses_changes = SesChanges {
        message_id: field("Message-ID"),
        date: field("Date"),
        added: vec![
            "DKIM-Signature (d=amazonses.com)".into(),
            format!("Feedback-ID: {}", field("Feedback-ID")),
            format!("X-SES-Outgoing: {}", field("X-SES-Outgoing")),
        ],
        removed: vec![
            "every X-SES-* header (X-SES-CONFIGURATION-SET, X-SES-MESSAGE-TAGS, …)".into(),
            "the client's Message-ID (replaced)".into(),
            "the client's Date (replaced with the acceptance time)".into(),
        ],
        envelope_from: record.envelope_from.clone(),
    };
    Explanation {
        id: record.id.clone(),
        from_domain: from_domain.clone(),
        mail_from: record.mail_from.clone(),
        envelope_from: record.envelope_from.clone(),
        identifiers,
        spf_hint: spf_hint(v, &from_domain),
        dmarc_hint: dmarc_hint(v),
        summary: v.dmarc.result.as_str().to_string(),
        authentication_results: authentication_results(v, &record.envelope_from),
        dkim,
        spf: v.spf.clone(),
        dmarc: v.dmarc.clone(),
        ses_changes,
        verdict: v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_tags_are_read() {
        let eml = b"DKIM-Signature: v=1; a=rsa-sha256; d=Example.org; s=s1;\r\n\th=From:To:\r\n Message-ID; bh=x; b=y\r\nFrom: a@example.org\r\n\r\n";
        let sigs = signatures_in(eml);
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].0, "example.org");
        assert_eq!(sigs[0].1, "s1");
        assert_eq!(sigs[0].2, vec!["from", "to", "message-id"]);
    }

    #[test]
    fn hints_name_the_rewritten_header() {
        let sig = Signature {
            signer: "yours",
            domain: "example.org".into(),
            selector: "s1".into(),
            algorithm: "rsa-sha256".into(),
            result: DkimOutcome::Fail,
            aligned: true,
            reason: "signature did not verify".into(),
            signed_headers: vec!["from".into(), "message-id".into()],
            hint: None,
        };
        let hint = dkim_hint(&sig, "example.org").unwrap();
        assert!(hint.contains("message-id which SES replaces"), "{hint}");
    }
}
