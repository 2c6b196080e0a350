//! `dkim-relay queue list | show ID | retry [ID|--all] | delete ID | dead` — the spool's mailq
//! and postsuper, safe while the relay runs.
//!
//! Why no control socket: every change is a rename or an atomic replace in the spool
//! ([`crate::spool::store`]), the same primitives the worker uses. A delivery claims a message
//! by renaming it into `active/`, so `delete` either removes a queued file before the worker
//! claims it (the claim then finds nothing) or finds it in `active/` and refuses; `retry`
//! rewrites the retry state and touches `kick`, which the worker polls every second and answers
//! with a rescan. The commands work the same whether the relay runs or not, and need no
//! credentials beyond file access to the spool.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::print_or_fail;
use crate::config;
use crate::spool::store::{self, Area, State, Store};

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    List,
    Show(String),
    /// `None`: every queued message (and the pause is lifted).
    Retry(Option<String>),
    Delete(String),
    Dead,
}

/// Runs a queue command on the spool of `config` (or `dir`, when given).
pub fn run(config_path: &Path, dir: Option<&Path>, action: Action) -> ExitCode {
    print_or_fail(spool_dir(config_path, dir).and_then(|d| run_text(&d, action)))
}

/// The spool folder: `--dir`, or `[spool] dir` of the configuration.
fn spool_dir(config_path: &Path, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    let snapshot = config::load(config_path).map_err(|diags| {
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        anyhow::anyhow!("{}", text.join("\n"))
    })?;
    match snapshot.spool {
        Some(s) => Ok(s.dir),
        None => bail!(
            "{}: no [spool] configured (the relay runs pass-through; nothing is queued)",
            config_path.display()
        ),
    }
}

