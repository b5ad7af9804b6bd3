//! The validating resolver for DANE's questions (RFC 7672 §2.1): MX, A/AAAA and TLSA answers
//! with a DNSSEC status the caller can rely on, judged here and never by an upstream's AD bit.
//!
//! It asks the same name servers as routing ([`super::name_servers`]) but is a resolver of its
//! own: a validating hickory resolver turns every answer it cannot prove into an error, which
//! routing must never see (section 2 of the DANE facts note).
//!
//! Every question carries DO=1 and CD=1. hickory's `DnssecDnsHandle` sets DO, and AD, but forces
//! CD=0 on every request it sends, including its own DNSKEY and DS look-ups; a validating
//! upstream (unbound) then answers bogus data with SERVFAIL, which cannot be told from a
//! timeout or a broken server. [`CheckingDisabled`] sits between the validator and the name
//! servers and sets CD=1 on the wire, so the upstream passes what it has, bogus or not, and
//! `Bogus` means *this* validator's verdict while SERVFAIL stays `Error`.
//!
//! Verdicts (secure, insecure, denials) are cached for their TTL, at most [`MAX_CACHE_TTL`], so a
//! session whose answers are cached makes no DNS round trip; bogus data and errors are not.
//!
//! The self-test ([`Validating::self_test`]) asks the SOA of each trust anchor's zone and
//! requires a secure answer: it fails when the upstream strips RRSIGs or cannot reach the
//! anchor's zone. [`spawn_availability_check`] runs it at start and periodically, publishes
//! `starttls_proxy_dnssec_available` and logs a warning while it fails.

use super::{absolute, joined, name_servers, relative, ATTEMPTS, TIMEOUT};
use crate::{log, metrics};
use hickory_resolver::net::dnssec::DnssecDnsHandle;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::FirstAnswer;
use hickory_resolver::net::{DnsError as HickoryDnsError, DnsHandle, NetError, RetryDnsHandle};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Query, ResponseCode,
};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock, so paused-time tests can age the cache.
use tokio::time::Instant;

/// What a validated look-up came to. Only this resolver's own validation decides between
/// `Secure`, `Insecure` and `Bogus`; an upstream's AD bit is never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated<T> {
    /// Records proven by a chain from the trust anchor.
    Secure(T),
    /// Records from a provably unsigned zone (a delegation without DS, proven by NSEC/NSEC3).
    Insecure(T),
    /// NXDOMAIN or NODATA, its denial of existence proven.
    SecureDenial(Denial),
    /// NXDOMAIN or NODATA in a provably unsigned zone.
    InsecureDenial(Denial),
    /// The data is there, but its signatures or its chain of trust fail this validator
    /// (corrupted or expired RRSIG, DS not matching, signatures stripped from a signed zone).
    Bogus(String),
    /// No verdict: SERVFAIL, timeout, network trouble, unreadable answer.
    Error(String),
}

/// The kind of a denial of existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// NODATA: the name exists, with no record of the type asked.
    NoRecords,
}

impl<T> Validated<T> {
    /// The metric label of this outcome (`starttls_proxy_dnssec_lookups_total{result}`):
    /// a denial counts as what its proof is.
    pub fn result(&self) -> &'static str {
        match self {
            Validated::Secure(_) | Validated::SecureDenial(_) => "secure",
            Validated::Insecure(_) | Validated::InsecureDenial(_) => "insecure",
            Validated::Bogus(_) => "bogus",
            Validated::Error(_) => "error",
        }
    }

    /// True for `Secure` and `SecureDenial`: an answer DANE may rely on.
    pub fn is_secure(&self) -> bool {
        matches!(self, Validated::Secure(_) | Validated::SecureDenial(_))
    }

    /// The records, secure or not (`None` for denials, bogus data and errors).
    pub fn records(&self) -> Option<&T> {
        match self {
            Validated::Secure(r) | Validated::Insecure(r) => Some(r),
            _ => None,
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Validated<U> {
        match self {
            Validated::Secure(r) => Validated::Secure(f(r)),
            Validated::Insecure(r) => Validated::Insecure(f(r)),
            Validated::SecureDenial(d) => Validated::SecureDenial(d),
            Validated::InsecureDenial(d) => Validated::InsecureDenial(d),
            Validated::Bogus(why) => Validated::Bogus(why),
            Validated::Error(why) => Validated::Error(why),
        }
    }
}

/// One TLSA record as plain values (RFC 6698 §2.1), so DANE matching needs no DNS types.
/// Unknown or unusable usages are kept: RFC 7672 §3.1.3 has the caller ignore them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// Certificate usage: 2 DANE-TA, 3 DANE-EE (0 and 1 are unusable for SMTP).
    pub usage: u8,
    /// 0 full certificate, 1 SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

/// Why the validating resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnssecError {
    /// The trust anchor file is unreadable or holds no usable DNSKEY record.
    #[error("trust anchor {path}: {why}")]
    TrustAnchor { path: String, why: String },
    /// No name servers (resolv.conf unreadable or empty).
    #[error("{0}")]
    NameServers(String),
}

