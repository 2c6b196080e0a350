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
//! Long-lived state ([`Relay`]: the upstream pool and the bytes-in-flight budget) outlives
//! reloads; settings do not.

pub mod observe;
pub mod pipeline;
pub mod protocol;
pub mod settings;

pub use pipeline::{ClientInfo, Relay};
pub use settings::Settings;
