//! The header section of an RFC 5322 message as a list of raw fields, so the SES policy can
//! remove and add fields without re-encoding anything it does not touch.
//!
//! Input is CRLF-clean (the codec guarantees it). Folded continuation lines stay part of their
//! field, byte for byte, so DKIM's relaxed canonicalization sees what the recipient will see.

/// One header field, raw: name, colon, value, folded lines and the final CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub raw: Vec<u8>,
    name_len: usize,
}

impl Field {
    /// A new field `Name: value\r\n`.
    pub fn new(name: &str, value: &str) -> Field {
        let raw = format!("{name}: {value}\r\n").into_bytes();
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

/// A message split into header fields and body.
#[derive(Debug, Clone)]
pub struct Message {
    pub fields: Vec<Field>,
    /// Body bytes after the blank line (may be empty; may lack a final CRLF).
    pub body: Vec<u8>,
    /// Whether the input had the blank separator line.
    pub had_separator: bool,
}

impl Message {
    pub fn parse(input: &[u8]) -> Result<Message, HeaderError> {
        let mut fields: Vec<Field> = Vec::new();
        let mut pos = 0;
        let mut line_no = 0;
        while pos < input.len() {
            let end = input[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|i| pos + i + 2)
                .unwrap_or(input.len());
            let line = &input[pos..end];
            line_no += 1;
            if line == b"\r\n" {
                return Ok(Message {
                    fields,
                    body: input[end..].to_vec(),
                    had_separator: true,
                });
            }
            if line[0] == b' ' || line[0] == b'\t' {
                match fields.last_mut() {
                    Some(f) => f.raw.extend_from_slice(line),
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
                let mut raw = line.to_vec();
                if !raw.ends_with(b"\r\n") {
                    raw.extend_from_slice(b"\r\n");
                }
                fields.push(Field {
                    raw,
                    name_len: colon,
                });
            }
            pos = end;
        }
        if fields.is_empty() {
            return Err(HeaderError::Empty);
        }
        Ok(Message {
            fields,
            body: Vec::new(),
            had_separator: false,
        })
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

    /// Serializes: fields, blank line, body (the body is kept exactly, final CRLF or not).
    pub fn to_bytes(&self) -> Vec<u8> {
        let size: usize =
            self.fields.iter().map(|f| f.raw.len()).sum::<usize>() + 2 + self.body.len();
        let mut out = Vec::with_capacity(size + 1024);
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
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
        assert_eq!(m.body, b"body\r\n".to_vec());
        assert!(m.fields[0].is("FROM"));
    }

    #[test]
    fn round_trip_is_exact() {
        let input = b"fRoM: x@y\r\nTo:  z@w\r\n\r\nno final crlf";
        let m = Message::parse(input).unwrap();
        assert_eq!(m.to_bytes(), input.to_vec());
    }

    #[test]
    fn header_only_message_gets_separator() {
        let m = Message::parse(b"From: a@b\r\n").unwrap();
        assert_eq!(m.to_bytes(), b"From: a@b\r\n\r\n".to_vec());
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
}
