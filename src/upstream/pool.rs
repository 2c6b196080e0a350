//! A pool of authenticated upstream connections that follows demand: bounded by `pool_size`,
//! reused across messages, paced to the account's send rate.
//!
//! Throughput through a pool is at most `pool_size / transaction latency` (SES does not offer
//! PIPELINING, so a connection carries one transaction at a time). Connections are opened only
//! when a message finds no idle one and a slot is free, so the pool grows with concurrent
//! demand up to `pool_size`; idle connections are reused most recently used first, so when
//! demand falls the surplus stays idle and is closed after `idle_close` (before SES's ~10 s
//! idle limit), shrinking the pool to what the traffic needs. SES's per-session rules stay:
//! rotation after `max_messages_per_connection` or `max_connection_age`, and a fresh connection
//! when SES closes one with 421.
//!
//! Every message first takes a slot, then its turn at the [`Pacer`] (the window counts
//! recipients), then a connection: the time between the pacer's grant and SES's count is one
//! transaction, so the paced spacing survives to SES. A pass-through message waits at most
//! `max_wait` for slot and turn together, then fails with [`UpstreamError::Congested`] (nothing
//! was sent); [`Pool::deliver_within`] lets the spool wait without a limit.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::client::{Connection, UpstreamError};
use super::pace::{self, Pacer};
use super::settings::{Endpoint, PoolSettings};
use crate::smtp::reply::Reply;

/// The result of relaying one message upstream.
#[derive(Debug)]
pub enum Delivery {
    /// The upstream answered; this is its reply (success or refusal), to pass on verbatim.
    Answered { reply: Reply, after_data: bool },
    /// We could not get an answer. The client gets a 4xx; the cause goes to the log.
    Failed(UpstreamError),
}

pub struct Pool {
    pub endpoint: Endpoint,
    settings: PoolSettings,
    tls: Arc<rustls::ClientConfig>,
    helo_name: String,
    /// Most recently used last.
    idle: Mutex<Vec<Connection>>,
    slots: Semaphore,
    pacer: Option<Pacer>,
}

impl Pool {
    pub fn new(
        endpoint: Endpoint,
        settings: PoolSettings,
        helo_name: String,
    ) -> Result<Arc<Pool>, String> {
        let tls = super::tls_client_config(endpoint.extra_ca_pem.as_deref())?;
        let pool = Arc::new(Pool {
            slots: Semaphore::new(settings.pool_size),
            pacer: settings.max_send_rate.map(|r| Pacer::new(r.0)),
            endpoint,
            settings,
            tls,
            helo_name,
            idle: Mutex::new(Vec::new()),
        });
        // Close idle connections before SES does (it drops them after ~10 s and sends an
        // unsolicited 451 that a naive client would read as its next reply).
        let weak = Arc::downgrade(&pool);
        tokio::spawn(reaper(weak));
        Ok(pool)
    }

    /// Whether this pool serves the given upstream settings (so a reload can keep it).
    pub fn serves(&self, endpoint: &Endpoint, settings: &PoolSettings) -> bool {
        self.endpoint == *endpoint && self.settings == *settings
    }

    /// The pacer, when `max_send_rate` is set.
    pub fn pacer(&self) -> Option<&Pacer> {
        self.pacer.as_ref()
    }

    fn usable(&self, c: &Connection) -> bool {
        c.last_used.elapsed() < self.settings.idle_close
            && c.created.elapsed() < self.settings.max_connection_age
            && c.messages < self.settings.max_messages_per_connection
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while let Some(c) = idle.pop() {
            if self.usable(&c) {
                return Some(c);
            }
            tokio::spawn(c.quit());
        }
        None
    }

    fn put_back(&self, c: Connection) {
        if self.usable(&c) {
            match self.idle.lock() {
                Ok(mut g) => g.push(c),
                Err(p) => p.into_inner().push(c),
            }
        } else {
            tokio::spawn(c.quit());
        }
    }

    async fn open(&self) -> Result<Connection, UpstreamError> {
        Connection::open(
            &self.endpoint,
            &self.settings,
            Arc::clone(&self.tls),
            &self.helo_name,
        )
        .await
    }

