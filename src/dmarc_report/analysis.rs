//! The records of aggregate reports grouped per day and source, each failure named with its
//! cause in this relay's setup.
//!
//! This relay signs every message with the From domain's key (`d=` the From domain) and sends
//! it through Amazon SES with a custom MAIL FROM under that domain. So for mail that went the
//! intended way a receiver sees: a source IP of SES, an aligned DKIM pass for the From domain
//! (ours; SES usually adds `d=amazonses.com` too, which never aligns), and an aligned SPF pass
//! for the custom MAIL FROM domain. Each way a record departs from that is a [`FindingClass`]
//! with its explanation: an `envelope_from` under `amazonses.com` (the custom MAIL FROM is not
//! set up, or SES fell back to its default: `BehaviorOnMxFailure`), a DKIM pass only for
//! `amazonses.com` (our signature was not there: the mail bypassed the relay), our signature
//! failing (key mismatch or modified in transit), a source outside SES (another sender, or a
//! spoofer), and so on.
//!
//! Alignment follows the published `adkim`/`aspf`: strict compares the domains; relaxed
//! compares organizational domains, approximated here by the last two labels (three under a
//! two-letter country code with a short second level, as `example.co.uk`) — no public suffix
//! list is shipped. SES's sending networks are those its SPF record (`include:amazonses.com`)
//! lists; an address outside them is reported as not SES.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use mail_auth::report::{
    ActionDisposition, Alignment, DkimResult, DmarcResult, PolicyOverride, Record, Report,
    SpfResult,
};
use serde::Serialize;

use crate::allow_list::Network;

/// The networks in SES's SPF record (`amazonses.com`, `v=spf1 ip4:… ~all`).
const SES_NETWORKS: &[&str] = &[
    "199.255.192.0/22",
    "199.127.232.0/22",
    "54.240.0.0/18",
    "69.169.224.0/20",
    "23.249.208.0/20",
    "23.251.224.0/19",
    "76.223.176.0/20",
    "54.240.64.0/19",
    "54.240.96.0/19",
    "52.82.172.0/22",
];

/// Whether `ip` is in one of SES's sending networks.
pub fn is_ses(ip: IpAddr) -> bool {
    SES_NETWORKS
        .iter()
        .filter_map(|n| Network::from_str(n).ok())
        .any(|n| n.contains(ip))
}

/// Why a group of messages did not authenticate as this setup intends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingClass {
    /// The source is not SES and DMARC failed: another sender, or a spoofer.
    NotSes,
    /// The source is not SES but the mail authenticated (another service of ours, a forwarder).
    NotSesAuthenticated,
    /// SPF was evaluated for SES's default MAIL FROM (`amazonses.com`).
    SesDefaultMailFrom,
    /// SPF failed for the custom MAIL FROM domain.
    SpfFailed,
    /// SPF passed for a domain outside the From domain.
    SpfNotAligned,
    /// Only SES's own signature verified: ours was not there.
    OnlySesSignature,
    /// No DKIM signature at all.
    Unsigned,
    /// Our signature (the From domain's) failed to verify.
    SignatureFailed,
    /// The receiver could not get or use the key of our signature.
    KeyError,
    /// A signature verified, but for a domain outside the From domain (not SES's).
    DkimNotAligned,
}

/// One named failure with its explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub class: FindingClass,
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Signature {
    pub domain: String,
    pub selector: String,
    pub result: String,
    pub aligned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SpfCheck {
    pub domain: String,
    pub scope: String,
    pub result: String,
    pub aligned: bool,
}

/// Messages of one day from one source with one outcome, summed over every report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The UTC day the reporting period began (`YYYY-MM-DD`).
    pub day: String,
    pub source_ip: String,
    pub ses: bool,
    pub header_from: String,
    pub envelope_from: String,
    pub messages: u64,
    /// `pass` when DKIM or SPF passed aligned.
    pub dmarc: String,
    /// The receiver's DMARC evaluation of DKIM and SPF (aligned pass or not).
    pub dkim: String,
    pub spf: String,
    pub signatures: Vec<Signature>,
    pub spf_checks: Vec<SpfCheck>,
    /// What the receiver did: none, quarantine, reject; with its override reasons.
    pub disposition: String,
    pub overrides: Vec<String>,
    pub reporters: BTreeSet<String>,
    pub findings: Vec<Finding>,
}