/// A boxed future, so [`ResolveSecure`] stays object safe.
pub type SecureLookup<'a, T> = Pin<Box<dyn Future<Output = Validated<T>> + Send + 'a>>;

/// DANE's look-ups with their DNSSEC status; [`Validating`] in production, tables in tests.
/// Names are lowercase without a trailing dot, as in [`super::Resolve`].
pub trait ResolveSecure: Send + Sync {
    /// MX records as (preference, exchange); the exchange `""` is the null MX.
    fn mx<'a>(&'a self, domain: &'a str) -> SecureLookup<'a, Vec<(u16, String)>>;
    /// A and AAAA records, judged together (see [`Validating::addrs`]).
    fn addrs<'a>(&'a self, host: &'a str) -> SecureLookup<'a, Vec<IpAddr>>;
    /// TLSA records at `_<port>._tcp.<host>`, `port` being the one connected to.
    fn tlsa<'a>(&'a self, host: &'a str, port: u16) -> SecureLookup<'a, Vec<Tlsa>>;
    /// Whether the last availability self-test passed (false before the first one ran).
    fn is_available(&self) -> bool;
}

/// Sets CD=1 on every request on its way to the name servers (module doc): the validator above
/// forces CD=0, this undoes it below it.
#[derive(Clone)]
struct CheckingDisabled<H>(H);

impl<H: DnsHandle> DnsHandle for CheckingDisabled<H> {
    type Response = H::Response;
    type Runtime = H::Runtime;

    fn send(&self, mut request: DnsRequest) -> Self::Response {
        request.metadata.checking_disabled = true;
        self.0.send(request)
    }
}

type Handle =
    DnssecDnsHandle<CheckingDisabled<RetryDnsHandle<NameServerPool<TokioRuntimeProvider>>>>;

/// The validating resolver: hickory's validator over the routing name servers, CD=1.
pub struct Validating {
    handle: Handle,
    /// The zones of the trust anchors (`.` for the built-in root KSKs): what the self-test asks.
    anchor_zones: Vec<Name>,
    available: AtomicBool,
    cache: AnswerCache,
}

impl Validating {
    /// A resolver asking `nameservers` (empty: the system's resolv.conf, as routing does) and
    /// trusting the DNSKEY records in `trust_anchor` (zone-file lines with class,
    /// `test. 300 IN DNSKEY 257 3 13 …`), or the IANA root KSKs built into hickory when `None`.
    pub fn new(
        nameservers: &[SocketAddr],
        trust_anchor: Option<&Path>,
    ) -> Result<Validating, DnssecError> {
        let (anchors, anchor_zones) = match trust_anchor {
            // Loaded here and passed to the handle: hickory 0.26.3 ignores
            // `ResolverOpts::trust_anchor` (facts note, pitfall 1).
            Some(path) => load_anchor(path)?,
            None => (TrustAnchors::default(), vec![Name::root()]),
        };
        let (servers, mut opts) = name_servers(nameservers).map_err(DnssecError::NameServers)?;
        if servers.is_empty() {
            return Err(DnssecError::NameServers(
                "no name servers configured".into(),
            ));
        }
        opts.timeout = TIMEOUT;
        opts.attempts = ATTEMPTS;
        let tls = TlsConfig::new().map_err(|e| DnssecError::NameServers(e.to_string()))?;
        let pool = NameServerPool::from_config(
            servers,
            Arc::new(PoolContext::new(opts, tls)),
            TokioRuntimeProvider::default(),
        );
        let handle = DnssecDnsHandle::with_trust_anchor(
            CheckingDisabled(RetryDnsHandle::new(pool, ATTEMPTS)),
            Arc::new(anchors),
        );
        Ok(Validating {
            handle,
            anchor_zones,
            available: AtomicBool::new(false),
            cache: AnswerCache::new(),
        })
    }

