//! The mailbox the HTTP API serves: an in-process index over the simulator's outbox folder,
//! read flags, and the event stream (Mailpit's WebSocket events).
//!
//! The outbox on disk stays the source of truth: [`Mailbox::refresh`] compares the folder's
//! `<id>.json` names with the index, loads what is new (announcing `new`) and forgets what is
//! gone (announcing `delete`). Every API request refreshes first, so a message the simulator
//! answered `250 Ok <id>` for is visible to the next request (read-after-write, no waiting); a
//! poller refreshes every [`POLL`] so the live page hears of messages nobody asked about, and
//! of files written or removed by another process (`dkim-relay outbox`, a second simulator on
//! the same folder). Read flags are in memory only (Mailpit keeps them in its database; here a
//! restart marks everything unread). Deleting through the API removes the files.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use super::mailpit::{self, MessageSummary, Parsed};
use crate::sim::outbox::{self, OutboxError, Record};

/// How often the poller looks at the outbox folder for the live page.
pub const POLL: Duration = Duration::from_millis(250);

/// One indexed message: its record, what the API shows of it (parsed and summarised once, when
/// indexed), its read flag.
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: Arc<Record>,
    pub parsed: Arc<Parsed>,
    base: Arc<MessageSummary>,
    pub read: bool,
}

impl Entry {
    fn new(record: Record, parsed: Parsed) -> Entry {
        let base = Arc::new(mailpit::summary(&record, &parsed, false));
        Entry {
            record: Arc::new(record),
            parsed: Arc::new(parsed),
            base,
            read: false,
        }
    }

    pub fn summary(&self) -> MessageSummary {
        let mut s = (*self.base).clone();
        s.read = self.read;
        s
    }

    /// The message's tags (computed when indexed).
    pub fn tags(&self) -> &[String] {
        &self.base.tags
    }
}

/// A Mailpit WebSocket event: `{"Type": "new", "Data": {…}}`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Data")]
    pub data: serde_json::Value,
}

#[derive(Default)]
struct Index {
    /// By ID.
    entries: BTreeMap<String, Entry>,
    /// IDs known to be unreadable (a half-written pair, a foreign file): not retried each scan.
    broken: HashSet<String>,
    deleted: u64,
}

/// The index and its event channel.
pub struct Mailbox {
    dir: PathBuf,
    index: Mutex<Index>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn json_ids(dir: &Path) -> Result<HashSet<String>, OutboxError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(source) => {
            return Err(OutboxError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect())
}

impl Mailbox {
    pub fn new(dir: PathBuf) -> Arc<Mailbox> {
        let (events, _) = broadcast::channel(256);
        Arc::new(Mailbox {
            dir,
            index: Mutex::new(Index::default()),
            events,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, kind: &'static str, data: serde_json::Value) {
        // No subscriber is not an error.
        let _ = self.events.send(Event { kind, data });
    }

    /// Brings the index in line with the folder (blocking file I/O: call from
    /// `spawn_blocking`, or through [`Mailbox::refresh_async`]).
    pub fn refresh(&self) -> Result<(), OutboxError> {
        let on_disk = json_ids(&self.dir)?;
        let (new_ids, gone): (Vec<String>, Vec<String>) = {
            let idx = self.lock();
            (
                on_disk
                    .iter()
                    .filter(|id| !idx.entries.contains_key(*id) && !idx.broken.contains(*id))
                    .cloned()
                    .collect(),
                idx.entries
                    .keys()
                    .filter(|id| !on_disk.contains(*id))
                    .cloned()
                    .collect(),
            )
        };
        let mut loaded = Vec::new();
        let mut broken = Vec::new();
        for id in new_ids {
            match outbox::show(&self.dir, &id) {
                Ok((record, eml)) => {
                    let parsed = mailpit::parse(&eml);
                    loaded.push(Entry::new(record, parsed));
                }
                // The `.json` is renamed into place after the `.eml`, so a missing `.eml` is a
                // message being deleted: look again next time.
                Err(OutboxError::Io { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "outbox entry skipped");
                    broken.push(id);
                }
            }
        }
        loaded.sort_by(|a, b| a.record.time.cmp(&b.record.time));
        let mut idx = self.lock();
        idx.broken.extend(broken);
        idx.broken.retain(|id| on_disk.contains(id));
        for id in gone {
            if idx.entries.remove(&id).is_some() {
                idx.deleted += 1;
                self.emit("delete", serde_json::json!({ "ID": id }));
            }
        }
        for entry in loaded {
            let summary = entry.summary();
            idx.entries.insert(entry.record.id.clone(), entry);
            self.emit("new", serde_json::to_value(summary).unwrap_or_default());
        }
        Ok(())
    }

    /// [`Mailbox::refresh`] on the blocking pool.
    pub async fn refresh_async(self: &Arc<Self>) -> Result<(), OutboxError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.refresh())
            .await
            .unwrap_or(Ok(()))
    }

