//! The DMARC part of the verdict: the result for the header From domain, the policy that
//! applies, what a receiver does with the message, and why.
//!
//! The decision is mail-auth's `verify_dmarc` (RFC 7489 / RFC 9989: the DNS tree walk, the
//! organizational domain, identifier alignment, `sp=`/`np=`, `t=y`). Three pieces stay here,
//! each because mail-auth 0.13 does not offer it:
//! - per-identifier alignment (`aligned`, over `org_domain` and `dmarc_walk`): mail-auth
//!   only reports the aggregate (did *some* aligned identifier pass); its `is_aligned` and
//!   `organizational_domain` are private. The verdict shows alignment for every signature and
//!   for SPF, also for ones that failed, so a user sees which identifier is the problem. The
//!   walk mirrors mail-auth's (same records through the same parser, `psd=` honoured).
//! - the raw record text: `DmarcOutput` holds the parsed record only; the verdict shows the text.
//! - `pct=` (`pct_of`): RFC 7489 §6.6.4 sampling, dropped by DMARCbis and by mail-auth 0.13's
//!   parser, but still honoured by receivers that implement RFC 7489.

use mail_auth::DmarcResult;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Alignment, Dmarc, Policy, Psd};
use serde::{Deserialize, Serialize};

use super::dkim::DkimVerdict;
use super::outcome::{DkimOutcome, DmarcOutcome, DmarcPolicy, SpfOutcome};
use super::spf::SpfVerdict;
use crate::dns::DnsView;
use crate::domain_name;

/// The DMARC outcome for the header From domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DmarcVerdict {
    pub from_domain: String,
    /// `pass`, `fail` or `none` (no record / not applicable); `temperror` or `permerror` when
    /// the policy record itself could not be evaluated.
    pub result: DmarcOutcome,
    /// The policy that applies to this From domain (`sp=` for subdomains, `t=y` honoured):
    /// `none`, `quarantine`, `reject`, or empty ([`DmarcPolicy::NoRecord`]) when there is no
    /// record.
    pub policy: DmarcPolicy,
    /// What the receiver does: the policy if DMARC failed, else `none`.
    pub disposition: DmarcPolicy,
    /// The raw DMARC record that applied, if any.
    pub record: Option<String>,
    pub reason: String,
}

/// The DMARC records found walking from `domain` up to its TLD (RFC 9989 §4.10), longest first,
/// as (name, parsed, raw).
///
/// Kept (not mail-auth's): `dmarc_tree_walk` is private, and the verdict needs the raw text.
/// Records go through mail-auth's own `Dmarc` parser, so what counts as a record is the same.
fn dmarc_walk(view: &DnsView, domain: &str) -> Vec<(String, Dmarc, String)> {
    let mut found = Vec::new();
    // A top-level domain alone never holds the policy.
    for name in domain_name::parents(domain).filter(|n| n.contains('.')) {
        for raw in view.txt(&format!("_dmarc.{name}")) {
            if let Ok(record) = Dmarc::parse(raw.as_bytes()) {
                found.push((name.to_string(), record, raw.clone()));
                break;
            }
        }
    }
    found
}

