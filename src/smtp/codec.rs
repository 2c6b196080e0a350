//! Byte-level SMTP framing, with no I/O: command lines and the DATA stream.
//!
//! Invariants (RFC 5321 §2.3.8, §4.1.1.4, §4.5.2; the SMTP-smuggling lessons of 2023):
//! - only `<CR><LF>` ends a line, and only `<CR><LF>.<CR><LF>` ends DATA;
//! - a bare CR or bare LF is either rejected (the default) or, under
//!   [`BareNewline::Normalize`], turned into CRLF — but it never ends DATA;
//! - NUL bytes are refused;
//! - nothing is buffered without bound: over-long lines and over-size messages are counted and
//!   discarded, then reported once the client has finished sending.
//!
//! On the way out, `upstream::framing` re-frames the CRLF-clean message, so the upstream never
//! sees the client's framing at all.

/// What to do with a CR or LF that is not part of a CRLF pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Refuse the command or the message (5xx) — the safe default.
    #[default]
    Reject,
    /// Convert to CRLF before signing, for old clients that need it.
    Normalize,
}

/// Why a command line was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// Longer than the limit (RFC 5321 §4.5.3.1.4: 512 octets for a command line).
    TooLong,
    /// A bare LF or bare CR in the line.
    BareNewline,
    /// A NUL byte in the line.
    Nul,
}

/// How many bytes of one bad line (over-long, or broken by a bare LF) are read and dropped
/// after the point where it was refused before the connection is closed: a client that sends
/// megabytes without a line end is not read forever.
pub const MAX_DISCARDED_LINE: usize = 64 * 1024;

/// A bad line being dropped until its CRLF.
#[derive(Debug, Clone, Copy)]
struct Skip {
    error: LineError,
    /// Already reported (an over-long line is reported as soon as it passes the limit).
    reported: bool,
    /// Bytes of the line dropped so far.
    bytes: usize,
}

/// Splits CRLF-terminated lines out of an input buffer, discarding bad ones.
///
/// Under [`BareNewline::Reject`] only CRLF ends a line: `NOOP\nMAIL FROM:<a@b>\r\n` is ONE bad
/// line (one error, nothing of it executed), never a refused `NOOP` followed by a MAIL. A line
/// over the limit is reported as soon as it passes the limit (so a client that never sends a
/// line end still gets its `500`), then dropped up to its CRLF; [`LineReader::overrun`] says
/// when the dropped part has grown past [`MAX_DISCARDED_LINE`] and the shell should close.
#[derive(Debug)]
pub struct LineReader {
    max: usize,
    policy: BareNewline,
    skip: Option<Skip>,
}

impl LineReader {
    /// `max` counts the line without its CRLF.
    pub fn new(max: usize, policy: BareNewline) -> Self {
        LineReader {
            max,
            policy,
            skip: None,
        }
    }

    /// Whether the bad line being dropped has run [`MAX_DISCARDED_LINE`] bytes past the limit.
    pub fn overrun(&self) -> bool {
        self.skip
            .is_some_and(|s| s.bytes > self.max.saturating_add(MAX_DISCARDED_LINE))
    }

    /// Drops `n` bytes of a bad line; reports it as too long once it passes the limit.
    fn drop_bytes(&mut self, n: usize, error: LineError) -> Option<LineError> {
        let max = self.max;
        let s = self.skip.get_or_insert(Skip {
            error,
            reported: false,
            bytes: 0,
        });
        s.bytes = s.bytes.saturating_add(n);
        if !s.reported && s.bytes > max + 1 {
            s.reported = true;
            s.error = LineError::TooLong;
            return Some(LineError::TooLong);
        }
        None
    }

