//! Configuration: the TOML schema of DESIGN.md's contract, parsed into types that cannot hold a
//! bad value. Every error names the file, line, column and key. One file per table, in the
//! order of the file: `tls`, `limits`, `listeners` (`[[inbound]]`, `[[outbound]]`, `[admin]`),
//! `resolver`, `outbound_policy`, `tls_reporting`; this one holds the whole and what the tables share.

mod limits;
mod listeners;
mod monitoring;
mod outbound_policy;
mod reporting;
mod resolver;
mod state;
mod tls;

pub use limits::Limits;
pub use listeners::{Admin, BackendTarget, DomainSet, Inbound, NextHop, Outbound, OutboundMode};
pub use monitoring::Monitoring;
pub use reporting::TlsReporting;
pub use resolver::ResolverConfig;
pub use state::{State, DEFAULT_STATE_DIRECTORY};

use crate::policy::OutboundPolicy;
use crate::tls::ServerTls;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Where the configuration lives when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/starttls-proxy/starttls-proxy.toml";

/// A validated configuration, with certificates already loaded.
#[derive(Debug)]
pub struct Config {
    /// The file it came from (relative paths inside it are resolved against its directory).
    pub source: PathBuf,
    /// Name the proxy uses when it speaks for itself (its own replies, self-signed certificate).
    pub hostname: String,
    /// How long SIGTERM waits for sessions to finish.
    pub shutdown_grace: Duration,
    /// The certificate served to inbound clients.
    pub tls: Option<Arc<ServerTls>>,
    /// `/metrics` and `/healthz` endpoint.
    pub admin: Option<Admin>,
    pub limits: Limits,
    pub inbound: Vec<Arc<Inbound>>,
    /// `[resolver]`: where MX/A/AAAA questions go.
    pub resolver: ResolverConfig,
    /// `[[outbound]]` listeners: the legacy MTA in front, the internet behind.
    pub outbound: Vec<Arc<Outbound>>,
    /// `[outbound_policy]`: per-domain TLS enforcement for outbound mail.
    pub outbound_policy: Arc<OutboundPolicy>,
    /// Things worth fixing that do not stop the proxy (an expired `relax_until`); logged at load.
    pub warnings: Vec<String>,
    /// Lowercase hex SHA-256 of the file's bytes (`event=config_loaded sha256=...`).
    pub sha256: String,
    /// `state_directory` and `retention`.
    pub state: State,
    /// `[monitoring]`: downgrade detection.
    pub monitoring: Monitoring,
    /// `relax_until` entries already in the past at load: not applied, reported (a warning at
    /// every load, the configuration history, `evidence`).
    pub expired_relaxations: Vec<ExpiredRelaxation>,
    /// `[tls_reporting]`: `None`, no reports are built or sent.
    pub tls_reporting: Option<TlsReporting>,
}

/// A `relax_until` that had passed when the configuration was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRelaxation {
    /// The entry's `domain`.
    pub domain: String,
    /// Unix seconds.
    pub relax_until: i64,
}

/// A configuration error, positioned where the administrator must look.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the error is inside the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `inbound[0].backend`.
    pub key: Option<String>,
    pub message: String,
    /// The configuration is well formed but the system could not give what it names: a
    /// certificate or key file that cannot be read, a host name that does not resolve. These
    /// may mend without an edit (permissions, a credential or DNS not ready yet), so they are
    /// runtime failures (exit 1, which systemd retries), not configuration errors (exit 2).
    pub runtime: bool,
}

