//! One UTC day's reports, from the session results to their destinations: the one path both
//! `starttls-proxy tls-report` and the running proxy's schedule take. Per policy domain with
//! outbound results that day: its `_smtp._tls` record, the report built from every node's
//! results, the report stored (the exact bytes sent), and with `send` each `rua` not yet
//! served tried once and the attempt recorded in the ledger.

use super::deliver::{self, MailedReport};
use super::tlsrpt::{self, DayTally, Reporter, Rua, TlsRptError};
use crate::config::TlsReporting;
use crate::https::HttpsClient;
use crate::resolver::{DnsError, Resolve};
use crate::state::reports::{Delivery, LedgerEntry, ReportStore};
use crate::state::results::{self, Direction};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a day's run needs.
#[derive(Clone)]
pub struct Reporting {
    pub settings: TlsReporting,
    /// This node's `hostname`: in the ledger, and the EHLO name towards `send_via`.
    pub node: String,
    pub results_dir: PathBuf,
    pub store: ReportStore,
    pub resolver: Arc<dyn Resolve>,
    /// WebPKI client for `https:` destinations; `None`: no usable trust anchors.
    pub https: Option<HttpsClient>,
    /// `retention`: reports sent and received are kept this many days, like the results.
    pub retention_days: u32,
    /// `state_directory/received`.
    pub received_dir: PathBuf,
}

/// What became of one policy domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainOutcome {
    /// No `v=TLSRPTv1` record: the domain wants no reports.
    NoRecord,
    /// A record that cannot be used (RFC 8460 §3: then no report is sent).
    BadRecord(String),
    /// The record could not be looked up now: try again later.
    DnsFailed(String),
    /// Another sender (node, or run) holds the report's lock.
    Busy { file: String },
    /// No session failed and `only_with_failures` is set: no report.
    NoFailures { successful: u64 },
    /// The report, stored, and each destination's state.
    Report {
        file: String,
        successful: u64,
        failed: u64,
        destinations: Vec<(String, DestinationState)>,
    },
    /// Reading, storing or recording failed on our side.
    StoreFailed(String),
}

/// One destination of a report after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationState {
    /// Delivered by this run (what the receiver said).
    Sent(String),
    /// Delivered before, by this node or another (recorded in the ledger).
    AlreadySent,
    /// Tried and failed now.
    Failed(String),
    /// Not tried: the run does not send.
    Pending,
    /// A scheme we do not deliver to (RFC 8460 §3: ignored).
    Ignored,
    /// Not tried: the destination keeps failing (why, and when it is tried again).
    Suppressed(String),
}

/// Suppressed destinations are tried again after this long, one report at a time.
pub const SUPPRESSION_PROBE_DAYS: i64 = 7;

/// Whether a destination whose report days are `days` (begin → something went) is suppressed
/// for the report beginning at `begin`: every attempt failed on the last `after` report days it
/// was tried for, and the last of them is less than [`SUPPRESSION_PROBE_DAYS`] before. `Some`:
/// why, for the summary and the log.
pub fn suppression(days: &BTreeMap<i64, bool>, begin: i64, after: u32) -> Option<String> {
    if after == 0 {
        return None;
    }
    let earlier = days.range(..begin);
    let streak = earlier
        .clone()
        .rev()
        .take_while(|(_, went)| !**went)
        .count();
    let (&last, _) = earlier.last()?;
    if streak < after as usize || begin - last >= SUPPRESSION_PROBE_DAYS * 86_400 {
        return None;
    }
    let retry = time::OffsetDateTime::from_unix_timestamp(last + SUPPRESSION_PROBE_DAYS * 86_400)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    Some(format!(
        "every attempt failed on the last {streak} report days; tried again with the report of {retry}"
    ))
}

/// A day's run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayRun {
    pub day: String,
    /// Result lines read and lines skipped as unreadable.
    pub lines: usize,
    pub skipped: usize,
    pub domains: BTreeMap<String, DomainOutcome>,
}

