//! Discovery: what a recipient domain publishes about its TLS, found before the decision (the
//! decision itself stays pure, in `policy`). MTA-STS (RFC 8461 §3, §5): the `_mta-sts` TXT
//! record, the policy fetched over HTTPS only when its `id` is new or the cached one expired,
//! the cached policy kept when a refetch fails or the record vanishes, one fetch at a time per
//! domain however many sessions ask. DANE (RFC 7672 §2): the domain's MX records, the hosts'
//! addresses and their TLSA records through the validating resolver, before MTA-STS.

use super::establish::{DaneProblem, Refusal, Refused};
use super::route::{self, MxHost, Route};
use crate::https::{HttpsClient, HttpsError};
use crate::policy::dane::{SecureTlsa, Tlsa, TlsaSet};
use crate::policy::mta_sts::{self, parse_policy, StsError, StsMode};
use crate::policy::ResultType;
use crate::policy::{Applied, Mode};
use crate::resolver::dnssec::{Denial, Validated};
use crate::resolver::{DnsError, Resolve};
use crate::session::{AttemptResult, SessionRecord};
use crate::state::mta_sts::{CachedPolicy, StsCache};
use crate::state::results::Outcome;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// RFC 8461 §3.3.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// A policy host gets this long for the whole fetch (connect, TLS, body): a slow or hostile one
/// never holds a session longer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How one discovery's fetch went: the label of `starttls_proxy_mta_sts_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    /// A policy was fetched and parsed.
    Ok,
    /// No `_mta-sts` TXT record: the domain publishes no policy.
    NotFound,
    /// No connection, a time-out, a status other than 200 (3xx included), a body over the bound.
    FetchError,
    /// The TXT record or the policy does not parse, or the policy is not `text/plain`.
    Invalid,
    /// The policy host's certificate fails WebPKI validation.
    WebpkiInvalid,
}

impl FetchResult {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchResult::Ok => "ok",
            FetchResult::NotFound => "not_found",
            FetchResult::FetchError => "fetch_error",
            FetchResult::Invalid => "invalid",
            FetchResult::WebpkiInvalid => "webpki_invalid",
        }
    }

    /// What a TLS report says of a failed discovery (RFC 8460 §4.3.2.3).
    pub fn result_type(self) -> Option<ResultType> {
        match self {
            FetchResult::Ok | FetchResult::NotFound => None,
            FetchResult::FetchError => Some(ResultType::StsPolicyFetchError),
            FetchResult::Invalid => Some(ResultType::StsPolicyInvalid),
            FetchResult::WebpkiInvalid => Some(ResultType::StsWebpkiInvalid),
        }
    }
}

/// What MTA-STS says about a domain now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsFinding {
    /// The policy in force (fetched now or cached, unexpired); `None`: as if no policy.
    pub policy: Option<CachedPolicy>,
    /// What this discovery's lookup or fetch came to, when it made one (`None`: the cached
    /// policy matched the record's id, nothing was fetched).
    pub fetch: Option<FetchResult>,
    /// The failure's detail, for logs.
    pub detail: Option<String>,
}

impl StsFinding {
    /// The policy, unless it is `mode: none` (RFC 8461 §5: as if none).
    pub fn in_force(&self) -> Option<&CachedPolicy> {
        self.policy
            .as_ref()
            .filter(|p| p.policy.mode != StsMode::None)
    }
}

