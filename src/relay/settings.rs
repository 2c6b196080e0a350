//! The relay's own settings: everything a relay connection and the message pipeline read,
//! and nothing else. `config` BUILDS them (`config::assemble::relay_settings`); the relay never
//! sees the configuration file's shape, so `relay` does not import `config`.
//!
//! Invariants: [`Settings`] is immutable and shared as `Arc<Settings>`. The relay reads the
//! settings in force through a [`Current`] (a `tokio::sync::watch` receiver) that a reload
//! swaps atomically; a connection takes one `Arc` at accept and keeps it until it closes, so a
//! transaction never sees half of an old and half of a new configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::allow_list::Network;
use crate::dkim::domain::{Domain, Domains};
use crate::message::Profile;
use crate::server;
use crate::upstream::settings::{Endpoint, PoolSettings};
use crate::users::User;

/// The settings in force, swapped whole by a reload.
pub type Current = tokio::sync::watch::Receiver<Arc<Settings>>;

/// Everything the relay protocol and pipeline need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server shell's settings (hostname, limits, timeouts, listener TLS).
    pub shell: Arc<server::Settings>,
    /// Per-session rules: who may relay, AUTH, the error budget.
    pub session: SessionRules,
    /// The signing domains (header-From domain → signing entry).
    pub domains: Domains,
    /// Where and how messages go.
    pub upstream: UpstreamSettings,
    /// A signature that fails the self-check before hand-off: refuse (451) or send and log.
    pub self_verify: crate::dkim::self_check::SelfVerify,
    /// Message bytes all connections may hold at once ([`crate::budget`]).
    pub max_bytes_in_flight: usize,
    /// `[spool]`; `None`: pass-through (the upstream's reply goes to the client).
    pub spool: Option<Arc<crate::spool::Settings>>,
}

/// Per-session rules of the relay protocol.
#[derive(Debug, Clone)]
pub struct SessionRules {
    /// Client networks that may relay without AUTH (`allow_networks`).
    pub allow_networks: Vec<Network>,
    /// Submission users; AUTH is offered only when there is one.
    pub users: Vec<User>,
    pub max_recipients: usize,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    /// Offer AUTH without TLS to loopback clients.
    pub auth_plaintext_loopback: bool,
    /// A failed AUTH is answered only after this delay.
    pub auth_failure_delay: Duration,
    /// Failed AUTH attempts per client address per window, over all its connections.
    pub max_auth_failures_per_ip: u32,
}

/// The upstream side of the pipeline.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// SES or generic header policy and envelope rules.
    pub profile: Profile,
    /// Pool size, rotation and timeouts.
    pub pool: PoolSettings,
    /// The endpoint: the remote one, or the embedded simulator's (resolved once when the relay
    /// started it). `None` only when a simulator configuration runs without its simulator,
    /// which the composition root never does: every message then gets a 451.
    pub endpoint: Option<Endpoint>,
}

impl Settings {
    /// The domain entry that signs for a header-From domain ([`Domains::domain_for`]).
    pub fn domain_for(&self, from_domain: &str) -> Option<&Arc<Domain>> {
        self.domains.domain_for(from_domain)
    }

    /// The server's name.
    pub fn hostname(&self) -> &str {
        &self.shell.hostname
    }
}
