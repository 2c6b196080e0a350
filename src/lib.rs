//! dkim-relay: an outbound DKIM-signing SMTP relay for Amazon SES.
//!
//! # Layout
//!
//! Data flows one way, one buffer per message: client bytes → [`server`] (the shell: limits,
//! TLS, timeouts, CRLF-strict DATA under the [`budget`]) → [`relay::protocol`] →
//! [`smtp::session`] (with the [`relay::Settings`] in force at accept) → at end of DATA
//! [`relay::pipeline`]: [`message`] (header fields as spans of the DATA buffer, From → signing
//! domain, SES header policy, envelope rewrite) → [`dkim::signer`] (over slices of the buffer)
//! → [`upstream`] (pooled, verified TLS, AUTH, dot-stuffed on the fly) → the upstream's reply →
//! client.
//!
//! Four layers, imports pointing down only (checked by `tests/it/layering.rs`):
//!
//! - **assembly** — [`cli`]: the subcommands, thin (load, start, wait for signals, print;
//!   [`cli::outbox`] prints the simulator's outbox). [`daemon`]: the composition root; starts a
//!   relay (the `require_published` gate, the embedded simulator resolved once, listeners, live
//!   configuration, watcher) or the standalone simulator and returns its addresses and a handle
//!   to reload and stop it. [`config`]: TOML → validated `Snapshot`, one file per section under
//!   `validate/`, every default in [`config::defaults`]; [`config::assemble`] builds each
//!   service's own settings; [`config::reload`] swaps atomically and refuses restart-only
//!   changes ([`config::restart`]); [`config::rotation`] (`require_published`);
//!   [`config::watch`] (every file the configuration read).
//! - **services** — [`server`]: the one SMTP server shell (listeners, connection limits,
//!   STARTTLS, timeouts, pregreet, pipelining, DATA, drain) that every protocol runs on.
//!   [`relay`]: the relay's protocol, its per-message pipeline and its settings.
//!   [`upstream`]: the SES client — TLS + AUTH, the pool that grows with demand
//!   ([`upstream::pool`]), pacing to the account's send rate ([`upstream::pace`]),
//!   [`upstream::framing`] (dot-stuffing on the fly), [`upstream::settings`]. [`sim`]: the SES SMTP simulator — its protocol on the
//!   shell, SES's rules and rewrites, the outbox, the DKIM/SPF/DMARC verdict
//!   ([`sim::verdict`]), the embedded mode ([`sim::embedded`]), the web page and
//!   Mailpit-compatible API over the outbox ([`sim::http`]), the feedback SES would send
//!   ([`sim::feedback`]), live faults ([`sim::fault`]) and
//!   the recorder of what it saw ([`sim::record`]). [`doctor`]: checks of the
//!   published DNS records and their printing; [`doctor::published`]: the key-record check the
//!   running relay repeats for `dkim_relay_key_dns_match`; [`doctor::ses`]: the SES API's view (identity,
//!   MAIL FROM, account), SigV4-signed. [`spool`]: the durable queue (commit with
//!   fsync and a checksummed marker, retry schedule, background delivery that pauses on
//!   account-level SES answers, dead-letter); [`upstream::reply_class`] says what each SES
//!   answer affects. [`dmarc_report`]: receivers' DMARC aggregate
//!   reports read (XML, gzip, zip, email) and explained in this setup's terms
//!   ([`dmarc_report::analysis`]); `cli::dmarc_report` prints them. [`http`]: the operator's endpoint
//!   (`/metrics`, `/livez`, `/readyz`).
//! - **core** (sans-IO) — [`smtp`]: framing ([`smtp::codec`]), commands with typed errors,
//!   replies, the relay's session state machine, the SASL PLAIN/LOGIN steps ([`smtp::sasl`])
//!   and the envelope. [`message`]: the header section as spans, header From (the strict,
//!   unambiguous reading: [`message::address`]), tenant binding ([`message::tenant`]), the SES
//!   header policy, the envelope rewrite, and escaping for terminals and logs
//!   ([`message::printable`]). [`dkim`]: the signing domain and its header policy
//!   ([`dkim::domain`]: the signed-header defaults live there), keys read once
//!   ([`dkim::private_key`]), key generation, the signer with its own canonicalization
//!   ([`dkim::canon`]), the independent verifier ([`dkim::verify`], no code shared with the
//!   signer's canonicalization) and the self-check before hand-off ([`dkim::self_check`]).
//!   [`dns`]: records and their formats, DNS look-ups ([`dns::lookup`]), the in-memory view,
//!   the DKIM-record rule.
//! - **leaves** — [`allow_list`]: the client allow-list (`allow_networks`) and loopback;
//!   [`budget`]: the bytes-in-flight budget; [`domain_name`]: the one domain normaliser and
//!   parent walk; [`regular_file`]: reading a named file safely (regular, bounded, not
//!   world-writable); [`secret`]: masked secrets; [`ses_password`]: SES SMTP password derivation;
//!   [`tls`]: certificates and server TLS; [`users`]: submission users and their domains;
//!   [`metrics`]: the typed Prometheus handles, passed down from the composition root, label
//!   values only from closed enums or the configuration; [`health`]: readiness checks any
//!   component registers.

pub mod allow_list;
pub mod budget;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dkim;
pub mod dmarc_report;
pub mod dns;
pub mod doctor;
pub mod domain_name;
pub mod health;
pub mod http;
pub mod message;
pub mod metrics;

pub mod regular_file;
pub mod relay;
pub mod secret;
pub mod server;
pub mod ses_password;
pub mod sim;
pub mod smtp;
pub mod spool;
pub mod tls;
pub mod upstream;
pub mod users;
