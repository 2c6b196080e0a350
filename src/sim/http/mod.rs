//! The simulator's web face: a Mailpit-compatible HTTP API and the verdict pages, over the
//! outbox (axum on tokio).
//!
//! - [`mailbox`]: the in-process index over the outbox folder (the folder stays the source of
//!   truth), read flags, and the event channel;
//! - [`mailpit`]: Mailpit's JSON shapes and the verdict tags; [`search`]: its search syntax;
//! - [`api`]: `/api/v1/…` (Mailpit's subset and our `/verdict`), `/livez`, `/readyz`;
//!   [`events`]: the WebSocket stream at `/api/events`;
//! - [`explain`]: the verdict explained (domains, alignment, hints, Authentication-Results);
//! - [`page`]: the server-rendered list and message view, with the embedded CSS and script.
//!
//! Listens on `[simulator] http_listen` (`127.0.0.1:8025`, Mailpit's port, so existing tools
//! work unchanged; empty turns it off). There is no authentication: it shows every message, so
//! it binds loopback by default, and it answers only requests whose `Host` is an IP address or
//! `localhost` (a page on another site cannot reach it through DNS rebinding).

pub mod api;
pub mod events;
pub mod explain;
pub mod mailbox;
pub mod mailpit;
pub mod page;
pub mod search;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;

use mailbox::Mailbox;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub mailbox: Arc<Mailbox>,
    pub started: Instant,
}

/// A running HTTP server. Dropping it stops it.
pub struct SimHttp {
    pub addr: SocketAddr,
    pub mailbox: Arc<Mailbox>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    poller: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SimHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHttp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHttp {
    /// Stops accepting and closes open connections (WebSocket streams included).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.poller.abort();
        let grace = std::time::Duration::from_secs(2);
        if tokio::time::timeout(grace, &mut self.server).await.is_err() {
            self.server.abort();
        }
    }
}

impl Drop for SimHttp {
    fn drop(&mut self) {
        self.poller.abort();
        self.server.abort();
    }
}

/// Whether `Host` names this machine by IP or as `localhost`.
pub(super) fn host_allowed(host: Option<&str>) -> bool {
    let Some(host) = host else { return true };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn guard(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if !host_allowed(host) {
        return api::bad_request(
            "this server answers requests for localhost or an IP address only",
        );
    }
    next.run(req).await
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/api/v1/messages",
            get(api::list).put(api::set_read).delete(api::delete),
        )
        .route(
            "/api/v1/search",
            get(api::search).delete(api::delete_search),
        )
        .route("/api/v1/message/{id}", get(api::message))
        .route("/api/v1/message/{id}/headers", get(api::headers))
        .route("/api/v1/message/{id}/raw", get(api::raw))
        .route("/api/v1/message/{id}/part/{part}", get(api::part))
        .route("/api/v1/message/{id}/verdict", get(api::verdict))
        .route("/api/v1/tags", get(api::tags))
        .route("/api/v1/info", get(api::info))
        .route("/api/events", get(events::events))
        .route("/livez", get(api::healthy))
        .route("/readyz", get(api::healthy))
        .route("/", get(page::index))
        .route("/view/{id}", get(page::view))
        .route("/assets/style.css", get(page::style))
        .route("/assets/app.js", get(page::script))
        .fallback(|| async { api::not_found() })
        .layer(middleware::from_fn(guard))
        .with_state(state)
}

/// Binds `listen` and serves the outbox at `outbox`.
pub async fn start(listen: SocketAddr, outbox: PathBuf) -> std::io::Result<SimHttp> {
    let tcp = TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {listen} (http_listen): {e}"),
        )
    })?;
    let addr = tcp.local_addr()?;
    let mailbox = Mailbox::new(outbox);
    // Index what is already there before anyone connects: no `new` flood on first load.
    let _ = mailbox.refresh_async().await;
    let state = Arc::new(AppState {
        mailbox: Arc::clone(&mailbox),
        started: Instant::now(),
    });
    let app = router(state);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(tcp, app).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "simulator HTTP server stopped");
        }
    });
    let poller = mailbox.spawn_poller();
    tracing::info!(%addr, "simulator web UI and Mailpit-compatible API: http://{addr}/");
    Ok(SimHttp {
        addr,
        mailbox,
        stop: Some(stop_tx),
        server,
        poller,
    })
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn hosts() {
        assert!(host_allowed(Some("127.0.0.1:8025")));
        assert!(host_allowed(Some("localhost:8025")));
        assert!(host_allowed(Some("[::1]:8025")));
        assert!(host_allowed(Some("10.0.0.5")));
        assert!(host_allowed(None));
        assert!(!host_allowed(Some("evil.example:8025")));
    }
}
