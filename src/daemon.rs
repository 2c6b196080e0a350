//! The composition root (mini-redis's `server::run` shape): one function starts a relay from a
//! loaded configuration and hands back its bound addresses and a handle; one function starts
//! the standalone SES simulator. `dkim-relay serve`, `dkim-relay ses-sim` and every test start
//! through here, so there is one wiring, not a copy per caller.
//!
//! [`start`] does, in order: the `require_published` gate (a selector signs only once DNS
//! serves its key), the embedded SES simulator when `[upstream] simulator = true` (its endpoint
//! resolved ONCE, here, and kept by [`Live`] for every reload) with its web UI and
//! Mailpit-compatible API on `[simulator] http_listen` ([`crate::sim::http`]), the listeners (plaintext with
//! STARTTLS, and RFC 8314 implicit TLS), the live configuration, the relay protocol on the
//! server shell, and the file watcher (it polls every file the configuration read and reloads
//! when `[reload] watch = true`; a reload may turn watching on or off). Nothing here waits for
//! signals: the caller decides when to [`Running::reload`] and [`Running::shutdown`].
//!
//! With `[spool]`, [`start`] also opens the spool (recovering it after a crash: uncommitted
//! files dropped, messages that were in flight requeued) before the relay accepts anything,
//! and starts its delivery worker.
//! Metrics and readiness ([`crate::metrics`], [`crate::health`]) are created here, once per
//! relay, and handed down: the relay records into them, the live configuration counts reloads,
//! and the `[http]` endpoint serves them. A component added later registers its readiness check
//! or queue probe through [`Running::readiness`] / [`Running::metrics`].
//!
//! [`start`] also spawns the published-key check ([`crate::doctor::published`]): every
//! `[dns] check_interval_secs` (read from the snapshot in force each round, so a reload applies;
//! 0 = off) it looks up every configured selector's key record and sets
//! `dkim_relay_key_dns_match`. It runs on its own task, so a slow name server never delays SMTP.
//!
//! Invariants: a failed start leaves nothing running (whatever was started is dropped, which
//! closes it); [`Running::shutdown`] drains the relay (transactions in flight finish within the
//! grace period) while the spool's worker lets its deliveries in flight finish within the same
//! grace period and leaves the rest queued, closes the upstream pool, stops the watcher, then
//! stops the simulator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::reload::{Live, Reloaded};
use crate::config::{self, Diagnostic, Severity, Snapshot, UpstreamTarget};
use crate::dns::lookup::{HickoryLookup, Lookup, NoLookup};
use crate::doctor::published::{self, Published};
use crate::health::{Flag, Readiness};
use crate::metrics::{KeyDns, Metrics};
use crate::relay::Relay;
use crate::relay::protocol::RelayProtocol;
use crate::server::{self, Listener, Mode, Stopped};
use crate::sim::config::{SimSettings, TlsSource};
use crate::sim::http::SimHttp;
use crate::sim::{RunningSim, SimError};
use crate::spool;

