//! The simulator's outbox: for every accepted message, `<id>.eml` (the delivered form) and
//! `<id>.json` (envelope, mailbox-simulator outcomes, and the DKIM/SPF/DMARC verdict a receiver
//! would reach), each written atomically (temporary file, then rename).
//!
//! The JSON keeps SES's split between the SMTP MAIL FROM, where SES sends bounce and complaint
//! feedback (ses-smtp.md §6), and the VERP envelope sender recipients actually see (§5).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::verdict::{DkimOutcome, DkimVerdict, Verdict};
use crate::message::printable::{json_safe, printable, printable_text};

/// A mailbox-simulator recipient and what happened to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimOutcome {
    pub recipient: String,
    pub outcome: String,
}

/// The metadata stored beside each delivered message. The verdict's results serialise as the
/// Authentication-Results words (`pass`, `softfail`, …), so records stay readable across
/// versions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Acceptance time, RFC 3339.
    pub time: String,
    /// The client's address and port; `feedback:<original ID>` for the notification the
    /// simulator wrote on SES's behalf ([`super::feedback`]).
    pub client: String,
    /// The access key ID that authenticated.
    pub user: String,
    /// The SMTP MAIL FROM as given: the feedback destination.
    pub mail_from: String,
    /// The delivered envelope sender (`<id>@<MAIL FROM domain>`).
    pub envelope_from: String,
    pub recipients: Vec<String>,
    /// Size of the delivered message in bytes.
    pub size: usize,
    #[serde(default)]
    pub mailbox_simulator: Vec<SimOutcome>,
    pub subject: Option<String>,
    pub header_from: Option<String>,
    pub verdict: Verdict,
}

/// Why the outbox could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an outbox record: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no message {0} in the outbox")]
    NotFound(String),
    #[error("`{0}` is not a message ID")]
    BadId(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Message IDs are hex digits and dashes; anything else could escape the folder.
fn check_id(id: &str) -> Result<(), OutboxError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(OutboxError::BadId(id.to_string()));
    }
    Ok(())
}

/// Stores one accepted message, then the feedback SES would send for its mailbox-simulator
/// recipients ([`super::feedback`]; a failure there is logged, the message stays stored).
pub fn write(dir: &Path, record: &Record, eml: &[u8]) -> Result<(), OutboxError> {
    write_record(dir, record, eml)?;
    if let Err(e) = super::feedback::write_for(dir, record, eml) {
        tracing::warn!(id = %record.id, error = %e, "cannot store the simulated feedback");
    }
    Ok(())
}

/// Stores one message: the `.eml` first, then the `.json` that makes it visible to [`list`].
pub fn write_record(dir: &Path, record: &Record, eml: &[u8]) -> Result<(), OutboxError> {
    check_id(&record.id)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_atomic(&dir.join(format!("{}.eml", record.id)), eml)?;
    let json = serde_json::to_vec_pretty(record).map_err(|source| OutboxError::Json {
        path: dir.join(format!("{}.json", record.id)),
        source,
    })?;
    write_atomic(&dir.join(format!("{}.json", record.id)), &json)
}

