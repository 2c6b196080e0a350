//! Every default and every bound of the configuration, in one table.
//!
//! Validation (`validate`) takes its defaults and range checks from here,
//! `dkim-relay check` (`describe`) prints the values they produce, and
//! `config.toml.example` documents them: a test below reads the example and fails when a value
//! written there differs from this table, so the three cannot drift apart.
//!
//! A [`Range`] is a number with a default and inclusive bounds; a value outside is an error
//! naming the bounds (`must be between 1 and 300 seconds`) and is clamped so that loading can
//! go on collecting the other problems.

/// A bounded number: its default, inclusive bounds and the unit named in the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub default: u64,
    pub min: u64,
    pub max: u64,
    /// `seconds`, `milliseconds`, `days`, or empty.
    pub unit: &'static str,
}

impl Range {
    const fn secs(default: u64, max: u64) -> Range {
        Range {
            default,
            min: 1,
            max,
            unit: "seconds",
        }
    }

    /// The message for a value out of bounds.
    pub fn message(&self) -> String {
        let m = format!(
            "must be between {} and {} {}",
            self.min, self.max, self.unit
        );
        m.trim_end().to_string()
    }
}

/// `[server]`.
pub mod server {
    use super::Range;
    pub const LISTEN: &str = "127.0.0.1:2525";
    pub const HOSTNAME: &str = "dkim-relay.localdomain";
    /// SES accepts at most 40 MB over SMTP.
    pub const MAX_MESSAGE_SIZE: usize = 41_943_040;
    pub const MIN_MESSAGE_SIZE: usize = 1024;
    pub const MAX_RECIPIENTS: usize = 50;
    pub const MAX_HEADER_SIZE: usize = 256 * 1024;
    /// Six messages of SES's maximum size at once: beyond that, a new DATA gets `452 4.3.1`
    /// instead of growing the process without bound.
    pub const MAX_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;
    pub const MIN_BYTES_IN_FLIGHT: usize = 64 * 1024;
    pub const MAX_CONNECTIONS: usize = 200;
    pub const MAX_CONNECTIONS_PER_IP: usize = 50;
    pub const MAX_ERRORS: u32 = 10;
    pub const ALLOW_NETWORKS: &[&str] = &["127.0.0.0/8", "::1/128"];
    pub const BARE_NEWLINE: &str = "reject";
    /// A signature that fails the relay's own check is refused (451), never sent.
    pub const SELF_VERIFY: &str = "refuse";
    // RFC 5321 §4.5.3.2 sets 5 minutes per command and 10 minutes for DATA as the upper
    // bound a server should wait; a loopback relay can afford much shorter defaults.
    pub const COMMAND_TIMEOUT_SECS: Range = Range::secs(60, 300);
    pub const DATA_TIMEOUT_SECS: Range = Range::secs(120, 600);
    pub const SESSION_TIMEOUT_SECS: Range = Range::secs(1800, 86_400);
    pub const SHUTDOWN_GRACE_SECS: Range = Range::secs(30, 3600);
    pub const DATA_TOTAL_TIMEOUT_SECS: Range = Range::secs(600, 3600);
    pub const GREETING_DELAY_MS: Range = Range {
        default: 0,
        min: 0,
        max: 30_000,
        unit: "milliseconds",
    };
    pub const AUTH_FAILURE_DELAY_MS: Range = Range {
        default: 1000,
        min: 0,
        max: 30_000,
        unit: "milliseconds",
    };
    pub const AUTH_PLAINTEXT_LOOPBACK: bool = false;
    pub const MAX_AUTH_FAILURES: u32 = 3;
    /// Failed AUTH attempts per client address within `AUTH_FAILURE_WINDOW_SECS`, over all its
    /// connections: a guesser cannot reconnect around `max_auth_failures`.
    /// (The window is `relay::protocol::AUTH_FAILURE_WINDOW`, 15 minutes.)
    pub const MAX_AUTH_FAILURES_PER_IP: u32 = 10;
    /// Bytes per second DATA must average over each window. 1 KiB/s is far below any real
    /// client, and a trickle under it holds a connection for a window, not for
    /// `data_total_timeout_secs`. 0 turns the floor off.
    pub const MIN_DATA_RATE: Range = Range {
        default: 1024,
        min: 0,
        max: 1 << 30,
        unit: "bytes per second",
    };
    pub const MIN_DATA_RATE_WINDOW_SECS: Range = Range::secs(30, 3600);
    /// `[server.tls] handshake_timeout_secs`.
    pub const TLS_HANDSHAKE_TIMEOUT_SECS: Range = Range::secs(10, 300);
}

