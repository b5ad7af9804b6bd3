//! Routing a recipient domain: `next_hop` when configured, else MX records by preference
//! (shuffled among equal preferences), the domain's own A/AAAA when it has no MX (RFC 5321
//! §5.1), and null MX (RFC 7505) as a permanent refusal.

use super::Context;
use crate::config::{NextHop, Outbound};
use crate::resolver::{DnsError, Resolve};
use crate::smtp::{reply, Reply};
use std::net::IpAddr;

/// One host to try, with its addresses in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The MX host name (SNI and the name `verify` checks), or the next hop's host or address.
    pub name: String,
    pub addrs: Vec<IpAddr>,
    /// The host's secure TLSA records, when DANE discovery found them (`discover::with_dane`).
    pub tlsa: Option<crate::policy::dane::SecureTlsa>,
}

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Hosts in the order to try them.
    pub hosts: Vec<MxHost>,
    pub port: u16,
    /// Identity of the destination: equal keys may share one MX session.
    pub key: String,
}

impl Route {
    /// No hosts: for look-ups that need a route's shape but not its hosts.
    pub fn empty() -> Route {
        Route {
            hosts: Vec::new(),
            port: 0,
            key: String::new(),
        }
    }
}

/// Why a domain has no route; each maps to the contract's reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// RFC 7505 null MX: `556 5.1.10`.
    #[error("domain publishes a null MX")]
    NullMx,
    /// NXDOMAIN: `550 5.1.2`.
    #[error("domain does not exist")]
    NoSuchDomain,
    /// No host name of the route has an address: `550 5.1.2` for the domain's own name,
    /// `451 4.4.1` for MX hosts (a broken MX is often fixed soon).
    #[error("no address for {0}")]
    NoAddress(String, bool),
    /// DNS timeout or SERVFAIL: `451 4.4.3`.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
}

impl RouteError {
    pub fn reply(&self, domain: &str) -> Reply {
        match self {
            RouteError::NullMx => reply::null_mx(domain),
            RouteError::NoSuchDomain => reply::no_such_domain(domain),
            RouteError::NoAddress(_, true) => reply::no_such_domain(domain),
            RouteError::NoAddress(host, false) => {
                reply::no_mx_reachable(domain, &format!("no address for MX host {host}"))
            }
            RouteError::Temporary(why) => reply::dns_temporary(domain, why),
        }
    }

    /// Label for the session log and `policy_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RouteError::NullMx => "null_mx",
            RouteError::NoSuchDomain => "no_such_domain",
            RouteError::NoAddress(..) => "no_address",
            RouteError::Temporary(_) => "dns_temporary",
        }
    }
}

/// The route for `domain` under the listener's configuration.
pub async fn route(ctx: &Context, domain: &str) -> Result<Route, RouteError> {
    route_for(ctx.resolver.as_ref(), &ctx.listener, domain).await
}

/// [`route`] without a session: for `starttls-proxy policy`.
pub async fn route_for(
    resolver: &dyn Resolve,
    listener: &Outbound,
    domain: &str,
) -> Result<Route, RouteError> {
    match &listener.next_hop {
        Some(hop) => next_hop(resolver, hop).await,
        None => match address_literal(domain) {
            // RFC 5321 §4.1.3: `user@[192.0.2.1]` goes to that address, no DNS.
            Some(ip) => Ok(Route {
                hosts: vec![MxHost {
                    name: ip.to_string(),
                    addrs: vec![ip],
                    tlsa: None,
                }],
                port: listener.mx_port,
                key: format!("literal {ip}:{}", listener.mx_port),
            }),
            None => mx_route(resolver, domain, listener.mx_port).await,
        },
    }
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
pub fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &inner[5..],
        _ => inner,
    };
    inner.parse().ok()
}

async fn next_hop(resolver: &dyn Resolve, hop: &NextHop) -> Result<Route, RouteError> {
    let addrs = match hop.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolve_host(resolver, &hop.host).await?,
    };
    if addrs.is_empty() {
        return Err(RouteError::NoAddress(hop.host.clone(), false));
    }
    Ok(Route {
        hosts: vec![MxHost {
            name: hop.host.clone(),
            addrs,
            tlsa: None,
        }],
        port: hop.port,
        key: format!("next-hop {hop}"),
    })
}

async fn resolve_host(resolver: &dyn Resolve, host: &str) -> Result<Vec<IpAddr>, RouteError> {
    match resolver.addrs(host).await {
        Ok(addrs) => Ok(addrs),
        Err(DnsError::NoSuchName | DnsError::NoRecords) => Ok(Vec::new()),
        Err(DnsError::Temporary(e)) => Err(RouteError::Temporary(e)),
    }
}

/// MX routing as RFC 5321 §5.1 says.
pub async fn mx_route(
    resolver: &dyn Resolve,
    domain: &str,
    port: u16,
) -> Result<Route, RouteError> {
    let (names, implicit) = match resolver.mx(domain).await {
        Ok(records) if is_null_mx(&records) => return Err(RouteError::NullMx),
        Ok(records) if !records.is_empty() => (order_mx(records, random_u32), false),
        Ok(_) | Err(DnsError::NoRecords) => (vec![domain.to_string()], true),
        Err(DnsError::NoSuchName) => return Err(RouteError::NoSuchDomain),
        Err(DnsError::Temporary(e)) => return Err(RouteError::Temporary(e)),
    };
    let mut key_names = names.clone();
    key_names.sort();
    let mut hosts = Vec::new();
    let mut temporary = None;
    for name in names {
        match resolver.addrs(&name).await {
            Ok(addrs) if !addrs.is_empty() => hosts.push(MxHost {
                name,
                addrs,
                tlsa: None,
            }),
            Ok(_) | Err(DnsError::NoSuchName | DnsError::NoRecords) => {}
            Err(DnsError::Temporary(e)) => temporary = Some(e),
        }
    }
    if hosts.is_empty() {
        return Err(match temporary {
            Some(e) => RouteError::Temporary(e),
            None => RouteError::NoAddress(key_names.join(","), implicit),
        });
    }
    Ok(Route {
        hosts,
        port,
        key: format!("mx {}:{port}", key_names.join(",")),
    })
}