impl ConfigError {
    /// The exit code of the contract: 1 for a runtime failure, 2 for a configuration error.
    pub fn exit_code(&self) -> u8 {
        if self.runtime {
            1
        } else {
            2
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates `path`, loading the certificates it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            position: None,
            key: None,
            message: format!("cannot read configuration: {e}"),
            runtime: false,
        })?;
        let config = Config::parse(&source, path)?;
        for warning in &config.warnings {
            crate::log::warn("config")
                .field("config", path.display())
                .field("detail", warning)
                .emit();
        }
        Ok(config)
    }

    /// Parses configuration text as if read from `path`.
    pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigError> {
        let ctx = Ctx { source, path };
        let deserializer = toml::Deserializer::new(source);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = key_path(e.path());
            let inner = e.into_inner();
            ConfigError {
                file: path.to_owned(),
                position: inner.span().map(|s| ctx.line_col(s.start)),
                key: (!key.is_empty()).then_some(key),
                message: inner.message().trim().to_string(),
                runtime: false,
            }
        })?;
        raw.validate(&ctx)
    }

    /// A short human summary, printed by `check-config`.
    pub fn summary(&self) -> String {
        let mut out = format!("configuration {} is valid\n", self.source.display());
        out += &format!("  hostname: {}\n", self.hostname);
        if let Some(tls) = &self.tls {
            out += &format!("  certificate: {}\n", tls.describe());
        }
        match &self.admin {
            Some(a) => out += &format!("  admin: http://{}/metrics\n", a.listen),
            None => out += "  admin: disabled\n",
        }
        out += &format!(
            "  state directory: {} (session results kept {} days)\n",
            self.state.directory.display(),
            self.state.retention_days
        );
        for l in &self.inbound {
            let backend = match l.backend_name.parse::<SocketAddr>() {
                Ok(_) => l.backend_name.clone(),
                Err(_) if l.backend_addrs.is_empty() => l.backend_name.clone(),
                Err(_) => {
                    let addrs: Vec<String> =
                        l.backend_addrs.iter().map(|a| a.to_string()).collect();
                    format!("{} ({})", l.backend_name, addrs.join(", "))
                }
            };
            let mut notes = Vec::new();
            if l.require_tls {
                notes.push("require_tls".to_string());
            }
            if l.client_address != crate::net::backend::ClientAddress::None {
                notes.push(format!("client_address {}", l.client_address.as_str()));
            }
            if l.interception == crate::net::original_dst::Interception::Tproxy {
                notes.push("interception tproxy".to_string());
            }
            if !l.proxy_protocol_from.is_empty() {
                let nets: Vec<String> = l
                    .proxy_protocol_from
                    .networks()
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                notes.push(format!("PROXY header from {}", nets.join(", ")));
            }
            let notes = match notes.is_empty() {
                true => String::new(),
                false => format!(" ({})", notes.join("; ")),
            };
            out += &format!("  inbound {}: {} -> {backend}{notes}\n", l.name, l.listen);
        }
        for l in &self.outbound {
            let route = match &l.next_hop {
                Some(hop) => format!("next hop {hop}"),
                None => format!("MX (port {})", l.mx_port),
            };
            let mode = match l.mode {
                OutboundMode::Relay => "relay",
                OutboundMode::Transparent => "transparent",
            };
            out += &format!("  outbound {} ({mode}): {} -> {route}\n", l.name, l.listen);
        }
        if !self.outbound.is_empty() {
            let p = &self.outbound_policy;
            out += &format!(
                "  outbound policy: default {}, trust anchors {} ({} CAs), {} domain entries\n",
                p.default,
                p.trust_anchors.label,
                p.trust_anchors.count,
                p.domains.len()
            );
            if p.default.wants_dane() || p.domains.iter().any(|d| d.mode.wants_dane()) {
                out += &format!(
                    "  DANE: DNSSEC validated here, trust anchor {}\n",
                    self.resolver
                        .dnssec_trust_anchor
                        .as_ref()
                        .map_or("the IANA root KSKs (built in)".to_string(), |p| p
                            .display()
                            .to_string())
                );
            }
            out += &format!(
                "  MTA-STS: {}\n",
                if p.mta_sts {
                    format!("on, WebPKI roots {}", p.mta_sts_anchors.label)
                } else {
                    "off".to_string()
                }
            );
            let window = self.monitoring.downgrade_window.as_secs();
            out += &match window % 86_400 {
                0 => format!("  monitoring: downgrade window {}d\n", window / 86_400),
                _ => format!("  monitoring: downgrade window {window}s\n"),
            };
        }
        for e in &self.expired_relaxations {
            out += &format!(
                "  expired: {} relax_until {} (not applied)\n",
                e.domain,
                crate::log::format_unix(e.relax_until)
            );
        }
        if let Some(r) = &self.tls_reporting {
            let relay = r
                .send_via
                .map_or("none (mailto: reports cannot go)".to_string(), |a| {
                    a.to_string()
                });
            out += &format!(
                "  tls reporting: submitter {}, from {}, mail relay {relay}\n",
                r.submitter, r.from
            );
            if !r.receive.is_empty() {
                out += &format!(
                    "  tls reports received at: {} (kept in {})\n",
                    r.receive.join(", "),
                    self.state.directory.join("received").display()
                );
            }
        }
        out
    }
}

/// `inbound[0].backend`, without the private segments `toml::Spanned` inserts.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out += &format!("[{index}]"),
            Segment::Map { key } if key.starts_with("$__") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out += key;
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Positions and paths for error messages.
struct Ctx<'a> {
    source: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.source[..offset.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn error(
        &self,
        key: &str,
        span: std::ops::Range<usize>,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            position: Some(self.line_col(span.start)),
            key: Some(key.to_string()),
            message: message.to_string(),
            runtime: false,
        }
    }

    /// [`Ctx::error`] for what the system could not provide (see [`ConfigError::runtime`]).
    fn runtime_error(
        &self,
        key: &str,
        span: std::ops::Range<usize>,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError {
            runtime: true,
            ..self.error(key, span, message)
        }
    }

    /// Relative paths are relative to the file's directory, not to the cwd. A leading
    /// `${CREDENTIALS_DIRECTORY}` is systemd's credential directory (LoadCredential=), so the
    /// unit can hand over a key the service user could not otherwise read.
    fn resolve(&self, key: &str, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        const CREDENTIALS: &str = "${CREDENTIALS_DIRECTORY}";
        if let Some(rest) = value.get_ref().strip_prefix(CREDENTIALS) {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                self.error(key, value.span(), "CREDENTIALS_DIRECTORY is not set (it comes from LoadCredential= in a systemd unit)")
            })?;
            return Ok(PathBuf::from(dir).join(rest.trim_start_matches('/')));
        }
        let p = Path::new(value.get_ref());
        Ok(match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        })
    }
}