/// MTA-STS discovery with its cache and HTTPS client; shared by every session.
pub struct StsDiscovery {
    cache: Arc<StsCache>,
    https: HttpsClient,
    /// 443 on the internet; tests may use another.
    port: u16,
    /// One lock per domain being fetched: a second session waits for the first's answer.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl StsDiscovery {
    pub fn new(cache: Arc<StsCache>, https: HttpsClient, port: u16) -> Self {
        Self {
            cache,
            https,
            port,
            fetching: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache(&self) -> &StsCache {
        &self.cache
    }

    /// What applies to `domain` at `now` (Unix seconds).
    pub async fn discover(&self, resolver: &dyn Resolve, domain: &str, now: i64) -> StsFinding {
        let cached = self.cache.get(domain).filter(|p| p.is_valid_at(now));
        let record = match resolver.txt(&format!("_mta-sts.{domain}")).await {
            Ok(txts) => mta_sts::parse_records(txts.iter().map(String::as_str)),
            Err(DnsError::NoSuchName | DnsError::NoRecords) => Err(StsError::NoRecord),
            // The answer may have been blocked: an unexpired policy stays in force.
            Err(DnsError::Temporary(why)) => {
                return finding(
                    cached,
                    FetchResult::FetchError,
                    format!("TXT lookup: {why}"),
                )
            }
        };
        let record = match record {
            Ok(r) => r,
            // RFC 8461 §5.1: a vanished record does not cancel a cached policy.
            Err(StsError::NoRecord) => {
                return finding(
                    cached,
                    FetchResult::NotFound,
                    "no v=STSv1 TXT record".into(),
                )
            }
            Err(e) => return finding(cached, FetchResult::Invalid, e.to_string()),
        };
        if let Some(p) = cached.as_ref().filter(|p| p.id == record.id) {
            return StsFinding {
                policy: Some(p.clone()),
                fetch: None,
                detail: None,
            };
        }
        let lock = self.domain_lock(domain);
        let _turn = lock.lock().await;
        // Another session may have fetched it while this one waited.
        if let Some(p) = self
            .cache
            .get(domain)
            .filter(|p| p.is_valid_at(now) && p.id == record.id)
        {
            return StsFinding {
                policy: Some(p),
                fetch: None,
                detail: None,
            };
        }
        let fetched = self.fetch(resolver, domain).await;
        self.release(domain, &lock);
        match fetched {
            Ok((text, policy)) => {
                let fresh = CachedPolicy {
                    domain: domain.to_string(),
                    id: record.id,
                    text,
                    policy,
                    fetched_at: now,
                };
                if let Err(e) = self.cache.put(fresh.clone()) {
                    crate::log::warn("mta_sts_cache_write_failed")
                        .field("domain", domain)
                        .field("error", e)
                        .emit();
                }
                crate::metrics::mta_sts_fetch(FetchResult::Ok.as_str());
                StsFinding {
                    policy: Some(fresh),
                    fetch: Some(FetchResult::Ok),
                    detail: None,
                }
            }
            // RFC 8461 §5.1: a failed refetch keeps the cached policy.
            Err((result, why)) => {
                let kept = self.cache.get(domain).filter(|p| p.is_valid_at(now));
                finding(kept, result, why)
            }
        }
    }

    /// `GET https://mta-sts.<domain>/.well-known/mta-sts.txt`, strictly.
    async fn fetch(
        &self,
        resolver: &dyn Resolve,
        domain: &str,
    ) -> Result<(String, mta_sts::StsPolicy), (FetchResult, String)> {
        let host = format!("mta-sts.{domain}");
        let addrs: Vec<SocketAddr> = resolver
            .addrs(&host)
            .await
            .map_err(|e| (FetchResult::FetchError, format!("{host}: {e}")))?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, self.port))
            .collect();
        let response = self
            .https
            .get(&host, &addrs, POLICY_PATH)
            .await
            .map_err(|e| match e {
                HttpsError::Certificate { .. } => (FetchResult::WebpkiInvalid, e.to_string()),
                _ => (FetchResult::FetchError, e.to_string()),
            })?;
        if response.status != 200 {
            return Err((
                FetchResult::FetchError,
                format!("{host} answered {}", response.status),
            ));
        }
        if response.media_type.as_deref() != Some("text/plain") {
            return Err((
                FetchResult::Invalid,
                format!(
                    "{host} served {} instead of text/plain",
                    response.media_type.as_deref().unwrap_or("no Content-Type")
                ),
            ));
        }
        let policy =
            parse_policy(&response.body).map_err(|e| (FetchResult::Invalid, e.to_string()))?;
        let text = String::from_utf8(response.body).unwrap_or_default();
        Ok((text, policy))
    }

    fn domain_lock(&self, domain: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        fetching.entry(domain.to_string()).or_default().clone()
    }

    /// Forgets the domain's lock once nobody else holds or waits for it (bounded map).
    fn release(&self, domain: &str, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        // Ours, the map's, and nobody else's.
        if Arc::strong_count(lock) <= 2 {
            fetching.remove(domain);
        }
    }
}

