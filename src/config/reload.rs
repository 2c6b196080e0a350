//! The live configuration: an `Arc<Snapshot>` behind a lock, replaced whole.
//!
//! Readers take a clone of the `Arc` (cheap) and keep it for the whole session, so a
//! transaction never sees half of an old and half of a new configuration. With every swap the
//! relay's own settings ([`crate::relay::Settings`], built by [`super::assemble`]) are published
//! on a `tokio::sync::watch` channel ([`Live::relay_settings`]): the relay reads those, never the
//! snapshot.
//!
//! A reload builds and validates a complete new snapshot ([`super::load`]), refuses it when it
//! changes a setting that needs a restart ([`super::restart`]: listeners, the simulator switch,
//! the embedded simulator's settings), carries the embedded simulator's endpoint (resolved once
//! at start) into it, applies `require_published` against the snapshot in force
//! ([`super::rotation`]), and only then swaps.
//! Reloads are serialized (SIGHUP and the file watcher share one async lock), and each swap
//! carries a ticket taken when the reload started, so a slower, older reload can never replace
//! the result of a newer one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{Diagnostic, Endpoint, Snapshot, UpstreamTarget};
use crate::dns::{HickoryLookup, Lookup, NoLookup};
use crate::relay;

/// Shared handle to the configuration in force.
#[derive(Clone)]
pub struct Live {
    current: Arc<RwLock<(u64, Arc<Snapshot>)>>,
    path: PathBuf,
    tickets: Arc<AtomicU64>,
    serial: Arc<tokio::sync::Mutex<()>>,
    /// DNS for `require_published`; `None`: built from each new snapshot's `[dns]`.
    lookup: Option<Arc<dyn Lookup>>,
    /// The embedded simulator's endpoint, resolved once when it started.
    embedded: Option<Endpoint>,
    /// The addresses the relay actually listens on (a reload cannot move them): the open-relay
    /// guard is evaluated against these on every reload.
    bound: Vec<std::net::SocketAddr>,
    /// The relay's settings built from the snapshot in force (sent under the write lock, so
    /// they follow the snapshots' order).
    relay: Arc<tokio::sync::watch::Sender<Arc<relay::Settings>>>,
    /// Counts reloads and publishes the keys in force ([`Live::with_metrics`]).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A successful reload: the snapshot now in force and what `require_published` held back.
#[derive(Debug)]
pub struct Reloaded {
    pub snapshot: Arc<Snapshot>,
    /// One warning per domain that kept its previous selector (or was left out).
    pub held_back: Vec<Diagnostic>,
}

impl Live {
    pub fn new(path: &Path, snapshot: Snapshot) -> Self {
        let (relay, _) =
            tokio::sync::watch::channel(Arc::new(super::assemble::relay_settings(&snapshot)));
        Live {
            relay: Arc::new(relay),
            current: Arc::new(RwLock::new((0, Arc::new(snapshot)))),
            path: path.to_path_buf(),
            tickets: Arc::new(AtomicU64::new(1)),
            serial: Arc::new(tokio::sync::Mutex::new(())),
            lookup: None,
            embedded: None,
            bound: Vec::new(),
            metrics: None,
        }
    }

    /// Records every reload (SIGHUP, watcher) in `metrics`, and the keys in force.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        metrics.set_keys(super::assemble::key_info(&self.snapshot()));
        metrics.loaded();
        self.metrics = Some(metrics);
        self
    }

    /// Records the embedded simulator's endpoint (resolved once, when the relay started it):
    /// the snapshot in force and every reloaded one connect there. Call right after
    /// [`Live::new`], before the handle is shared.
    pub fn with_embedded(mut self, endpoint: Endpoint) -> Self {
        {
            let mut g = match self.current.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(snapshot) = Arc::get_mut(&mut g.1) {
                resolve_embedded(snapshot, Some(&endpoint));
                self.relay
                    .send_replace(Arc::new(super::assemble::relay_settings(snapshot)));
            }
        }
        self.embedded = Some(endpoint);
        self
    }

    /// Records the addresses the listeners are bound to (call at start, before sharing).
    pub fn with_bound(mut self, addrs: Vec<std::net::SocketAddr>) -> Self {
        self.bound = addrs;
        self
    }