impl DayRun {
    /// Whether something that should have gone did not (the command's exit 1).
    pub fn has_failures(&self) -> bool {
        self.domains.values().any(|d| match d {
            DomainOutcome::DnsFailed(_) | DomainOutcome::StoreFailed(_) => true,
            DomainOutcome::Report { destinations, .. } => destinations
                .iter()
                .any(|(_, s)| matches!(s, DestinationState::Failed(_))),
            _ => false,
        })
    }

    /// Whether nothing is left to do for the day: no failure, and no report another sender
    /// was busy with (it may still fail there; a later run sees the ledger).
    pub fn is_complete(&self) -> bool {
        !self.has_failures()
            && !self
                .domains
                .values()
                .any(|d| matches!(d, DomainOutcome::Busy { .. }))
    }

    /// Counts for the log line of a scheduled run: (reports, sent now, failed now).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for d in self.domains.values() {
            if let DomainOutcome::Report { destinations, .. } = d {
                counts.0 += 1;
                for (_, state) in destinations {
                    match state {
                        DestinationState::Sent(_) => counts.1 += 1,
                        DestinationState::Failed(_) => counts.2 += 1,
                        _ => {}
                    }
                }
            }
        }
        counts
    }

    /// The command's summary, one line per domain and per destination.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "TLS reports for {}: {} result lines read ({} unreadable, skipped), {} policy domains\n",
            self.day,
            self.lines,
            self.skipped,
            self.domains.len()
        );
        for (domain, outcome) in &self.domains {
            match outcome {
                DomainOutcome::NoRecord => {
                    out += &format!("  {domain}: no _smtp._tls record, no report\n")
                }
                DomainOutcome::BadRecord(e) => {
                    out += &format!("  {domain}: unusable _smtp._tls record ({e}), no report\n")
                }
                DomainOutcome::DnsFailed(e) => {
                    out += &format!("  {domain}: FAILED: _smtp._tls look-up: {e}\n")
                }
                DomainOutcome::StoreFailed(e) => out += &format!("  {domain}: FAILED: {e}\n"),
                DomainOutcome::Busy { file } => {
                    out += &format!("  {domain}: {file} is being delivered by another sender\n")
                }
                DomainOutcome::NoFailures { successful } => {
                    out += &format!(
                        "  {domain}: {successful} successful sessions, no failure: no report (only_with_failures)\n"
                    )
                }
                DomainOutcome::Report {
                    file,
                    successful,
                    failed,
                    destinations,
                } => {
                    out += &format!(
                        "  {domain}: {successful} successful, {failed} failed sessions: reports/{file}\n"
                    );
                    for (rua, state) in destinations {
                        let state = match state {
                            DestinationState::Sent(said) => format!("sent ({said})"),
                            DestinationState::AlreadySent => "sent before".to_string(),
                            DestinationState::Failed(e) => format!("FAILED: {e}"),
                            DestinationState::Pending => "not sent (use --send)".to_string(),
                            DestinationState::Ignored => {
                                "ignored (not mailto: or https:)".to_string()
                            }
                            DestinationState::Suppressed(why) => format!("suppressed: {why}"),
                        };
                        out += &format!("    {rua}: {state}\n");
                    }
                }
            }
        }
        out
    }
}