/// RFC 7505 §3: a single MX of preference 0 whose exchange is the root. (A root exchange among
/// other records is ignored by [`order_mx`].)
fn is_null_mx(records: &[(u16, String)]) -> bool {
    records.len() == 1 && records[0].1.is_empty()
}

/// MX host names by preference, shuffled among equal preferences (RFC 5321 §5.1), without
/// root exchanges and duplicates.
pub fn order_mx(records: Vec<(u16, String)>, mut random: impl FnMut() -> u32) -> Vec<String> {
    let mut keyed: Vec<(u16, u32, String)> = records
        .into_iter()
        .filter(|(_, name)| !name.is_empty())
        .map(|(pref, name)| (pref, random(), name))
        .collect();
    keyed.sort();
    let mut out: Vec<String> = Vec::with_capacity(keyed.len());
    for (_, _, name) in keyed {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

pub(super) fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::Lookup;
    use std::collections::HashMap;

    #[test]
    fn address_literals() {
        assert_eq!(address_literal("[192.0.2.1]"), Some(ip("192.0.2.1")));
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            address_literal("[ipv6:2001:db8::1]"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(address_literal("192.0.2.1"), None);
        assert_eq!(address_literal("[example.org]"), None);
        assert_eq!(address_literal("[2001:db8::1]"), Some(ip("2001:db8::1")));
    }

    #[test]
    fn mx_order_by_preference_shuffled_among_equals() {
        let records = vec![
            (20, "c.example".to_string()),
            (10, "a.example".to_string()),
            (10, "b.example".to_string()),
            (30, "".to_string()),
        ];
        let mut seen_first = std::collections::HashSet::new();
        for seed in 0..64u32 {
            let mut n = seed;
            let order = order_mx(records.clone(), || {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                n >> 8
            });
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "c.example");
            seen_first.insert(order[0].clone());
        }
        assert_eq!(seen_first.len(), 2, "equal preferences must be shuffled");
    }

    type MxAnswer = Result<Vec<(u16, String)>, DnsError>;

    /// A table-driven resolver for routing decisions.
    struct Table {
        mx: HashMap<&'static str, MxAnswer>,
        addrs: HashMap<&'static str, Result<Vec<IpAddr>, DnsError>>,
    }

    impl Resolve for Table {
        fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Vec<(u16, String)>> {
            let r = self
                .mx
                .get(domain)
                .cloned()
                .unwrap_or(Err(DnsError::NoSuchName));
            Box::pin(async move { r })
        }
        fn addrs<'a>(&'a self, host: &'a str) -> Lookup<'a, Vec<IpAddr>> {
            let r = self
                .addrs
                .get(host)
                .cloned()
                .unwrap_or(Err(DnsError::NoSuchName));
            Box::pin(async move { r })
        }
        fn txt<'a>(&'a self, _name: &'a str) -> Lookup<'a, Vec<String>> {
            Box::pin(async move { Err(DnsError::NoRecords) })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn routing_table() {
        let t = Table {
            mx: HashMap::from([
                ("mx.example", Ok(vec![(10, "mx1.mx.example".to_string())])),
                ("null.example", Ok(vec![(0, String::new())])),
                ("nomx.example", Err(DnsError::NoRecords)),
                ("temp.example", Err(DnsError::Temporary("SERVFAIL".into()))),
                (
                    "dangling.example",
                    Ok(vec![(10, "gone.example".to_string())]),
                ),
                (
                    "tempaddr.example",
                    Ok(vec![(10, "slow.example".to_string())]),
                ),
            ]),
            addrs: HashMap::from([
                (
                    "mx1.mx.example",
                    Ok(vec![ip("192.0.2.1"), ip("2001:db8::1")]),
                ),
                ("nomx.example", Ok(vec![ip("192.0.2.2")])),
                ("slow.example", Err(DnsError::Temporary("timed out".into()))),
            ]),
        };
        let r = mx_route(&t, "mx.example", 25).await.unwrap();
        assert_eq!(r.hosts[0].name, "mx1.mx.example");
        assert_eq!(r.hosts[0].addrs.len(), 2);
        let r = mx_route(&t, "nomx.example", 25).await.unwrap();
        assert_eq!(r.hosts[0].name, "nomx.example");
        let table = [
            ("null.example", RouteError::NullMx, 556, "5.1.10"),
            ("nx.example", RouteError::NoSuchDomain, 550, "5.1.2"),
            (
                "temp.example",
                RouteError::Temporary("SERVFAIL".into()),
                451,
                "4.4.3",
            ),
            (
                "dangling.example",
                RouteError::NoAddress("gone.example".into(), false),
                451,
                "4.4.1",
            ),
            (
                "tempaddr.example",
                RouteError::Temporary("timed out".into()),
                451,
                "4.4.3",
            ),
        ];
        for (domain, error, code, enhanced) in table {
            let e = mx_route(&t, domain, 25).await.unwrap_err();
            assert_eq!(e, error, "{domain}");
            let reply = e.reply(domain);
            assert_eq!(reply.code, code, "{domain}");
            assert!(
                reply.first_text().starts_with(enhanced),
                "{domain}: {reply:?}"
            );
            assert!(reply.first_text().contains(domain), "{domain}: {reply:?}");
        }
    }
}