/// Relay mode, at a RCPT: a domain without an entry, routed by its MX records under the
/// default `opportunistic`, gets its published MTA-STS policy (RFC 8461 §4–5; an explicit
/// entry wins, as in Postfix's policy table). `enforce` keeps only the MX hosts its patterns
/// name and verifies them against `mta_sts_trust_anchors` for the MX host name; `testing`
/// delivers as before and judges as `enforce` for the results; `none` or no policy changes
/// nothing. `Err`: no MX host is allowed.
pub async fn with_mta_sts(
    ctx: &super::Context,
    mut route: Route,
    applied: Applied,
    domain: &str,
    record: &SessionRecord,
) -> Result<(Route, Applied), Refused> {
    use crate::policy::Source;
    let Some(sts) = &ctx.sts else {
        return Ok((route, applied));
    };
    if applied.source != Source::None
        || !matches!(applied.mode, Mode::Opportunistic | Mode::Dane)
        || ctx.listener.next_hop.is_some()
        // DANE takes precedence (RFC 8461 §2): nothing left for MTA-STS to judge.
        || route.hosts.iter().all(|h| h.tlsa.is_some())
    {
        return Ok((route, applied));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let finding = sts.discover(ctx.resolver.as_ref(), domain, now).await;
    if let (Some(result), Some(detail)) = (finding.fetch, &finding.detail) {
        if result != FetchResult::NotFound {
            crate::log::warn("mta_sts_discovery")
                .field("id", &record.id)
                .field("domain", domain)
                .field("result", result.as_str())
                .field("detail", detail)
                .field(
                    "policy",
                    if finding.policy.is_some() {
                        "cached"
                    } else {
                        "none"
                    },
                )
                .emit();
        }
    }
    let Some(policy) = finding.in_force() else {
        return Ok((route, applied));
    };
    let applied = applied.under_mta_sts(
        policy.policy.mode,
        policy.policy_strings(),
        ctx.config.outbound_policy.mta_sts_anchors.clone(),
    );
    if policy.policy.mode == StsMode::Enforce {
        let hosts: Vec<String> = route.hosts.iter().map(|h| h.name.clone()).collect();
        // A host DANE authenticates is judged by its TLSA records, not the MX patterns.
        route
            .hosts
            .retain(|h| h.tlsa.is_some() || policy.policy.allows_mx(&h.name));
        // Sessions are shared by route key: the key must say which hosts this policy allows,
        // or another domain's transaction could reuse a host its own policy does not name.
        let mut allowed: Vec<&str> = route.hosts.iter().map(|h| h.name.as_str()).collect();
        allowed.sort_unstable();
        route.key = format!("{} sts-allowed {}", route.key, allowed.join(","));
        if route.hosts.is_empty() {
            let refusal = Refusal::StsNoMatchingMx {
                domain: domain.to_string(),
                hosts,
            };
            ctx.metrics.policy_rejection(refusal.reason());
            crate::log::warn("policy_refused")
                .field("id", &record.id)
                .field("listener", &ctx.listener.name)
                .field("domain", domain)
                .field("policy", applied.source.as_str())
                .field("sts_mode", policy.policy.mode)
                .field("reason", refusal.reason())
                .emit();
            return Err(Refused {
                refusal,
                mx: None,
                facts: None,
            });
        }
    }
    Ok((route, applied))
}

/// A discovery that fetched nothing new: the cached policy if any, counted under `result`.
fn finding(cached: Option<CachedPolicy>, result: FetchResult, why: String) -> StsFinding {
    crate::metrics::mta_sts_fetch(result.as_str());
    StsFinding {
        policy: cached,
        fetch: Some(result),
        detail: Some(why),
    }
}

/// Relay mode, at a RCPT, before MTA-STS: DANE discovery for a domain under `dane` or
/// `dane-only` (RFC 7672 §2.1–2.2). With a secure MX RRset (or a configured next hop), the
/// route is rebuilt from the validated answers: each host with secure addresses gets its TLSA
/// records looked up at `_<port>._tcp.<host>`. Bogus or failed answers take the host (or, for
/// the MX RRset, the domain) out of the route, never down to plaintext. An insecure MX RRset,
/// or DNSSEC being unavailable, leaves the route as it was (`dane-only`: refused).
pub async fn with_dane(
    ctx: &super::Context,
    route: Route,
    applied: &Applied,
    domain: &str,
    record: &mut SessionRecord,
) -> Result<Route, Refused> {
    if !applied.mode.wants_dane() {
        return Ok(route);
    }
    let only = applied.mode == Mode::DaneOnly;
    let id = record.id.clone();
    let refuse = |problem| dane_refused(ctx, applied, domain, &id, problem);
    let secure = ctx.secure.as_ref().filter(|s| s.is_available());
    let names = match secure_names(secure.map(|s| s.as_ref()), ctx, &route, domain).await {
        Ok(names) => names,
        Err(NoDane::Failed(problem)) => return Err(refuse(problem)),
        Err(NoDane::Insecure(why)) if only => return Err(refuse(DaneProblem::Required { why })),
        Err(NoDane::Insecure(_)) => return Ok(route),
    };
    let Some(secure) = secure else {
        return Ok(route);
    };
    let mut hosts = Vec::new();
    let mut last_problem = None;
    for name in names {
        let (addrs, addrs_secure) = match secure.addrs(&name).await {
            Validated::Secure(a) => (a, true),
            Validated::Insecure(a) => (a, false),
            Validated::Bogus(why) => {
                last_problem = Some(skip_host(
                    ctx,
                    applied,
                    domain,
                    &name,
                    &[],
                    route.port,
                    DaneProblem::Bogus {
                        name: format!("{name} A/AAAA"),
                        why,
                    },
                    record,
                ));
                continue;
            }
            Validated::Error(why) => {
                last_problem = Some(skip_host(
                    ctx,
                    applied,
                    domain,
                    &name,
                    &[],
                    route.port,
                    DaneProblem::LookupFailed {
                        name: format!("{name} A/AAAA"),
                        why,
                    },
                    record,
                ));
                continue;
            }
            Validated::SecureDenial(_) | Validated::InsecureDenial(_) => continue,
        };
        if addrs.is_empty() {
            continue;
        }
        // RFC 7672 §2.2.2: TLSA records count only under secure address records.
        let tlsa = if addrs_secure {
            let owner = format!("_{}._tcp.{name}", route.port);
            match secure.tlsa(&name, route.port).await {
                Validated::Secure(records) if !records.is_empty() => Some(SecureTlsa::new(
                    records.into_iter().map(Tlsa::from).collect(),
                )),
                Validated::Bogus(why) => {
                    last_problem = Some(skip_host(
                        ctx,
                        applied,
                        domain,
                        &name,
                        &addrs,
                        route.port,
                        DaneProblem::Bogus {
                            name: format!("{owner} TLSA"),
                            why,
                        },
                        record,
                    ));
                    continue;
                }
                Validated::Error(why) => {
                    last_problem = Some(skip_host(
                        ctx,
                        applied,
                        domain,
                        &name,
                        &addrs,
                        route.port,
                        DaneProblem::LookupFailed {
                            name: format!("{owner} TLSA"),
                            why,
                        },
                        record,
                    ));
                    continue;
                }
                _ => None,
            }
        } else {
            None
        };
        let usable = matches!(&tlsa, Some(t) if matches!(t.set, TlsaSet::Usable(_)));
        if only && !usable {
            let why = match &tlsa {
                Some(_) => format!("{name} publishes no usable TLSA record"),
                None if addrs_secure => format!("{name} publishes no TLSA records"),
                None => format!("{name} has no DNSSEC-signed address records"),
            };
            last_problem = Some(skip_host(
                ctx,
                applied,
                domain,
                &name,
                &addrs,
                route.port,
                DaneProblem::Required { why },
                record,
            ));
            continue;
        }
        hosts.push(MxHost { name, addrs, tlsa });
    }
    if hosts.is_empty() {
        return Err(refuse(last_problem.unwrap_or(DaneProblem::LookupFailed {
            name: format!("{domain} MX"),
            why: "no MX host has a validated address".into(),
        })));
    }
    // Sessions are shared by route key: one opened under a host's TLSA records is not the one
    // a domain without them would get, nor back.
    let marks: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                "{}={}",
                h.name,
                h.tlsa.as_ref().map_or("none", |t| t.as_str())
            )
        })
        .collect();
    Ok(Route {
        key: format!("{} dane {}", route.key, marks.join(",")),
        hosts,
        port: route.port,
    })
}

