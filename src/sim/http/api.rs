//! Mailpit's API v1 subset (server/apiv1 in axllent/mailpit) and our verdict endpoint.
//!
//! Answers follow Mailpit: JSON with its field names; `404 page not found` as plain text for an
//! unknown message; `400` with a plain-text reason for a bad request; `ok` as plain text for
//! PUT/DELETE. `{ID}` may be `latest`. `GET /api/v1/message/{ID}` marks the message read, as
//! Mailpit does. `DELETE /api/v1/messages` with no body or no `IDs` deletes everything (Mailpit's
//! rule) — but a body that is not JSON is refused with 400 rather than taken as "all".
//! Paging: `start` (offset, default 0) and `limit` (default 50), newest first.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::explain;
use super::mailbox::Entry;
use super::mailpit::{self, MessageSummary};
use super::search;
use crate::sim::outbox;

/// Mailpit's default page size.
const DEFAULT_LIMIT: usize = 50;

pub fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        "404 page not found",
    )
        .into_response()
}

pub fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain")],
        msg.into(),
    )
        .into_response()
}

fn ok_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "simulator HTTP API");
    bad_request(e.to_string())
}

/// `?start=&limit=` (and `query=` for search).
#[derive(Debug, Deserialize, Default)]
pub struct Paging {
    start: Option<String>,
    limit: Option<String>,
    query: Option<String>,
}

impl Paging {
    fn window(&self) -> (usize, usize) {
        let n = |v: &Option<String>| v.as_deref().and_then(|s| s.trim().parse::<usize>().ok());
        (
            n(&self.start).unwrap_or(0),
            n(&self.limit).filter(|l| *l > 0).unwrap_or(DEFAULT_LIMIT),
        )
    }
}

/// Mailpit's `MessagesSummary`.
#[derive(Debug, Serialize)]
pub struct MessagesSummary {
    total: usize,
    unread: usize,
    count: usize,
    messages_count: usize,
    messages_unread: usize,
    start: usize,
    tags: Vec<String>,
    messages: Vec<MessageSummary>,
}

async fn refreshed(state: &AppState) -> Result<Vec<Entry>, Response> {
    state.mailbox.refresh_async().await.map_err(server_error)?;
    Ok(state.mailbox.all())
}

fn listing(all: &[Entry], matching: Vec<MessageSummary>, paging: &Paging) -> MessagesSummary {
    let (start, limit) = paging.window();
    let mut tags: Vec<String> = all.iter().flat_map(|e| e.tags().iter().cloned()).collect();
    tags.sort();
    tags.dedup();
    let messages_count = matching.len();
    let messages_unread = matching.iter().filter(|m| !m.read).count();
    let page: Vec<MessageSummary> = matching.into_iter().skip(start).take(limit).collect();
    MessagesSummary {
        total: all.len(),
        unread: all.iter().filter(|e| !e.read).count(),
        count: page.len(),
        messages_count,
        messages_unread,
        start,
        tags,
        messages: page,
    }
}