/// Why a relay or a simulator did not start. Nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration (or the `require_published` gate) refused; every problem is listed.
    #[error("{}: configuration refused; nothing started", path.display())]
    Refused {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// The embedded SES simulator could not start.
    #[error("cannot start the embedded SES simulator: {0}")]
    EmbeddedSimulator(String),
    /// A listener could not be bound (the message names the address).
    #[error("{0}")]
    Bind(#[source] std::io::Error),
    /// The standalone simulator's configuration file.
    #[error("{0}")]
    SimulatorConfig(String),
    /// The standalone simulator could not start.
    #[error(transparent)]
    Simulator(#[from] SimError),
    /// The spool directory could not be opened or recovered.
    #[error("cannot open the spool {0}")]
    Spool(String),
    /// The simulator's web UI could not bind the `http_listen` the configuration names.
    #[error("{0}")]
    SimulatorHttp(#[source] std::io::Error),
}

/// Where a started relay listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addrs {
    /// `server.listen`: plaintext SMTP (STARTTLS when configured).
    pub smtp: Vec<SocketAddr>,
    /// `server.tls.implicit_listen`: RFC 8314 implicit TLS.
    pub implicit_tls: Vec<SocketAddr>,
    /// The embedded simulator's STARTTLS listener, when it runs.
    pub simulator: Option<SocketAddr>,
    /// The embedded simulator's web UI and Mailpit-compatible API, when it runs.
    pub simulator_http: Option<SocketAddr>,
    /// `[http] listen`: `/metrics`, `/livez`, `/readyz`.
    pub http: Option<SocketAddr>,
}

/// How to start, beyond the configuration.
#[derive(Clone, Default)]
pub struct Options {
    /// DNS for `require_published` (at start and on every reload); default: the `[dns]`
    /// name server.
    pub lookup: Option<Arc<dyn Lookup>>,
}

/// A running relay. Dropping it cuts everything at once; [`Running::shutdown`] drains first.
pub struct Running {
    pub addrs: Addrs,
    /// The configuration in force (reload, read the snapshot).
    pub live: Live,
    server: server::Handle,
    watcher: tokio::task::JoinHandle<()>,
    simulator: Option<RunningSim>,
    /// The spool's delivery worker, with `[spool]`.
    spool: Option<spool::Worker>,
    /// `server.shutdown_grace`, for the worker's drain.
    grace: std::time::Duration,
    simulator_http: Option<SimHttp>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// Set while the listeners accept (cleared when draining starts).
    listening: Arc<Flag>,
    http: Option<crate::http::Handle>,
    /// The periodic published-key check.
    key_check: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addrs", &self.addrs)
            .field("simulator", &self.simulator)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Re-reads the configuration and every file it names; swaps it in only when it is whole
    /// and changes no restart-only setting (the running one stays otherwise). Serialized with
    /// the watcher's reloads.
    pub async fn reload(&self) -> Result<Reloaded, Vec<Diagnostic>> {
        self.live.reload_checked().await
    }

    /// The embedded SES simulator, when it runs (its outbox, CA, addresses).
    pub fn simulator(&self) -> Option<&RunningSim> {
        self.simulator.as_ref()
    }

    /// The relay's metrics (a spool registers its queue probe here).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The readiness checks `/readyz` runs (a spool or the upstream registers its own here).
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// Begins a graceful shutdown without waiting for it (new connections are refused at once).
    pub fn signal(&mut self) {
        self.listening.set(false);
        self.server.signal();
    }

    /// Stops accepting, lets transactions in flight finish within the grace period, closes the
    /// upstream pool, stops the watcher, then the embedded simulator; says what was cut.
    pub async fn shutdown(mut self) -> Stopped {
        self.listening.set(false);
        let worker = self.spool.take();
        let grace = self.grace;
        let worker = async move {
            match worker {
                Some(w) => w.shutdown(grace).await,
                None => 0,
            }
        };
        let (stopped, cut) = tokio::join!(self.server.shutdown(), worker);
        if cut > 0 {
            tracing::warn!(
                cut,
                "spool deliveries cut at the end of the grace period; they are retried at the next start"
            );
        }
        self.watcher.abort();
        self.key_check.abort();
        if let Some(http) = self.simulator_http.take() {
            http.shutdown().await;
        }
        if let Some(sim) = self.simulator.take() {
            sim.shutdown().await;
        }
        if let Some(http) = self.http.take() {
            http.shutdown().await;
        }
        if stopped.aborted > 0 {
            tracing::warn!(aborted = stopped.aborted, "stopped with connections cut");
        }
        stopped
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.watcher.abort();
        self.key_check.abort();
        if let Some(w) = &self.spool {
            w.abort();
        }
    }
}

/// Starts a relay from a loaded configuration (`path` is where reloads read it again).
pub async fn start(path: &Path, snapshot: Snapshot) -> Result<Running, StartError> {
    start_with(path, snapshot, Options::default()).await
}

/// [`start`], with [`Options`].
pub async fn start_with(
    path: &Path,
    mut snapshot: Snapshot,
    options: Options,
) -> Result<Running, StartError> {
    let refused = |diagnostics: Vec<Diagnostic>| StartError::Refused {
        path: path.to_path_buf(),
        diagnostics,
    };
    if config::rotation::needed(&snapshot) {
        let lookup: Arc<dyn Lookup> = match &options.lookup {
            Some(l) => Arc::clone(l),
            None => match HickoryLookup::new(&snapshot.dns) {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    return Err(refused(vec![Diagnostic {
                        severity: Severity::Error,
                        file: path.to_path_buf(),
                        line: None,
                        key: "dns".into(),
                        message: format!("require_published needs DNS: {e}"),
                    }]));
                }
            },
        };
        config::rotation::enforce(None, &mut snapshot, lookup.as_ref())
            .await
            .map_err(refused)?;
    }
    // The embedded simulator, resolved once: its endpoint is kept for every reload.
    let embedded = match &snapshot.upstream.target {
        UpstreamTarget::Remote(_) => None,
        UpstreamTarget::Simulator(settings) => Some(
            crate::sim::embedded::start(settings, &snapshot.domains)
                .await
                .map_err(StartError::EmbeddedSimulator)?,
        ),
    };
    let simulator_http = match (&snapshot.upstream.target, &embedded) {
        (UpstreamTarget::Simulator(settings), Some((_, sim))) => {
            start_http(settings, &sim.outbox).await?
        }
        _ => None,
    };
    let listeners = bind_all(&snapshot.server).await.map_err(StartError::Bind)?;
    let http_listener = match &snapshot.http {
        Some(h) => Some(crate::http::bind(h).await.map_err(StartError::Bind)?),
        None => None,
    };
    let mut addrs = Addrs {
        smtp: Vec::new(),
        implicit_tls: Vec::new(),
        simulator: embedded.as_ref().map(|(_, sim)| sim.starttls_addr),
        simulator_http: simulator_http.as_ref().map(|h| h.addr),
        http: None,
    };
    for l in &listeners {
        let a = l.tcp.local_addr().map_err(StartError::Bind)?;
        tracing::info!(address = %a, mode = ?l.mode, domains = snapshot.domains.len(), "dkim-relay listening");
        match l.mode {
            Mode::Plain => addrs.smtp.push(a),
            Mode::ImplicitTls => addrs.implicit_tls.push(a),
        }
    }
    let spool_settings = snapshot.spool.clone();
    let grace = snapshot.server.shutdown_grace;
    let bound: Vec<SocketAddr> = addrs
        .smtp
        .iter()
        .chain(&addrs.implicit_tls)
        .copied()
        .collect();
    let mut live = Live::new(path, snapshot).with_bound(bound);
    let simulator = match embedded {
        Some((endpoint, sim)) => {
            live = live.with_embedded(endpoint);
            Some(sim)
        }
        None => None,
    };
    let check_lookup = options.lookup.clone();
    if let Some(lookup) = options.lookup {
        live = live.with_lookup(lookup);
    }
    let metrics = Arc::new(Metrics::new());
    live = live.with_metrics(Arc::clone(&metrics));
    let readiness = Readiness::new();
    readiness.register_fn("config", config_check(live.clone()));
    let listening = readiness.flag("listeners", "not accepting (starting or draining)");
    let (relay, worker) = match spool_settings {
        None => (Relay::with(None, Arc::clone(&metrics)), None),
        Some(settings) => {
            let opened = spool::Store::open(&settings.dir)
                .and_then(|store| spool::Worker::open(Arc::new(store)))
                .map_err(|e| StartError::Spool(format!("{}: {e}", settings.dir.display())))?;
            let (intake, pending) = opened;
            tracing::info!(dir = %settings.dir.display(), mode = settings.mode.name(), "spool open");
            // What `/metrics` and `/readyz` read from the spool.
            let probe = spool::probe::Probe::new(intake.clone());
            metrics.register_queue(probe.clone());
            let floor = live.clone();
            let writable = probe.clone();
            readiness.register_fn("spool", move || {
                let min_free = floor
                    .snapshot()
                    .spool
                    .as_ref()
                    .map_or(0, |s| s.min_free_bytes);
                writable.writable(min_free)
            });
            readiness.register_fn("upstream", move || probe.not_paused());
            let relay = Relay::with(Some(intake), Arc::clone(&metrics));
            let source = crate::relay::SpoolSource {
                relay: Arc::clone(&relay),
                current: live.relay_settings(),
                initial: Arc::new(settings),
            };
            (relay, Some(pending.start(Arc::new(source))))
        }
    };
    let protocol = RelayProtocol::new(live.relay_settings(), relay);
    let server = server::spawn(listeners, Arc::new(protocol));
    listening.set(true);
    let http = match http_listener {
        Some(l) => {
            let observed = crate::http::Observed {
                metrics: Arc::clone(&metrics),
                readiness: Arc::clone(&readiness),
            };
            let h = crate::http::spawn(l, observed).map_err(StartError::Bind)?;
            addrs.http = Some(h.addr);
            Some(h)
        }
        None => None,
    };
    let watcher = config::watch::spawn(live.clone());
    let key_check = tokio::spawn(check_keys(live.clone(), Arc::clone(&metrics), check_lookup));
    Ok(Running {
        addrs,
        live,
        server,
        watcher,
        simulator,
        spool: worker,
        grace,
        simulator_http,
        metrics,
        readiness,
        listening,
        http,
        key_check,
    })
}

/// While the check is off (or between rounds), how often the interval in force is read again;
/// also the longest wait for the first round after start.
const KEY_CHECK_POLL: Duration = Duration::from_secs(60);

/// The published-key check's task: a first round one interval (at most a minute) after start —
/// not at once, so a relay that starts and stops (a test, `check`-like runs) asks no name
/// server — then one every `[dns] check_interval_secs` of the snapshot in force. `lookup` is the
/// tests' table; otherwise each round asks the `[dns]` name server in force.
async fn check_keys(live: Live, metrics: Arc<Metrics>, lookup: Option<Arc<dyn Lookup>>) {
    let started = Instant::now();
    let mut last: Option<Instant> = None;
    loop {
        let snapshot = live.snapshot();
        let interval = snapshot.dns.check_interval;
        let due = !interval.is_zero()
            && match last {
                None => started.elapsed() >= interval.min(KEY_CHECK_POLL),
                Some(t) => t.elapsed() >= interval,
            };
        if due {
            key_check_round(&snapshot, &metrics, lookup.as_ref()).await;
            last = Some(Instant::now());
        }
        let wait = match last {
            Some(t) if !interval.is_zero() => interval.saturating_sub(t.elapsed()),
            None if !interval.is_zero() => interval
                .min(KEY_CHECK_POLL)
                .saturating_sub(started.elapsed()),
            _ => KEY_CHECK_POLL,
        };
        drop(snapshot);
        tokio::time::sleep(wait.clamp(Duration::from_millis(10), KEY_CHECK_POLL)).await;
    }
}

/// One round: every selector of `snapshot` looked up, the gauges set, problems logged.
async fn key_check_round(snapshot: &Snapshot, metrics: &Metrics, lookup: Option<&Arc<dyn Lookup>>) {
    let lookup: Arc<dyn Lookup> = match lookup {
        Some(l) => Arc::clone(l),
        None => match HickoryLookup::new(&snapshot.dns) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                tracing::warn!(error = %e, "key record check: no resolver");
                Arc::new(NoLookup("no resolver"))
            }
        },
    };
    let outcomes = published::check_published(&snapshot.domains, lookup.as_ref()).await;
    let mut seen = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        match &o.outcome {
            Published::Matches => {}
            Published::Differs(problem) => tracing::warn!(
                domain = %o.domain,
                selector = %o.selector,
                %problem,
                "the published DKIM key record does not match the loaded key"
            ),
            Published::Unknown(error) => tracing::info!(
                domain = %o.domain,
                selector = %o.selector,
                %error,
                "could not look up the DKIM key record; keeping the last result"
            ),
        }
        seen.push(KeyDns {
            matches: o.outcome.matches(),
            domain: o.domain,
            selector: o.selector,
        });
    }
    metrics.key_dns_checked(&seen);
}

