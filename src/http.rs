//! The operator's HTTP endpoint (`[http] listen`, off when absent, loopback in the example):
//! `/metrics` (Prometheus scrapes it), `/livez` and `/readyz` (orchestrator probes).
//!
//! - `/metrics`: [`crate::metrics::Metrics::render`], OpenMetrics text.
//! - `/livez`: 200 `ok` while the process serves HTTP at all. Nothing else: a liveness failure
//!   gets the process restarted, which fixes only a wedged process.
//! - `/readyz`: 200 when every [`crate::health::Readiness`] check passes, else 503; with
//!   `?verbose` one `[+]name ok` / `[-]name failed: why` line per check (Kubernetes' own
//!   style), so an operator sees which one fails.
//!
//! Only `GET` (and `HEAD`) are answered; the server has no state a request can change. It runs
//! on its own task beside the SMTP server and stops after it ([`Handle::shutdown`]), so probes
//! see "not ready" while the relay drains. Answering a request is bounded by
//! [`REQUEST_TIMEOUT`]; reading one is not (axum's server sets no header-read timer), which is
//! why the endpoint belongs on loopback or a network only the scraper and the kubelet reach.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::health::Readiness;
use crate::metrics::{CONTENT_TYPE, Metrics};

/// Upper bound on answering one request (reading it included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP endpoint's settings (built by `config` from `[http]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Observed {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// A running HTTP endpoint.
pub struct Handle {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Stops accepting, lets requests in flight finish (each is bounded by
    /// [`REQUEST_TIMEOUT`]).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `settings.listen` (the error names the address).
pub async fn bind(settings: &Settings) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen for HTTP on {}: {e}", settings.listen),
            )
        })
}

/// The routes, for [`spawn`] and for tests that call them without a socket.
pub fn router(observed: Observed) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn(with_timeout))
        .with_state(observed)
}

/// A request that takes longer than [`REQUEST_TIMEOUT`] gets a 408.
async fn with_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "timed out\n").into_response(),
    }
}

/// Serves the routes on `listener` until [`Handle::shutdown`].
pub fn spawn(listener: tokio::net::TcpListener, observed: Observed) -> std::io::Result<Handle> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(observed);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    tracing::info!(address = %addr, "HTTP endpoint listening (/metrics, /livez, /readyz)");
    Ok(Handle {
        addr,
        stop: Some(stop),
        task,
    })
}

async fn metrics(State(o): State<Observed>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], o.metrics.render()).into_response()
}

async fn livez() -> Response {
    text(StatusCode::OK, "ok\n".to_string())
}

async fn readyz(State(o): State<Observed>, RawQuery(query): RawQuery) -> Response {
    let report = o.readiness.report();
    let verbose = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    let status = if report.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = if verbose {
        report.verbose()
    } else if report.ready() {
        "ok\n".to_string()
    } else {
        "not ready (see /readyz?verbose)\n".to_string()
    };
    text(status, body)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