/// One report read.
#[derive(Debug, Clone, Serialize)]
pub struct ReportInfo {
    pub reporter: String,
    pub report_id: String,
    pub domain: String,
    pub policy: String,
    pub begin: String,
    pub end: String,
    pub messages: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub messages: u64,
    pub dmarc_pass: u64,
    pub dmarc_fail: u64,
    /// Messages per finding class.
    pub findings: BTreeMap<String, u64>,
}

/// Everything `dmarc-report` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Analysis {
    pub reports: Vec<ReportInfo>,
    pub rows: Vec<Row>,
    pub totals: Totals,
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
fn day(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| unix.to_string())
}

fn lower(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The organizational domain, approximated (see the module documentation).
fn org_domain(domain: &str) -> String {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let n = labels.len();
    let keep = if n >= 3 && labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 {
        3
    } else {
        2
    };
    labels[n.saturating_sub(keep)..].join(".")
}

fn aligned(domain: &str, header_from: &str, mode: Alignment) -> bool {
    let (d, h) = (lower(domain), lower(header_from));
    if d.is_empty() || h.is_empty() {
        return false;
    }
    match mode {
        Alignment::Strict => d == h,
        Alignment::Relaxed | Alignment::Unspecified => org_domain(&d) == org_domain(&h),
    }
}

fn under(domain: &str, parent: &str) -> bool {
    let d = lower(domain);
    d == parent || d.ends_with(&format!(".{parent}"))
}

fn dkim_word(r: DkimResult) -> &'static str {
    match r {
        DkimResult::None => "none",
        DkimResult::Pass => "pass",
        DkimResult::Fail => "fail",
        DkimResult::Policy => "policy",
        DkimResult::Neutral => "neutral",
        DkimResult::TempError => "temperror",
        DkimResult::PermError => "permerror",
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::None => "none",
        SpfResult::Neutral => "neutral",
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
    }
}

fn dmarc_word(r: DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail => "fail",
        DmarcResult::Unspecified => "unspecified",
    }
}

fn disposition_word(d: ActionDisposition) -> &'static str {
    match d {
        ActionDisposition::None => "none",
        ActionDisposition::Pass => "pass",
        ActionDisposition::Quarantine => "quarantine",
        ActionDisposition::Reject => "reject",
        ActionDisposition::Unspecified => "unspecified",
    }
}

fn policy_word(d: mail_auth::report::Disposition) -> &'static str {
    use mail_auth::report::Disposition;
    match d {
        Disposition::None => "none",
        Disposition::Quarantine => "quarantine",
        Disposition::Reject => "reject",
        Disposition::Unspecified => "unspecified",
    }
}

fn override_word(o: PolicyOverride) -> &'static str {
    match o {
        PolicyOverride::LocalPolicy => "local_policy",
        PolicyOverride::MailingList => "mailing_list",
        PolicyOverride::PolicyTestMode => "sampled_out",
        PolicyOverride::TrustedForwarder => "trusted_forwarder",
        PolicyOverride::Other => "other",
    }
}

/// The row of one record (with the report's period, reporter and alignment modes).
fn row_of(report: &Report, record: &Record) -> Row {
    let header_from = lower(record.header_from());
    let header_from = if header_from.is_empty() {
        lower(report.domain())
    } else {
        header_from
    };
    let mut signatures: Vec<Signature> = record
        .dkim_auth_result()
        .iter()
        .map(|d| Signature {
            domain: lower(d.domain()),
            selector: d.selector().to_string(),
            result: dkim_word(d.result()).to_string(),
            aligned: aligned(d.domain(), &header_from, report.adkim()),
        })
        .collect();
    signatures.sort();
    let mut spf_checks: Vec<SpfCheck> = record
        .spf_auth_result()
        .iter()
        .map(|s| SpfCheck {
            domain: lower(s.domain()),
            scope: match s.scope() {
                mail_auth::report::SPFDomainScope::Helo => "helo",
                _ => "mfrom",
            }
            .to_string(),
            result: spf_word(s.result()).to_string(),
            aligned: aligned(s.domain(), &header_from, report.aspf()),
        })
        .collect();
    spf_checks.sort();
    let dkim = dmarc_word(record.dmarc_dkim_result()).to_string();
    let spf = dmarc_word(record.dmarc_spf_result()).to_string();
    let dmarc = if dkim == "pass" || spf == "pass" {
        "pass"
    } else {
        "fail"
    };
    let ip = record.source_ip();
    Row {
        day: day(report.date_range_begin()),
        source_ip: ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
        ses: ip.is_some_and(is_ses),
        envelope_from: lower(record.envelope_from()),
        header_from,
        messages: u64::from(record.count()),
        dmarc: dmarc.to_string(),
        dkim,
        spf,
        signatures,
        spf_checks,
        disposition: disposition_word(record.action_disposition()).to_string(),
        overrides: record
            .policy_override_reason()
            .iter()
            .map(|r| match r.comment() {
                Some(c) => format!("{} ({c})", override_word(r.policy_override())),
                None => override_word(r.policy_override()).to_string(),
            })
            .collect(),
        reporters: BTreeSet::from([report.org_name().to_string()]),
        findings: Vec::new(),
    }
}

