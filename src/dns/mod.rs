//! Everything DNS: the records a sending domain must publish and their three written forms, the
//! in-memory view the simulator answers from, live look-ups, and the DKIM key-record rule.
//!
//! A domain that sends through SES with this relay publishes DKIM key TXT records, the custom
//! MAIL FROM domain's MX and SPF, and a DMARC policy ([`records`]). They are printed as a zone
//! fragment ([`zone`], which can also read hand-edited fragments back), a Route 53 change batch
//! ([`route53`]) or plain JSON ([`json`]); TXT values over 255 bytes are split into several
//! character-strings the same way in each ([`text`], RFC 1035 §3.3, RFC 6376 §3.6.2.2).
//! [`lookup`] asks real name servers (or a fixed table) with an explicit deadline; [`view`] is
//! the fixed table itself; [`dkim_record`] decides whether a published key record matches a
//! loaded key, for `doctor` and for `require_published` alike. Nothing here reads the
//! configuration: callers pass the settings ([`lookup::ResolverSettings`]) and records in.

pub mod dkim_record;
pub mod json;
pub mod lookup;
pub mod records;
pub mod route53;
pub mod text;
pub mod view;
pub mod zone;

pub use json::format_json;
pub use lookup::{HickoryLookup, Lookup, LookupError, NoLookup, ResolverSettings, StaticLookup};
pub use records::{
    DEFAULT_TTL, DomainRecordsInput, MAX_TXT_CHUNK, Record, RecordData, SES_MAIL_FROM_SPF,
    SelectorInfo, domain_records, region_from_host,
};
pub use route53::{Route53Error, format_route53, parse_route53};
pub use text::split_txt;
pub use view::DnsView;
pub use zone::{ZoneError, format_zone, parse_zone};

/// A DNS name as this module keys and prints it: trimmed, no trailing dot, lower case (names
/// compare case-insensitively, RFC 4343). The one normaliser of `dns/`.
pub fn dns_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}
