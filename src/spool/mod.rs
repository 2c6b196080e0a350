//! The durable spool: never lose a message that got 250, whatever SES, the network or the
//! process does.
//!
//! - [`store`] — the files: commit (write, fsync, rename, fsync the folder; a checksummed
//!   commit marker so a torn file is detected and never forwarded), claims by rename, the
//!   dead-letter and corrupt folders, recovery after a crash.
//! - [`retry`] — the schedule (sans-IO): exponential backoff with jitter, the maximum age.
//! - [`worker`] — background delivery through the upstream pool; what each SES answer does to
//!   the message and to the queue (pause on account-level refusals, dead-letter message-level
//!   5xx), and the graceful stop.
//! - [`settings`] — `[spool]` as the spool takes it (built by `config`).
//! - [`probe`] — queue size and oldest age for `/metrics`, readiness for `/readyz`.
//!
//! Invariants: a message is in exactly one of `queue/`, `active/`, `dead/`, `corrupt/` (moves
//! are renames); nothing leaves the spool without a log line (delivered with SES's message id,
//! dead-lettered with the last reply, corrupt with the problem, or deleted by the operator);
//! the spool holds signed bytes, so a key rotation never re-signs or strands queued mail.

pub mod probe;
pub mod retry;
pub mod settings;
pub mod store;
pub mod worker;

pub use settings::{Mode, Settings};
pub use store::Store;
pub use worker::{Intake, Pending, Source, Worker};
