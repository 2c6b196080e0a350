//! Settings a reload cannot apply: they are fixed when the relay starts.
//!
//! The listeners are bound once (`server.listen`, `server.tls.implicit_listen`, `http.listen`),
//! the log format is set once (`log_format`), and the
//! embedded SES simulator is started once with its own listeners and settings, its endpoint
//! resolved then and kept (`upstream.simulator`, `[simulator]`). A reload that changes any of
//! them is refused — loudly, naming the setting — and the running configuration stays whole,
//! rather than half-applied: before this check, flipping `upstream.simulator` was accepted and
//! then every message got a 451, and a changed `listen` was silently ignored.

use std::net::SocketAddr;

use super::{Diagnostic, Severity, Snapshot, UpstreamTarget};
use crate::sim::config::SimSettings;

/// One diagnostic per restart-only setting that differs between the running snapshot and the
/// fresh one; empty when the reload may proceed.
pub fn changes_needing_restart(running: &Snapshot, fresh: &Snapshot) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut refuse = |key: &str, what: String| {
        out.push(Diagnostic {
            severity: Severity::Error,
            file: fresh.source.clone(),
            line: None,
            key: key.to_string(),
            message: format!(
                "{what}: this setting needs a restart; the running configuration stays in force"
            ),
        })
    };
    if running.server.listen != fresh.server.listen {
        refuse(
            "server.listen",
            format!(
                "changed from {} to {}",
                addrs(&running.server.listen),
                addrs(&fresh.server.listen)
            ),
        );
    }
    let implicit = |s: &Snapshot| {
        s.server
            .tls
            .as_ref()
            .map(|t| t.implicit_listen.clone())
            .unwrap_or_default()
    };
    let (was, now) = (implicit(running), implicit(fresh));
    if was != now {
        refuse(
            "server.tls.implicit_listen",
            format!("changed from {} to {}", addrs(&was), addrs(&now)),
        );
    }
    let spool_dir = |s: &Snapshot| s.spool.as_ref().map(|s| s.dir.clone());
    if spool_dir(running) != spool_dir(fresh) {
        refuse(
            "spool.dir",
            "changed (the spool and its worker are set up at start-up)".into(),
        );
    }
    if running.http != fresh.http {
        let show = |h: &Option<crate::http::Settings>| {
            h.as_ref()
                .map_or("off".to_string(), |h| h.listen.to_string())
        };
        refuse(
            "http.listen",
            format!(
                "changed from {} to {}",
                show(&running.http),
                show(&fresh.http)
            ),
        );
    }
    if running.log_format != fresh.log_format {
        refuse(
            "log_format",
            format!(
                "changed from {:?} to {:?}",
                running.log_format, fresh.log_format
            ),
        );
    }
    match (&running.upstream.target, &fresh.upstream.target) {
        (UpstreamTarget::Remote(_), UpstreamTarget::Remote(_)) => {}
        (UpstreamTarget::Simulator(a), UpstreamTarget::Simulator(b)) => {
            for key in simulator_changes(a, b) {
                refuse(key, "changed while the embedded simulator runs".into());
            }
        }
        (UpstreamTarget::Remote(_), UpstreamTarget::Simulator(_)) => refuse(
            "upstream.simulator",
            "switched on (the embedded SES simulator is started only at start-up)".into(),
        ),
        (UpstreamTarget::Simulator(_), UpstreamTarget::Remote(_)) => refuse(
            "upstream.simulator",
            "switched off (the embedded SES simulator runs until the relay stops)".into(),
        ),
    }
    out
}

/// The `[simulator]` keys that differ; the table as a whole when the difference is elsewhere.
fn simulator_changes(a: &SimSettings, b: &SimSettings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if a.starttls_listen != b.starttls_listen {
        keys.push("simulator.starttls_listen");
    }
    if a.implicit_listen != b.implicit_listen {
        keys.push("simulator.implicit_listen");
    }
    if keys.is_empty() && !same_settings(a, b) {
        keys.push("simulator");
    }
    keys
}

/// Every simulator setting, secrets included (their `Debug` is masked, so they are compared
/// separately).
fn same_settings(a: &SimSettings, b: &SimSettings) -> bool {
    format!("{a:?}") == format!("{b:?}")
        && a.accounts.len() == b.accounts.len()
        && a.accounts
            .iter()
            .zip(&b.accounts)
            .all(|(x, y)| x.secret.expose() == y.secret.expose())
}

fn addrs(list: &[SocketAddr]) -> String {
    let all: Vec<String> = list.iter().map(|a| a.to_string()).collect();
    format!("[{}]", all.join(", "))
}
