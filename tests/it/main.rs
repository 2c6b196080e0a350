//! The integration tests: one test binary, one module per area, one shared kit in [`support`].
//!
//! Why one binary: each file under `tests/` is linked as its own executable; a dozen of them
//! cost more link time than their tests take to run. Here they share one build, one
//! process-wide log capture and one set of generated keys.
//!
//! - [`support`] — the kit: test PKI, the relay in-process, the scripted upstream, the
//!   independent DKIM verifiers (mail-auth and dkimpy), log capture; [`support::client`] is the
//!   one SMTP client (relay and simulator tests alike); [`support::sim`] drives the SES
//!   simulator; [`support::dns_server`] is an authoritative DNS server on 127.0.0.1 for
//!   `doctor` and `require_published`.
//! - one module per area: `cli`, `doctor`, `hardening`, `keygen_dns`, `layering` (reads
//!   `src/`: imports point down), `parsers_proptest`, `relay_e2e`, `relay_sim`, `reload`,
//!   `sim_dkim`, `sim_interop`, `sim_smtp`.
//! - `doctor_ses`: `doctor --ses` against a fake SES API v2 (plain HTTP and HTTPS).

mod support;

mod cli;
mod doctor;
mod doctor_ses;
mod hardening;
mod keygen_dns;
mod layering;
mod parsers_proptest;
mod relay_e2e;
mod relay_sim;
mod reload;
mod sim_dkim;
mod sim_interop;
mod sim_smtp;
