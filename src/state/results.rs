//! Session results (DESIGN "Contract: session results"): one JSON line per outbound MX attempt
//! or inbound connection, appended to `results/<node>-<YYYY-MM-DD>.jsonl` (UTC day) and on disk
//! before the session's log line is written, so a crash loses nothing that was logged.
//!
//! One writer thread owns the files. Sessions hand it their line and wait for its word; it
//! writes every line that is waiting with one `write(2)` per file and one `fdatasync(2)`, so a
//! burst of sessions shares a sync (group commit). A disk that stalls costs a session at most
//! [`SYNC_WAIT`], never the session itself: it goes on and the failure is counted.

pub use crate::policy::{PolicyType, ResultType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a session waits for its result to be on disk before it goes on without.
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

/// `inbound` or `outbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// `success`, or the RFC 8460 result type of the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    Failure(ResultType),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(t) => t.as_str(),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "success" {
            return Ok(Outcome::Success);
        }
        ResultType::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .map(Outcome::Failure)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown result {text:?}")))
    }
}

/// One line of a results file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResult {
    /// RFC 3339, UTC.
    pub time: String,
    /// The proxy's `hostname`: files of several nodes may share one directory.
    pub node: String,
    pub direction: Direction,
    /// Outbound: the recipient domain; inbound: the MAIL FROM domain where seen.
    pub domain: Option<String>,
    pub policy_type: PolicyType,
    #[serde(default)]
    pub policy_strings: Vec<String>,
    pub mx_host: Option<String>,
    pub mx_ip: Option<IpAddr>,
    /// Outbound: our own address towards the MX (RFC 8460 `sending-mta-ip`). An extension of
    /// the contract's keys.
    #[serde(default)]
    pub local_ip: Option<IpAddr>,
    /// Inbound: the client's address.
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub verified: bool,
    pub result: Outcome,
    pub session_id: String,
    /// A session that delivered a TLS report: never counted in one (RFC 8460 §5.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report_delivery: bool,
}

impl SessionResult {
    /// `YYYY-MM-DD` of `time`: the file it belongs in.
    pub fn day(&self) -> &str {
        self.time.get(..10).unwrap_or("0000-00-00")
    }
}

/// Why the results log could not be opened or a result not kept.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("results directory {0}: {1}")]
    Directory(PathBuf, std::io::Error),
    #[error("writing results: {0}")]
    Write(String),
    #[error("results not on disk within {0:?}")]
    Stalled(Duration),
    #[error("the results writer has stopped")]
    Stopped,
}

struct Pending {
    day: String,
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The appending side, shared by every session.
#[derive(Clone)]
pub struct ResultsLog {
    dir: PathBuf,
    tx: mpsc::Sender<Pending>,
}

impl ResultsLog {
    /// Creates `dir` if needed and proves it writable (a clear error at start, not a stalled
    /// session later), repairs a line torn by a crash at the end of this node's files, removes
    /// files older than `retention_days`, and starts the writer.
    pub fn open(dir: &Path, node: &str, retention_days: u32) -> Result<ResultsLog, ResultsError> {
        let fail = |e| ResultsError::Directory(dir.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(fail)?;
        let probe = dir.join(format!(".{node}.probe"));
        File::create(&probe)
            .and_then(|mut f| f.write_all(b"ok").and_then(|_| f.sync_all()))
            .map_err(fail)?;
        let _ = std::fs::remove_file(&probe);
        for (path, _) in result_files(dir).map_err(fail)? {
            if file_node(&path).as_deref() == Some(node) {
                repair_torn_tail(&path);
            }
        }
        prune(dir, retention_days);
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            retention_days,
            open: None,
        };
        std::thread::Builder::new()
            .name("results-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(fail)?;
        Ok(ResultsLog {
            dir: dir.to_path_buf(),
            tx,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `result` and returns once it is on disk (or after [`SYNC_WAIT`] with an error).
    pub async fn record(&self, result: &SessionResult) -> Result<(), ResultsError> {
        self.record_all(std::slice::from_ref(result)).await
    }

    /// Appends `results` in order, as one write, and returns once they are on disk.
    pub async fn record_all(&self, results: &[SessionResult]) -> Result<(), ResultsError> {
        let Some(first) = results.first() else {
            return Ok(());
        };
        let mut line = Vec::new();
        for result in results {
            serde_json::to_writer(&mut line, result)
                .map_err(|e| ResultsError::Write(e.to_string()))?;
            line.push(b'\n');
        }
        let (done, written) = oneshot::channel();
        self.tx
            .send(Pending {
                day: first.day().to_string(),
                line,
                done,
            })
            .map_err(|_| ResultsError::Stopped)?;
        match tokio::time::timeout(SYNC_WAIT, written).await {
            Err(_) => Err(ResultsError::Stalled(SYNC_WAIT)),
            Ok(Err(_)) => Err(ResultsError::Stopped),
            Ok(Ok(r)) => r.map_err(ResultsError::Write),
        }
    }
}

struct Writer {
    dir: PathBuf,
    node: String,
    retention_days: u32,
    /// The day file written last, kept open: its day and handle.
    open: Option<(String, File)>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Pending>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            // Lines in arrival order per day; usually one day, two around midnight.
            let mut by_day: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
            for p in batch {
                by_day.entry(p.day.clone()).or_default().push(p);
            }
            for (day, pendings) in by_day {
                let bytes: Vec<u8> = pendings.iter().flat_map(|p| p.line.clone()).collect();
                // Counted by each waiting session, which also logs it.
                let outcome = self.append(&day, &bytes).map_err(|e| e.to_string());
                for p in pendings {
                    let _ = p.done.send(outcome.clone());
                }
            }
        }
    }

    fn append(&mut self, day: &str, bytes: &[u8]) -> std::io::Result<()> {
        if self.open.as_ref().map(|(d, _)| d.as_str()) != Some(day) {
            let is_new_day = match &self.open {
                None => true,
                Some((open_day, _)) => open_day.as_str() < day,
            };
            let path = self.dir.join(format!("{}-{day}.jsonl", self.node));
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            self.open = Some((day.to_string(), file));
            if is_new_day {
                prune(&self.dir, self.retention_days);
            }
        }
        let (_, file) = self.open.as_mut().expect("opened above");
        file.write_all(bytes)?;
        file.sync_data()
    }
}

/// Results files in `dir` with their day, oldest first (every node's: readers merge them).
pub fn result_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let day = file_day(&path)?;
            Some((path, day))
        })
        .collect();
    files.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(files)
}

