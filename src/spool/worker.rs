//! The background delivery of spooled messages: one task that schedules, many short delivery
//! attempts through the upstream pool.
//!
//! Per attempt, the reply's class ([`ReplyClass`]) decides: delivered → removed (SES's message
//! id logged with the queue id); message-level 5xx → `dead/` with the reply; throttling,
//! temporary and connection failures → back to the queue with exponential backoff and jitter
//! ([`super::retry`]), or `dead/` past the maximum age; connection limits → retried soon, not
//! counted; credentials refused, account paused, daily quota → the whole queue pauses (file
//! `paused`, logged at error level each time) and one message probes every `pause_probe`
//! until SES takes mail again. A pause never dead-letters or ages out mail.
//!
//! No hammering: concurrency starts at one and doubles with each delivery up to the pool size
//! (halved on a throttle or a connection limit, the latter with a 200 ms hold), persisted backoff and pause survive a
//! restart, and the upstream pool paces every send. On shutdown the worker starts nothing new,
//! lets attempts in flight finish within the grace period, and leaves the rest in the spool
//! (an attempt cut off stays in `active/` and is retried at the next start).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::retry;
use super::settings::Settings;
use super::store::{self, Area, CommitError, Meta, Pause, ReadError, Reason, State, Store};
use crate::upstream::pool::{Delivery, Pool};
use crate::upstream::reply_class::{ReplyClass, Scope};
use crate::upstream::ses_message_id;

/// What the worker needs from the running relay, read at each attempt (so a reload applies).
pub trait Source: Send + Sync + 'static {
    /// The spool settings in force.
    fn settings(&self) -> Arc<Settings>;
    /// The upstream pool in force.
    fn pool(&self) -> Result<Arc<Pool>, String>;
    /// At most this many attempts at once (the pool size).
    fn concurrency(&self) -> usize;
}

/// The way into the spool for the pipeline: commit, then tell the worker.
#[derive(Clone)]
pub struct Intake {
    store: Arc<Store>,
    queued: mpsc::UnboundedSender<String>,
    paused: Arc<AtomicBool>,
}

impl Intake {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether the queue is paused because SES refuses the account: `on-defer` then commits
    /// at once instead of trying SES with every new message.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Commits a signed message durably (on the blocking pool) and hands it to the worker.
    pub async fn commit(
        &self,
        meta: Meta,
        data: Vec<u8>,
        state: State,
        min_free: u64,
    ) -> Result<(), CommitError> {
        let store = Arc::clone(&self.store);
        let id = meta.id.clone();
        tokio::task::spawn_blocking(move || store.commit(&meta, &data, &state, min_free))
            .await
            .map_err(|e| CommitError::Io(io::Error::other(e)))??;
        // A stopped worker finds the file at the next start.
        let _ = self.queued.send(id);
        Ok(())
    }
}

/// The running worker.
pub struct Worker {
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<usize>,
    /// The spool's lock, held for the worker's life.
    _lock: std::fs::File,
}

/// A recovered spool whose worker has not started yet (the relay that feeds it needs the
/// [`Intake`] first; the worker needs the relay's pool).
pub struct Pending {
    store: Arc<Store>,
    queued: mpsc::UnboundedReceiver<String>,
    lock: std::fs::File,
    paused: Arc<AtomicBool>,
}

impl Pending {
    /// Starts delivering.
    pub fn start(self, source: Arc<dyn Source>) -> Worker {
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(run(self.store, source, self.queued, stop_rx, self.paused));
        Worker {
            stop,
            task,
            _lock: self.lock,
        }
    }
}

