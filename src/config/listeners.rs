//! The listeners: `[[inbound]]` (internet senders → legacy MTA), `[[outbound]]` (legacy MTA →
//! internet) and `[admin]`; their addresses, names and what each relays to.

use super::{is_valid_hostname, ConfigError, Ctx};
use crate::net::backend::ClientAddress;
use crate::net::original_dst::Interception;
use crate::net::proxy_protocol::TrustedBalancers;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use toml::Spanned;

/// How an `[[outbound]]` listener gets its mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundMode {
    /// The legacy MTA uses the proxy as its relayhost (smarthost).
    Relay,
    /// The legacy MTA's port-25 connections are redirected to the proxy (nft/iptables).
    Transparent,
}

/// A fixed next hop instead of MX routing: a host name (A/AAAA) or an IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One `[[outbound]]` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Label in logs and metrics.
    pub name: String,
    pub listen: SocketAddr,
    pub mode: OutboundMode,
    /// Relay mode: deliver everything here instead of looking up MX records.
    pub next_hop: Option<NextHop>,
    /// Port of MX hosts (25 on the internet; tests use others).
    pub mx_port: u16,
    /// Balancers whose connections begin with a PROXY header naming the MTA.
    pub proxy_protocol_from: TrustedBalancers,
    /// Transparent mode: how the MTA's connections are steered here (`tproxy`: TPROXY, else
    /// REDIRECT and SO_ORIGINAL_DST).
    pub interception: Interception,
}

/// The admin HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
}

/// One `[[inbound]]` listener: internet senders in front, the legacy MTA behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Label in logs and metrics.
    pub name: String,
    pub listen: SocketAddr,
    /// The plaintext MTA the sessions are relayed to: the first of `backend_addrs`.
    pub backend: SocketAddr,
    /// `backend` as written: an address, or a host name resolved at load (and every reload).
    pub backend_name: String,
    /// Every address `backend_name` resolved to, tried in this order.
    pub backend_addrs: Vec<SocketAddr>,
    /// MAIL/RCPT before STARTTLS are refused with `530 5.7.0`.
    pub require_tls: bool,
    /// Sender domains that must arrive over TLS (`450 4.7.1` otherwise).
    pub require_tls_senders: DomainSet,
    /// Recipient domains that must be reached over TLS (`450 4.7.1` otherwise).
    pub require_tls_recipients: DomainSet,
    /// Balancers whose connections begin with a PROXY header naming the client (and must).
    pub proxy_protocol_from: TrustedBalancers,
    /// How the backend learns the client's address.
    pub client_address: ClientAddress,
    /// How connections reach the listener (`tproxy`: addressed to other hosts).
    pub interception: Interception,
    /// Where sessions go: `backend_addrs`, or each connection's original destination.
    pub backend_target: BackendTarget,
}

/// Where an inbound listener relays its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTarget {
    /// The configured `backend` (its `backend_addrs`).
    Configured,
    /// `backend = "original-destination"` (with `interception = "tproxy"`): the address each
    /// intercepted connection was sent to.
    OriginalDestination,
}

impl Inbound {
    /// Whether a plaintext session must have its envelope inspected before it may be spliced.
    pub fn enforces_tls(&self) -> bool {
        self.require_tls
            || !self.require_tls_senders.is_empty()
            || !self.require_tls_recipients.is_empty()
    }
}

/// Domains as in the contract: `example.org` matches itself, `.example.org` its subdomains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSet {
    exact: HashSet<String>,
    suffixes: Vec<String>,
}