/// `node-YYYY-MM-DD.jsonl` → `YYYY-MM-DD`.
fn file_day(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".jsonl")?;
    let day = stem.get(stem.len().checked_sub(10)?..)?;
    let shape_ok = day.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        _ => b.is_ascii_digit(),
    });
    (shape_ok && stem.len() > 11 && stem.as_bytes()[stem.len() - 11] == b'-')
        .then(|| day.to_string())
}

fn file_node(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    Some(name.get(..name.len().checked_sub(17)?)?.to_string())
}

/// A crash between write and sync can leave half a line at the end: drop it (it was never
/// acknowledged, so never logged) and say so.
fn repair_torn_tail(path: &Path) {
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return;
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let repaired = OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(keep as u64).and_then(|_| f.sync_all()));
    crate::log::warn("results_repaired")
        .field("file", path.display())
        .field("dropped_bytes", bytes.len() - keep)
        .field(
            "error",
            repaired
                .err()
                .map_or_else(|| "-".to_string(), |e| e.to_string()),
        )
        .emit();
}

/// Removes files whose day is more than `retention_days` before today (UTC).
fn prune(dir: &Path, retention_days: u32) {
    let today = time::OffsetDateTime::now_utc().date();
    let Some(oldest) = today.checked_sub(time::Duration::days(i64::from(retention_days))) else {
        return;
    };
    let oldest = oldest.to_string();
    for (path, day) in result_files(dir).unwrap_or_default() {
        if day < oldest {
            if let Err(e) = std::fs::remove_file(&path) {
                crate::log::warn("results_prune_failed")
                    .field("file", path.display())
                    .field("error", e)
                    .emit();
            }
        }
    }
}

/// What a reader found in the files of a range of days.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub files: usize,
    pub lines: usize,
    /// Lines that were not a result (torn by a crash elsewhere, or not ours): skipped.
    pub skipped: usize,
}

/// Every result of every node whose file day lies in `from..=to` (`YYYY-MM-DD`), file by file.
pub fn read_days(
    dir: &Path,
    from: &str,
    to: &str,
    mut each: impl FnMut(SessionResult),
) -> std::io::Result<ReadStats> {
    let mut stats = ReadStats::default();
    for (path, day) in result_files(dir)? {
        if day.as_str() < from || day.as_str() > to {
            continue;
        }
        stats.files += 1;
        for line in BufReader::new(File::open(&path)?).split(b'\n') {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            stats.lines += 1;
            match serde_json::from_slice::<SessionResult>(&line) {
                Ok(r) => each(r),
                Err(_) => stats.skipped += 1,
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
#[path = "results_tests.rs"]
mod tests;
