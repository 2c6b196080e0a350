//! The header section of an RFC 5322 message, parsed in place: the message keeps the DATA buffer
//! once, and every header field and the body are spans of it (`bytes::Bytes` slices, reference
//! counted, no copy). The SES policy's edits are edits of the field list — a removed field is a
//! span dropped from the list, an added field is a small owned buffer — so nothing it does not
//! touch is copied or re-encoded (issue 8: one buffer per message).
//!
//! Input is CRLF-clean (the codec guarantees it). Folded continuation lines stay part of their
//! field, byte for byte, so DKIM's relaxed canonicalization sees what the recipient will see.
//! [`Message::parts`] is the message as it goes out — fields in order, the blank line, the body
//! — as a list of slices that the signer hashes and the upstream client dot-stuffs on the fly;
//! [`Message::to_bytes`] joins them for callers that want one buffer (the simulator, tests).

use bytes::Bytes;

/// One header field, raw: name, colon, value, folded lines and the final CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// A span of the DATA buffer, or an owned buffer for a field added by the relay.
    pub raw: Bytes,
    name_len: usize,
}

impl Field {
    /// A new field `Name: value\r\n`.
    pub fn new(name: &str, value: &str) -> Field {
        let raw = Bytes::from(format!("{name}: {value}\r\n").into_bytes());
        Field {
            raw,
            name_len: name.len(),
        }
    }

    /// The field name as written (case kept).
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.raw[..self.name_len]).unwrap_or("")
    }

    pub fn is(&self, name: &str) -> bool {
        self.name().trim_end().eq_ignore_ascii_case(name)
    }

    /// The value after the colon, unfolded is not attempted: raw bytes without the final CRLF.
    pub fn value(&self) -> &[u8] {
        let v = &self.raw[self.name_len + 1..];
        v.strip_suffix(b"\r\n").unwrap_or(v)
    }
}

/// Why the header section could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header line {0} has no field name and colon")]
    Malformed(usize),
    #[error("message has no header section")]
    Empty,
}

/// A message split into header fields and body, all spans of one buffer.
#[derive(Debug, Clone)]
pub struct Message {
    pub fields: Vec<Field>,
    /// The blank separator line followed by the body (a span of the DATA buffer), or a lone
    /// CRLF when the input had no separator. Always starts with CRLF.
    tail: Bytes,
    /// Whether the input had the blank separator line.
    pub had_separator: bool,
}

const CRLF: &[u8] = b"\r\n";

impl Message {
    /// Parses a copy of `input` (for callers that keep their buffer; the relay hands its buffer
    /// over with [`Message::from_buffer`] instead).
    pub fn parse(input: &[u8]) -> Result<Message, HeaderError> {
        Message::from_buffer(Bytes::copy_from_slice(input))
    }

    /// Parses the header section in place: takes the buffer (a `Vec<u8>` moves in without a
    /// copy) and keeps fields and body as spans of it.
    pub fn from_buffer(buffer: impl Into<Bytes>) -> Result<Message, HeaderError> {
        let buf: Bytes = buffer.into();
        let input: &[u8] = &buf;
        // (start, end, name length, has continuation lines)
        let mut spans: Vec<(usize, usize, usize, bool)> = Vec::new();
        let mut pos = 0;
        let mut line_no = 0;
        let mut separator = None;
        while pos < input.len() {
            let end = memchr::memmem::find(&input[pos..], CRLF)
                .map(|i| pos + i + 2)
                .unwrap_or(input.len());
            let line = &input[pos..end];
            line_no += 1;
            if line == CRLF {
                separator = Some(pos);
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                match spans.last_mut() {
                    Some(span) => {
                        span.1 = end;
                        span.3 = true;
                    }
                    None => return Err(HeaderError::Malformed(line_no)),
                }
            } else {
                let colon = line
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or(HeaderError::Malformed(line_no))?;
                let name = &line[..colon];
                // RFC 5322 §3.6.8: printable ASCII except colon (trailing WSP tolerated, obs-).
                let trimmed = trim_end_wsp(name);
                if trimmed.is_empty() || !trimmed.iter().all(|&b| (33..=126).contains(&b)) {
                    return Err(HeaderError::Malformed(line_no));
                }
                spans.push((pos, end, colon, false));
            }
            pos = end;
        }
        if separator.is_none() && spans.is_empty() {
            return Err(HeaderError::Empty);
        }
        let fields = spans
            .into_iter()
            .map(|(start, end, name_len, continued)| {
                let raw = buf.slice(start..end);
                // Only a last, unterminated line of a header-only message lacks its CRLF: a
                // one-line field gets it (small copy); a folded one stays as written.
                let raw = if raw.ends_with(CRLF) || continued {
                    raw
                } else {
                    let mut owned = raw.to_vec();
                    owned.extend_from_slice(CRLF);
                    Bytes::from(owned)
                };
                Field { raw, name_len }
            })
            .collect();
        Ok(match separator {
            Some(at) => Message {
                fields,
                tail: buf.slice(at..),
                had_separator: true,
            },
            None => Message {
                fields,
                tail: Bytes::from_static(CRLF),
                had_separator: false,
            },
        })
    }

    /// Body bytes after the blank line (may be empty; may lack a final CRLF).
    pub fn body(&self) -> &[u8] {
        self.tail.get(CRLF.len()..).unwrap_or_default()
    }

