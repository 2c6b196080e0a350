//! The configuration loader (TOML → validated snapshot): any text gives a snapshot or
//! diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dkim_relay::config::load_str(std::path::Path::new("fuzz.toml"), text);
        let _ = dkim_relay::users::PasswordHash::parse(text);
    }
});
