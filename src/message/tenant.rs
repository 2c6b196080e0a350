//! Tenant binding (issue 9, item 7): an authenticated user may only have a message signed with
//! the key of a `[domains]` entry it is allowed, and may only name its own domains in every
//! other header identity a receiver or SES acts on.
//!
//! The rule: the entry that signs is the most specific configured entry covering the From
//! domain ([`crate::dkim`]'s lookup), and that *entry* must be in the user's list. A user allowed
//! `example.org` with `subdomains = true` therefore does not get `tenant.example.org`'s key when
//! `tenant.example.org` is its own entry: that name belongs to the other entry
//! ([`crate::users::Submitter::may_use`] applies the same carve-out). Then every domain in
//! `Sender`, `Resent-From` and `Resent-Sender` (RFC 5322 §3.6.2, §3.6.6: receivers show and
//! filter on them) and the identity of each `X-SES-SOURCE-ARN`, `X-SES-FROM-ARN` and
//! `X-SES-RETURN-PATH-ARN` (SES delegate sending: SES authorises the message against that
//! identity) must be one the user may use. Anything else: `550 5.7.1`; an address field that
//! cannot be read unambiguously: `550 5.6.0`. Clients that relay by `allow_networks` without
//! authenticating are trusted for every configured domain and are not checked here.

use super::address;
use super::headers::Message;
use crate::smtp::reply::Reply;
use crate::users::Submitter;

/// The address fields checked against the user's domains.
const ADDRESS_FIELDS: &[&str] = &["Sender", "Resent-From", "Resent-Sender"];

/// SES delegate-sending headers that name an identity (ses-smtp.md §5).
const ARN_FIELDS: &[&str] = &[
    "X-SES-SOURCE-ARN",
    "X-SES-FROM-ARN",
    "X-SES-RETURN-PATH-ARN",
];

/// Checks `sub` against the signing entry `entry` (A-label) and the message's other identities.
pub fn check(sub: &Submitter, entry: &str, message: &Message) -> Result<(), Reply> {
    if !sub.may_sign_with(entry) {
        return Err(Reply::new(
            550,
            "5.7.1",
            format!(
                "User {} may not use the DKIM key of domain {entry}",
                sub.user
            ),
        ));
    }
    for name in ADDRESS_FIELDS {
        for field in message.get(name) {
            let list = address::mailbox_list(field.value()).map_err(|e| {
                Reply::new(550, "5.6.0", format!("The {name} header is refused: {e}"))
            })?;
            for mailbox in list {
                if !sub.may_use(&mailbox.domain) {
                    return Err(Reply::new(
                        550,
                        "5.7.1",
                        format!(
                            "User {} may not use domain {} in {name}",
                            sub.user, mailbox.domain
                        ),
                    ));
                }
            }
        }
    }
    for name in ARN_FIELDS {
        for field in message.get(name) {
            let domain = std::str::from_utf8(field.value())
                .ok()
                .and_then(arn_identity_domain);
            match domain {
                Some(d) if sub.may_use(&d) => {}
                Some(d) => {
                    return Err(Reply::new(
                        550,
                        "5.7.1",
                        format!(
                            "User {} may not use identity domain {d} in {name}",
                            sub.user
                        ),
                    ));
                }
                None => {
                    return Err(Reply::new(
                        550,
                        "5.7.1",
                        format!("{name} is not an SES identity ARN (arn:aws:ses:…:identity/…)"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The domain of an SES identity ARN: `arn:<partition>:ses:<region>:<account>:identity/<id>`,
/// where the identity is a domain or an address. `None` when it is not such an ARN.
pub fn arn_identity_domain(value: &str) -> Option<String> {
    let value: String = value
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let parts: Vec<&str> = value.trim().splitn(6, ':').collect();
    let [arn, _partition, ses, _region, _account, resource] = parts.as_slice() else {
        return None;
    };
    if *arn != "arn" || *ses != "ses" {
        return None;
    }
    let identity = resource.strip_prefix("identity/")?;
    let domain = match identity.split_once('@') {
        Some((_, d)) => d,
        None => identity,
    };
    address::receivers_domain(domain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns() {
        assert_eq!(
            arn_identity_domain(" arn:aws:ses:us-east-1:123456789012:identity/Example.org")
                .as_deref(),
            Some("example.org")
        );
        assert_eq!(
            arn_identity_domain("arn:aws:ses:us-east-1:1:identity/a@b.example.org").as_deref(),
            Some("b.example.org")
        );
        assert_eq!(arn_identity_domain("arn:aws:ses:us-east-1:1:other/x"), None);
        assert_eq!(arn_identity_domain("example.org"), None);
        assert_eq!(arn_identity_domain("arn:aws:ses:r:1:identity/a@b@c"), None);
    }
}