/// A duration written as `"10s"`, `"5m"`, `"1h"`, `"250ms"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(ConfigDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: expected a whole number followed by ms, s, m, h or d, like \"10s\" or \"5m\""
            ))
        })
    }
}

/// Parses `"<digits><unit>"`; `None` for anything else.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    let value: u64 = text[..digits_end].parse().ok()?;
    let unit_ms: u64 = match &text[digits_end..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    value.checked_mul(unit_ms).map(Duration::from_millis)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<Spanned<String>>,
    shutdown_grace: Option<ConfigDuration>,
    state_directory: Option<Spanned<String>>,
    retention: Option<Spanned<ConfigDuration>>,
    tls: Option<Spanned<tls::RawTls>>,
    admin: Option<listeners::RawAdmin>,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    inbound: Vec<Spanned<listeners::RawInbound>>,
    resolver: Option<resolver::RawResolver>,
    #[serde(default)]
    outbound: Vec<Spanned<listeners::RawOutbound>>,
    outbound_policy: Option<outbound_policy::RawOutboundPolicy>,
    monitoring: Option<monitoring::RawMonitoring>,
    tls_reporting: Option<reporting::RawTlsReporting>,
}

impl RawConfig {
    fn validate(self, ctx: &Ctx) -> Result<Config, ConfigError> {
        let hostname = match self.hostname {
            Some(h) => {
                let span = h.span();
                let name = h.into_inner();
                if !is_valid_hostname(&name) {
                    return Err(ctx.error(
                        "hostname",
                        span,
                        format!("{name:?} is not a valid host name"),
                    ));
                }
                name
            }
            None => system_hostname(),
        };
        let limits = self.limits.validate(ctx)?;
        let tls = match self.tls {
            Some(t) => {
                let span = t.span();
                Some(Arc::new(t.into_inner().load(ctx, span, &hostname)?))
            }
            None => None,
        };
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut inbound = Vec::new();
        for (i, entry) in self.inbound.into_iter().enumerate() {
            let span = entry.span();
            inbound.push(Arc::new(entry.into_inner().validate(
                ctx,
                i,
                span,
                tls.is_some(),
                &mut names,
                &mut addrs,
            )?));
        }
        let resolver = match self.resolver {
            Some(r) => r.validate(ctx)?,
            None => ResolverConfig::default(),
        };
        let mut outbound = Vec::new();
        for (i, entry) in self.outbound.into_iter().enumerate() {
            let span = entry.span();
            outbound.push(Arc::new(
                entry
                    .into_inner()
                    .validate(ctx, i, span, &mut names, &mut addrs)?,
            ));
        }
        if inbound.is_empty() && outbound.is_empty() {
            return Err(ctx.error(
                "inbound",
                0..0,
                "no listener is configured: add an [[inbound]] table (internet senders -> legacy MTA) or an [[outbound]] table (legacy MTA -> internet); without one the proxy would serve nothing",
            ));
        }
        let admin = match self.admin {
            Some(a) => Some(a.validate(ctx)?),
            None => None,
        };
        let mut warnings = Vec::new();
        let mut expired_relaxations = Vec::new();
        let outbound_policy = Arc::new(self.outbound_policy.unwrap_or_default().validate(
            ctx,
            &mut warnings,
            &mut expired_relaxations,
        )?);
        Ok(Config {
            source: ctx.path.to_owned(),
            hostname,
            shutdown_grace: self.shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
            tls,
            admin,
            limits,
            inbound,
            resolver,
            outbound,
            outbound_policy,
            warnings,
            sha256: sha256_hex(ctx.source.as_bytes()),
            state: state::validate(ctx, self.state_directory, self.retention)?,
            monitoring: match self.monitoring {
                Some(m) => m.validate(ctx)?,
                None => Monitoring::default(),
            },
            expired_relaxations,
            tls_reporting: match self.tls_reporting {
                Some(r) => Some(r.validate(ctx)?),
                None => None,
            },
        })
    }
}

/// Lowercase hex SHA-256 (ring), as `sha256sum` prints it.
fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// The kernel's host name, as `hostname` prints it; `/etc/hostname` where a sandbox hides
/// `/proc/sys` (systemd's ProcSubset=pid).
fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|s| s.trim().to_string())
        .find(|s| is_valid_hostname(s))
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests;
