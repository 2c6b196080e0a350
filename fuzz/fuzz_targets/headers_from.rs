//! The header-section parser and the From (author) extraction that picks the signing domain.
#![no_main]

use dkim_relay::message::{address, headers::Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = address::author(&m);
        let _ = m.to_bytes();
    }
});
