//! dkim-relay: an outbound DKIM-signing SMTP relay for Amazon SES.
//!
//! # Layout
//!
//! Data flows one way: client bytes → [`server::connection`] → [`smtp::codec`] →
//! [`smtp::session`] (with the [`relay::Settings`] in force at accept) → at end of DATA
//! [`relay`]: [`message`] (header From → domain, SES header policy, envelope rewrite) →
//! [`dkim::signer`] → [`upstream`] (pooled, verified TLS, AUTH) → the upstream's reply → client.
//!
//! Layers, imports pointing down only (checked by `tests/layering.rs`):
//!
//! - assembly: [`cli`] — the subcommands (thin: load, start, wait for signals);
//!   [`daemon`] — the composition root: starts a relay (embedded simulator resolved once,
//!   listeners, live configuration, watcher) or the standalone simulator, and returns its
//!   addresses and a handle to reload and stop it; [`config`] — TOML → validated `Snapshot`
//!   that builds each module's own settings type ([`config::assemble`] builds
//!   [`relay::Settings`]); atomic reload that refuses restart-only changes and publishes the
//!   relay's new settings; the watcher; every default in [`config::defaults`].
//! - services: [`server`] — listener (limits, graceful shutdown) and the connection driver
//!   (timeouts); [`relay`] — the pipeline for one message, the relay protocol on the shell, and
//!   its own settings ([`relay::settings`]: shell settings, session rules, domains, upstream)
//!   read through a watch channel a reload swaps; [`upstream`] — TLS + AUTH SMTP
//!   client and pool, its settings in [`upstream::settings`], DATA dot-stuffed on the fly in
//!   [`upstream::framing`]; [`sim`] — the SES SMTP simulator:
//!   SES rules and rewrites, outbox, DKIM/SPF/DMARC verdicts; [`doctor`] — DNS diagnosis.
//! - core: [`smtp`] — sans-IO protocol core: framing, commands, replies, the envelope
//!   ([`smtp::envelope`]), session state; [`message`] — header section, header From, SES header
//!   policy, envelope rules and rewrite; [`dkim`] — keys, key generation, the signer, and the
//!   signing domain with its header policy and the From-domain lookup ([`dkim::domain`]: the
//!   signed-header defaults live there); [`dns`] — records a sending domain publishes,
//!   zone/Route 53/JSON formats.
//! - leaves: [`secret`] — masked secrets; [`domain_name`] — the one domain normaliser and
//!   parent walk; [`allow_list`] — client networks (the `allow_networks` allow-list) and loopback;
//!   [`users`] — submission users and their domains; [`ses_password`] — SES SMTP password
//!   derivation; [`tls`] — certificates and server TLS; [`budget`] — the process-wide
//!   bytes-in-flight budget.

pub mod allow_list;
pub mod budget;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dkim;
pub mod dns;
pub mod doctor;
pub mod domain_name;
pub mod message;

pub mod relay;
pub mod secret;
pub mod server;
pub mod ses_password;
pub mod sim;
pub mod smtp;
pub mod tls;
pub mod upstream;
pub mod users;