    /// Refuses a fresh snapshot that would make the running listeners an open relay, or that
    /// changes a restart-only setting; otherwise gives it the embedded simulator's endpoint.
    fn admit(&self, fresh: &mut Snapshot) -> Result<(), Vec<Diagnostic>> {
        // The guard against what is really bound, whatever the new file says about listeners:
        // `listen = "127.0.0.1:…"` in a reload does not move a socket bound elsewhere.
        if super::validate::open_relay(&self.bound, &fresh.server) {
            return Err(vec![Diagnostic {
                severity: super::Severity::Error,
                file: fresh.source.clone(),
                line: None,
                key: "server.allow_networks".into(),
                message: format!(
                    "{} (the running listeners: {})",
                    super::validate::OPEN_RELAY,
                    self.bound
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }]);
        }
        let refused = super::restart::changes_needing_restart(&self.snapshot(), fresh);
        if !refused.is_empty() {
            return Err(refused);
        }
        resolve_embedded(fresh, self.embedded.as_ref());
        Ok(())
    }

    /// Uses `lookup` for `require_published` checks instead of the `[dns]` name server.
    pub fn with_lookup(mut self, lookup: Arc<dyn Lookup>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// The configuration file this handle reloads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The relay's settings in force, swapped whole with every reload.
    pub fn relay_settings(&self) -> relay::settings::Current {
        self.relay.subscribe()
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g.1),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().1),
        }
    }

    /// Swaps `fresh` in unless a newer reload already did.
    fn swap(&self, ticket: u64, fresh: Arc<Snapshot>) -> Arc<Snapshot> {
        let settings = Arc::new(super::assemble::relay_settings(&fresh));
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ticket > g.0 {
            *g = (ticket, Arc::clone(&fresh));
            self.relay.send_replace(settings);
        }
        Arc::clone(&g.1)
    }

    /// Re-reads the file and every key; swaps only if the whole new configuration is valid.
    /// On error the running configuration stays, and every problem is returned.
    ///
    /// Synchronous, so it cannot consult DNS: a domain under `require_published` whose active
    /// selector changed keeps its previous one (logged). Use [`Live::reload_checked`] to check
    /// publication for real.
    pub fn reload(&self) -> Result<Arc<Snapshot>, Vec<Diagnostic>> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
        let mut fresh = super::load(&self.path)?;
        self.admit(&mut fresh)?;
        if super::rotation::needed(&fresh) {
            let previous = self.snapshot();
            let no_dns = NoLookup("a synchronous reload cannot query DNS");
            let source = fresh.source.clone();
            let held = poll_ready(super::rotation::enforce(
                Some(&previous),
                &mut fresh,
                &no_dns,
            ))
            .unwrap_or_else(|| {
                Err(vec![Diagnostic {
                    severity: super::Severity::Error,
                    file: source,
                    line: None,
                    key: "reload.require_published".into(),
                    message: "the publication check did not complete; reload with SIGHUP".into(),
                }])
            })?;
            for d in &held {
                tracing::warn!("reload: {d}");
            }
        }
        Ok(self.swap(ticket, Arc::new(fresh)))
    }

    /// The reload SIGHUP and the watcher run: one at a time; re-reads the file and every key,
    /// checks that newly active selectors are published where `require_published` asks for it,
    /// and swaps. On error the running configuration stays, and every problem is returned.
    pub async fn reload_checked(&self) -> Result<Reloaded, Vec<Diagnostic>> {
        let result = self.reload_serialized().await;
        if let Some(m) = &self.metrics {
            m.reload(result.is_ok());
            if let Ok(r) = &result {
                m.set_keys(super::assemble::key_info(&r.snapshot));
            }
        }
        result
    }

    async fn reload_serialized(&self) -> Result<Reloaded, Vec<Diagnostic>> {
        let _one_at_a_time = self.serial.lock().await;
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || super::load(&path)).await;
        let mut fresh = match loaded {
            Ok(r) => r?,
            Err(e) => {
                return Err(vec![Diagnostic {
                    severity: super::Severity::Error,
                    file: self.path.clone(),
                    line: None,
                    key: String::new(),
                    message: format!("reload task failed: {e}"),
                }]);
            }
        };
        self.admit(&mut fresh)?;
        let mut held_back = Vec::new();
        if super::rotation::needed(&fresh) {
            let previous = self.snapshot();
            let lookup: Arc<dyn Lookup> = match &self.lookup {
                Some(l) => Arc::clone(l),
                None => match HickoryLookup::new(&fresh.dns) {
                    Ok(l) => Arc::new(l),
                    Err(e) => {
                        // Fail safe: every newly active selector is held back, with this reason.
                        tracing::warn!(error = %e, "require_published: no DNS resolver");
                        Arc::new(NoLookup(
                            "no usable DNS resolver (check [dns] nameserver or /etc/resolv.conf)",
                        ))
                    }
                },
            };
            held_back =
                super::rotation::enforce(Some(&previous), &mut fresh, lookup.as_ref()).await?;
        }
        let snapshot = self.swap(ticket, Arc::new(fresh));
        Ok(Reloaded {
            snapshot,
            held_back,
        })
    }
}

/// Points a simulator-target snapshot at the running simulator.
fn resolve_embedded(snapshot: &mut Snapshot, embedded: Option<&Endpoint>) {
    if let UpstreamTarget::Simulator(_) = snapshot.upstream.target
        && let Some(e) = embedded
    {
        snapshot.upstream.endpoint = Some(e.clone());
    }
}

/// Drives a future that never waits (the [`NoLookup`] path) without a runtime: it completes
/// on its first poll (`None` if it unexpectedly does not).
fn poll_ready<T>(fut: impl std::future::Future<Output = T>) -> Option<T> {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Logs a successful reload: its warnings, what `require_published` held back, and the
/// active selector of each domain.
pub fn log_reloaded(r: &Reloaded) {
    for w in &r.snapshot.warnings {
        tracing::warn!("{w}");
    }
    let active: Vec<String> = r
        .snapshot
        .domains
        .values()
        .map(|d| {
            let s: Vec<&str> = d.active.iter().map(|k| k.selector.as_str()).collect();
            format!("{}={}", d.name, s.join("+"))
        })
        .collect();
    tracing::info!(
        domains = r.snapshot.domains.len(),
        held_back = r.held_back.len(),
        active = %active.join(" "),
        "configuration reloaded"
    );
}

/// Logs a refused reload: every problem, then that the running configuration stays.
pub fn log_refused(diags: &[Diagnostic]) {
    for d in diags {
        tracing::error!("reload refused: {d}");
    }
    tracing::error!("reload refused; the running configuration stays in force");
}
