//! The `--ses` part of `dkim-relay doctor`: resolves the SES API region, endpoint and AWS
//! credentials, and runs [`crate::doctor::ses::diagnose`].
//!
//! Region: the one the upstream endpoint names (`email-smtp.REGION.amazonaws.com`), since SES
//! identities and quotas are per region and the relay sends there; otherwise `AWS_REGION`;
//! otherwise the simulator's region (or us-east-1). Problems before any request (no
//! credentials, a bad `--ses-endpoint`) are FAIL lines like every other check, so the output
//! and the exit code keep one shape; no secret is ever printed.

use std::path::PathBuf;

use crate::config;
use crate::doctor::Check;
use crate::doctor::ses::{Credentials, SesClient, SesEndpoint};

/// The SES API region for this configuration (see the module doc).
pub fn ses_region(snapshot: &config::Snapshot) -> String {
    if let config::UpstreamTarget::Remote(e) = &snapshot.upstream.target
        && let Some(region) = crate::dns::region_from_host(&e.host)
    {
        return region;
    }
    std::env::var("AWS_REGION")
        .ok()
        .filter(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        .unwrap_or_else(|| super::region_of(snapshot))
}

fn failure(subject: &str, message: String, fix: &str) -> Check {
    Check {
        status: crate::doctor::Status::Fail,
        subject: subject.to_string(),
        message,
        fix: Some(fix.to_string()),
    }
}

/// What `doctor --ses` was asked: `--ses-endpoint`, `--ses-ca-file`.
#[derive(Debug, Clone, Default)]
pub struct SesRequest {
    /// The SES API endpoint instead of `https://email.REGION.amazonaws.com`.
    pub endpoint: Option<String>,
    /// A PEM file of CA certificates trusted beside the webpki roots.
    pub ca_file: Option<PathBuf>,
}

/// Every SES check for `snapshot`, asking `--ses-endpoint` or SES in the region.
pub async fn checks(snapshot: &config::Snapshot, request: &SesRequest) -> Vec<Check> {
    let region = ses_region(snapshot);
    let ca_pem = match &request.ca_file {
        None => None,
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                return vec![failure(
                    "SES endpoint",
                    format!("--ses-ca-file {}: {e}", path.display()),
                    "give a readable PEM file of CA certificates",
                )];
            }
        },
    };
    let endpoint = match request.endpoint.as_deref() {
        None => SesEndpoint::for_region(&region),
        Some(url) => match SesEndpoint::parse(url, &region) {
            Ok(e) => e,
            Err(e) => {
                return vec![failure(
                    "SES endpoint",
                    e,
                    "give --ses-endpoint https://HOST[:PORT] (http:// only to 127.0.0.1)",
                )];
            }
        },
    };
    let credentials = match Credentials::from_environment() {
        Ok(c) => c,
        Err(e) => {
            return vec![failure(
                "SES credentials",
                e.to_string(),
                "give doctor read access to SES (ses:GetEmailIdentity, ses:GetAccount) with the \
                 usual AWS variables or profile; the relay's SMTP credentials cannot call the API",
            )];
        }
    };
    let source = credentials.source.clone();
    let client = match SesClient::new(endpoint, credentials, ca_pem.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            return vec![failure(
                "SES endpoint",
                format!("TLS client settings: {e}"),
                "check --ses-ca-file (PEM CA certificates)",
            )];
        }
    };
    let mut out = vec![Check {
        status: crate::doctor::Status::Pass,
        subject: "SES credentials".to_string(),
        message: format!("from {source}, region {region}"),
        fix: None,
    }];
    // `[upstream] max_send_rate` is compared when the configuration has one.
    let ours = snapshot.upstream.pool.max_send_rate.map(|r| r.0);
    out.extend(crate::doctor::ses::diagnose(&snapshot.domains, &client, ours).await);
    out
}
