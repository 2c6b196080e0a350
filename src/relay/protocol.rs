//! The relay as a protocol of the server shell: the sans-IO relay session
//! (`smtp::session`) per connection, AUTH checked on the blocking pool, and each complete
//! message handed to [`Relay::deliver`].
//!
//! The settings in force are read from a [`Current`] (built by `config`, swapped whole by a
//! reload) at every accept: a reload applies to new connections and a connection keeps the
//! settings it started with.
//!
//! The relay's own wording of the shell's events: `421 4.7.0 <host> Too many connections`,
//! `554 5.5.1` on pregreet, `421 4.4.2` on a command or DATA timeout, `451 4.4.2` when DATA
//! falls under the minimum rate, `421 4.3.2 <host> Service shutting down`.
//!
//! AUTH: a bounded number of password checks (argon2, ~19 MiB each) run at once, and a check's
//! slot is given back before the failure delay; a failure is answered only after
//! `auth_failure_delay`; failures are bounded per connection (`max_auth_failures`) and per
//! client address over all its connections (`max_auth_failures_per_ip` within
//! [`AUTH_FAILURE_WINDOW`]); an authorization identity other than the user is refused
//! (RFC 4616); credentials are never logged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::time::Instant;

use super::settings::{Current, Settings as RelaySettings};
use super::{ClientInfo, Relay};
use crate::budget::ByteBudget;
use crate::metrics::{OpenConnection, Reason, Stage};
use crate::server::{self, Action, Notice, Peer, Settings};
use crate::smtp::codec::{DataError, LineError};
use crate::smtp::reply::Reply;
use crate::smtp::sasl::Credentials;
use crate::smtp::session::{self, Rules, Session};

/// The relay protocol: the settings in force and the long-lived relay state.
pub struct RelayProtocol {
    current: Current,
    relay: Arc<Relay>,
    failures: Arc<AuthFailures>,
}

impl RelayProtocol {
    pub fn new(current: Current, relay: Arc<Relay>) -> RelayProtocol {
        RelayProtocol {
            current,
            relay,
            failures: Arc::default(),
        }
    }

    /// The settings in force now.
    fn current(&self) -> Arc<RelaySettings> {
        Arc::clone(&self.current.borrow())
    }
}

impl server::Protocol for RelayProtocol {
    type Handler = RelayHandler;

    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.current().shell)
    }

    fn accept(&self, peer: Peer) -> (Arc<Settings>, RelayHandler) {
        let snapshot = self.current();
        let settings = Arc::clone(&snapshot.shell);
        let s = &snapshot.session;
        let allowed = s.allow_networks.iter().any(|n| n.contains(peer.addr.ip()));
        let session = Session::new(
            Rules {
                hostname: settings.hostname.clone(),
                max_message_size: settings.max_message_size,
                max_recipients: s.max_recipients,
                max_errors: s.max_errors,
                starttls: settings.tls.is_some(),
                auth_users: !s.users.is_empty(),
                auth_plaintext: s.auth_plaintext_loopback
                    && crate::allow_list::is_loopback(peer.addr.ip()),
                max_auth_failures: s.max_auth_failures,
            },
            allowed,
        );
        tracing::debug!(conn = peer.id, client = %peer.addr, allowed, "relay session");
        let handler = RelayHandler {
            session_deadline: settings
                .session_timeout
                .map(|t| Instant::now() + t)
                .unwrap_or_else(far_future),
            client: ClientInfo {
                conn_id: peer.id,
                addr: peer.addr,
            },
            budget: self.relay.budget(&snapshot),
            _open: self.relay.metrics().connection_opened(),
            snapshot,
            relay: Arc::clone(&self.relay),
            failures: Arc::clone(&self.failures),
            session,
        };
        (settings, handler)
    }

    async fn stopped(&self) {
        self.relay.close().await;
    }
}

/// One relay connection.
pub struct RelayHandler {
    client: ClientInfo,
    /// The settings this connection was accepted with.
    snapshot: Arc<RelaySettings>,
    relay: Arc<Relay>,
    /// The relay's bytes-in-flight budget, which this connection's DATA counts against.
    budget: ByteBudget,
    /// Failed AUTH attempts per client address, shared by all connections.
    failures: Arc<AuthFailures>,
    session: Session,
    session_deadline: Instant,
    /// Counts this connection open (metrics) until it is dropped.
    _open: OpenConnection,
}

impl RelayHandler {
    fn hostname(&self) -> &str {
        self.snapshot.hostname()
    }

    fn peer(&self) -> SocketAddr {
        self.client.addr
    }

