//! `starttls-proxy coverage`: encryption coverage per partner domain and direction, counted from
//! the session results (DESIGN "Contract: operator monitoring"). Every figure is a count of
//! result lines, so an auditor can trace it with `jq`.
//!
//! Speed: a busy node writes a million lines a day, so the reader parses only the keys it needs
//! (borrowing from the line), looks rows up without allocating, and splits the files over the
//! machine's cores.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// One row: a (direction, domain) pair over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub direction: String,
    /// Outbound: the recipient domain; inbound: the MAIL FROM domain (`None`: none was seen).
    pub domain: Option<String>,
    pub sessions: u64,
    /// Share of sessions with TLS (0..1).
    pub tls_share: f64,
    /// Share of sessions whose certificate was verified (0..1).
    pub verified_share: f64,
    /// TLS version → sessions.
    pub versions: BTreeMap<String, u64>,
    pub last_failure: Option<LastFailure>,
    /// The counts behind the shares (`evidence` shows them; not in coverage's output).
    #[serde(skip)]
    pub tls_sessions: u64,
    #[serde(skip)]
    pub verified_sessions: u64,
    /// Failed sessions by RFC 8460 result type (`evidence`; not in coverage's output).
    #[serde(skip)]
    pub failures: BTreeMap<String, Failures>,
}

/// The sessions of one row that failed with one result type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failures {
    pub sessions: u64,
    pub first: String,
    pub last: String,
}

impl Failures {
    fn add(&mut self, time: &str) {
        self.sessions += 1;
        if self.first.is_empty() || time < self.first.as_str() {
            self.first = time.to_string();
        }
        if time > self.last.as_str() {
            self.last = time.to_string();
        }
    }

    fn merge(&mut self, other: Failures) {
        self.sessions += other.sessions;
        if self.first.is_empty() || (!other.first.is_empty() && other.first < self.first) {
            self.first = other.first;
        }
        if other.last > self.last {
            self.last = other.last;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastFailure {
    pub time: String,
    pub result: String,
}

/// The rows and what was read to make them.
#[derive(Debug, Default)]
pub struct Coverage {
    pub rows: Vec<Row>,
    pub files: usize,
    pub lines: u64,
    /// Lines that were not results (torn, foreign): not counted.
    pub skipped: u64,
}

/// The keys coverage reads; the rest of each line is skipped unparsed.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    direction: Cow<'a, str>,
    #[serde(borrow)]
    domain: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tls_version: Option<Cow<'a, str>>,
    verified: bool,
    #[serde(borrow)]
    result: Cow<'a, str>,
}

#[derive(Default)]
struct Tally {
    sessions: u64,
    tls: u64,
    verified: u64,
    versions: Vec<(String, u64)>,
    last_failure: Option<LastFailure>,
    failures: Vec<(String, Failures)>,
}

impl Tally {
    fn add(&mut self, line: &Line) {
        self.sessions += 1;
        if let Some(v) = &line.tls_version {
            self.tls += 1;
            match self.versions.iter_mut().find(|(name, _)| name == v) {
                Some((_, n)) => *n += 1,
                None => self.versions.push((v.to_string(), 1)),
            }
        }
        self.verified += u64::from(line.verified);
        if line.result != "success" {
            match self
                .failures
                .iter_mut()
                .find(|(result, _)| result == line.result.as_ref())
            {
                Some((_, f)) => f.add(&line.time),
                None => {
                    let mut f = Failures::default();
                    f.add(&line.time);
                    self.failures.push((line.result.to_string(), f));
                }
            }
        }
        if line.result != "success"
            && self
                .last_failure
                .as_ref()
                .is_none_or(|f| f.time.as_str() <= line.time.as_ref())
        {
            self.last_failure = Some(LastFailure {
                time: line.time.to_string(),
                result: line.result.to_string(),
            });
        }
    }

    fn merge(&mut self, other: Tally) {
        self.sessions += other.sessions;
        self.tls += other.tls;
        self.verified += other.verified;
        for (v, n) in other.versions {
            match self.versions.iter_mut().find(|(name, _)| *name == v) {
                Some((_, m)) => *m += n,
                None => self.versions.push((v, n)),
            }
        }
        for (result, f) in other.failures {
            match self.failures.iter_mut().find(|(r, _)| *r == result) {
                Some((_, mine)) => mine.merge(f),
                None => self.failures.push((result, f)),
            }
        }
        if let Some(f) = other.last_failure {
            if self
                .last_failure
                .as_ref()
                .is_none_or(|mine| mine.time <= f.time)
            {
                self.last_failure = Some(f);
            }
        }
    }
}

/// Per direction, per domain (`""`: none seen); `String` keys looked up by `&str`.
#[derive(Default)]
struct Tallies {
    by_direction: HashMap<String, HashMap<String, Tally>>,
    lines: u64,
    skipped: u64,
}

impl Tallies {
    fn add(&mut self, line: &Line) {
        let by_domain = match self.by_direction.get_mut(line.direction.as_ref()) {
            Some(m) => m,
            None => self
                .by_direction
                .entry(line.direction.to_string())
                .or_default(),
        };
        let domain = line.domain.as_deref().unwrap_or("");
        match by_domain.get_mut(domain) {
            Some(t) => t.add(line),
            None => by_domain.entry(domain.to_string()).or_default().add(line),
        }
    }

    fn merge(&mut self, other: Tallies) {
        self.lines += other.lines;
        self.skipped += other.skipped;
        for (direction, domains) in other.by_direction {
            let mine = self.by_direction.entry(direction).or_default();
            for (domain, tally) in domains {
                mine.entry(domain).or_default().merge(tally);
            }
        }
    }
}

/// Coverage from every results file in `dir` whose lines may fall in `since..=until` (RFC 3339
/// UTC times; files are picked by their day, lines by their time).
pub fn compute(dir: &Path, since: &str, until: &str) -> std::io::Result<Coverage> {
    let first_day = since.get(..10).unwrap_or(since);
    let last_day = until.get(..10).unwrap_or(until);
    let files: Vec<PathBuf> = crate::state::results::result_files(dir)?
        .into_iter()
        .filter(|(_, day)| day.as_str() >= first_day && day.as_str() <= last_day)
        .map(|(path, _)| path)
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let tallies = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let mine: Vec<&PathBuf> = files.iter().skip(w).step_by(workers).collect();
                scope.spawn(move || -> std::io::Result<Tallies> {
                    let mut t = Tallies::default();
                    for path in mine {
                        read_file(path, since, until, &mut t)?;
                    }
                    Ok(t)
                })
            })
            .collect();
        let mut all = Tallies::default();
        for h in handles {
            all.merge(h.join().expect("coverage worker")?);
        }
        Ok::<_, std::io::Error>(all)
    })?;
    let mut rows = Vec::new();
    for (direction, domains) in tallies.by_direction {
        for (domain, t) in domains {
            let share = |n: u64| n as f64 / t.sessions.max(1) as f64;
            rows.push(Row {
                direction: direction.clone(),
                domain: (!domain.is_empty()).then_some(domain),
                sessions: t.sessions,
                tls_share: share(t.tls),
                verified_share: share(t.verified),
                versions: t.versions.into_iter().collect(),
                last_failure: t.last_failure,
                tls_sessions: t.tls,
                verified_sessions: t.verified,
                failures: t.failures.into_iter().collect(),
            });
        }
    }
    // Busiest partners first, then by name: the same order every run.
    rows.sort_by(|a, b| {
        (&a.direction, std::cmp::Reverse(a.sessions), &a.domain).cmp(&(
            &b.direction,
            std::cmp::Reverse(b.sessions),
            &b.domain,
        ))
    });
    Ok(Coverage {
        rows,
        files: files.len(),
        lines: tallies.lines,
        skipped: tallies.skipped,
    })
}

