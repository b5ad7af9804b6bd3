//! `[tls_reporting]`: who we are in the TLS reports we send (RFC 8460 §4.4) and how mailed ones
//! leave. Without the table, results are still recorded and no report is built or sent.

use super::{ConfigDuration, ConfigError, Ctx};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

/// `[tls_reporting]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReporting {
    /// `organization-name` of every report.
    pub organization: String,
    /// `contact-info`: a `mailto:` URI or an address.
    pub contact: String,
    /// `TLS-Report-Submitter` and the first part of report file names: our domain.
    pub submitter: String,
    /// The SMTP relay that takes mailed reports (the legacy MTA, which queues and retries);
    /// `None`: `mailto:` destinations cannot be served and count as failed deliveries.
    pub send_via: Option<SocketAddr>,
    /// The envelope and header sender of mailed reports. Sessions with this MAIL FROM are
    /// report deliveries: never counted in a report (RFC 8460 §5.3).
    pub from: String,
    /// Report only days on which a session to the domain failed.
    pub only_with_failures: bool,
    /// The running proxy delivers a day's reports this long after UTC midnight at most, each
    /// node at its own point in the window, so receivers and a shared directory see no burst.
    pub send_spread: Duration,
    /// A destination whose every attempt failed on this many consecutive report days is
    /// suppressed: tried once a week only, until it takes a report again. 0: never.
    pub suppress_after_days: u32,
    /// Our own report addresses (lowercase): mail to them is taken on the inbound path and
    /// kept under `state_directory/received/` instead of going to the backend.
    pub receive: Vec<String>,
}

/// Default `send_spread`: the first hours of the day, as large senders do.
pub const DEFAULT_SEND_SPREAD: Duration = Duration::from_secs(4 * 3600);
/// Default `suppress_after_days`.
pub const DEFAULT_SUPPRESS_AFTER_DAYS: u32 = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsReporting {
    organization: Spanned<String>,
    contact: Spanned<String>,
    submitter: Spanned<String>,
    send_via: Option<Spanned<String>>,
    from: Spanned<String>,
    #[serde(default)]
    only_with_failures: bool,
    send_spread: Option<Spanned<ConfigDuration>>,
    suppress_after_days: Option<u32>,
    #[serde(default)]
    receive: Vec<Spanned<String>>,
}

impl TlsReporting {
    /// Whether `mailbox` (lowercase) is one of our report addresses.
    pub fn is_report_address(&self, mailbox: &str) -> bool {
        self.receive.iter().any(|a| a == mailbox)
    }
}

impl RawTlsReporting {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<TlsReporting, ConfigError> {
        let nonempty = |key: &str, value: Spanned<String>| {
            let span = value.span();
            let text = value.into_inner().trim().to_string();
            // Header values and file names: one line, printable.
            if text.is_empty() || text.chars().any(|c| c.is_control()) {
                return Err(ctx.error(
                    &format!("tls_reporting.{key}"),
                    span,
                    "must be a non-empty single line",
                ));
            }
            Ok(text)
        };
        let organization = nonempty("organization", self.organization)?;
        let contact = nonempty("contact", self.contact)?;
        let submitter_span = self.submitter.span();
        let submitter = nonempty("submitter", self.submitter)?.to_ascii_lowercase();
        if !super::is_valid_hostname(&submitter) {
            return Err(ctx.error(
                "tls_reporting.submitter",
                submitter_span,
                format!("{submitter:?} is not a domain name (it names reports and their files)"),
            ));
        }
        let from_span = self.from.span();
        let from = nonempty("from", self.from)?;
        let is_mailbox = from
            .rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && super::is_valid_hostname(domain))
            && !from.contains([' ', '<', '>', '"']);
        if !is_mailbox {
            return Err(ctx.error(
                "tls_reporting.from",
                from_span,
                format!("{from:?} is not a mailbox like \"tlsrpt-noreply@example.org\""),
            ));
        }
        let send_via = match self.send_via {
            None => None,
            Some(v) => Some(v.get_ref().parse::<SocketAddr>().map_err(|_| {
                ctx.error(
                    "tls_reporting.send_via",
                    v.span(),
                    format!(
                        "{:?} is not an address with a port, like \"10.0.0.25:25\"",
                        v.get_ref()
                    ),
                )
            })?),
        };
        let send_spread = match self.send_spread {
            None => DEFAULT_SEND_SPREAD,
            Some(s) if s.get_ref().0 > Duration::from_secs(20 * 3600) => {
                return Err(ctx.error(
                    "tls_reporting.send_spread",
                    s.span(),
                    "at most \"20h\": the day's retries need the rest of the day",
                ))
            }
            Some(s) => s.into_inner().0,
        };
        let mut receive = Vec::new();
        for address in self.receive {
            let text = address.get_ref().trim().to_ascii_lowercase();
            let ok = text
                .rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && super::is_valid_hostname(d))
                && !text.contains([' ', '<', '>', '"']);
            if !ok {
                return Err(ctx.error(
                    "tls_reporting.receive",
                    address.span(),
                    format!("{text:?} is not a mailbox like \"tlsrpt@example.org\""),
                ));
            }
            receive.push(text);
        }
        Ok(TlsReporting {
            organization,
            contact,
            submitter,
            send_via,
            from,
            only_with_failures: self.only_with_failures,
            send_spread,
            suppress_after_days: self
                .suppress_after_days
                .unwrap_or(DEFAULT_SUPPRESS_AFTER_DAYS),
            receive,
        })
    }
}