/// `[upstream]`.
pub mod upstream {
    use super::Range;
    pub const PROFILE: &str = "ses";
    pub const SIMULATOR: bool = false;
    pub const TLS: &str = "starttls";
    pub const STARTTLS_PORT: u16 = 587;
    pub const IMPLICIT_PORT: u16 = 465;
    /// Throughput is at most pool_size / transaction latency (SES offers no PIPELINING): 16
    /// connections at SES's ~100–300 ms per transaction carry 50–160 messages a second, several
    /// times the default production send rate (14/s), while staying far below the concurrent
    /// connection count at which SES answers `421 Too many concurrent SMTP connections`. The
    /// pool opens them only under concurrent demand and closes them when idle.
    pub const POOL_SIZE: Range = Range {
        default: 16,
        min: 1,
        max: 256,
        unit: "",
    };
    /// SES caps messages per connection.
    pub const MAX_MESSAGES_PER_CONNECTION: u32 = 50;
    pub const MAX_CONNECTION_AGE_SECS: Range = Range::secs(60, 3600);
    /// SES drops idle connections after about 10 s: close ours well before that.
    pub const IDLE_CLOSE_SECS: Range = Range::secs(8, 3600);
    /// `max_send_rate` absent or 0: unpaced (SES's own throttling is the limit). Set it to the
    /// account's rate: SES has no default that fits every account (sandbox 1/s, production
    /// from 14/s), and a guessed rate either wastes capacity or draws 454s.
    pub const MAX_SEND_RATE: f64 = 0.0;
    /// The highest rate accepted (SES raises accounts into the thousands per second).
    pub const MAX_SEND_RATE_LIMIT: f64 = 100_000.0;
    /// How long a pass-through client's message may wait for its turn (send rate, a free
    /// connection): long enough to absorb a burst of 30x the rate at once, far below what SMTP
    /// clients wait for a reply to DATA (RFC 5321 §4.5.3.2.6 suggests 10 minutes; common
    /// libraries wait 1–10 minutes), so the client gets a clear 451 4.4.5 instead of its timeout.
    pub const MAX_WAIT_SECS: Range = Range::secs(30, 600);
    /// `idle_close_secs` at or above this draws a warning under the SES profile.
    pub const SES_IDLE_LIMIT_SECS: u64 = 10;
    pub const CONNECT_TIMEOUT_SECS: Range = Range::secs(10, 3600);
    pub const TLS_TIMEOUT_SECS: Range = Range::secs(10, 3600);
    pub const COMMAND_TIMEOUT_SECS: Range = Range::secs(30, 3600);
    pub const DATA_TIMEOUT_SECS: Range = Range::secs(120, 3600);
}

/// `[reload]`.
pub mod reload {
    use super::Range;
    pub const WATCH: bool = false;
    pub const WATCH_INTERVAL_SECS: Range = Range::secs(2, 3600);
    pub const REQUIRE_PUBLISHED: bool = false;
    pub const KEY_MAX_AGE_DAYS: Range = Range {
        default: 180,
        min: 1,
        max: 36_500,
        unit: "days",
    };
}

/// `[dns]`.
pub mod dns {
    use super::Range;
    pub const TIMEOUT_SECS: Range = Range::secs(5, 60);
    pub const PORT: u16 = 53;
    /// How often the published key records are compared with the loaded keys (the
    /// `dkim_relay_key_dns_match` gauges): hourly; 0 turns the check off; at most a day.
    pub const CHECK_INTERVAL_SECS: Range = Range {
        default: 3600,
        min: 0,
        max: 86_400,
        unit: "seconds",
    };
}

/// `[spool]`.
pub mod spool {
    use super::Range;
    pub const MODE: &str = "on-defer";
    /// Keep this much free on the spool's file system: a full disk must refuse (452), not
    /// write torn files or starve the logs.
    pub const MIN_FREE_MB: Range = Range {
        default: 256,
        min: 0,
        max: 1 << 40,
        unit: "megabytes",
    };
    /// First retry after a minute, doubling to an hour (AWS: backoff with jitter).
    pub const RETRY_INITIAL_MS: Range = Range {
        default: 60_000,
        min: 10,
        max: 3_600_000,
        unit: "milliseconds",
    };
    pub const RETRY_MAX_MS: Range = Range {
        default: 3_600_000,
        min: 10,
        max: 86_400_000,
        unit: "milliseconds",
    };
    /// Two days, AWS's guidance for SES clients; then the dead-letter folder.
    pub const MAX_AGE_SECS: Range = Range {
        default: 172_800,
        min: 1,
        max: 30 * 86_400,
        unit: "seconds",
    };
    /// While SES refuses the account, one message probes this often.
    pub const PAUSE_PROBE_MS: Range = Range {
        default: 60_000,
        min: 10,
        max: 3_600_000,
        unit: "milliseconds",
    };
}

