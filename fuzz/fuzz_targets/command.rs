//! Command lines: the line reader (both bare-newline policies) and the command parser, then
//! the session state machine, must accept any bytes without panicking or growing unbounded.
#![no_main]

use dkim_relay::smtp::codec::{BareNewline, LineReader};
use dkim_relay::smtp::command;
use dkim_relay::smtp::session::{Action, Rules, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = command::parse(data);
    for policy in [BareNewline::Reject, BareNewline::Normalize] {
        let mut reader = LineReader::new(510, policy);
        let mut session = Session::new(
            Rules {
                hostname: "fuzz.test".into(),
                max_message_size: 4096,
                max_recipients: 4,
                max_errors: u32::MAX,
                starttls: true,
                auth_users: true,
                auth_plaintext: true,
                max_auth_failures: u32::MAX,
            },
            true,
        );
        let mut buf = data.to_vec();
        while let Some(line) = reader.next_line(&mut buf) {
            if let Ok(l) = &line {
                assert!(l.len() <= 510);
            }
            match session.command(line) {
                Action::StartTls(_) => session.tls_started(),
                Action::Authenticate(_) => {
                    let _ = session.auth_result(None);
                }
                Action::StartData(_) => {
                    let _ = session.data_finished(Ok(Vec::new()));
                }
                _ => {}
            }
        }
        assert!(buf.len() <= 512 + data.len());
    }
});
