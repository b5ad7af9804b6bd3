//! Configuration: the TOML schema of DESIGN.md's contract, parsed into types that cannot hold a
//! bad value. Every error names the file, line, column and key.

use crate::policy::{DomainPolicy, Mode, OutboundPolicy};
use crate::tls::{self, MinVersion, ServerTls, TrustAnchors};
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
}

/// `[resolver]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers to ask; empty: the system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
}

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
}

/// The admin HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
}

/// Per-listener limits and timeouts (RFC 5321 §4.5.3.2 style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent sessions per listener; past it new clients get `421 4.7.0`.
    pub max_connections: usize,
    /// From our `220 Ready to start TLS` to a finished handshake.
    pub handshake_timeout: Duration,
    /// Silence from either peer after which a session is closed.
    pub idle_timeout: Duration,
    /// Connecting to the backend.
    pub connect_timeout: Duration,
    /// Longest command or reply line, CRLF included; longer gets `500 5.5.2`.
    pub max_line_length: usize,
    /// Protocol errors (over-long lines) tolerated per session before `421` and close.
    pub max_errors: u32,
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

    /// `domain` must already be lowercase without a trailing dot (as `Command::parse` gives it).
    pub fn contains(&self, domain: &str) -> bool {
        self.exact.contains(domain) || self.suffixes.iter().any(|s| domain.ends_with(s.as_str()))
    }
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
        for l in &self.inbound {
            let backend = match l.backend_name.parse::<SocketAddr>() {
                Ok(_) => l.backend_name.clone(),
                Err(_) => {
                    let addrs: Vec<String> =
                        l.backend_addrs.iter().map(|a| a.to_string()).collect();
                    format!("{} ({})", l.backend_name, addrs.join(", "))
                }
            };
            out += &format!(
                "  inbound {}: {} -> {backend}{}\n",
                l.name,
                l.listen,
                if l.require_tls { " (require_tls)" } else { "" }
            );
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
    tls: Option<Spanned<RawTls>>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    inbound: Vec<Spanned<RawInbound>>,
    resolver: Option<RawResolver>,
    #[serde(default)]
    outbound: Vec<Spanned<RawOutbound>>,
    outbound_policy: Option<RawOutboundPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: Option<Spanned<String>>,
    private_key: Option<Spanned<String>>,
    #[serde(default)]
    min_version: MinVersion,
    /// Serve a certificate generated in memory for `hostname` (demo, first boot); warns at start.
    #[serde(default)]
    self_signed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_max_connections")]
    max_connections: Spanned<usize>,
    #[serde(default = "default_handshake_timeout")]
    handshake_timeout: ConfigDuration,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: ConfigDuration,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: ConfigDuration,
    #[serde(default = "default_max_line_length")]
    max_line_length: Spanned<usize>,
    #[serde(default = "default_max_errors")]
    max_errors: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            handshake_timeout: default_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
            connect_timeout: default_connect_timeout(),
            max_line_length: default_max_line_length(),
            max_errors: default_max_errors(),
        }
    }
}

fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}
fn default_handshake_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_idle_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(300))
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_max_line_length() -> Spanned<usize> {
    // Postfix's line_length_limit; RFC 5321's 512 is too tight for SMTPUTF8 and ESMTP parameters.
    Spanned::new(0..0, 2048)
}
fn default_max_errors() -> u32 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    name: Option<Spanned<String>>,
    listen: Spanned<ListenAddr>,
    backend: Spanned<String>,
    #[serde(default)]
    require_tls: bool,
    #[serde(default)]
    require_tls_senders: Vec<Spanned<String>>,
    #[serde(default)]
    require_tls_recipients: Vec<Spanned<String>>,
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
            let entry = entry.into_inner();
            let key = format!("inbound[{i}]");
            if tls.is_none() {
                return Err(ctx.error(
                    &key,
                    span,
                    "an inbound listener needs [tls] certificate and private_key (or tls.self_signed = true)",
                ));
            }
            let (listen, name) =
                listener_identity(ctx, &key, &entry.listen, entry.name, &mut names, &mut addrs)?;
            let backend_addrs =
                resolve_address(ctx, &format!("{key}.backend"), &entry.backend, Some(25))?;
            inbound.push(Arc::new(Inbound {
                name,
                listen,
                backend: backend_addrs[0],
                backend_name: entry.backend.get_ref().clone(),
                backend_addrs,
                require_tls: entry.require_tls,
                require_tls_senders: domain_set(
                    ctx,
                    &format!("{key}.require_tls_senders"),
                    entry.require_tls_senders,
                )?,
                require_tls_recipients: domain_set(
                    ctx,
                    &format!("{key}.require_tls_recipients"),
                    entry.require_tls_recipients,
                )?,
            }));
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
            Some(a) => Some(Admin {
                listen: resolve_address(ctx, "admin.listen", &a.listen, None)?[0],
            }),
            None => None,
        };
        let mut warnings = Vec::new();
        let outbound_policy = Arc::new(
            self.outbound_policy
                .unwrap_or_default()
                .validate(ctx, &mut warnings)?,
        );
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
        })
    }
}

impl RawLimits {
    fn validate(self, ctx: &Ctx) -> Result<Limits, ConfigError> {
        if *self.max_connections.get_ref() == 0 {
            return Err(ctx.error(
                "limits.max_connections",
                self.max_connections.span(),
                "must be at least 1",
            ));
        }
        let line = *self.max_line_length.get_ref();
        if !(512..=65_536).contains(&line) {
            return Err(ctx.error(
                "limits.max_line_length",
                self.max_line_length.span(),
                "must be between 512 (RFC 5321's minimum) and 65536",
            ));
        }
        Ok(Limits {
            max_connections: *self.max_connections.get_ref(),
            handshake_timeout: self.handshake_timeout.0,
            idle_timeout: self.idle_timeout.0,
            connect_timeout: self.connect_timeout.0,
            max_line_length: line,
            max_errors: self.max_errors.max(1),
        })
    }
}

impl RawTls {
    fn load(
        self,
        ctx: &Ctx,
        table: std::ops::Range<usize>,
        hostname: &str,
    ) -> Result<ServerTls, ConfigError> {
        match (self.certificate, self.private_key, self.self_signed) {
            (None, None, true) => Ok(tls::self_signed(hostname, self.min_version)),
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
                tls::load_server(&cert_path, &key_path, self.min_version).map_err(|e| {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    #[serde(default)]
    nameservers: Vec<Spanned<String>>,
}

impl RawResolver {
    fn validate(self, ctx: &Ctx) -> Result<ResolverConfig, ConfigError> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    name: Option<Spanned<String>>,
    listen: Spanned<ListenAddr>,
    #[serde(default = "default_outbound_mode")]
    mode: OutboundMode,
    next_hop: Option<Spanned<String>>,
    mx_port: Option<Spanned<u16>>,
}

impl RawOutbound {
    fn validate(
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
        Ok(Outbound {
            name,
            listen,
            mode,
            next_hop,
            mx_port,
        })
    }
}

fn default_outbound_mode() -> OutboundMode {
    OutboundMode::Relay
}

/// `host:port`, `[v6]:port`, `ip:port` or a bare host (port 25).
fn parse_next_hop(text: &str) -> Option<NextHop> {
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

/// Lowercase hex SHA-256 (ring), as `sha256sum` prints it.
fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the system keeps its CA bundle (Debian's ca-certificates).
const SYSTEM_TRUST_ANCHORS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutboundPolicy {
    default: Option<Mode>,
    trust_anchors: Option<Spanned<String>>,
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
    fn validate(
        self,
        ctx: &Ctx,
        warnings: &mut Vec<String>,
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
        Ok(OutboundPolicy {
            default: self.default.unwrap_or(Mode::Opportunistic),
            trust_anchors,
            domains,
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
#[path = "config_tests.rs"]
mod tests;
