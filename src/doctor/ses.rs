//! `dkim-relay doctor --ses`: what Amazon SES itself is set to, checked against what the
//! configuration needs.
//!
//! DNS can be perfect and mail still go wrong on the SES side, silently: an identity that is not
//! verified for sending (SES answers 554 for every message), a custom MAIL FROM domain other than
//! the one we publish records for, or one SES has not verified (its MX is not found) — then, with
//! `BehaviorOnMxFailure = USE_DEFAULT_VALUE`, SES sends with its own `amazonses.com` MAIL FROM and
//! SPF stops aligning with the From domain, with no error anywhere (SES developer guide,
//! "Using a custom MAIL FROM domain"). An account in the sandbox only delivers to verified
//! addresses; a send rate above the account's `MaxSendRate` is throttled (454).
//!
//! The data comes from the SES API v2 (`GetEmailIdentity` per configured domain, `GetAccount`),
//! SigV4-signed, through [`api`]; the evaluation functions here take the decoded responses and
//! return [`Check`]s, with no I/O, so every rule is unit-tested. A request that fails becomes a
//! FAIL line naming the operation and SES's error, never a credential.

pub mod api;
pub mod credentials;

use serde::Deserialize;

use super::Check;
use crate::dkim::domain::Domains;
pub use api::{ApiError, SesClient, SesEndpoint};
pub use credentials::{CredentialError, Credentials};

/// `GetEmailIdentity`'s response, the fields doctor reads (SES API v2 reference).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EmailIdentity {
    pub identity_type: Option<String>,
    pub verified_for_sending_status: bool,
    /// PENDING | SUCCESS | FAILED | TEMPORARY_FAILURE | NOT_STARTED.
    pub verification_status: Option<String>,
    pub dkim_attributes: Option<DkimAttributes>,
    pub mail_from_attributes: Option<MailFromAttributes>,
}

/// `DkimAttributes`: whether SES itself signs (Easy DKIM or BYODKIM).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DkimAttributes {
    pub signing_enabled: bool,
    /// PENDING | SUCCESS | FAILED | TEMPORARY_FAILURE | NOT_STARTED.
    pub status: Option<String>,
    /// AWS_SES (Easy DKIM) | EXTERNAL (BYODKIM) | `AWS_SES_<region>` (global endpoints).
    pub signing_attributes_origin: Option<String>,
    pub current_signing_key_length: Option<String>,
}

/// `MailFromAttributes`: the identity's custom MAIL FROM domain.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MailFromAttributes {
    pub mail_from_domain: Option<String>,
    /// PENDING | SUCCESS | FAILED | TEMPORARY_FAILURE.
    pub mail_from_domain_status: Option<String>,
    /// USE_DEFAULT_VALUE | REJECT_MESSAGE.
    pub behavior_on_mx_failure: Option<String>,
}

/// `GetAccount`'s response, the fields doctor reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Account {
    pub production_access_enabled: bool,
    pub sending_enabled: bool,
    /// HEALTHY | PROBATION | SHUTDOWN.
    pub enforcement_status: Option<String>,
    pub send_quota: Option<SendQuota>,
}

/// `SendQuota`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct SendQuota {
    #[serde(rename = "Max24HourSend")]
    pub max_24_hour_send: Option<f64>,
    #[serde(rename = "MaxSendRate")]
    pub max_send_rate: Option<f64>,
    #[serde(rename = "SentLast24Hours")]
    pub sent_last_24_hours: Option<f64>,
}