impl Worker {
    /// Recovers the spool (uncommitted files dropped, in-flight ones requeued) before anything
    /// commits to it; the worker starts with [`Pending::start`].
    pub fn open(store: Arc<Store>) -> io::Result<(Intake, Pending)> {
        let lock = store.lock()?;
        let recovered = store.recover()?;
        if recovered.uncommitted > 0 || !recovered.in_flight.is_empty() {
            tracing::warn!(
                uncommitted_removed = recovered.uncommitted,
                requeued_in_flight = recovered.in_flight.len(),
                in_flight = %recovered.in_flight.join(","),
                "spool recovered after an unclean stop; the requeued messages may reach SES twice"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let intake = Intake {
            store: Arc::clone(&store),
            queued: tx,
            paused: Arc::new(AtomicBool::new(store.pause().is_some())),
        };
        let paused = Arc::clone(&intake.paused);
        Ok((
            intake,
            Pending {
                store,
                queued: rx,
                lock,
                paused,
            },
        ))
    }

    /// Starts nothing new, lets attempts in flight finish within `grace`; returns how many
    /// were cut (they stay in the spool).
    pub async fn shutdown(self, grace: Duration) -> usize {
        let _ = self.stop.send(Some(grace));
        self.task.await.unwrap_or(0)
    }

    /// Stops at once (a relay dropped without a graceful stop): attempts in flight stay in
    /// `active/` and are requeued at the next start.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// The schedule: when each queued message is due (Unix ms).
#[derive(Default)]
struct Schedule {
    due: BTreeSet<(u64, String)>,
    by_id: HashMap<String, u64>,
}

impl Schedule {
    fn insert(&mut self, id: String, at: u64) {
        if let Some(old) = self.by_id.insert(id.clone(), at) {
            self.due.remove(&(old, id.clone()));
        }
        self.due.insert((at, id));
    }
    fn pop_due(&mut self, now: u64) -> Option<String> {
        let (at, _) = self.due.first()?;
        if *at > now {
            return None;
        }
        let (_, id) = self.due.pop_first()?;
        self.by_id.remove(&id);
        Some(id)
    }
    fn next(&self) -> Option<u64> {
        self.due.first().map(|(at, _)| *at)
    }
}

/// The outcome of one attempt, for the scheduler.
struct Done {
    id: String,
    class: Option<ReplyClass>,
    reply: String,
    /// When to try again; `None` when the message left the queue.
    next: Option<u64>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
}

/// Every queued message and when it is due (its saved state, or now).
fn scan(store: &Store, now: u64) -> Vec<(String, u64)> {
    let ids = match store.list(Area::Queue) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, dir = %store.root().display(), "cannot list the spool");
            return Vec::new();
        }
    };
    ids.into_iter()
        .map(|id| {
            let at = store.read_state(&id).map_or(now, |s| s.next_attempt_ms);
            (id, at)
        })
        .collect()
}