    pub fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|f| f.is(name)).count()
    }

    pub fn get(&self, name: &str) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(move |f| f.is(name))
    }

    /// Removes every field with this name; returns how many were removed.
    pub fn remove_all(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| !f.is(name));
        before - self.fields.len()
    }

    /// The message as it goes out, as slices: every field, then the blank line and the body.
    pub fn parts(&self) -> Vec<&[u8]> {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(self.fields.len() + 1);
        parts.extend(self.fields.iter().map(|f| &f.raw[..]));
        parts.push(&self.tail);
        parts
    }

    /// The serialized size: what [`Message::to_bytes`] would return the length of.
    pub fn len(&self) -> usize {
        self.fields.iter().map(|f| f.raw.len()).sum::<usize>() + self.tail.len()
    }

    /// Never true: a message always has at least its separator line.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Serializes into one new buffer: fields, blank line, body (the body is kept exactly,
    /// final CRLF or not). The relay itself does not: it streams [`Message::parts`].
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

fn trim_end_wsp(mut s: &[u8]) -> &[u8] {
    while let Some((&last, rest)) = s.split_last() {
        if last == b' ' || last == b'\t' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_folded_fields_and_body() {
        let m =
            Message::parse(b"From: a@b\r\nSubject: one\r\n two\r\nX-A:1\r\n\r\nbody\r\n").unwrap();
        assert_eq!(m.fields.len(), 3);
        assert_eq!(m.fields[1].raw, b"Subject: one\r\n two\r\n".to_vec());
        assert_eq!(m.fields[2].value(), b"1");
        assert_eq!(m.body(), b"body\r\n");
        assert!(m.fields[0].is("FROM"));
    }

    #[test]
    fn round_trip_is_exact() {
        let input = b"fRoM: x@y\r\nTo:  z@w\r\n\r\nno final crlf";
        let m = Message::parse(input).unwrap();
        assert_eq!(m.to_bytes(), input.to_vec());
        assert_eq!(m.len(), input.len());
    }

    #[test]
    fn header_only_message_gets_separator() {
        let m = Message::parse(b"From: a@b\r\n").unwrap();
        assert_eq!(m.to_bytes(), b"From: a@b\r\n\r\n".to_vec());
        let m = Message::parse(b"From: a@b").unwrap();
        assert_eq!(m.to_bytes(), b"From: a@b\r\n\r\n".to_vec());
        assert!(!m.had_separator);
        // A folded last line without CRLF stays as written (as before the in-place parser).
        let m = Message::parse(b"From: a@b\r\n c").unwrap();
        assert_eq!(m.to_bytes(), b"From: a@b\r\n c\r\n".to_vec());
    }

    #[test]
    fn a_separator_without_fields_is_a_message() {
        let m = Message::parse(b"\r\nbody").unwrap();
        assert!(m.fields.is_empty());
        assert_eq!(m.body(), b"body");
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(matches!(
            Message::parse(b" leading\r\n"),
            Err(HeaderError::Malformed(1))
        ));
        assert!(Message::parse(b"From a@b\r\n\r\n").is_err());
        assert!(Message::parse(b"Bad Name: x\r\n\r\n").is_err());
        assert!(Message::parse(b"").is_err());
    }

    #[test]
    fn fields_and_body_are_spans_of_the_one_buffer() {
        let input = b"From: a@b\r\nTo: c@d\r\n\r\nbody\r\n".to_vec();
        let start = input.as_ptr() as usize;
        let end = start + input.len();
        let m = Message::from_buffer(input).unwrap();
        let inside = |s: &[u8]| {
            let p = s.as_ptr() as usize;
            p >= start && p + s.len() <= end
        };
        assert!(m.fields.iter().all(|f| inside(&f.raw)));
        assert!(inside(m.body()));
    }

    #[test]
    fn spans_survive_policy_edits() {
        let input = b"DKIM-Signature: v=1; old\r\nFrom: a@b\r\nReturn-Path: <x@y>\r\n\
                      Subject: s\r\n fold\r\nDKIM-Signature: v=1;\r\n more\r\n\r\n.body\r\n"
            .to_vec();
        let start = input.as_ptr() as usize;
        let end = start + input.len();
        let mut m = Message::from_buffer(input).unwrap();
        assert_eq!(m.remove_all("dkim-signature"), 2);
        assert_eq!(m.remove_all("Return-Path"), 1);
        m.fields.push(Field::new("X-SES-CONFIGURATION-SET", "set"));
        m.fields.insert(0, Field::new("DKIM-Signature", "v=1; new"));
        let kept: Vec<&Field> = m.fields[1..3].iter().collect();
        for f in &kept {
            let p = f.raw.as_ptr() as usize;
            assert!(
                p >= start && p + f.raw.len() <= end,
                "kept field was copied"
            );
        }
        let expected: &[u8] = b"DKIM-Signature: v=1; new\r\nFrom: a@b\r\nSubject: s\r\n fold\r\n\
                                X-SES-CONFIGURATION-SET: set\r\n\r\n.body\r\n";
        assert_eq!(m.to_bytes(), expected.to_vec());
        assert_eq!(m.parts().concat(), expected.to_vec());
        assert_eq!(m.len(), expected.len());
        assert_eq!(m.parts().len(), m.fields.len() + 1);
    }
}
