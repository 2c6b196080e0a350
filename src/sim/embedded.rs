//! The embedded simulator as the relay's upstream (`[upstream] simulator = true`): every
//! configured domain becomes a verified identity with its custom MAIL FROM domain, the DNS view
//! is built from the relay's own keys and records, and the relay reaches it exactly as it
//! reaches SES — TCP, STARTTLS against a fresh CA, AUTH with a fresh account.

use crate::dkim::domain::{Domain, Domains};
use crate::dns::SelectorInfo;
use crate::secret::{Secret, SecretEq};
use crate::upstream::settings::{Endpoint, TlsMode};

/// Starts the SES simulator in-process on loopback with a fresh CA and account, and returns
/// the endpoint the relay then uses exactly as it would use SES: TCP, STARTTLS, AUTH.
pub async fn start(
    settings: &crate::sim::config::SimSettings,
    domains: &Domains,
) -> Result<(Endpoint, super::RunningSim), String> {
    let domains: Vec<super::EmbeddedDomain> = domains
        .values()
        .map(|d| super::EmbeddedDomain {
            name: d.name.clone(),
            mail_from: d.envelope.mail_from.clone(),
            selectors: selector_infos(d),
            dmarc: d.dmarc.clone(),
        })
        .collect();
    let (sim, creds) = super::start_embedded(settings.clone(), &domains)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        starttls = %sim.starttls_addr,
        region = %sim.region,
        outbox = %sim.outbox.display(),
        "embedded SES simulator running (read the verdicts with `dkim-relay outbox list`)"
    );
    let endpoint = Endpoint {
        host: sim.starttls_addr.ip().to_string(),
        port: sim.starttls_addr.port(),
        tls: TlsMode::StartTls,
        ca_file: None,
        extra_ca_pem: Some(sim.ca_pem.clone().into_bytes()),
        username: creds.username.clone(),
        password: SecretEq(Secret::new(creds.password.clone())),
    };
    Ok((endpoint, sim))
}

/// Every configured selector of `domain` as the DNS module describes it (for `dns`, the
/// simulator's DNS view). Here rather than in `dkim` because `dns` already depends on `dkim`;
/// its natural home is `dns` (a `SelectorInfo` constructor) once that module is split.
pub fn selector_infos(domain: &Domain) -> Vec<SelectorInfo> {
    domain
        .selectors
        .values()
        .map(|k| SelectorInfo {
            selector: k.selector.clone(),
            algorithm: k.algorithm,
            public_key: k.public_key.clone(),
            active: domain.is_active(&k.selector),
        })
        .collect()
}
