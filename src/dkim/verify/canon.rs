//! The verifier's canonicalization (RFC 6376 §3.4), kept deliberately separate from the
//! signer's ([`crate::dkim::canon`]) and written the other way round: the signer streams a
//! byte-level state machine; this works on the whole buffer, splits it into lines and words,
//! and filters and joins them, the way the RFC's rules read. Two implementations that agree
//! with each other and with dkimpy, OpenDKIM, Mail::DKIM and go-msgauth on thousands of
//! generated messages (the differential suite) make a bug in either show up as a refusal
//! rather than as a signature that fails at a receiver.
//!
//! Do not "deduplicate" this with the signer's code: the self-check and the simulator's verdict
//! are worth something only because they share nothing with the signer but the RFC.

use super::Canonicalization;

fn is_wsp(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// Splits on CRLF; the piece after the last CRLF (empty if the buffer ends with one) is last.
fn lines(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for at in memchr::memmem::find_iter(buf, b"\r\n") {
        out.push(&buf[start..at]);
        start = at + 2;
    }
    out.push(&buf[start..]);
    out
}

/// One header field (raw: name, colon, value with folds, final CRLF or not) in canonical form,
/// with a final CRLF.
pub(super) fn header(c: Canonicalization, raw: &[u8]) -> Vec<u8> {
    match c {
        Canonicalization::Simple => {
            let mut v = raw.to_vec();
            if !v.ends_with(b"\r\n") {
                v.extend_from_slice(b"\r\n");
            }
            v
        }
        Canonicalization::Relaxed => {
            let Some(colon) = raw.iter().position(|&b| b == b':') else {
                return raw.to_ascii_lowercase();
            };
            let name: Vec<u8> = raw[..colon]
                .to_ascii_lowercase()
                .into_iter()
                .rev()
                .skip_while(is_wsp)
                .collect::<Vec<u8>>()
                .into_iter()
                .rev()
                .collect();
            // Unfold: every CRLF goes; then words separated by single spaces, none at the ends.
            let unfolded: Vec<u8> = lines(&raw[colon + 1..]).concat();
            let words: Vec<&[u8]> = unfolded.split(is_wsp).filter(|w| !w.is_empty()).collect();
            let mut out = name;
            out.push(b':');
            out.extend_from_slice(&words.join(&b' '));
            out.extend_from_slice(b"\r\n");
            out
        }
    }
}

/// The canonical body (RFC 6376 §3.4.3, §3.4.4).
pub(super) fn body(c: Canonicalization, body: &[u8]) -> Vec<u8> {
    let mut kept: Vec<Vec<u8>> = lines(body)
        .into_iter()
        .map(|line| match c {
            Canonicalization::Simple => line.to_vec(),
            Canonicalization::Relaxed => relaxed_line(line),
        })
        .collect();
    while kept.last().is_some_and(|l| l.is_empty()) {
        kept.pop();
    }
    if kept.is_empty() {
        return match c {
            Canonicalization::Simple => b"\r\n".to_vec(),
            Canonicalization::Relaxed => Vec::new(),
        };
    }
    let mut out = Vec::with_capacity(body.len() + 2);
    for line in kept {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A body line under relaxed: no WSP at its end, every other run of WSP one space.
fn relaxed_line(line: &[u8]) -> Vec<u8> {
    let end = line.iter().rposition(|b| !is_wsp(b)).map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(end);
    let mut previous_wsp = false;
    for b in &line[..end] {
        if is_wsp(b) {
            if !previous_wsp {
                out.push(b' ');
            }
            previous_wsp = true;
        } else {
            out.push(*b);
            previous_wsp = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Canonicalization::{Relaxed, Simple};

    #[test]
    fn bodies() {
        assert_eq!(body(Relaxed, b"line\r\n \r\n"), b"line\r\n");
        assert_eq!(body(Relaxed, b"</html>\r\n    \r\n"), b"</html>\r\n");
        assert_eq!(body(Relaxed, b""), b"");
        assert_eq!(body(Relaxed, b" \t\r\n\r\n"), b"");
        assert_eq!(body(Relaxed, b"  a \t b  \r\n"), b" a b\r\n");
        assert_eq!(body(Relaxed, b"a\r\n \r\nb"), b"a\r\n\r\nb\r\n");
        assert_eq!(body(Simple, b""), b"\r\n");
        assert_eq!(body(Simple, b"a \r\n \r\n\r\n"), b"a \r\n \r\n");
    }

    #[test]
    fn headers() {
        assert_eq!(
            header(Relaxed, b"SubJect \t:  a \t b\r\n\t c  \r\n"),
            b"subject:a b c\r\n"
        );
        assert_eq!(header(Simple, b"X: a \r\n"), b"X: a \r\n");
    }
}
