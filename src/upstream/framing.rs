//! DATA framing on the way to the upstream, on the fly: the message goes out as a list of byte
//! slices (signature fields, kept header spans of the DATA buffer, added fields, the body) and
//! is dot-stuffed chunk by chunk, so no stuffed copy of the whole message ever exists.
//!
//! RFC 5321 §4.5.2: a line that starts with "." gets one more "." in front; the content ends
//! with `CRLF . CRLF`. The input is CRLF-clean (the DATA reader guarantees it); a message that
//! does not end with CRLF gets one before the terminating dot. Lines may be split across slices
//! and chunks at any byte: the stuffer remembers whether the next byte starts a line. This is
//! the one dot-stuffer; [`dot_stuff`] frames a whole buffer with it (tests, scripted clients).
//!
//! Memory: a [`Framer`] emits at most about `chunk` input bytes per call (the stuffed output can
//! be up to 4/3 of that in the worst case of lines that are just "."), so the bytes in transit
//! are bounded by the chunk size, whatever the message size.

/// Incremental dot-stuffer: feed the message in pieces, then finish.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two bytes seen (to know whether the content ended with CRLF).
    tail: [u8; 2],
    seen: usize,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            tail: [0, 0],
            seen: 0,
        }
    }

    /// Appends the stuffed form of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        if self.at_line_start && input[0] == b'.' {
            out.push(b'.');
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', input) {
            if input.get(nl + 1) == Some(&b'.') {
                out.extend_from_slice(&input[start..=nl]);
                out.push(b'.');
                start = nl + 1;
            }
        }
        out.extend_from_slice(&input[start..]);
        self.at_line_start = last == b'\n';
        self.tail = match input {
            [.., a, b] => [*a, *b],
            _ => [self.tail[1], last],
        };
        self.seen = self.seen.saturating_add(input.len());
    }

    /// Appends the end of the content: a CRLF if the message lacked a final one, then `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.seen > 0 && !(self.seen >= 2 && self.tail == *b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::new();
    }
}

/// Walks a message given as slices and produces its DATA framing in bounded chunks.
#[derive(Debug)]
pub struct Framer<'a> {
    parts: &'a [&'a [u8]],
    part: usize,
    offset: usize,
    chunk: usize,
    stuffer: DotStuffer,
    finished: bool,
}

/// The default chunk: large enough for few TLS writes, small beside any message worth bounding.
pub const CHUNK: usize = 64 * 1024;

impl<'a> Framer<'a> {
    /// `chunk` is the most input bytes one [`Framer::fill`] consumes (at least 1).
    pub fn new(parts: &'a [&'a [u8]], chunk: usize) -> Framer<'a> {
        Framer {
            parts,
            part: 0,
            offset: 0,
            chunk: chunk.max(1),
            stuffer: DotStuffer::new(),
            finished: false,
        }
    }

    /// Replaces `out`'s contents with the next chunk of framed bytes; `false` when the framing
    /// is complete (then `out` is empty).
    pub fn fill(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        let mut budget = self.chunk;
        while budget > 0 {
            let Some(part) = self.parts.get(self.part) else {
                break;
            };
            let rest = part.get(self.offset..).unwrap_or_default();
            let take = rest.len().min(budget);
            self.stuffer.feed(&rest[..take], out);
            budget -= take;
            self.offset += take;
            if self.offset >= part.len() {
                self.part += 1;
                self.offset = 0;
            }
        }
        if self.part >= self.parts.len() && !self.finished {
            self.stuffer.finish(out);
            self.finished = true;
        }
        !out.is_empty()
    }

    /// Frames everything into a writer (benchmarks, tests); returns the bytes written.
    pub fn write_all_to(mut self, mut sink: impl std::io::Write) -> std::io::Result<u64> {
        let mut buf = Vec::with_capacity(self.chunk + self.chunk / 2 + 8);
        let mut total = 0u64;
        while self.fill(&mut buf) {
            sink.write_all(&buf)?;
            total += buf.len() as u64;
        }
        Ok(total)
    }
}

/// The unstuffed size of a message given as slices (what SIZE= declares).
/// A whole CRLF-clean message framed for DATA in one buffer (stuffed, terminating `.CRLF`):
/// for callers that hold the message anyway (tests, scripted clients). The relay streams.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut stuffer = DotStuffer::new();
    stuffer.feed(message, &mut out);
    stuffer.finish(&mut out);
    out
}

