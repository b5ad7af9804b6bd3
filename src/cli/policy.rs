//! `starttls-proxy policy DOMAIN`: what would apply to mail for a domain now and why — the
//! configured mode, what DANE finds (MX records, each host's addresses and TLSA records, judged
//! by the proxy's own DNSSEC validation), the MTA-STS policy and its age, and per outbound
//! listener the hosts that would be tried and how each would be judged — by the same discovery
//! code a session runs, without connecting to any MX or sending mail. The state directory is
//! read, never written: a policy fetched here lives in a scratch cache.

use crate::config::{Config, Outbound, OutboundMode};
use crate::https::HttpsClient;
use crate::log::format_unix;
use crate::outbound::discover::{self, DaneFinding, StsDiscovery};
use crate::outbound::establish::{DaneProblem, Refusal};
use crate::outbound::route::{self, Route};
use crate::policy::mta_sts::StsMode;
use crate::policy::{Applied, Mode};
use crate::resolver::dnssec::ResolveSecure;
use crate::resolver::Resolve;
use crate::state::mta_sts::StsCache;
use std::fmt::Write;
use std::net::SocketAddr;

/// What the command found.
pub struct Explained {
    /// The report printed on stdout.
    pub text: String,
    /// Listeners through which mail for the domain would not leave now, with the reply the MTA
    /// would get: no route, or the domain's policy leaves no usable host.
    pub unreachable: Vec<(String, String)>,
}

/// What the command needs besides the configuration.
pub struct Lookups<'a> {
    pub resolver: &'a dyn Resolve,
    /// The validating resolver, after its self-test (`None`: no domain wants DANE, or it could
    /// not be built; `why_not` says which).
    pub secure: Option<&'a dyn ResolveSecure>,
    pub why_not: Option<String>,
    /// MTA-STS discovery over a scratch cache seeded from the state directory's.
    pub sts: Option<&'a StsDiscovery>,
}

/// The MTA-STS discovery the command uses: the configured trust anchors, a scratch cache in
/// `scratch` holding what the state directory's cache holds for `domain`.
pub fn sts_discovery(
    config: &Config,
    domain: &str,
    scratch: &std::path::Path,
) -> Option<StsDiscovery> {
    let policy = &config.outbound_policy;
    if !policy.mta_sts {
        return None;
    }
    let webpki = policy.mta_sts_anchors.webpki()?;
    let cache = StsCache::open(scratch).ok()?;
    let kept_dir = config.state.mta_sts_dir();
    // Opened only if it exists: opening creates the directory.
    if kept_dir.is_dir() {
        if let Some(p) = StsCache::open(&kept_dir).ok().and_then(|c| c.get(domain)) {
            let _ = cache.put(p);
        }
    }
    let https = HttpsClient::new(
        webpki,
        discover::FETCH_TIMEOUT,
        crate::policy::mta_sts::MAX_POLICY_BYTES,
    );
    Some(StsDiscovery::new(std::sync::Arc::new(cache), https, 443))
}

pub async fn explain(config: &Config, lookups: &Lookups<'_>, domain: &str) -> Explained {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let applied = config.outbound_policy.lookup(&domain, now);
    let mut out = format!("domain: {domain}\n");
    let entry = match applied.entry {
        Some(_) => format!("[[outbound_policy.domain]] {}", applied.label),
        None => "outbound_policy.default".to_string(),
    };
    let _ = writeln!(out, "policy: {} (from {entry})", applied.mode);
    describe_mode(&mut out, &applied);
    if applied.mode.wants_dane() {
        let _ = match (&lookups.secure, &lookups.why_not) {
            (Some(_), _) => writeln!(out, "DNSSEC: validation available"),
            (None, why) => writeln!(
                out,
                "DNSSEC: validation unavailable ({}): DANE cannot apply",
                why.as_deref().unwrap_or("no validating resolver")
            ),
        };
    }
    let default_listener = Outbound {
        name: "(none configured)".into(),
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        mode: OutboundMode::Relay,
        next_hop: None,
        mx_port: 25,
        proxy_protocol_from: Default::default(),
        interception: Default::default(),
    };
    let listeners: Vec<&Outbound> = if config.outbound.is_empty() {
        vec![&default_listener]
    } else {
        config.outbound.iter().map(|l| l.as_ref()).collect()
    };
    let mut unreachable = Vec::new();
    for listener in listeners {
        let _ = writeln!(out, "route via outbound {}:", listener.name);
        if let Err(reply) =
            listener_route(&mut out, config, lookups, listener, &applied, &domain, now).await
        {
            let _ = writeln!(out, "  no route: {reply}");
            unreachable.push((listener.name.clone(), reply));
        }
    }
    Explained {
        text: out,
        unreachable,
    }
}

