//! The signer's canonicalization (RFC 6376 §3.4): header fields and body turned into the exact
//! bytes that are hashed, streaming, in one pass over the message's slices.
//!
//! Why our own: mail-auth 0.13's relaxed body canonicalization drops trailing empty lines
//! *before* it strips whitespace, so a body ending in whitespace-only lines (`line\r\n \r\n`,
//! `</html>\r\n    \r\n`) keeps a `\r\n` that every other verifier removes, and the body hash
//! fails at dkimpy, OpenDKIM, Mail::DKIM and go-msgauth. RFC 6376 §3.4.4 says to ignore
//! whitespace at the end of lines, which makes a whitespace-only line empty, and §3.4.4 rule c
//! then drops all empty lines at the end. This module does both in that order by construction:
//! line breaks are held back until a later line has content, and a line's whitespace is only
//! written when a later byte on the same line is not whitespace.
//!
//! Independence: the verifier in [`super::verify`] has its own canonicalizer, written the other
//! way round (whole buffer, line by line, slices and filters), so a bug here is caught by the
//! self-check before a message leaves and by the differential suite against dkimpy, OpenDKIM,
//! Mail::DKIM and go-msgauth (`tests/it/dkim_differential.rs`, `.ci/dkim-verifiers.sh`). Nothing here is
//! shared with it.
//!
//! Input is CRLF-clean (the SMTP codec guarantees it); a lone CR or LF is treated as an
//! ordinary byte, like dkimpy does. A body without a final CRLF is canonicalized as the wire
//! carries it: the SMTP client adds the CRLF before the terminating dot, so trailing whitespace
//! on that last line is whitespace at the end of a line.

/// A `c=` half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    Simple,
    Relaxed,
}

impl Canon {
    pub fn as_str(self) -> &'static str {
        match self {
            Canon::Simple => "simple",
            Canon::Relaxed => "relaxed",
        }
    }
}

/// Writes one header field in canonical form (with its final CRLF) to `out`. `raw` is the
/// field as it appears in the message: name, colon, value, folds and the final CRLF.
pub fn header(canon: Canon, raw: &[u8], out: &mut Vec<u8>) {
    match canon {
        Canon::Simple => {
            out.extend_from_slice(raw);
            if !raw.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        Canon::Relaxed => relaxed_header(raw, out),
    }
}

/// RFC 6376 §3.4.2: lower-case name, unfold, runs of WSP to one SP, no WSP at the end of the
/// value or on either side of the colon.
fn relaxed_header(raw: &[u8], out: &mut Vec<u8>) {
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    let name = &raw[..colon];
    let mut name_end = name.len();
    while name_end > 0 && matches!(name[name_end - 1], b' ' | b'\t') {
        name_end -= 1;
    }
    out.extend(name[..name_end].iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let value = raw.get(colon + 1..).unwrap_or_default();
    // `started`: a non-WSP byte of the value was written; `space`: WSP seen since the last one.
    let (mut started, mut space) = (false, false);
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'\r' && value.get(i + 1) == Some(&b'\n') {
            // Unfolding removes the CRLF; the WSP that follows it is an ordinary run.
            i += 2;
            continue;
        }
        if b == b' ' || b == b'\t' {
            space = true;
        } else {
            if space && started {
                out.push(b' ');
            }
            out.push(b);
            started = true;
            space = false;
        }
        i += 1;
    }
    out.extend_from_slice(b"\r\n");
}

/// The streaming body canonicalizer: feed it the body in any number of slices, then
/// [`Body::finish`]. Canonical bytes go to the sink as soon as they are known.
#[derive(Debug)]
pub struct Body {
    canon: Canon,
    /// Line breaks held back: they are written only when a later line has content.
    pending_breaks: usize,
    /// Relaxed: whitespace seen on the current line since the last other byte.
    space: bool,
    /// The current line has had a byte written.
    line_started: bool,
    /// The previous byte was a CR (a line break if an LF follows).
    cr: bool,
    /// Anything was written at all (an empty relaxed body stays empty).
    written: bool,
}

impl Body {
    pub fn new(canon: Canon) -> Body {
        Body {
            canon,
            pending_breaks: 0,
            space: false,
            line_started: false,
            cr: false,
            written: false,
        }
    }

    /// Feeds the next slice of the body.
    pub fn update(&mut self, chunk: &[u8], sink: &mut impl FnMut(&[u8])) {
        for &b in chunk {
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    self.end_line();
                    continue;
                }
                self.content(b'\r', sink);
            }
            match b {
                b'\r' => self.cr = true,
                b' ' | b'\t' if self.canon == Canon::Relaxed => self.space = true,
                _ => self.content(b, sink),
            }
        }
    }

    /// Ends the body: the last line gets its CRLF, trailing empty lines are gone, and an empty
    /// body is "" (relaxed) or CRLF (simple, RFC 6376 §3.4.3).
    pub fn finish(mut self, sink: &mut impl FnMut(&[u8])) {
        if self.cr {
            self.cr = false;
            self.content(b'\r', sink);
        }
        if self.written || self.canon == Canon::Simple {
            sink(b"\r\n");
        }
    }

    fn end_line(&mut self) {
        // Relaxed: whitespace at the end of a line is dropped (never written).
        self.space = false;
        self.line_started = false;
        self.pending_breaks += 1;
    }

    fn content(&mut self, b: u8, sink: &mut impl FnMut(&[u8])) {
        if !self.line_started {
            for _ in 0..self.pending_breaks {
                sink(b"\r\n");
            }
            self.pending_breaks = 0;
            self.line_started = true;
        }
        if self.space {
            sink(b" ");
            self.space = false;
        }
        sink(&[b]);
        self.written = true;
    }
}

