//! DNS for outbound routing, behind the [`Resolve`] trait: hickory-resolver in production
//! (`[resolver] nameservers`, or the system's resolv.conf), anything else in tests.
//!
//! Routing never validates DNSSEC: mail must keep flowing through resolvers that pass no
//! DNSSEC records (and with no root chain, as in every test set-up), and a validating hickory
//! resolver turns everything it cannot prove into an error. DANE's questions go to the
//! separate validating resolver in [`dnssec`], which asks the same name servers.

pub mod dnssec;

use crate::config::ResolverConfig;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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

/// MX, address and TXT look-ups. `domain`/`host` are lowercase names without a trailing dot.
pub trait Resolve: Send + Sync {
    /// MX records as (preference, exchange); the exchange `""` stands for the root (null MX).
    fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Vec<(u16, String)>>;
    /// A and AAAA records.
    fn addrs<'a>(&'a self, host: &'a str) -> Lookup<'a, Vec<IpAddr>>;
    /// TXT records at `name` (e.g. `_mta-sts.<domain>`, `_smtp._tls.<domain>`), one string per
    /// record: its character-strings joined without separator (RFC 8461 §3.1, RFC 8460 §3).
    /// Bytes that are not UTF-8 become U+FFFD, so a parser sees them and rejects the record.
    fn txt<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<String>>;
}

/// Per-question timeout and attempts: a dead name server costs at most ~10 s before the MTA
/// gets `451 4.4.3` and retries later. Shared with the validating resolver.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const ATTEMPTS: usize = 2;

/// hickory-resolver with the configured name servers.
pub struct Hickory {
    resolver: TokioResolver,
}

impl Hickory {
    pub fn new(config: &ResolverConfig) -> Result<Hickory, String> {
        let (servers, mut opts) = name_servers(&config.nameservers)?;
        opts.timeout = TIMEOUT;
        opts.attempts = ATTEMPTS;
        // Routing needs today's answers; a short cache only saves repeated questions within a
        // session burst.
        opts.cache_size = 256;
        // Both families: an MX host reachable only over IPv6 (or only over IPv4) still works.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Never validate here (module doc): no DO bit, answers taken as they come.
        opts.validate = false;
        let resolver = TokioResolver::builder_with_config(
            HickoryConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))?;
        Ok(Hickory { resolver })
    }
}

/// The name servers to ask: the configured ones (UDP, and TCP for truncated answers, on each
/// address's port), or the system's resolv.conf with its options (search domains dropped: every
/// name asked is absolute). Shared with the validating resolver, so both ask the same servers.
pub(crate) fn name_servers(
    configured: &[SocketAddr],
) -> Result<(Vec<NameServerConfig>, ResolverOpts), String> {
    if configured.is_empty() {
        let (system, opts) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
        let (_, _, servers) = system.into_parts();
        return Ok((servers, opts));
    }
    let servers = configured
        .iter()
        .map(|addr| {
            let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
            udp.port = addr.port();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    Ok((servers, ResolverOpts::default()))
}

fn classify(e: &NetError) -> DnsError {
    match e {
        NetError::Dns(HickoryDnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match *response_code {
                ResponseCode::NXDomain => DnsError::NoSuchName,
                ResponseCode::NoError => DnsError::NoRecords,
                other => DnsError::Temporary(format!("server answered {other}")),
            }
        }
        NetError::Timeout => DnsError::Temporary("timed out".into()),
        _ => DnsError::Temporary(e.to_string()),
    }
}

/// `example.org.`: fully qualified, so no search domain is ever appended.
pub(crate) fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A name as the trait hands it out: lowercase, no trailing dot (`""` for the root).
pub(crate) fn relative(name: &hickory_resolver::proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// One TXT record's character-strings joined (RFC 8461 §3.1: "concatenated").
pub(crate) fn joined(txt: &hickory_resolver::proto::rr::rdata::TXT) -> String {
    let bytes: Vec<u8> = txt
        .txt_data
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
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
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, relative(&mx.exchange))),
                    _ => None,
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
        Box::pin(async move {
            let answer = self
                .resolver
                .txt_lookup(absolute(name))
                .await
                .map_err(|e| classify(&e))?;
            Ok(answer
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(joined(txt)),
                    _ => None,
                })
                .collect())
        })
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
