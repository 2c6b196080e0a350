//! dkim-relay: an outbound DKIM-signing SMTP relay for Amazon SES.
//!
//! # Layout
//!
//! Data flows one way: client bytes → [`server::connection`] → [`smtp::codec`] →
//! [`smtp::session`] (with the config [`config::Snapshot`] taken at accept) → at end of DATA
//! [`relay`]: [`message`] (header From → domain, SES header policy, envelope rewrite) →
//! [`dkim::signer`] → [`upstream`] (pooled, verified TLS, AUTH) → the upstream's reply → client.
//!
//! - [`smtp`] — sans-IO protocol core: CRLF-strict framing, commands, replies, session state.
//! - [`server`] — listener (limits, graceful shutdown) and the connection driver (timeouts).
//! - [`config`] — TOML → validated, resolved `Snapshot` (keys loaded); atomic reload.
//! - [`message`] — header section, header From, SES header policy, envelope rewrite.
//! - [`dkim`] — keys, key generation, the signer.
//! - [`upstream`] — TLS + AUTH SMTP client and connection pool.
//! - [`relay`] — the pipeline for one message.
//! - [`sim`] — the SES SMTP simulator: SES rules and rewrites, outbox, DKIM/SPF/DMARC verdicts.
//! - [`dns`] — records a sending domain publishes, zone/Route 53/JSON formats.
//! - [`sesauth`] — SES SMTP password derivation; [`tls`] — certificates and server TLS.
//! - [`cli`] — the subcommands (thin).

pub mod budget;
pub mod cli;
pub mod config;
pub mod dkim;
pub mod dns;
pub mod doctor;
pub mod message;
pub mod net;
pub mod relay;
pub mod server;
pub mod sesauth;
pub mod sim;
pub mod smtp;
pub mod tls;
pub mod upstream;
pub mod users;