impl DomainSet {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// Every entry as configured (`bank.example`, `.gov.example`), sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .exact
            .iter()
            .chain(self.suffixes.iter())
            .cloned()
            .collect();
        all.sort();
        all
    }

    /// `domain` must already be lowercase without a trailing dot (as `Command::parse` gives it).
    pub fn contains(&self, domain: &str) -> bool {
        self.entry_for(domain).is_some()
    }

    /// The entry `domain` falls under, as configured (`bank.example` or `.gov.example`): a
    /// metric label from the configuration's own bounded set.
    pub fn entry_for(&self, domain: &str) -> Option<&str> {
        if let Some(exact) = self.exact.get(domain) {
            return Some(exact.as_str());
        }
        self.suffixes
            .iter()
            .find(|s| domain.ends_with(s.as_str()))
            .map(String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    name: Option<Spanned<String>>,
    listen: Spanned<ListenAddr>,
    backend: Spanned<String>,
    #[serde(default)]
    require_tls: bool,
    #[serde(default)]
    require_tls_senders: Vec<Spanned<String>>,
    #[serde(default)]
    require_tls_recipients: Vec<Spanned<String>>,
    #[serde(default)]
    proxy_protocol_from: Vec<Spanned<String>>,
    #[serde(default)]
    client_address: ClientAddress,
    #[serde(default)]
    interception: Interception,
}

impl RawAdmin {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<Admin, ConfigError> {
        Ok(Admin {
            listen: resolve_address(ctx, "admin.listen", &self.listen, None)?[0],
        })
    }
}

impl RawInbound {
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        index: usize,
        span: std::ops::Range<usize>,
        has_certificate: bool,
        names: &mut HashSet<String>,
        addrs: &mut HashSet<SocketAddr>,
    ) -> Result<Inbound, ConfigError> {
        let key = format!("inbound[{index}]");
        if !has_certificate {
            return Err(ctx.error(
                &key,
                span,
                "an inbound listener needs [tls] certificate and private_key (or tls.self_signed = true)",
            ));
        }
        let (listen, name) = listener_identity(ctx, &key, &self.listen, self.name, names, addrs)?;
        let interception = self.interception;
        let backend_target = match self.backend.get_ref().trim() {
            "original-destination" if interception == Interception::Tproxy => {
                BackendTarget::OriginalDestination
            }
            "original-destination" => {
                return Err(ctx.error(
                    &format!("{key}.backend"),
                    self.backend.span(),
                    "\"original-destination\" needs interception = \"tproxy\" (connections addressed to other hosts)",
                ))
            }
            _ => BackendTarget::Configured,
        };
        let backend_addrs = match backend_target {
            BackendTarget::Configured => {
                resolve_address(ctx, &format!("{key}.backend"), &self.backend, Some(25))?
            }
            BackendTarget::OriginalDestination => Vec::new(),
        };
        Ok(Inbound {
            name,
            listen,
            backend: backend_addrs
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            backend_name: self.backend.get_ref().clone(),
            backend_addrs,
            require_tls: self.require_tls,
            require_tls_senders: domain_set(
                ctx,
                &format!("{key}.require_tls_senders"),
                self.require_tls_senders,
            )?,
            require_tls_recipients: domain_set(
                ctx,
                &format!("{key}.require_tls_recipients"),
                self.require_tls_recipients,
            )?,
            proxy_protocol_from: trusted_balancers(
                ctx,
                &format!("{key}.proxy_protocol_from"),
                self.proxy_protocol_from,
            )?,
            client_address: self.client_address,
            interception,
            backend_target,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbound {
    name: Option<Spanned<String>>,
    listen: Spanned<ListenAddr>,
    #[serde(default = "default_outbound_mode")]
    mode: OutboundMode,
    next_hop: Option<Spanned<String>>,
    mx_port: Option<Spanned<u16>>,
    #[serde(default)]
    proxy_protocol_from: Vec<Spanned<String>>,
    interception: Option<Spanned<Interception>>,
}

impl RawOutbound {
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        index: usize,
        _span: std::ops::Range<usize>,
        names: &mut HashSet<String>,
        addrs: &mut HashSet<SocketAddr>,
    ) -> Result<Outbound, ConfigError> {
        let key = format!("outbound[{index}]");
        let (listen, name) = listener_identity(ctx, &key, &self.listen, self.name, names, addrs)?;
        let mode = self.mode;
        let next_hop = match self.next_hop {
            Some(hop) if mode == OutboundMode::Transparent => {
                return Err(ctx.error(
                    &format!("{key}.next_hop"),
                    hop.span(),
                    "transparent mode delivers to each connection's original destination; next_hop is for mode = \"relay\"",
                ))
            }
            Some(hop) => Some(parse_next_hop(hop.get_ref()).ok_or_else(|| {
                ctx.error(
                    &format!("{key}.next_hop"),
                    hop.span(),
                    format!(
                        "{:?} is not a next hop (use \"host.example:25\", \"192.0.2.1:25\" or \"[2001:db8::1]:25\")",
                        hop.get_ref()
                    ),
                )
            })?),
            None => None,
        };
        let mx_port = match self.mx_port {
            Some(p) if *p.get_ref() == 0 => {
                return Err(ctx.error(
                    &format!("{key}.mx_port"),
                    p.span(),
                    "must be a port from 1 to 65535",
                ))
            }
            Some(p) => *p.get_ref(),
            None => 25,
        };
        let interception = match self.interception {
            Some(i) if *i.get_ref() == Interception::Tproxy && mode != OutboundMode::Transparent => {
                return Err(ctx.error(
                    &format!("{key}.interception"),
                    i.span(),
                    "interception = \"tproxy\" is for mode = \"transparent\" (a relayhost is connected to directly)",
                ))
            }
            Some(i) => *i.get_ref(),
            None => Interception::None,
        };
        Ok(Outbound {
            name,
            listen,
            mode,
            next_hop,
            mx_port,
            interception,
            proxy_protocol_from: trusted_balancers(
                ctx,
                &format!("{key}.proxy_protocol_from"),
                self.proxy_protocol_from,
            )?,
        })
    }
}

fn default_outbound_mode() -> OutboundMode {
    OutboundMode::Relay
}

/// `host:port`, `[v6]:port`, `ip:port` or a bare host (port 25).
pub(super) fn parse_next_hop(text: &str) -> Option<NextHop> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(NextHop {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok().filter(|&p: &u16| p > 0)?),
        Some(_) => return None,
        None => (text, 25),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (host.parse::<std::net::IpAddr>().is_ok() || is_valid_hostname(&host))
        .then_some(NextHop { host, port })
}

/// A listener's address: an IP address and a port (a socket binds addresses, not names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListenAddr(SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(ListenAddr).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an IP address and port: a listener needs one, like \"0.0.0.0:25\", \"127.0.0.1:10025\" or \"[::]:25\""
            ))
        })
    }
}

