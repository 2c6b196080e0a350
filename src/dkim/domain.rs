//! The signing domain: one `[domains."…"]` entry, fully resolved, with its header policy; and
//! the table of domains with the one lookup that picks the signer for a header-From domain.
//!
//! Why here: the signing domain is what the DKIM signer needs (`d=`, the active selectors and
//! their keys, the `h=` list, `x=`). `config` validates `[domains]` and builds these values;
//! nothing in `dkim` reads the configuration.
//!
//! Header policy (RFC 6376 §5.4, §8.15, SES DKIM guide): [`DEFAULT_SIGNED_HEADERS`] are signed
//! when present, and every one of them is also in [`DEFAULT_OVERSIGNED`]: named once more than
//! it occurs, so a copy prepended in transit (a second Content-Type, List-Unsubscribe, Sender …,
//! which a receiver may read instead of the signed one) breaks the signature. Every default
//! name is one SES neither adds nor rewrites, so oversigning an absent one is safe; under the
//! SES profile nothing SES adds, rewrites or removes is ever signed ([`ses_forbids_signing`]:
//! Message-ID, Date, Return-Path, Bounces-To, Feedback-ID, DKIM-Signature, X-SES-*;
//! ses-smtp.md §5, §5.1), and `config` refuses those names in a domain's `headers`/`oversign`.
//!
//! Lookup ([`Domains::domain_for`]): the header-From domain (DMARC aligns on it) is normalised
//! ([`crate::domain_name`]) and walked up its parents; the most specific configured domain
//! wins, and a parent only signs for a subdomain when its `subdomains` switch is on.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::key::SelectorKey;
use crate::message::{EnvelopeRules, SendingDomain};

/// The headers signed by default (when present).
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Sender",
];

/// The headers signed once more than they occur by default: all of the signed ones (issue 9:
/// everything a receiver uses and SES leaves alone is protected against an added copy).
pub const DEFAULT_OVERSIGNED: &[&str] = DEFAULT_SIGNED_HEADERS;

/// Headers SES replaces or removes: signing them breaks the signature (ses-smtp.md §5.1).
pub fn ses_forbids_signing(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "message-id" | "date" | "return-path" | "bounces-to" | "feedback-id" | "dkim-signature"
    ) || n.starts_with("x-ses-")
}

/// One sending domain, fully resolved.
#[derive(Debug, Clone)]
pub struct Domain {
    /// A-label, lower case.
    pub name: String,
    /// The envelope rules (custom MAIL FROM domain and local parts).
    pub envelope: EnvelopeRules,
    pub subdomains: bool,
    pub headers: Vec<String>,
    pub oversign: Vec<String>,
    pub configuration_set: Option<String>,
    pub expiration: Option<u64>,
    pub dmarc: Option<String>,
    /// A newly active selector must be published in DNS (and match its key) before it signs.
    pub require_published: bool,
    /// Selectors that sign, in order.
    pub active: Vec<Arc<SelectorKey>>,
    /// Every configured selector, active or merely published.
    pub selectors: BTreeMap<String, Arc<SelectorKey>>,
}

impl Domain {
    /// Whether `selector` signs (rather than being merely published).
    pub fn is_active(&self, selector: &str) -> bool {
        self.active.iter().any(|a| a.selector == selector)
    }
}

impl SendingDomain for Arc<Domain> {
    fn name(&self) -> &str {
        &self.name
    }
    fn envelope(&self) -> &EnvelopeRules {
        &self.envelope
    }
    fn configuration_set(&self) -> Option<&str> {
        self.configuration_set.as_deref()
    }
}

/// The configured domains by name (A-label). Derefs to the map.
#[derive(Debug, Clone, Default)]
pub struct Domains(pub BTreeMap<String, Arc<Domain>>);

impl Domains {
    /// The domain entry that signs for a header-From domain (any case, U- or A-label),
    /// honouring each domain's `subdomains` switch. The most specific configured domain wins.
    pub fn domain_for(&self, from_domain: &str) -> Option<&Arc<Domain>> {
        let wanted = crate::domain_name::normalize(from_domain)?;
        crate::domain_name::parents(&wanted)
            .enumerate()
            .find_map(|(i, name)| self.0.get(name).filter(|d| i == 0 || d.subdomains))
    }
}

impl Deref for Domains {
    type Target = BTreeMap<String, Arc<Domain>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Domains {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, Arc<Domain>)> for Domains {
    fn from_iter<T: IntoIterator<Item = (String, Arc<Domain>)>>(iter: T) -> Self {
        Domains(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EnvelopeLocalPart;

    fn domain(name: &str, subdomains: bool) -> (String, Arc<Domain>) {
        let d = Domain {
            name: name.into(),
            envelope: EnvelopeRules {
                mail_from: format!("mail.{name}"),
                envelope_local_part: EnvelopeLocalPart::Keep,
                null_sender_local_part: "bounce".into(),
            },
            subdomains,
            headers: vec![],
            oversign: vec![],
            configuration_set: None,
            expiration: None,
            dmarc: None,
            require_published: false,
            active: vec![],
            selectors: BTreeMap::new(),
        };
        (name.into(), Arc::new(d))
    }

    #[test]
    fn most_specific_domain_wins() {
        let t: Domains = [
            domain("example.org", true),
            domain("news.example.org", false),
        ]
        .into_iter()
        .collect();
        let pick = |n: &str| t.domain_for(n).map(|d| d.name.clone());
        assert_eq!(pick("EXAMPLE.org.").as_deref(), Some("example.org"));
        assert_eq!(
            pick("news.example.org").as_deref(),
            Some("news.example.org")
        );
        // news.example.org does not cover its subdomains, but example.org does.
        assert_eq!(pick("a.news.example.org").as_deref(), Some("example.org"));
        assert_eq!(pick("example.org.evil.test"), None);
        assert_eq!(pick("not a domain"), None);
    }

    #[test]
    fn ses_policy() {
        assert!(ses_forbids_signing("Message-ID"));
        assert!(ses_forbids_signing("X-SES-CONFIGURATION-SET"));
        assert!(ses_forbids_signing("feedback-id"));
        assert!(ses_forbids_signing("DKIM-Signature"));
        assert!(!ses_forbids_signing("Subject"));
        for h in DEFAULT_SIGNED_HEADERS {
            assert!(!ses_forbids_signing(h), "{h}");
            assert!(DEFAULT_OVERSIGNED.contains(h), "{h} is not oversigned");
        }
        assert!(DEFAULT_SIGNED_HEADERS.contains(&"Sender"));
    }
}