/// Transparent mode, at a RCPT: DANE for the host the MTA already chose and the proxy already
/// reached (the recipient domain is known only now). DANE applies when `addr` is a secure
/// address of one of the domain's secure MX hosts and that host has secure TLSA records at
/// `_<port>._tcp.<host>`: `Some((host, records))`. Anything else is `None` under `dane` and
/// a refusal under `dane-only`; bogus or failed answers are refusals under both.
pub async fn dane_for_connected(
    ctx: &super::Context,
    applied: &Applied,
    domain: &str,
    addr: SocketAddr,
    record: &SessionRecord,
) -> Result<Option<(String, SecureTlsa)>, Refused> {
    if !applied.mode.wants_dane() {
        return Ok(None);
    }
    let only = applied.mode == Mode::DaneOnly;
    let refuse = |problem| dane_refused(ctx, applied, domain, &record.id, problem);
    match connected_tlsa(ctx, domain, addr).await {
        Ok((host, tlsa)) if only && !matches!(tlsa.set, TlsaSet::Usable(_)) => {
            Err(refuse(DaneProblem::Required {
                why: format!("{host} publishes no usable TLSA record"),
            }))
        }
        Ok(found) => Ok(Some(found)),
        Err(NoDane::Failed(problem)) => Err(refuse(problem)),
        Err(NoDane::Insecure(why)) if only => Err(refuse(DaneProblem::Required { why })),
        Err(NoDane::Insecure(_)) => Ok(None),
    }
}