    /// Every message, newest first (Mailpit's order).
    pub fn all(&self) -> Vec<Entry> {
        let idx = self.lock();
        let mut all: Vec<Entry> = idx.entries.values().cloned().collect();
        all.sort_by(|a, b| {
            b.record
                .time
                .cmp(&a.record.time)
                .then_with(|| b.record.id.cmp(&a.record.id))
        });
        all
    }

    pub fn get(&self, id: &str) -> Option<Entry> {
        self.lock().entries.get(id).cloned()
    }

    /// The newest message's ID.
    pub fn latest(&self) -> Option<String> {
        self.all().into_iter().next().map(|e| e.record.id.clone())
    }

    /// Sets read flags (all messages when `ids` is empty); announces each change.
    pub fn set_read(&self, ids: &[String], read: bool) {
        let mut idx = self.lock();
        let targets: Vec<String> = if ids.is_empty() {
            idx.entries.keys().cloned().collect()
        } else {
            ids.to_vec()
        };
        for id in targets {
            if let Some(e) = idx.entries.get_mut(&id)
                && e.read != read
            {
                e.read = read;
                self.emit("update", serde_json::json!({ "ID": id, "Read": read }));
            }
        }
    }

    /// Deletes messages from the outbox (all when `ids` is empty). The `.json` goes first, so a
    /// half-deleted message is invisible rather than listed without its body.
    pub fn delete(&self, ids: &[String]) -> Result<(), OutboxError> {
        let targets: Vec<String> = if ids.is_empty() {
            self.lock().entries.keys().cloned().collect()
        } else {
            ids.to_vec()
        };
        for id in &targets {
            outbox::remove(&self.dir, id)?;
        }
        let mut idx = self.lock();
        for id in targets {
            if idx.entries.remove(&id).is_some() {
                idx.deleted += 1;
                self.emit("delete", serde_json::json!({ "ID": id }));
            }
        }
        Ok(())
    }

    /// Messages removed since start (Mailpit's `RuntimeStats.MessagesDeleted`).
    pub fn deleted(&self) -> u64 {
        self.lock().deleted
    }

    /// Polls the folder until the returned task is aborted.
    pub fn spawn_poller(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.refresh_async().await {
                    tracing::debug!(error = %e, "outbox scan failed");
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::outbox::SimOutcome;

    fn record(id: &str, time: &str) -> Record {
        let v = r#"{"dkim":[],"spf":{"domain":"amazonses.com","result":"pass","aligned":false,"reason":""},"dmarc":{"from_domain":"example.org","result":"fail","policy":"none","disposition":"none","record":null,"reason":""}}"#;
        Record {
            id: id.into(),
            time: time.into(),
            client: "127.0.0.1:1".into(),
            user: "AKIA".into(),
            mail_from: "a@example.org".into(),
            envelope_from: format!("{id}@amazonses.com"),
            recipients: vec!["bounce@simulator.amazonses.com".into()],
            size: 10,
            mailbox_simulator: vec![SimOutcome {
                recipient: "bounce@simulator.amazonses.com".into(),
                outcome: "bounce 550 5.1.1".into(),
            }],
            subject: Some("s".into()),
            header_from: Some("a@example.org".into()),
            verdict: serde_json::from_str(v).unwrap(),
        }
    }

    #[test]
    fn index_follows_the_folder_and_announces() {
        let dir = tempfile::tempdir().unwrap();
        let mb = Mailbox::new(dir.path().to_path_buf());
        let mut rx = mb.subscribe();
        outbox::write_record(
            dir.path(),
            &record("0a", "2026-01-01T00:00:00Z"),
            b"Subject: s\r\n\r\nx",
        )
        .unwrap();
        outbox::write_record(
            dir.path(),
            &record("0b", "2026-01-02T00:00:00Z"),
            b"Subject: t\r\n\r\ny",
        )
        .unwrap();
        mb.refresh().unwrap();
        let ids: Vec<String> = mb.all().iter().map(|e| e.record.id.clone()).collect();
        assert_eq!(ids, ["0b", "0a"]);
        assert_eq!(rx.try_recv().unwrap().kind, "new");
        let tags = mb.get("0a").unwrap().summary().tags;
        assert!(tags.contains(&"dmarc-fail".to_string()), "{tags:?}");
        assert!(tags.contains(&"simulator-bounce".to_string()), "{tags:?}");
        mb.set_read(&["0a".into()], true);
        assert!(mb.get("0a").unwrap().read);
        mb.delete(&["0a".into()]).unwrap();
        assert!(!dir.path().join("0a.json").exists());
        assert!(!dir.path().join("0a.eml").exists());
        std::fs::remove_file(dir.path().join("0b.json")).unwrap();
        mb.refresh().unwrap();
        assert!(mb.all().is_empty());
        assert_eq!(mb.deleted(), 2);
    }
}
