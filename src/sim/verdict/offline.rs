//! The offline resolver adapter: answers mail-auth's DNS look-ups from a [`DnsView`].
//!
//! mail-auth's verifiers take resolver caches for TXT, MX, A, AAAA and PTR; filling every one
//! of them from the view means mail-auth never falls through to its resolver, and the resolver
//! it is given has no name servers at all, so even a bug cannot send a packet. Names the view
//! does not hold are "NXDOMAIN" (TXT) or an empty record set (MX/A/AAAA/PTR), which is what a
//! receiver would see for a record that was never published.

use crate::dns::DnsView;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::Spf;
use mail_auth::{DnsError, DnssecStatus, MX, RecordSet, ResolverCache, Txt};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::SYNTHETIC_AMAZONSES_SPF;

/// Answers mail-auth's DNS lookups from a [`DnsView`]. Every name it does not know gets
/// "NXDOMAIN" (TXT) or an empty record set (MX/A/AAAA/PTR), so mail-auth never falls through to
/// its resolver.
pub(super) struct OfflineDns {
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
    pub(super) fn new(view: &DnsView) -> Self {
        let mut txt: HashMap<Box<str>, Txt> = view
            .txt_records()
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
            .mx_records()
            .map(|(name, entries)| {
                let mut sorted = entries.to_vec();
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