/// Bounds of an HTTPS delivery: connect to the receiver's last byte.
const HTTPS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Reporting {
    /// The reporting of `config`: `Ok(None)` without a `[tls_reporting]` table; `Err` when
    /// `state_directory/reports` cannot be made.
    pub fn from_config(
        config: &crate::config::Config,
        resolver: Arc<dyn Resolve>,
    ) -> std::io::Result<Option<Reporting>> {
        let Some(settings) = config.tls_reporting.clone() else {
            return Ok(None);
        };
        let store = ReportStore::open(&config.state.directory.join("reports"))?;
        // Report addresses: a place to keep what arrives must exist before anything does.
        if !settings.receive.is_empty() {
            crate::state::received::ReceivedStore::open(&config.state.directory.join("received"))?;
        }
        // RFC 8460 §5.1: the receiver's certificate is checked against the WebPKI, the same
        // anchors MTA-STS policy hosts are checked against.
        let https = config
            .outbound_policy
            .mta_sts_anchors
            .webpki()
            .map(|v| HttpsClient::new(v, HTTPS_TIMEOUT, deliver::MAX_RESPONSE_BYTES));
        Ok(Some(Reporting {
            settings,
            node: config.hostname.clone(),
            results_dir: config.state.results_dir(),
            store,
            resolver,
            https,
            retention_days: config.state.retention_days,
            received_dir: config.state.directory.join("received"),
        }))
    }

    /// Removes reports sent and received that are older than `retention` (reports: by the day
    /// they are about; received ones: by when they came); returns how many.
    pub fn prune(&self) -> std::io::Result<usize> {
        let days = i64::from(self.retention_days);
        let now = time::OffsetDateTime::now_utc();
        let oldest_day = (now.date() - time::Duration::days(days))
            .midnight()
            .assume_utc();
        let mut removed = self.store.prune(oldest_day.unix_timestamp())?;
        if self.received_dir.is_dir() {
            let oldest = std::time::SystemTime::now()
                - std::time::Duration::from_secs(86_400 * u64::from(self.retention_days));
            removed +=
                crate::state::received::ReceivedStore::open(&self.received_dir)?.prune(oldest)?;
        }
        Ok(removed)
    }

    /// Builds, stores and (with `send`) delivers the reports of UTC `day` (`YYYY-MM-DD`).
    pub async fn run_day(&self, day: &str, send: bool) -> std::io::Result<DayRun> {
        let mut by_domain: BTreeMap<String, DayTally> = BTreeMap::new();
        let read = results::read_days(&self.results_dir, day, day, |r| {
            if r.direction != Direction::Outbound || r.report_delivery || r.day() != day {
                return;
            }
            if let Some(domain) = &r.domain {
                match by_domain.get_mut(domain.as_str()) {
                    Some(tally) => tally.add(&r),
                    None => {
                        let mut tally = DayTally::default();
                        tally.add(&r);
                        by_domain.insert(domain.clone(), tally);
                    }
                }
            }
        });
        // No results directory yet: no session was ever recorded, so there is nothing to report.
        let stats = match read {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            other => other?,
        };
        let mut run = DayRun {
            day: day.to_string(),
            lines: stats.lines,
            skipped: stats.skipped,
            domains: BTreeMap::new(),
        };
        let history = match send && self.settings.suppress_after_days > 0 && !by_domain.is_empty() {
            true => self.store.destination_days()?,
            false => Default::default(),
        };
        for (domain, tally) in by_domain {
            let outcome = self.run_domain(day, &domain, tally, send, &history).await;
            run.domains.insert(domain, outcome);
        }
        Ok(run)
    }

    async fn run_domain(
        &self,
        day: &str,
        domain: &str,
        tally: DayTally,
        send: bool,
        history: &std::collections::HashMap<String, BTreeMap<i64, bool>>,
    ) -> DomainOutcome {
        let record = match self.resolver.txt(&format!("_smtp._tls.{domain}")).await {
            Ok(txts) => tlsrpt::parse_records(txts.iter().map(String::as_str)),
            Err(DnsError::NoSuchName | DnsError::NoRecords) => Err(TlsRptError::NoRecord),
            Err(e @ DnsError::Temporary(_)) => return DomainOutcome::DnsFailed(e.to_string()),
        };
        let record = match record {
            Ok(r) => r,
            Err(TlsRptError::NoRecord) => return DomainOutcome::NoRecord,
            Err(e) => return DomainOutcome::BadRecord(e.to_string()),
        };
        let s = &self.settings;
        let reporter = Reporter {
            organization: s.organization.clone(),
            contact: s.contact.clone(),
            submitter: s.submitter.clone(),
        };
        let Some(report) = tally.into_report(&reporter, domain, day) else {
            return DomainOutcome::NoRecord;
        };
        let (successful, failed) = report.policies.iter().fold((0, 0), |(s, f), p| {
            (s + p.summary.successful, f + p.summary.failed)
        });
        if s.only_with_failures && failed == 0 {
            return DomainOutcome::NoFailures { successful };
        }
        let file = report.file_name(&s.submitter);
        let begin = time::OffsetDateTime::parse(
            &report.date_range.start,
            &time::format_description::well_known::Rfc3339,
        )
        .map_or(0, |t| t.unix_timestamp());
        let lock = match self.store.lock(&file, &self.node) {
            Ok(Some(lock)) => lock,
            Ok(None) => return DomainOutcome::Busy { file },
            Err(e) => return DomainOutcome::StoreFailed(format!("locking {file}: {e}")),
        };
        let gzip = match self.store.store(&file, &report.to_gzip()) {
            Ok(bytes) => bytes,
            Err(e) => return DomainOutcome::StoreFailed(format!("writing {file}: {e}")),
        };
        let mut destinations = Vec::new();
        for rua in &record.rua {
            let (uri, transport) = match rua {
                Rua::Https(uri) => (uri.clone(), "https"),
                Rua::Mailto(address) => (format!("mailto:{address}"), "mailto"),
            };
            let suppressed = history
                .get(&uri)
                .and_then(|days| suppression(days, begin, s.suppress_after_days));
            let state = match self.store.is_delivered(&file, &uri) {
                Err(e) => DestinationState::Failed(format!("reading the ledger: {e}")),
                Ok(true) => DestinationState::AlreadySent,
                Ok(false) if !send => DestinationState::Pending,
                Ok(false) if suppressed.is_some() => {
                    let why = suppressed.unwrap_or_default();
                    crate::log::warn("tls_report_suppressed")
                        .field("domain", domain)
                        .field("rua", &uri)
                        .field("file", &file)
                        .field("detail", &why)
                        .emit();
                    DestinationState::Suppressed(why)
                }
                Ok(false) => {
                    let attempt = match rua {
                        Rua::Https(uri) => {
                            deliver::https(self.https.as_ref(), self.resolver.as_ref(), uri, &gzip)
                                .await
                        }
                        Rua::Mailto(address) => {
                            let message = MailedReport {
                                reporting: s,
                                domain,
                                report_id: &report.report_id,
                                file_name: &file,
                                gzip: &gzip,
                                to: address,
                            }
                            .message(time::OffsetDateTime::now_utc());
                            deliver::mailto(s.send_via, &self.node, &s.from, address, &message)
                                .await
                        }
                    };
                    self.record(&file, domain, &uri, transport, attempt)
                }
            };
            destinations.push((uri, state));
        }
        for uri in &record.ignored {
            destinations.push((uri.clone(), DestinationState::Ignored));
        }
        drop(lock);
        DomainOutcome::Report {
            file,
            successful,
            failed,
            destinations,
        }
    }

    /// Counts, logs and records one attempt; a success that cannot be recorded is reported as
    /// a failure (the next run may send it again: twice beats never).
    fn record(
        &self,
        file: &str,
        domain: &str,
        uri: &str,
        transport: &'static str,
        attempt: Result<String, deliver::DeliveryError>,
    ) -> DestinationState {
        let (result, detail) = match &attempt {
            Ok(said) => (Delivery::Sent, said.clone()),
            Err(e) => (Delivery::Failed, e.to_string()),
        };
        crate::metrics::tls_report(transport, result == Delivery::Sent);
        let event = match result {
            Delivery::Sent => crate::log::info("tls_report_sent"),
            Delivery::Failed => crate::log::warn("tls_report_failed"),
        };
        event
            .field("domain", domain)
            .field("rua", uri)
            .field("transport", transport)
            .field("file", file)
            .field("detail", &detail)
            .emit();
        let entry = LedgerEntry {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            node: self.node.clone(),
            rua: uri.to_string(),
            result,
            detail: Some(detail.clone()),
        };
        if let Err(e) = self.store.record(file, &entry) {
            return DestinationState::Failed(format!("{detail}, but recording it failed: {e}"));
        }
        match attempt {
            Ok(said) => DestinationState::Sent(said),
            Err(e) => DestinationState::Failed(e.to_string()),
        }
    }
}
