//! The relay's metrics: typed handles over one `prometheus-client` registry, created once by the
//! composition root and passed down (`Arc<Metrics>`) to whatever records — no global registry,
//! so two relays in one process (every integration test) count separately.
//!
//! Names follow the Prometheus naming rules: the `dkim_relay_` prefix, base units (seconds,
//! bytes), `_total` on counters (added by the encoder), `_info` for build information. Label
//! values are closed enums ([`labels`]) or names from the configuration (signing domain,
//! selector): a value a client chose — a From domain not in the configuration above all — can
//! never become a label, because no method takes one.
//!
//! Values that belong to another component and change without an event — the spool's size and
//! oldest message — are read when `/metrics` is scraped, through a [`QueueProbe`] that
//! component registers ([`Metrics::register_queue`]). Key ages are computed at scrape time from
//! the key files' modification times recorded by [`Metrics::set_keys`]. Whether each selector's
//! DNS record matches its key is what the daemon's periodic check last saw
//! ([`Metrics::key_dns_checked`]); a selector the check could not look up keeps its previous
//! value (absent until first seen).
//!
//! The exposition is OpenMetrics text (what `prometheus-client` writes, ending in `# EOF`);
//! Prometheus scrapes it with [`CONTENT_TYPE`].
//!
//! This is a leaf module: it imports nothing of the crate.

pub mod labels;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use labels::*;
pub use labels::{
    MessageOutcome, Reason, RemovedHeader, SignOutcome, Stage, UpstreamClass, VerifyResult,
};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The spool's view for the queue gauges, read at every scrape.
pub trait QueueProbe: Send + Sync {
    /// Messages held, and the age of the oldest (`None` when empty).
    fn queue(&self) -> QueueStats;
}

/// What a [`QueueProbe`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub messages: u64,
    pub oldest: Option<Duration>,
}

/// What the periodic check saw at one configured selector's `_domainkey` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDns {
    pub domain: String,
    pub selector: String,
    /// `Some(true)`: the record publishes the loaded key; `Some(false)`: missing or another;
    /// `None`: no answer this round.
    pub matches: Option<bool>,
}

/// One configured selector, for the key gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    /// RSA modulus size; `None` for Ed25519 (fixed size).
    pub bits: Option<usize>,
    /// The key file's modification time: its age is the key's.
    pub modified: Option<SystemTime>,
    /// Whether it signs now.
    pub active: bool,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the relay. Cheap to record into from any task (atomics).