/// Names what went wrong in `row`, in this setup's terms.
fn findings(row: &Row) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |class, explanation: String| out.push(Finding { class, explanation });
    let from = &row.header_from;
    let ip = &row.source_ip;
    if !row.ses {
        if row.dmarc == "pass" {
            add(
                FindingClass::NotSesAuthenticated,
                format!(
                    "{ip} is not an Amazon SES address, yet the mail authenticated as {from}: \
                     another service that sends for {from} with its own aligned DKIM or SPF, or a \
                     forwarder that kept the relay's signature intact. Nothing to fix if you know \
                     the sender."
                ),
            );
        } else {
            add(
                FindingClass::NotSes,
                format!(
                    "{ip} is not an Amazon SES address: this mail did not go through SES, so not \
                     through this relay. Either another system sends as {from} (send it through \
                     the relay, or sign it and add it to SPF) or someone spoofs {from} — which \
                     is what the DMARC policy is there to stop."
                ),
            );
        }
        return out;
    }
    // SPF: the custom MAIL FROM should be a subdomain of the From domain, authorised for SES.
    let mfrom: Vec<&SpfCheck> = row
        .spf_checks
        .iter()
        .filter(|s| s.scope == "mfrom")
        .collect();
    let default_mail_from = under(&row.envelope_from, "amazonses.com")
        || mfrom.iter().any(|s| under(&s.domain, "amazonses.com"));
    if default_mail_from {
        add(
            FindingClass::SesDefaultMailFrom,
            format!(
                "SPF was checked for SES's default MAIL FROM ({}), which can never align with \
                 {from}: the custom MAIL FROM domain (`mail_from`) is not set up on this SES \
                 identity, or SES fell back to its default because the MAIL FROM domain's MX \
                 record was not found (BehaviorOnMxFailure = UseDefaultValue). Publish the MX and \
                 SPF records `dkim-relay dns` prints, check them with `dkim-relay doctor`, and set \
                 BehaviorOnMxFailure to RejectMessage so SES refuses instead of sending unaligned.",
                if row.envelope_from.is_empty() {
                    "amazonses.com"
                } else {
                    row.envelope_from.as_str()
                }
            ),
        );
    } else if let Some(s) = mfrom
        .iter()
        .find(|s| !matches!(s.result.as_str(), "pass" | "none"))
    {
        add(
            FindingClass::SpfFailed,
            format!(
                "SPF {} for the MAIL FROM domain {}: its SPF record does not authorise SES (it \
                 needs `v=spf1 include:amazonses.com ~all`, as `dkim-relay dns` prints), or the \
                 receiver could not read it.",
                s.result, s.domain
            ),
        );
    } else if let Some(s) = mfrom.iter().find(|s| s.result == "pass" && !s.aligned) {
        add(
            FindingClass::SpfNotAligned,
            format!(
                "SPF passed for {}, which is not within {from}: the MAIL FROM domain \
                 (`mail_from`) must be a subdomain of the From domain for SPF to align.",
                s.domain
            ),
        );
    }
    // DKIM: our signature (d= the From domain) must verify.
    if row.dkim != "pass" {
        let ours: Vec<&Signature> = row.signatures.iter().filter(|s| s.aligned).collect();
        let ses_pass = row
            .signatures
            .iter()
            .any(|s| under(&s.domain, "amazonses.com") && s.result == "pass");
        if let Some(s) = ours
            .iter()
            .find(|s| matches!(s.result.as_str(), "temperror" | "permerror"))
        {
            add(
                FindingClass::KeyError,
                format!(
                    "the receiver could not use the key of the signature d={} s={} ({}): the \
                     TXT record at {}._domainkey.{} is missing, malformed or was unreachable. \
                     Check it with `dkim-relay doctor`.",
                    s.domain, s.selector, s.result, s.selector, s.domain
                ),
            );
        } else if let Some(s) = ours.first() {
            add(
                FindingClass::SignatureFailed,
                format!(
                    "the relay's signature d={} s={} did not verify ({}): the published key does \
                     not match the key the relay signs with (check `dkim-relay doctor`; rotate \
                     with `require_published`), or the message was changed after signing (a \
                     gateway or mailing list rewrote a signed header or the body).",
                    s.domain, s.selector, s.result
                ),
            );
        } else if row.signatures.is_empty() {
            add(
                FindingClass::Unsigned,
                format!(
                    "no DKIM signature at all, not even SES's: the relay signs every message it \
                     sends, so this mail reached SES another way (an application using the SES \
                     API or SMTP credentials directly) for {from}."
                ),
            );
        } else if ses_pass
            && row
                .signatures
                .iter()
                .all(|s| under(&s.domain, "amazonses.com"))
        {
            add(
                FindingClass::OnlySesSignature,
                format!(
                    "only SES's own signature (d=amazonses.com) verified; the relay's signature \
                     for {from} was not there: the mail reached SES without going through the \
                     relay (an application using the SES SMTP credentials or API directly), or \
                     the relay's signature was stripped on the way."
                ),
            );
        } else if let Some(s) = row
            .signatures
            .iter()
            .find(|s| s.result == "pass" && !under(&s.domain, "amazonses.com"))
        {
            add(
                FindingClass::DkimNotAligned,
                format!(
                    "a signature verified for {}, which is not within {from}: the relay signs \
                     with d= the From domain, so this signature came from elsewhere.",
                    s.domain
                ),
            );
        }
    }
    out
}

