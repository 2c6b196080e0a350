//! The upstream: the SES SMTP endpoint (or any smarthost), reached over verified TLS with
//! SMTP credentials, through a pool of reused connections that grows with demand up to
//! `pool_size` and shrinks when idle, paced to the account's send rate ([`pace`]).
//!
//! SES closes idle connections after about 10 s and caps messages per connection, so pooled
//! connections are closed after `idle_close` and rotated after `max_messages_per_connection` or
//! `max_connection_age`. A pooled connection that turns out dead before the upstream accepted
//! anything is replaced once by a fresh one; a failure after the final dot is never retried
//! (the upstream may have accepted the message: a retry could send it twice).

pub mod client;
pub mod framing;
pub mod pace;
pub mod pool;
pub mod reply_class;
pub mod settings;

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::smtp::reply::Reply;
pub use client::UpstreamError;
pub use pool::Pool;
pub use settings::{Endpoint, PoolSettings, SendRate, TlsMode};

/// What the upstream's answer means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Accepted,
    Temporary,
    Permanent,
}

impl Disposition {
    pub fn of(reply: &Reply) -> Disposition {
        match reply.code {
            200..=399 => Disposition::Accepted,
            400..=499 => Disposition::Temporary,
            _ => Disposition::Permanent,
        }
    }
}

/// The SES message id from `250 Ok <id>`, if the reply carries one.
pub fn ses_message_id(reply: &Reply) -> Option<String> {
    if reply.code != 250 {
        return None;
    }
    let line = reply.lines.last()?;
    let id = line.strip_prefix("Ok ")?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then(|| id.to_string())
}

/// TLS client settings: the webpki roots plus the configured extra CA; TLS 1.2 or newer;
/// host names always checked (rustls does not allow otherwise without a custom verifier).
pub fn tls_client_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("bad certificate in ca_file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable certificate in ca_file: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("ca_file holds no PEM certificate".into());
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_id_extraction() {
        let r = Reply::plain(
            250,
            "Ok 0100018774e741e0-d9003bcc-b0da-4d40-ad56-fc380b85e09b-000000",
        );
        assert_eq!(
            ses_message_id(&r).as_deref(),
            Some("0100018774e741e0-d9003bcc-b0da-4d40-ad56-fc380b85e09b-000000")
        );
        assert_eq!(ses_message_id(&Reply::plain(250, "Ok")), None);
        assert_eq!(ses_message_id(&Reply::plain(554, "Ok x")), None);
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            Disposition::of(&Reply::plain(250, "Ok")),
            Disposition::Accepted
        );
        assert_eq!(
            Disposition::of(&Reply::plain(454, "x")),
            Disposition::Temporary
        );
        assert_eq!(
            Disposition::of(&Reply::plain(554, "x")),
            Disposition::Permanent
        );
    }
}