/// `ip:port`, `[v6]:port`, or `host:port` resolved now by the system resolver (/etc/hosts,
/// /etc/resolv.conf): at start and at every reload, never per session. `default_port` applies
/// to a bare host or address. A name that does not resolve is a runtime failure (exit 1).
fn resolve_address(
    ctx: &Ctx,
    key: &str,
    value: &Spanned<String>,
    default_port: Option<u16>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    use std::net::{IpAddr, ToSocketAddrs};
    let text = value.get_ref().trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let example = match default_port {
        Some(_) => "\"10.0.0.25:25\", \"[2001:db8::25]:25\" or \"mta.internal:25\"",
        None => "\"127.0.0.1:9125\", \"[::1]:9125\" or \"localhost:9125\"",
    };
    let malformed = || {
        ctx.error(
            key,
            value.span(),
            format!("{text:?} is not an address: use an IP address or a host name, and a port, like {example}"),
        )
    };
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(malformed)?,
        ),
        Some(_) => return Err(malformed()),
        None => (text, default_port.ok_or_else(malformed)?),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if !is_valid_hostname(host.trim_end_matches('.')) {
        return Err(malformed());
    }
    let unresolved = |why: String| {
        ctx.runtime_error(
            key,
            value.span(),
            format!("cannot resolve host name {host:?}: {why} (names are resolved by the system resolver at start and at every reload; an IP address needs no lookup)"),
        )
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in (host, port)
        .to_socket_addrs()
        .map_err(|e| unresolved(e.to_string()))?
    {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(unresolved("no address".into()));
    }
    Ok(addrs)
}

/// A listener's address and name (default: the address), each unique across all listeners.
fn listener_identity(
    ctx: &Ctx,
    key: &str,
    listen: &Spanned<ListenAddr>,
    name: Option<Spanned<String>>,
    names: &mut HashSet<String>,
    addrs: &mut HashSet<SocketAddr>,
) -> Result<(SocketAddr, String), ConfigError> {
    let addr = listen.get_ref().0;
    if !addrs.insert(addr) {
        return Err(ctx.error(
            &format!("{key}.listen"),
            listen.span(),
            format!("{addr} is used by another listener"),
        ));
    }
    let Some(name) = name else {
        return Ok((addr, addr.to_string()));
    };
    let span = name.span();
    let name = name.into_inner();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ctx.error(
            &format!("{key}.name"),
            span,
            "use letters, digits, '-', '_' and '.' only",
        ));
    }
    if !names.insert(name.clone()) {
        return Err(ctx.error(
            &format!("{key}.name"),
            span,
            format!("{name:?} is used by another listener"),
        ));
    }
    Ok((addr, name))
}

fn domain_set(
    ctx: &Ctx,
    key: &str,
    entries: Vec<Spanned<String>>,
) -> Result<DomainSet, ConfigError> {
    let mut set = DomainSet::default();
    for entry in entries {
        let span = entry.span();
        let text = entry
            .into_inner()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let (suffix, name) = match text.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        if !is_valid_hostname(name) {
            return Err(ctx.error(
                key,
                span,
                format!("{text:?} is not a domain (use \"example.org\" or \".example.org\")"),
            ));
        }
        if suffix {
            set.suffixes.push(format!(".{name}"));
        } else {
            set.exact.insert(name.to_string());
        }
    }
    Ok(set)
}

/// `proxy_protocol_from`: CIDRs (`10.0.0.0/24`, `2001:db8::/64`) or single addresses.
fn trusted_balancers(
    ctx: &Ctx,
    key: &str,
    entries: Vec<Spanned<String>>,
) -> Result<TrustedBalancers, ConfigError> {
    use ipnet::IpNet;
    let mut networks = Vec::with_capacity(entries.len());
    for entry in entries {
        let text = entry.get_ref().trim();
        let network = text
            .parse::<IpNet>()
            .map(|n| n.trunc())
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ctx.error(
                    key,
                    entry.span(),
                    format!("{text:?} is not a network: use a CIDR like \"10.0.0.0/24\" or \"2001:db8::/64\", or one address"),
                )
            })?;
        networks.push(network);
    }
    Ok(TrustedBalancers::new(networks))
}
