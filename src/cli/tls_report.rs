//! `starttls-proxy tls-report`: a day's TLS reports (RFC 8460) built from every node's session
//! results, stored under `state_directory/reports/`, and with `--send` delivered to each
//! destination that does not have them yet (DESIGN "Contract: session results and TLS
//! reporting"). The running proxy's schedule takes the same path (`report::day`).

use crate::config::Config;
use crate::report::day::Reporting;

/// What the command came to, as its exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything that was to go went (0).
    Done = 0,
    /// A delivery, a look-up or the store failed (1).
    Failed = 1,
    /// Usage or configuration (2).
    Usage = 2,
}

/// `YYYY-MM-DD`, a real date.
pub fn parse_day(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not a day like 2026-12-05 (YYYY-MM-DD, UTC)");
    let shape_ok = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u16>().map_err(|_| bad());
    let month = time::Month::try_from(number(5..7)? as u8).map_err(|_| bad())?;
    time::Date::from_calendar_date(i32::from(number(0..4)?), month, number(8..10)? as u8)
        .map(|d| d.to_string())
        .map_err(|_| bad())
}

/// The UTC day before today: the last complete one.
pub fn yesterday() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    today.previous_day().unwrap_or(today).to_string()
}

/// Runs the command for `day` (default: yesterday), printing the summary on stdout and
/// failures on stderr.
pub async fn run(config: &Config, day: Option<String>, send: bool) -> Exit {
    let resolver = crate::resolver::build(&config.resolver);
    let reporting = match Reporting::from_config(config, resolver) {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!(
                "starttls-proxy: {}: no [tls_reporting] table: add one (organization, contact, submitter, from; send_via for mailto:) to build TLS reports",
                config.source.display()
            );
            return Exit::Usage;
        }
        Err(e) => {
            eprintln!(
                "starttls-proxy: cannot use {}: {e}",
                config.state.directory.join("reports").display()
            );
            return Exit::Failed;
        }
    };
    let day = day.unwrap_or_else(yesterday);
    match reporting.run_day(&day, send).await {
        Ok(run) => {
            print!("{}", run.summary());
            if run.has_failures() {
                eprintln!("starttls-proxy: some TLS reports for {day} were not delivered (see above); run again to retry");
                Exit::Failed
            } else {
                Exit::Done
            }
        }
        Err(e) => {
            eprintln!(
                "starttls-proxy: cannot read session results in {}: {e}",
                config.state.results_dir().display()
            );
            Exit::Failed
        }
    }
}
