//! `[monitoring]`: how long the proxy remembers what each MX host offered, for downgrade
//! detection (DESIGN, "Contract: operator monitoring").

use super::{ConfigDuration, ConfigError, Ctx};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// The contract's default: a partner that offered STARTTLS in the last 30 days and now does not
/// is suspect.
const DEFAULT_DOWNGRADE_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Operator monitoring settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Monitoring {
    /// An MX that offered STARTTLS (or reached a newer TLS version) within this window and now
    /// does not is a suspected downgrade.
    pub downgrade_window: Duration,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            downgrade_window: DEFAULT_DOWNGRADE_WINDOW,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitoring {
    downgrade_window: Option<Spanned<ConfigDuration>>,
}

impl RawMonitoring {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<Monitoring, ConfigError> {
        let downgrade_window = match self.downgrade_window {
            None => DEFAULT_DOWNGRADE_WINDOW,
            Some(w) => {
                let window = w.get_ref().0;
                // Under a minute the memory forgets between two deliveries of one queue run;
                // over ten years it outlives any partner's MTA.
                if window < Duration::from_secs(60) || window > Duration::from_secs(3650 * 86_400) {
                    return Err(ctx.error(
                        "monitoring.downgrade_window",
                        w.span(),
                        "must be between \"1m\" and \"3650d\" (default \"30d\")",
                    ));
                }
                window
            }
        };
        Ok(Monitoring { downgrade_window })
    }
}
