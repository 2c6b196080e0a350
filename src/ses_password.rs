//! Amazon SES SMTP password derivation.
//!
//! SES does not take the IAM secret access key as the SMTP password; it takes a value derived from
//! it with a SigV4-style HMAC-SHA256 chain (AWS Developer Guide, "Obtaining Amazon SES SMTP
//! credentials"; `ses-smtp.md` §2). Because the region is part of the chain, SMTP passwords are
//! per region. The relay uses this to turn configured IAM keys into SMTP passwords, and the SES
//! simulator uses it to check the passwords clients present, including recognising the legacy
//! Signature Version 2 form that SES has rejected since 2021-03-26.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Fixed "date" of the derivation. SES ignores real dates here, so AWS fixes it to this string.
const DATE: &str = "11111111";
const SERVICE: &str = "ses";
const TERMINAL: &str = "aws4_request";
/// The action the derived key authorises; SMTP submission is `SendRawEmail` under the hood.
const MESSAGE: &str = "SendRawEmail";
/// First byte of a SigV4 SMTP password (base64 then starts with 'B').
const VERSION_V4: u8 = 0x04;
/// First byte of a legacy SigV2 SMTP password (base64 then starts with 'A').
const VERSION_V2: u8 = 0x02;

/// `HMAC-SHA256(key, msg)`. Note the argument order is (key, message); AWS's pseudocode writes
/// `HmacSha256(msg, key)`, and swapping them is the most common bug in public ports.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, msg).as_ref().to_vec()
}

/// The intermediate keys of the SigV4 chain, exposed so tests (and anyone debugging a mismatch
/// against another implementation) can compare every step, not just the final password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningChain {
    pub k_date: Vec<u8>,
    pub k_region: Vec<u8>,
    pub k_service: Vec<u8>,
    pub k_terminal: Vec<u8>,
    pub k_message: Vec<u8>,
}

/// Computes every step of the SES SMTP SigV4 key chain for `region`.
pub fn signing_chain(secret_access_key: &str, region: &str) -> SigningChain {
    let mut initial = Vec::with_capacity(4 + secret_access_key.len());
    initial.extend_from_slice(b"AWS4");
    initial.extend_from_slice(secret_access_key.as_bytes());
    let k_date = hmac_sha256(&initial, DATE.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, SERVICE.as_bytes());
    let k_terminal = hmac_sha256(&k_service, TERMINAL.as_bytes());
    let k_message = hmac_sha256(&k_terminal, MESSAGE.as_bytes());
    SigningChain {
        k_date,
        k_region,
        k_service,
        k_terminal,
        k_message,
    }
}

/// Prefixes the version byte and encodes with standard, padded base64 (33 bytes → 44 chars).
fn encode(version: u8, mac: &[u8]) -> String {
    let mut raw = Vec::with_capacity(1 + mac.len());
    raw.push(version);
    raw.extend_from_slice(mac);
    STANDARD.encode(raw)
}

/// The SES SMTP password (SigV4, version byte 0x04) for `secret_access_key` in `region`.
pub fn smtp_password_v4(secret_access_key: &str, region: &str) -> String {
    encode(
        VERSION_V4,
        &signing_chain(secret_access_key, region).k_message,
    )
}

/// The legacy SigV2 SMTP password (version byte 0x02, region-independent). SES rejects these;
/// the simulator derives it only to recognise one and answer with SES's special 535 text.
pub fn smtp_password_v2(secret_access_key: &str) -> String {
    encode(
        VERSION_V2,
        &hmac_sha256(secret_access_key.as_bytes(), MESSAGE.as_bytes()),
    )
}

/// Compares two byte strings in time independent of where they differ, so an attacker probing
/// the simulator's AUTH cannot learn a password prefix by timing. (Length is not secret.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn v4_vectors_from_ses_smtp_md() {
        for (region, expected) in [
            ("us-east-2", "BMPPgbAHoFVbze1Ud0oA5uNdXRwUXUZ+qOwphGJbl/cS"),
            ("us-east-1", "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"),
            ("us-west-2", "BF2PynzbSCAjX08zhZZnP/kW+T9P5zs/1Er0pi5vTEmd"),
            ("eu-west-1", "BMW5RDrXmmVs0lV7GpI4oLkHXpZ4stDsk6q91z1g38Pk"),
            (
                "eu-central-1",
                "BF0/eIJm0ruTHsSjOkRuOGzGF+zeSyE3aiRzrzUQ8LwG",
            ),
            (
                "ap-northeast-1",
                "BEBMrlH2tcrvRtSfkd6WbOlpfHSCPAV60ZayJ9ZqHS5c",
            ),
        ] {
            let got = smtp_password_v4(SECRET, region);
            assert_eq!(got, expected, "region {region}");
            assert_eq!(got.len(), 44);
            assert!(got.starts_with('B'));
        }
    }

    #[test]
    fn v2_vector() {
        let got = smtp_password_v2(SECRET);
        assert_eq!(got, "An60U4ZD3sd4fg+FvXUjayOipTt8LO4rUUmhpdX6ctDy");
        assert!(got.starts_with('A'));
    }

    #[test]
    fn us_east_1_intermediate_values() {
        let chain = signing_chain(SECRET, "us-east-1");
        assert_eq!(
            hex(&chain.k_date),
            "5e88ec44617a177b45690a3e5fcf20c17099739a24aef34200b96801db651ecc"
        );
        assert_eq!(
            hex(&chain.k_region),
            "c95c7aa304a661ec5d63ccbc0777908509ea72b822e93ee199375cddf812cecf"
        );
        assert_eq!(
            hex(&chain.k_service),
            "d1f402dbfb2b8c87077bb6317e9826e0fd295adf7ab615598398b6ed0f3cb2a4"
        );
        assert_eq!(
            hex(&chain.k_terminal),
            "c8b82257b805c29d363837fe9832fe15a41a1f1ec65823dac54486d4774f5315"
        );
        assert_eq!(
            hex(&chain.k_message),
            "b04cffd8525042dfabc1b0fab53561c06390ec466e14f65c6efadf154b1962fd"
        );
    }

    #[test]
    fn region_changes_password() {
        assert_ne!(
            smtp_password_v4(SECRET, "us-east-1"),
            smtp_password_v4(SECRET, "us-east-2")
        );
        assert_ne!(
            smtp_password_v4(SECRET, "us-east-1"),
            smtp_password_v4("another-secret", "us-east-1")
        );
    }

    #[test]
    fn constant_time_eq_behaviour() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abc", b""));
    }
}
