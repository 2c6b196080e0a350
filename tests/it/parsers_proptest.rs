//! Property tests over everything that reads client bytes: command lines, the DATA reader,
//! the header section and From parser, replies, and the config loader. No input may panic, and
//! nothing may grow without bound.

use std::path::Path;

use dkim_relay::message::{address, headers::Message};
use dkim_relay::smtp::codec::{BareNewline, DataReader, LineReader};
use dkim_relay::smtp::{command, reply::ReplyParser};
use dkim_relay::upstream::framing::dot_stuff;
use proptest::prelude::*;

fn smtpish() -> impl Strategy<Value = Vec<u8>> {
    // Bytes biased towards what matters to framing: CR, LF, dots, NUL, colons, spaces. Drawn as
    // (class, byte) pairs and mapped, not through a per-byte `prop_oneof!`: the same
    // distribution (4/13 any byte, 2/13 each CR, LF and dot, 1/13 each NUL, colon and space)
    // at a fraction of the generation cost in an unoptimized test build.
    prop::collection::vec((0u8..13, any::<u8>()), 0..2048).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(class, byte)| match class {
                0..=3 => byte,
                4 | 5 => b'\r',
                6 | 7 => b'\n',
                8 | 9 => b'.',
                10 => 0,
                11 => b':',
                _ => b' ',
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn command_parser_never_panics(line in smtpish()) {
        let _ = command::parse(&line);
    }

    #[test]
    fn line_reader_bounds_its_buffer(input in smtpish(), split in 0usize..2048) {
        for policy in [BareNewline::Reject, BareNewline::Normalize] {
            let mut r = LineReader::new(510, policy);
            let mut buf = Vec::new();
            let split = split.min(input.len());
            for part in [&input[..split], &input[split..]] {
                buf.extend_from_slice(part);
                while let Some(line) = r.next_line(&mut buf) {
                    if let Ok(l) = line {
                        prop_assert!(l.len() <= 510);
                        prop_assert!(!l.contains(&b'\n'));
                        prop_assert!(!l.contains(&b'\r'));
                    }
                }
                prop_assert!(buf.len() <= 511 + part.len());
            }
        }
    }

    #[test]
    fn data_reader_output_is_clean_and_bounded(input in smtpish(), split in 0usize..2048) {
        for policy in [BareNewline::Reject, BareNewline::Normalize] {
            let mut r = DataReader::new(policy, 4096, 1024);
            let split = split.min(input.len());
            let (u1, d1) = r.feed(&input[..split]);
            let done = d1 || {
                let (_, d2) = r.feed(&input[split..]);
                d2
            };
            prop_assert!(u1 <= split);
            if let (true, Ok(msg)) = (done, r.finish()) {
                prop_assert!(msg.len() <= 4096);
                // CRLF-clean: every LF is preceded by CR and every CR followed by LF.
                for (i, b) in msg.iter().enumerate() {
                    if *b == b'\n' { prop_assert!(i > 0 && msg[i - 1] == b'\r'); }
                    if *b == b'\r' { prop_assert!(msg.get(i + 1) == Some(&b'\n')); }
                }
                prop_assert!(!msg.contains(&0));
            }
        }
    }

    #[test]
    fn dot_stuffing_round_trips(lines in prop::collection::vec("[ -~]{0,80}", 0..20)) {
        let mut msg = Vec::new();
        for l in &lines { msg.extend_from_slice(l.as_bytes()); msg.extend_from_slice(b"\r\n"); }
        let framed = dot_stuff(&msg);
        let mut r = DataReader::new(BareNewline::Reject, 1 << 20, 1 << 20);
        let (used, done) = r.feed(&framed);
        prop_assert!(done);
        prop_assert_eq!(used, framed.len());
        prop_assert_eq!(r.finish().ok(), Some(msg));
    }

    #[test]
    fn header_and_from_parsers_never_panic(input in smtpish()) {
        if let Ok(m) = Message::parse(&input) {
            let _ = address::author(&m);
            prop_assert!(m.to_bytes().len() <= input.len() + 2 + 2 * m.fields.len());
        }
    }

    #[test]
    fn reply_parser_never_panics(lines in prop::collection::vec(smtpish(), 0..8)) {
        let mut p = ReplyParser::new();
        for l in lines { let _ = p.feed(&l); }
    }

    #[test]
    fn config_loader_never_panics(text in "[\\[\\]a-z_.=\" 0-9\n{}#,-]{0,400}") {
        let _ = dkim_relay::config::load_str(Path::new("fuzz.toml"), &text);
    }
}

fn session_limits() -> dkim_relay::smtp::session::Rules {
    dkim_relay::smtp::session::Rules {
        hostname: "relay.test".into(),
        max_message_size: 4096,
        max_recipients: 3,
        max_errors: 1000,
        starttls: true,
        auth_users: true,
        auth_plaintext: true,
        max_auth_failures: 1000,
    }
}

fn command_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let verbs = prop_oneof![
        Just(b"EHLO x".to_vec()),
        Just(b"MAIL FROM:<a@example.org>".to_vec()),
        Just(b"RCPT TO:<b@example.com>".to_vec()),
        Just(b"DATA".to_vec()),
        Just(b"RSET".to_vec()),
        Just(b"STARTTLS".to_vec()),
        Just(b"AUTH PLAIN".to_vec()),
        Just(b"AUTH LOGIN".to_vec()),
        Just(b"AUTH PLAIN AGEAYg==".to_vec()),
        Just(b"*".to_vec()),
        smtpish(),
    ];
    prop::collection::vec(verbs, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The session state machine, AUTH continuations included, never panics whatever the
    /// order of commands, and a transaction never survives STARTTLS.
    #[test]
    fn session_never_panics_and_tls_resets(lines in command_lines(), tls_at in 0usize..40) {
        use dkim_relay::smtp::session::{Action, Session};
        let mut s = Session::new(session_limits(), true);
        for (i, l) in lines.into_iter().enumerate() {
            match s.command(Ok(l)) {
                Action::StartTls(_) if i >= tls_at => {
                    s.tls_started();
                    prop_assert!(!s.in_transaction());
                    prop_assert!(s.user().is_none());
                }
                Action::Authenticate(_) => { let _ = s.auth_result(None); }
                Action::StartData(_) => { let _ = s.data_finished(Ok(b"From: a@b.c\r\n\r\n".to_vec())); }
                _ => {}
            }
        }
    }

    /// Any configured `password_hash` string is parsed without panicking, and anything
    /// accepted is an argon2 or bcrypt hash.
    #[test]
    fn password_hash_parser_never_panics(s in "\\PC{0,120}") {
        if dkim_relay::users::PasswordHash::parse(&s).is_ok() {
            let t = s.trim();
            prop_assert!(t.starts_with("$argon2") || t.starts_with("$2"));
        }
    }
}
