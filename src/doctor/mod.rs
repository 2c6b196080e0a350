//! `dkim-relay doctor`: compares what live DNS publishes with what the configuration needs, and
//! says what to fix.
//!
//! Why: every failure here is silent in production. A DKIM record that is missing, revoked
//! (`p=` empty) or still carries the key from before a rotation makes every signature fail; a
//! second MX or a second SPF record on the MAIL FROM domain makes SES fall back to its own
//! MAIL FROM (SPF no longer aligns) or SPF a permerror (RFC 7208 §4.5); a DMARC record with
//! `aspf=s` and a MAIL FROM subdomain, `p=none` or no `rua` quietly weakens protection (SES
//! DMARC guide, RFC 7489). The relay cannot see any of this while it signs.
//!
//! The evaluation functions take records and return [`Check`]s; they do no I/O, so each rule
//! is unit-tested. [`diagnose`] fetches the records through a [`Lookup`] (which lives in
//! [`crate::dns::lookup`], as does the DKIM key-record rule [`crate::dns::dkim_record`] that also
//! decides `require_published` at reload) and calls them. doctor is diagnosis plus wording.
//! [`ses`] does the same for what the SES API v2 reports (`doctor --ses`: identities, custom
//! MAIL FROM, account). [`published`] is the key-record half of it that the running relay
//! repeats periodically for its metrics.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::dkim::Algorithm;
use crate::dkim::domain::{Domain, Domains};
use crate::dkim::key::SelectorKey;
use crate::dns::dkim_record::{DkimRecordOutcome, DkimRecordProblem, tag, tag_list};
use crate::dns::lookup::{Lookup, LookupError};

pub mod published;
pub mod ses;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One finding: what was checked (a DNS name and what about it), the outcome, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    /// E.g. `s2026a._domainkey.example.org TXT`.
    pub subject: String,
    pub message: String,
    /// What to do; absent on a PASS.
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            status,
            subject: subject.into(),
            message: message.into(),
            fix: None,
        }
    }
    fn pass(subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(Status::Pass, subject, message)
    }
    fn warn(
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(Status::Warn, subject, message).with_fix(fix)
    }
    fn fail(
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(Status::Fail, subject, message).with_fix(fix)
    }
    fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
    fn demote(mut self) -> Check {
        if self.status == Status::Fail {
            self.status = Status::Warn;
        }
        self
    }
}

/// One line: `FAIL subject: message — fix: …`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.subject, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

/// Whether any check failed (doctor exits non-zero).
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// Checks the TXT records at `SELECTOR._domainkey.DOMAIN` against the configured key (the rule
/// is [`crate::dns::dkim_record`]; this words the finding and the fix).
pub fn dkim_record(domain: &str, key: &SelectorKey, records: &[String]) -> Check {
    let name = format!("{}._domainkey.{domain}", key.selector);
    let subject = format!("{name} TXT");
    let expected = crate::dkim::keygen::dkim_txt_value(key.algorithm, &key.public_key);
    let publish = format!("publish {name} TXT \"{expected}\" (`dkim-relay dns` prints it)");
    match crate::dns::dkim_record::check(key, records) {
        DkimRecordOutcome::Matches => Check::pass(
            subject,
            format!(
                "published and matches {} ({})",
                key.key_file.display(),
                key.algorithm
            ),
        ),
        DkimRecordOutcome::Testing => Check::warn(
            subject,
            "matches, but t=y (testing): receivers may treat signatures as unsigned",
            "remove t=y once signing works",
        ),
        DkimRecordOutcome::Problem(problem) => {
            let fix = match problem {
                DkimRecordProblem::Several(_) => format!("keep only one: {publish}"),
                DkimRecordProblem::Revoked => {
                    format!("sign with a selector whose key is published, or {publish}")
                }
                _ => publish,
            };
            Check::fail(subject, problem.to_string(), fix)
        }
    }
}

/// Key size and rotation age of one selector.
pub fn key_checks(
    domain: &str,
    key: &SelectorKey,
    max_age: Duration,
    now: SystemTime,
) -> Vec<Check> {
    let subject = format!("{}._domainkey.{domain} key", key.selector);
    let mut out = Vec::new();
    match (key.algorithm, key.bits) {
        (Algorithm::RsaSha256, Some(bits)) if bits < 2048 => out.push(Check::warn(
            subject.clone(),
            format!("{bits}-bit RSA key"),
            format!(
                "rotate to a 2048-bit key: `dkim-relay keygen --domain {domain} --selector NEW`"
            ),
        )),
        (Algorithm::RsaSha256, bits) => out.push(Check::pass(
            subject.clone(),
            format!(
                "RSA key, {} bits",
                bits.map_or("?".to_string(), |b| b.to_string())
            ),
        )),
        (Algorithm::Ed25519Sha256, _) => {
            out.push(Check::pass(subject.clone(), "Ed25519 key (RFC 8463)"))
        }
    }
    if let Some(modified) = key.modified
        && let Ok(age) = now.duration_since(modified)
    {
        let days = age.as_secs() / 86_400;
        let max_days = max_age.as_secs() / 86_400;
        if age > max_age {
            out.push(Check::warn(
                subject,
                format!("the key file is {days} days old (rotation age {max_days} days)"),
                "rotate: keygen a new selector, publish it, doctor, sign with it, reload, retire \
                 the old one after a week (README: Rotating keys)",
            ));
        } else {
            out.push(Check::pass(
                subject,
                format!("{days} days old (rotation age {max_days} days)"),
            ));
        }
    }
    out
}