fn read_record(path: &Path) -> Result<Record, OutboxError> {
    let text = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|source| OutboxError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Every record in `dir`, oldest first. A missing folder is an empty outbox.
pub fn list(dir: &Path) -> Result<Vec<Record>, OutboxError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        out.push(read_record(&path)?);
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// One record and its delivered message.
pub fn show(dir: &Path, id: &str) -> Result<(Record, Vec<u8>), OutboxError> {
    check_id(id)?;
    let json = dir.join(format!("{id}.json"));
    if !json.exists() {
        return Err(OutboxError::NotFound(id.to_string()));
    }
    let record = read_record(&json)?;
    let eml_path = dir.join(format!("{id}.eml"));
    let eml = std::fs::read(&eml_path).map_err(io(&eml_path))?;
    Ok((record, eml))
}

/// Removes one message: the `.json` first (it makes the message visible), then the `.eml`.
/// A message already gone is not an error.
pub fn remove(dir: &Path, id: &str) -> Result<(), OutboxError> {
    check_id(id)?;
    for ext in ["json", "eml"] {
        let path = dir.join(format!("{id}.{ext}"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(())
}

/// `dkim=pass spf=pass dmarc=pass`: the best DKIM result (aligned pass, any pass, first),
/// SPF and DMARC, each the Authentication-Results word of its result enum.
pub fn auth_summary(v: &Verdict) -> String {
    let pass = |d: &&DkimVerdict| d.result == DkimOutcome::Pass;
    let dkim = v
        .dkim
        .iter()
        .find(|d| pass(d) && d.aligned)
        .or_else(|| v.dkim.iter().find(pass))
        .or(v.dkim.first())
        .map_or("none", |d| d.result.as_str());
    format!("dkim={dkim} spf={} dmarc={}", v.spf.result, v.dmarc.result)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A plain-text table: id, from, to, subject, auth results.
pub fn format_table(records: &[Record]) -> String {
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|r| {
            [
                printable(&r.id).into_owned(),
                cut(
                    &printable(r.header_from.as_deref().unwrap_or(&r.mail_from)),
                    40,
                ),
                cut(&printable(&r.recipients.join(",")), 40),
                cut(&printable(r.subject.as_deref().unwrap_or("")), 40),
                auth_summary(&r.verdict),
            ]
        })
        .collect();
    let header = ["ID", "FROM", "TO", "SUBJECT", "AUTH"];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The records as a JSON array (`--json`).
pub fn format_json(records: &[Record]) -> String {
    serde_json::to_string_pretty(records).unwrap_or_else(|_| "[]".into())
}

/// One record for humans: the metadata, the verdict, then the delivered message. Every text
/// that came from a client or a message is escaped ([`printable`]).
pub fn format_show(record: &Record, eml: &[u8]) -> String {
    let mut out = String::new();
    let r = record;
    let esc = |s: &str| printable(s).into_owned();
    let record = &Record {
        id: esc(&r.id),
        time: esc(&r.time),
        client: esc(&r.client),
        user: esc(&r.user),
        mail_from: esc(&r.mail_from),
        envelope_from: esc(&r.envelope_from),
        recipients: r.recipients.iter().map(|s| esc(s)).collect(),
        size: r.size,
        mailbox_simulator: r
            .mailbox_simulator
            .iter()
            .map(|o| SimOutcome {
                recipient: esc(&o.recipient),
                outcome: esc(&o.outcome),
            })
            .collect(),
        subject: r.subject.as_deref().map(esc),
        header_from: r.header_from.as_deref().map(esc),
        verdict: r.verdict.clone(),
    };
    out.push_str(&format!("id:            {}\n", record.id));
    out.push_str(&format!("time:          {}\n", record.time));
    out.push_str(&format!(
        "client:        {} (user {})\n",
        record.client, record.user
    ));
    out.push_str(&format!(
        "MAIL FROM:     {} (feedback destination)\n",
        record.mail_from
    ));
    out.push_str(&format!("envelope from: {}\n", record.envelope_from));
    out.push_str(&format!(
        "recipients:    {}\n",
        record.recipients.join(", ")
    ));
    for o in &record.mailbox_simulator {
        out.push_str(&format!(
            "simulator:     {} -> {}\n",
            o.recipient, o.outcome
        ));
    }
    out.push_str(&format!("size:          {}\n", record.size));
    out.push_str(&format!(
        "auth:          {}\n",
        auth_summary(&record.verdict)
    ));
    out.push_str("verdict:\n");
    out.push_str(&json_safe(
        &serde_json::to_string_pretty(&record.verdict).unwrap_or_default(),
    ));
    out.push('\n');
    out.push('\n');
    out.push_str(&printable_text(&String::from_utf8_lossy(eml)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict as the outbox stored it when results were strings: it still loads, writes back
    /// byte-identical, and summarises from the enums.
    const STORED: &str = r#"{"dkim":[{"domain":"example.org","selector":"s1","algorithm":"rsa-sha256","result":"fail","reason":"x","aligned":true},{"domain":"example.org","selector":"e1","algorithm":"ed25519-sha256","result":"pass","reason":"signature verified","aligned":true}],"spf":{"domain":"amazonses.com","result":"softfail","aligned":false,"reason":"y"},"dmarc":{"from_domain":"example.org","result":"pass","policy":"","disposition":"none","record":null,"reason":"z"}}"#;

    #[test]
    fn stored_verdicts_round_trip_and_summarise() {
        let v: Verdict = serde_json::from_str(STORED).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), STORED);
        assert_eq!(auth_summary(&v), "dkim=pass spf=softfail dmarc=pass");
        let mut none = v.clone();
        none.dkim.clear();
        assert_eq!(auth_summary(&none), "dkim=none spf=softfail dmarc=pass");
        let mut failing = v;
        failing.dkim.truncate(1);
        assert_eq!(auth_summary(&failing), "dkim=fail spf=softfail dmarc=pass");
    }
}
