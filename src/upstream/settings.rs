//! The upstream's own settings: where to connect ([`Endpoint`], [`TlsMode`]) and how the pool
//! and the client behave ([`PoolSettings`]: sizes, rotation, every network timeout).
//!
//! `config` validates `[upstream]` and builds these; the upstream module never reads the
//! configuration itself. Every network wait has an explicit timeout here: library defaults are
//! not policy. The embedded simulator is not a target here: the relay resolves it to an
//! [`Endpoint`] once, when it starts.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::SecretEq;

/// How TLS starts on the upstream connection (SES offers both on different ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    StartTls,
    Implicit,
}

/// A concrete SMTP endpoint with its credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// PEM bytes of extra trust anchors (read at load time, so a reload sees file changes).
    pub extra_ca_pem: Option<Vec<u8>>,
    pub username: String,
    pub password: SecretEq,
}

/// Pool size, connection rotation (SES closes idle connections after about 10 s), pacing and
/// the client's timeouts. Equal settings and an equal endpoint let a reload keep the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub pool_size: usize,
    pub max_messages_per_connection: u32,
    pub max_connection_age: Duration,
    pub idle_close: Duration,
    pub connect_timeout: Duration,
    pub tls_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// The account's maximum send rate (recipients per second, as SES counts); `None`: unpaced.
    pub max_send_rate: Option<SendRate>,
    /// How long a pass-through message may wait for its turn upstream (the send rate, a free
    /// connection) before the client gets a temporary refusal.
    pub max_wait: Duration,
}

/// A send rate in recipients per second: finite and at least 1 (config checks that).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendRate(pub f64);

// Validated rates are finite, so bitwise equality is equality (a reload compares settings).
impl Eq for SendRate {}