fn age(ms: u64, now: u64) -> String {
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn until(ms: u64, now: u64) -> String {
    if ms <= now {
        "now".into()
    } else {
        format!("in {}", age(now, ms))
    }
}

fn check_id(id: &str) -> anyhow::Result<()> {
    if !store::valid_id(id) {
        bail!("`{id}` is not a queue id (hex digits, as `queue list` prints them)");
    }
    Ok(())
}

/// What the command prints.
pub fn run_text(dir: &Path, action: Action) -> anyhow::Result<String> {
    if !dir.join("queue").is_dir() {
        bail!(
            "{} is not a spool (no queue/ folder; has the relay run with this [spool] dir?)",
            dir.display()
        );
    }
    let store = Store::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let now = store::now_ms();
    let mut out = String::new();
    match action {
        Action::List => {
            if let Some(p) = store.pause() {
                let _ = writeln!(
                    out,
                    "QUEUE PAUSED for {} ({}): {}; next probe {}",
                    age(p.since_ms, now),
                    p.class,
                    p.reply,
                    until(p.probe_at_ms, now)
                );
            }
            let queued = store.list(Area::Queue)?;
            let active = store.list(Area::Active)?;
            let mut rows = Vec::new();
            for (area, ids) in [(Area::Active, &active), (Area::Queue, &queued)] {
                for id in ids {
                    let Ok(meta) = store.meta(area, id) else {
                        rows.push(format!(
                            "{id}  (unreadable or torn; delivery will move it to corrupt/)"
                        ));
                        continue;
                    };
                    let state = store.read_state(id).unwrap_or_default();
                    let next = if area == Area::Active {
                        "delivering".to_string()
                    } else {
                        until(state.next_attempt_ms, now)
                    };
                    rows.push(format!(
                        "{id}  {:>5}  {:>8}  {:>3}  {:<14}  {}  ->  {}  {}",
                        age(meta.created_ms, now),
                        meta.size,
                        state.attempts,
                        next,
                        meta.mail_from,
                        meta.rcpts.join(","),
                        state.last_reply.unwrap_or_default()
                    ));
                }
            }
            if rows.is_empty() {
                let _ = writeln!(out, "the queue is empty");
            } else {
                let _ = writeln!(
                    out,
                    "ID                     AGE      SIZE  TRY  NEXT            FROM  ->  TO  LAST REPLY"
                );
                for r in rows {
                    let _ = writeln!(out, "{r}");
                }
            }
            let _ = writeln!(
                out,
                "{} queued, {} in delivery, {} dead, {} corrupt",
                queued.len(),
                active.len(),
                store.list(Area::Dead)?.len(),
                store.list(Area::Corrupt)?.len()
            );
        }
        Action::Show(id) => {
            check_id(&id)?;
            let found = [Area::Queue, Area::Active, Area::Dead, Area::Corrupt]
                .into_iter()
                .find_map(|a| match store.read(a, &id) {
                    Err(store::ReadError::Missing) => None,
                    r => Some((a, r)),
                });
            let Some((area, read)) = found else {
                bail!("no message {id} in the spool");
            };
            let _ = writeln!(out, "id: {id}\nwhere: {area:?}");
            match read {
                Ok((meta, data)) => {
                    let _ = writeln!(
                        out,
                        "age: {}\nmail_from: {}\nrcpts: {}\nsize: {}",
                        age(meta.created_ms, now),
                        meta.mail_from,
                        meta.rcpts.join(", "),
                        meta.size
                    );
                    if let Some(s) = store.read_state(&id) {
                        let _ = writeln!(
                            out,
                            "attempts: {}\nnext attempt: {}\nlast class: {}\nlast reply: {}",
                            s.attempts,
                            until(s.next_attempt_ms, now),
                            s.last_class.unwrap_or_default(),
                            s.last_reply.unwrap_or_default()
                        );
                    }
                    if let Some(r) = store.reason(area, &id) {
                        let _ = writeln!(
                            out,
                            "reason: {}\nlast reply: {}",
                            r.why,
                            r.last_reply.unwrap_or_default()
                        );
                    }
                    let end = memchr::memmem::find(&data, b"\r\n\r\n").unwrap_or(data.len());
                    let _ = writeln!(out, "\n{}", String::from_utf8_lossy(&data[..end]));
                }
                Err(e) => {
                    let _ = writeln!(out, "problem: {e}");
                    if let Some(r) = store.reason(area, &id) {
                        let _ = writeln!(out, "reason: {}", r.why);
                    }
                }
            }
        }
        Action::Retry(Some(id)) => {
            check_id(&id)?;
            if store.requeue_dead(&id)? {
                let _ = writeln!(out, "{id}: moved from dead/ back to the queue, due now");
            } else if store.list(Area::Queue)?.contains(&id) {
                let mut s = store.read_state(&id).unwrap_or_default();
                s.next_attempt_ms = 0;
                store.write_state(&id, &s)?;
                let _ = writeln!(out, "{id}: due now");
            } else if store.list(Area::Active)?.contains(&id) {
                let _ = writeln!(out, "{id}: being delivered now");
            } else {
                bail!("no message {id} in the queue or dead/");
            }
            store.kick()?;
        }
        Action::Retry(None) => {
            let ids = store.list(Area::Queue)?;
            for id in &ids {
                let mut s = store.read_state(id).unwrap_or_else(State::default);
                s.next_attempt_ms = 0;
                store.write_state(id, &s)?;
            }
            if store.pause().is_some() {
                store.set_pause(None)?;
                let _ = writeln!(out, "pause lifted");
            }
            store.kick()?;
            let _ = writeln!(out, "{} queued messages due now", ids.len());
        }
        Action::Delete(id) => {
            check_id(&id)?;
            if store.list(Area::Active)?.contains(&id) {
                bail!("{id} is being delivered right now; try again in a moment");
            }
            let from = [Area::Queue, Area::Dead, Area::Corrupt]
                .into_iter()
                .find(|a| store.remove(*a, &id).unwrap_or(false));
            match from {
                Some(a) => {
                    let _ = writeln!(out, "{id}: deleted (was in {a:?})");
                }
                None => bail!("no message {id} in the spool"),
            }
        }
        Action::Dead => {
            for area in [Area::Dead, Area::Corrupt] {
                for id in store.list(area)? {
                    let r = store.reason(area, &id);
                    let (why, reply, at) = match r {
                        Some(r) => (r.why, r.last_reply.unwrap_or_default(), r.at_ms),
                        None => ("(no reason recorded)".into(), String::new(), now),
                    };
                    let _ = writeln!(
                        out,
                        "{id}  {:<7}  {} ago  {why}  {reply}",
                        format!("{area:?}").to_lowercase(),
                        age(at, now)
                    );
                }
            }
            if out.is_empty() {
                let _ = writeln!(out, "no dead-lettered messages");
            }
        }
    }
    Ok(out)
}