/// The secure MX host of `domain` at `addr` and its secure TLSA records.
async fn connected_tlsa(
    ctx: &super::Context,
    domain: &str,
    addr: SocketAddr,
) -> Result<(String, SecureTlsa), NoDane> {
    let secure = ctx.secure.as_ref().filter(|s| s.is_available());
    let names = secure_names(secure.map(|s| s.as_ref()), ctx, &Route::empty(), domain).await?;
    let Some(secure) = secure else {
        return Err(NoDane::Insecure("DNSSEC validation is unavailable".into()));
    };
    let mut bogus = None;
    let mut host = None;
    for name in names {
        match secure.addrs(&name).await {
            Validated::Secure(addrs) if addrs.contains(&addr.ip()) => {
                host = Some(name);
                break;
            }
            Validated::Bogus(why) => {
                bogus = Some(DaneProblem::Bogus {
                    name: format!("{name} A/AAAA"),
                    why,
                })
            }
            _ => {}
        }
    }
    let Some(host) = host else {
        // The connected address may be the one whose records did not validate.
        return Err(match bogus {
            Some(problem) => NoDane::Failed(problem),
            None => NoDane::Insecure(format!(
                "{} is not a DNSSEC-signed address of the domain's MX hosts",
                addr.ip()
            )),
        });
    };
    let owner = format!("_{}._tcp.{host}", addr.port());
    match secure.tlsa(&host, addr.port()).await {
        Validated::Secure(records) if !records.is_empty() => {
            let tlsa = SecureTlsa::new(records.into_iter().map(Tlsa::from).collect());
            Ok((host, tlsa))
        }
        Validated::Bogus(why) => Err(NoDane::Failed(DaneProblem::Bogus {
            name: format!("{owner} TLSA"),
            why,
        })),
        Validated::Error(why) => Err(NoDane::Failed(DaneProblem::LookupFailed {
            name: format!("{owner} TLSA"),
            why,
        })),
        _ => Err(NoDane::Insecure(format!(
            "{host} publishes no TLSA records"
        ))),
    }
}

/// Routing failed in DNS for a domain that wants DANE: if the validating resolver finds its MX
/// records bogus, that is the reason the MTA is given (`451 4.7.5`, RFC 7672 §2.1.1), not a
/// passing DNS failure (a validating upstream hides bogus data behind SERVFAIL from routing).
pub async fn bogus_mx(
    ctx: &super::Context,
    applied: &Applied,
    domain: &str,
    record: &SessionRecord,
) -> Option<Refused> {
    if !applied.mode.wants_dane() {
        return None;
    }
    let secure = ctx.secure.as_ref().filter(|s| s.is_available())?;
    match secure.mx(domain).await {
        Validated::Bogus(why) => Some(dane_refused(
            ctx,
            applied,
            domain,
            &record.id,
            DaneProblem::Bogus {
                name: format!("{domain} MX"),
                why,
            },
        )),
        _ => None,
    }
}

