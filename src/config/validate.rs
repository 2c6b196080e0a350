//! Validation and resolution of a [`RawConfig`] into a [`Snapshot`].
//!
//! Every rule collects a [`Diagnostic`] instead of returning early, so `dkim-relay check` shows
//! all problems at once. Lines are found by re-reading the TOML with spans.
//!
//! One file per section (`server`, `upstream`, `reload`, `dns`, `domains`); this file holds what
//! they share: the [`Ctx`] that collects diagnostics, the one range check ([`Ctx::ranged`],
//! bounds and defaults from [`super::defaults`]) and the one place files are read
//! ([`Ctx::read`], which also records them for the watcher).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::RawConfig;
use super::*;

mod dns;
mod domains;
mod http;
mod reload;
mod server;
mod spool;
mod upstream;

use dns::dns;
use domains::domain;
use reload::reload;
use server::{server, users};
use upstream::upstream;

struct Ctx<'a> {
    file: PathBuf,
    base: PathBuf,
    doc: Option<toml::Spanned<toml::de::DeTable<'a>>>,
    text: &'a str,
    found: Vec<Diagnostic>,
    /// Every file read while resolving (for the watcher), in order, once each.
    files: Vec<PathBuf>,
}

impl<'a> Ctx<'a> {
    fn line(&self, path: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table = doc.get_ref();
        let mut best = None;
        for (i, part) in path.iter().enumerate() {
            let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *part)?;
            best = Some(super::line_of(self.text, key.span().start));
            if i + 1 == path.len() {
                break;
            }
            match value.get_ref() {
                toml::de::DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        best
    }

    fn push(&mut self, severity: Severity, path: &[&str], message: impl Into<String>) {
        let line = self.line(path);
        self.found.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line,
            key: dotted(path),
            message: message.into(),
        });
    }
    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.push(Severity::Error, path, message)
    }
    fn warn(&mut self, path: &[&str], message: impl Into<String>) {
        self.push(Severity::Warning, path, message)
    }
    /// Records a file this configuration depends on (read now, or by a module it builds).
    fn depends_on(&mut self, p: &Path) {
        if !self.files.iter().any(|f| f == p) {
            self.files.push(p.to_path_buf());
        }
    }
    /// Reads a file the configuration names. The one place `validate` reads files: each is
    /// recorded, so the watcher sees every file a snapshot was built from.
    fn read(&mut self, p: &Path) -> std::io::Result<Vec<u8>> {
        self.depends_on(p);
        // Only regular files of bounded size, not world-writable: a FIFO or /dev/zero named
        // here is an error naming the key, never a hang (`regular_file`).
        crate::regular_file::read(p)
    }
    /// The one range check: `value` (or the default) within the inclusive bounds of `range`;
    /// outside them, an error naming the bounds, and the value clamped so loading goes on.
    fn ranged(&mut self, path: &[&str], value: Option<u64>, range: defaults::Range) -> u64 {
        let v = value.unwrap_or(range.default);
        if v < range.min || v > range.max {
            self.error(path, range.message());
        }
        v.clamp(range.min, range.max)
    }
    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