    /// MX records of `domain`, counted in `starttls_proxy_dnssec_lookups_total`.
    pub async fn mx(&self, domain: &str) -> Validated<Vec<(u16, String)>> {
        let answer = self.records(domain, RecordType::MX).await.map(|records| {
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, relative(&mx.exchange))),
                    _ => None,
                })
                .collect()
        });
        count(answer)
    }

    /// A and AAAA records of `host` (both asked, in parallel), counted once. Judged together,
    /// conservatively: bogus if either is bogus (an attacker needs to break only one family),
    /// an error if either failed, secure only if both are (records or proven denials);
    /// a denial only when neither family has an address.
    pub async fn addrs(&self, host: &str) -> Validated<Vec<IpAddr>> {
        let (v4, v6) = tokio::join!(
            self.records(host, RecordType::A),
            self.records(host, RecordType::AAAA)
        );
        let to_ips = |records: Vec<Record>| -> Vec<IpAddr> {
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .collect()
        };
        count(combine(v4.map(to_ips), v6.map(to_ips)))
    }

    /// TLSA records at `_<port>._tcp.<host>`, counted.
    pub async fn tlsa(&self, host: &str, port: u16) -> Validated<Vec<Tlsa>> {
        let owner = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        let answer = self.records(&owner, RecordType::TLSA).await.map(|records| {
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect()
        });
        count(answer)
    }

    /// TXT records validated (not counted as DANE look-ups): for callers that want MTA-STS or
    /// TLS-RPT discovery with a proof; routing's [`super::Resolve::txt`] needs none.
    pub async fn txt(&self, name: &str) -> Validated<Vec<String>> {
        self.records(name, RecordType::TXT).await.map(|records| {
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(joined(txt)),
                    _ => None,
                })
                .collect()
        })
    }

    /// Does validation work through the configured name servers? Asks the SOA of every trust
    /// anchor's zone and requires each to be secure; `Err` says which was not and why. Not
    /// counted as a DANE look-up.
    pub async fn self_test(&self) -> Result<(), String> {
        for zone in &self.anchor_zones {
            let name = zone.to_ascii();
            // Past the cache: the test is of the live path.
            match self.fetch(&name, RecordType::SOA).await.0 {
                Validated::Secure(_) => {}
                other => {
                    return Err(format!(
                        "SOA of trust anchor zone {name} is {}: {}",
                        other.result(),
                        describe(&other)
                    ))
                }
            }
        }
        Ok(())
    }

    /// Runs [`Self::self_test`], records the outcome for [`ResolveSecure::is_available`] and
    /// the gauge, and logs a warning when it failed. Returns the outcome.
    pub async fn check_availability(&self) -> bool {
        let outcome = self.self_test().await;
        let available = outcome.is_ok();
        self.available.store(available, Ordering::Relaxed);
        metrics::dnssec_available(available);
        if let Err(why) = outcome {
            log::warn("dnssec_unavailable")
                .field("error", &why)
                .field("effect", "DANE unavailable: answers count as insecure")
                .emit();
        }
        available
    }

    /// [`Self::fetch`] through the answer cache: a session whose answers are cached makes no
    /// DNS round trip. Only verdicts are cached (secure, insecure, both denials), for their
    /// TTL capped at [`MAX_CACHE_TTL`]; bogus data and errors are asked again next time.
    async fn records(&self, name: &str, rtype: RecordType) -> Validated<Vec<Record>> {
        let key = (absolute(name).to_ascii_lowercase(), rtype);
        let now = Instant::now();
        if let Some(answer) = self.cache.get(&key, now) {
            return answer;
        }
        let (answer, ttl) = self.fetch(name, rtype).await;
        let verdict = !matches!(answer, Validated::Bogus(_) | Validated::Error(_));
        if let (true, Some(ttl)) = (verdict, ttl) {
            self.cache
                .put(key, answer.clone(), now + ttl.min(MAX_CACHE_TTL));
        }
        answer
    }

    /// The answer records of the type asked, with this validator's verdict and how long it may
    /// be kept (the smallest TTL seen). CNAMEs are followed here when an answer stops at one:
    /// hickory judges the denial in such an answer (`www CNAME mx`, and NODATA for `mx`)
    /// against the name asked, which calls it bogus. Every CNAME on the way weighs in the
    /// verdict (a secure answer behind an insecure CNAME is insecure).
    async fn fetch(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> (Validated<Vec<Record>>, Option<Duration>) {
        let mut name = match Name::from_ascii(absolute(name)) {
            Ok(name) => name,
            Err(e) => return (Validated::Error(format!("bad name {name}: {e}")), None),
        };
        let mut chain = Proof::Secure;
        let mut ttl: Option<u32> = None;
        for _ in 0..MAX_CNAMES {
            let query = Query::query(name.clone(), rtype);
            let result = self
                .handle
                .lookup(query.clone(), DnsRequestOptions::default())
                .first_answer()
                .await;
            ttl = match (ttl, ttl_of(&result)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match dangling_cname(&name, rtype, &result) {
                Some((target, proof)) if proof != Proof::Bogus => {
                    chain = weakest(chain, proof);
                    name = target;
                }
                _ => {
                    let answer = weaken(judge(&query, result), chain, &query);
                    return (answer, ttl.map(|s| Duration::from_secs(s.into())));
                }
            }
        }
        let why = format!("{name} {rtype}: more than {MAX_CNAMES} CNAMEs");
        (Validated::Error(why), None)
    }
}

/// The longest an answer is kept, whatever its TTL: a changed TLSA or a re-signed zone is seen
/// within this time.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

/// Verdicts by (absolute lowercase name, type), bounded: when full, expired entries go, and if
/// none had expired, everything (a burst of distinct names costs refetches, never memory).
struct AnswerCache {
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
}

/// Valid until, and the verdict.
type CacheEntry = (Instant, Validated<Vec<Record>>);

/// (absolute lowercase name, type).
type CacheKey = (String, RecordType);

impl AnswerCache {
    const CAPACITY: usize = 10_000;

    fn new() -> AnswerCache {
        AnswerCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &CacheKey, now: Instant) -> Option<Validated<Vec<Record>>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((until, answer)) if *until > now => Some(answer.clone()),
            _ => None,
        }
    }

    fn put(&self, key: CacheKey, answer: Validated<Vec<Record>>, until: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::CAPACITY {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (until, answer));
    }
}

