//! What a receiver would conclude about a delivered message: DKIM, SPF and DMARC results
//! against the simulator's DNS view (email-auth.md).
//!
//! STUB for helper-a's module: the agreed signatures with placeholder logic; the merge takes
//! helper-a's real implementation.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::dns::{Record, RecordData};

/// The SES sending IP the simulator pretends to deliver from (matches X-SES-Outgoing). STUB
pub const SES_SENDING_IP: Ipv4Addr = Ipv4Addr::new(54, 240, 27, 27);

/// STUB
#[derive(Debug, Clone, Default)]
pub struct DnsView {
    pub records: Vec<Record>,
}

impl DnsView {
    pub fn new() -> Self {
        DnsView::default()
    }
    pub fn from_records(records: &[Record]) -> Self {
        DnsView {
            records: records.to_vec(),
        }
    }
    pub fn add_txt(&mut self, name: &str, value: &str) {
        self.records.push(Record {
            name: name.to_string(),
            data: RecordData::Txt(value.to_string()),
        });
    }
    pub fn add_mx(&mut self, name: &str, preference: u16, exchange: &str) {
        self.records.push(Record {
            name: name.to_string(),
            data: RecordData::Mx {
                preference,
                exchange: exchange.to_string(),
            },
        });
    }
}

/// STUB
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DkimVerdict {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub result: String,
    pub reason: Option<String>,
    pub aligned: bool,
}

/// STUB
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SpfVerdict {
    pub domain: String,
    pub result: String,
    pub aligned: bool,
    pub reason: Option<String>,
}

/// STUB
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DmarcVerdict {
    pub from_domain: String,
    pub result: String,
    pub policy: Option<String>,
    pub disposition: Option<String>,
    pub record: Option<String>,
    pub reason: Option<String>,
}

/// STUB
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub dkim: Vec<DkimVerdict>,
    pub spf: SpfVerdict,
    pub dmarc: DmarcVerdict,
}

/// STUB: reports "none" everywhere.
pub async fn verdict(
    _message: &[u8],
    envelope_from: &str,
    _sending_ip: IpAddr,
    _dns: &DnsView,
) -> Verdict {
    Verdict {
        dkim: Vec::new(),
        spf: SpfVerdict {
            domain: envelope_from
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default(),
            result: "none".into(),
            aligned: false,
            reason: Some("stub".into()),
        },
        dmarc: DmarcVerdict {
            result: "none".into(),
            ..DmarcVerdict::default()
        },
    }
}