/// `domains."example.org".mail_from` — quoting keys that contain dots.
fn dotted(path: &[&str]) -> String {
    path.iter()
        .map(|p| {
            if p.contains('.') || p.is_empty() {
                format!("\"{p}\"")
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The open-relay refusal, naming what to change.
pub(super) const OPEN_RELAY: &str = "listening on a non-loopback address while non-loopback \
    clients may submit without authentication, and no [[server.users]] exist: this would be an \
    open signing relay. Restrict allow_networks to loopback, add users, or listen on loopback only";

/// The open-relay guard: a non-loopback listener is fine when only loopback clients may submit
/// unauthenticated, or when users exist (they must authenticate, over TLS). Otherwise anything
/// that can reach the port could send mail signed for our domains. `listening` is what the
/// relay listens on: the configured addresses when loading, the addresses actually bound
/// when a reload is checked (`reload::Live`), since a reload cannot move a listener.
pub(super) fn open_relay(listening: &[std::net::SocketAddr], server: &Server) -> bool {
    let public = listening.iter().any(|a| !a.ip().is_loopback());
    let loopback_only = server.allow_networks.iter().all(|n| n.is_loopback());
    public && !loopback_only && server.users.is_empty()
}

pub(super) fn resolve(file: &Path, text: &str, raw: RawConfig) -> LoadResult {
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cx = Ctx {
        file: file.to_path_buf(),
        base,
        doc: toml::de::DeTable::parse(text).ok(),
        text,
        found: Vec::new(),
        files: vec![file.to_path_buf()],
    };

    let server = server(&mut cx, &raw.server);
    let upstream = upstream(&mut cx, &raw.upstream, raw.simulator.as_ref());
    let profile = upstream.as_ref().map(|u| u.profile).unwrap_or(Profile::Ses);
    let reload = reload(&mut cx, &raw.reload);
    let mut dns = dns(&mut cx, &raw.dns);
    // On the embedded simulator (staging, demo keys) the keys that matter are in the
    // simulator's own zone, not public DNS: the published-key check is off unless asked for.
    if raw.dns.check_interval_secs.is_none() && raw.upstream.simulator == Some(true) {
        dns.check_interval = std::time::Duration::ZERO;
    }
    let spool = raw.spool.as_ref().and_then(|s| spool::spool(&mut cx, s));
    let (http, log_format) = http::http(&mut cx, raw.http.as_ref(), raw.log_format.as_deref());
    let mut domains = Domains::default();
    if raw.domains.is_empty() {
        cx.error(
            &["domains"],
            "no sending domains configured: add a [domains.\"example.org\"] table",
        );
    }
    for (name, d) in &raw.domains {
        if let Some(domain) = domain(&mut cx, name, d, profile, reload.require_published) {
            if domains.contains_key(&domain.name) {
                cx.error(
                    &["domains", name],
                    format!("domain {} is configured twice", domain.name),
                );
            }
            domains.insert(domain.name.clone(), Arc::new(domain));
        }
    }

    let mut server = server;
    if let Some(server) = &mut server {
        server.users = users(&mut cx, &raw.server.users, &domains);
        let addrs: Vec<std::net::SocketAddr> = server
            .listen
            .iter()
            .chain(server.tls.iter().flat_map(|t| t.implicit_listen.iter()))
            .copied()
            .collect();
        if open_relay(&addrs, server) {
            cx.error(&["server", "allow_networks"], OPEN_RELAY);
        }
        let public = addrs.iter().any(|a| !a.ip().is_loopback());
        let loopback_only = server.allow_networks.iter().all(|n| n.is_loopback());
        if public && loopback_only && server.users.is_empty() {
            cx.warn(
                &["server", "listen"],
                "listening on a non-loopback address, but only loopback clients may submit \
                 (allow_networks) and no [[server.users]] exist: remote clients can connect \
                 but never send. Add users, widen allow_networks to the clients' networks, or \
                 listen on loopback only",
            );
        }
        if public && !server.users.is_empty() && server.tls.is_none() {
            cx.warn(
                &["server", "users"],
                "users are configured but [server.tls] is not: AUTH is offered only over TLS \
                 (or to loopback clients with auth_plaintext_loopback = true)",
            );
        }
    }

    let errors = cx.found.iter().any(|d| d.severity == Severity::Error);
    match (errors, server, upstream) {
        (false, Some(server), Some(upstream)) => Ok(Snapshot {
            source: file.to_path_buf(),
            server,
            upstream,
            reload,
            dns,
            domains,
            spool,
            http,
            log_format,
            files: cx.files,
            warnings: cx.found,
        }),
        _ => {
            let mut all = cx.found;
            all.sort_by_key(|d| std::cmp::Reverse(d.severity));
            Err(all)
        }
    }
}
