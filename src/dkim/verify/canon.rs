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
fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let ends = memchr::memmem::find_iter(buf, b"\r\n").chain(std::iter::once(buf.len()));
    let mut start = 0;
    ends.map(move |at| {
        let line = &buf[start..at];
        start = at + 2;
        line
    })
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
            let unfolded: Vec<u8> = lines(&raw[colon + 1..]).flatten().copied().collect();
            let words: Vec<&[u8]> = unfolded.split(is_wsp).filter(|w| !w.is_empty()).collect();
            let mut out = name;
            out.push(b':');
            out.extend_from_slice(&words.join(&b' '));
            out.extend_from_slice(b"\r\n");
            out
        }
    }
}

/// The canonical body (RFC 6376 §3.4.3, §3.4.4) as one buffer (tests read it whole).
#[cfg(test)]
pub(super) fn body(c: Canonicalization, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    body_into(c, body, &mut |b| out.extend_from_slice(b));
    out
}

/// The canonical body (RFC 6376 §3.4.3, §3.4.4), handed to `sink` a line at a time. The rules
/// read in order: find the last line that is not empty once canonicalized (the empty lines after
/// it are dropped), then write every line up to it, each with its CRLF. Nothing but one line is
/// ever copied: the self-check runs on every message the relay sends, 40 MB ones included.
pub(super) fn body_into(c: Canonicalization, body: &[u8], sink: &mut impl FnMut(&[u8])) {
    let empty = |line: &[u8]| match c {
        Canonicalization::Simple => line.is_empty(),
        Canonicalization::Relaxed => line.iter().all(is_wsp),
    };
    let last = lines(body)
        .enumerate()
        .filter(|(_, line)| !empty(line))
        .last()
        .map(|(i, _)| i);
    let Some(last) = last else {
        if c == Canonicalization::Simple {
            sink(b"\r\n");
        }
        return;
    };
    let mut relaxed = Vec::new();
    for line in lines(body).take(last + 1) {
        match c {
            Canonicalization::Simple => sink(line),
            Canonicalization::Relaxed => {
                relaxed_line(line, &mut relaxed);
                sink(&relaxed);
            }
        }
        sink(b"\r\n");
    }
}

/// A body line under relaxed, written into `out` (cleared first): no WSP at its end, every other
/// run of WSP one space.
fn relaxed_line(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let end = line.iter().rposition(|b| !is_wsp(b)).map_or(0, |i| i + 1);
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