    /// Takes the next complete line out of `buf` (without its line ending), or the error of a
    /// bad line. `None` means more input is needed; what is incomplete stays in `buf`.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> Option<Result<Vec<u8>, LineError>> {
        loop {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                // No line end yet. Keep at most max+1 bytes (a trailing CR may be half a CRLF).
                if self.skip.is_some() || buf.len() > self.max + 1 {
                    let keep_cr = buf.last() == Some(&b'\r');
                    let dropped = buf.len() - usize::from(keep_cr);
                    buf.clear();
                    if keep_cr {
                        buf.push(b'\r');
                    }
                    if let Some(e) = self.drop_bytes(dropped, LineError::TooLong) {
                        return Some(Err(e));
                    }
                }
                return None;
            };
            let crlf = lf > 0 && buf[lf - 1] == b'\r';
            if !crlf && self.policy == BareNewline::Reject {
                // A bare LF does not end the line: everything up to the next CRLF is part of
                // the same bad line.
                buf.drain(..=lf);
                if let Some(e) = self.drop_bytes(lf + 1, LineError::BareNewline) {
                    return Some(Err(e));
                }
                continue;
            }
            let mut line: Vec<u8> = buf.drain(..=lf).collect();
            line.pop(); // the LF
            if crlf {
                line.pop();
            }
            if let Some(s) = self.skip.take() {
                if s.reported || s.bytes + line.len() > self.max {
                    if s.reported {
                        continue;
                    }
                    return Some(Err(LineError::TooLong));
                }
                return Some(Err(s.error));
            }
            if line.len() > self.max {
                return Some(Err(LineError::TooLong));
            }
            if line.contains(&0) {
                return Some(Err(LineError::Nul));
            }
            let bare = !crlf || line.contains(&b'\r');
            if bare {
                match self.policy {
                    BareNewline::Reject => return Some(Err(LineError::BareNewline)),
                    BareNewline::Normalize => {
                        // A bare CR splits a command line in two; keep the first part and push
                        // the rest back, as a CRLF-speaking client would have sent it.
                        if let Some(cr) = line.iter().position(|&b| b == b'\r') {
                            let mut rest = line.split_off(cr);
                            rest.remove(0);
                            rest.extend_from_slice(b"\r\n");
                            rest.extend_from_slice(buf);
                            *buf = rest;
                        }
                        if line.is_empty() {
                            continue;
                        }
                        return Some(Ok(line));
                    }
                }
            }
            return Some(Ok(line));
        }
    }
}

/// Why a message body was refused. Reported only after the whole DATA has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// More than the size limit (RFC 1870).
    TooBig,
    /// A text line over 1000 octets with its CRLF (RFC 5321 §4.5.3.1.6).
    LineTooLong,
    /// A bare CR or LF, under [`BareNewline::Reject`].
    BareNewline,
    /// A NUL byte.
    Nul,
    /// The header section is larger than its cap.
    HeaderTooBig,
    /// Storing the message would exceed the process-wide bytes-in-flight budget
    /// (`crate::budget`): a temporary condition, the client retries later.
    OverBudget,
}

/// Largest text line, without CRLF (RFC 5321: 1000 octets including CRLF).
pub const MAX_TEXT_LINE: usize = 998;

/// The DATA phase reader: un-stuffs dots, enforces CRLF framing and limits, and stops exactly
/// after `CRLF.CRLF` so that commands pipelined behind it stay in the input buffer.
#[derive(Debug)]
pub struct DataReader {
    policy: BareNewline,
    max_size: usize,
    max_header: usize,
    out: Vec<u8>,
    /// Bytes of the current, unfinished line (raw, before un-stuffing). Capped.
    line: Vec<u8>,
    /// The current line exceeded the cap and is being skipped.
    overlong: bool,
    /// The last byte of a discarded over-long line (to see if it ended in CR).
    overlong_last: u8,
    /// Whether the previous line ended with a real CRLF: only then can "." end DATA.
    at_crlf_start: bool,
    in_header: bool,
    header_len: usize,
    size: usize,
    error: Option<DataError>,
}

