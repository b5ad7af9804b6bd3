//! `[outbound_policy]`: the default mode and the per-domain entries for outbound mail.

use super::{is_valid_hostname, ConfigError, Ctx};
use crate::policy::{DomainPolicy, Mode, OutboundPolicy};
use crate::tls::TrustAnchors;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

/// Where the system keeps its CA bundle (Debian's ca-certificates).
const SYSTEM_TRUST_ANCHORS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn yes() -> bool {
    true
}

impl Default for RawOutboundPolicy {
    fn default() -> Self {
        Self {
            default: None,
            trust_anchors: None,
            mta_sts: true,
            mta_sts_trust_anchors: None,
            domain: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutboundPolicy {
    default: Option<Mode>,
    trust_anchors: Option<Spanned<String>>,
    /// Apply published MTA-STS policies to domains without an entry (RFC 8461).
    #[serde(default = "yes")]
    mta_sts: bool,
    /// WebPKI roots for policy fetches and for MX certificates under MTA-STS.
    mta_sts_trust_anchors: Option<Spanned<String>>,
    #[serde(default)]
    domain: Vec<Spanned<RawDomainPolicy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomainPolicy {
    domain: Spanned<String>,
    mode: Mode,
    trust_anchors: Option<Spanned<String>>,
    #[serde(rename = "match", default)]
    match_names: Vec<Spanned<String>>,
    relax_until: Option<Spanned<String>>,
}

impl RawOutboundPolicy {
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        warnings: &mut Vec<String>,
        expired: &mut Vec<super::ExpiredRelaxation>,
    ) -> Result<OutboundPolicy, ConfigError> {
        let trust_anchors = match &self.trust_anchors {
            Some(path) => Arc::new(load_anchors(ctx, "outbound_policy.trust_anchors", path)?),
            None => Arc::new(
                TrustAnchors::load(Path::new(SYSTEM_TRUST_ANCHORS)).unwrap_or_else(|_| {
                    TrustAnchors::from_roots(
                        format!("{SYSTEM_TRUST_ANCHORS} (missing)"),
                        rustls::RootCertStore::empty(),
                    )
                }),
            ),
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut seen = HashSet::new();
        let mut domains = Vec::new();
        for (i, entry) in self.domain.into_iter().enumerate() {
            let key = format!("outbound_policy.domain[{i}]");
            let entry = entry.into_inner();
            let text = entry
                .domain
                .get_ref()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let name = text.strip_prefix('.').unwrap_or(&text);
            if !is_valid_hostname(name) {
                return Err(ctx.error(
                    &format!("{key}.domain"),
                    entry.domain.span(),
                    format!("{text:?} is not a domain (use \"example.org\" or \".example.org\")"),
                ));
            }
            if !seen.insert(text.clone()) {
                return Err(ctx.error(
                    &format!("{key}.domain"),
                    entry.domain.span(),
                    format!("{text:?} has another entry"),
                ));
            }
            let anchors = match &entry.trust_anchors {
                Some(path) => Some(Arc::new(load_anchors(
                    ctx,
                    &format!("{key}.trust_anchors"),
                    path,
                )?)),
                None => None,
            };
            let mut match_names = Vec::new();
            for m in &entry.match_names {
                let n = m.get_ref().trim_end_matches('.').to_ascii_lowercase();
                if !is_valid_hostname(n.trim_start_matches("*.")) {
                    return Err(ctx.error(
                        &format!("{key}.match"),
                        m.span(),
                        format!("{n:?} is not a host name"),
                    ));
                }
                match_names.push(n);
            }
            let relax_until = match &entry.relax_until {
                Some(t) => {
                    let parsed = time::OffsetDateTime::parse(
                        t.get_ref(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|e| {
                        ctx.error(
                            &format!("{key}.relax_until"),
                            t.span(),
                            format!(
                                "{:?} is not an RFC 3339 time like \"2026-12-01T00:00:00Z\": {e}",
                                t.get_ref()
                            ),
                        )
                    })?
                    .unix_timestamp();
                    if parsed <= now {
                        expired.push(super::ExpiredRelaxation {
                            domain: text.clone(),
                            relax_until: parsed,
                        });
                        let (line, col) = ctx.line_col(t.span().start);
                        warnings.push(format!(
                            "{}:{line}:{col}: key `{key}.relax_until`: {} is in the past; enforcement for {text} is not relaxed",
                            ctx.path.display(),
                            t.get_ref()
                        ));
                        None
                    } else {
                        Some(parsed)
                    }
                }
                None => None,
            };
            if entry.mode != Mode::Verify && (!match_names.is_empty() || anchors.is_some()) {
                let (line, col) = ctx.line_col(entry.domain.span().start);
                warnings.push(format!(
                    "{}:{line}:{col}: `{key}`: match and trust_anchors only matter for mode = \"verify\" (mode is {})",
                    ctx.path.display(),
                    entry.mode
                ));
            }
            domains.push(DomainPolicy {
                domain: text,
                mode: entry.mode,
                trust_anchors: anchors,
                match_names,
                relax_until,
            });
        }
        let mta_sts_anchors = match &self.mta_sts_trust_anchors {
            Some(path) => Arc::new(load_anchors(
                ctx,
                "outbound_policy.mta_sts_trust_anchors",
                path,
            )?),
            None => trust_anchors.clone(),
        };
        Ok(OutboundPolicy {
            default: self.default.unwrap_or(Mode::Dane),
            trust_anchors,
            domains,
            mta_sts: self.mta_sts,
            mta_sts_anchors,
        })
    }
}

fn load_anchors(ctx: &Ctx, key: &str, path: &Spanned<String>) -> Result<TrustAnchors, ConfigError> {
    let resolved = ctx.resolve(key, path)?;
    TrustAnchors::load(&resolved).map_err(|e| {
        ctx.error(
            key,
            path.span(),
            format!("cannot load trust anchors {}: {e}", resolved.display()),
        )
    })
}
