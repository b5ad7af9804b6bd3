//! Inline interception: where an intercepted connection was going (`interception = "tproxy"`:
//! the accepted socket's own local address, which the nft TPROXY rule leaves as the client
//! addressed it), and the one loop guard every mode shares: a connection whose destination is
//! one of our own listeners must not be relayed there again.

use crate::config::Config;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

/// `interception` on a listener: how connections reach it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Interception {
    /// Connections addressed to the listener itself.
    #[default]
    #[serde(rename = "none")]
    None,
    /// Connections addressed to other hosts, steered here by an nft/iptables TPROXY rule: the
    /// listening socket is transparent (IP_TRANSPARENT) and each connection keeps its original
    /// destination as its local address.
    #[serde(rename = "tproxy")]
    Tproxy,
}

/// The loop guard: `original` is one of the proxy's own listeners (by address, or by port on
/// a wildcard listener when `original`'s address is one of this host's).
pub fn loops_back(config: &Config, original: SocketAddr) -> bool {
    let listens = config
        .inbound
        .iter()
        .map(|l| l.listen)
        .chain(config.outbound.iter().map(|l| l.listen));
    for listen in listens {
        if listen.port() != original.port() {
            continue;
        }
        if listen.ip() == original.ip() || (listen.ip().is_unspecified() && is_local(original.ip()))
        {
            return true;
        }
    }
    false
}

/// Whether `ip` is an address of this host: only then can it be bound without
/// IP_TRANSPARENT. An intercepted connection's destination usually is not.
fn is_local(ip: IpAddr) -> bool {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}
