//! The running proxy's daily TLS reports: after each UTC day, at this node's point in the
//! first `send_spread` of the next, the day's reports are built and delivered through the same
//! path as `starttls-proxy tls-report --send` ([`Reporting::run_day`]); what failed is retried
//! with a doubling backoff until the day is over. The ledger makes every run idempotent, so a
//! restart (which starts over with the day due now) or another node sharing the directory never
//! sends a report to a destination twice.

use super::day::Reporting;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The first retry of a day's failures; each next waits twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5 * 60);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2 * 3600);
/// The loop looks at the wall clock at least this often (a clock set forward, a suspended VM).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Where the delivery of one day's reports stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayState {
    /// The report day (`YYYY-MM-DD`).
    pub day: String,
    pub attempts: u32,
    /// The last run left nothing to do.
    pub complete: bool,
    pub last_attempt: Option<OffsetDateTime>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Build and deliver the reports of `day` now.
    Run { day: String },
    /// Nothing until then.
    WaitUntil(OffsetDateTime),
}

/// This node's point in the window: the same every day, different between nodes.
pub fn offset_for(node: &str, spread: Duration) -> Duration {
    let secs = spread.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, node.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    Duration::from_secs(u64::from_be_bytes(first) % secs)
}

/// The wait before retry number `attempts` (1: the first retry).
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// The next step at `now` for a node whose point in the window is `offset`, given where the
/// day before `now`'s stands (`state` of another day counts as untouched).
pub fn plan(now: OffsetDateTime, offset: Duration, state: &DayState) -> Plan {
    let today = now.date();
    let day = today.previous_day().unwrap_or(today).to_string();
    let midnight = today.midnight().assume_utc();
    let due = midnight + offset;
    let next_due = midnight + time::Duration::days(1) + offset;
    let fresh = DayState::default();
    let state = if state.day == day { state } else { &fresh };
    if state.complete {
        return Plan::WaitUntil(next_due);
    }
    if now < due {
        return Plan::WaitUntil(due);
    }
    let Some(last) = state.last_attempt.filter(|_| state.attempts > 0) else {
        return Plan::Run { day };
    };
    let retry = last + backoff(state.attempts);
    // Retries end with the day; the next day's reports are due then.
    if retry >= midnight + time::Duration::days(1) {
        return Plan::WaitUntil(next_due);
    }
    if now >= retry {
        Plan::Run { day }
    } else {
        Plan::WaitUntil(retry)
    }
}

/// The wall clock, replaceable in tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The scheduler task and the means to hand it a reloaded configuration; stops when dropped.
pub struct Schedule {
    reporting: watch::Sender<Option<Reporting>>,
    task: JoinHandle<()>,
}

impl Schedule {
    /// Starts the loop (`None`: idle until a reload brings a `[tls_reporting]` table).
    pub fn start(reporting: Option<Reporting>, clock: impl Clock) -> Schedule {
        if reporting.is_some() {
            crate::metrics::tls_reports_register();
        }
        let (tx, rx) = watch::channel(reporting);
        Schedule {
            reporting: tx,
            task: tokio::spawn(run(rx, clock)),
        }
    }

    /// The reporting of a reloaded configuration, for the next run.
    pub fn update(&self, reporting: Option<Reporting>) {
        if reporting.is_some() {
            crate::metrics::tls_reports_register();
        }
        self.reporting.send_replace(reporting);
    }
}

impl Drop for Schedule {
    fn drop(&mut self) {
        // A delivery cut short is not in the ledger (sent again later: twice beats never); its
        // lock goes with the dropped future.
        self.task.abort();
    }
}

async fn run(mut reporting: watch::Receiver<Option<Reporting>>, clock: impl Clock) {
    let mut state = DayState::default();
    loop {
        let current = reporting.borrow_and_update().clone();
        let Some(current) = current else {
            if reporting.changed().await.is_err() {
                return;
            }
            continue;
        };
        let now = clock.now();
        let offset = offset_for(&current.node, current.settings.send_spread);
        match plan(now, offset, &state) {
            Plan::Run { day } => {
                if state.day != day {
                    state = DayState {
                        day: day.clone(),
                        ..DayState::default()
                    };
                }
                match current.run_day(&day, true).await {
                    Ok(run) => {
                        let (reports, sent, failed) = run.counts();
                        state.complete = run.is_complete();
                        let event = match state.complete {
                            true => crate::log::info("tls_reports_run"),
                            false => crate::log::warn("tls_reports_run"),
                        };
                        event
                            .field("day", &day)
                            .field("reports", reports)
                            .field("sent", sent)
                            .field("failed", failed)
                            .field("complete", state.complete)
                            .emit();
                    }
                    Err(e) => crate::log::warn("tls_reports_run_failed")
                        .field("day", &day)
                        .field("error", e)
                        .emit(),
                }
                if state.attempts == 0 {
                    match current.prune() {
                        Ok(0) => {}
                        Ok(n) => crate::log::info("tls_reports_pruned")
                            .field("files", n)
                            .emit(),
                        Err(e) => crate::log::warn("tls_reports_prune_failed")
                            .field("error", e)
                            .emit(),
                    }
                }
                state.attempts += 1;
                state.last_attempt = Some(clock.now());
            }
            Plan::WaitUntil(when) => {
                let wait = Duration::try_from(when - now)
                    .unwrap_or_default()
                    .min(MAX_SLEEP);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = reporting.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
