//! Text that came from a message, made safe for a terminal or a log line: control characters
//! are written as escapes, so a Subject, From, envelope address or upstream reply cannot move
//! the cursor, recolour the screen, fake a log line or hide text (issue 9, item 8).
//!
//! Escaped: C0 controls (including TAB, CR and LF in [`printable`]), DEL, the C1 controls
//! (U+0080–U+009F, among them the one-character CSI U+009B), the Unicode line and paragraph
//! separators, and the bidirectional controls (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069,
//! which reorder what a terminal shows). ASCII controls become `\xNN`, the others `\u{…}`.
//! Everything else is kept as it is, so ordinary text reads unchanged.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn escape_into(out: &mut String, c: char) {
    if c.is_ascii() {
        out.push_str(&format!("\\x{:02x}", c as u32));
    } else {
        out.push_str(&format!("\\u{{{:x}}}", c as u32));
    }
}

fn escape(s: &str, keep: impl Fn(char, Option<char>) -> bool) -> Cow<'_, str> {
    let mut chars = s.chars().peekable();
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    while let Some(c) = chars.next() {
        if unsafe_char(c) && !keep(c, chars.peek().copied()) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of text: every unsafe character escaped, line breaks and tabs included.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, |_, _| false)
}

/// Multi-line text (a whole message): LF, TAB and a CR before an LF are kept, everything else
/// unsafe is escaped.
pub fn printable_text(s: &str) -> Cow<'_, str> {
    escape(s, |c, next| {
        c == '\n' || c == '\t' || (c == '\r' && next == Some('\n'))
    })
}

/// JSON text with every unsafe character that serde leaves raw (DEL, C1, bidi and line
/// separators; C0 is always escaped by serde) written as a `\uXXXX` escape: the same JSON
/// value, safe to print. (Such characters can only occur inside JSON strings.)
pub fn json_safe(json: &str) -> Cow<'_, str> {
    // serde writes LF, CR, TAB only as white space between tokens (inside strings it escapes
    // them), so they stay.
    let unsafe_in_json = |c: char| unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_in_json(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{:04x}", u));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(printable("plain Ünïcode"), "plain Ünïcode");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("x\r\ny\t"), "x\\x0d\\x0ay\\x09");
        assert_eq!(printable("\u{9b}31m\u{7f}"), "\\u{9b}31m\\x7f");
        assert_eq!(printable("abc\u{202e}gpj.exe"), "abc\\u{202e}gpj.exe");
        assert_eq!(
            printable_text("l1\r\nl2\n\tx\r\u{1b}"),
            "l1\r\nl2\n\tx\\x0d\\x1b"
        );
        let pretty = serde_json::to_string_pretty(&["x"]).unwrap();
        assert_eq!(json_safe(&pretty), pretty);
        let json = serde_json::to_string("a\u{9b}b\u{1b}").unwrap();
        let safe = json_safe(&json);
        assert_eq!(safe, "\"a\\u009bb\\u001b\"");
        assert_eq!(
            serde_json::from_str::<String>(&safe).unwrap(),
            "a\u{9b}b\u{1b}"
        );
    }
}
