//! MTA-STS discovery (RFC 8461 §3, §5): the `_mta-sts` TXT record, the policy fetched over
//! HTTPS only when its `id` is new or the cached one expired, the cached policy kept when a
//! refetch fails or the record vanishes, one fetch at a time per domain however many sessions
//! ask.

use crate::https::{HttpsClient, HttpsError};
use crate::outbound::establish::{Refusal, Refused};
use crate::outbound::route::Route;
use crate::policy::mta_sts::{self, parse_policy, StsError, StsMode};
use crate::policy::ResultType;
use crate::policy::{Applied, Mode};
use crate::resolver::{DnsError, Resolve};
use crate::session::SessionRecord;
use crate::state::mta_sts::{CachedPolicy, StsCache};
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
        self.look_up(resolver, domain, now, false).await
    }

    /// Proactive refresh (RFC 8461 §10.2): every cached policy in force and past half its
    /// `max_age` is fetched again (after its TXT record), so a policy in use does not lapse
    /// while the domain keeps publishing it; a failed refresh keeps it. Returns the domains
    /// refreshed with what each fetch came to.
    pub async fn refresh_due(
        &self,
        resolver: &dyn Resolve,
        now: i64,
    ) -> Vec<(String, Option<FetchResult>)> {
        let due: Vec<String> = self
            .cache
            .all()
            .into_iter()
            .filter(|p| p.is_valid_at(now) && p.policy.mode != StsMode::None)
            .filter(|p| now >= p.fetched_at + i64::try_from(p.policy.max_age / 2).unwrap_or(0))
            .map(|p| p.domain)
            .collect();
        let mut refreshed = Vec::new();
        for domain in due {
            let finding = self.look_up(resolver, &domain, now, true).await;
            refreshed.push((domain, finding.fetch));
        }
        refreshed
    }

    /// `force`: fetch the policy even when the cached one has the record's id.
    async fn look_up(
        &self,
        resolver: &dyn Resolve,
        domain: &str,
        now: i64,
        force: bool,
    ) -> StsFinding {
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
        if let Some(p) = cached.as_ref().filter(|p| !force && p.id == record.id) {
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
            .filter(|p| p.is_valid_at(now) && p.id == record.id && (!force || p.fetched_at >= now))
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

/// Relay mode, at a RCPT: a domain under `opportunistic` or `dane` (default or entry), routed
/// by its MX records, gets its published MTA-STS policy for the hosts DANE does not cover
/// (RFC 8461 §4–5; `none`, `encrypt`, `verify` and `dane-only` entries are applied as
/// configured). `enforce` keeps only the MX hosts its patterns
/// name and verifies them against `mta_sts_trust_anchors` for the MX host name; `testing`
/// delivers as before and judges as `enforce` for the results; `none` or no policy changes
/// nothing. `Err`: no MX host is allowed.
pub async fn with_mta_sts(
    ctx: &crate::outbound::Context,
    mut route: Route,
    applied: Applied,
    domain: &str,
    record: &SessionRecord,
) -> Result<(Route, Applied), Refused> {
    let Some(sts) = &ctx.sts else {
        return Ok((route, applied));
    };
    // An entry's `none`, `encrypt`, `verify` and `dane-only` are applied exactly as configured.
    if !matches!(applied.mode, Mode::Opportunistic | Mode::Dane)
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
        // A policy may be published but could not be had: delivery goes on as before, and the
        // results (so the domain's TLS reports) say why (RFC 8460 §4.3.2.3).
        let mut applied = applied;
        if let Some(failure) = finding.fetch.and_then(FetchResult::result_type) {
            applied.sts_failure = Some(failure);
            applied.policy_type = crate::policy::PolicyType::Sts;
        }
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

/// Runs [`StsDiscovery::refresh_due`] every `every` until aborted (on shutdown, or when a
/// reload replaces the discovery); each refresh is logged.
pub fn spawn_refresh(
    sts: Arc<StsDiscovery>,
    resolver: Arc<dyn Resolve>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for (domain, result) in sts.refresh_due(resolver.as_ref(), now).await {
                crate::log::info("mta_sts_refreshed")
                    .field("domain", &domain)
                    .field("result", result.map_or("unchanged", FetchResult::as_str))
                    .emit();
            }
        }
    })
}

/// How often cached policies are checked for refresh: a policy's half-life is never shorter
/// than a day in practice (RFC 8461 §3.2 recommends weeks), an hour keeps it well inside.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// A discovery that fetched nothing new: the cached policy if any, counted under `result`.
fn finding(cached: Option<CachedPolicy>, result: FetchResult, why: String) -> StsFinding {
    crate::metrics::mta_sts_fetch(result.as_str());
    StsFinding {
        policy: cached,
        fetch: Some(result),
        detail: Some(why),
    }
}