async fn run(
    store: Arc<Store>,
    source: Arc<dyn Source>,
    mut queued: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<Option<Duration>>,
    paused: Arc<AtomicBool>,
) -> usize {
    let mut schedule = Schedule::default();
    let scanned = {
        let store = Arc::clone(&store);
        blocking(move || scan(&store, store::now_ms()))
            .await
            .unwrap_or_default()
    };
    if !scanned.is_empty() {
        tracing::info!(
            messages = scanned.len(),
            "spool: delivering queued messages"
        );
    }
    for (id, at) in scanned {
        schedule.insert(id, at);
    }
    let mut pause = store.pause();
    if let Some(p) = &pause {
        tracing::error!(class = %p.class, reply = %p.reply, "spool: the queue is PAUSED (from before the restart); probing");
    }
    let mut kick = store.kick_stamp();
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut probing = false;
    let mut hold_until = 0u64;
    let mut window = 1usize;
    let grace = loop {
        paused.store(pause.is_some(), Ordering::Relaxed);
        let now = store::now_ms();
        let limit = window.min(source.concurrency().max(1));
        while tasks.len() < limit && now >= hold_until && !probing {
            if pause.as_ref().is_some_and(|p| now < p.probe_at_ms) {
                break;
            }
            let Some(id) = schedule.pop_due(now) else {
                break;
            };
            if pause.is_some() {
                probing = true;
                tracing::info!(queue_id = %id, "spool: probing the paused queue");
            }
            tasks.spawn(attempt(Arc::clone(&store), Arc::clone(&source), id));
        }
        // At most a second (the `kick` poll); earlier when a message falls due — unless the
        // worker is at its limit or probing, when a finished attempt wakes it.
        let mut wake = now + 1000;
        let blocked = tasks.len() >= limit || probing;
        if let Some(at) = schedule.next()
            && !blocked
        {
            wake = wake.min(at.max(hold_until));
        }
        if let Some(p) = &pause {
            wake = wake.max(p.probe_at_ms.min(now + 1000));
        }
        let sleep = Duration::from_millis(wake.saturating_sub(now).clamp(5, 1000));
        tokio::select! {
            Some(id) = queued.recv() => {
                let at = store.read_state(&id).map_or(now, |s| s.next_attempt_ms);
                schedule.insert(id, at);
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok(done) = joined else { continue };
                let s = source.settings();
                let now = store::now_ms();
                if probing {
                    probing = false;
                }
                match done.class.map(ReplyClass::scope) {
                    Some(Scope::Account) => {
                        let class = done.class.map_or("", ReplyClass::name);
                        let p = Pause {
                            since_ms: pause.as_ref().map_or(now, |p| p.since_ms),
                            probe_at_ms: now + s.pause_probe.as_millis() as u64,
                            class: class.to_string(),
                            reply: done.reply.clone(),
                        };
                        tracing::error!(
                            class,
                            reply = %done.reply,
                            probe_in_ms = s.pause_probe.as_millis() as u64,
                            queued = schedule.by_id.len() + 1,
                            "spool: SES refuses the ACCOUNT; the whole queue is PAUSED (nothing is bounced); fix the account or credentials"
                        );
                        paused.store(true, Ordering::Relaxed);
                        if let Err(e) = store.set_pause(Some(&p)) {
                            tracing::warn!(error = %e, "spool: cannot record the pause");
                        }
                        pause = Some(p);
                        window = 1;
                    }
                    Some(_) if pause.is_some() => {
                        tracing::warn!(reply = %done.reply, "spool: SES takes mail again; the queue is resumed");
                        pause = None;
                        if let Err(e) = store.set_pause(None) {
                            tracing::warn!(error = %e, "spool: cannot clear the pause");
                        }
                    }
                    _ => {}
                }
                match done.class {
                    Some(ReplyClass::Accepted) => window = (window * 2).max(1),
                    Some(ReplyClass::RateThrottled) => {
                        // The pool's pacing does the real slowing (a hold here cost 80 s of a
                        // 170 s drain in bench/spool-burst.sh); the worker only stops piling on.
                        window = (window / 2).max(1);
                    }
                    Some(ReplyClass::ConnectionLimit) => {
                        window = (window / 2).max(1);
                        hold_until = now + 200;
                    }
                    _ => {}
                }
                window = window.min(source.concurrency().max(1));
                if let Some(at) = done.next {
                    schedule.insert(done.id, at);
                }
            }
            _ = tokio::time::sleep(sleep) => {
                let stamp = store.kick_stamp();
                if stamp != kick {
                    kick = stamp;
                    let st = Arc::clone(&store);
                    let scanned = blocking(move || scan(&st, store::now_ms())).await.unwrap_or_default();
                    tracing::info!(messages = scanned.len(), "spool: rescanned on request");
                    for (id, at) in scanned {
                        schedule.insert(id, at);
                    }
                    pause = store.pause();
                    hold_until = 0;
                }
            }
            changed = stop.changed() => {
                let grace = match changed {
                    Ok(()) => *stop.borrow(),
                    Err(_) => Some(Duration::ZERO),
                };
                if let Some(g) = grace {
                    break g;
                }
            }
        }
    };
    let in_flight = tasks.len();
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    let cut = if drained.is_err() {
        let cut = tasks.len();
        tasks.abort_all();
        cut
    } else {
        0
    };
    tracing::info!(
        in_flight,
        cut,
        queued = schedule.by_id.len(),
        "spool: stopped; queued messages stay in the spool"
    );
    cut
}