fn norm(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The identity checks for one configured domain: verified for sending, custom MAIL FROM
/// (equal to ours, verified, `REJECT_MESSAGE`), and whether SES signs too. `identity` is `None`
/// when SES answered 404 (no such identity in this region).
pub fn identity_checks(
    domain: &str,
    mail_from: &str,
    region: &str,
    identity: Option<&EmailIdentity>,
) -> Vec<Check> {
    let subject = format!("SES identity {domain}");
    let Some(identity) = identity else {
        return vec![Check::fail(
            subject,
            format!("not an SES identity in {region}: SES refuses mail From {domain} (554)"),
            format!(
                "create and verify it in {region}: `aws sesv2 create-email-identity \
                 --email-identity {domain} --region {region}`, then publish the records SES gives"
            ),
        )];
    };
    let mut out = Vec::new();
    let status = identity.verification_status.as_deref().unwrap_or("unknown");
    if identity.verified_for_sending_status {
        out.push(Check::pass(
            subject,
            format!("verified for sending in {region}"),
        ));
    } else {
        out.push(Check::fail(
            subject,
            format!(
                "not verified for sending (VerificationStatus {status}): SES refuses mail From \
                 {domain} (554)"
            ),
            format!(
                "publish the verification records SES shows for {domain} and wait for \
                 VerificationStatus SUCCESS (`aws sesv2 get-email-identity --email-identity \
                 {domain} --region {region}`)"
            ),
        ));
    }
    out.push(mail_from_check(
        domain,
        mail_from,
        identity.mail_from_attributes.as_ref(),
    ));
    out.push(dkim_check(domain, identity.dkim_attributes.as_ref()));
    out
}

fn put_mail_from(domain: &str, mail_from: &str) -> String {
    format!(
        "`aws sesv2 put-email-identity-mail-from-attributes --email-identity {domain} \
         --mail-from-domain {mail_from} --behavior-on-mx-failure REJECT_MESSAGE`"
    )
}

/// The custom MAIL FROM domain SES uses for `domain` against our `mail_from`.
fn mail_from_check(domain: &str, mail_from: &str, attrs: Option<&MailFromAttributes>) -> Check {
    let subject = format!("SES MAIL FROM {domain}");
    let theirs = attrs
        .and_then(|a| a.mail_from_domain.as_deref())
        .map(norm)
        .filter(|m| !m.is_empty());
    let ours = norm(mail_from);
    let Some(theirs) = theirs else {
        if ours.is_empty() {
            return Check::warn(
                subject,
                "no custom MAIL FROM domain (here or in SES): the envelope sender is under \
                 amazonses.com, so SPF never aligns with the From domain and DMARC rests on \
                 DKIM alone",
                format!(
                    "set mail_from = \"mail.{domain}\" in [domains.\"{domain}\"], publish its \
                     records (`dkim-relay dns`), then {}",
                    put_mail_from(domain, &format!("mail.{domain}"))
                ),
            );
        }
        return Check::fail(
            subject,
            format!(
                "SES has no custom MAIL FROM domain for {domain}: it sends with its own \
                 amazonses.com MAIL FROM, so SPF does not align with the From domain \
                 (the configuration expects {ours})"
            ),
            put_mail_from(domain, &ours),
        );
    };
    if ours.is_empty() {
        return Check::warn(
            subject,
            format!(
                "SES uses the custom MAIL FROM {theirs}, but the configuration has no mail_from, \
                 so doctor and `dkim-relay dns` do not check or print its records"
            ),
            format!("set mail_from = \"{theirs}\" in [domains.\"{domain}\"]"),
        );
    }
    if theirs != ours {
        return Check::fail(
            subject,
            format!(
                "SES uses the custom MAIL FROM {theirs}, the configuration says {ours}: the \
                 records doctor checks are not the ones SES needs"
            ),
            format!(
                "make them one: {} (or set mail_from = \"{theirs}\")",
                put_mail_from(domain, &ours)
            ),
        );
    }
    let status = attrs
        .and_then(|a| a.mail_from_domain_status.as_deref())
        .unwrap_or("unknown");
    let behavior = attrs
        .and_then(|a| a.behavior_on_mx_failure.as_deref())
        .unwrap_or("unknown");
    let rejects = behavior.eq_ignore_ascii_case("REJECT_MESSAGE");
    if !status.eq_ignore_ascii_case("SUCCESS") {
        let consequence = if rejects {
            "SES rejects every message (MailFromDomainNotVerified) until it is".to_string()
        } else {
            format!(
                "with BehaviorOnMxFailure {behavior} SES sends with its own amazonses.com MAIL \
                 FROM meanwhile, so SPF does not align"
            )
        };
        return Check::fail(
            subject,
            format!("{ours}: MailFromDomainStatus {status}, not verified; {consequence}"),
            format!(
                "publish {ours} MX 10 feedback-smtp.<region>.amazonses.com and its SPF record \
                 (`dkim-relay dns`), check them with `dkim-relay doctor`, and wait for SES to \
                 read them"
            ),
        );
    }
    if !rejects {
        return Check::warn(
            subject,
            format!(
                "{ours} is verified, but BehaviorOnMxFailure is {behavior}: if SES ever stops \
                 finding its MX it silently falls back to its own amazonses.com MAIL FROM and SPF \
                 stops aligning, with no error"
            ),
            format!(
                "reject instead of falling back: {}",
                put_mail_from(domain, &ours)
            ),
        );
    }
    Check::pass(
        subject,
        format!("{ours}, verified, BehaviorOnMxFailure REJECT_MESSAGE"),
    )
}

/// Whether SES adds its own DKIM signature. Informational: a second, aligned signature is
/// harmless, but it means DMARC passes even when the relay's signature fails, so DMARC reports
/// alone do not show a broken relay key.
fn dkim_check(domain: &str, attrs: Option<&DkimAttributes>) -> Check {
    let subject = format!("SES DKIM {domain}");
    let Some(attrs) = attrs.filter(|a| a.signing_enabled) else {
        return Check::pass(
            subject,
            "SES does not sign: the relay's signature is the only DKIM signature",
        );
    };
    let status = attrs.status.as_deref().unwrap_or("unknown");
    let kind = match attrs.signing_attributes_origin.as_deref() {
        Some("EXTERNAL") => "BYODKIM (a key you gave SES)",
        _ => "Easy DKIM (keys SES manages)",
    };
    if !status.eq_ignore_ascii_case("SUCCESS") {
        return Check::pass(
            subject,
            format!(
                "SES signing with {kind} is enabled but its status is {status}, so SES does not \
                 sign yet: the relay's signature is the only one"
            ),
        );
    }
    Check::pass(
        subject,
        format!(
            "note: SES also signs with {kind}: each message carries two DKIM signatures \
             with d={domain}, the relay's and SES's (besides SES's usual d=amazonses.com one); \
             DMARC passes if either verifies, so a broken relay signature does not show in \
             DMARC results (look for the relay's selector in the reports, or turn SES signing \
             off if you want the relay's key alone)"
        ),
    )
}

/// The account checks: sending enabled, reputation, sandbox, send rate (against
/// `our_max_send_rate`, the relay's `[upstream] max_send_rate`, when configured).
pub fn account_checks(
    region: &str,
    account: &Account,
    our_max_send_rate: Option<f64>,
) -> Vec<Check> {
    let subject = format!("SES account {region}");
    let mut out = Vec::new();
    if account.sending_enabled {
        out.push(Check::pass(subject.clone(), "sending enabled"));
    } else {
        out.push(Check::fail(
            subject.clone(),
            format!("sending is disabled for the account in {region}: SES refuses every message"),
            "see the SES account dashboard for why (a reputation pause or a manual switch), \
             fix it and re-enable sending (`aws sesv2 put-account-sending-attributes \
             --sending-enabled`)",
        ));
    }
    match account.enforcement_status.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("SHUTDOWN") => out.push(Check::fail(
            subject.clone(),
            "EnforcementStatus SHUTDOWN: SES has paused sending for reputation reasons",
            "read the SES reputation dashboard, fix the bounce or complaint cause, and contact \
             AWS support",
        )),
        Some(s) if s.eq_ignore_ascii_case("PROBATION") => out.push(Check::warn(
            subject.clone(),
            "EnforcementStatus PROBATION: SES is reviewing the account's bounces or complaints",
            "read the SES reputation dashboard and fix the cause before SES pauses sending",
        )),
        _ => {}
    }
    if account.production_access_enabled {
        out.push(Check::pass(
            subject.clone(),
            "production access (not in the sandbox)",
        ));
    } else {
        out.push(Check::fail(
            subject.clone(),
            format!(
                "in the sandbox in {region}: SES delivers only to verified addresses (others get \
                 554 \"Email address is not verified\"), at most 200 messages a day, 1 a second"
            ),
            "request production access (SES console, Account dashboard, or `aws sesv2 \
             put-account-details --production-access-enabled ...`)",
        ));
    }
    let quota = account.send_quota.clone().unwrap_or_default();
    let rate = quota.max_send_rate;
    let fmt = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v}"));
    let quota_line = format!(
        "MaxSendRate {}/s, Max24HourSend {}, SentLast24Hours {}",
        fmt(rate),
        fmt(quota.max_24_hour_send),
        fmt(quota.sent_last_24_hours)
    );
    match (our_max_send_rate, rate) {
        (Some(ours), Some(theirs)) if ours > theirs => out.push(Check::warn(
            subject,
            format!(
                "{quota_line}; [upstream] max_send_rate {ours}/s exceeds it: SES throttles the \
                 excess (454) and the relay retries it"
            ),
            format!("set [upstream] max_send_rate = {theirs} (or ask AWS for a higher rate)"),
        )),
        (Some(ours), _) => out.push(Check::pass(
            subject,
            format!("{quota_line}; [upstream] max_send_rate {ours}/s fits"),
        )),
        (None, _) => out.push(Check::pass(subject, quota_line)),
    }
    out
}

/// Every SES check: per configured domain (in the configuration's order) `GetEmailIdentity`,
/// then `GetAccount` once. A request that fails is one FAIL line for that subject.
pub async fn diagnose(
    domains: &Domains,
    client: &SesClient,
    our_max_send_rate: Option<f64>,
) -> Vec<super::Check> {
    let region = client.region().to_string();
    let mut out = Vec::new();
    for d in domains.values() {
        match client.get_email_identity(&d.name).await {
            Ok(identity) => out.extend(identity_checks(
                &d.name,
                &d.envelope.mail_from,
                &region,
                identity.as_ref(),
            )),
            Err(e) => out.push(api_failed(
                format!("SES identity {}", d.name),
                "GetEmailIdentity",
                &e,
            )),
        }
    }
    match client.get_account().await {
        Ok(account) => out.extend(account_checks(&region, &account, our_max_send_rate)),
        Err(e) => out.push(api_failed(
            format!("SES account {region}"),
            "GetAccount",
            &e,
        )),
    }
    out
}

fn api_failed(subject: String, operation: &str, e: &ApiError) -> Check {
    Check::fail(subject, format!("{operation} failed: {e}"), e.fix())
}

#[cfg(test)]
mod tests;
