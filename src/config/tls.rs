//! `[tls]`: the certificate served to inbound clients.

use super::{ConfigError, Ctx};
use crate::tls::{self as proxy_tls, MinVersion, ServerTls};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    certificate: Option<Spanned<String>>,
    private_key: Option<Spanned<String>>,
    #[serde(default)]
    min_version: MinVersion,
    /// Serve a certificate generated in memory for `hostname` (demo, first boot); warns at start.
    #[serde(default)]
    self_signed: bool,
}

impl RawTls {
    pub(super) fn load(
        self,
        ctx: &Ctx,
        table: std::ops::Range<usize>,
        hostname: &str,
    ) -> Result<ServerTls, ConfigError> {
        match (self.certificate, self.private_key, self.self_signed) {
            (None, None, true) => Ok(proxy_tls::self_signed(hostname, self.min_version)),
            (Some(c), _, true) => Err(ctx.error(
                "tls.certificate",
                c.span(),
                "set either certificate/private_key or self_signed = true, not both",
            )),
            (None, Some(k), true) => Err(ctx.error(
                "tls.private_key",
                k.span(),
                "set either certificate/private_key or self_signed = true, not both",
            )),
            (Some(cert), Some(key), false) => {
                let cert_path = ctx.resolve("tls.certificate", &cert)?;
                let key_path = ctx.resolve("tls.private_key", &key)?;
                proxy_tls::load_server(&cert_path, &key_path, self.min_version).map_err(|e| {
                    let (name, span) = if e.is_about_key() {
                        ("tls.private_key", key.span())
                    } else {
                        ("tls.certificate", cert.span())
                    };
                    if e.is_unreadable() {
                        ctx.runtime_error(name, span, e)
                    } else {
                        ctx.error(name, span, e)
                    }
                })
            }
            (Some(c), None, false) => Err(ctx.error(
                "tls.private_key",
                c.span(),
                "missing: the certificate needs its private key",
            )),
            (None, Some(k), false) => Err(ctx.error(
                "tls.certificate",
                k.span(),
                "missing: the private key needs its certificate",
            )),
            (None, None, false) => Err(ctx.error(
                "tls.certificate",
                table,
                "missing: set certificate and private_key (or self_signed = true)",
            )),
        }
    }
}
