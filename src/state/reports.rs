//! Outgoing TLS reports under `state_directory/reports/` (DESIGN "Contract: session results and
//! TLS reporting"): each report as the exact bytes sent (`<submitter>!<domain>!<begin>!<end>!<id>.json.gz`),
//! its delivery ledger (`ledger/<file>.jsonl`, one line per attempt at one `rua`) and the lock a
//! sender holds while it delivers it (`locks/<file>.lock`).
//!
//! Nodes may share the directory: the lock is an exclusive create, so two nodes never deliver
//! the same report at once, and the ledger is read under it, so a `rua` recorded as sent is
//! never sent again. Everything is fsynced before it counts.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A lock older than this was left by a sender that died: deliveries take minutes at most
/// (bounded connects and exchanges), so a younger one is alive.
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// What became of one attempt to deliver a report to one `rua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Sent,
    Failed,
}

/// One line of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// The node that made the attempt.
    pub node: String,
    /// The destination as the policy domain's record names it (`mailto:...`, `https://...`).
    pub rua: String,
    pub result: Delivery,
    /// Why it failed, or what the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The `reports` directory.
#[derive(Debug, Clone)]
pub struct ReportStore {
    dir: PathBuf,
}

/// Held while a report is delivered; removing the lock file on drop lets others in.
#[derive(Debug)]
pub struct ReportLock {
    path: PathBuf,
}

impl Drop for ReportLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ReportStore {
    /// `dir` (created with its `ledger` and `locks` subdirectories if needed).
    pub fn open(dir: &Path) -> std::io::Result<ReportStore> {
        for sub in ["ledger", "locks"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(ReportStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ledger_path(&self, name: &str) -> PathBuf {
        self.dir.join("ledger").join(format!("{name}.jsonl"))
    }

    /// Keeps `bytes` as report `name` and returns the bytes now on disk, which are the ones to
    /// send: once a copy went anywhere, every other destination gets the same bytes, so a
    /// rebuild (more results arrived, a later run) never replaces it. Call under the lock.
    pub fn store(&self, name: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(existing) if existing == bytes => return Ok(existing),
            Ok(existing)
                if self
                    .ledger(name)?
                    .iter()
                    .any(|e| e.result == Delivery::Sent) =>
            {
                return Ok(existing)
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Written aside and renamed: a reader never sees half a report.
        let temp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = File::create(&temp)
            .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&temp, &path))
            .and_then(|_| File::open(&self.dir).and_then(|d| d.sync_all()));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map(|_| bytes.to_vec())
    }

    /// Every attempt recorded for report `name`, oldest first (a line torn by a crash is
    /// skipped: it was never acknowledged).
    pub fn ledger(&self, name: &str) -> std::io::Result<Vec<LedgerEntry>> {
        let mut text = String::new();
        match File::open(self.ledger_path(name)) {
            Ok(mut f) => {
                f.read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Whether `rua` already has report `name` (a `sent` line in its ledger).
    pub fn is_delivered(&self, name: &str, rua: &str) -> std::io::Result<bool> {
        Ok(self
            .ledger(name)?
            .iter()
            .any(|e| e.rua == rua && e.result == Delivery::Sent))
    }

    /// Appends `entry` to the ledger of report `name` and returns once it is on disk.
    pub fn record(&self, name: &str, entry: &LedgerEntry) -> std::io::Result<()> {
        let path = self.ledger_path(name);
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut line = Vec::new();
        // A torn last line (a crash mid-write) must not swallow this one.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            let mut reader = File::open(&path)?;
            std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(len - 1))?;
            reader.read_exact(&mut last)?;
            if last[0] != b'\n' {
                line.push(b'\n');
            }
        }
        serde_json::to_writer(&mut line, entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Takes the delivery lock of report `name` for `node`; `None` while another sender holds
    /// it. A lock older than [`LOCK_STALE_AFTER`] is taken over.
    pub fn lock(&self, name: &str, node: &str) -> std::io::Result<Option<ReportLock>> {
        let path = self.dir.join("locks").join(format!("{name}.lock"));
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{node} {}", std::process::id())?;
                    return Ok(Some(ReportLock { path }));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    match age {
                        Some(age) if age > LOCK_STALE_AFTER => {
                            crate::log::warn("tls_report_stale_lock")
                                .field("file", path.display())
                                .emit();
                            let _ = std::fs::remove_file(&path);
                        }
                        _ => return Ok(None),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Per destination, the report days it was tried for (the report's begin, Unix seconds)
    /// and whether an attempt that day went: what suppression decides on. Reads every ledger.
    pub fn destination_days(&self) -> std::io::Result<HashMap<String, BTreeMap<i64, bool>>> {
        let mut days: HashMap<String, BTreeMap<i64, bool>> = HashMap::new();
        for entry in std::fs::read_dir(self.dir.join("ledger"))? {
            let name = entry?.file_name();
            let Some(report) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
                continue;
            };
            let Some(begin) = report.split('!').nth(2).and_then(|b| b.parse::<i64>().ok()) else {
                continue;
            };
            for e in self.ledger(report)? {
                let went = days.entry(e.rua).or_default().entry(begin).or_default();
                *went |= e.result == Delivery::Sent;
            }
        }
        Ok(days)
    }

    /// Removes the reports (and their ledgers) whose day began before `oldest_begin` (Unix
    /// seconds); returns how many.
    pub fn prune(&self, oldest_begin: i64) -> std::io::Result<usize> {
        let begin = |name: &str| name.split('!').nth(2).and_then(|b| b.parse::<i64>().ok());
        let mut removed = 0;
        for name in self.reports()? {
            if begin(&name).is_some_and(|b| b < oldest_begin) {
                std::fs::remove_file(self.path(&name))?;
                removed += 1;
            }
        }
        for entry in std::fs::read_dir(self.dir.join("ledger"))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if begin(name).is_some_and(|b| b < oldest_begin) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(removed)
    }

    /// The report files, by name.
    pub fn reports(&self) -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json.gz") && !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
#[path = "reports_tests.rs"]
mod tests;
