//! The pipeline for one accepted message, in one direction:
//! header From → domain → SES header policy → envelope rewrite → DKIM signature → upstream →
//! the upstream's reply back to the client.
//!
//! Fail closed: any failure to sign is a 451 and nothing is sent. Without a spool the client
//! only ever gets a 250 when the upstream said 250, and then it gets the upstream's own text
//! (SES message id).
//!
//! With `[spool]` the signed message may be committed instead ([`crate::spool`]): in `always`
//! mode before any attempt, in `on-defer` mode when SES's answer is not final for the message
//! (anything temporary or account-level, or no answer; [`ReplyClass::is_final`]). The client
//! then gets `250 2.0.0 Ok: queued as <id>` — only after the commit is on stable storage — or
//! `452 4.3.1` / `451 4.3.0` when the spool cannot take it. SES's 250 and its message-level 5xx
//! still reach the client verbatim in `on-defer` mode.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::observe;
use super::settings::Settings;
use crate::budget::ByteBudget;
use crate::dkim::signer;
use crate::message;
use crate::metrics::{Metrics, RemovedHeader, SignOutcome, Stage};
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::Reply;
use crate::spool::store::{self, CommitError, Meta, State};
use crate::spool::{self as spool, Intake, Mode};
use crate::upstream::pool::{Delivery, Pool};
use crate::upstream::reply_class::{ReplyClass, Scope};
use crate::upstream::{UpstreamError, ses_message_id};

/// Who sent a message, for the log line.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub conn_id: u64,
    pub addr: SocketAddr,
}

/// Long-lived relay state: the upstream pool, kept across reloads while the upstream settings
/// stay the same. The settings themselves come with each message (those its connection was
/// accepted with).
pub struct Relay {
    pool: Mutex<Option<Arc<Pool>>>,
    /// Message bytes held by every connection of this relay (kept across reloads, which only
    /// change its limit).
    budget: ByteBudget,
    /// The spool's way in, when `[spool]` is configured (set up once, at start).
    spool: Option<Intake>,
    /// Where every step is counted (one registry, from the composition root).
    metrics: Arc<Metrics>,
}

impl Relay {
    pub fn new() -> Arc<Relay> {
        Relay::with(None, Arc::new(Metrics::new()))
    }

    /// A relay that commits to `spool` as its settings' `[spool]` mode says, and records into
    /// `metrics` (one registry, from the composition root).
    pub fn with(spool: Option<Intake>, metrics: Arc<Metrics>) -> Arc<Relay> {
        Arc::new(Relay {
            pool: Mutex::new(None),
            budget: ByteBudget::new(usize::MAX),
            spool,
            metrics,
        })
    }

    /// The metrics this relay records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The bytes-in-flight budget, its limit set from `settings` (the newest a connection
    /// was accepted with).
    pub fn budget(&self, settings: &Settings) -> ByteBudget {
        if self.budget.limit() != settings.max_bytes_in_flight {
            self.budget.set_limit(settings.max_bytes_in_flight);
        }
        self.budget.clone()
    }

    /// The pool for these settings' upstream, reusing the current one when nothing changed.
    pub fn pool_for(&self, settings: &Settings) -> Result<Arc<Pool>, String> {
        // The endpoint was resolved once, when the relay started (for the embedded simulator,
        // its own listener); it rides in every settings value a reload builds.
        let endpoint = settings
            .upstream
            .endpoint
            .clone()
            .ok_or_else(|| "the embedded SES simulator is not running".to_string())?;
        let mut slot = match self.pool.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(pool) = slot.as_ref()
            && pool.serves(&endpoint, &settings.upstream.pool)
        {
            return Ok(Arc::clone(pool));
        }
        let pool = Pool::new(
            endpoint,
            settings.upstream.pool.clone(),
            settings.hostname().to_string(),
        )?;
        *slot = Some(Arc::clone(&pool));
        Ok(pool)
    }

    /// Closes idle upstream connections (at shutdown).
    pub async fn close(&self) {
        let pool = match self.pool.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(pool) = pool {
            pool.close_idle().await;
        }
    }