    /// Checks credentials off the async workers, delays a failure, and returns the session's
    /// verdict (235, 535, or 421 after too many failures on this connection or from this
    /// client address).
    ///
    /// The password-check slot is held only while the hash is checked, never through the
    /// failure delay: a crowd of failing clients cannot make a valid login wait for their
    /// delays. An unknown user costs one hash check of the same kind as a known one
    /// (`users::authenticate`), so user names cannot be told apart by timing.
    async fn authenticate(&mut self, creds: Credentials) -> session::Action {
        let conn_id = self.client.conn_id;
        let ip = self.peer().ip();
        let max_per_ip = self.snapshot.session.max_auth_failures_per_ip;
        if self.failures.blocked(ip, max_per_ip) {
            tracing::warn!(conn = conn_id, client = %self.peer(), "authentication refused: too many failures from this address");
            return session::Action::Close(Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} Too many failed authentication attempts from your address; try again later",
                    self.hostname()
                ),
            ));
        }
        // The attempted name is not a secret, but it is client-controlled: quote and cap it.
        let shown: String = creds.username.chars().take(64).collect();
        // RFC 4616 §2: an authorization identity other than the authentication identity asks
        // to act as someone else, which no user may do here.
        let checked = if !creds.authzid.is_empty() && creds.authzid != creds.username {
            tracing::info!(conn = conn_id, client = %self.peer(), user = ?shown, "authentication refused: authorization identity differs from the user");
            None
        } else {
            match self.check_password(creds).await {
                Ok(c) => c,
                Err(busy) => return busy,
            }
        };
        match &checked {
            Some(u) => {
                tracing::info!(conn = conn_id, client = %self.peer(), user = %u.user, "authenticated")
            }
            None => {
                tracing::info!(conn = conn_id, client = %self.peer(), user = ?shown, "authentication failed");
                self.failures.record(ip);
                // No slot is held here (see above).
                tokio::time::sleep(self.snapshot.session.auth_failure_delay).await;
            }
        }
        self.session.auth_result(checked)
    }

    /// One password check on the blocking pool, under one of the global check slots; the
    /// slot is released when the check is done. `Err`: no slot came free in time (454).
    async fn check_password(
        &self,
        creds: Credentials,
    ) -> Result<Option<crate::users::Submitter>, session::Action> {
        // Each argon2 check takes ~19 MiB and real CPU time: a bounded number run at once, so
        // a crowd of clients guessing passwords cannot exhaust memory.
        static VERIFIERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
        let deadline =
            (Instant::now() + self.snapshot.shell.command_timeout).min(self.session_deadline);
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, VERIFIERS.acquire()).await else {
            tracing::warn!(conn = self.client.conn_id, client = %self.peer(), "authentication not checked: verifiers busy");
            return Err(session::Action::Reply(Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure; try again later",
            )));
        };
        let snapshot = Arc::clone(&self.snapshot);
        let checked = tokio::task::spawn_blocking(move || {
            crate::users::authenticate(&snapshot.session.users, &creds.username, &creds.password)
        })
        .await
        .unwrap_or(None);
        drop(permit);
        Ok(checked)
    }
}

/// How long failed AUTH attempts from one client address are remembered
/// (`server.max_auth_failures_per_ip` counts within it).
pub const AUTH_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(900);

/// Addresses remembered at most; past it, expired entries are pruned and, if still full, the
/// oldest window is dropped — memory stays bounded whatever the number of clients.
const AUTH_FAILURE_ADDRESSES: usize = 10_000;

/// Failed AUTH attempts per client address, across its connections, within
/// [`AUTH_FAILURE_WINDOW`] of the first one: a guesser cannot reconnect around
/// `max_auth_failures`. Shared by every connection of one relay.
#[derive(Default)]
pub struct AuthFailures(std::sync::Mutex<HashMap<IpAddr, (u32, Instant)>>);

impl AuthFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether `ip` has used up its failures in the current window.
    pub fn blocked(&self, ip: IpAddr, max: u32) -> bool {
        let now = Instant::now();
        let mut m = self.lock();
        match m.get(&ip) {
            Some(&(_, since)) if now.duration_since(since) >= AUTH_FAILURE_WINDOW => {
                m.remove(&ip);
                false
            }
            Some(&(n, _)) => n >= max,
            None => false,
        }
    }

    /// Counts one failure for `ip`.
    pub fn record(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= AUTH_FAILURE_ADDRESSES && !m.contains_key(&ip) {
            m.retain(|_, (_, since)| now.duration_since(*since) < AUTH_FAILURE_WINDOW);
            if m.len() >= AUTH_FAILURE_ADDRESSES
                && let Some(oldest) = m.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        let e = m.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= AUTH_FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
    }
}

