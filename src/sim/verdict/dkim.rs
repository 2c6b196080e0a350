//! The DKIM part of the verdict: one entry per DKIM-Signature, with the result a receiver
//! would report and whether `d=` aligns with the From domain.
//!
//! Verification is mail-auth's (RFC 6376). What is ours is the wording, and two places where
//! receivers report differently from mail-auth's classification: a body-hash mismatch is
//! `fail` (RFC 6376 §6.1.3, mail-auth says neutral) and a revoked key (empty `p=`) is `fail`
//! (RFC 6376 §3.6.1, mail-auth says permerror).

use mail_auth::common::crypto::CryptoError;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Alignment;
use mail_auth::{DkimOutput, DkimResult, DnsError};
use serde::{Deserialize, Serialize};

use super::dmarc::aligned;
use super::outcome::DkimOutcome;
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

/// mail-auth's result as a receiver would report it, with a reason a person can act on.
fn outcome(result: &DkimResult) -> (DkimOutcome, String) {
    match result {
        DkimResult::Pass => (DkimOutcome::Pass, "signature verified".into()),
        // RFC 6376 §6.1.3: a body hash mismatch is a permanent failure of the signature, which
        // receivers report as dkim=fail; mail-auth classes it as neutral.
        DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => (
            DkimOutcome::Fail,
            "body hash did not verify: the body changed after signing".into(),
        ),
        DkimResult::Neutral(e) => (DkimOutcome::Neutral, e.to_string()),
        DkimResult::Fail(mail_auth::Error::Crypto(CryptoError::FailedVerification)) => (
            DkimOutcome::Fail,
            "signature did not verify: a signed header changed after signing, or the published key does not match".into(),
        ),
        DkimResult::Fail(e) => (DkimOutcome::Fail, e.to_string()),
        // RFC 6376 §3.6.1: an empty p= revokes the key; signatures made with it fail.
        DkimResult::PermError(mail_auth::Error::Dkim(DkimError::RevokedPublicKey)) => (
            DkimOutcome::Fail,
            "the key record has an empty p= (key revoked)".into(),
        ),
        DkimResult::PermError(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => (
            DkimOutcome::PermError,
            "no key record published at the selector's _domainkey name".into(),
        ),
        DkimResult::PermError(e) => (DkimOutcome::PermError, e.to_string()),
        DkimResult::TempError(e) => (DkimOutcome::TempError, e.to_string()),
        DkimResult::None => (DkimOutcome::Neutral, "no result".into()),
    }
}

/// The `a=` tag's name.
fn algorithm_name(a: mail_auth::common::crypto::Algorithm) -> &'static str {
    match a {
        mail_auth::common::crypto::Algorithm::RsaSha256 => "rsa-sha256",
        mail_auth::common::crypto::Algorithm::Ed25519Sha256 => "ed25519-sha256",
        mail_auth::common::crypto::Algorithm::RsaSha1 => "rsa-sha1",
    }
}

/// One verdict per signature mail-auth checked, in header order.
pub(super) fn verdicts(
    output: &[DkimOutput<'_>],
    dns: &DnsView,
    from_domain: &str,
    adkim: Alignment,
) -> Vec<DkimVerdict> {
    output
        .iter()
        .map(|o| {
            let (result, reason) = outcome(o.result());
            let (domain, selector, algorithm) = match o.signature() {
                Some(s) => (dns_name(&s.d), s.s.clone(), algorithm_name(s.a).to_string()),
                None => (String::new(), String::new(), String::new()),
            };
            let is_aligned = aligned(dns, &domain, from_domain, adkim);
            let reason = if domain.is_empty() {
                reason
            } else {
                format!("{reason} (key {selector}._domainkey.{domain})")
            };
            DkimVerdict {
                domain,
                selector,
                algorithm,
                result,
                reason,
                aligned: is_aligned,
            }
        })
        .collect()
}