pub struct Metrics {
    registry: Registry,
    connections: Counter,
    connections_open: Gauge,
    rejections: Family<RejectionLabels, Counter>,
    signatures: Family<SignatureLabels, Counter>,
    headers_removed: Family<HeaderLabels, Counter>,
    self_verifications: Family<VerifyLabels, Counter>,
    upstream_replies: Family<ClassLabels, Counter>,
    upstream_seconds: Family<ClassLabels, Histogram>,
    messages: Family<OutcomeLabels, Counter>,
    queue_messages: Gauge,
    queue_oldest: FloatGauge,
    reloads: Family<ReloadLabels, Counter>,
    reload_last_success: FloatGauge,
    key_bits: Family<KeyLabels, Gauge>,
    key_age: Family<KeyLabels, FloatGauge>,
    key_dns_match: Family<SelectorLabels, Gauge>,
    key_dns_checked: FloatGauge,
    keys: Mutex<Vec<KeyInfo>>,
    /// The selectors `key_dns_match` has a value for (to drop the ones no longer configured).
    key_dns_seen: Mutex<std::collections::BTreeSet<SelectorLabels>>,
    queue_probe: Mutex<Option<Arc<dyn QueueProbe>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Upstream transactions take from milliseconds (a pooled connection nearby) to the data
/// timeout (120 s by default): 5 ms doubling 15 times reaches ~164 s.
fn transaction_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (once, here).
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("dkim_relay");
        let connections = Counter::default();
        r.register(
            "connections",
            "SMTP connections accepted by the relay",
            connections.clone(),
        );
        let connections_open = Gauge::default();
        r.register(
            "connections_open",
            "SMTP connections open now",
            connections_open.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        r.register(
            "rejections",
            "Refusals sent to clients, by session stage and reason (RFC 3463 subject)",
            rejections.clone(),
        );
        let signatures = Family::<SignatureLabels, Counter>::default();
        r.register(
            "signatures",
            "DKIM signatures made, by configured domain, selector, algorithm and outcome",
            signatures.clone(),
        );
        let headers_removed = Family::<HeaderLabels, Counter>::default();
        r.register(
            "headers_removed",
            "Application header fields removed before signing (SES policy)",
            headers_removed.clone(),
        );
        let self_verifications = Family::<VerifyLabels, Counter>::default();
        r.register(
            "self_verifications",
            "The relay's independent verification of its own signatures, by domain and result",
            self_verifications.clone(),
        );
        let upstream_replies = Family::<ClassLabels, Counter>::default();
        r.register(
            "upstream_replies",
            "Upstream outcomes by class (2xx, throttled, quota, 4xx, 5xx, connection, tls, auth)",
            upstream_replies.clone(),
        );
        let upstream_seconds = Family::<ClassLabels, Histogram>::new_with_constructor(
            transaction_buckets as fn() -> _,
        );
        r.register_with_unit(
            "upstream_transaction",
            "Time to relay one message upstream (pool checkout to final reply), by class",
            Unit::Seconds,
            upstream_seconds.clone(),
        );
        let messages = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "messages",
            "Messages by outcome: delivered, failed (5xx), deferred (4xx or no answer)",
            messages.clone(),
        );
        let queue_messages = Gauge::default();
        r.register(
            "queue_messages",
            "Messages held in the spool (0 without a spool)",
            queue_messages.clone(),
        );
        let queue_oldest = FloatGauge::default();
        r.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest message in the spool (0 when empty)",
            Unit::Seconds,
            queue_oldest.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        r.register(
            "reloads",
            "Configuration reloads by outcome (SIGHUP and the file watcher)",
            reloads.clone(),
        );
        let reload_last_success = FloatGauge::default();
        r.register_with_unit(
            "reload_last_success_timestamp",
            "Unix time of the last successful configuration load (start or reload)",
            Unit::Seconds,
            reload_last_success.clone(),
        );
        let key_bits = Family::<KeyLabels, Gauge>::default();
        r.register(
            "key_bits",
            "Size of each configured DKIM key in bits (Ed25519: 256)",
            key_bits.clone(),
        );
        let key_age = Family::<KeyLabels, FloatGauge>::default();
        r.register_with_unit(
            "key_age",
            "Age of each configured DKIM key (its file's modification time)",
            Unit::Seconds,
            key_age.clone(),
        );
        let key_dns_match = Family::<SelectorLabels, Gauge>::default();
        r.register(
            "key_dns_match",
            "Whether the selector's DNS record was last seen publishing the loaded key (1) or \
             missing or another key (0); absent until seen",
            key_dns_match.clone(),
        );
        let key_dns_checked = FloatGauge::default();
        r.register_with_unit(
            "key_dns_checked_timestamp",
            "Unix time the last check of the published key records completed",
            Unit::Seconds,
            key_dns_checked.clone(),
        );
        r.register(
            "build",
            "Build information",
            Info::new(vec![
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                ("name".to_string(), env!("CARGO_PKG_NAME").to_string()),
            ]),
        );
        Metrics {
            registry: r,
            connections,
            connections_open,
            rejections,
            signatures,
            headers_removed,
            self_verifications,
            upstream_replies,
            upstream_seconds,
            messages,
            queue_messages,
            queue_oldest,
            reloads,
            reload_last_success,
            key_bits,
            key_age,
            key_dns_match,
            key_dns_checked,
            keys: Mutex::new(Vec::new()),
            key_dns_seen: Mutex::new(Default::default()),
            queue_probe: Mutex::new(None),
        }
    }

    /// A connection was accepted; the guard counts it open until dropped.
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections.inc();
        self.connections_open.inc();
        OpenConnection(Arc::clone(self))
    }

    /// A refusal sent to a client.
    pub fn rejection(&self, stage: Stage, reason: Reason) {
        self.rejections
            .get_or_create(&RejectionLabels { stage, reason })
            .inc();
    }

    /// One signature attempt with a configured selector.
    pub fn signature(&self, domain: &str, selector: &str, algorithm: &str, outcome: SignOutcome) {
        self.signatures
            .get_or_create(&SignatureLabels {
                domain: domain.to_string(),
                selector: selector.to_string(),
                algorithm: algorithm.to_string(),
                outcome,
            })
            .inc();
    }

    /// Header fields of the application's the SES policy removed.
    pub fn headers_removed(&self, header: RemovedHeader, count: usize) {
        if count > 0 {
            self.headers_removed
                .get_or_create(&HeaderLabels { header })
                .inc_by(count as u64);
        }
    }

    /// The result of verifying our own signature for a configured domain.
    pub fn self_verification(&self, domain: &str, result: VerifyResult) {
        self.self_verifications
            .get_or_create(&VerifyLabels {
                domain: domain.to_string(),
                result,
            })
            .inc();
    }

    /// One upstream transaction: its class, how long it took, and what it means for the
    /// message.
    pub fn upstream(&self, class: UpstreamClass, elapsed: Duration) {
        let labels = ClassLabels { class };
        self.upstream_replies.get_or_create(&labels).inc();
        self.upstream_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.message(MessageOutcome::of(class));
    }

    /// A message's outcome (recorded by [`Metrics::upstream`]; the spool records its retries'
    /// outcomes here directly).
    pub fn message(&self, outcome: MessageOutcome) {
        self.messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The spool's probe, read at every scrape (a second registration replaces the first).
    pub fn register_queue(&self, probe: Arc<dyn QueueProbe>) {
        *lock(&self.queue_probe) = Some(probe);
    }

    /// A configuration was loaded (at start) or reloaded.
    pub fn reload(&self, ok: bool) {
        let outcome = if ok {
            ReloadOutcome::Success
        } else {
            ReloadOutcome::Failure
        };
        self.reloads.get_or_create(&ReloadLabels { outcome }).inc();
        if ok {
            self.loaded();
        }
    }

    /// The configuration in force was loaded now (start, or a successful reload).
    pub fn loaded(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.reload_last_success.set(now.as_secs_f64());
    }

    /// The selectors of the configuration in force (replaces the previous set).
    pub fn set_keys(&self, keys: Vec<KeyInfo>) {
        self.key_bits.clear();
        self.key_age.clear();
        for k in &keys {
            let bits = k.bits.unwrap_or(256);
            self.key_bits
                .get_or_create(&key_labels(k))
                .set(i64::try_from(bits).unwrap_or(i64::MAX));
        }
        *lock(&self.keys) = keys;
    }

    /// A round of the published-key check completed: `seen` is every selector of the
    /// configuration in force. A selector with an answer gets 1 or 0; one without keeps what was
    /// last seen; one no longer configured is dropped.
    pub fn key_dns_checked(&self, seen: &[KeyDns]) {
        let mut known = lock(&self.key_dns_seen);
        let current: std::collections::BTreeSet<SelectorLabels> = seen
            .iter()
            .map(|k| SelectorLabels {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
            })
            .collect();
        for gone in known.difference(&current) {
            self.key_dns_match.remove(gone);
        }
        known.retain(|l| current.contains(l));
        for k in seen {
            if let Some(m) = k.matches {
                let labels = SelectorLabels {
                    domain: k.domain.clone(),
                    selector: k.selector.clone(),
                };
                self.key_dns_match.get_or_create(&labels).set(i64::from(m));
                known.insert(labels);
            }
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.key_dns_checked.set(now.as_secs_f64());
    }

    /// The exposition: probes read, ages computed, then every metric in OpenMetrics text.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; say so rather than serve half an exposition.
            return format!("# encoding failed: {e}\n# EOF\n");
        }
        out
    }

    fn refresh(&self) {
        let probe = lock(&self.queue_probe).clone();
        let stats = probe.map(|p| p.queue()).unwrap_or_default();
        self.queue_messages
            .set(i64::try_from(stats.messages).unwrap_or(i64::MAX));
        self.queue_oldest
            .set(stats.oldest.unwrap_or_default().as_secs_f64());
        let now = SystemTime::now();
        for k in lock(&self.keys).iter() {
            if let Some(m) = k.modified {
                let age = now.duration_since(m).unwrap_or_default();
                self.key_age
                    .get_or_create(&key_labels(k))
                    .set(age.as_secs_f64());
            }
        }
    }
}

