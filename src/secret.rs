//! Secrets held in memory: passwords, SES secret access keys, SMTP credentials.
//!
//! A leaf with no crate-internal dependencies. [`Secret`]'s `Debug` masks the value, so a
//! secret can sit inside any settings type that is logged or printed (`dkim-relay check`, a
//! `{:?}` in a log line) without leaking; the only way to the bytes is [`Secret::expose`], which
//! is easy to grep for. [`SecretEq`] adds comparison by value, for the one place that needs it:
//! deciding whether the upstream changed on reload (same endpoint and credentials → keep the
//! pool).

use std::fmt;

/// A secret string whose `Debug` and `Display` print `********`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    /// The secret itself; call only where it is sent or hashed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// A secret that compares by value (to reuse the pool when the upstream did not change).
#[derive(Clone, Debug)]
pub struct SecretEq(pub Secret);

impl PartialEq for SecretEq {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose() == other.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_everywhere() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "\"********\"");
        assert_eq!(format!("{s}"), "********");
        assert_eq!(
            format!("{:?}", SecretEq(s.clone())),
            "SecretEq(\"********\")"
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn compares_by_value() {
        let a = SecretEq(Secret::new("x".into()));
        assert_eq!(a, SecretEq(Secret::new("x".into())));
        assert_ne!(a, SecretEq(Secret::new("y".into())));
    }
}