/// A deadline that never comes (a session without a total timeout).
fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(30 * 365 * 24 * 3600)
}

fn shell_action(action: session::Action) -> Action {
    match action {
        session::Action::Reply(r) => Action::Reply(r),
        session::Action::ReplyDiscard(r) => Action::ReplyDiscard(r),
        session::Action::StartData(r) => Action::StartData(r),
        session::Action::StartTls(r) => Action::StartTls(r),
        session::Action::Close(r) => Action::Close(r),
        // `authenticate` never returns another Authenticate.
        session::Action::Authenticate(_) => Action::Drop,
    }
}

impl server::Handler for RelayHandler {
    fn greeting(&mut self) -> Action {
        Action::Reply(self.session.greeting())
    }

    fn budget(&self) -> Option<&ByteBudget> {
        Some(&self.budget)
    }

    async fn command(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        let mut stage = line.as_deref().map_or(Stage::Command, Stage::of_command);
        let mut action = self.session.command(line);
        if let session::Action::Authenticate(creds) = action {
            // Also after a SASL continuation line, whose verb is base64.
            stage = Stage::Auth;
            action = self.authenticate(creds).await;
        }
        let action = shell_action(action);
        super::observe::action(self.relay.metrics(), stage, &action);
        action
    }

    async fn data(&mut self, data: Result<Vec<u8>, DataError>, _size: usize) -> Action {
        let reply = match self.session.data_finished(data) {
            Ok(tx) => {
                self.relay
                    .deliver(&self.snapshot, &self.client, tx.envelope, tx.data)
                    .await
            }
            Err(r) => {
                super::observe::refusal(self.relay.metrics(), Stage::Data, &r);
                tracing::info!(conn = self.client.conn_id, client = %self.peer(), reply = %r.one_line(), "message refused");
                r
            }
        };
        Action::Reply(reply)
    }

    fn tls_started(&mut self) {
        self.session.tls_started();
    }

    fn in_transaction(&self) -> bool {
        self.session.in_transaction()
    }

    fn notice(&mut self, notice: Notice) -> Option<Reply> {
        let (stage, reason) = match notice {
            Notice::TooManyConnections => (Stage::Connect, Reason::TooManyConnections),
            Notice::Pregreet => (Stage::Connect, Reason::Pregreet),
            Notice::CommandTimeout => (Stage::Command, Reason::Timeout),
            Notice::DataTimeout | Notice::DataTooSlow => (Stage::Data, Reason::Timeout),
            Notice::ShuttingDown => (Stage::Command, Reason::ShuttingDown),
        };
        self.relay.metrics().rejection(stage, reason);
        let host = self.hostname();
        Some(match notice {
            Notice::TooManyConnections => Reply::new(
                421,
                "4.7.0",
                format!("{host} Too many connections, try again later"),
            ),
            Notice::Pregreet => Reply::new(
                554,
                "5.5.1",
                "Protocol error: client sent data before the greeting",
            ),
            Notice::CommandTimeout => {
                Reply::new(421, "4.4.2", format!("{host} Timeout waiting for command"))
            }
            Notice::DataTimeout => Reply::new(
                421,
                "4.4.2",
                format!("{host} Timeout waiting for message data"),
            ),
            Notice::DataTooSlow => {
                let rate = self.snapshot.shell.min_data_rate;
                let (bps, window) = rate
                    .map(|r| (r.bytes_per_sec, r.window.as_secs()))
                    .unwrap_or_default();
                Reply::new(
                    451,
                    "4.4.2",
                    format!(
                        "{host} Message data too slow (under {bps} bytes per second over {window} s); closing"
                    ),
                )
            }
            Notice::ShuttingDown => {
                Reply::new(421, "4.3.2", format!("{host} Service shutting down"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures count per address within the window, are forgotten after it, and the table of
    /// addresses stays bounded however many clients fail.
    #[tokio::test(start_paused = true)]
    async fn auth_failures_per_address_expire_and_stay_bounded() {
        let f = AuthFailures::default();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..3 {
            assert!(!f.blocked(a, 3));
            f.record(a);
        }
        assert!(f.blocked(a, 3));
        assert!(!f.blocked(b, 3), "another address is not affected");
        tokio::time::advance(AUTH_FAILURE_WINDOW).await;
        assert!(!f.blocked(a, 3), "forgotten after the window");

        for i in 0..(AUTH_FAILURE_ADDRESSES as u32 + 50) {
            f.record(IpAddr::from(i.to_be_bytes()));
        }
        assert!(f.lock().len() <= AUTH_FAILURE_ADDRESSES);
    }
}
