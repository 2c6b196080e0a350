//! The verdict a receiving mail server would reach on a delivered message: DKIM, SPF and DMARC.
//!
//! The SES simulator shows this for every message it "delivers" (like learndmarc.com), so a user
//! can see whether their relay setup would pass DMARC before touching real DNS. The checks are
//! mail-auth's real implementations of RFC 6376 (DKIM), RFC 7208 (SPF) and RFC 7489 / RFC 9989
//! (DMARC, including identifier alignment); only DNS is replaced: every lookup is answered from
//! a local [`DnsView`], and any name the view does not hold is answered "does not exist". The
//! resolver mail-auth is given has no name servers at all, so even a bug cannot send a packet.

use crate::dns::{Record, RecordData};
use mail_auth::common::crypto::CryptoError;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::{Alignment, Dmarc, Policy, Psd};
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::Spf;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, DnsError, DnssecStatus, MX,
    MessageAuthenticator, Parameters, RecordSet, ResolverCache, SpfResult, Txt,
};
use mail_auth::{dmarc::verify::DmarcParameters, spf::verify::SpfParameters};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

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

/// A local, read-only view of DNS: name (lowercase, no trailing dot) → TXT strings and MX.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsView {
    txt: HashMap<String, Vec<String>>,
    mx: HashMap<String, Vec<(u16, String)>>,
}

/// A DNS name as the views key it: trimmed, no trailing dot, lower case.
pub fn norm(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl DnsView {
    pub fn new() -> Self {
        Self::default()
    }

    /// The view a domain would have after publishing `records`.
    pub fn from_records(records: &[Record]) -> Self {
        let mut view = Self::new();
        for r in records {
            match &r.data {
                RecordData::Txt(v) => view.add_txt(&r.name, v),
                RecordData::Mx {
                    preference,
                    exchange,
                } => view.add_mx(&r.name, *preference, exchange),
            }
        }
        view
    }

    /// Adds one TXT record (its full, joined value) at `name`.
    pub fn add_txt(&mut self, name: &str, value: &str) {
        self.txt
            .entry(norm(name))
            .or_default()
            .push(value.to_string());
    }

    pub fn add_mx(&mut self, name: &str, preference: u16, exchange: &str) {
        self.mx
            .entry(norm(name))
            .or_default()
            .push((preference, norm(exchange)));
    }

    /// The MX records at `name` (empty if none).
    pub fn mx(&self, name: &str) -> &[(u16, String)] {
        self.mx.get(&norm(name)).map_or(&[], Vec::as_slice)
    }

    /// Removes every record at `name`.
    pub fn remove(&mut self, name: &str) {
        self.txt.remove(&norm(name));
        self.mx.remove(&norm(name));
    }

    /// The TXT values at `name` (empty if none).
    pub fn txt(&self, name: &str) -> &[String] {
        self.txt.get(&norm(name)).map_or(&[], Vec::as_slice)
    }
}

/// What the receiver concluded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Verdict {
    pub dkim: Vec<DkimVerdict>,
    pub spf: SpfVerdict,
    pub dmarc: DmarcVerdict,
}

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
    pub result: String,
    pub reason: String,
    /// Whether `d=` aligns with the header From domain under the DMARC record's `adkim`
    /// (relaxed if there is no record). This is identifier alignment only; DMARC also needs
    /// `result == "pass"`.
    pub aligned: bool,
}