    /// Relays one message for a waiting client: as [`Pool::deliver_within`], waiting at most
    /// the configured `max_wait` for a slot and a turn.
    pub async fn deliver(&self, from: &str, rcpts: &[String], data: &[&[u8]]) -> Delivery {
        self.deliver_within(from, rcpts, data, Some(self.settings.max_wait))
            .await
    }

    /// Relays one message: at most `pool_size` at once, paced to `max_send_rate`; one retry on
    /// a fresh connection when a pooled one proves dead before anything was accepted.
    /// `max_wait` bounds the wait for a slot and the pacer's turn together (`None`: no bound);
    /// past it nothing is sent and the result is [`UpstreamError::Congested`].
    ///
    /// `data` is the unstuffed message as slices, in order (see [`super::framing`]).
    pub async fn deliver_within(
        &self,
        from: &str,
        rcpts: &[String],
        data: &[&[u8]],
        max_wait: Option<Duration>,
    ) -> Delivery {
        let deadline = max_wait.map(|w| Instant::now() + w);
        let congested = || Delivery::Failed(UpstreamError::Congested(max_wait.unwrap_or_default()));
        let slot = match deadline {
            Some(d) => match tokio::time::timeout_at(d, self.slots.acquire()).await {
                Ok(s) => s,
                Err(_) => return congested(),
            },
            None => self.slots.acquire().await,
        };
        let _slot = match slot {
            Ok(s) => s,
            Err(_) => return Delivery::Failed(UpstreamError::Closed),
        };
        if let Some(pacer) = &self.pacer
            && pacer.admit(rcpts.len(), deadline).await.is_err()
        {
            return congested();
        }
        let mut pooled = self.take_idle();
        if let Some(c) = pooled.as_mut()
            && c.rset().await.is_err()
        {
            pooled = None;
        }
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => match self.open().await {
                Ok(c) => c,
                Err(e) => return Delivery::Failed(e),
            },
        };
        let mut attempt = conn.send(from, rcpts, data).await;
        // A pooled connection is "dead" when it fails before the final dot, or when the server
        // closes it with a 421 before the content (SES's per-session message cap answers MAIL
        // with 421): nothing was accepted either way, so one fresh connection is safe.
        let dead = match &attempt {
            Err(f) => !f.after_data,
            Ok(o) => o.reply.code == 421 && !o.after_data,
        };
        if reused && dead {
            match &attempt {
                Err(f) => {
                    tracing::debug!(error = %f.error, "pooled upstream connection was dead; retrying on a fresh one")
                }
                Ok(o) => {
                    tracing::debug!(reply = %o.reply, "pooled upstream connection closed by the server; retrying on a fresh one")
                }
            }
            conn = match self.open().await {
                Ok(c) => c,
                Err(e) => return Delivery::Failed(e),
            };
            attempt = conn.send(from, rcpts, data).await;
        }
        match attempt {
            Ok(outcome) => {
                if let Some(pacer) = &self.pacer
                    && pace::is_rate_throttling(&outcome.reply)
                {
                    pacer.throttled();
                }
                // A 421 means the server is closing this connection.
                if outcome.reply.code == 421 {
                    tokio::spawn(conn.quit());
                } else {
                    self.put_back(conn);
                }
                Delivery::Answered {
                    reply: outcome.reply,
                    after_data: outcome.after_data,
                }
            }
            Err(f) => Delivery::Failed(f.error),
        }
    }

    /// Closes every idle connection (shutdown).
    pub async fn close_idle(&self) {
        let conns: Vec<Connection> = match self.idle.lock() {
            Ok(mut g) => g.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for c in conns {
            c.quit().await;
        }
    }
}

async fn reaper(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(pool) = pool.upgrade() else { return };
        let stale: Vec<Connection> = {
            let mut idle = match pool.idle.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let (keep, stale): (Vec<_>, Vec<_>) = idle.drain(..).partition(|c| pool.usable(c));
            *idle = keep;
            stale
        };
        drop(pool);
        for c in stale {
            c.quit().await;
        }
    }
}
