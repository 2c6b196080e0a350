//! DNS look-ups for `doctor` and the `require_published` check, behind a small trait so the
//! evaluation can be tested with a static table and run for real against any name server. The
//! resolver's own settings ([`ResolverSettings`], the config's `[dns]` section) live here too.
//!
//! "Does not exist" (NXDOMAIN) and "no record of that type" (NODATA) are both an empty answer:
//! for every check here they mean the same thing, "not published". Only failures to get an
//! answer at all (timeout, SERVFAIL, refused) are errors, so a check can say "could not look
//! up" instead of wrongly saying "missing". Every lookup has an explicit deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::hickory_resolver::{Resolver, TokioResolver};

use super::view::DnsView;
use crate::domain_name::dns_name;

/// `[dns]`, resolved: which name server the look-ups ask, how long each may take, and how often
/// the relay checks its published key records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// `None`: the system resolver configuration.
    pub nameserver: Option<SocketAddr>,
    /// Per lookup.
    pub timeout: Duration,
    /// Between two checks of the published key records against the loaded keys (the
    /// `dkim_relay_key_dns_match` gauges); zero: no check.
    pub check_interval: Duration,
}

/// Why a lookup produced no answer (as opposed to an empty one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// A boxed lookup future (the trait is used as `dyn Lookup`).
pub type LookupFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LookupError>> + Send + 'a>>;

/// Async TXT and MX lookups. Names are absolute, without the trailing dot.
pub trait Lookup: Send + Sync {
    /// Every TXT record at `name`, each one's character-strings joined.
    fn txt<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Vec<String>>;
    /// Every MX record at `name`: (preference, exchange without the trailing dot, lowercase).
    fn mx<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Vec<(u16, String)>>;
}

/// Lookups through hickory-resolver: one name server over UDP and TCP, or the system's
/// resolv.conf. No cache, so a record published a moment ago is seen.
pub struct HickoryLookup {
    resolver: TokioResolver,
    timeout: Duration,
}

impl HickoryLookup {
    /// A resolver for `settings`: its `nameserver` (UDP, then TCP for truncated answers) or the
    /// system configuration.
    pub fn new(settings: &ResolverSettings) -> Result<HickoryLookup, LookupError> {
        Self::with(settings.nameserver, settings.timeout)
    }

    pub fn with(
        nameserver: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<HickoryLookup, LookupError> {
        let mut builder = match nameserver {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                ns.connections = vec![udp, tcp];
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| {
                LookupError(format!(
                    "cannot read the system resolver configuration: {e}"
                ))
            })?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.cache_size = 0;
        opts.ndots = 0;
        opts.recursion_desired = true;
        let resolver = builder
            .build()
            .map_err(|e| LookupError(format!("cannot build the resolver: {e}")))?;
        Ok(HickoryLookup { resolver, timeout })
    }

    /// The whole lookup's deadline: every attempt, plus slack.
    fn deadline(&self) -> Duration {
        self.timeout * 3 + Duration::from_secs(1)
    }

    async fn records(
        &self,
        name: &str,
        rtype: &'static str,
        fut: impl Future<
            Output = Result<
                mail_auth::hickory_resolver::lookup::Lookup,
                mail_auth::hickory_resolver::net::NetError,
            >,
        >,
    ) -> Result<Vec<RData>, LookupError> {
        match tokio::time::timeout(self.deadline(), fut).await {
            Err(_) => Err(LookupError(format!("{rtype} {name}: timed out"))),
            Ok(Err(e)) if e.is_no_records_found() => Ok(Vec::new()),
            Ok(Err(e)) => Err(LookupError(format!("{rtype} {name}: {e}"))),
            Ok(Ok(lookup)) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
        }
    }
}

impl Lookup for HickoryLookup {
    fn txt<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Vec<String>> {
        Box::pin(async move {
            let fqdn = format!("{}.", dns_name(name));
            let data = self
                .records(name, "TXT", self.resolver.txt_lookup(fqdn))
                .await?;
            Ok(data
                .into_iter()
                .filter_map(|d| match d {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }

    fn mx<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Vec<(u16, String)>> {
        Box::pin(async move {
            let fqdn = format!("{}.", dns_name(name));
            let data = self
                .records(name, "MX", self.resolver.mx_lookup(fqdn))
                .await?;
            Ok(data
                .into_iter()
                .filter_map(|d| match d {
                    RData::MX(m) => Some((m.preference, dns_name(&m.exchange.to_ascii()))),
                    _ => None,
                })
                .collect())
        })
    }
}

/// A fixed table of records (the simulator's [`DnsView`]) with failure injection: for tests,
/// and to check records before publishing them.
#[derive(Debug, Clone, Default)]
pub struct StaticLookup {
    view: DnsView,
    failing: Vec<String>,
}

impl StaticLookup {
    pub fn new() -> Self {
        Self::default()
    }

    /// The records a domain would serve after publishing `records`.
    pub fn from_records(records: &[super::Record]) -> Self {
        StaticLookup {
            view: DnsView::from_records(records),
            failing: Vec::new(),
        }
    }

    pub fn add_txt(&mut self, name: &str, value: &str) {
        self.view.add_txt(name, value);
    }

    pub fn add_mx(&mut self, name: &str, preference: u16, exchange: &str) {
        self.view.add_mx(name, preference, exchange);
    }

    /// Removes every record at `name`.
    pub fn remove(&mut self, name: &str) {
        self.view.remove(name);
    }

    /// Lookups of `name` fail (as a timeout would).
    pub fn fail(&mut self, name: &str) {
        self.failing.push(dns_name(name));
    }

    fn check(&self, name: &str) -> Result<(), LookupError> {
        if self.failing.contains(&dns_name(name)) {
            Err(LookupError(format!("{name}: timed out")))
        } else {
            Ok(())
        }
    }
}

impl Lookup for StaticLookup {
    fn txt<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Vec<String>> {
        let r = self.check(name).map(|_| self.view.txt(name).to_vec());
        Box::pin(async move { r })
    }

    fn mx<'a>(&'a self, name: &'a str) -> LookupFuture<'a, Vec<(u16, String)>> {
        let r = self.check(name).map(|_| self.view.mx(name).to_vec());
        Box::pin(async move { r })
    }
}

/// A lookup that never answers: used where DNS cannot be consulted (a synchronous reload), so
/// a `require_published` check fails safe and keeps the previous selector.
pub struct NoLookup(pub &'static str);

impl Lookup for NoLookup {
    fn txt<'a>(&'a self, _name: &'a str) -> LookupFuture<'a, Vec<String>> {
        let why = self.0;
        Box::pin(async move { Err(LookupError(why.to_string())) })
    }
    fn mx<'a>(&'a self, _name: &'a str) -> LookupFuture<'a, Vec<(u16, String)>> {
        let why = self.0;
        Box::pin(async move { Err(LookupError(why.to_string())) })
    }
}
