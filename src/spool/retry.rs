//! The retry schedule (sans-IO): exponential backoff with full jitter in its upper half, capped,
//! and the maximum age past which a message is dead-lettered.
//!
//! Why: AWS's guidance for SES clients is to retry throttled and temporary failures with
//! exponential backoff and jitter (so a crowd of deferred messages does not retry in lock step
//! and meet the same throttle), and to give up after a bounded time — two days by default, as
//! for any MTA queue (Postfix's `maximal_queue_lifetime` is 5 days; SES's own bounce retries
//! stop well inside that).

use std::time::Duration;

use super::settings::Settings;

/// The delay before attempt number `attempts + 1`, given `attempts` failed attempts so far:
/// `initial × 2^(attempts-1)`, capped at `max`, then a random point in its upper half.
pub fn backoff(settings: &Settings, attempts: u32, unit_random: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = settings
        .retry_initial
        .saturating_mul(1u32 << exp)
        .min(settings.retry_max);
    let jitter = 0.5 + 0.5 * unit_random.clamp(0.0, 1.0);
    base.mul_f64(jitter)
}

/// Whether a message accepted at `created_ms` is past the maximum age at `now_ms`.
pub fn expired(settings: &Settings, created_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(created_ms) > settings.max_age.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::settings::Mode;

    fn settings() -> Settings {
        Settings {
            dir: "/x".into(),
            mode: Mode::OnDefer,
            min_free_bytes: 0,
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            max_age: Duration::from_secs(172_800),
            pause_probe: Duration::from_secs(60),
        }
    }

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let s = settings();
        assert_eq!(backoff(&s, 1, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&s, 2, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(&s, 3, 1.0), Duration::from_secs(240));
        assert_eq!(backoff(&s, 20, 1.0), Duration::from_secs(3600));
        assert_eq!(backoff(&s, 1000, 1.0), Duration::from_secs(3600));
        assert_eq!(backoff(&s, 1, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn max_age() {
        let s = settings();
        assert!(!expired(&s, 0, 172_800_000));
        assert!(expired(&s, 0, 172_800_001));
    }
}
