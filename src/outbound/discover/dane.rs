//! DANE discovery (RFC 7672 §2.1–2.2): the domain's MX records, the hosts' addresses and their
//! TLSA records through the validating resolver, judged secure, insecure or bogus by this
//! proxy's own validation; what it finds decides which hosts are used and how each is judged.

use crate::outbound::establish::{DaneProblem, Refusal, Refused};
use crate::outbound::route::{self, MxHost, Route};
use crate::policy::dane::{SecureTlsa, Tlsa, TlsaSet};
use crate::policy::{Applied, Mode};
use crate::resolver::dnssec::{Denial, Validated};
use crate::session::{AttemptResult, SessionRecord};
use crate::state::results::Outcome;
use std::net::SocketAddr;

/// What DANE discovery found for a domain's route (RFC 7672 §2.1–2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneFinding {
    /// DANE does not apply to the domain: nothing proves its MX records, or DNSSEC validation is
    /// unavailable (the reason).
    NotApplicable(String),
    /// The domain's MX records failed validation or got no verdict: deferred.
    Failed(DaneProblem),
    /// The route rebuilt from the validated answers: hosts with secure addresses carry their
    /// secure TLSA records; `skipped` are the hosts DANE takes out, in route order.
    Route {
        route: Route,
        skipped: Vec<SkippedHost>,
    },
}

/// An MX host DANE does not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedHost {
    pub name: String,
    pub addrs: Vec<std::net::IpAddr>,
    pub problem: DaneProblem,
}

