//! `GET /api/events`: Mailpit's WebSocket event stream. Each mailbox change is one text frame
//! `{"Type": "new" | "update" | "delete", "Data": …}` — `new` carries the `MessageSummary`,
//! `delete` `{"ID"}`, `update` `{"ID", "Read"}` — exactly what Mailpit's web UI and clients read.
//! A client that falls behind by more than the channel holds is sent `{"Type": "prune"}` (Mailpit's
//! "reload the list" event) instead of the events it missed. Frames from the client are read
//! only to notice that it left.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

pub async fn events(ws: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
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
