//! The periodic check behind `dkim_relay_key_dns_match`: is every configured selector's key
//! still what DNS publishes at `SELECTOR._domainkey.DOMAIN`?
//!
//! Why: a record deleted, revoked or overwritten with another key after the relay started makes
//! every signature with that selector fail at receivers, and nothing on the SMTP path notices
//! (SES accepts the message; the verdict comes back days later in DMARC reports, if at all).
//! [`crate::doctor::diagnose`] answers the question once, for a person; this answers it for the
//! running relay, with the same rule ([`crate::dns::dkim_record::check`]), so a dashboard can
//! alert on it.
//!
//! A lookup that gets no answer (timeout, SERVFAIL) is [`Published::Unknown`], never a
//! mismatch: a flaky resolver must not look like a broken record. The caller (the daemon's
//! periodic task) decides what to do with the outcomes; nothing here touches metrics.

use crate::dkim::domain::Domains;
use crate::dns::dkim_record::{DkimRecordOutcome, DkimRecordProblem, check};
use crate::dns::lookup::{Lookup, LookupError};

/// What DNS publishes for one selector, compared with its loaded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The record publishes the loaded key (with or without `t=y`).
    Matches,
    /// The record is missing, revoked, unusable or another key.
    Differs(DkimRecordProblem),
    /// No answer: whether it matches is not known this round.
    Unknown(LookupError),
}

impl Published {
    /// `Some(true)` matches, `Some(false)` does not, `None` unknown.
    pub fn matches(&self) -> Option<bool> {
        match self {
            Published::Matches => Some(true),
            Published::Differs(_) => Some(false),
            Published::Unknown(_) => None,
        }
    }
}

/// One selector's outcome. `domain` and `selector` come from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorRecord {
    pub domain: String,
    pub selector: String,
    pub outcome: Published,
}

/// Looks up every configured selector's key record (active and published-only ones) and
/// compares it with the loaded key. One lookup at a time: a handful of selectors, hourly.
pub async fn check_published(domains: &Domains, lookup: &dyn Lookup) -> Vec<SelectorRecord> {
    let mut out = Vec::new();
    for d in domains.values() {
        for (selector, key) in &d.selectors {
            let name = format!("{selector}._domainkey.{}", d.name);
            let outcome = match lookup.txt(&name).await {
                Ok(records) => match check(key, &records) {
                    DkimRecordOutcome::Matches | DkimRecordOutcome::Testing => Published::Matches,
                    DkimRecordOutcome::Problem(p) => Published::Differs(p),
                },
                Err(e) => Published::Unknown(e),
            };
            out.push(SelectorRecord {
                domain: d.name.clone(),
                selector: selector.clone(),
                outcome,
            });
        }
    }
    out
}