/// The organizational domain of `domain`, mirroring mail-auth's tree walk: a `psd=n` record
/// marks it, a `psd=y` record marks its parent as a public suffix, otherwise it is the
/// shortest name holding a DMARC record. Without any record we fall back to the last two
/// labels, which is right for the common `name.tld` case (no public suffix list offline).
///
/// Kept (not mail-auth's): its `organizational_domain` is private; see [`aligned`].
pub(super) fn org_domain(view: &DnsView, domain: &str) -> String {
    let walk = dmarc_walk(view, domain);
    for (name, record, _) in &walk {
        match record.psd {
            Psd::No => return name.clone(),
            Psd::Yes if name != domain => {
                let depth = name.split('.').count() + 1;
                let labels: Vec<&str> = domain.split('.').collect();
                return labels[labels.len().saturating_sub(depth)..].join(".");
            }
            _ => {}
        }
    }
    if let Some((name, _, _)) = walk.last() {
        return name.clone();
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

/// Whether identifier `id_domain` aligns with the From domain under `mode` (RFC 7489 §3.1).
///
/// Kept (not mail-auth's): `DmarcOutput` only says whether *some* aligned identifier passed;
/// mail-auth's per-identifier `is_aligned` is private. The verdict reports alignment for every
/// DKIM signature and for SPF, passing or not, which is what a user needs to find the fault.
pub(super) fn aligned(view: &DnsView, id_domain: &str, from_domain: &str, mode: Alignment) -> bool {
    if id_domain.is_empty() || from_domain.is_empty() {
        return false;
    }
    id_domain == from_domain
        || (mode == Alignment::Relaxed
            && org_domain(view, id_domain) == org_domain(view, from_domain))
}

/// `pct=` from a raw record (RFC 7489 §6.3). Kept (not mail-auth's): DMARCbis and mail-auth
/// 0.13's parser dropped it, but RFC 7489 receivers still sample by it.
pub(super) fn pct_of(raw: &str) -> Option<u8> {
    raw.split(';').find_map(|tag| {
        let (k, v) = tag.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("pct"))
            .then(|| v.trim().parse::<u8>().ok().map(|p| p.min(100)))
            .flatten()
    })
}

/// The DMARC verdict: mail-auth's decision (`out`), worded, with the raw record, `pct=` notes
/// and the disposition a receiver applies.
pub(super) fn verdict(
    dns: &DnsView,
    out: &mail_auth::DmarcOutput,
    from_domain: &str,
    from_count: usize,
    dkim: &[DkimVerdict],
    spf: &SpfVerdict,
) -> DmarcVerdict {
    let raw = if from_domain.is_empty() {
        None
    } else {
        dmarc_walk(dns, from_domain)
            .into_iter()
            .next()
            .map(|(_, _, raw)| raw)
    };
    let mut v = DmarcVerdict {
        from_domain: from_domain.to_string(),
        result: DmarcOutcome::None,
        policy: DmarcPolicy::NoRecord,
        disposition: DmarcPolicy::None,
        record: None,
        reason: String::new(),
    };
    if from_domain.is_empty() {
        v.reason = "no usable From address, so DMARC does not apply".into();
        return v;
    }
    if out.domain().is_empty() {
        v.reason = if from_count > 1 {
            "several From addresses: DMARC does not apply".into()
        } else {
            "DMARC does not apply to this message".into()
        };
        return v;
    }
    let Some(record) = out.dmarc_record() else {
        let errored = [out.dkim_result(), out.spf_result()]
            .into_iter()
            .find(|r| matches!(r, DmarcResult::TempError(_) | DmarcResult::PermError(_)));
        match errored {
            Some(DmarcResult::TempError(e)) => {
                v.result = DmarcOutcome::TempError;
                v.reason = format!("DMARC record lookup failed: {e}");
            }
            Some(DmarcResult::PermError(e)) => {
                v.result = DmarcOutcome::PermError;
                v.reason = format!("DMARC record is invalid: {e}");
                v.record = raw;
            }
            _ => {
                v.reason =
                    format!("no DMARC record at _dmarc.{from_domain} or its organizational domain");
            }
        }
        return v;
    };
    v.record = raw.clone();
    v.policy = out.policy().into();

    let pass_via: Vec<String> = dkim
        .iter()
        .filter(|d| d.result == DkimOutcome::Pass && d.aligned)
        .map(|d| format!("DKIM d={}", d.domain))
        .chain(
            (spf.result == SpfOutcome::Pass && spf.aligned).then(|| format!("SPF {}", spf.domain)),
        )
        .collect();

    match out.result() {
        DmarcResult::Pass => {
            v.result = DmarcOutcome::Pass;
            v.reason = format!("aligned pass: {}", pass_via.join(", "));
        }
        DmarcResult::Fail(_) => {
            v.result = DmarcOutcome::Fail;
            let mut policy = out.policy();
            let mut notes = Vec::new();
            if record.t {
                notes.push("t=y (testing): policy lowered one step".to_string());
            }
            match raw.as_deref().and_then(pct_of) {
                // RFC 7489 §6.6.4: mail outside the pct sample gets the next weaker policy.
                Some(0) => {
                    policy = match policy {
                        Policy::Reject => Policy::Quarantine,
                        _ => Policy::None,
                    };
                    notes.push("pct=0: policy lowered one step".to_string());
                }
                Some(p) if p < 100 => notes.push(format!(
                    "pct={p}: a receiver applies this to {p}% of failing mail and the next weaker policy to the rest"
                )),
                _ => {}
            }
            v.disposition = policy.into();
            let dkim_part = if dkim.is_empty() {
                "no DKIM signature".to_string()
            } else if dkim.iter().any(|d| d.result == DkimOutcome::Pass) {
                "DKIM passed but d= is not aligned".to_string()
            } else {
                "no DKIM signature passed".to_string()
            };
            let spf_part = if spf.result == SpfOutcome::Pass {
                format!("SPF passed for {} but is not aligned", spf.domain)
            } else {
                format!("SPF {} for {}", spf.result, spf.domain)
            };
            v.reason = format!("no aligned pass: {dkim_part}; {spf_part}");
            if !notes.is_empty() {
                v.reason.push_str(&format!(" ({})", notes.join("; ")));
            }
        }
        DmarcResult::TempError(e) => {
            v.result = DmarcOutcome::TempError;
            v.reason = format!("could not decide: {e}");
        }
        DmarcResult::PermError(e) => {
            v.result = DmarcOutcome::PermError;
            v.reason = format!("could not decide: {e}");
        }
        DmarcResult::None => {
            v.reason = "DMARC does not apply".into();
        }
    }
    v
}
