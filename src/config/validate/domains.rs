//! `[domains."…"]`: one sending domain — its name (A-label), custom MAIL FROM domain, envelope
//! rules, selectors and keys (loaded now), and the signed-header policy (`dkim::domain`), checked
//! against the SES profile.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Ctx;
use crate::config::defaults::domains as default;
use crate::config::raw::RawDomain;
use crate::config::*;
use crate::dkim::domain::{DEFAULT_OVERSIGNED, DEFAULT_SIGNED_HEADERS, ses_forbids_signing};
use crate::dkim::key::{KeyProblem, SelectorKey};
use crate::message::EnvelopeLocalPart;

pub(super) fn domain(
    cx: &mut Ctx<'_>,
    key: &str,
    raw: &RawDomain,
    profile: Profile,
    require_published: bool,
) -> Option<Domain> {
    let at = |k: &'static str| ["domains", key, k];
    let name = match crate::domain_name::normalize(key) {
        Some(n) => n,
        None => {
            cx.error(
                &["domains", key],
                format!("`{key}` is not a valid domain name"),
            );
            return None;
        }
    };
    let mut ok = true;
    let mail_from = match &raw.mail_from {
        None => {
            cx.error(
                &at("mail_from"),
                format!("missing: the custom MAIL FROM domain, e.g. \"mail.{name}\""),
            );
            ok = false;
            String::new()
        }
        Some(m) => match crate::domain_name::normalize(m) {
            Some(m) if m == name || m.ends_with(&format!(".{name}")) => m,
            _ => {
                cx.error(
                    &at("mail_from"),
                    format!("`{m}` is neither {name} nor a subdomain of it (SPF would not align)"),
                );
                ok = false;
                String::new()
            }
        },
    };
    if mail_from == name && profile == Profile::Ses {
        cx.warn(
            &at("mail_from"),
            "SES requires the custom MAIL FROM domain to be a subdomain (e.g. mail.) of the \
             sending domain",
        );
    }

    // Load every selector's key; the active ones must exist and load.
    let mut selectors = BTreeMap::new();
    for (sel, s) in &raw.selectors {
        let sel_at = ["domains", key, "selectors", sel.as_str(), "key_file"];
        if !valid_selector(sel) {
            cx.error(
                &["domains", key, "selectors", sel],
                format!("`{sel}` is not a valid selector"),
            );
            ok = false;
            continue;
        }
        let path = cx.resolve_path(&s.key_file);
        cx.depends_on(&path);
        match SelectorKey::load(sel, s.algorithm, &path) {
            Ok((k, problems)) => {
                for p in problems {
                    match p {
                        KeyProblem::GroupReadable(mode) => cx.warn(
                            &sel_at,
                            format!(
                                "{} is readable by group or others (mode {mode:o}); run chmod 600",
                                path.display()
                            ),
                        ),
                        KeyProblem::WeakRsa(bits) => cx.warn(
                            &sel_at,
                            format!("{bits}-bit RSA key: use 2048 bits or more (RFC 8301)"),
                        ),
                    }
                }
                selectors.insert(sel.clone(), Arc::new(k));
            }
            Err(e) => {
                cx.error(&sel_at, e.to_string());
                ok = false;
            }
        }
    }
    let mut active = Vec::new();
    if raw.sign.is_empty() {
        cx.error(
            &at("sign"),
            "no active selector: list one in sign = [\"…\"] (the relay never sends unsigned)",
        );
        ok = false;
    }
    for s in &raw.sign {
        match selectors.get(s) {
            Some(k) => {
                if active.iter().any(|a: &Arc<SelectorKey>| &a.selector == s) {
                    cx.error(&at("sign"), format!("selector {s} is listed twice"));
                    ok = false;
                }
                active.push(Arc::clone(k));
            }
            None if raw.selectors.contains_key(s) => ok = false, // its key failed, said above
            None => {
                cx.error(
                    &at("sign"),
                    format!(
                        "active selector {s} has no [domains.\"{key}\".selectors.{s}] with a key"
                    ),
                );
                ok = false;
            }
        }
    }
    if profile == Profile::Ses && active.len() > 1 {
        cx.error(
            &at("sign"),
            "the SES profile signs with exactly one selector: SES rejects a second \
             DKIM-Signature (554 Duplicate header)",
        );
        ok = false;
    }
    if !active.is_empty()
        && !active.iter().any(|k| widely_verified(k.algorithm))
        && profile == Profile::Ses
    {
        cx.warn(
            &at("sign"),
            "Ed25519-only signing: most large receivers do not verify ed25519-sha256 yet, so \
             DMARC would rest on SPF alone",
        );
    }
    let headers = match &raw.headers {
        Some(h) => h.clone(),
        None => DEFAULT_SIGNED_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let oversign = match &raw.oversign {
        Some(h) => h.clone(),
        None => DEFAULT_OVERSIGNED.iter().map(|s| s.to_string()).collect(),
    };
    if !headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
        cx.error(&at("headers"), "From must be signed (RFC 6376 §5.4)");
        ok = false;
    }
    for h in headers.iter().chain(oversign.iter()) {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            cx.error(&at("headers"), format!("`{h}` is not a header field name"));
            ok = false;
        } else if profile == Profile::Ses && ses_forbids_signing(h) {
            cx.error(
                &at("headers"),
                format!("{h} must not be signed under the SES profile: SES rewrites or removes it"),
            );
            ok = false;
        }
    }
    let envelope_local_part = match raw.envelope_local_part.as_deref() {
        None => EnvelopeLocalPart::Keep,
        Some(l) if l == default::ENVELOPE_LOCAL_PART => EnvelopeLocalPart::Keep,
        Some(l) if valid_local(l) => EnvelopeLocalPart::Fixed(l.to_string()),
        Some(l) => {
            cx.error(
                &at("envelope_local_part"),
                format!("`{l}` is not \"keep\" or a mailbox name"),
            );
            ok = false;
            EnvelopeLocalPart::Keep
        }
    };
    let null_sender_local_part = raw
        .null_sender_local_part
        .clone()
        .unwrap_or_else(|| default::NULL_SENDER_LOCAL_PART.to_string());
    if !valid_local(&null_sender_local_part) {
        cx.error(&at("null_sender_local_part"), "not a valid mailbox name");
        ok = false;
    }
    if let Some(cs) = &raw.configuration_set
        && (cs.is_empty()
            || !cs
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        cx.error(
            &at("configuration_set"),
            "SES configuration set names use letters, digits, - and _",
        );
        ok = false;
    }
    if let Some(d) = &raw.dmarc
        && !d.starts_with("v=DMARC1")
    {
        cx.error(&at("dmarc"), "a DMARC record starts with v=DMARC1");
        ok = false;
    }
    if let Some(d) = &raw.dmarc
        && d.chars().any(|c| c.is_control())
    {
        cx.error(&at("dmarc"), "contains a control character");
        ok = false;
    }
    match raw.expiration_secs {
        Some(x) if x > default::EXPIRATION_SECS_MAX => {
            cx.error(
                &at("expiration_secs"),
                format!(
                    "must be at most {} seconds (one year); 0 or absent: signatures do not expire",
                    default::EXPIRATION_SECS_MAX
                ),
            );
            ok = false;
        }
        Some(x) if x > 0 && x < default::EXPIRATION_SECS_WARN => cx.warn(
            &at("expiration_secs"),
            format!(
                "signatures expire {x} s after signing: a message delayed or retried by a \
                 receiver may arrive with an expired signature and fail DKIM (a day or more is \
                 usual)"
            ),
        ),
        _ => {}
    }
    ok.then(|| Domain {
        name,
        envelope: EnvelopeRules {
            mail_from,
            envelope_local_part,
            null_sender_local_part,
        },
        subdomains: raw.subdomains.unwrap_or(default::SUBDOMAINS),
        headers,
        oversign,
        configuration_set: raw.configuration_set.clone(),
        expiration: raw.expiration_secs.filter(|x| *x > 0),
        dmarc: raw.dmarc.clone(),
        require_published: raw.require_published.unwrap_or(require_published),
        active,
        selectors,
    })
}

fn valid_selector(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_local(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}