/// How long a response may be kept: the smallest TTL of its answer records, or for a denial
/// the negative TTL of its SOA (RFC 2308 §5: the smaller of the SOA's TTL and MINIMUM).
fn ttl_of(result: &Result<DnsResponse, NetError>) -> Option<u32> {
    let response = match result {
        Ok(response) => response,
        Err(NetError::Dns(HickoryDnsError::Nsec { response, .. })) => response,
        Err(_) => return None,
    };
    if let Some(ttl) = response.answers.iter().map(|r| r.ttl).min() {
        return Some(ttl);
    }
    response.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

/// How many CNAMEs a look-up follows before giving up.
const MAX_CNAMES: usize = 8;

/// The target of a CNAME at `name` in an answer that holds no `rtype` record, and the CNAME's
/// proof, in a positive answer or in the response inside hickory's NSEC error.
fn dangling_cname(
    name: &Name,
    rtype: RecordType,
    result: &Result<DnsResponse, NetError>,
) -> Option<(Name, Proof)> {
    let answers = match result {
        Ok(response) => &response.answers,
        Err(NetError::Dns(HickoryDnsError::Nsec { response, .. })) => &response.answers,
        Err(_) => return None,
    };
    if rtype == RecordType::CNAME || answers.iter().any(|r| r.record_type() == rtype) {
        return None;
    }
    // The last link of the chain the upstream followed, starting at `name`; bounded by the
    // number of records, so a loop in the answer cannot spin.
    let mut at = name.clone();
    let mut proof = Proof::Secure;
    let mut found = false;
    for _ in 0..answers.len() {
        let Some((target, p)) = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(cname) if r.name == at => Some((cname.0.clone(), r.proof)),
            _ => None,
        }) else {
            break;
        };
        found = true;
        proof = weakest(proof, p);
        at = target;
    }
    found.then_some((at, proof))
}

