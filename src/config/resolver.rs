//! `[resolver]`: where the proxy's DNS questions go.

use super::{ConfigError, Ctx};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use toml::Spanned;

/// `[resolver]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers to ask; empty: the system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// DNSKEY records (zone-file lines) DNSSEC validation starts from; `None`: the IANA root
    /// KSKs built in.
    pub dnssec_trust_anchor: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    #[serde(default)]
    nameservers: Vec<Spanned<String>>,
    dnssec_trust_anchor: Option<Spanned<String>>,
}

impl RawResolver {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<ResolverConfig, ConfigError> {
        let mut nameservers = Vec::new();
        for entry in self.nameservers {
            let text = entry.get_ref();
            let addr = text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                .map_err(|_| {
                    ctx.error(
                        "resolver.nameservers",
                        entry.span(),
                        format!(
                            "{text:?} is not an address (use \"192.0.2.53\" or \"192.0.2.53:53\")"
                        ),
                    )
                })?;
            nameservers.push(addr);
        }
        let dnssec_trust_anchor = match &self.dnssec_trust_anchor {
            Some(value) => {
                let path = ctx.resolve("resolver.dnssec_trust_anchor", value)?;
                // Read now: a broken anchor is a configuration error, not DANE silently off.
                crate::resolver::dnssec::check_trust_anchor(&path).map_err(|e| {
                    ctx.error("resolver.dnssec_trust_anchor", value.span(), e.to_string())
                })?;
                Some(path)
            }
            None => None,
        };
        Ok(ResolverConfig {
            nameservers,
            dnssec_trust_anchor,
        })
    }
}