/// One delivery attempt of a queued message, with its file moves.
async fn attempt(store: Arc<Store>, source: Arc<dyn Source>, id: String) -> Done {
    let gone = |id: String, class, reply: String| Done {
        id,
        class,
        reply,
        next: None,
    };
    let settings = source.settings();
    let st = Arc::clone(&store);
    let i = id.clone();
    let read = blocking(move || match st.claim(&i) {
        Ok(true) => st.read(Area::Active, &i).map(Some),
        Ok(false) => Ok(None),
        Err(e) => Err(ReadError::Io(e)),
    })
    .await;
    let (meta, data) = match read {
        Ok(Ok(Some(m))) => m,
        // Delivered, deleted or claimed meanwhile.
        Ok(Ok(None)) | Ok(Err(ReadError::Missing)) => return gone(id, None, String::new()),
        Ok(Err(ReadError::Torn(why))) => {
            tracing::error!(queue_id = %id, problem = %why, "spool: torn or corrupt spool file; moved to corrupt/, NOT forwarded");
            let reason = Reason {
                at_ms: store::now_ms(),
                why: format!("torn or corrupt spool file: {why}"),
                last_reply: None,
            };
            let st = Arc::clone(&store);
            let i = id.clone();
            let _ = blocking(move || st.bury(Area::Active, Area::Corrupt, &i, &reason)).await;
            return gone(id, None, String::new());
        }
        Ok(Err(ReadError::Io(e))) | Err(e) => {
            tracing::warn!(queue_id = %id, error = %e, "spool: cannot read a queued message; will retry");
            let st = Arc::clone(&store);
            let i = id.clone();
            let next = store::now_ms() + settings.retry_initial.as_millis() as u64;
            let _ = blocking(move || {
                st.release(
                    &i,
                    &State {
                        next_attempt_ms: next,
                        ..State::default()
                    },
                )
            })
            .await;
            return Done {
                id,
                class: None,
                reply: String::new(),
                next: Some(next),
            };
        }
    };
    let delivery = match source.pool() {
        // Queued mail waits for its pacing turn without a deadline: the bounded wait
        // (`max_wait_secs`) is for a client holding a connection open, not for the queue.
        Ok(pool) => {
            pool.deliver_within(&meta.mail_from, &meta.rcpts, &[&data], None)
                .await
        }
        Err(e) => {
            tracing::warn!(error = %e, "spool: upstream unusable");
            Delivery::Failed(crate::upstream::UpstreamError::Closed)
        }
    };
    let class = ReplyClass::of(&delivery);
    let reply = match &delivery {
        Delivery::Answered { reply, .. } => reply.one_line(),
        Delivery::Failed(e) => format!("no answer: {e}"),
    };
    let now = store::now_ms();
    let mut state = store.read_state(&id).unwrap_or_default();
    state.last_reply = Some(reply.clone());
    state.last_class = Some(class.name().to_string());
    let (action, next): (Action, Option<u64>) = match class {
        ReplyClass::Accepted => {
            let ses_id = match &delivery {
                Delivery::Answered { reply, .. } => ses_message_id(reply).unwrap_or_default(),
                Delivery::Failed(_) => String::new(),
            };
            tracing::info!(
                queue_id = %id,
                ses_id = %ses_id,
                mail_from = %meta.mail_from,
                rcpts = meta.rcpts.len(),
                size = meta.size,
                attempts = state.attempts + 1,
                age_ms = now.saturating_sub(meta.created_ms),
                upstream = %reply,
                "spooled message delivered"
            );
            (Action::Delivered, None)
        }
        ReplyClass::MessageRejected => {
            tracing::warn!(queue_id = %id, mail_from = %meta.mail_from, upstream = %reply, "spool: SES refused the message for good; moved to dead/");
            (
                Action::Bury(Reason {
                    at_ms: now,
                    why: "refused by the upstream".into(),
                    last_reply: Some(reply.clone()),
                }),
                None,
            )
        }
        c if c.scope() == Scope::Account => {
            state.next_attempt_ms = now;
            (Action::Release(state), Some(now))
        }
        ReplyClass::ConnectionLimit => {
            state.next_attempt_ms = now + 1000;
            let at = state.next_attempt_ms;
            (Action::Release(state), Some(at))
        }
        _ => {
            state.attempts += 1;
            if retry::expired(&settings, meta.created_ms, now) {
                tracing::warn!(queue_id = %id, attempts = state.attempts, upstream = %reply, "spool: message past the maximum age; moved to dead/");
                (
                    Action::Bury(Reason {
                        at_ms: now,
                        why: format!(
                            "past the maximum age ({} s) after {} attempts",
                            settings.max_age.as_secs(),
                            state.attempts
                        ),
                        last_reply: Some(reply.clone()),
                    }),
                    None,
                )
            } else {
                let delay = retry::backoff(&settings, state.attempts, rand::random::<f64>());
                state.next_attempt_ms = now + delay.as_millis() as u64;
                tracing::info!(queue_id = %id, class = class.name(), attempts = state.attempts, retry_in_ms = delay.as_millis() as u64, upstream = %reply, "spool: delivery deferred");
                let at = state.next_attempt_ms;
                (Action::Release(state), Some(at))
            }
        }
    };
    let st = Arc::clone(&store);
    let i = id.clone();
    let applied = blocking(move || match action {
        Action::Delivered => st.delivered(&i),
        Action::Bury(reason) => st.bury(Area::Active, Area::Dead, &i, &reason),
        Action::Release(state) => st.release(&i, &state),
    })
    .await;
    if let Err(e) | Ok(Err(e)) = applied {
        tracing::error!(queue_id = %id, error = %e, "spool: cannot update the spool after an attempt");
    }
    Done {
        id,
        class: Some(class),
        reply,
        next,
    }
}

enum Action {
    Delivered,
    Bury(Reason),
    Release(State),
}
