//! The integration tests: one test binary, one module per area, one shared kit in [`support`].
//!
//! Why one binary: each file under `tests/` is linked as its own executable; a dozen of them
//! cost more link time than their tests take to run. Here they share one build, one
//! process-wide log capture and one set of generated keys.
//!
//! - [`support`] — the kit: test PKI, the relay in-process, the SES simulator as upstream ([`support::upstream`]), the
//!   independent DKIM verifiers (mail-auth and dkimpy), log capture; [`support::client`] is the
//!   one SMTP client (relay and simulator tests alike); [`support::sim`] drives the SES
//!   simulator; [`support::dns_server`] is an authoritative DNS server on 127.0.0.1 for
//!   `doctor` and `require_published`.
//! - one module per area: `cli`, `dkim_differential` (signer vs. independent
//!   verifiers), `dkim_relay` (issue 9 signing through sockets), `dmarc_report`, `doctor`, `doctor_ses` (`doctor --ses`
//!   against a fake SES API v2), `from_policy` (issue 9: From,
//!   oversigning, escaping; the differential suite against Python), `hardening`, `hardening2`
//!   and `hardening_config` (issue 13), `keygen_dns`, `layering` (reads `src/`: imports point
//!   down), `metrics` (`/metrics`, `/livez`, `/readyz`, JSON logs), `pacing`, `parsers_proptest`, `pool`, `relay_e2e`, `relay_sim`, `reload`,
//!   `sim_dkim`, `sim_http` (the simulator's web UI and Mailpit API),
//!   `sim_interop`, `sim_smtp`, `spool` (the durable queue against the simulator),
//!   `spool_crash` (`kill -9` of the relay binary during a stream), `tenant` (issue 9: tenant
//!   binding).

mod support;

mod cli;
mod dkim_differential;
mod dkim_relay;
mod dmarc_report;
mod doctor;
mod doctor_ses;
mod from_policy;
mod hardening;
mod hardening2;
mod hardening_config;
mod keygen_dns;
mod layering;
mod metrics;
mod pacing;
mod parsers_proptest;
mod pool;
mod relay_e2e;
mod relay_sim;
mod reload;
mod sim_dkim;
mod sim_http;
mod sim_interop;
mod sim_smtp;
mod spool;
mod spool_crash;
mod tenant;