pub fn content_len(parts: &[&[u8]]) -> usize {
    parts.iter().map(|p| p.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The simplest possible reference: split into lines, stuff each, reassemble.
    fn reference(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        for &b in message {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
        if !message.is_empty() && !message.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn framed(parts: &[&[u8]], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        Framer::new(parts, chunk).write_all_to(&mut out).unwrap();
        out
    }

    #[test]
    fn stuffs_dots_across_part_and_chunk_boundaries() {
        let parts: &[&[u8]] = &[b"A: b\r\n", b".x\r\n\r", b"\n.", b"..\r\n", b"end"];
        let whole = parts.concat();
        for chunk in 1..12 {
            assert_eq!(framed(parts, chunk), reference(&whole), "chunk {chunk}");
        }
        assert_eq!(framed(parts, CHUNK), dot_stuff(&whole));
    }

    /// What the relay's DATA reader takes apart, framing puts back together.
    #[test]
    fn dot_stuffing_round_trips_through_the_data_reader() {
        use crate::smtp::codec::{BareNewline, DataReader};
        let msg = b".a\r\nb\r\n..c\r\n.\r\n";
        let framed = dot_stuff(msg);
        assert_eq!(framed, b"..a\r\nb\r\n...c\r\n..\r\n.\r\n".to_vec());
        let mut reader = DataReader::new(BareNewline::Reject, 1 << 20, 1 << 20);
        let (used, done) = reader.feed(&framed);
        assert!(done);
        assert_eq!(used, framed.len());
        assert_eq!(reader.finish().unwrap(), msg.to_vec());
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n".to_vec());
        assert_eq!(dot_stuff(b""), b".\r\n".to_vec());
    }

    #[test]
    fn edges() {
        assert_eq!(framed(&[], 4), b".\r\n".to_vec());
        assert_eq!(framed(&[b"", b""], 4), b".\r\n".to_vec());
        assert_eq!(framed(&[b"x"], 4), b"x\r\n.\r\n".to_vec());
        assert_eq!(framed(&[b"\r", b"\n"], 1), b"\r\n.\r\n".to_vec());
        assert_eq!(framed(&[b"."], 1), b"..\r\n.\r\n".to_vec());
        assert_eq!(framed(&[b"\n"], 1), b"\n\r\n.\r\n".to_vec());
        assert_eq!(content_len(&[b"ab", b"", b"c"]), 3);
    }

    #[test]
    fn chunks_are_bounded() {
        let body = b".\r\n".repeat(10_000);
        let parts: &[&[u8]] = &[&body];
        let mut f = Framer::new(parts, 1000);
        let mut out = Vec::new();
        let mut all = Vec::new();
        while f.fill(&mut out) {
            assert!(out.len() <= 1000 * 4 / 3 + 8, "{}", out.len());
            all.extend_from_slice(&out);
        }
        assert_eq!(all, reference(&body));
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[ -~]{0,40}".prop_map(String::into_bytes),
            "\\.[ -~]{0,40}".prop_map(String::into_bytes),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            // Long lines (DATA allows up to 998 octets; the stuffer must not care).
            (0usize..3000).prop_map(|n| {
                let mut v = b".".to_vec();
                v.extend(std::iter::repeat_n(b'a', n));
                v
            }),
        ]
    }

    proptest! {
        #[test]
        fn streaming_matches_the_reference(
            lines in prop::collection::vec(line(), 0..40),
            final_crlf in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            chunk in 1usize..300,
        ) {
            let mut message = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                message.extend_from_slice(l);
                if final_crlf || i + 1 < lines.len() {
                    message.extend_from_slice(b"\r\n");
                }
            }
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(message.len() + 1)).collect();
            at.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for a in at {
                parts.push(&message[prev..a]);
                prev = a;
            }
            parts.push(&message[prev..]);
            let expected = reference(&message);
            prop_assert_eq!(&framed(&parts, chunk), &expected);
            prop_assert_eq!(&dot_stuff(&message), &expected);
            prop_assert_eq!(content_len(&parts), message.len());
        }
    }
}
