//! DMARC aggregate reports (RFC 7489 §7.2, appendix C): what receivers say about the mail sent
//! as our domains, read and explained in terms of this relay's setup.
//!
//! Receivers send one XML document per reporting period, usually gzip-compressed (Google,
//! Yahoo), zipped (Microsoft) or plain, as the attachment of an email. [`read`] takes any of the
//! four as a file: the format is recognised by its first bytes, never by the file name (a saved
//! attachment often has none). Parsing is mail-auth's (`Report::parse_xml`,
//! `Report::parse_rfc5322`); decompression is capped at [`MAX_REPORT_SIZE`] so a zip bomb is a
//! clear error, not an exhausted machine. [`analysis`] groups the records per day and source
//! and names every failure with its cause in this setup (SES's default MAIL FROM, a missing or
//! broken relay signature, a sender that is not SES).

pub mod analysis;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use mail_auth::report::Report;

pub use analysis::{Analysis, Finding, FindingClass, Row, analyse};

/// The largest report accepted, uncompressed (large receivers send a few MB at most).
pub const MAX_REPORT_SIZE: usize = 50 * 1024 * 1024;

/// A file that could not be read as an aggregate report.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a DMARC aggregate report ({format}): {message}")]
    Parse {
        path: PathBuf,
        format: Format,
        message: String,
    },
}

/// How a report file is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Gzip,
    Zip,
    /// An email (`.eml`) carrying the report as an attachment.
    Message,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Xml => "XML",
            Format::Gzip => "gzip",
            Format::Zip => "zip",
            Format::Message => "email",
        })
    }
}

/// Recognises the packing by its first bytes: gzip and zip magic, XML's `<` (after a byte
/// order mark and blanks); anything else is taken for an email.
pub fn detect(bytes: &[u8]) -> Format {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Format::Gzip;
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Format::Zip;
    }
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => Format::Xml,
        _ => Format::Message,
    }
}

fn read_capped(reader: impl Read) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(MAX_REPORT_SIZE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    if out.len() > MAX_REPORT_SIZE {
        return Err(format!(
            "larger than {} MB uncompressed",
            MAX_REPORT_SIZE / (1024 * 1024)
        ));
    }
    Ok(out)
}

/// Parses one report in any of the four packings.
pub fn parse(bytes: &[u8]) -> Result<Report, (Format, String)> {
    let format = detect(bytes);
    let fail = |m: String| (format, m);
    match format {
        Format::Xml => Report::parse_xml(bytes).map_err(fail),
        Format::Gzip => {
            let xml = read_capped(flate2::read::GzDecoder::new(bytes)).map_err(fail)?;
            Report::parse_xml(&xml).map_err(fail)
        }
        Format::Zip => {
            let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
                .map_err(|e| fail(format!("bad zip archive: {e}")))?;
            let mut last = "the archive is empty".to_string();
            for i in 0..archive.len() {
                let file = archive
                    .by_index(i)
                    .map_err(|e| fail(format!("bad zip entry: {e}")))?;
                let xml = read_capped(file).map_err(fail)?;
                match Report::parse_xml(&xml) {
                    Ok(r) => return Ok(r),
                    Err(e) => last = e,
                }
            }
            Err(fail(last))
        }
        Format::Message => Report::parse_rfc5322(bytes, MAX_REPORT_SIZE).map_err(|e| {
            fail(match e {
                mail_auth::report::Error::MailParseError => "not an email message".into(),
                mail_auth::report::Error::NoReportsFound => {
                    "no report attached (XML, .gz or .zip)".into()
                }
                mail_auth::report::Error::ReportTooLarge => format!(
                    "larger than {} MB uncompressed",
                    MAX_REPORT_SIZE / (1024 * 1024)
                ),
                mail_auth::report::Error::ReportParseError(m)
                | mail_auth::report::Error::UncompressError(m) => m,
            })
        }),
    }
}

/// Reads and parses one report file.
pub fn read(path: &Path) -> Result<Report, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|(format, message)| ReadError::Parse {
        path: path.to_path_buf(),
        format,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised_by_content() {
        assert_eq!(detect(b"\xef\xbb\xbf\n <?xml version"), Format::Xml);
        assert_eq!(detect(b"<feedback>"), Format::Xml);
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Format::Gzip);
        assert_eq!(detect(b"PK\x03\x04rest"), Format::Zip);
        assert_eq!(
            detect(b"From: noreply-dmarc-support@google.com\r\n"),
            Format::Message
        );
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        for _ in 0..(MAX_REPORT_SIZE / zeros.len() + 1) {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let (format, message) = parse(&bomb).unwrap_err();
        assert_eq!(format, Format::Gzip);
        assert!(message.contains("larger than 50 MB"), "{message}");
    }
}