/// `answer` as seen through a chain of CNAMEs whose weakest proof is `chain`.
fn weaken(answer: Validated<Vec<Record>>, chain: Proof, query: &Query) -> Validated<Vec<Record>> {
    match (chain, answer) {
        (Proof::Secure, answer) => answer,
        (Proof::Insecure, Validated::Secure(r)) => Validated::Insecure(r),
        (Proof::Insecure, Validated::SecureDenial(d)) => Validated::InsecureDenial(d),
        (Proof::Insecure, answer) => answer,
        (_, Validated::Bogus(why)) => Validated::Bogus(why),
        (_, _) => Validated::Error(format!(
            "{} {}: CNAME validation indeterminate",
            query.name(),
            query.query_type()
        )),
    }
}

impl ResolveSecure for Validating {
    fn mx<'a>(&'a self, domain: &'a str) -> SecureLookup<'a, Vec<(u16, String)>> {
        Box::pin(Validating::mx(self, domain))
    }

    fn addrs<'a>(&'a self, host: &'a str) -> SecureLookup<'a, Vec<IpAddr>> {
        Box::pin(Validating::addrs(self, host))
    }

    fn tlsa<'a>(&'a self, host: &'a str, port: u16) -> SecureLookup<'a, Vec<Tlsa>> {
        Box::pin(Validating::tlsa(self, host, port))
    }

    fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }
}

/// Runs [`Validating::check_availability`] now and then every `every` until the task is
/// aborted (on shutdown or when a reload replaces the resolver). The first check starts at
/// once, so the gauge is set within one look-up's time of starting.
pub fn spawn_availability_check(
    resolver: Arc<Validating>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // A check that overran (name servers timing out) is not followed by a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            resolver.check_availability().await;
        }
    })
}

/// How often the production caller should re-check (the contract's "every few minutes").
pub const AVAILABILITY_INTERVAL: Duration = Duration::from_secs(300);

fn count<T>(answer: Validated<T>) -> Validated<T> {
    metrics::dnssec_lookup(answer.result());
    answer
}

fn describe<T>(v: &Validated<T>) -> String {
    match v {
        Validated::Secure(_) | Validated::Insecure(_) => "records".into(),
        Validated::SecureDenial(d) | Validated::InsecureDenial(d) => format!("{d:?}"),
        Validated::Bogus(why) | Validated::Error(why) => why.clone(),
    }
}

/// Whether `path` is a usable trust anchor file (for configuration checks).
pub fn check_trust_anchor(path: &Path) -> Result<(), DnssecError> {
    load_anchor(path).map(|_| ())
}

/// Reads a trust anchor file; the zones are the owners of its DNSKEY lines (hickory keeps them
/// private), for the self-test.
fn load_anchor(path: &Path) -> Result<(TrustAnchors, Vec<Name>), DnssecError> {
    let fail = |why: String| DnssecError::TrustAnchor {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let zones = anchor_zones(&text).map_err(fail)?;
    // (`TrustAnchors::is_empty` counts root keys only: the DNSKEY count is `anchor_zones`'.)
    let anchors: TrustAnchors = text.parse().map_err(|e| fail(format!("{e}")))?;
    Ok((anchors, zones))
}

/// The distinct owner names of the DNSKEY lines in a trust anchor file (comments skipped).
fn anchor_zones(text: &str) -> Result<Vec<Name>, String> {
    let mut zones: Vec<Name> = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !fields.iter().any(|f| f.eq_ignore_ascii_case("DNSKEY")) {
            continue;
        }
        let owner = fields[0];
        let name = Name::from_ascii(absolute(owner).replace("..", "."))
            .map_err(|e| format!("bad owner {owner}: {e}"))?;
        if !zones.contains(&name) {
            zones.push(name);
        }
    }
    if zones.is_empty() {
        return Err("no DNSKEY record".into());
    }
    Ok(zones)
}