/// `GET /api/v1/messages`.
pub async fn list(State(state): State<Arc<AppState>>, Query(paging): Query<Paging>) -> Response {
    let all = match refreshed(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let matching = all.iter().map(Entry::summary).collect();
    Json(listing(&all, matching, &paging)).into_response()
}

/// The entries matching a Mailpit query.
pub fn matching(all: &[Entry], query: &str) -> Vec<MessageSummary> {
    let q = search::Query::parse(query);
    all.iter()
        .map(|e| (e.summary(), e))
        .filter(|(s, e)| q.matches(s, &e.parsed.text))
        .map(|(s, _)| s)
        .collect()
}

/// `GET /api/v1/search?query=`.
pub async fn search(State(state): State<Arc<AppState>>, Query(paging): Query<Paging>) -> Response {
    let query = paging.query.as_deref().unwrap_or("").trim().to_string();
    if query.is_empty() {
        return bad_request("Error: no search query");
    }
    let all = match refreshed(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let found = matching(&all, &query);
    Json(listing(&all, found, &paging)).into_response()
}

/// `DELETE /api/v1/search?query=`.
pub async fn delete_search(
    State(state): State<Arc<AppState>>,
    Query(paging): Query<Paging>,
) -> Response {
    let query = paging.query.as_deref().unwrap_or("").trim().to_string();
    if query.is_empty() {
        return bad_request("Error: no search query");
    }
    let all = match refreshed(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let ids: Vec<String> = matching(&all, &query).into_iter().map(|m| m.id).collect();
    if ids.is_empty() {
        return ok_text();
    }
    delete_ids(&state, ids).await
}

#[derive(Debug, Deserialize, Default)]
struct IdsBody {
    #[serde(rename = "IDs", alias = "ids", default)]
    ids: Vec<String>,
}

async fn delete_ids(state: &Arc<AppState>, ids: Vec<String>) -> Response {
    let mailbox = Arc::clone(&state.mailbox);
    match tokio::task::spawn_blocking(move || mailbox.delete(&ids)).await {
        Ok(Ok(())) => ok_text(),
        Ok(Err(outbox::OutboxError::BadId(id))) => bad_request(format!("invalid ID: {id}")),
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    }
}

/// `DELETE /api/v1/messages` (`{"IDs": [...]}`, or everything).
pub async fn delete(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body: IdsBody = if body.iter().all(u8::is_ascii_whitespace) {
        IdsBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return bad_request(e.to_string()),
        }
    };
    if let Err(r) = refreshed(&state).await {
        return r;
    }
    delete_ids(&state, body.ids).await
}

#[derive(Debug, Deserialize, Default)]
struct ReadBody {
    #[serde(rename = "Read", default)]
    read: bool,
    #[serde(rename = "IDs", default)]
    ids: Vec<String>,
    #[serde(rename = "Search", default)]
    search: String,
}

/// `PUT /api/v1/messages`: read status by `IDs`, by `Search`, or for all.
pub async fn set_read(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let body: ReadBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReadBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return bad_request(e.to_string()),
        }
    };
    if !body.ids.is_empty() && !body.search.is_empty() {
        return bad_request("You may specify either IDs or a search query, not both");
    }
    let all = match refreshed(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !body.search.trim().is_empty() {
        let ids: Vec<String> = matching(&all, &body.search)
            .into_iter()
            .map(|m| m.id)
            .collect();
        if !ids.is_empty() {
            state.mailbox.set_read(&ids, body.read);
        }
    } else {
        state.mailbox.set_read(&body.ids, body.read);
    }
    ok_text()
}

/// The entry for `{ID}` (`latest` allowed), after a refresh.
pub async fn entry(state: &AppState, id: &str) -> Result<Entry, Response> {
    refreshed(state).await?;
    let id = if id == "latest" {
        match state.mailbox.latest() {
            Some(id) => id,
            None => return Err(not_found()),
        }
    } else {
        id.to_string()
    };
    state.mailbox.get(&id).ok_or_else(not_found)
}

/// The delivered message's bytes, read from the outbox.
pub async fn raw_bytes(state: &AppState, id: &str) -> Result<Vec<u8>, Response> {
    let dir = state.mailbox.dir().to_path_buf();
    let id = id.to_string();
    match tokio::task::spawn_blocking(move || outbox::show(&dir, &id)).await {
        Ok(Ok((_, eml))) => Ok(eml),
        Ok(Err(outbox::OutboxError::NotFound(_) | outbox::OutboxError::BadId(_))) => {
            Err(not_found())
        }
        Ok(Err(e)) => Err(server_error(e)),
        Err(e) => Err(server_error(e)),
    }
}

/// `GET /api/v1/message/{ID}`: the message (and it is now read).
pub async fn message(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let e = match entry(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    state
        .mailbox
        .set_read(std::slice::from_ref(&e.record.id), true);
    Json(mailpit::message(&e.record, &e.parsed)).into_response()
}

/// `GET /api/v1/message/{ID}/headers`.
pub async fn headers(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let e = match entry(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match raw_bytes(&state, &e.record.id).await {
        Ok(eml) => Json(mailpit::headers(&eml)).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct RawQuery {
    dl: Option<String>,
}

/// `GET /api/v1/message/{ID}/raw` (`?dl=1` to download).
pub async fn raw(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<RawQuery>,
) -> Response {
    let e = match entry(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match raw_bytes(&state, &e.record.id).await {
        Ok(eml) => {
            let mut r =
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], eml).into_response();
            if q.dl.as_deref() == Some("1")
                && let Ok(v) = format!("attachment; filename=\"{}.eml\"", e.record.id).parse()
            {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(r) => r,
    }
}

/// `GET /api/v1/message/{ID}/part/{PartID}`: an attachment's decoded bytes.
pub async fn part(
    State(state): State<Arc<AppState>>,
    Path((id, part_id)): Path<(String, String)>,
) -> Response {
    let e = match entry(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(meta) = e
        .parsed
        .attachments
        .iter()
        .chain(&e.parsed.inline)
        .find(|a| a.part_id == part_id)
        .cloned()
    else {
        return not_found();
    };
    let eml = match raw_bytes(&state, &e.record.id).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(pos) = part_id.parse::<u32>() else {
        return not_found();
    };
    let Some(m) = mail_parser::MessageParser::default().parse(&eml) else {
        return not_found();
    };
    let Some(p) = m.part(pos) else {
        return not_found();
    };
    let content = p.contents().to_vec();
    let name = if meta.file_name.is_empty() {
        meta.content_id.clone()
    } else {
        meta.file_name.clone()
    };
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    let mut r = content.into_response();
    if let Ok(v) = meta.content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = format!("inline; filename=\"{safe}\"").parse() {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `GET /api/v1/message/{ID}/verdict` (ours): the verdict explained, as JSON.
pub async fn verdict(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let e = match entry(&state, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match raw_bytes(&state, &e.record.id).await {
        Ok(eml) => Json(explain::explain(&e.record, &eml)).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/tags`.
pub async fn tags(State(state): State<Arc<AppState>>) -> Response {
    let all = match refreshed(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut tags: Vec<String> = all.iter().flat_map(|e| e.tags().iter().cloned()).collect();
    tags.sort();
    tags.dedup();
    Json(tags).into_response()
}

#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RuntimeStats {
    uptime: u64,
    memory: u64,
    messages_deleted: u64,
    #[serde(rename = "SMTPAccepted")]
    smtp_accepted: u64,
    #[serde(rename = "SMTPAcceptedSize")]
    smtp_accepted_size: u64,
    #[serde(rename = "SMTPRejected")]
    smtp_rejected: u64,
    #[serde(rename = "SMTPIgnored")]
    smtp_ignored: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AppInformation {
    version: String,
    latest_version: String,
    database: String,
    database_size: u64,
    messages: usize,
    unread: usize,
    tags: BTreeMap<String, u64>,
    runtime_stats: RuntimeStats,
}

/// `GET /api/v1/info`: Mailpit's `AppInformation`. `Version` names this program; `Database` is
/// the outbox folder; `SMTPAccepted` counts the messages in it.
pub async fn info(State(state): State<Arc<AppState>>) -> Response {
    let all = match refreshed(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut tags = BTreeMap::new();
    for e in &all {
        for t in e.tags() {
            *tags.entry(t.clone()).or_insert(0) += 1;
        }
    }
    Json(AppInformation {
        version: format!("dkim-relay {}", env!("CARGO_PKG_VERSION")),
        latest_version: "disabled".into(),
        database: state.mailbox.dir().display().to_string(),
        database_size: all.iter().map(|e| e.record.size as u64).sum(),
        messages: all.len(),
        unread: all.iter().filter(|e| !e.read).count(),
        tags,
        runtime_stats: RuntimeStats {
            uptime: state.started.elapsed().as_secs(),
            messages_deleted: state.mailbox.deleted(),
            smtp_accepted: all.len() as u64,
            smtp_accepted_size: all.iter().map(|e| e.record.size as u64).sum(),
            ..RuntimeStats::default()
        },
    })
    .into_response()
}

/// `GET /livez` and `GET /readyz`: an empty 200, as Mailpit.
pub async fn healthy() -> StatusCode {
    StatusCode::OK
}
