//! Server-side TLS for the SES simulator and the relay's own listener: certificate generation (a throwaway CA and a leaf
//! named like the SES endpoint) and rustls configs.
//!
//! SES rule (ses-smtp.md §1, §8.1): the endpoint speaks TLS 1.2 and 1.3 only, and presents a
//! certificate for `email-smtp.<region>.amazonaws.com`. The leaf also names `localhost`,
//! `127.0.0.1` and `::1` so local clients can verify it against the generated CA. The
//! aws-lc-rs provider is always chosen explicitly, never the process default.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("no certificate found in the PEM input")]
    NoCertificate,
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// A fresh CA and a leaf signed by it, all PEM.
#[derive(Clone)]
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// The names the simulator's leaf certificate always carries, plus the region's endpoint.
pub fn default_names(region: &str) -> Vec<String> {
    vec![
        format!("email-smtp.{region}.amazonaws.com"),
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ]
}

/// Generates a self-signed CA and a leaf for `names` (DNS names and IP addresses; IPs become
/// IP SANs). The first DNS name becomes the leaf's CN.
pub fn generate_certs(names: &[String]) -> Result<GeneratedCerts, TlsError> {
    let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = KeyPair::generate().map_err(g)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(g)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dkim-relay SES simulator CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(g)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(g)?;
    let mut leaf_params = CertificateParams::new(names.to_vec()).map_err(g)?;
    let cn = names
        .iter()
        .find(|n| n.parse::<std::net::IpAddr>().is_err())
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    leaf_params.distinguished_name = dn;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(g)?;

    Ok(GeneratedCerts {
        ca_pem: ca_cert.pem(),
        cert_chain_pem: format!("{}{}", leaf.pem(), ca_cert.pem()),
        key_pem: leaf_key.serialize_pem(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates in a PEM file (at least one), for configuration checks.
pub fn certs_in(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs(pem)
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// A TLS 1.2/1.3 server config for the given chain and key.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(cert_chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A client config that trusts only the CA(s) in `ca_pem` (tests, the embedded relay).
pub fn client_config_trusting(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