    /// Relays one message with the settings its connection was accepted with (`snapshot`)
    /// and returns the reply for the client.
    pub async fn deliver(
        &self,
        snapshot: &Settings,
        client: &ClientInfo,
        envelope: Envelope,
        data: Vec<u8>,
    ) -> Reply {
        let started = Instant::now();
        let size = data.len();
        let rcpt_count = envelope.rcpts.len();
        let prepared = match message::prepare(
            snapshot.upstream.profile,
            |d| snapshot.domain_for(d).cloned(),
            &envelope,
            data,
        ) {
            Ok(p) => p,
            Err(reply) => {
                observe::refusal(&self.metrics, Stage::Message, &reply);
                tracing::info!(
                    conn = client.conn_id,
                    client = %client.addr,
                    size,
                    rcpts = rcpt_count,
                    reply = %reply.one_line(),
                    "message refused"
                );
                return reply;
            }
        };
        let m = &self.metrics;
        m.headers_removed(RemovedHeader::DkimSignature, prepared.removed_signatures);
        m.headers_removed(RemovedHeader::ReturnPath, prepared.removed_return_path);
        if prepared.removed_signatures > 0 || prepared.removed_return_path > 0 {
            tracing::info!(
                conn = client.conn_id,
                dkim_signatures = prepared.removed_signatures,
                return_path = prepared.removed_return_path,
                "removed headers the application had set (SES policy)"
            );
        }
        let domain = Arc::clone(&prepared.domain);
        let selectors: Vec<String> = domain.active.iter().map(|k| k.selector.clone()).collect();
        let algorithms: Vec<&str> = domain.active.iter().map(|k| k.algorithm.as_str()).collect();
        let signatures = match signer::sign(&domain, &prepared.message) {
            Ok(s) => s,
            Err(e) => {
                observe::signed(&self.metrics, &domain, SignOutcome::Error);
                tracing::error!(conn = client.conn_id, error = %e, "signing failed; message refused");
                return Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure: the message could not be signed; try again later",
                );
            }
        };
        observe::signed(&self.metrics, &domain, SignOutcome::Signed);
        let envelope_from = prepared.envelope_from.address();
        // The DATA buffer, spans and all, goes out as slices: no serialized or stuffed copy.
        let outgoing = signer::with_signatures(signatures, prepared.message);
        if let Some(reply) = self_verify(&self.metrics, snapshot, client, &domain, &outgoing) {
            return reply;
        }
        let parts = outgoing.parts();
        let rcpts: Vec<String> = envelope.rcpts.iter().map(|r| r.address()).collect();

        let spool = match (&snapshot.spool, &self.spool) {
            (Some(s), Some(i)) => Some((s.as_ref(), i)),
            _ => None,
        };
        let delivery = match spool {
            // `always`, or `on-defer` while SES refuses the account: straight to the spool.
            Some((settings, intake)) if settings.mode == Mode::Always || intake.paused() => None,
            _ => Some(match self.pool_for(snapshot) {
                Ok(pool) => {
                    let sent = Instant::now();
                    let delivery = pool.deliver(&envelope_from, &rcpts, &parts).await;
                    observe::upstream(&self.metrics, &delivery, sent.elapsed());
                    delivery
                }
                Err(e) => {
                    self.metrics
                        .rejection(Stage::Upstream, crate::metrics::Reason::Network);
                    tracing::error!(conn = client.conn_id, error = %e, "upstream unusable");
                    if spool.is_none() {
                        return Reply::new(451, "4.4.0", "Upstream unavailable; try again later");
                    }
                    Delivery::Failed(UpstreamError::Closed)
                }
            }),
        };
        // The spool takes what SES did not settle (or everything, in `always` mode).
        if let Some((settings, intake)) = spool {
            let unsettled = delivery
                .as_ref()
                .map(|d| (ReplyClass::of(d), outcome_text(d)))
                .filter(|(class, _)| !class.is_final());
            if delivery.is_none() || unsettled.is_some() {
                let upstream_text = unsettled
                    .as_ref()
                    .map_or_else(|| "not tried".to_string(), |(_, t)| t.clone());
                let (reply, queue_id) =
                    commit(intake, settings, &envelope_from, &rcpts, &parts, unsettled).await;
                tracing::info!(
                    conn = client.conn_id,
                    client = %client.addr,
                    from_domain = %prepared.author.domain,
                    d = %domain.name,
                    s = %selectors.join(","),
                    mail_from = %envelope_from,
                    size = outgoing.len(),
                    rcpts = rcpt_count,
                    mode = settings.mode.name(),
                    queue_id = %queue_id,
                    upstream = %upstream_text,
                    reply = %reply.one_line(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "message spooled"
                );
                return reply;
            }
        }
        let Some(delivery) = delivery else {
            return Reply::new(451, "4.3.0", "Temporary failure; try again later");
        };
        let (reply, upstream_text) = match delivery {
            Delivery::Answered { reply, .. } => {
                let text = reply.one_line();
                // A 421 says the *upstream* is closing its connection; passed on, it would tell
                // the application that this relay is closing. Same text, as a 451.
                let reply = if reply.code == 421 {
                    Reply {
                        code: 451,
                        lines: reply.lines,
                    }
                } else {
                    reply
                };
                (reply, text)
            }
            Delivery::Failed(e) => {
                let reply = failure_reply(&e);
                tracing::warn!(conn = client.conn_id, error = %crate::message::printable::printable(&e.to_string()), "upstream delivery failed");
                (reply, format!("failed: {e}"))
            }
        };
        let ses_id = ses_message_id(&reply).unwrap_or_default();
        tracing::info!(
            conn = client.conn_id,
            client = %client.addr,
            from_domain = %prepared.author.domain,
            d = %domain.name,
            s = %selectors.join(","),
            a = %algorithms.join(","),
            mail_from = %envelope_from,
            size = outgoing.len(),
            rcpts = rcpt_count,
            upstream = %crate::message::printable::printable(&upstream_text),
            ses_id = %ses_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "message relayed"
        );
        reply
    }
}