/// The whole body canonicalized into one buffer (tests, small callers).
pub fn body_bytes(canon: Canon, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut c = Body::new(canon);
    c.update(body, &mut |b| out.extend_from_slice(b));
    c.finish(&mut |b| out.extend_from_slice(b));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relaxed(body: &[u8]) -> Vec<u8> {
        body_bytes(Canon::Relaxed, body)
    }

    #[test]
    fn whitespace_only_lines_at_the_end_are_empty_lines() {
        // The mail-auth 0.13 bug: these kept a trailing CRLF.
        assert_eq!(relaxed(b"line\r\n \r\n"), b"line\r\n");
        assert_eq!(relaxed(b"</html>\r\n    \r\n"), b"</html>\r\n");
        assert_eq!(relaxed(b"a\r\n\t\r\n \r\n\r\n"), b"a\r\n");
    }

    #[test]
    fn relaxed_body_rules() {
        assert_eq!(relaxed(b""), b"");
        assert_eq!(relaxed(b"\r\n\r\n"), b"");
        assert_eq!(relaxed(b" \r\n"), b"");
        assert_eq!(relaxed(b"a  b\t\tc  \r\n"), b"a b c\r\n");
        assert_eq!(relaxed(b"  a\r\n"), b" a\r\n");
        assert_eq!(relaxed(b"a\r\n \r\nb\r\n"), b"a\r\n\r\nb\r\n");
        assert_eq!(relaxed(b"a"), b"a\r\n");
        assert_eq!(relaxed(b"a \t"), b"a\r\n");
    }

    #[test]
    fn simple_body_rules() {
        let simple = |b: &[u8]| body_bytes(Canon::Simple, b);
        assert_eq!(simple(b""), b"\r\n");
        assert_eq!(simple(b"\r\n\r\n"), b"\r\n");
        assert_eq!(simple(b"a \r\n \r\n\r\n"), b"a \r\n \r\n");
        assert_eq!(simple(b"a"), b"a\r\n");
    }

    #[test]
    fn slices_do_not_matter() {
        let body = b"a  b \r\n \r\n\tc\r\n\r\n";
        for split in 0..body.len() {
            let mut out = Vec::new();
            let mut c = Body::new(Canon::Relaxed);
            c.update(&body[..split], &mut |b| out.extend_from_slice(b));
            c.update(&body[split..], &mut |b| out.extend_from_slice(b));
            c.finish(&mut |b| out.extend_from_slice(b));
            assert_eq!(out, relaxed(body), "split at {split}");
        }
    }

    #[test]
    fn relaxed_header_rules() {
        let mut out = Vec::new();
        header(
            Canon::Relaxed,
            b"SubJect \t:  a \t b\r\n\t c  \r\n",
            &mut out,
        );
        assert_eq!(out, b"subject:a b c\r\n");
    }
}
