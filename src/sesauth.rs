//! SES SMTP credentials: the SigV4-style SMTP password derivation (ses-smtp.md §2) and a
//! constant-time comparison for the simulator's AUTH check.
//!
//! STUB for helper-a's module: a working implementation of exactly the agreed signatures, so
//! the simulator compiles and its tests pass; the merge takes helper-a's version.

use aws_lc_rs::hmac;
use base64::Engine;

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, msg).as_ref().to_vec()
}

/// The SES SMTP password (version byte 0x04) for an IAM secret access key in `region`.
pub fn smtp_password_v4(secret: &str, region: &str) -> String {
    let mut k = hmac_sha256(format!("AWS4{secret}").as_bytes(), b"11111111");
    for msg in [region, "ses", "aws4_request", "SendRawEmail"] {
        k = hmac_sha256(&k, msg.as_bytes());
    }
    let mut out = vec![0x04];
    out.extend_from_slice(&k);
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// The legacy SigV2 SMTP password (version byte 0x02), refused by SES since 2021-03-26.
pub fn smtp_password_v2(secret: &str) -> String {
    let mut out = vec![0x02];
    out.extend_from_slice(&hmac_sha256(secret.as_bytes(), b"SendRawEmail"));
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn vectors() {
        assert_eq!(
            smtp_password_v4(SECRET, "us-east-1"),
            "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"
        );
        assert_eq!(
            smtp_password_v4(SECRET, "us-east-2"),
            "BMPPgbAHoFVbze1Ud0oA5uNdXRwUXUZ+qOwphGJbl/cS"
        );
        assert_eq!(
            smtp_password_v2(SECRET),
            "An60U4ZD3sd4fg+FvXUjayOipTt8LO4rUUmhpdX6ctDy"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