/// Starts the simulator's web UI and API on `settings.http_listen` over `outbox`. A default
/// address that is taken (a second simulator on this machine) is a warning, not a failure:
/// SMTP is the simulator's contract, the page a convenience; an address the file names must
/// bind.
async fn start_http(settings: &SimSettings, outbox: &Path) -> Result<Option<SimHttp>, StartError> {
    let Some(listen) = settings.http_listen else {
        return Ok(None);
    };
    match crate::sim::http::start(listen, outbox.to_path_buf()).await {
        Ok(h) => Ok(Some(h)),
        Err(e) if !settings.http_listen_explicit => {
            tracing::warn!(error = %e, "simulator web UI not started (set [simulator] http_listen to choose another address)");
            Ok(None)
        }
        Err(e) => Err(StartError::SimulatorHttp(e)),
    }
}

/// The standalone simulator: its SMTP side and its web UI. Derefs to the [`RunningSim`].
#[derive(Debug)]
pub struct Simulator {
    pub sim: RunningSim,
    /// The web UI and Mailpit-compatible API, when `http_listen` is on.
    pub http: Option<SimHttp>,
}

impl std::ops::Deref for Simulator {
    type Target = RunningSim;
    fn deref(&self) -> &RunningSim {
        &self.sim
    }
}