/// DANE discovery without a session (the `policy` command uses it as it is): `secure` is the
/// validating resolver if validation is available, `next_hop` whether the route is a configured
/// next hop (its host is the one host, no MX step), `only` for `dane-only` (a host without
/// usable TLSA records is skipped with [`DaneProblem::Required`]).
pub async fn find_dane(
    secure: Option<&dyn crate::resolver::dnssec::ResolveSecure>,
    next_hop: bool,
    route: &Route,
    domain: &str,
    only: bool,
) -> DaneFinding {
    let names = match secure_names(secure, next_hop, route, domain).await {
        Ok(names) => names,
        Err(NoDane::Failed(problem)) => return DaneFinding::Failed(problem),
        Err(NoDane::Insecure(why)) => return DaneFinding::NotApplicable(why),
    };
    let Some(secure) = secure else {
        return DaneFinding::NotApplicable("DNSSEC validation is unavailable".into());
    };
    let mut hosts = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        let (addrs, addrs_secure) = match secure.addrs(&name).await {
            Validated::Secure(a) => (a, true),
            Validated::Insecure(a) => (a, false),
            Validated::Bogus(why) => {
                let owner = format!("{name} A/AAAA");
                skipped.push(SkippedHost::new(
                    name,
                    Vec::new(),
                    DaneProblem::Bogus { name: owner, why },
                ));
                continue;
            }
            Validated::Error(why) => {
                let owner = format!("{name} A/AAAA");
                skipped.push(SkippedHost::new(
                    name,
                    Vec::new(),
                    DaneProblem::LookupFailed { name: owner, why },
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
            let owner = format!("_{}._tcp.{name} TLSA", route.port);
            match secure.tlsa(&name, route.port).await {
                Validated::Secure(records) if !records.is_empty() => Some(SecureTlsa::new(
                    records.into_iter().map(Tlsa::from).collect(),
                )),
                Validated::Bogus(why) => {
                    skipped.push(SkippedHost::new(
                        name,
                        addrs,
                        DaneProblem::Bogus { name: owner, why },
                    ));
                    continue;
                }
                Validated::Error(why) => {
                    skipped.push(SkippedHost::new(
                        name,
                        addrs,
                        DaneProblem::LookupFailed { name: owner, why },
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
            skipped.push(SkippedHost::new(name, addrs, DaneProblem::Required { why }));
            continue;
        }
        hosts.push(MxHost { name, addrs, tlsa });
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
    DaneFinding::Route {
        route: Route {
            key: format!("{} dane {}", route.key, marks.join(",")),
            hosts,
            port: route.port,
        },
        skipped,
    }
}

impl SkippedHost {
    fn new(name: String, addrs: Vec<std::net::IpAddr>, problem: DaneProblem) -> SkippedHost {
        SkippedHost {
            name,
            addrs,
            problem,
        }
    }
}

/// Relay mode, at a RCPT, before MTA-STS: [`find_dane`] for a domain under `dane` or
/// `dane-only`, with its consequences for the session. Bogus or failed answers take the host
/// (or, for the MX RRset, the domain) out of the route, never down to plaintext; each skipped
/// host is logged and recorded. A domain DANE does not apply to keeps its route (`dane-only`:
/// refused).
pub async fn with_dane(
    ctx: &crate::outbound::Context,
    route: Route,
    applied: &Applied,
    domain: &str,
    record: &mut SessionRecord,
) -> Result<Route, Refused> {
    if !applied.mode.wants_dane() {
        return Ok(route);
    }
    let only = applied.mode == Mode::DaneOnly;
    let secure = ctx.secure.as_deref().filter(|s| s.is_available());
    let next_hop = ctx.listener.next_hop.is_some();
    let finding = find_dane(secure, next_hop, &route, domain, only).await;
    let id = record.id.clone();
    let refuse = |problem| dane_refused(ctx, applied, domain, &id, problem);
    match finding {
        DaneFinding::NotApplicable(why) if only => Err(refuse(DaneProblem::Required { why })),
        DaneFinding::NotApplicable(_) => Ok(route),
        DaneFinding::Failed(problem) => Err(refuse(problem)),
        DaneFinding::Route {
            route: dane_route,
            skipped,
        } => {
            let last = skipped.last().map(|s| s.problem.clone());
            for host in skipped {
                skip_host(ctx, applied, domain, host, route.port, record);
            }
            if dane_route.hosts.is_empty() {
                return Err(refuse(last.unwrap_or(DaneProblem::LookupFailed {
                    name: format!("{domain} MX"),
                    why: "no MX host has a validated address".into(),
                })));
            }
            Ok(dane_route)
        }
    }
}

/// Transparent mode, at a RCPT: DANE for the host the MTA already chose and the proxy already
/// reached (the recipient domain is known only now). DANE applies when `addr` is a secure
/// address of one of the domain's secure MX hosts and that host has secure TLSA records at
/// `_<port>._tcp.<host>`: `Some((host, records))`. Anything else is `None` under `dane` and
/// a refusal under `dane-only`; bogus or failed answers are refusals under both.
pub async fn dane_for_connected(
    ctx: &crate::outbound::Context,
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
    ctx: &crate::outbound::Context,
    domain: &str,
    addr: SocketAddr,
) -> Result<(String, SecureTlsa), NoDane> {
    let secure = ctx.secure.as_deref().filter(|s| s.is_available());
    let names = secure_names(secure, false, &Route::empty(), domain).await?;
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
    ctx: &crate::outbound::Context,
    applied: &Applied,
    domain: &str,
    record: &SessionRecord,
) -> Option<Refused> {
    if !applied.mode.wants_dane() {
        return None;
    }
    let secure = ctx.secure.as_deref().filter(|s| s.is_available())?;
    let problem = mx_bogus(secure, domain).await?;
    Some(dane_refused(ctx, applied, domain, &record.id, problem))
}

/// The domain's MX records as the validating resolver sees them, when they are bogus.
pub async fn mx_bogus(
    secure: &dyn crate::resolver::dnssec::ResolveSecure,
    domain: &str,
) -> Option<DaneProblem> {
    match secure.mx(domain).await {
        Validated::Bogus(why) => Some(DaneProblem::Bogus {
            name: format!("{domain} MX"),
            why,
        }),
        _ => None,
    }
}

/// DANE refuses the whole domain: counted, logged, and the MTA's reply.
fn dane_refused(
    ctx: &crate::outbound::Context,
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
            crate::outbound::connect::summary(&refusal.reply(&ctx.config.hostname)),
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
    next_hop: bool,
    route: &Route,
    domain: &str,
) -> Result<Vec<String>, NoDane> {
    let Some(secure) = secure else {
        return Err(NoDane::Insecure("DNSSEC validation is unavailable".into()));
    };
    if next_hop {
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
/// report tells the domain its TLSA or address records do not validate).
fn skip_host(
    ctx: &crate::outbound::Context,
    applied: &Applied,
    domain: &str,
    host: SkippedHost,
    port: u16,
    record: &mut SessionRecord,
) {
    let refusal = Refusal::Dane {
        domain: domain.to_string(),
        problem: host.problem,
    };
    crate::log::warn("dane_host_skipped")
        .field("id", &record.id)
        .field("listener", &ctx.listener.name)
        .field("domain", domain)
        .field("mx", &host.name)
        .field("reason", refusal.reason())
        .field("detail", problem_detail(&refusal))
        .field(
            "reply",
            crate::outbound::connect::summary(&refusal.reply(&ctx.config.hostname)),
        )
        .emit();
    let ip = host
        .addrs
        .first()
        .copied()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    record.results.push(AttemptResult {
        domain: Some(domain.to_string()),
        mx_host: Some(host.name),
        remote: SocketAddr::new(ip, port),
        local: None,
        tls: None,
        outcome: refusal
            .result_type()
            .map_or(Outcome::Success, Outcome::Failure),
        policy_type: crate::policy::PolicyType::Tlsa,
        policy_strings: applied.policy_strings.clone(),
    });
}
