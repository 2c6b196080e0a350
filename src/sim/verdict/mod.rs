//! The verdict a receiving mail server would reach on a delivered message: DKIM, SPF and DMARC.
//!
//! The SES simulator shows this for every message it "delivers" (like learndmarc.com), so a user
//! can see whether their relay setup would pass DMARC before touching real DNS. DKIM is checked
//! by the relay's independent verifier ([`crate::dkim::verify`], which shares no
//! canonicalization with the signer, so a signer bug shows here as it would at a receiver);
//! SPF and DMARC are mail-auth's real implementations of RFC 7208 and RFC 7489 / RFC 9989
//! (DMARC, including identifier alignment); only DNS is replaced: every lookup is answered from
//! a local [`DnsView`], and any name the view does not hold is answered "does not exist" (the
//! adapter is `offline`; the resolver mail-auth is given has no name servers at all, so even a
//! bug cannot send a packet). Each part has its file: [`dkim`], [`spf`], [`dmarc`]; results are
//! the enums in [`outcome`], serialised as the Authentication-Results words.

pub mod dkim;
pub mod dmarc;
mod offline;
pub mod outcome;
pub mod spf;

use mail_auth::dmarc::Alignment;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, MessageAuthenticator, Parameters};
use mail_auth::{dmarc::verify::DmarcParameters, spf::verify::SpfParameters};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

pub use self::dkim::DkimVerdict;
pub use self::dmarc::DmarcVerdict;
pub use self::outcome::{DkimOutcome, DmarcOutcome, DmarcPolicy, SpfOutcome};
pub use self::spf::SpfVerdict;
use crate::dns::DnsView;
use crate::domain_name::dns_name;
use offline::OfflineDns;

/// The address the simulator pretends SES delivered from. It is the IP in a real SES
/// `X-SES-Outgoing: 2023.04.12-54.240.27.27` header (ses-smtp.md §5) and lies inside
/// 54.240.0.0/18, one of the ranges `include:amazonses.com` authorises, so SPF for a correctly
/// configured custom MAIL FROM domain passes for real.
pub const SES_SENDING_IP: Ipv4Addr = Ipv4Addr::new(54, 240, 27, 27);

/// Stand-in for amazonses.com's SPF record when the view does not provide one; covers
/// [`SES_SENDING_IP`] so `include:amazonses.com` is evaluated rather than failing as missing.
pub const SYNTHETIC_AMAZONSES_SPF: &str = "v=spf1 ip4:54.240.0.0/18 ip4:69.169.224.0/20 -all";

/// The HELO name SES's outbound servers use (form seen in Received headers); SPF falls back to
/// it for a null envelope sender (RFC 7208 §2.3).
const SES_HELO: &str = "a27-27.smtp-out.amazonses.com";
/// Our pretend receiving host (the SPF `%{r}` macro).
const RECEIVER_HOST: &str = "mx.verdict.dkim-relay.invalid";

/// What the receiver concluded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Verdict {
    pub dkim: Vec<DkimVerdict>,
    pub spf: SpfVerdict,
    pub dmarc: DmarcVerdict,
}

/// The domain of an address like `a@b`, `<a@b>`; for a null sender, `None`.
fn address_domain(addr: &str) -> Option<String> {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    let (_, domain) = addr.rsplit_once('@')?;
    let domain = dns_name(domain);
    (!domain.is_empty()).then_some(domain)
}

/// Evaluates `message` (as delivered) from `envelope_from` at `sending_ip`, with DNS answered
/// only from `dns`.
pub async fn verdict(
    message: &[u8],
    envelope_from: &str,
    sending_ip: IpAddr,
    dns: &DnsView,
) -> Verdict {
    let cache = OfflineDns::new(dns);

    // No name servers: every lookup must be answered by `cache`.
    let auth = match MessageAuthenticator::new(
        ResolverConfig::from_name_servers(Vec::new()),
        ResolverOpts::default(),
    ) {
        Ok(auth) => auth,
        Err(e) => return error_verdict(&format!("cannot set up the verifier: {e}")),
    };

    // SPF on the envelope sender; a null sender is checked against the HELO name.
    let sender = envelope_from
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let mail_from_domain = address_domain(sender).unwrap_or_else(|| SES_HELO.to_string());
    let spf_sender = if address_domain(sender).is_some() {
        sender.to_string()
    } else {
        format!("postmaster@{SES_HELO}")
    };
    let spf_output = auth
        .verify_spf(
            Parameters::new(SpfParameters::verify_mail_from(
                sending_ip,
                SES_HELO,
                RECEIVER_HOST,
                &spf_sender,
            ))
            .with_txt_cache(&cache)
            .with_mx_cache(&cache)
            .with_ipv4_cache(&cache)
            .with_ipv6_cache(&cache)
            .with_ptr_cache(&cache),
        )
        .await;

    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        let mut v = error_verdict("the message could not be parsed as RFC 5322");
        v.spf = SpfVerdict {
            domain: mail_from_domain,
            result: spf_output.result().into(),
            aligned: false,
            reason: "message unparseable; no From domain to align with".into(),
        };
        return v;
    };

    // DKIM by the independent verifier (not mail-auth's, not the signer's canonicalization).
    let checked = dkim::check(message, dns);
    let signatures = dkim::signatures(&checked);
    let dkim_output = dkim::outputs(&checked, &signatures);

    let dmarc_output = auth
        .verify_dmarc(
            Parameters::new(DmarcParameters::new(
                &parsed,
                &dkim_output,
                &mail_from_domain,
                &spf_output,
            ))
            .with_txt_cache(&cache)
            .with_mx_cache(&cache)
            .with_ipv4_cache(&cache)
            .with_ipv6_cache(&cache)
            .with_ptr_cache(&cache),
        )
        .await;

    // The From domain: mail-auth leaves it empty when DMARC does not apply (no From, or
    // several From domains), so take it from the header for display.
    let from_domains: Vec<String> = parsed
        .from
        .iter()
        .filter_map(|a| address_domain(a))
        .collect();
    let from_domain = if dmarc_output.domain().is_empty() {
        from_domains.first().cloned().unwrap_or_default()
    } else {
        dmarc_output.domain().to_string()
    };

    let record = dmarc_output.dmarc_record();
    let adkim = record.map_or(Alignment::Relaxed, |r| r.adkim);
    let aspf = record.map_or(Alignment::Relaxed, |r| r.aspf);

    let dkim = dkim::verdicts(&checked, dns, &from_domain, adkim);

    let spf_aligned = dmarc::aligned(dns, &mail_from_domain, &from_domain, aspf);
    let spf = spf::verdict(
        spf_output.result().into(),
        sending_ip,
        &mail_from_domain,
        &from_domain,
        spf_aligned,
        aspf,
    );

    let dmarc = dmarc::verdict(
        dns,
        &dmarc_output,
        &from_domain,
        from_domains.len(),
        &dkim,
        &spf,
    );
    Verdict { dkim, spf, dmarc }
}

fn error_verdict(reason: &str) -> Verdict {
    Verdict {
        dkim: Vec::new(),
        spf: SpfVerdict {
            domain: String::new(),
            result: SpfOutcome::TempError,
            aligned: false,
            reason: reason.into(),
        },
        dmarc: DmarcVerdict {
            from_domain: String::new(),
            result: DmarcOutcome::None,
            policy: DmarcPolicy::NoRecord,
            disposition: DmarcPolicy::None,
            record: None,
            reason: reason.into(),
        },
    }
}

#[cfg(test)]
mod tests;
