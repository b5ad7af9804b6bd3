//! `[resolver]`: where the proxy's DNS questions go.

use super::{ConfigError, Ctx};
use serde::Deserialize;
use std::net::SocketAddr;
use toml::Spanned;

/// `[resolver]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers to ask; empty: the system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    #[serde(default)]
    nameservers: Vec<Spanned<String>>,
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
        Ok(ResolverConfig { nameservers })
    }
}