impl DataReader {
    pub fn new(policy: BareNewline, max_size: usize, max_header: usize) -> Self {
        DataReader {
            policy,
            max_size,
            max_header,
            // Grown as the message arrives (`grow_for`), so what is held is what is counted.
            out: Vec::new(),
            line: Vec::with_capacity(MAX_TEXT_LINE + 2),
            overlong: false,
            overlong_last: 0,
            // DATA's 354 counts as a line start: an immediate ".\r\n" is an empty message.
            at_crlf_start: true,
            in_header: true,
            header_len: 0,
            size: 0,
            error: None,
        }
    }

    /// Consumes bytes from `input`. Returns how many were used and whether `CRLF.CRLF` was
    /// seen (in which case nothing after it was used).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            match rest.iter().position(|&b| b == b'\n') {
                None => {
                    self.push_partial(rest);
                    used = input.len();
                }
                Some(lf) => {
                    self.push_partial(&rest[..lf]);
                    used += lf + 1;
                    if self.end_line() {
                        return (used, true);
                    }
                }
            }
        }
        (used, false)
    }

    /// The message (CRLF-clean, un-stuffed) or why it was refused. Call after `feed` said done.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }

    /// Refuses the message with `error` (the first problem is the one reported): nothing more
    /// is stored, but the reader still finds the end of DATA so the session stays in step.
    pub fn refuse(&mut self, error: DataError) {
        self.fail(error);
    }

    /// Bytes of message content received so far (for logs of refused messages).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes of memory the message buffer holds (its capacity, not just its contents): what
    /// the bytes-in-flight budget must account for. It grows by at most an eighth at a time
    /// (`grow_for`), so this stays within about 12% of the message size instead
    /// of up to twice it. (The one-line buffer is a fixed per-connection overhead.)
    pub fn held(&self) -> usize {
        self.out.capacity()
    }

    /// Makes room for `need` more bytes in the message buffer, growing it by at most an
    /// eighth (and at least 4 KiB) instead of doubling.
    fn grow_for(&mut self, need: usize) {
        if self.out.capacity() - self.out.len() < need {
            let extra = need.max(self.out.len() / 8).max(4 * 1024);
            self.out.reserve_exact(extra);
        }
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.overlong {
            self.overlong_last = bytes[bytes.len() - 1];
            return;
        }
        // Room for the longest legal line, its CR, and bare CRs a normalizing reader splits on.
        let cap = MAX_TEXT_LINE + 2;
        if self.line.len() + bytes.len() > cap && self.policy == BareNewline::Reject
            || self.line.len() + bytes.len() > 64 * cap
        {
            self.overlong = true;
            self.overlong_last = bytes[bytes.len() - 1];
            self.line.clear();
            self.fail(DataError::LineTooLong);
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    /// A LF arrived: the current line is complete. Returns true at the end of DATA.
    fn end_line(&mut self) -> bool {
        let crlf = if self.overlong {
            self.overlong_last == b'\r'
        } else {
            self.line.last() == Some(&b'\r')
        };
        if self.overlong {
            self.overlong = false;
            self.at_crlf_start = crlf;
            return false;
        }
        let mut line = std::mem::take(&mut self.line);
        if crlf {
            line.pop();
        }
        if crlf && self.at_crlf_start && line == b"." {
            return true;
        }
        let started_clean = self.at_crlf_start;
        self.at_crlf_start = crlf;
        if line.contains(&0) {
            self.fail(DataError::Nul);
        }
        let has_bare_cr = line.contains(&b'\r');
        if !crlf || has_bare_cr {
            match self.policy {
                BareNewline::Reject => {
                    self.fail(DataError::BareNewline);
                    self.line = line;
                    self.line.clear();
                    return false;
                }
                BareNewline::Normalize => {
                    // Every bare CR and the bare LF become CRLF. Each piece is its own line.
                    let pieces: Vec<Vec<u8>> =
                        line.split(|&b| b == b'\r').map(<[u8]>::to_vec).collect();
                    for (i, piece) in pieces.into_iter().enumerate() {
                        // Only the first piece can carry a stuffed dot from a clean line start;
                        // the others began after a bare CR, which is not a line start on the
                        // client's side, so they are kept as written.
                        self.emit_line(piece, i == 0 && started_clean);
                    }
                    self.line = line_buffer_reuse();
                    return false;
                }
            }
        }
        self.emit_line(line, true);
        false
    }

    fn emit_line(&mut self, mut line: Vec<u8>, unstuff: bool) {
        if unstuff && line.first() == Some(&b'.') {
            line.remove(0);
        }
        if line.len() > MAX_TEXT_LINE {
            self.fail(DataError::LineTooLong);
        }
        if self.in_header {
            if line.is_empty() {
                self.in_header = false;
            } else {
                self.header_len += line.len() + 2;
                if self.header_len > self.max_header {
                    self.fail(DataError::HeaderTooBig);
                }
            }
        }
        self.size += line.len() + 2;
        if self.size > self.max_size {
            self.fail(DataError::TooBig);
        }
        if self.error.is_none() {
            self.grow_for(line.len() + 2);
            self.out.extend_from_slice(&line);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    fn fail(&mut self, error: DataError) {
        // The first problem is the one reported; stop collecting content after it.
        if self.error.is_none() {
            self.error = Some(error);
            self.out = Vec::new();
        }
    }
}

fn line_buffer_reuse() -> Vec<u8> {
    Vec::with_capacity(MAX_TEXT_LINE + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(policy: BareNewline, input: &[u8]) -> (Result<Vec<u8>, DataError>, usize, bool) {
        let mut r = DataReader::new(policy, 1 << 20, 64 * 1024);
        let (used, done) = r.feed(input);
        (r.finish(), used, done)
    }

    #[test]
    fn command_lines_need_crlf() {
        let mut r = LineReader::new(512, BareNewline::Reject);
        let mut buf = b"EHLO a\r\nNOOP\nQUIT\r\nRSET\r\n".to_vec();
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"EHLO a".to_vec())));
        // `NOOP\nQUIT\r\n` is one bad line: QUIT is not executed.
        assert_eq!(r.next_line(&mut buf), Some(Err(LineError::BareNewline)));
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"RSET".to_vec())));
        assert_eq!(r.next_line(&mut buf), None);
        // Split across reads, the same.
        let mut buf = b"NOOP\nMAIL FROM:<a@b>".to_vec();
        assert_eq!(r.next_line(&mut buf), None);
        buf.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(r.next_line(&mut buf), Some(Err(LineError::BareNewline)));
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"NOOP".to_vec())));
    }

    #[test]
    fn command_line_normalize_mode() {
        let mut r = LineReader::new(512, BareNewline::Normalize);
        let mut buf = b"NOOP\nRSET\rQUIT\r\n".to_vec();
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"NOOP".to_vec())));
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"RSET".to_vec())));
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"QUIT".to_vec())));
    }

    #[test]
    fn overlong_command_is_reported_at_once_and_discarded_in_pieces() {
        let mut r = LineReader::new(10, BareNewline::Reject);
        let mut buf = vec![b'A'; 100];
        assert_eq!(r.next_line(&mut buf), Some(Err(LineError::TooLong)));
        assert!(buf.len() <= 11);
        assert!(!r.overrun());
        buf.extend_from_slice(b"AAAA\r\nNOOP\r\n");
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"NOOP".to_vec())));
        // A line that never ends: reported once, then overrun past the bound.
        let mut buf = vec![b'B'; 100];
        assert_eq!(r.next_line(&mut buf), Some(Err(LineError::TooLong)));
        for _ in 0..(MAX_DISCARDED_LINE / 1000 + 1) {
            buf.extend(std::iter::repeat_n(b'B', 1000));
            assert_eq!(r.next_line(&mut buf), None);
        }
        assert!(r.overrun());
        // Bare LFs do not hide an over-long line.
        let mut r = LineReader::new(10, BareNewline::Reject);
        let mut buf = b"AAAAAA\nAAAAAA\n".to_vec();
        assert_eq!(r.next_line(&mut buf), Some(Err(LineError::TooLong)));
        buf.extend_from_slice(b"x\r\nQUIT\r\n");
        assert_eq!(r.next_line(&mut buf), Some(Ok(b"QUIT".to_vec())));
    }

    #[test]
    fn data_unstuffs_and_stops_at_terminator() {
        let input = b"Subject: x\r\n\r\n..hidden\r\n.\r\nQUIT\r\n";
        let (msg, used, done) = read_all(BareNewline::Reject, input);
        assert!(done);
        assert_eq!(&input[used..], b"QUIT\r\n");
        assert_eq!(msg.unwrap(), b"Subject: x\r\n\r\n.hidden\r\n".to_vec());
    }

    #[test]
    fn data_split_across_feeds() {
        let input = b"A: b\r\n\r\nbody\r\n.\r\n";
        for split in 0..input.len() {
            let mut r = DataReader::new(BareNewline::Reject, 1 << 20, 1 << 16);
            let (u1, d1) = r.feed(&input[..split]);
            assert_eq!(u1, split);
            assert!(!d1);
            let (u2, d2) = r.feed(&input[split..]);
            assert!(d2, "split at {split}");
            assert_eq!(u2, input.len() - split);
            assert_eq!(r.finish().unwrap(), b"A: b\r\n\r\nbody\r\n".to_vec());
        }
    }

    #[test]
    fn smuggling_terminators_do_not_end_data() {
        for fake in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
        ] {
            let mut input = b"A: b\r\n\r\nx".to_vec();
            input.extend_from_slice(fake);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            let (_, _, done) = read_all(BareNewline::Reject, &input);
            assert!(!done, "{fake:?} ended DATA");
            let (_, _, done) = read_all(BareNewline::Normalize, &input);
            assert!(!done, "{fake:?} ended DATA in normalize mode");
            input.extend_from_slice(b"\r\n.\r\n");
            let (msg, _, done) = read_all(BareNewline::Reject, &input);
            assert!(done);
            assert!(msg.is_err(), "{fake:?} accepted");
        }
    }

    #[test]
    fn normalize_mode_converts_bare_newlines() {
        let (msg, _, done) = read_all(BareNewline::Normalize, b"A: b\n\nx\ry\r\n.\r\n");
        assert!(done);
        assert_eq!(msg.unwrap(), b"A: b\r\n\r\nx\r\ny\r\n".to_vec());
    }

    #[test]
    fn size_and_line_limits() {
        let mut r = DataReader::new(BareNewline::Reject, 10, 1 << 16);
        let (_, done) = r.feed(b"A: bcdefghijkl\r\n.\r\n");
        assert!(done);
        assert_eq!(r.finish(), Err(DataError::TooBig));

        let mut long = b"A: b\r\n\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', 5000));
        long.extend_from_slice(b"\r\n.\r\n");
        let (msg, _, done) = read_all(BareNewline::Reject, &long);
        assert!(done);
        assert_eq!(msg, Err(DataError::LineTooLong));

        let mut r = DataReader::new(BareNewline::Reject, 1 << 20, 20);
        r.feed(b"A: 1234567890\r\nB: 1234567890\r\n\r\n.\r\n");
        assert_eq!(r.finish(), Err(DataError::HeaderTooBig));
    }

    #[test]
    fn exactly_998_octets_is_fine() {
        let mut msg = b"A: b\r\n\r\n".to_vec();
        msg.extend(std::iter::repeat_n(b'x', 998));
        msg.extend_from_slice(b"\r\n.\r\n");
        assert!(read_all(BareNewline::Reject, &msg).0.is_ok());
    }
}
