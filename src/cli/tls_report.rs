//! `starttls-proxy tls-report`: a day's TLS reports (RFC 8460) built from every node's session
//! results, stored under `state_directory/reports/`, and with `--send` delivered to each
//! destination that does not have them yet (DESIGN "Contract: session results and TLS
//! reporting"). The running proxy's schedule takes the same path (`report::day`). `--received`
//! and `import` are the other way: reports partners send us.

use crate::config::Config;
use crate::report::day::Reporting;
use crate::report::received;
use crate::state::received::{Form, ReceivedStore};
use std::path::{Path, PathBuf};

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

/// Reads at most `limit` + 1 bytes of `path` (a larger file is refused without reading it all).
fn read_bounded(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn received_store(config: &Config) -> std::io::Result<ReceivedStore> {
    ReceivedStore::open(&config.state.directory.join("received"))
}

/// `tls-report import PATH`: every report in PATH (a `.json`, `.json.gz` or e-mail file, a
/// directory of them, or a maildir's `new/` and `cur/`) checked and kept with the received ones.
pub fn import(config: &Config, path: &Path) -> Exit {
    let files = match import_candidates(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("starttls-proxy: cannot read {}: {e}", path.display());
            return Exit::Usage;
        }
    };
    let store = match received_store(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "starttls-proxy: cannot use {}: {e}",
                config.state.directory.join("received").display()
            );
            return Exit::Failed;
        }
    };
    let (mut imported, mut known, mut refused) = (0, 0, 0);
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let form = if name.ends_with(".json") {
            Form::Json
        } else if name.ends_with(".gz") {
            Form::Gzip
        } else {
            Form::Message
        };
        let outcome = read_bounded(file, received::MAX_MESSAGE_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                if bytes.len() > received::MAX_MESSAGE_BYTES {
                    return Err(
                        received::ReceivedError::TooLarge(received::MAX_MESSAGE_BYTES).to_string(),
                    );
                }
                let report = received::parse_file(name, &bytes).map_err(|e| e.to_string())?;
                let (_, new) = store.store(&bytes, form).map_err(|e| e.to_string())?;
                Ok((report, new))
            });
        match outcome {
            Ok((report, true)) => {
                imported += 1;
                println!(
                    "  {}: imported ({}, report {})",
                    file.display(),
                    report.organization_name,
                    report.report_id
                );
            }
            Ok((_, false)) => {
                known += 1;
                println!("  {}: already kept", file.display());
            }
            Err(why) => {
                refused += 1;
                println!("  {}: NOT imported: {why}", file.display());
            }
        }
    }
    println!("{imported} imported, {known} already kept, {refused} not imported");
    if refused > 0 {
        Exit::Failed
    } else {
        Exit::Done
    }
}

fn import_candidates(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let maildir = ["new", "cur"].map(|d| path.join(d));
    let dirs: Vec<PathBuf> = match maildir.iter().any(|d| d.is_dir()) {
        true => maildir.into_iter().filter(|d| d.is_dir()).collect(),
        false => vec![path.to_path_buf()],
    };
    let mut files = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if p.is_file() && !hidden {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `tls-report --received`: what partners reported about delivering to us on `day` (default
/// yesterday): per reporting organisation and policy domain, the sessions and the failures.
pub fn received_summary(config: &Config, day: Option<String>) -> Exit {
    let day = day.unwrap_or_else(yesterday);
    let dir = config.state.directory.join("received");
    let files = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            eprintln!("starttls-proxy: cannot read {}: {e}", dir.display());
            return Exit::Failed;
        }
        Ok(_) => match received_store(config).and_then(|s| s.files()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("starttls-proxy: cannot read {}: {e}", dir.display());
                return Exit::Failed;
            }
        },
    };
    let mut out = String::new();
    let (mut reports, mut unreadable) = (0, 0);
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let parsed = read_bounded(file, received::MAX_MESSAGE_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|b| received::parse_file(name, &b).map_err(|e| e.to_string()));
        let report = match parsed {
            Ok(r) => r,
            Err(why) => {
                unreadable += 1;
                out += &format!("  {name}: unreadable: {why}\n");
                continue;
            }
        };
        if !report.date_range.start.starts_with(&day) {
            continue;
        }
        reports += 1;
        for p in &report.policies {
            out += &format!(
                "  {} ({}), {} {}: {} successful, {} failed sessions\n",
                report.organization_name,
                report.contact_info,
                p.policy.policy_domain,
                serde_json::to_value(p.policy.policy_type)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                p.summary.successful,
                p.summary.failed
            );
            for f in &p.failure_details {
                let ip = |a: Option<std::net::IpAddr>| a.map_or("-".to_string(), |a| a.to_string());
                out += &format!(
                    "    {}: {} (from {} to {} {})\n",
                    f.result_type.as_str(),
                    f.failed_session_count,
                    ip(f.sending_mta_ip),
                    f.receiving_mx_hostname.as_deref().unwrap_or("-"),
                    ip(f.receiving_ip)
                );
            }
        }
    }
    print!(
        "TLS reports received about {day}: {reports} reports ({unreadable} files unreadable) in {}\n{out}",
        dir.display()
    );
    Exit::Done
}
