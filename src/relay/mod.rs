//! The relay: the service that applications talk to on `127.0.0.1:2525`.
//!
//! - [`protocol`] — the relay's SMTP protocol on the server shell: the sans-IO
//!   [`crate::smtp::session`] per connection, AUTH checked on the blocking pool, the relay's own
//!   wording for the shell's notices, and the hand-off of each accepted message to the pipeline.
//! - [`pipeline`] — one message: header From → signing domain → SES header policy → envelope
//!   rewrite → DKIM signature → upstream (pooled, verified TLS) → the upstream's reply. Fail
//!   closed: a message that cannot be signed gets a 451 and nothing is sent.
//! - [`observe`] — what the relay records in [`crate::metrics`] (one call per step).
//! - [`settings`] — everything the relay reads, built by `config` and swapped whole by a reload
//!   (a connection keeps the settings it was accepted with).
//!
//! Long-lived state ([`Relay`]: the upstream pool, the bytes-in-flight budget, the spool's
//! intake) outlives reloads; settings do not. [`SpoolSource`] lets the spool's worker use the
//! relay's pool and settings in force without the spool importing the relay.

pub mod observe;
pub mod pipeline;
pub mod protocol;
pub mod settings;

pub use pipeline::{ClientInfo, Relay};
pub use settings::Settings;

use std::sync::Arc;

use crate::upstream::pool::Pool;

/// What the spool's worker reads from the running relay: the `[spool]` settings and the
/// upstream pool in force (so a reload applies to queued mail too).
pub struct SpoolSource {
    pub relay: Arc<Relay>,
    pub current: settings::Current,
    /// The settings the relay started with, for the (refused) case of a reload without
    /// `[spool]`.
    pub initial: Arc<crate::spool::Settings>,
}

impl crate::spool::Source for SpoolSource {
    fn settings(&self) -> Arc<crate::spool::Settings> {
        let current = self.current.borrow().spool.clone();
        current.unwrap_or_else(|| Arc::clone(&self.initial))
    }

    fn pool(&self) -> Result<Arc<Pool>, String> {
        let settings = Arc::clone(&self.current.borrow());
        self.relay.pool_for(&settings)
    }

    fn concurrency(&self) -> usize {
        self.current.borrow().upstream.pool.pool_size
    }
}
