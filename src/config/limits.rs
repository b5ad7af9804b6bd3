//! `[limits]`: per-listener limits and timeouts.

use super::{ConfigDuration, ConfigError, Ctx};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
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

impl RawLimits {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<Limits, ConfigError> {
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
