//! The SPF part of the verdict: the result for the envelope sender (or the HELO name for a
//! null sender, RFC 7208 §2.3) and whether that domain aligns with the From domain.
//!
//! Evaluation is mail-auth's (RFC 7208); this words the result. SES sends from its own
//! addresses, so SPF can only pass for a custom MAIL FROM domain that includes
//! `amazonses.com`, and only aligns for DMARC when that domain sits under the From domain.

use std::net::IpAddr;

use mail_auth::dmarc::Alignment;
use serde::{Deserialize, Serialize};

use super::outcome::SpfOutcome;

/// The SPF outcome for the envelope sender (MAIL FROM).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SpfVerdict {
    /// The domain SPF checked: the envelope sender's, or the HELO name for a null sender.
    pub domain: String,
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror` or `permerror`.
    pub result: SpfOutcome,
    /// Whether `domain` aligns with the header From domain under `aspf` (identifier only).
    pub aligned: bool,
    pub reason: String,
}

/// The verdict for `result` on `mail_from_domain`, `aligned` already decided under `aspf`.
pub(super) fn verdict(
    result: SpfOutcome,
    sending_ip: IpAddr,
    mail_from_domain: &str,
    from_domain: &str,
    aligned: bool,
    aspf: Alignment,
) -> SpfVerdict {
    let mut reason = format!("{result} for {sending_ip} per {mail_from_domain}");
    if !aligned && !from_domain.is_empty() {
        reason.push_str(&format!(
            "; not aligned with From domain {from_domain}{}",
            if aspf == Alignment::Strict {
                " (aspf=s needs an exact match)"
            } else {
                ""
            }
        ));
    }
    SpfVerdict {
        domain: mail_from_domain.to_string(),
        result,
        aligned,
        reason,
    }
}