fn describe_mode(out: &mut String, applied: &Applied) {
    if applied.mode == Mode::Verify {
        let _ = writeln!(
            out,
            "  trust anchors: {} ({} CAs)",
            applied.trust_anchors.label, applied.trust_anchors.count
        );
        let mut names = vec!["the MX host name".to_string()];
        names.extend(applied.match_names.iter().cloned());
        let _ = writeln!(out, "  certificate names accepted: {}", names.join(", "));
    }
    match applied.relax_until {
        Some(until) if applied.relaxed => {
            let _ = writeln!(
                out,
                "  relaxed until {}: failures fall back to opportunistic",
                format_unix(until)
            );
        }
        Some(until) => {
            let _ = writeln!(out, "  relax_until {} has passed", format_unix(until));
        }
        None => {}
    }
}

/// One listener's part: route, DANE, MTA-STS, then the hosts in order with how each would be
/// judged. `Err`: the reply the MTA would get instead.
async fn listener_route(
    out: &mut String,
    config: &Config,
    lookups: &Lookups<'_>,
    listener: &Outbound,
    applied: &Applied,
    domain: &str,
    now: i64,
) -> Result<(), String> {
    let summary = |reply: crate::smtp::Reply| format!("{} {}", reply.code, reply.first_text());
    let refusal = |problem| {
        summary(
            Refusal::Dane {
                domain: domain.to_string(),
                problem,
            }
            .reply(&config.hostname),
        )
    };
    let mut route = match route::route_for(lookups.resolver, listener, domain).await {
        Ok(route) => route,
        Err(e) => {
            // As a session does: bogus MX records are the reason, not a DNS hiccup.
            if let (route::RouteError::Temporary(_), true, Some(secure)) =
                (&e, applied.mode.wants_dane(), lookups.secure)
            {
                if let Some(problem) = discover::mx_bogus(secure, domain).await {
                    let _ = writeln!(out, "  DANE: {}", problem.detail());
                    return Err(refusal(problem));
                }
            }
            return Err(summary(e.reply(domain)));
        }
    };
    if applied.mode.wants_dane() {
        let only = applied.mode == Mode::DaneOnly;
        let next_hop = listener.next_hop.is_some();
        match discover::find_dane(lookups.secure, next_hop, &route, domain, only).await {
            DaneFinding::NotApplicable(why) => {
                let _ = writeln!(out, "  DANE: does not apply: {why}");
                if only {
                    return Err(refusal(DaneProblem::Required { why }));
                }
            }
            DaneFinding::Failed(problem) => {
                let _ = writeln!(out, "  DANE: {}", problem.detail());
                return Err(refusal(problem));
            }
            DaneFinding::Route {
                route: dane_route,
                skipped,
            } => {
                let _ = writeln!(out, "  DANE: MX records DNSSEC-signed (secure)");
                let last = skipped.last().map(|s| s.problem.clone());
                for host in &skipped {
                    let _ = writeln!(
                        out,
                        "  not used: {}: {}",
                        host.name,
                        problem_words(&host.problem)
                    );
                }
                if dane_route.hosts.is_empty() {
                    return Err(refusal(last.unwrap_or(DaneProblem::LookupFailed {
                        name: format!("{domain} MX"),
                        why: "no MX host has a validated address".into(),
                    })));
                }
                route = dane_route;
            }
        }
    }
    let sts = sts_part(out, lookups, listener, applied, &route, domain, now).await;
    let mut allowed = route.hosts.len();
    if let Some(policy) = &sts {
        if policy.mode == StsMode::Enforce {
            allowed = route
                .hosts
                .iter()
                .filter(|h| h.tlsa.is_some() || policy.allows_mx(&h.name))
                .count();
        }
    }
    for (i, host) in route.hosts.iter().enumerate() {
        let addrs: Vec<String> = host.addrs.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            out,
            "  {}. {} port {}: {}",
            i + 1,
            host.name,
            route.port,
            addrs.join(", ")
        );
        let _ = writeln!(out, "     {}", host_judgement(host, applied, sts.as_ref()));
    }
    if allowed == 0 {
        let hosts: Vec<String> = route.hosts.iter().map(|h| h.name.clone()).collect();
        return Err(summary(
            Refusal::StsNoMatchingMx {
                domain: domain.to_string(),
                hosts,
            }
            .reply(&config.hostname),
        ));
    }
    Ok(())
}

