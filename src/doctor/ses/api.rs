//! A small SES API v2 client for doctor: the endpoint, and two SigV4-signed GETs
//! (`GetEmailIdentity`, `GetAccount`) with [`Credentials`] from [`super::credentials`], whose
//! secrets go only into `aws-sigv4` and never into an error or a log line.
//!
//! Signing is `aws-sigv4` (AWS's own implementation, service `ses`); transport is hyper's
//! HTTP/1.1 client over tokio-rustls with the webpki roots. The endpoint is
//! `https://email.REGION.amazonaws.com`; `--ses-endpoint` overrides it for staging and tests,
//! and plain `http://` is accepted only for a loopback host, so credentials-signed requests never
//! cross a network in clear.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::credentials::Credentials;
use super::{Account, EmailIdentity};

/// Where the SES API is: scheme, host, port, and the signing region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SesEndpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub region: String,
}

impl SesEndpoint {
    /// `https://email.REGION.amazonaws.com`.
    pub fn for_region(region: &str) -> SesEndpoint {
        SesEndpoint {
            https: true,
            host: format!("email.{region}.amazonaws.com"),
            port: 443,
            region: region.to_string(),
        }
    }

    /// `--ses-endpoint URL`: `https://HOST[:PORT]`, or `http://` to a loopback host only.
    pub fn parse(url: &str, region: &str) -> Result<SesEndpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("--ses-endpoint {url:?}: not a URL ({e})"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("--ses-endpoint {url:?}: must start with https://")),
        };
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(format!("--ses-endpoint {url:?}: no host"));
        };
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(format!(
                "--ses-endpoint {url:?}: give the endpoint only (scheme, host, port), no path"
            ));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !https && !loopback {
            return Err(format!(
                "--ses-endpoint {url:?}: plain http is allowed only to a loopback address \
                 (signed requests must not cross a network in clear); use https://"
            ));
        }
        Ok(SesEndpoint {
            https,
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            region: region.to_string(),
        })
    }

    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// Why a request got no usable answer. `Display` carries SES's error type and message (no
/// secrets: SES never echoes them).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("no answer from {endpoint} within {secs} s")]
    Timeout { endpoint: String, secs: u64 },
    #[error("SES answered {status} {kind}: {message}")]
    Status {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("SES's answer does not parse: {0}")]
    Decode(String),
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

impl ApiError {
    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            ApiError::Status { status: 403, .. } | ApiError::Status { status: 401, .. } => {
                "check the credentials (which key, whether it is active, the session token) and \
                 that the IAM policy allows ses:GetEmailIdentity and ses:GetAccount"
                    .to_string()
            }
            ApiError::Status { status: 429, .. } => "retry in a minute".to_string(),
            ApiError::Connect { .. } | ApiError::Timeout { .. } => {
                "check network access to the SES API endpoint (or --ses-endpoint)".to_string()
            }
            _ => "retry; if it persists, compare with `aws sesv2` output".to_string(),
        }
    }
}

/// The timeout of one request (connect, TLS, request, body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A signed-request client for one endpoint and one set of credentials.
pub struct SesClient {
    endpoint: SesEndpoint,
    credentials: Credentials,
    tls: Arc<rustls::ClientConfig>,
}

impl SesClient {
    /// `extra_ca_pem`: CA certificates trusted beside the webpki roots (`--ses-ca-file`, for a
    /// staging endpoint behind a private CA).
    pub fn new(
        endpoint: SesEndpoint,
        credentials: Credentials,
        extra_ca_pem: Option<&[u8]>,
    ) -> Result<SesClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = extra_ca_pem {
            for cert in crate::tls::certs_in(pem).map_err(|e| e.to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(SesClient {
            endpoint,
            credentials,
            tls: Arc::new(tls),
        })
    }

    pub fn region(&self) -> &str {
        &self.endpoint.region
    }

    /// `GET /v2/email/identities/{domain}`; `None` on 404 (NotFoundException).
    pub async fn get_email_identity(
        &self,
        domain: &str,
    ) -> Result<Option<EmailIdentity>, ApiError> {
        let path = format!("/v2/email/identities/{}", path_escape(domain));
        match self.get(&path).await {
            Ok(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| ApiError::Decode(e.to_string())),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/email/account`.
    pub async fn get_account(&self) -> Result<Account, ApiError> {
        let body = self.get("/v2/email/account").await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))
    }

    async fn get(&self, path: &str) -> Result<Bytes, ApiError> {
        let endpoint = format!(
            "{}://{}",
            if self.endpoint.https { "https" } else { "http" },
            self.endpoint.authority()
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, self.get_inner(&endpoint, path)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Timeout {
                endpoint,
                secs: REQUEST_TIMEOUT.as_secs(),
            }),
        }
    }

    async fn get_inner(&self, endpoint: &str, path: &str) -> Result<Bytes, ApiError> {
        let connect_err = |reason: String| ApiError::Connect {
            endpoint: endpoint.to_string(),
            reason,
        };
        let url = format!("{endpoint}{path}");
        let mut request = http::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", self.endpoint.authority())
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("dkim-relay/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| ApiError::Sign(e.to_string()))?;
        self.sign(&url, &mut request)?;

        let tcp = tokio::net::TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let response = if self.endpoint.https {
            let name = rustls_pki_types::ServerName::try_from(self.endpoint.host.clone())
                .map_err(|e| connect_err(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| connect_err(format!("TLS: {e}")))?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
        .map_err(connect_err)?;

        let status = response.status();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_string());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| connect_err(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let field = |k: &str| parsed.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kind = error_type
            .or_else(|| field("__type"))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let message = field("message")
            .or_else(|| field("Message"))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(ApiError::Status {
            status: status.as_u16(),
            kind,
            message,
        })
    }

    /// Adds `x-amz-date`, `x-amz-security-token` (when a session token is set) and
    /// `authorization` (AWS4-HMAC-SHA256, service `ses`).
    fn sign(&self, url: &str, request: &mut http::Request<Empty<Bytes>>) -> Result<(), ApiError> {
        let c = &self.credentials;
        let identity = aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose().to_string(),
            c.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "dkim-relay",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.endpoint.region)
            .name("ses")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ApiError::Sign(e.to_string()))?
            .into();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
        let signable = SignableRequest::new("GET", url, headers, SignableBody::Bytes(&[]))
            .map_err(|e| ApiError::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| ApiError::Sign(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// Sends one request over an established connection.
async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends when the response has been read and the sender dropped.
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Percent-encodes a path segment (domain names need none; anything else is escaped).
fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules() {
        let e = SesEndpoint::parse("http://127.0.0.1:8080", "us-east-1").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", 8080)
        );
        assert_eq!(e.authority(), "127.0.0.1:8080");
        let e = SesEndpoint::parse("https://email.eu-west-1.amazonaws.com", "eu-west-1").unwrap();
        assert_eq!((e.https, e.port), (true, 443));
        assert_eq!(e.authority(), "email.eu-west-1.amazonaws.com");
        assert!(SesEndpoint::parse("http://ses.example.net", "us-east-1").is_err());
        assert!(SesEndpoint::parse("ftp://127.0.0.1", "us-east-1").is_err());
        assert!(SesEndpoint::parse("https://h/v2", "us-east-1").is_err());
        assert_eq!(
            SesEndpoint::for_region("us-west-2").host,
            "email.us-west-2.amazonaws.com"
        );
    }

    #[test]
    fn escapes_path_segments() {
        assert_eq!(path_escape("example.org"), "example.org");
        assert_eq!(path_escape("a b/c@d"), "a%20b%2Fc%40d");
    }
}
