//! The DATA reader: any byte stream, split anywhere, yields either a refusal or a CRLF-clean,
//! NUL-free message within the size cap — and only `CRLF.CRLF` ends it.
#![no_main]

use dkim_relay::smtp::codec::{BareNewline, DataReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let split = (split as usize * input.len()) / 255;
    for policy in [BareNewline::Reject, BareNewline::Normalize] {
        let mut r = DataReader::new(policy, 8192, 2048);
        let (used, mut done) = r.feed(&input[..split]);
        assert!(used <= split);
        if !done {
            done = r.feed(&input[split..]).1;
        }
        if let (true, Ok(msg)) = (done, r.finish()) {
            assert!(msg.len() <= 8192);
            assert!(!msg.contains(&0));
            for (i, b) in msg.iter().enumerate() {
                if *b == b'\n' {
                    assert!(i > 0 && msg[i - 1] == b'\r');
                }
                if *b == b'\r' {
                    assert_eq!(msg.get(i + 1), Some(&b'\n'));
                }
            }
        }
    }
});
