//! Builds the relay's own settings ([`crate::relay::Settings`]) from a validated [`Snapshot`]:
//! the server shell's settings from `[server]`, the session rules, the signing domains, the
//! upstream profile, pool and endpoint. The relay never reads the configuration; this is the one
//! translation, so a new key is wired here and nowhere below.
//!
//! Fixed values that are not configuration keys (RFC 5321 §4.5.3.1.4's command-line limit, the
//! write timeout) are set here too, next to the keys they sit with.

use std::sync::Arc;
use std::time::Duration;

use super::{Server, Snapshot};
use crate::relay::settings::{SessionRules, Settings, UpstreamSettings};
use crate::server::{Settings as ShellSettings, TlsSettings};

/// RFC 5321 §4.5.3.1.4: 512 octets for a command line, CRLF included.
pub const MAX_COMMAND_LINE: usize = 510;

/// Upper bound on writing one batch of replies to a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The server shell's settings for a `[server]` section.
pub fn shell_settings(s: &Server) -> ShellSettings {
    ShellSettings {
        hostname: s.hostname.clone(),
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        tls: s.tls.as_ref().map(|t| TlsSettings {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(&t.config)),
            handshake_timeout: t.handshake_timeout,
        }),
        greeting_delay: s.greeting_delay,
        max_command_line: MAX_COMMAND_LINE,
        bare_newline: s.bare_newline,
        max_message_size: s.max_message_size,
        max_header_size: s.max_header_size,
        command_timeout: s.command_timeout,
        command_timeout_is_idle: false,
        data_timeout: s.data_timeout,
        data_total_timeout: Some(s.data_total_timeout),
        min_data_rate: s.min_data_rate,
        session_timeout: Some(s.session_timeout),
        write_timeout: WRITE_TIMEOUT,
        reply_delay: Duration::ZERO,
        shutdown_grace: s.shutdown_grace,
    }
}

/// The relay's settings for a snapshot. The upstream endpoint is the snapshot's (for the
/// embedded simulator: the one resolved when it started, see [`super::reload::Live`]).
pub fn relay_settings(snapshot: &Snapshot) -> Settings {
    let s = &snapshot.server;
    Settings {
        shell: Arc::new(shell_settings(s)),
        session: SessionRules {
            allow_networks: s.allow_networks.clone(),
            users: s.users.clone(),
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            max_auth_failures: s.max_auth_failures,
            auth_plaintext_loopback: s.auth_plaintext_loopback,
            auth_failure_delay: s.auth_failure_delay,
            max_auth_failures_per_ip: s.max_auth_failures_per_ip,
        },
        domains: snapshot.domains.clone(),
        upstream: UpstreamSettings {
            profile: snapshot.upstream.profile,
            pool: snapshot.upstream.pool.clone(),
            endpoint: snapshot.upstream.endpoint.clone(),
        },
        self_verify: s.self_verify,
        max_bytes_in_flight: s.max_bytes_in_flight,
        spool: snapshot.spool.clone().map(Arc::new),
    }
}

/// Every configured selector, for the key gauges of [`crate::metrics`].
pub fn key_info(snapshot: &Snapshot) -> Vec<crate::metrics::KeyInfo> {
    let mut out = Vec::new();
    for d in snapshot.domains.values() {
        for (name, k) in &d.selectors {
            out.push(crate::metrics::KeyInfo {
                domain: d.name.clone(),
                selector: name.clone(),
                algorithm: k.algorithm.as_str().to_string(),
                bits: k.bits,
                modified: k.modified,
                active: d.active.iter().any(|a| a.selector == *name),
            });
        }
    }
    out
}