impl Simulator {
    /// Stops the web UI, then the simulator.
    pub async fn shutdown(self) {
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        self.sim.shutdown().await;
    }
}

/// Readiness `config`: the configuration in force has, for every domain, a loaded key that
/// signs (a snapshot is only ever swapped in whole, so this holds unless a domain was left
/// without an active selector, e.g. by `require_published`).
fn config_check(live: Live) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
    move || {
        let snapshot = live.snapshot();
        let idle: Vec<&str> = snapshot
            .domains
            .values()
            .filter(|d| d.active.is_empty())
            .map(|d| d.name.as_str())
            .collect();
        if snapshot.domains.is_empty() {
            Err("no signing domain configured".into())
        } else if !idle.is_empty() {
            Err(format!("no active key for {}", idle.join(", ")))
        } else {
            Ok(())
        }
    }
}

/// Binds every address of the configuration: `listen` (plaintext SMTP, STARTTLS when
/// configured) and `[server.tls] implicit_listen` (RFC 8314 implicit TLS).
pub async fn bind_all(server: &config::Server) -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for tcp in server::bind(&server.listen).await? {
        out.push(Listener::new(tcp, Mode::Plain));
    }
    if let Some(tls) = &server.tls {
        for tcp in server::bind(&tls.implicit_listen).await? {
            out.push(Listener::new(tcp, Mode::ImplicitTls));
        }
    }
    Ok(out)
}