fn key_labels(k: &KeyInfo) -> KeyLabels {
    KeyLabels {
        domain: k.domain.clone(),
        selector: k.selector.clone(),
        algorithm: k.algorithm.clone(),
        active: Flag(k.active),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Counts a connection open until dropped ([`Metrics::connection_opened`]).
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_follow_the_conventions() {
        let m = Arc::new(Metrics::new());
        let _c = m.connection_opened();
        m.rejection(Stage::Message, Reason::Policy);
        m.signature("example.org", "s1", "rsa-sha256", SignOutcome::Signed);
        m.upstream(UpstreamClass::Throttled, Duration::from_millis(20));
        m.headers_removed(RemovedHeader::ReturnPath, 2);
        m.set_keys(vec![KeyInfo {
            domain: "example.org".into(),
            selector: "s1".into(),
            algorithm: "rsa-sha256".into(),
            bits: Some(2048),
            modified: Some(SystemTime::now() - Duration::from_secs(100)),
            active: true,
        }]);
        let text = m.render();
        for line in [
            "dkim_relay_connections_total 1",
            "dkim_relay_connections_open 1",
            "dkim_relay_rejections_total{stage=\"message\",reason=\"policy\"} 1",
            "dkim_relay_signatures_total{domain=\"example.org\",selector=\"s1\",algorithm=\"rsa-sha256\",outcome=\"signed\"} 1",
            "dkim_relay_upstream_replies_total{class=\"throttled\"} 1",
            "dkim_relay_messages_total{outcome=\"deferred\"} 1",
            "dkim_relay_headers_removed_total{header=\"return-path\"} 2",
            "dkim_relay_key_bits{domain=\"example.org\",selector=\"s1\",algorithm=\"rsa-sha256\",active=\"true\"} 2048",
            "dkim_relay_build_info{version=",
            "# TYPE dkim_relay_upstream_transaction_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains("dkim_relay_key_age_seconds{"), "{text}");
        drop(_c);
        assert!(m.render().contains("dkim_relay_connections_open 0"));
    }

    #[test]
    fn key_dns_match_keeps_the_last_answer_and_drops_unconfigured_selectors() {
        let m = Metrics::new();
        let text = m.render();
        assert!(!text.contains("dkim_relay_key_dns_match{"), "{text}");
        assert!(
            text.contains("# TYPE dkim_relay_key_dns_checked_timestamp_seconds gauge"),
            "{text}"
        );
        let k = |selector: &str, matches| KeyDns {
            domain: "example.org".into(),
            selector: selector.into(),
            matches,
        };
        m.key_dns_checked(&[k("a", Some(true)), k("b", Some(false)), k("c", None)]);
        let text = m.render();
        for line in [
            "dkim_relay_key_dns_match{domain=\"example.org\",selector=\"a\"} 1",
            "dkim_relay_key_dns_match{domain=\"example.org\",selector=\"b\"} 0",
            "# TYPE dkim_relay_key_dns_match gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("selector=\"c\""), "{text}");
        assert!(
            !text.contains("dkim_relay_key_dns_checked_timestamp_seconds 0.0"),
            "{text}"
        );
        // No answer for a: it keeps 1. b is no longer configured: dropped.
        m.key_dns_checked(&[k("a", None), k("c", Some(true))]);
        let text = m.render();
        assert!(
            text.contains("dkim_relay_key_dns_match{domain=\"example.org\",selector=\"a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dkim_relay_key_dns_match{domain=\"example.org\",selector=\"c\"} 1"),
            "{text}"
        );
        assert!(!text.contains("selector=\"b\""), "{text}");
    }

    struct Fixed;
    impl QueueProbe for Fixed {
        fn queue(&self) -> QueueStats {
            QueueStats {
                messages: 3,
                oldest: Some(Duration::from_secs(42)),
            }
        }
    }

    #[test]
    fn the_queue_probe_is_read_at_scrape_time() {
        let m = Metrics::new();
        assert!(m.render().contains("dkim_relay_queue_messages 0"));
        m.register_queue(Arc::new(Fixed));
        let text = m.render();
        assert!(text.contains("dkim_relay_queue_messages 3"), "{text}");
        assert!(
            text.contains("dkim_relay_queue_oldest_age_seconds 42.0"),
            "{text}"
        );
    }
}