/// Top-level keys.
pub mod top {
    pub const LOG_FORMAT: &str = "text";
}

/// `[http]` (off when absent; the example's address is loopback).
pub mod http {
    pub const EXAMPLE_LISTEN: &str = "127.0.0.1:9090";
}

/// `[domains."…"]` (the signed-header defaults are the signer's: `dkim::domain`).
pub mod domains {
    pub const ENVELOPE_LOCAL_PART: &str = "keep";
    pub const NULL_SENDER_LOCAL_PART: &str = "bounce";
    pub const SUBDOMAINS: bool = false;
    /// `expiration_secs` (the DKIM `x=` tag, RFC 6376 §3.5): at most a year — `x=` is a
    /// timestamp, and a huge value would wrap and make every signature born expired.
    pub const EXPIRATION_SECS_MAX: u64 = 365 * 86_400;
    /// Under this, a warning: a message retried by a receiver or delayed in a queue may
    /// arrive with its signature already expired.
    pub const EXPIRATION_SECS_WARN: u64 = 86_400;
}

/// Every default as `config.toml.example` writes it: (table, key, value).
pub fn documented() -> Vec<(&'static str, &'static str, String)> {
    let q = |s: &str| format!("\"{s}\"");
    let list = |l: &[&str]| {
        let items: Vec<String> = l.iter().map(|s| q(s)).collect();
        format!("[{}]", items.join(", "))
    };
    let d = |r: Range| r.default.to_string();
    vec![
        ("", "log_format", q(top::LOG_FORMAT)),
        ("server", "listen", q(server::LISTEN)),
        ("server", "hostname", q(server::HOSTNAME)),
        (
            "server",
            "max_message_size",
            server::MAX_MESSAGE_SIZE.to_string(),
        ),
        (
            "server",
            "max_recipients",
            server::MAX_RECIPIENTS.to_string(),
        ),
        (
            "server",
            "max_header_size",
            server::MAX_HEADER_SIZE.to_string(),
        ),
        (
            "server",
            "max_bytes_in_flight",
            server::MAX_BYTES_IN_FLIGHT.to_string(),
        ),
        (
            "server",
            "max_connections",
            server::MAX_CONNECTIONS.to_string(),
        ),
        (
            "server",
            "max_connections_per_ip",
            server::MAX_CONNECTIONS_PER_IP.to_string(),
        ),
        ("server", "max_errors", server::MAX_ERRORS.to_string()),
        (
            "server",
            "command_timeout_secs",
            d(server::COMMAND_TIMEOUT_SECS),
        ),
        ("server", "data_timeout_secs", d(server::DATA_TIMEOUT_SECS)),
        (
            "server",
            "session_timeout_secs",
            d(server::SESSION_TIMEOUT_SECS),
        ),
        (
            "server",
            "shutdown_grace_secs",
            d(server::SHUTDOWN_GRACE_SECS),
        ),
        ("server", "bare_newline", q(server::BARE_NEWLINE)),
        ("server", "self_verify", q(server::SELF_VERIFY)),
        ("server", "allow_networks", list(server::ALLOW_NETWORKS)),
        (
            "server",
            "data_total_timeout_secs",
            d(server::DATA_TOTAL_TIMEOUT_SECS),
        ),
        ("server", "greeting_delay_ms", d(server::GREETING_DELAY_MS)),
        (
            "server",
            "auth_plaintext_loopback",
            server::AUTH_PLAINTEXT_LOOPBACK.to_string(),
        ),
        (
            "server",
            "auth_failure_delay_ms",
            d(server::AUTH_FAILURE_DELAY_MS),
        ),
        (
            "server",
            "max_auth_failures",
            server::MAX_AUTH_FAILURES.to_string(),
        ),
        (
            "server",
            "max_auth_failures_per_ip",
            server::MAX_AUTH_FAILURES_PER_IP.to_string(),
        ),
        ("server", "min_data_rate", d(server::MIN_DATA_RATE)),
        (
            "server",
            "min_data_rate_window_secs",
            d(server::MIN_DATA_RATE_WINDOW_SECS),
        ),
        ("upstream", "profile", q(upstream::PROFILE)),
        ("upstream", "pool_size", d(upstream::POOL_SIZE)),
        (
            "upstream",
            "max_messages_per_connection",
            upstream::MAX_MESSAGES_PER_CONNECTION.to_string(),
        ),
        (
            "upstream",
            "max_connection_age_secs",
            d(upstream::MAX_CONNECTION_AGE_SECS),
        ),
        ("upstream", "idle_close_secs", d(upstream::IDLE_CLOSE_SECS)),
        (
            "upstream",
            "max_send_rate",
            (upstream::MAX_SEND_RATE as u64).to_string(),
        ),
        ("upstream", "max_wait_secs", d(upstream::MAX_WAIT_SECS)),
        (
            "upstream",
            "connect_timeout_secs",
            d(upstream::CONNECT_TIMEOUT_SECS),
        ),
        (
            "upstream",
            "tls_timeout_secs",
            d(upstream::TLS_TIMEOUT_SECS),
        ),
        (
            "upstream",
            "command_timeout_secs",
            d(upstream::COMMAND_TIMEOUT_SECS),
        ),
        (
            "upstream",
            "data_timeout_secs",
            d(upstream::DATA_TIMEOUT_SECS),
        ),
        ("reload", "watch", reload::WATCH.to_string()),
        (
            "reload",
            "watch_interval_secs",
            d(reload::WATCH_INTERVAL_SECS),
        ),
        (
            "reload",
            "require_published",
            reload::REQUIRE_PUBLISHED.to_string(),
        ),
        ("reload", "key_max_age_days", d(reload::KEY_MAX_AGE_DAYS)),
        ("dns", "timeout_secs", d(dns::TIMEOUT_SECS)),
        ("dns", "check_interval_secs", d(dns::CHECK_INTERVAL_SECS)),
        ("spool", "mode", q(spool::MODE)),
        ("spool", "min_free_mb", d(spool::MIN_FREE_MB)),
        ("spool", "retry_initial_ms", d(spool::RETRY_INITIAL_MS)),
        ("spool", "retry_max_ms", d(spool::RETRY_MAX_MS)),
        ("spool", "max_age_secs", d(spool::MAX_AGE_SECS)),
        ("spool", "pause_probe_ms", d(spool::PAUSE_PROBE_MS)),
        (
            "domains",
            "envelope_local_part",
            q(domains::ENVELOPE_LOCAL_PART),
        ),
        (
            "domains",
            "null_sender_local_part",
            q(domains::NULL_SENDER_LOCAL_PART),
        ),
        ("domains", "subdomains", domains::SUBDOMAINS.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `key = value` lines of the example, commented or not, by table (`[domains."x"]` counts as
    /// `domains`; sub-tables such as `[server.tls]` as their own).
    fn example() -> Vec<(String, String, String)> {
        let text = include_str!("../../config.toml.example");
        let mut table = String::new();
        let mut out = Vec::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if let Some(h) = l.strip_prefix('[') {
                let name = h.split(']').next().unwrap_or("").trim_start_matches('[');
                table = name.split('.').next().unwrap_or("").to_string();
                if name.contains(".tls") || name.contains(".selectors") {
                    table = name.to_string();
                }
                continue;
            }
            let Some((key, rest)) = l.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key.is_empty() || key.contains(' ') {
                continue;
            }
            // The value ends where the trailing comment starts (outside a string).
            let rest = rest.trim();
            let mut in_str = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '"' => in_str = !in_str,
                    '#' if !in_str => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            out.push((
                table.clone(),
                key.to_string(),
                rest[..end].trim().to_string(),
            ));
        }
        out
    }

    #[test]
    fn the_example_documents_every_default_as_the_table_says() {
        let example = example();
        for (table, key, value) in documented() {
            let written: Vec<&String> = example
                .iter()
                .filter(|(t, k, _)| t == table && k == key)
                .map(|(_, _, v)| v)
                .collect();
            assert!(
                !written.is_empty(),
                "config.toml.example does not mention {table}.{key}"
            );
            assert!(
                written.iter().any(|v| **v == value),
                "config.toml.example writes {table}.{key} = {written:?}; the default is {value}"
            );
        }
    }

    #[test]
    fn self_verify_default_is_the_signer_default() {
        use crate::dkim::self_check::SelfVerify;
        assert_eq!(server::SELF_VERIFY, SelfVerify::default().as_str());
    }

    #[test]
    fn bare_newline_default_is_the_codec_default() {
        use crate::smtp::codec::BareNewline;
        assert_eq!(server::BARE_NEWLINE, "reject");
        assert_eq!(BareNewline::default(), BareNewline::Reject);
    }

    #[test]
    fn range_messages() {
        assert_eq!(
            server::COMMAND_TIMEOUT_SECS.message(),
            "must be between 1 and 300 seconds"
        );
        assert_eq!(upstream::POOL_SIZE.message(), "must be between 1 and 256");
        assert_eq!(
            server::GREETING_DELAY_MS.message(),
            "must be between 0 and 30000 milliseconds"
        );
    }
}