/// The upstream's answer (or the failure) as one line, for logs and the spool's state.
fn outcome_text(d: &Delivery) -> String {
    match d {
        Delivery::Answered { reply, .. } => reply.one_line(),
        Delivery::Failed(e) => format!("no answer: {e}"),
    }
}

/// Commits the signed message and returns the client's reply and the queue id (empty when the
/// spool refused). `unsettled`: SES's answer to the attempt just made (`on-defer`), which sets
/// the first retry; `None` (`always`): due now.
async fn commit(
    intake: &Intake,
    settings: &spool::Settings,
    mail_from: &str,
    rcpts: &[String],
    parts: &[&[u8]],
    unsettled: Option<(ReplyClass, String)>,
) -> (Reply, String) {
    let now = store::now_ms();
    let mut state = State {
        next_attempt_ms: now,
        ..State::default()
    };
    if let Some((class, text)) = unsettled {
        // An account-level answer pauses the queue at the worker's first try; a message-level
        // one counts as the first attempt.
        if class.scope() == Scope::Message {
            state.attempts = 1;
            let delay = spool::retry::backoff(settings, 1, rand::random::<f64>());
            state.next_attempt_ms = now + delay.as_millis() as u64;
        }
        state.last_class = Some(class.name().to_string());
        state.last_reply = Some(text);
    }
    let data: Vec<u8> = parts.concat();
    let meta = Meta {
        id: store::new_id(),
        created_ms: now,
        mail_from: mail_from.to_string(),
        rcpts: rcpts.to_vec(),
        size: data.len(),
    };
    let id = meta.id.clone();
    match intake
        .commit(meta, data, state, settings.min_free_bytes)
        .await
    {
        Ok(()) => (Reply::new(250, "2.0.0", format!("Ok: queued as {id}")), id),
        Err(CommitError::Full { free, floor }) => {
            tracing::error!(free, floor, dir = %settings.dir.display(), "spool: free space below the floor; refusing messages");
            (
                Reply::new(
                    452,
                    "4.3.1",
                    "Insufficient system storage: the relay's spool is full; try again later",
                ),
                String::new(),
            )
        }
        Err(CommitError::Io(e)) => {
            tracing::error!(error = %e, dir = %settings.dir.display(), "spool: cannot commit a message");
            (
                Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure: the relay could not queue the message; try again later",
                ),
                String::new(),
            )
        }
    }
}

/// Self-verification before hand-off ([`crate::dkim::self_check`]): every signature just made
/// is checked over the exact bytes that go upstream. `Some(451 4.3.0)` when one fails and the
/// setting is `refuse`; with `log` the message goes out and the same error line is logged.
fn self_verify(
    metrics: &Metrics,
    snapshot: &Settings,
    client: &ClientInfo,
    domain: &crate::dkim::domain::Domain,
    outgoing: &crate::message::headers::Message,
) -> Option<Reply> {
    use crate::dkim::self_check::{SelfVerify, check_fields};
    use crate::metrics::VerifyResult;
    // The fields and body as they go out: the same slices, no joined copy of the message.
    let parts = outgoing.parts();
    let fields = parts.split_last().map_or(&[][..], |(_, fields)| fields);
    let checked = check_fields(domain, fields, outgoing.body());
    metrics.self_verification(
        &domain.name,
        if checked.is_ok() {
            VerifyResult::Pass
        } else {
            VerifyResult::Fail
        },
    );
    let Err(e) = checked else {
        return None;
    };
    tracing::error!(
        conn = client.conn_id,
        d = %domain.name,
        error = %e,
        self_verify = snapshot.self_verify.as_str(),
        "DKIM self-verification failed"
    );
    match snapshot.self_verify {
        SelfVerify::Refuse => Some(Reply::new(
            451,
            "4.3.0",
            "Temporary failure: the DKIM signature did not verify; nothing was sent, try again later",
        )),
        SelfVerify::Log => None,
    }
}

/// The client-facing reply when no upstream answer was obtained: always temporary, so the
/// application can retry; the real cause is in the log.
fn failure_reply(e: &UpstreamError) -> Reply {
    match e {
        UpstreamError::Auth(_) | UpstreamError::NoAuth => Reply::new(
            454,
            "4.7.0",
            "Upstream refused the relay's credentials; try again later",
        ),
        UpstreamError::Tls(..) | UpstreamError::NoStartTls(_) => Reply::new(
            451,
            "4.7.5",
            "Could not establish verified TLS with the upstream; try again later",
        ),
        // RFC 3463 X.4.5 "mail system congestion": nothing was sent; 451 is a reply DATA may
        // get (RFC 5321 §4.3.2), unlike SES's own 454, so every client library retries it.
        UpstreamError::Congested(_) => Reply::new(
            451,
            "4.4.5",
            "Upstream congested (send rate or busy connections); try again later",
        ),
        UpstreamError::Timeout(_) => {
            Reply::new(451, "4.4.2", "Upstream timed out; try again later")
        }
        _ => Reply::new(451, "4.4.1", "Upstream unreachable; try again later"),
    }
}
