//! What the operator's endpoint reads from the spool: the queue's size and the age of its oldest
//! message for `/metrics` ([`QueueProbe`]), and two readiness checks for `/readyz` — the spool
//! takes messages (its folder is there and the free space is above `min_free_mb`), and SES is
//! not refusing the account (a paused queue: 535, a paused account, the daily quota).
//!
//! Why here: the spool knows its files; the metrics and health leaves know nothing of the
//! crate, so the spool registers these with them at start (`daemon`).

use std::sync::Arc;
use std::time::Duration;

use super::store::{Area, now_ms};
use super::worker::Intake;
use crate::metrics::{QueueProbe, QueueStats};

/// The spool as the metrics see it.
pub struct Probe {
    intake: Intake,
}

impl Probe {
    pub fn new(intake: Intake) -> Arc<Probe> {
        Arc::new(Probe { intake })
    }

    /// Readiness `spool`: the folder answers and the free space is above the floor the
    /// relay refuses new messages at.
    pub fn writable(&self, min_free_bytes: u64) -> Result<(), String> {
        let store = self.intake.store();
        match store.free_bytes() {
            Ok(free) if free >= min_free_bytes => Ok(()),
            Ok(free) => Err(format!(
                "{}: {free} bytes free, below the floor of {min_free_bytes}",
                store.root().display()
            )),
            Err(e) => Err(format!("{}: {e}", store.root().display())),
        }
    }

    /// Readiness `upstream`: the queue is not paused by an account-level SES answer.
    pub fn not_paused(&self) -> Result<(), String> {
        if self.intake.paused() {
            Err("the spool is paused: SES refuses the account (see the log)".into())
        } else {
            Ok(())
        }
    }
}

impl QueueProbe for Probe {
    fn queue(&self) -> QueueStats {
        let store = self.intake.store();
        let now = now_ms();
        let mut stats = QueueStats::default();
        for area in [Area::Queue, Area::Active] {
            for id in store.list(area).unwrap_or_default() {
                stats.messages += 1;
                if let Ok(meta) = store.meta(area, &id) {
                    let age = Duration::from_millis(now.saturating_sub(meta.created_ms));
                    stats.oldest = Some(stats.oldest.map_or(age, |o| o.max(age)));
                }
            }
        }
        stats
    }
}
