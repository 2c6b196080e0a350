//! The in-memory DNS view: name → TXT values and MX records, with no network behind it.
//!
//! The simulator answers every receiver-side lookup (DKIM keys, SPF, DMARC) from one of these,
//! built from the records a configuration would publish plus any zone file; `doctor`'s
//! [`super::lookup::StaticLookup`] wraps one to check records before they are published. Names
//! are keyed normalised ([`crate::domain_name::dns_name`]: trimmed, no trailing dot, lower case), so `Example.ORG.`
//! and `example.org` are the same name (DNS names compare case-insensitively, RFC 4343).

use std::collections::HashMap;

use super::records::{Record, RecordData};
use crate::domain_name::dns_name;

/// A local, read-only view of DNS: name (lowercase, no trailing dot) → TXT strings and MX.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsView {
    txt: HashMap<String, Vec<String>>,
    mx: HashMap<String, Vec<(u16, String)>>,
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
            .entry(dns_name(name))
            .or_default()
            .push(value.to_string());
    }

    pub fn add_mx(&mut self, name: &str, preference: u16, exchange: &str) {
        self.mx
            .entry(dns_name(name))
            .or_default()
            .push((preference, dns_name(exchange)));
    }

    /// The MX records at `name` (empty if none).
    pub fn mx(&self, name: &str) -> &[(u16, String)] {
        self.mx.get(&dns_name(name)).map_or(&[], Vec::as_slice)
    }

    /// Removes every record at `name`.
    pub fn remove(&mut self, name: &str) {
        self.txt.remove(&dns_name(name));
        self.mx.remove(&dns_name(name));
    }

    /// Every name holding TXT records, with its values (normalised names, any order).
    pub fn txt_records(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.txt.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Every name holding MX records, with (preference, exchange) pairs (any order).
    pub fn mx_records(&self) -> impl Iterator<Item = (&str, &[(u16, String)])> {
        self.mx.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The TXT values at `name` (empty if none).
    pub fn txt(&self, name: &str) -> &[String] {
        self.txt.get(&dns_name(name)).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_and_dot_insensitive() {
        let mut view = DnsView::new();
        view.add_txt("Example.ORG.", "v=spf1 -all");
        view.add_mx(
            " mail.example.org ",
            10,
            "Feedback-SMTP.us-east-1.amazonses.com.",
        );
        assert_eq!(view.txt("example.org"), ["v=spf1 -all".to_string()]);
        assert_eq!(
            view.mx("MAIL.example.org."),
            [(10, "feedback-smtp.us-east-1.amazonses.com".to_string())]
        );
        assert_eq!(view.txt_records().count(), 1);
        assert_eq!(view.mx_records().count(), 1);
        view.remove("EXAMPLE.org");
        assert!(view.txt("example.org").is_empty());
        assert!(view.txt("nowhere.example").is_empty());
    }
}