fn read_file(path: &Path, since: &str, until: &str, t: &mut Tallies) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        t.lines += 1;
        match serde_json::from_slice::<Line>(&buf) {
            Ok(line) if line.time.as_ref() >= since && line.time.as_ref() <= until => t.add(&line),
            Ok(_) => {}
            Err(_) => t.skipped += 1,
        }
    }
}

/// How `coverage` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl Coverage {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let mut text = serde_json::to_string_pretty(&self.rows).unwrap_or_default();
                text.push('\n');
                text
            }
            Format::Csv => {
                let mut out = String::from(
                    "direction,domain,sessions,tls_share,verified_share,versions,last_failure\n",
                );
                for r in &self.rows {
                    out += &format!(
                        "{},{},{},{:.4},{:.4},{},{}\n",
                        r.direction,
                        r.domain.as_deref().unwrap_or(""),
                        r.sessions,
                        r.tls_share,
                        r.verified_share,
                        versions(r, ";"),
                        r.last_failure
                            .as_ref()
                            .map_or(String::new(), |f| format!("{} {}", f.time, f.result)),
                    );
                }
                out
            }
            Format::Table => {
                let mut out = format!(
                    "{:<9} {:<32} {:>9} {:>7} {:>9}  {:<26} last failure\n",
                    "direction", "domain", "sessions", "tls", "verified", "versions"
                );
                for r in &self.rows {
                    out += &format!(
                        "{:<9} {:<32} {:>9} {:>6.1}% {:>8.1}%  {:<26} {}\n",
                        r.direction,
                        r.domain.as_deref().unwrap_or("-"),
                        r.sessions,
                        100.0 * r.tls_share,
                        100.0 * r.verified_share,
                        versions(r, " "),
                        r.last_failure
                            .as_ref()
                            .map_or("-".to_string(), |f| format!("{} {}", f.time, f.result)),
                    );
                }
                out += &format!(
                    "({} results in {} files{})\n",
                    self.lines,
                    self.files,
                    if self.skipped > 0 {
                        format!(", {} unreadable lines skipped", self.skipped)
                    } else {
                        String::new()
                    }
                );
                out
            }
        }
    }
}

/// `TLSv1.3=12;TLSv1.2=3`.
fn versions(row: &Row, separator: &str) -> String {
    row.versions
        .iter()
        .map(|(v, n)| format!("{v}={n}"))
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
#[path = "coverage_tests.rs"]
mod tests;
