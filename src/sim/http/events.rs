//! `GET /api/events`: Mailpit's WebSocket event stream. Each mailbox change is one text frame
//! `{"Type": "new" | "update" | "delete", "Data": …}` — `new` carries the `MessageSummary`,
//! `delete` `{"ID"}`, `update` `{"ID", "Read"}` — exactly what Mailpit's web UI and clients read.
//! A client that falls behind by more than the channel holds is sent `{"Type": "prune"}` (Mailpit's
//! "reload the list" event) instead of the events it missed. Frames from the client are read
//! only to notice that it left.
//!
//! WebSockets are not covered by the browser's same-origin rule, so a page on any site could
//! open this stream and read every new message's summary: a browser's `Origin` must name this
//! machine (`localhost` or an IP address), else the upgrade is refused with 403. Clients that
//! send no `Origin` (libraries, scripts) are served.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

pub async fn events(
    ws: WebSocketUpgrade,
    headers: axum::http::HeaderMap,
    State(state): State<Arc<AppState>>,
) -> Response {
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
        if !host.is_some_and(|h| super::host_allowed(Some(h))) {
            return (
                axum::http::StatusCode::FORBIDDEN,
                "cross-site WebSocket refused",
            )
                .into_response();
        }
    }
    let rx = state.mailbox.subscribe();
    ws.on_upgrade(move |socket| stream(socket, rx))
}

async fn stream(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<super::mailbox::Event>,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let text = match ev {
                    Ok(ev) => serde_json::to_string(&ev).unwrap_or_default(),
                    Err(RecvError::Lagged(_)) => r#"{"Type":"prune","Data":null}"#.to_string(),
                    Err(RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
