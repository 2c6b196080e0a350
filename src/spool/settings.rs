//! The spool's own settings (`[spool]`), built by `config` (`config::assemble`); the spool never
//! reads the configuration file.
//!
//! `dir` is fixed when the relay starts (a reload that moves it is refused: the worker and the
//! queued files live there); everything else may change on reload, and each message is handled
//! with the settings its connection was accepted with.

use std::path::PathBuf;
use std::time::Duration;

/// When a message goes to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver at once; spool only what SES defers (4xx, account-level answers, no answer).
    OnDefer,
    /// Commit first, answer `250 … queued as <id>`, deliver in the background.
    Always,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::OnDefer => "on-defer",
            Mode::Always => "always",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub dir: PathBuf,
    pub mode: Mode,
    /// Refuse to commit (`452 4.3.1`) when the file system has less free space than this.
    pub min_free_bytes: u64,
    /// The first retry delay; it doubles per attempt up to `retry_max` (with jitter).
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Past this age a message that still fails moves to the dead-letter folder.
    pub max_age: Duration,
    /// While the queue is paused (credentials refused, account paused, daily quota) one
    /// message is tried this often to see whether SES takes mail again.
    pub pause_probe: Duration,
}
