//! The DKIM part of the verdict: one entry per DKIM-Signature, with the result a receiver
//! would report and whether `d=` aligns with the From domain.
//!
//! Verification is the relay's independent verifier ([`crate::dkim::verify`]), not mail-auth's
//! and not the signer's: mail-auth 0.13's relaxed body canonicalization is wrong for bodies
//! ending in whitespace-only lines, and a verdict computed with the signer's own
//! canonicalization would say `pass` for exactly the signatures receivers fail. Keys come from
//! the simulated DNS ([`DnsView`]), nothing else. The results are then handed to mail-auth's
//! DMARC evaluation as `DkimOutput`s (pass / fail / temperror per signature with its `d=`),
//! which is all DMARC reads of them.
//!
//! Wording as receivers report it: a body-hash mismatch, a bad signature, an expired one and a
//! revoked key (empty `p=`, RFC 6376 §3.6.1) are `fail`; a missing or unusable key record and a
//! malformed signature are `permerror`; a lookup that could not be made is `temperror`.

use std::time::{SystemTime, UNIX_EPOCH};

use mail_auth::DkimOutput;
use mail_auth::dkim::{DkimError, Signature};
use mail_auth::dmarc::Alignment;
use serde::{Deserialize, Serialize};

use super::dmarc::aligned;
use super::outcome::DkimOutcome;
use crate::dkim::verify::{self, Checked, Failure, KeyAnswer};
use crate::dns::DnsView;
use crate::domain_name::dns_name;

/// One DKIM-Signature's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DkimVerdict {
    /// `d=` (empty if the signature header could not be parsed).
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `a=`, e.g. `rsa-sha256`.
    pub algorithm: String,
    /// `pass`, `fail`, `neutral`, `temperror` or `permerror` (RFC 8601 §2.7.1).
    pub result: DkimOutcome,
    pub reason: String,
    /// Whether `d=` aligns with the header From domain under the DMARC record's `adkim`
    /// (relaxed if there is no record). This is identifier alignment only; DMARC also needs
    /// `result == "pass"`.
    pub aligned: bool,
}

/// Verifies every signature of `message` with keys from `dns` only.
pub(super) fn check(message: &[u8], dns: &DnsView) -> Vec<Checked> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let lookup = |d: &str, s: &str| -> KeyAnswer {
        let values = dns.txt(&format!("{s}._domainkey.{}", dns_name(d)));
        if values.is_empty() {
            KeyAnswer::NotFound
        } else {
            KeyAnswer::Records(values.to_vec())
        }
    };
    verify::verify(message, now, &lookup)
}

/// The result as a receiver would report it.
fn outcome(result: &Result<(), Failure>) -> (DkimOutcome, String) {
    match result {
        Ok(()) => (DkimOutcome::Pass, "signature verified".into()),
        Err(e @ (Failure::BodyHash | Failure::Signature | Failure::Expired | Failure::Revoked)) => {
            (DkimOutcome::Fail, e.to_string())
        }
        Err(e @ Failure::TempError(_)) => (DkimOutcome::TempError, e.to_string()),
        Err(e) => (DkimOutcome::PermError, e.to_string()),
    }
}

/// The `Signature` values mail-auth's DMARC check reads (`d=` only), one per checked signature.
pub(super) fn signatures(checked: &[Checked]) -> Vec<Signature> {
    checked
        .iter()
        .map(|c| Signature {
            d: c.domain.clone(),
            s: c.selector.clone(),
            ..Signature::default()
        })
        .collect()
}

/// The checked signatures as mail-auth's DMARC evaluation takes them.
pub(super) fn outputs<'x>(checked: &[Checked], signatures: &'x [Signature]) -> Vec<DkimOutput<'x>> {
    checked
        .iter()
        .zip(signatures)
        .map(|(c, s)| {
            let output = match &c.result {
                Ok(()) => DkimOutput::pass(),
                Err(Failure::TempError(e)) => DkimOutput::temp_err(mail_auth::Error::Dns(
                    mail_auth::DnsError::Resolver(e.clone()),
                )),
                Err(_) => DkimOutput::fail(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)),
            };
            output.with_signature(s)
        })
        .collect()
}

/// One verdict per signature, in header order.
pub(super) fn verdicts(
    checked: &[Checked],
    dns: &DnsView,
    from_domain: &str,
    adkim: Alignment,
) -> Vec<DkimVerdict> {
    checked
        .iter()
        .map(|c| {
            let (result, reason) = outcome(&c.result);
            let domain = dns_name(&c.domain);
            let is_aligned = aligned(dns, &domain, from_domain, adkim);
            let reason = if domain.is_empty() {
                reason
            } else {
                format!("{reason} (key {}._domainkey.{domain})", c.selector)
            };
            DkimVerdict {
                domain,
                selector: c.selector.clone(),
                algorithm: c.algorithm.clone(),
                result,
                reason,
                aligned: is_aligned,
            }
        })
        .collect()
}