/// Turns what hickory's validator returned into a [`Validated`] (the table in the module's
/// tests): record proofs for answers, NSEC/NSEC3 and SOA proofs for denials.
fn judge(query: &Query, result: Result<DnsResponse, NetError>) -> Validated<Vec<Record>> {
    let asked = format!("{} {}", query.name(), query.query_type());
    match result {
        Ok(response) => {
            let answers: Vec<&Record> = response
                .answers
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .collect();
            let wanted: Vec<Record> = answers
                .iter()
                .filter(|r| r.record_type() == query.query_type())
                .map(|r| (*r).clone())
                .collect();
            if wanted.is_empty() {
                let denial = denial(response.response_code);
                let authorities: Vec<&Record> = response
                    .authorities
                    .iter()
                    .filter(|r| r.record_type() != RecordType::RRSIG)
                    .collect();
                // hickory returns a denial only once proven (secure) or when every authority
                // record, or the missing DS above the name, is provably insecure.
                return match (denial, proof_of(&authorities)) {
                    (None, _) => Validated::Error(format!(
                        "{asked}: server answered {}",
                        response.response_code
                    )),
                    (Some(d), Some(Proof::Secure)) => Validated::SecureDenial(d),
                    (Some(_), Some(Proof::Bogus)) => {
                        Validated::Bogus(format!("{asked}: denial of existence is bogus"))
                    }
                    (Some(d), _) => Validated::InsecureDenial(d),
                };
            }
            // Every record on the way counts: a secure TLSA reached through a bogus CNAME is
            // not secure.
            match proof_of(&answers) {
                Some(Proof::Secure) => Validated::Secure(wanted),
                Some(Proof::Insecure) => Validated::Insecure(wanted),
                Some(Proof::Bogus) => Validated::Bogus(format!(
                    "{asked}: signature or chain of trust does not validate"
                )),
                _ => Validated::Error(format!("{asked}: validation indeterminate")),
            }
        }
        Err(NetError::Dns(HickoryDnsError::Nsec {
            response, proof, ..
        })) => match (proof, denial(response.response_code)) {
            (Proof::Secure, Some(d)) => Validated::SecureDenial(d),
            (Proof::Insecure, Some(d)) => Validated::InsecureDenial(d),
            (Proof::Bogus, _) => {
                Validated::Bogus(format!("{asked}: denial of existence does not validate"))
            }
            (proof, _) => Validated::Error(format!(
                "{asked}: denial of existence {proof}, {}",
                response.response_code
            )),
        },
        Err(NetError::Dns(HickoryDnsError::DnssecBogus)) => {
            Validated::Bogus(format!("{asked}: DNSSEC validation failed"))
        }
        Err(NetError::Dns(HickoryDnsError::ResponseCode(code))) => {
            Validated::Error(format!("{asked}: server answered {code}"))
        }
        Err(NetError::Timeout) => Validated::Error(format!("{asked}: timed out")),
        Err(e) => Validated::Error(format!("{asked}: {e}")),
    }
}

fn denial(code: ResponseCode) -> Option<Denial> {
    match code {
        ResponseCode::NXDomain => Some(Denial::NoSuchName),
        ResponseCode::NoError => Some(Denial::NoRecords),
        _ => None,
    }
}

/// The weakest proof among `records` (any bogus record makes the set bogus); `None` when
/// there are none.
fn proof_of(records: &[&Record]) -> Option<Proof> {
    records.iter().map(|r| r.proof).reduce(weakest)
}

/// Bogus < Indeterminate < Insecure < Secure, for judging a set by its weakest member.
fn weakest(a: Proof, b: Proof) -> Proof {
    let rank = |p: Proof| match p {
        Proof::Bogus => 0,
        Proof::Indeterminate => 1,
        Proof::Insecure => 2,
        Proof::Secure => 3,
    };
    if rank(a) <= rank(b) {
        a
    } else {
        b
    }
}

/// A and AAAA judged together (see [`Validating::addrs`]).
fn combine(v4: Validated<Vec<IpAddr>>, v6: Validated<Vec<IpAddr>>) -> Validated<Vec<IpAddr>> {
    use Validated::*;
    match (v4, v6) {
        (Bogus(why), _) | (_, Bogus(why)) => Bogus(why),
        (Error(why), _) | (_, Error(why)) => Error(why),
        (SecureDenial(a), SecureDenial(b)) => SecureDenial(both_denied(a, b)),
        (SecureDenial(a) | InsecureDenial(a), SecureDenial(b) | InsecureDenial(b)) => {
            InsecureDenial(both_denied(a, b))
        }
        (a, b) => {
            let secure = a.is_secure() && b.is_secure();
            let mut ips = a.records().cloned().unwrap_or_default();
            ips.extend(b.records().cloned().unwrap_or_default());
            if secure {
                Secure(ips)
            } else {
                Insecure(ips)
            }
        }
    }
}

/// NXDOMAIN only when both say so (they always agree for one name; NODATA otherwise).
fn both_denied(a: Denial, b: Denial) -> Denial {
    if a == Denial::NoSuchName && b == Denial::NoSuchName {
        Denial::NoSuchName
    } else {
        Denial::NoRecords
    }
}

#[cfg(test)]
#[path = "dnssec_tests.rs"]
mod tests;