/// The SPF outcome for the envelope sender (MAIL FROM).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SpfVerdict {
    /// The domain SPF checked: the envelope sender's, or the HELO name for a null sender.
    pub domain: String,
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror` or `permerror`.
    pub result: String,
    /// Whether `domain` aligns with the header From domain under `aspf` (identifier only).
    pub aligned: bool,
    pub reason: String,
}

/// The DMARC outcome for the header From domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DmarcVerdict {
    pub from_domain: String,
    /// `pass`, `fail` or `none` (no record / not applicable); `temperror` or `permerror` when
    /// the policy record itself could not be evaluated.
    pub result: String,
    /// The policy that applies to this From domain (`sp=` for subdomains, `t=y` honoured):
    /// `none`, `quarantine`, `reject`, or empty when there is no record.
    pub policy: String,
    /// What the receiver does: the policy if DMARC failed, else `none`.
    pub disposition: String,
    /// The raw DMARC record that applied, if any.
    pub record: Option<String>,
    pub reason: String,
}

/// Answers mail-auth's DNS lookups from a [`DnsView`]. Every name it does not know gets
/// "NXDOMAIN" (TXT) or an empty record set (MX/A/AAAA/PTR), so mail-auth never falls through to
/// its resolver.
struct OfflineDns {
    /// Keyed the way mail-auth keys its caches: lowercase FQDN *with* the trailing dot.
    txt: HashMap<Box<str>, Txt>,
    mx: HashMap<Box<str>, RecordSet<MX>>,
}

fn not_found() -> mail_auth::Error {
    mail_auth::Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))
}

fn empty_set<T>() -> RecordSet<T> {
    RecordSet {
        rrset: Arc::from(Vec::new()),
        dnssec_status: DnssecStatus::Indeterminate,
    }
}

/// Parses TXT values the way mail-auth's resolver does (first value that parses wins, else the
/// last error), choosing the record type from the name: DKIM keys live under `_domainkey`,
/// DMARC policies at `_dmarc`, and everything else we serve is SPF.
fn parse_txt(name: &str, values: &[String]) -> Txt {
    fn first_ok<T: TxtRecordParser + Into<Txt>>(values: &[String]) -> Txt {
        let mut result: mail_auth::Result<T> =
            Err(mail_auth::Error::Dns(DnsError::InvalidRecordType));
        for v in values {
            result = T::parse(v.as_bytes());
            if result.is_ok() {
                break;
            }
        }
        result.into()
    }
    if name.contains("._domainkey.") {
        first_ok::<DomainKey>(values)
    } else if name.starts_with("_dmarc.") {
        first_ok::<Dmarc>(values)
    } else {
        first_ok::<Spf>(values)
    }
}

impl OfflineDns {
    fn new(view: &DnsView) -> Self {
        let mut txt: HashMap<Box<str>, Txt> = view
            .txt
            .iter()
            .map(|(name, values)| (format!("{name}.").into_boxed_str(), parse_txt(name, values)))
            .collect();
        let has_ses_spf = view
            .txt("amazonses.com")
            .iter()
            .any(|v| v.to_ascii_lowercase().starts_with("v=spf1"));
        if !has_ses_spf {
            txt.insert(
                "amazonses.com.".into(),
                parse_txt("amazonses.com", &[SYNTHETIC_AMAZONSES_SPF.to_string()]),
            );
        }
        let mx = view
            .mx
            .iter()
            .map(|(name, entries)| {
                let mut sorted = entries.clone();
                sorted.sort();
                let rrset: Vec<MX> = sorted
                    .into_iter()
                    .map(|(preference, exchange)| MX {
                        exchanges: vec![format!("{exchange}.").into_boxed_str()].into(),
                        preference,
                    })
                    .collect();
                (
                    format!("{name}.").into_boxed_str(),
                    RecordSet {
                        rrset: Arc::from(rrset),
                        dnssec_status: DnssecStatus::Indeterminate,
                    },
                )
            })
            .collect();
        OfflineDns { txt, mx }
    }
}

impl ResolverCache<Box<str>, Txt> for OfflineDns {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Some(
            self.txt
                .get(name)
                .cloned()
                .unwrap_or_else(|| Txt::Error(not_found())),
        )
    }
    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    // The view is fixed; nothing learned elsewhere may be added to it.
    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

impl ResolverCache<Box<str>, RecordSet<MX>> for OfflineDns {
    fn get<Q>(&self, name: &Q) -> Option<RecordSet<MX>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Some(self.mx.get(name).cloned().unwrap_or_else(empty_set))
    }
    fn remove<Q>(&self, _: &Q) -> Option<RecordSet<MX>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _: Box<str>, _: RecordSet<MX>, _: std::time::Instant) {}
}

/// A and AAAA: the view holds none, so every name has an empty answer (NODATA).
macro_rules! empty_cache {
    ($k:ty, $v:ty) => {
        impl ResolverCache<$k, RecordSet<$v>> for OfflineDns {
            fn get<Q>(&self, _: &Q) -> Option<RecordSet<$v>>
            where
                $k: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                Some(empty_set())
            }
            fn remove<Q>(&self, _: &Q) -> Option<RecordSet<$v>>
            where
                $k: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                None
            }
            fn insert(&self, _: $k, _: RecordSet<$v>, _: std::time::Instant) {}
        }
    };
}
empty_cache!(Box<str>, Ipv4Addr);
empty_cache!(Box<str>, Ipv6Addr);
empty_cache!(IpAddr, Box<str>);

/// The domain of an address like `a@b`, `<a@b>`; for a null sender, `None`.
fn address_domain(addr: &str) -> Option<String> {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    let (_, domain) = addr.rsplit_once('@')?;
    let domain = norm(domain);
    (!domain.is_empty()).then_some(domain)
}

/// The DMARC records found walking from `domain` up to its TLD (RFC 9989 §4.10), longest first,
/// as (name, parsed, raw).
fn dmarc_walk(view: &DnsView, domain: &str) -> Vec<(String, Dmarc, String)> {
    let mut found = Vec::new();
    let mut name = domain;
    loop {
        if name.contains('.') {
            for raw in view.txt(&format!("_dmarc.{name}")) {
                if let Ok(record) = Dmarc::parse(raw.as_bytes()) {
                    found.push((name.to_string(), record, raw.clone()));
                    break;
                }
            }
        }
        match name.split_once('.') {
            Some((_, rest)) if !rest.is_empty() => name = rest,
            _ => break,
        }
    }
    found
}

/// The organizational domain of `domain`, mirroring mail-auth's tree walk: a `psd=n` record
/// marks it, a `psd=y` record marks its parent as a public suffix, otherwise it is the
/// shortest name holding a DMARC record. Without any record we fall back to the last two
/// labels, which is right for the common `name.tld` case (no public suffix list offline).
fn org_domain(view: &DnsView, domain: &str) -> String {
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

fn aligned(view: &DnsView, id_domain: &str, from_domain: &str, mode: Alignment) -> bool {
    if id_domain.is_empty() || from_domain.is_empty() {
        return false;
    }
    id_domain == from_domain
        || (mode == Alignment::Relaxed
            && org_domain(view, id_domain) == org_domain(view, from_domain))
}

fn policy_str(p: Policy) -> &'static str {
    match p {
        Policy::None | Policy::Unspecified => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
    }
}

/// `pct=` from a raw record (RFC 7489 §6.3; DMARCbis and mail-auth 0.13 dropped it).
fn pct_of(raw: &str) -> Option<u8> {
    raw.split(';').find_map(|tag| {
        let (k, v) = tag.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("pct"))
            .then(|| v.trim().parse::<u8>().ok().map(|p| p.min(100)))
            .flatten()
    })
}

fn dkim_verdict_text(result: &DkimResult) -> (&'static str, String) {
    match result {
        DkimResult::Pass => ("pass", "signature verified".into()),
        // RFC 6376 §6.1.3: a body hash mismatch is a permanent failure of the signature, which
        // receivers report as dkim=fail; mail-auth classes it as neutral.
        DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => (
            "fail",
            "body hash did not verify: the body changed after signing".into(),
        ),
        DkimResult::Neutral(e) => ("neutral", e.to_string()),
        DkimResult::Fail(mail_auth::Error::Crypto(CryptoError::FailedVerification)) => (
            "fail",
            "signature did not verify: a signed header changed after signing, or the published key does not match".into(),
        ),
        DkimResult::Fail(e) => ("fail", e.to_string()),
        // RFC 6376 §3.6.1: an empty p= revokes the key; signatures made with it fail.
        DkimResult::PermError(mail_auth::Error::Dkim(DkimError::RevokedPublicKey)) => {
            ("fail", "the key record has an empty p= (key revoked)".into())
        }
        DkimResult::PermError(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => (
            "permerror",
            "no key record published at the selector's _domainkey name".into(),
        ),
        DkimResult::PermError(e) => ("permerror", e.to_string()),
        DkimResult::TempError(e) => ("temperror", e.to_string()),
        DkimResult::None => ("neutral", "no result".into()),
    }
}

fn spf_str(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
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
            result: spf_str(spf_output.result()).into(),
            aligned: false,
            reason: "message unparseable; no From domain to align with".into(),
        };
        return v;
    };

    let dkim_output = auth
        .verify_dkim(
            Parameters::new(&parsed)
                .with_txt_cache(&cache)
                .with_mx_cache(&cache)
                .with_ipv4_cache(&cache)
                .with_ipv6_cache(&cache)
                .with_ptr_cache(&cache),
        )
        .await;

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

    let dkim: Vec<DkimVerdict> = dkim_output
        .iter()
        .map(|o| {
            let (result, reason) = dkim_verdict_text(o.result());
            let (domain, selector, algorithm) = match o.signature() {
                Some(s) => (
                    norm(&s.d),
                    s.s.clone(),
                    match s.a {
                        mail_auth::common::crypto::Algorithm::RsaSha256 => "rsa-sha256",
                        mail_auth::common::crypto::Algorithm::Ed25519Sha256 => "ed25519-sha256",
                        mail_auth::common::crypto::Algorithm::RsaSha1 => "rsa-sha1",
                    }
                    .to_string(),
                ),
                None => (String::new(), String::new(), String::new()),
            };
            let is_aligned = aligned(dns, &domain, &from_domain, adkim);
            let reason = if domain.is_empty() {
                reason
            } else {
                format!("{reason} (key {selector}._domainkey.{domain})")
            };
            DkimVerdict {
                domain,
                selector,
                algorithm,
                result: result.into(),
                reason,
                aligned: is_aligned,
            }
        })
        .collect();

    let spf_result = spf_output.result();
    let spf_aligned = aligned(dns, &mail_from_domain, &from_domain, aspf);
    let spf = SpfVerdict {
        domain: mail_from_domain.clone(),
        result: spf_str(spf_result).into(),
        aligned: spf_aligned,
        reason: {
            let mut r = format!(
                "{} for {sending_ip} per {}",
                spf_str(spf_result),
                mail_from_domain
            );
            if !spf_aligned && !from_domain.is_empty() {
                r.push_str(&format!(
                    "; not aligned with From domain {from_domain}{}",
                    if aspf == Alignment::Strict {
                        " (aspf=s needs an exact match)"
                    } else {
                        ""
                    }
                ));
            }
            r
        },
    };

    let dmarc = dmarc_verdict(
        dns,
        &dmarc_output,
        &from_domain,
        from_domains.len(),
        &dkim,
        &spf,
    );
    Verdict { dkim, spf, dmarc }
}

fn dmarc_verdict(
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
        result: "none".into(),
        policy: String::new(),
        disposition: "none".into(),
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
                v.result = "temperror".into();
                v.reason = format!("DMARC record lookup failed: {e}");
            }
            Some(DmarcResult::PermError(e)) => {
                v.result = "permerror".into();
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
    v.policy = policy_str(out.policy()).into();

    let pass_via: Vec<String> = dkim
        .iter()
        .filter(|d| d.result == "pass" && d.aligned)
        .map(|d| format!("DKIM d={}", d.domain))
        .chain((spf.result == "pass" && spf.aligned).then(|| format!("SPF {}", spf.domain)))
        .collect();

    match out.result() {
        DmarcResult::Pass => {
            v.result = "pass".into();
            v.reason = format!("aligned pass: {}", pass_via.join(", "));
        }
        DmarcResult::Fail(_) => {
            v.result = "fail".into();
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
            v.disposition = policy_str(policy).into();
            let dkim_part = if dkim.is_empty() {
                "no DKIM signature".to_string()
            } else if dkim.iter().any(|d| d.result == "pass") {
                "DKIM passed but d= is not aligned".to_string()
            } else {
                "no DKIM signature passed".to_string()
            };
            let spf_part = if spf.result == "pass" {
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
            v.result = "temperror".into();
            v.reason = format!("could not decide: {e}");
        }
        DmarcResult::PermError(e) => {
            v.result = "permerror".into();
            v.reason = format!("could not decide: {e}");
        }
        DmarcResult::None => {
            v.reason = "DMARC does not apply".into();
        }
    }
    v
}

fn error_verdict(reason: &str) -> Verdict {
    Verdict {
        dkim: Vec::new(),
        spf: SpfVerdict {
            domain: String::new(),
            result: "temperror".into(),
            aligned: false,
            reason: reason.into(),
        },
        dmarc: DmarcVerdict {
            from_domain: String::new(),
            result: "none".into(),
            policy: String::new(),
            disposition: "none".into(),
            record: None,
            reason: reason.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::Algorithm;
    use crate::dkim::keygen::{GeneratedKey, dkim_txt_value, generate};
    use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::OnceLock;

    const SES_IP: IpAddr = IpAddr::V4(SES_SENDING_IP);

    const MSG: &str = "From: App <app@example.org>\r\n\
To: user@example.net\r\n\
Subject: Your receipt\r\n\
Message-ID: <orig-1@example.org>\r\n\
Date: Mon, 6 Apr 2026 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Thanks for your order.\r\n";

    // RSA generation is slow in debug builds; share one key per algorithm across tests.
    fn key(alg: Algorithm) -> &'static GeneratedKey {
        static RSA: OnceLock<GeneratedKey> = OnceLock::new();
        static ED: OnceLock<GeneratedKey> = OnceLock::new();
        let cell = match alg {
            Algorithm::RsaSha256 => &RSA,
            Algorithm::Ed25519Sha256 => &ED,
        };
        cell.get_or_init(|| generate(alg, 2048).unwrap())
    }

    fn sign_with(
        alg: Algorithm,
        domain: &str,
        selector: &str,
        headers: &[&str],
        msg: &str,
    ) -> String {
        let pem = &key(alg).pkcs8_pem;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let sig = match alg {
            Algorithm::RsaSha256 => DkimSigner::from_key(
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).unwrap(),
            )
            .domain(domain)
            .selector(selector)
            .headers(headers.iter().copied())
            .sign(msg.as_bytes())
            .unwrap(),
            Algorithm::Ed25519Sha256 => {
                DkimSigner::from_key(Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()).unwrap())
                    .domain(domain)
                    .selector(selector)
                    .headers(headers.iter().copied())
                    .sign(msg.as_bytes())
                    .unwrap()
            }
        };
        format!("{}{msg}", sig.to_header())
    }

    const SAFE_HEADERS: &[&str] = &["From", "To", "Subject", "MIME-Version", "Content-Type"];

    fn sign(alg: Algorithm) -> String {
        sign_with(alg, "example.org", "s1", SAFE_HEADERS, MSG)
    }

    /// The DNS of a correctly set-up example.org (key at s1, MAIL FROM mail.example.org).
    fn good_dns(alg: Algorithm, dmarc: Option<&str>) -> DnsView {
        let mut dns = DnsView::new();
        dns.add_txt(
            "s1._domainkey.example.org",
            &dkim_txt_value(alg, &key(alg).public_key),
        );
        dns.add_txt("mail.example.org", "v=spf1 include:amazonses.com ~all");
        dns.add_mx(
            "mail.example.org",
            10,
            "feedback-smtp.us-east-1.amazonses.com",
        );
        if let Some(d) = dmarc {
            dns.add_txt("_dmarc.example.org", d);
        }
        dns
    }

    const BOUNCE: &str = "0100018f-abc@mail.example.org";
    /// SES's default MAIL FROM: passes SPF but never aligns with example.org.
    const SES_DEFAULT: &str = "0100018f-abc@amazonses.com";

    #[test]
    fn verdict_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let dns = DnsView::new();
        let fut = verdict(b"", "", SES_IP, &dns);
        assert_send(&fut);
    }

    #[tokio::test]
    async fn good_setup_passes_everything() {
        for alg in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
            let dns = good_dns(alg, Some("v=DMARC1; p=reject; rua=mailto:d@example.org"));
            let v = verdict(sign(alg).as_bytes(), BOUNCE, SES_IP, &dns).await;
            assert_eq!(v.dkim.len(), 1, "{alg}");
            let d = &v.dkim[0];
            assert_eq!(
                (d.domain.as_str(), d.selector.as_str(), d.algorithm.as_str()),
                ("example.org", "s1", alg.as_str())
            );
            assert_eq!(d.result, "pass", "{alg}: {}", d.reason);
            assert!(d.aligned);
            assert_eq!(v.spf.result, "pass", "{}", v.spf.reason);
            assert_eq!(v.spf.domain, "mail.example.org");
            assert!(v.spf.aligned);
            assert_eq!(v.dmarc.from_domain, "example.org");
            assert_eq!(v.dmarc.result, "pass", "{}", v.dmarc.reason);
            assert_eq!(v.dmarc.policy, "reject");
            assert_eq!(v.dmarc.disposition, "none");
            assert_eq!(
                v.dmarc.record.as_deref(),
                Some("v=DMARC1; p=reject; rua=mailto:d@example.org")
            );
            // Serialises for the simulator UI and back.
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
        }
    }

    #[tokio::test]
    async fn dkim_alone_carries_dmarc_with_default_mail_from() {
        let dns = good_dns(Algorithm::Ed25519Sha256, Some("v=DMARC1; p=quarantine"));
        let v = verdict(
            sign(Algorithm::Ed25519Sha256).as_bytes(),
            SES_DEFAULT,
            SES_IP,
            &dns,
        )
        .await;
        assert_eq!(
            v.spf.result, "pass",
            "synthetic amazonses.com SPF covers the SES IP"
        );
        assert_eq!(v.spf.domain, "amazonses.com");
        assert!(!v.spf.aligned);
        assert_eq!(v.dkim[0].result, "pass");
        assert_eq!(v.dmarc.result, "pass");
        assert!(
            v.dmarc.reason.contains("DKIM d=example.org"),
            "{}",
            v.dmarc.reason
        );
    }

    #[tokio::test]
    async fn body_changed_fails_dkim_and_dmarc() {
        for alg in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
            let signed = sign(alg).replace("Thanks for your order.", "Thanks for your order!");
            let dns = good_dns(alg, Some("v=DMARC1; p=reject"));
            let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
            assert_eq!(v.dkim[0].result, "fail", "{alg}: {}", v.dkim[0].reason);
            assert!(v.dkim[0].reason.contains("body"), "{}", v.dkim[0].reason);
            assert_eq!(v.dmarc.result, "fail");
            assert_eq!(v.dmarc.disposition, "reject");
            // With an aligned SPF pass DMARC still passes despite the broken signature.
            let v = verdict(signed.as_bytes(), BOUNCE, SES_IP, &dns).await;
            assert_eq!(v.dkim[0].result, "fail");
            assert_eq!(v.dmarc.result, "pass", "{}", v.dmarc.reason);
            assert_eq!(v.dmarc.disposition, "none");
        }
    }

    #[tokio::test]
    async fn ses_rewriting_signed_message_id_and_date_breaks_dkim() {
        let mut headers = SAFE_HEADERS.to_vec();
        headers.extend(["Message-ID", "Date"]);
        let signed = sign_with(Algorithm::RsaSha256, "example.org", "s1", &headers, MSG);
        // What SES does on acceptance (ses-smtp.md §5).
        let delivered = signed
            .replace(
                "Message-ID: <orig-1@example.org>",
                "Message-ID: <0100018f-abc@email.amazonses.com>",
            )
            .replace(
                "Date: Mon, 6 Apr 2026 10:00:00 +0000",
                "Date: Mon, 6 Apr 2026 10:00:03 +0000",
            );
        let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none"));
        // Untouched, it verifies…
        let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.dkim[0].result, "pass");
        // …rewritten, it does not, and with SPF unaligned DMARC fails (p=none: no action).
        let v = verdict(delivered.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.dkim[0].result, "fail", "{}", v.dkim[0].reason);
        assert!(v.dkim[0].reason.contains("header"), "{}", v.dkim[0].reason);
        assert_eq!(v.dmarc.result, "fail");
        assert_eq!(v.dmarc.policy, "none");
        assert_eq!(v.dmarc.disposition, "none");
    }

    #[tokio::test]
    async fn spf_custom_mail_from_passes_aligned() {
        let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject"));
        let unsigned = MSG;
        let v = verdict(unsigned.as_bytes(), "x@mail.example.org", SES_IP, &dns).await;
        assert!(v.dkim.is_empty());
        assert_eq!(v.spf.result, "pass", "{}", v.spf.reason);
        assert!(v.spf.aligned);
        assert_eq!(v.dmarc.result, "pass", "{}", v.dmarc.reason);
        assert!(v.dmarc.reason.contains("SPF mail.example.org"));
        // From an IP outside amazonses.com's ranges the ~all gives softfail, and DMARC fails.
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let v = verdict(unsigned.as_bytes(), "x@mail.example.org", other, &dns).await;
        assert_eq!(v.spf.result, "softfail");
        assert_eq!(v.dmarc.result, "fail");
        assert_eq!(v.dmarc.disposition, "reject");
    }

    #[tokio::test]
    async fn strict_spf_alignment_breaks_subdomain_mail_from() {
        let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject; aspf=s"));
        let v = verdict(MSG.as_bytes(), BOUNCE, SES_IP, &dns).await;
        assert_eq!(v.spf.result, "pass");
        assert!(!v.spf.aligned);
        assert!(v.spf.reason.contains("aspf=s"), "{}", v.spf.reason);
        assert_eq!(v.dmarc.result, "fail");
        assert_eq!(v.dmarc.disposition, "reject");
        // DKIM still carries DMARC under aspf=s.
        let v = verdict(sign(Algorithm::RsaSha256).as_bytes(), BOUNCE, SES_IP, &dns).await;
        assert!(!v.spf.aligned);
        assert_eq!(v.dmarc.result, "pass");
    }

    #[tokio::test]
    async fn strict_dkim_alignment() {
        // Signed as mail.example.org: relaxed aligns, adkim=s does not.
        let signed = sign_with(
            Algorithm::Ed25519Sha256,
            "mail.example.org",
            "s1",
            SAFE_HEADERS,
            MSG,
        );
        let mut dns = good_dns(Algorithm::Ed25519Sha256, Some("v=DMARC1; p=reject"));
        dns.add_txt(
            "s1._domainkey.mail.example.org",
            &dkim_txt_value(
                Algorithm::Ed25519Sha256,
                &key(Algorithm::Ed25519Sha256).public_key,
            ),
        );
        let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.dkim[0].result, "pass");
        assert!(v.dkim[0].aligned);
        assert_eq!(v.dmarc.result, "pass");
        let mut strict = dns.clone();
        strict.txt.insert(
            "_dmarc.example.org".into(),
            vec!["v=DMARC1; p=reject; adkim=s".into()],
        );
        let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &strict).await;
        assert_eq!(v.dkim[0].result, "pass");
        assert!(!v.dkim[0].aligned);
        assert_eq!(v.dmarc.result, "fail");
        assert!(v.dmarc.reason.contains("not aligned"), "{}", v.dmarc.reason);
    }

    #[tokio::test]
    async fn no_dmarc_record_means_none() {
        let dns = good_dns(Algorithm::RsaSha256, None);
        let v = verdict(sign(Algorithm::RsaSha256).as_bytes(), BOUNCE, SES_IP, &dns).await;
        assert_eq!(v.dkim[0].result, "pass");
        assert_eq!(v.dmarc.result, "none");
        assert_eq!(v.dmarc.policy, "");
        assert_eq!(v.dmarc.disposition, "none");
        assert_eq!(v.dmarc.record, None);
        assert!(
            v.dmarc.reason.contains("no DMARC record"),
            "{}",
            v.dmarc.reason
        );
    }

    #[tokio::test]
    async fn missing_key_record_is_an_error() {
        let mut dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=quarantine"));
        dns.txt.remove("s1._domainkey.example.org");
        let v = verdict(
            sign(Algorithm::RsaSha256).as_bytes(),
            SES_DEFAULT,
            SES_IP,
            &dns,
        )
        .await;
        assert!(
            matches!(v.dkim[0].result.as_str(), "permerror" | "temperror"),
            "{:?}",
            v.dkim[0]
        );
        assert!(v.dkim[0].reason.contains("s1._domainkey.example.org"));
        assert_eq!(v.dmarc.result, "fail");
        assert_eq!(v.dmarc.disposition, "quarantine");
    }

    #[tokio::test]
    async fn revoked_key_fails() {
        let mut dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none"));
        dns.txt.insert(
            "s1._domainkey.example.org".into(),
            vec!["v=DKIM1; k=rsa; p=".into()],
        );
        let v = verdict(
            sign(Algorithm::RsaSha256).as_bytes(),
            SES_DEFAULT,
            SES_IP,
            &dns,
        )
        .await;
        assert_eq!(v.dkim[0].result, "fail", "{:?}", v.dkim[0]);
        assert!(v.dkim[0].reason.contains("revoked"));
        assert_eq!(v.dmarc.result, "fail");
    }

    #[tokio::test]
    async fn wrong_key_published_fails() {
        let mut dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none"));
        let other = generate(Algorithm::RsaSha256, 2048).unwrap();
        dns.txt.insert(
            "s1._domainkey.example.org".into(),
            vec![dkim_txt_value(Algorithm::RsaSha256, &other.public_key)],
        );
        let v = verdict(
            sign(Algorithm::RsaSha256).as_bytes(),
            SES_DEFAULT,
            SES_IP,
            &dns,
        )
        .await;
        assert_eq!(v.dkim[0].result, "fail");
    }

    #[tokio::test]
    async fn subdomain_policy_and_pct() {
        // From a subdomain with no record of its own: the org record's sp= applies.
        let msg = MSG.replace("app@example.org", "app@news.example.org");
        let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none; sp=reject"));
        let v = verdict(msg.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.dmarc.from_domain, "news.example.org");
        assert_eq!(v.dmarc.result, "fail");
        assert_eq!(v.dmarc.policy, "reject");
        assert_eq!(v.dmarc.disposition, "reject");
        assert_eq!(
            v.dmarc.record.as_deref(),
            Some("v=DMARC1; p=none; sp=reject")
        );
        // The aligned custom MAIL FROM passes for the subdomain From under relaxed alignment.
        let v = verdict(msg.as_bytes(), BOUNCE, SES_IP, &dns).await;
        assert!(v.spf.aligned);
        assert_eq!(v.dmarc.result, "pass");

        // pct=0: nothing is sampled, so the next weaker policy applies.
        let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject; pct=0"));
        let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.dmarc.result, "fail");
        assert_eq!(v.dmarc.policy, "reject");
        assert_eq!(v.dmarc.disposition, "quarantine");
        assert!(v.dmarc.reason.contains("pct=0"));
        // t=y (DMARCbis testing flag) lowers the policy too.
        let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject; t=y"));
        let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.dmarc.disposition, "quarantine");
    }

    #[tokio::test]
    async fn unknown_names_are_nxdomain_not_network() {
        // An include of a domain the view does not know must be answered locally: "does not
        // exist" gives permerror (RFC 7208 §5.2), never temperror from a resolver.
        let mut dns = DnsView::new();
        dns.add_txt(
            "bounce.example.com",
            "v=spf1 include:nowhere.example.net -all",
        );
        let v = verdict(MSG.as_bytes(), "x@bounce.example.com", SES_IP, &dns).await;
        assert_eq!(v.spf.result, "permerror", "{}", v.spf.reason);
        // No SPF record at all → none.
        let v = verdict(MSG.as_bytes(), "x@unknown.example.com", SES_IP, &dns).await;
        assert_eq!(v.spf.result, "none");
        // A mechanism needing A/MX data for a name the view lacks simply does not match.
        let mut dns = DnsView::new();
        dns.add_txt("a.example.com", "v=spf1 a mx ptr -all");
        let v = verdict(MSG.as_bytes(), "x@a.example.com", SES_IP, &dns).await;
        assert_eq!(v.spf.result, "fail", "{}", v.spf.reason);
    }

    #[tokio::test]
    async fn explicit_amazonses_spf_overrides_synthetic() {
        let mut dns = DnsView::new();
        dns.add_txt("amazonses.com", "v=spf1 -all");
        let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.spf.result, "fail");
        let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &DnsView::new()).await;
        assert_eq!(v.spf.result, "pass");
    }

    #[tokio::test]
    async fn from_records_matches_dns_module() {
        let alg = Algorithm::RsaSha256;
        let records = crate::dns::domain_records(&crate::dns::DomainRecordsInput {
            domain: "example.org".into(),
            mail_from: "mail.example.org".into(),
            region: "us-east-1".into(),
            selectors: vec![crate::dns::SelectorInfo {
                selector: "s1".into(),
                algorithm: alg,
                public_key: key(alg).public_key.clone(),
                active: true,
            }],
            dmarc: Some("v=DMARC1; p=reject".into()),
        });
        let dns = DnsView::from_records(&records);
        assert_eq!(
            dns.mx["mail.example.org"],
            vec![(10, "feedback-smtp.us-east-1.amazonses.com".to_string())]
        );
        let v = verdict(sign(alg).as_bytes(), BOUNCE, SES_IP, &dns).await;
        assert_eq!(v.dkim[0].result, "pass");
        assert_eq!(v.spf.result, "pass");
        assert_eq!(v.dmarc.result, "pass");
    }

    #[tokio::test]
    async fn null_sender_and_garbage() {
        let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject"));
        // Null reverse-path: SPF is checked for the HELO name (amazonses.com subdomain, no record).
        let v = verdict(sign(Algorithm::RsaSha256).as_bytes(), "<>", SES_IP, &dns).await;
        assert_eq!(v.spf.domain, SES_HELO);
        assert_eq!(v.dmarc.result, "pass");
        // Not a message at all: no panic, DMARC not applicable.
        let v = verdict(b"\x00\xff garbage", BOUNCE, SES_IP, &dns).await;
        assert!(v.dkim.is_empty());
        assert_ne!(v.dmarc.result, "pass");
        // No From header.
        let v = verdict(b"Subject: x\r\n\r\nbody\r\n", BOUNCE, SES_IP, &dns).await;
        assert_eq!(v.dmarc.result, "none");
    }

    #[test]
    fn helpers() {
        assert_eq!(
            address_domain("<a@Example.ORG>").as_deref(),
            Some("example.org")
        );
        assert_eq!(address_domain("<>"), None);
        assert_eq!(address_domain("a@"), None);
        assert_eq!(pct_of("v=DMARC1; p=reject; pct=25"), Some(25));
        assert_eq!(pct_of("v=DMARC1; p=reject"), None);
        let mut dns = DnsView::new();
        assert_eq!(org_domain(&dns, "a.b.example.org"), "example.org");
        dns.add_txt("_dmarc.example.org", "v=DMARC1; p=none");
        assert_eq!(org_domain(&dns, "a.b.example.org"), "example.org");
        assert!(aligned(
            &dns,
            "mail.example.org",
            "example.org",
            Alignment::Relaxed
        ));
        assert!(!aligned(
            &dns,
            "mail.example.org",
            "example.org",
            Alignment::Strict
        ));
        assert!(!aligned(
            &dns,
            "example.com",
            "example.org",
            Alignment::Relaxed
        ));
        assert!(SES_SENDING_IP.octets()[..2] == [54, 240]);
    }
}
