//! The pipeline for one accepted message, in one direction:
//! header From → domain → SES header policy → envelope rewrite → DKIM signature → upstream →
//! the upstream's reply back to the client.
//!
//! Fail closed: any failure to sign is a 451 and nothing is sent. The client only ever gets
//! a 250 when the upstream said 250, and then it gets the upstream's own text (SES message id).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::settings::Settings;
use crate::budget::ByteBudget;
use crate::dkim::signer;
use crate::message;
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::Reply;
use crate::upstream::pool::{Delivery, Pool};
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
}

impl Relay {
    pub fn new() -> Arc<Relay> {
        Arc::new(Relay {
            pool: Mutex::new(None),
            budget: ByteBudget::new(usize::MAX),
        })
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
    fn pool_for(&self, settings: &Settings) -> Result<Arc<Pool>, String> {
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
                tracing::error!(conn = client.conn_id, error = %e, "signing failed; message refused");
                return Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure: the message could not be signed; try again later",
                );
            }
        };
        let envelope_from = prepared.envelope_from.address();
        // The DATA buffer, spans and all, goes out as slices: no serialized or stuffed copy.
        let outgoing = signer::with_signatures(signatures, prepared.message);
        if let Some(reply) = self_verify(snapshot, client, &domain, &outgoing) {
            return reply;
        }
        let parts = outgoing.parts();
        let rcpts: Vec<String> = envelope.rcpts.iter().map(|r| r.address()).collect();

        let pool = match self.pool_for(snapshot) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(conn = client.conn_id, error = %e, "upstream unusable");
                return Reply::new(451, "4.4.0", "Upstream unavailable; try again later");
            }
        };
        let (reply, upstream_text) = match pool.deliver(&envelope_from, &rcpts, &parts).await {
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
                tracing::warn!(conn = client.conn_id, error = %e, "upstream delivery failed");
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
            upstream = %upstream_text,
            ses_id = %ses_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "message relayed"
        );
        reply
    }
}

/// Self-verification before hand-off ([`crate::dkim::self_check`]): every signature just made
/// is checked over the exact bytes that go upstream. `Some(451 4.3.0)` when one fails and the
/// setting is `refuse`; with `log` the message goes out and the same error line is logged.
fn self_verify(
    snapshot: &Settings,
    client: &ClientInfo,
    domain: &crate::dkim::domain::Domain,
    outgoing: &crate::message::headers::Message,
) -> Option<Reply> {
    use crate::dkim::self_check::{SelfVerify, check};
    let Err(e) = check(domain, &outgoing.to_bytes()) else {
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
        UpstreamError::Timeout(_) => {
            Reply::new(451, "4.4.2", "Upstream timed out; try again later")
        }
        _ => Reply::new(451, "4.4.1", "Upstream unreachable; try again later"),
    }
}