/// The custom MAIL FROM domain's MX: exactly one, SES's feedback endpoint for `region`.
pub fn mail_from_mx(mail_from: &str, region: &str, mx: &[(u16, String)]) -> Check {
    let subject = format!("{mail_from} MX");
    let want = format!("feedback-smtp.{region}.amazonses.com");
    let fix = format!("publish exactly one MX: {mail_from} MX 10 {want}");
    match mx {
        [] => Check::fail(
            subject,
            "no MX record: SES cannot verify the custom MAIL FROM domain and falls back to its \
             own (SPF no longer aligns)",
            fix,
        ),
        [(_, host)] if host.eq_ignore_ascii_case(&want) => {
            Check::pass(subject, format!("one MX, {want}"))
        }
        [(_, host)] if host.starts_with("feedback-smtp.") && host.ends_with(".amazonses.com") => {
            Check::warn(
                subject,
                format!(
                    "MX {host} is SES's feedback endpoint for another region; feedback is \
                     routed on to {region}, with a delay"
                ),
                fix,
            )
        }
        [(_, host)] => Check::fail(
            subject,
            format!("MX {host} is not SES's feedback endpoint"),
            fix,
        ),
        many => Check::fail(
            subject,
            format!(
                "{} MX records ({}): SES requires exactly one",
                many.len(),
                many.iter()
                    .map(|(p, h)| format!("{p} {h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        ),
    }
}

/// `v=spf1` followed by a space or the end (RFC 7208 §4.5); byte-wise, so any DNS data is safe.
fn is_spf(record: &str) -> bool {
    let r = record.trim_start().as_bytes();
    r.len() >= 6 && r[..6].eq_ignore_ascii_case(b"v=spf1") && r.get(6).is_none_or(|c| *c == b' ')
}

/// The MAIL FROM domain's SPF: exactly one `v=spf1` record (two are a permerror, RFC 7208
/// §4.5) that authorises SES (`include:amazonses.com`).
pub fn mail_from_spf(mail_from: &str, txt: &[String]) -> Check {
    let subject = format!("{mail_from} SPF");
    let fix = format!(
        "publish exactly one: {mail_from} TXT \"{}\"",
        crate::dns::SES_MAIL_FROM_SPF
    );
    let spf: Vec<&String> = txt.iter().filter(|r| is_spf(r)).collect();
    match spf.as_slice() {
        [] => Check::fail(subject, "no SPF record (v=spf1)", fix),
        [one] => {
            let terms: Vec<String> = one
                .split_whitespace()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            let includes = terms
                .iter()
                .any(|t| t == "include:amazonses.com" || t == "+include:amazonses.com");
            if !includes {
                return Check::fail(
                    subject,
                    format!("\"{one}\" does not authorise SES (no include:amazonses.com)"),
                    fix,
                );
            }
            if terms.iter().any(|t| t == "+all" || t == "all") {
                return Check::warn(
                    subject,
                    format!("\"{one}\" ends in +all: anyone may send as this domain"),
                    fix,
                );
            }
            Check::pass(subject, format!("\"{one}\" authorises SES"))
        }
        many => Check::fail(
            subject,
            format!(
                "{} SPF records: receivers return permerror (RFC 7208 §4.5)",
                many.len()
            ),
            format!("merge them into one; {fix}"),
        ),
    }
}

/// The From domain's DMARC record, judged as the SES DMARC guide explains: one record that
/// parses; `aspf=s` with a MAIL FROM subdomain breaks SPF alignment; `adkim=s` with subdomain
/// From addresses breaks DKIM alignment; `p=none` only monitors; `pct<100` applies the policy to
/// part of the mail; no `rua` means no aggregate reports.
pub fn dmarc(domain: &Domain, txt: &[String]) -> Vec<Check> {
    let name = format!("_dmarc.{}", domain.name);
    let subject = format!("{name} TXT");
    let suggested = domain
        .dmarc
        .clone()
        .unwrap_or_else(|| format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{}", domain.name));
    let publish = format!("publish {name} TXT \"{suggested}\"");
    let records: Vec<&String> = txt
        .iter()
        .filter(|r| r.trim_start().starts_with("v=DMARC1"))
        .collect();
    let record = match records.as_slice() {
        [] => {
            return vec![Check::fail(
                subject,
                "no DMARC record: receivers apply no policy and send no reports",
                publish,
            )];
        }
        [one] => *one,
        many => {
            return vec![Check::fail(
                subject,
                format!(
                    "{} DMARC records: receivers ignore them all (RFC 7489 §6.6.3)",
                    many.len()
                ),
                format!("keep exactly one; {publish}"),
            )];
        }
    };
    let Some(tags) = tag_list(record) else {
        return vec![Check::fail(
            subject,
            format!("\"{record}\" does not parse as tag=value; …"),
            publish,
        )];
    };
    let policy = tag(&tags, "p").map(str::to_ascii_lowercase);
    let policy = match policy.as_deref() {
        Some(p @ ("none" | "quarantine" | "reject")) => p.to_string(),
        Some(other) => {
            return vec![Check::fail(
                subject,
                format!("p={other}: must be none, quarantine or reject"),
                publish,
            )];
        }
        None => {
            return vec![Check::fail(
                subject,
                "no p= tag (required right after v=DMARC1)",
                publish,
            )];
        }
    };
    let mut out = vec![Check::pass(subject.clone(), format!("\"{record}\""))];
    let strict = |t: &str| tag(&tags, t).is_some_and(|v| v.eq_ignore_ascii_case("s"));
    if strict("aspf") && domain.envelope.mail_from != domain.name {
        out.push(Check::warn(
            subject.clone(),
            format!(
                "aspf=s: SPF passes for {} but does not align with {} under strict alignment, so \
                 DMARC rests on DKIM alone",
                domain.envelope.mail_from, domain.name
            ),
            "remove aspf=s (relaxed alignment is the default)",
        ));
    }
    if strict("adkim") && domain.subdomains {
        out.push(Check::warn(
            subject.clone(),
            format!(
                "adkim=s: mail From a subdomain of {} is signed with d={}, which does not align \
                 under strict alignment",
                domain.name, domain.name
            ),
            "remove adkim=s, or configure each subdomain as its own [domains] entry",
        ));
    }
    if policy == "none" {
        out.push(Check::warn(
            subject.clone(),
            "p=none: monitoring only, receivers take no action on failing mail",
            "once the aggregate reports show only your own mail passing, move to p=quarantine, \
             then p=reject",
        ));
    }
    if let Some(pct) = tag(&tags, "pct")
        && pct.parse::<u8>().is_ok_and(|n| n < 100)
    {
        out.push(Check::warn(
            subject.clone(),
            format!("pct={pct}: the policy applies to {pct}% of failing mail only"),
            "raise pct to 100 (or remove it) once the rollout is done",
        ));
    }
    if tag(&tags, "rua").is_none_or(str::is_empty) {
        out.push(Check::warn(
            subject,
            "no rua=: you get no aggregate reports, so you cannot see who sends as this domain",
            format!("add rua=mailto:dmarc-reports@{}", domain.name),
        ));
    }
    out
}

fn lookup_failed(subject: String, e: &LookupError) -> Check {
    Check::fail(
        subject,
        format!("could not look up: {e}"),
        "check the name server (--nameserver, [dns] nameserver) and retry",
    )
}

/// Every check for every configured domain, in a stable order (per domain: selectors, MAIL
/// FROM MX and SPF, DMARC). Problems with published-only selectors are warnings: they do not
/// sign yet (or any more).
/// `key_max_age` is the rotation age (`[reload] key_max_age_days`).
pub async fn diagnose(
    domains: &Domains,
    key_max_age: Duration,
    region: &str,
    lookup: &dyn Lookup,
    now: SystemTime,
) -> Vec<Check> {
    let max_age = key_max_age;
    let mut out = Vec::new();
    for d in domains.values() {
        for key in d.selectors.values() {
            let active = d.active.iter().any(|a| a.selector == key.selector);
            let name = format!("{}._domainkey.{}", key.selector, d.name);
            let check = match lookup.txt(&name).await {
                Ok(records) => dkim_record(&d.name, key, &records),
                Err(e) => lookup_failed(format!("{name} TXT"), &e),
            };
            if active {
                out.push(check);
            } else {
                let mut c = check.demote();
                c.message = format!("(published only, not signing) {}", c.message);
                out.push(c);
            }
            out.extend(key_checks(&d.name, key, max_age, now));
        }
        if !d.envelope.mail_from.is_empty() {
            out.push(match lookup.mx(&d.envelope.mail_from).await {
                Ok(mx) => mail_from_mx(&d.envelope.mail_from, region, &mx),
                Err(e) => lookup_failed(format!("{} MX", d.envelope.mail_from), &e),
            });
            out.push(match lookup.txt(&d.envelope.mail_from).await {
                Ok(txt) => mail_from_spf(&d.envelope.mail_from, &txt),
                Err(e) => lookup_failed(format!("{} SPF", d.envelope.mail_from), &e),
            });
        }
        let dmarc_name = format!("_dmarc.{}", d.name);
        match lookup.txt(&dmarc_name).await {
            Ok(txt) => out.extend(dmarc(d, &txt)),
            Err(e) => out.push(lookup_failed(format!("{dmarc_name} TXT"), &e)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
