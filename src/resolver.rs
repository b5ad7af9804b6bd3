//! DNS for outbound routing, behind the [`Resolve`] trait: hickory-resolver in production
//! (`[resolver] nameservers`, or the system's resolv.conf), anything else in tests.

use crate::config::ResolverConfig;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, Protocol,
    ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioAsyncResolver;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so the trait stays object safe.
pub type Lookup<'a, T> = Pin<Box<dyn Future<Output = Result<T, DnsError>> + Send + 'a>>;

/// What a DNS question came to, when it did not come to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist (permanent).
    #[error("name does not exist (NXDOMAIN)")]
    NoSuchName,
    /// The name exists but has no record of the type asked (NODATA).
    #[error("no records of that type")]
    NoRecords,
    /// Timeout, SERVFAIL, network trouble: try again later.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
}

/// MX and address look-ups. `domain`/`host` are lowercase names without a trailing dot.
pub trait Resolve: Send + Sync {
    /// MX records as (preference, exchange); the exchange `""` stands for the root (null MX).
    fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Vec<(u16, String)>>;
    /// A and AAAA records.
    fn addrs<'a>(&'a self, host: &'a str) -> Lookup<'a, Vec<IpAddr>>;
    /// TXT records, each one's character-strings joined (`_mta-sts.`, `_smtp._tls.`); strings
    /// that are not UTF-8 are replaced, so they fail the record parsers that read them.
    fn txt<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<String>>;
}

/// hickory-resolver with the configured name servers.
pub struct Hickory {
    resolver: TokioAsyncResolver,
}

impl Hickory {
    /// Per-question timeout and attempts: a dead name server costs at most ~10 s before the
    /// MTA gets `451 4.4.3` and retries later.
    const TIMEOUT: Duration = Duration::from_secs(5);
    const ATTEMPTS: usize = 2;

    pub fn new(config: &ResolverConfig) -> Result<Hickory, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = Self::TIMEOUT;
        opts.attempts = Self::ATTEMPTS;
        // Routing needs today's answers; a short cache only saves repeated questions within a
        // session burst.
        opts.cache_size = 256;
        // Both families: an MX host reachable only over IPv6 (or only over IPv4) still works.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = if config.nameservers.is_empty() {
            let (system, mut system_opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
            system_opts.timeout = Self::TIMEOUT;
            system_opts.attempts = Self::ATTEMPTS;
            system_opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            TokioAsyncResolver::tokio(system, system_opts)
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in &config.nameservers {
                group.push(NameServerConfig::new(*addr, Protocol::Udp));
                group.push(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            TokioAsyncResolver::tokio(HickoryConfig::from_parts(None, vec![], group), opts)
        };
        Ok(Hickory { resolver })
    }
}

fn classify(e: &hickory_resolver::error::ResolveError) -> DnsError {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain => DnsError::NoSuchName,
            ResponseCode::NoError => DnsError::NoRecords,
            other => DnsError::Temporary(format!("server answered {other}")),
        },
        ResolveErrorKind::Timeout => DnsError::Temporary("timed out".into()),
        _ => DnsError::Temporary(e.to_string()),
    }
}

/// `example.org.`: fully qualified, so no search domain is ever appended.
fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl Resolve for Hickory {
    fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Vec<(u16, String)>> {
        Box::pin(async move {
            let answer = self
                .resolver
                .mx_lookup(absolute(domain))
                .await
                .map_err(|e| classify(&e))?;
            Ok(answer
                .iter()
                .map(|mx| {
                    let name = mx.exchange().to_ascii();
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    (mx.preference(), name)
                })
                .collect())
        })
    }

    fn addrs<'a>(&'a self, host: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        Box::pin(async move {
            let answer = self
                .resolver
                .lookup_ip(absolute(host))
                .await
                .map_err(|e| classify(&e))?;
            Ok(answer.iter().collect())
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<String>> {
        Box::pin(self.txt_records(name))
    }
}

impl Hickory {
    async fn txt_records(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let answer = self
            .resolver
            .txt_lookup(absolute(name))
            .await
            .map_err(|e| classify(&e))?;
        Ok(answer
            .iter()
            .map(|txt| {
                txt.txt_data()
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>()
            })
            .collect())
    }
}

/// A resolver that fails every question temporarily (the system configuration was unreadable):
/// outbound mail is deferred with `451 4.4.3` instead of the proxy refusing to start.
pub struct Broken(pub String);

impl Resolve for Broken {
    fn mx<'a>(&'a self, _domain: &'a str) -> Lookup<'a, Vec<(u16, String)>> {
        let why = self.0.clone();
        Box::pin(async move { Err(DnsError::Temporary(why)) })
    }

    fn addrs<'a>(&'a self, _host: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        let why = self.0.clone();
        Box::pin(async move { Err(DnsError::Temporary(why)) })
    }

    fn txt<'a>(&'a self, _name: &'a str) -> Lookup<'a, Vec<String>> {
        let why = self.0.clone();
        Box::pin(async move { Err(DnsError::Temporary(why)) })
    }
}

/// The configured resolver, or [`Broken`] with the reason when it cannot be built.
pub fn build(config: &ResolverConfig) -> std::sync::Arc<dyn Resolve> {
    match Hickory::new(config) {
        Ok(r) => std::sync::Arc::new(r),
        Err(e) => {
            crate::log::error("resolver").field("error", &e).emit();
            std::sync::Arc::new(Broken(e))
        }
    }
}
