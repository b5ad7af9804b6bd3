//! `state_directory` and `retention`: where the proxy keeps what must outlive it (session
//! results today; the MTA-STS cache, report ledger and certificate inventory as they land).

use super::{ConfigDuration, ConfigError, Ctx};
use std::path::PathBuf;
use toml::Spanned;

/// The default: systemd's `StateDirectory=starttls-proxy`.
pub const DEFAULT_STATE_DIRECTORY: &str = "/var/lib/starttls-proxy";
/// RFC 8460 reports look back a day; auditors look back a year and a month.
const DEFAULT_RETENTION_DAYS: u32 = 400;

/// Where state lives and for how long session results are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub directory: PathBuf,
    /// Results files older than this many days are removed.
    pub retention_days: u32,
}

impl State {
    /// `state_directory/results`.
    /// The MTA-STS policy cache: `<state_directory>/mta-sts`.
    pub fn mta_sts_dir(&self) -> PathBuf {
        self.directory.join("mta-sts")
    }

    pub fn results_dir(&self) -> PathBuf {
        self.directory.join("results")
    }
}

pub(super) fn validate(
    ctx: &Ctx,
    directory: Option<Spanned<String>>,
    retention: Option<Spanned<ConfigDuration>>,
) -> Result<State, ConfigError> {
    let directory = match &directory {
        Some(d) => ctx.resolve("state_directory", d)?,
        None => PathBuf::from(DEFAULT_STATE_DIRECTORY),
    };
    let retention_days = match retention {
        None => DEFAULT_RETENTION_DAYS,
        Some(r) => {
            let days = r.get_ref().0.as_secs() / 86_400;
            if days == 0 || r.get_ref().0.as_secs() % 86_400 != 0 {
                return Err(ctx.error(
                    "retention",
                    r.span(),
                    "must be a whole number of days, at least one (\"400d\")",
                ));
            }
            u32::try_from(days).unwrap_or(u32::MAX)
        }
    };
    Ok(State {
        directory,
        retention_days,
    })
}