/// MTA-STS for the domain, when it would be consulted: printed, and the policy in force.
async fn sts_part(
    out: &mut String,
    lookups: &Lookups<'_>,
    listener: &Outbound,
    applied: &Applied,
    route: &Route,
    domain: &str,
    now: i64,
) -> Option<crate::policy::mta_sts::StsPolicy> {
    let consulted = matches!(applied.mode, Mode::Opportunistic | Mode::Dane)
        && listener.next_hop.is_none()
        && !route.hosts.iter().all(|h| h.tlsa.is_some());
    if !consulted {
        return None;
    }
    let Some(sts) = lookups.sts else {
        let _ = writeln!(
            out,
            "  MTA-STS: not consulted (mta_sts = false or no WebPKI roots)"
        );
        return None;
    };
    let finding = sts.discover(lookups.resolver, domain, now).await;
    if let (Some(result), Some(detail)) = (finding.fetch, &finding.detail) {
        let _ = writeln!(out, "  MTA-STS lookup: {}: {detail}", result.as_str());
    }
    let Some(policy) = &finding.policy else {
        let _ = writeln!(out, "  MTA-STS: no policy published");
        return None;
    };
    let age = now - policy.fetched_at;
    let _ = writeln!(
        out,
        "  MTA-STS: mode {}, id {}, fetched {} ({}h{:02}m ago), max_age {} s, mx: {}",
        policy.policy.mode,
        policy.id,
        format_unix(policy.fetched_at),
        age / 3600,
        age % 3600 / 60,
        policy.policy.max_age,
        policy.policy.mx.join(", ")
    );
    finding.in_force().map(|p| p.policy.clone())
}

/// How one host would be judged, in the precedence order of the README's table.
fn host_judgement(
    host: &route::MxHost,
    applied: &Applied,
    sts: Option<&crate::policy::mta_sts::StsPolicy>,
) -> String {
    if let Some(tlsa) = &host.tlsa {
        return match tlsa.set {
            crate::policy::dane::TlsaSet::Usable(_) => format!(
                "DANE: secure TLSA {}: TLS required, certificate judged by these records",
                tlsa.strings.join("; ")
            ),
            crate::policy::dane::TlsaSet::Unusable => format!(
                "DANE: secure TLSA without a usable record ({}): TLS required, not authenticated",
                tlsa.strings.join("; ")
            ),
        };
    }
    match sts {
        Some(p) if p.mode == StsMode::Enforce && !p.allows_mx(&host.name) => {
            "MTA-STS enforce: not named by the policy, not used".into()
        }
        Some(p) if p.mode == StsMode::Enforce => {
            "MTA-STS enforce: TLS required, WebPKI certificate for the host name".into()
        }
        Some(_) => {
            "MTA-STS testing: opportunistic, failures recorded as enforce would judge them".into()
        }
        None => match applied.mode {
            Mode::Dane => "no TLSA, no MTA-STS policy: opportunistic".into(),
            mode => format!("{mode}"),
        },
    }
}

fn problem_words(problem: &DaneProblem) -> String {
    match problem {
        DaneProblem::Bogus { name, why } => format!("{name} does not validate (bogus): {why}"),
        DaneProblem::LookupFailed { name, why } => format!("{name}: look-up failed: {why}"),
        DaneProblem::Required { why } => why.clone(),
    }
}