/// Groups the records of `reports` per day, source and outcome, and names every failure.
pub fn analyse(reports: &[Report]) -> Analysis {
    let mut groups: BTreeMap<String, Row> = BTreeMap::new();
    let mut infos = Vec::new();
    for report in reports {
        let mut messages = 0;
        for record in report.records() {
            let row = row_of(report, record);
            messages += row.messages;
            // Everything but the count and the reporter decides the group.
            let key = serde_json::json!([
                row.day,
                row.source_ip,
                row.header_from,
                row.envelope_from,
                row.dkim,
                row.spf,
                row.signatures,
                row.spf_checks,
                row.disposition,
                row.overrides,
            ])
            .to_string();
            match groups.get_mut(&key) {
                Some(g) => {
                    g.messages += row.messages;
                    g.reporters.extend(row.reporters);
                }
                None => {
                    groups.insert(key, row);
                }
            }
        }
        infos.push(ReportInfo {
            reporter: report.org_name().to_string(),
            report_id: report.report_id().to_string(),
            domain: report.domain().to_string(),
            policy: policy_word(report.p()).to_string(),
            begin: day(report.date_range_begin()),
            end: day(report.date_range_end()),
            messages,
        });
    }
    let mut totals = Totals::default();
    let mut rows: Vec<Row> = groups.into_values().collect();
    for row in &mut rows {
        row.findings = findings(row);
        totals.messages += row.messages;
        if row.dmarc == "pass" {
            totals.dmarc_pass += row.messages;
        } else {
            totals.dmarc_fail += row.messages;
        }
        for f in &row.findings {
            let name = serde_json::to_value(f.class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *totals.findings.entry(name).or_default() += row.messages;
        }
    }
    rows.sort_by(|a, b| {
        (&a.day, &a.header_from, a.dmarc == "pass", &a.source_ip).cmp(&(
            &b.day,
            &b.header_from,
            b.dmarc == "pass",
            &b.source_ip,
        ))
    });
    Analysis {
        reports: infos,
        rows,
        totals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_networks() {
        assert!(is_ses("54.240.27.27".parse().unwrap()));
        assert!(is_ses("23.251.234.5".parse().unwrap()));
        assert!(!is_ses("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn relaxed_and_strict_alignment() {
        assert!(aligned(
            "mail.example.org",
            "example.org",
            Alignment::Relaxed
        ));
        assert!(aligned(
            "a.example.org",
            "b.example.org",
            Alignment::Relaxed
        ));
        assert!(!aligned(
            "mail.example.org",
            "example.org",
            Alignment::Strict
        ));
        assert!(!aligned("amazonses.com", "example.org", Alignment::Relaxed));
        assert!(aligned(
            "mail.example.co.uk",
            "example.co.uk",
            Alignment::Relaxed
        ));
        assert!(!aligned("other.co.uk", "example.co.uk", Alignment::Relaxed));
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(day(1_764_288_000), "2025-11-28");
    }
}
