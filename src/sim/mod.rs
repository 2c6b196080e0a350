//! The built-in SES SMTP simulator (staging and tests): SES's dialogue, end-of-data rules,
//! header rewrites and an outbox with DKIM/SPF/DMARC verdicts (ses-smtp.md §8).
//!
//! - [`config`]: settings (one SES account in one region), TOML `[simulator]` / standalone file;
//! - [`session`]: sans-IO SMTP state machine (banner, EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA);
//! - [`rules`]: the end-of-data checks in SES's order, rate/quota state and fault injection;
//! - [`fault`]: the live fault handle (what SES does next, changed while running);
//! - [`record`]: the recorder of connections, commands and messages as received (tests, UI);
//! - [`deliver`]: the delivered form (SES header rewrites, `d=amazonses.com` signature);
//! - [`outbox`]: `<id>.eml` + `<id>.json` per accepted message, listing and formatting;
//! - `connection`: one connection on the shell (session, faults, recorder, end-of-data pipeline);
//! - [`feedback`]: the bounce (RFC 3464), complaint (RFC 5965) and auto-reply notifications SES
//!   would send to the MAIL FROM for mailbox-simulator recipients, stored in the outbox;
//! - [`http`]: the web UI and the Mailpit-compatible API over the outbox (`http_listen`);
//! - [`server`]: the simulator as a protocol of the shared server shell (`crate::server`);
//!   `start`, `start_embedded` (the standalone start is `daemon::start_simulator`).

pub mod config;
mod connection;
pub mod deliver;
pub mod embedded;
pub mod fault;
pub mod feedback;
pub mod http;
pub mod outbox;
pub mod record;
pub mod rules;
pub mod server;
pub mod session;
pub mod verdict;

pub use server::{
    EmbeddedCredentials, EmbeddedDomain, RunningSim, SimError, start, start_embedded,
};
