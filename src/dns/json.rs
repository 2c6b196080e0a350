//! A plain JSON array of the records to publish, for scripts: `[{"name","type","value",
//! "comment"}]`, TXT values unsplit and MX values as `"10 host"` (no presentation escaping, so a
//! script can feed them to any DNS API).

use super::records::{Record, RecordData};
use crate::domain_name::dns_name;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct JsonRecord {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    value: String,
    comment: Option<String>,
}

/// A simple JSON array `[{"name","type","value","comment"}]` for scripts; TXT values unsplit,
/// MX values as `"10 host"`.
pub fn format_json(records: &[Record]) -> String {
    let rows: Vec<JsonRecord> = records
        .iter()
        .map(|r| JsonRecord {
            name: dns_name(&r.name),
            rtype: r.data.rtype().into(),
            value: match &r.data {
                RecordData::Txt(v) => v.clone(),
                RecordData::Mx {
                    preference,
                    exchange,
                } => format!("{preference} {}", dns_name(exchange)),
            },
            comment: r.comment.clone(),
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::SES_MAIL_FROM_SPF;
    use crate::dns::domain_records;
    use crate::dns::records::tests::sample_input;

    #[test]
    fn json_format() {
        let recs = domain_records(&sample_input(2048));
        let v: serde_json::Value = serde_json::from_str(&format_json(&recs)).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), recs.len());
        assert_eq!(arr[2]["type"], "MX");
        assert_eq!(arr[2]["value"], "10 feedback-smtp.us-east-1.amazonses.com");
        assert_eq!(arr[3]["value"], SES_MAIL_FROM_SPF);
        assert_eq!(arr[4]["name"], "_dmarc.example.org");
    }
}