/// Starts the standalone SES simulator (`dkim-relay ses-sim --config sim.toml`). A generated
/// CA is written beside the configuration (`ses-sim-ca.pem`) unless `ca_out` says where.
pub async fn start_simulator(path: &Path) -> Result<Simulator, StartError> {
    let mut settings = SimSettings::load_file(path).map_err(StartError::SimulatorConfig)?;
    if matches!(settings.tls, TlsSource::Generate { .. }) && settings.ca_out.is_none() {
        let base = path.parent().unwrap_or(Path::new("."));
        settings.ca_out = Some(base.join("ses-sim-ca.pem"));
    }
    if settings.accounts.is_empty() {
        tracing::warn!("no [accounts] configured: every AUTH will fail with 535");
    }
    for a in &settings.accounts {
        tracing::info!(access_key_id = %a.access_key_id, "account");
    }
    let http_settings = settings.clone();
    let sim = crate::sim::start(settings, Vec::new()).await?;
    let http = start_http(&http_settings, &sim.outbox).await?;
    tracing::info!(
        starttls = %sim.starttls_addr,
        implicit = ?sim.implicit_addr,
        ca = ?sim.ca_path,
        outbox = %sim.outbox.display(),
        http = ?http.as_ref().map(|h| h.addr),
        "SES simulator running"
    );
    Ok(Simulator { sim, http })
}