/// DANE refuses the whole domain: counted, logged, and the MTA's reply.
fn dane_refused(
    ctx: &super::Context,
    applied: &Applied,
    domain: &str,
    id: &str,
    problem: DaneProblem,
) -> Refused {
    let refusal = Refusal::Dane {
        domain: domain.to_string(),
        problem,
    };
    ctx.metrics.policy_rejection(refusal.reason());
    crate::log::warn("policy_refused")
        .field("id", id)
        .field("listener", &ctx.listener.name)
        .field("domain", domain)
        .field("policy", "dane")
        .field("mode", applied.mode)
        .field("reason", refusal.reason())
        .field(
            "reply",
            super::connect::summary(&refusal.reply(&ctx.config.hostname)),
        )
        .field("detail", problem_detail(&refusal))
        .emit();
    Refused {
        refusal,
        mx: None,
        facts: None,
    }
}

fn problem_detail(refusal: &Refusal) -> &str {
    match refusal {
        Refusal::Dane { problem, .. } => problem.detail(),
        _ => "-",
    }
}

/// Why DANE does not apply to a whole domain.
enum NoDane {
    /// Nothing proves the domain's MX records: DANE does not apply (`dane-only`: refused).
    Insecure(String),
    /// Validation failed or got no verdict: the domain is deferred.
    Failed(DaneProblem),
}

/// The MX host names DANE starts from (RFC 7672 §2.2.1): from a secure MX RRset (or the
/// domain itself under a secure denial of MX records), or the configured next hop.
async fn secure_names(
    secure: Option<&dyn crate::resolver::dnssec::ResolveSecure>,
    ctx: &super::Context,
    route: &Route,
    domain: &str,
) -> Result<Vec<String>, NoDane> {
    let Some(secure) = secure else {
        return Err(NoDane::Insecure("DNSSEC validation is unavailable".into()));
    };
    if ctx.listener.next_hop.is_some() {
        return Ok(route.hosts.iter().map(|h| h.name.clone()).collect());
    }
    if route::address_literal(domain).is_some() {
        return Err(NoDane::Insecure(
            "an address literal has no TLSA records".into(),
        ));
    }
    let name = || format!("{domain} MX");
    match secure.mx(domain).await {
        Validated::Secure(records) => Ok(route::order_mx(records, route::random_u32)),
        Validated::SecureDenial(Denial::NoRecords) => Ok(vec![domain.to_string()]),
        Validated::Bogus(why) => Err(NoDane::Failed(DaneProblem::Bogus { name: name(), why })),
        Validated::Error(why) => Err(NoDane::Failed(DaneProblem::LookupFailed {
            name: name(),
            why,
        })),
        Validated::SecureDenial(Denial::NoSuchName) => {
            Err(NoDane::Insecure("the domain does not exist".into()))
        }
        Validated::Insecure(_) | Validated::InsecureDenial(_) => Err(NoDane::Insecure(
            "its MX records are not DNSSEC-signed".into(),
        )),
    }
}

/// A host DANE takes out of the route: logged, and recorded as this attempt's failure (a TLS
/// report tells the domain its TLSA or address records do not validate). Returns `problem`.
#[allow(clippy::too_many_arguments)]
fn skip_host(
    ctx: &super::Context,
    applied: &Applied,
    domain: &str,
    host: &str,
    addrs: &[std::net::IpAddr],
    port: u16,
    problem: DaneProblem,
    record: &mut SessionRecord,
) -> DaneProblem {
    let refusal = Refusal::Dane {
        domain: domain.to_string(),
        problem: problem.clone(),
    };
    crate::log::warn("dane_host_skipped")
        .field("id", &record.id)
        .field("listener", &ctx.listener.name)
        .field("domain", domain)
        .field("mx", host)
        .field("reason", refusal.reason())
        .field("detail", problem_detail(&refusal))
        .field(
            "reply",
            super::connect::summary(&refusal.reply(&ctx.config.hostname)),
        )
        .emit();
    let ip = addrs
        .first()
        .copied()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    record.results.push(AttemptResult {
        domain: Some(domain.to_string()),
        mx_host: Some(host.to_string()),
        remote: SocketAddr::new(ip, port),
        local: None,
        tls: None,
        outcome: refusal
            .result_type()
            .map_or(Outcome::Success, Outcome::Failure),
        policy_type: crate::policy::PolicyType::Tlsa,
        policy_strings: applied.policy_strings.clone(),
    });
    problem
}
