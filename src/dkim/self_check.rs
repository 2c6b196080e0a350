//! Self-verification before hand-off: the relay checks every signature it just made over the
//! exact bytes it is about to send, with the independent verifier ([`super::verify`], which
//! shares no canonicalization code with the signer) and the public keys it loaded — no DNS.
//!
//! Why: a signature that fails at the receiver is worse than a message that waits. A signer
//! bug (mail-auth 0.13's whitespace-only trailing lines were one) otherwise shows only in
//! receivers' DMARC reports, days later. With `self_verify = "refuse"` (the default) such a
//! message gets `451 4.3.0` and nothing is sent, so the application retries and an operator sees
//! the error log line; `"log"` sends anyway and logs the same line.
//!
//! What must hold: for each active selector of the signing domain, exactly one DKIM-Signature
//! with that `d=`/`s=` is present and verifies.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::domain::Domain;
use super::verify::{self, KeyAnswer, PublicKey};

/// What a failed self-check does (`[server] self_verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfVerify {
    /// `451 4.3.0`, nothing sent, error logged.
    #[default]
    Refuse,
    /// Send anyway; error logged.
    Log,
}

impl SelfVerify {
    pub fn as_str(self) -> &'static str {
        match self {
            SelfVerify::Refuse => "refuse",
            SelfVerify::Log => "log",
        }
    }
}

/// Why the self-check failed: one reason per selector that did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("self-verification failed: {}", .0.join("; "))]
pub struct SelfCheckError(pub Vec<String>);

/// Checks the signatures `domain`'s active selectors made in `message` (the bytes as they go
/// upstream: fields, blank line, body, not dot-stuffed).
pub fn check(domain: &Domain, message: &[u8]) -> Result<(), SelfCheckError> {
    let (fields, body) = verify::split_message(message);
    check_fields(domain, &fields, body)
}

/// As [`check`], over the message in the pieces the relay sends: its header fields (each with
/// its line end) and its body. No copy of the message is made.
pub fn check_fields(domain: &Domain, fields: &[&[u8]], body: &[u8]) -> Result<(), SelfCheckError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let lookup = |d: &str, s: &str| -> KeyAnswer {
        match domain.active.iter().find(|k| k.selector == s) {
            Some(k) if d == domain.name => KeyAnswer::Key(PublicKey {
                algorithm: k.algorithm,
                key: k.public_key.clone(),
            }),
            _ => KeyAnswer::NotFound,
        }
    };
    let results = verify::verify_fields(fields, body, now, &lookup);
    let mut problems = Vec::new();
    for key in &domain.active {
        let mine: Vec<_> = results
            .iter()
            .filter(|c| c.domain == domain.name && c.selector == key.selector)
            .collect();
        match mine.as_slice() {
            [one] => {
                if let Err(e) = &one.result {
                    problems.push(format!("d={} s={}: {e}", domain.name, key.selector));
                }
            }
            [] => problems.push(format!(
                "d={} s={}: no signature found",
                domain.name, key.selector
            )),
            _ => problems.push(format!(
                "d={} s={}: {} signatures, expected one",
                domain.name,
                key.selector,
                mine.len()
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SelfCheckError(problems))
    }
}
