//! The relay as a protocol of the server shell: the sans-IO relay session
//! (`smtp::session`) per connection, AUTH checked on the blocking pool, and each complete
//! message handed to [`Relay::deliver`].
//!
//! The shell's settings are built from the `[server]` section of the configuration snapshot in
//! force when a connection is accepted (cached while the snapshot stays the same), so a reload
//! applies to new connections and a connection keeps the snapshot it started with.
//!
//! The relay's own wording of the shell's events: `421 4.7.0 <host> Too many connections`,
//! `554 5.5.1` on pregreet, `421 4.4.2` on a command or DATA timeout, `421 4.3.2 <host> Service
//! shutting down`. AUTH: a bounded number of password checks (argon2, ~19 MiB each) run at
//! once; a failure is answered only after `auth_failure_delay`; credentials are never logged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use super::{ClientInfo, Relay};
use crate::config::Snapshot;
use crate::config::reload::Live;
use crate::server::{self, Action, Listener, Mode, Notice, Peer, Settings, Stopped, TlsSettings};
use crate::smtp::codec::{DataError, LineError};
use crate::smtp::reply::Reply;
use crate::smtp::session::{self, Limits, Session};

/// RFC 5321 §4.5.3.1.4: 512 octets for a command line, CRLF included.
const MAX_COMMAND_LINE: usize = 510;

/// Upper bound on writing one batch of replies to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The shell's settings for a `[server]` section.
pub fn shell_settings(s: &crate::config::Server) -> Settings {
    Settings {
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
        session_timeout: Some(s.session_timeout),
        write_timeout: WRITE_TIMEOUT,
        reply_delay: Duration::ZERO,
        shutdown_grace: s.shutdown_grace,
    }
}

/// Binds every address of the configuration: `listen` (plaintext SMTP, STARTTLS when
/// configured) and `[server.tls] implicit_listen` (RFC 8314 implicit TLS).
pub async fn bind_all(server: &crate::config::Server) -> std::io::Result<Vec<Listener>> {
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

/// Serves plaintext listeners until `shutdown` completes, then drains.
pub async fn run(
    listeners: Vec<TcpListener>,
    live: Live,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let listeners = listeners
        .into_iter()
        .map(|tcp| Listener::new(tcp, Mode::Plain))
        .collect();
    run_listeners(listeners, live, relay, shutdown).await
}

/// Serves until `shutdown` completes, then drains and closes the upstream pool.
pub async fn run_listeners(
    listeners: Vec<Listener>,
    live: Live,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    server::serve(
        listeners,
        Arc::new(RelayProtocol::new(live, relay)),
        shutdown,
    )
    .await
}

/// The relay protocol: the live configuration and the long-lived relay state.
pub struct RelayProtocol {
    live: Live,
    relay: Arc<Relay>,
    /// The shell settings of the last snapshot seen.
    cache: Mutex<Option<(Arc<Snapshot>, Arc<Settings>)>>,
}

impl RelayProtocol {
    pub fn new(live: Live, relay: Arc<Relay>) -> RelayProtocol {
        RelayProtocol {
            live,
            relay,
            cache: Mutex::new(None),
        }
    }

    /// The snapshot in force and its shell settings.
    fn current(&self) -> (Arc<Snapshot>, Arc<Settings>) {
        let snapshot = self.live.snapshot();
        let mut cache = match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((snap, settings)) = cache.as_ref()
            && Arc::ptr_eq(snap, &snapshot)
        {
            return (snapshot, Arc::clone(settings));
        }
        let settings = Arc::new(shell_settings(&snapshot.server));
        *cache = Some((Arc::clone(&snapshot), Arc::clone(&settings)));
        (snapshot, settings)
    }
}

impl server::Protocol for RelayProtocol {
    type Handler = RelayHandler;

    fn settings(&self) -> Arc<Settings> {
        self.current().1
    }

    fn accept(&self, peer: Peer) -> (Arc<Settings>, RelayHandler) {
        let (snapshot, settings) = self.current();
        let s = &snapshot.server;
        let allowed = s.allow_networks.iter().any(|n| n.contains(peer.addr.ip()));
        let session = Session::new(
            Limits {
                hostname: s.hostname.clone(),
                max_message_size: s.max_message_size,
                max_recipients: s.max_recipients,
                max_errors: s.max_errors,
                starttls: s.tls.is_some(),
                auth_users: !s.users.is_empty(),
                auth_plaintext: s.auth_plaintext_loopback
                    && crate::net::is_loopback(peer.addr.ip()),
                max_auth_failures: s.max_auth_failures,
            },
            allowed,
        );
        tracing::debug!(conn = peer.id, client = %peer.addr, allowed, "relay session");
        let handler = RelayHandler {
            session_deadline: Instant::now() + s.session_timeout,
            client: ClientInfo {
                conn_id: peer.id,
                addr: peer.addr,
            },
            snapshot,
            relay: Arc::clone(&self.relay),
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
    snapshot: Arc<Snapshot>,
    relay: Arc<Relay>,
    session: Session,
    session_deadline: Instant,
}

impl RelayHandler {
    fn hostname(&self) -> &str {
        &self.snapshot.server.hostname
    }

    fn peer(&self) -> SocketAddr {
        self.client.addr
    }

    /// Checks credentials off the async workers, delays a failure, and returns the session's
    /// verdict (235, 535, or 421 after too many failures).
    async fn authenticate(&mut self, creds: session::Credentials) -> session::Action {
        // Each argon2 check takes ~19 MiB and real CPU time: a bounded number run at once, so
        // a crowd of clients guessing passwords cannot exhaust memory.
        static VERIFIERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
        let conn_id = self.client.conn_id;
        let deadline =
            (Instant::now() + self.snapshot.server.command_timeout).min(self.session_deadline);
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, VERIFIERS.acquire()).await else {
            tracing::warn!(conn = conn_id, client = %self.peer(), "authentication not checked: verifiers busy");
            return session::Action::Reply(Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure; try again later",
            ));
        };
        let snapshot = Arc::clone(&self.snapshot);
        let user_name = creds.username.clone();
        let checked = tokio::task::spawn_blocking(move || {
            crate::users::authenticate(&snapshot.server.users, &creds.username, &creds.password)
        })
        .await
        .unwrap_or(None);
        // The attempted name is not a secret, but it is client-controlled: quote and cap it.
        let shown: String = user_name.chars().take(64).collect();
        match &checked {
            Some(u) => {
                tracing::info!(conn = conn_id, client = %self.peer(), user = %u.user, "authenticated")
            }
            None => {
                tracing::info!(conn = conn_id, client = %self.peer(), user = ?shown, "authentication failed");
                tokio::time::sleep(self.snapshot.server.auth_failure_delay).await;
            }
        }
        self.session.auth_result(checked)
    }
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

    async fn command(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        let mut action = self.session.command(line);
        if let session::Action::Authenticate(creds) = action {
            action = self.authenticate(creds).await;
        }
        shell_action(action)
    }

    async fn data(&mut self, data: Result<Vec<u8>, DataError>, _size: usize) -> Action {
        let reply = match self.session.data_finished(data) {
            Ok(tx) => {
                self.relay
                    .deliver(&self.snapshot, &self.client, tx.envelope, tx.data)
                    .await
            }
            Err(r) => {
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
            Notice::ShuttingDown => {
                Reply::new(421, "4.3.2", format!("{host} Service shutting down"))
            }
        })
    }
}
