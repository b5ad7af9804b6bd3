//! The configuration history (change control): every start and every successful reload
//! appends one JSON line to `state_directory/config-history.jsonl` with the file's SHA-256 and
//! the outbound policy it put in force (mode and relaxation per entry, expired relaxations),
//! so `evidence` can show an auditor which policy changes were made and when, across restarts
//! and edits made while the proxy was stopped. Bounded: past [`MAX_BYTES`] the older half is
//! dropped (the session results' `retention` is the period an auditor looks at; a year of daily
//! reloads is far below the bound).

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;

pub const FILE_NAME: &str = "config-history.jsonl";
/// Past this size the file keeps its newer half.
pub const MAX_BYTES: u64 = 8 << 20;

/// One start or reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// RFC 3339 UTC.
    pub time: String,
    pub node: String,
    /// `start` or `reload`.
    pub reason: String,
    /// The configuration file.
    pub config: String,
    /// Lowercase hex SHA-256 of the file (`event=config_loaded sha256=`).
    pub sha256: String,
    /// Per `[[outbound_policy.domain]]` entry, and `default`.
    pub policies: BTreeMap<String, PolicySnapshot>,
    /// `relax_until` values already past at load (not applied).
    #[serde(default)]
    pub expired_relaxations: Vec<ExpiredRelaxation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySnapshot {
    pub mode: String,
    /// RFC 3339 UTC, while in the future at load.
    pub relax_until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredRelaxation {
    pub domain: String,
    pub relax_until: String,
}

impl ConfigRecord {
    /// What `config` put in force at `now` (Unix seconds), loaded for `reason`.
    pub fn of(config: &Config, reason: &str, now: i64) -> ConfigRecord {
        let policy = &config.outbound_policy;
        let mut policies: BTreeMap<String, PolicySnapshot> = policy
            .domains
            .iter()
            .map(|d| {
                (
                    d.domain.clone(),
                    PolicySnapshot {
                        mode: d.mode.as_str().to_string(),
                        relax_until: d.relax_until.map(crate::log::format_unix),
                    },
                )
            })
            .collect();
        policies.insert(
            "default".to_string(),
            PolicySnapshot {
                mode: policy.default.as_str().to_string(),
                relax_until: None,
            },
        );
        ConfigRecord {
            time: crate::log::format_unix(now),
            node: config.hostname.clone(),
            reason: reason.to_string(),
            config: config.source.display().to_string(),
            sha256: config.sha256.clone(),
            policies,
            expired_relaxations: config
                .expired_relaxations
                .iter()
                .map(|e| ExpiredRelaxation {
                    domain: e.domain.clone(),
                    relax_until: crate::log::format_unix(e.relax_until),
                })
                .collect(),
        }
    }
}

/// Appends `record` and syncs it; keeps the file under [`MAX_BYTES`].
pub fn append(dir: &Path, record: &ConfigRecord) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE_NAME);
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    if std::fs::metadata(&path).is_ok_and(|m| m.len() + line.len() as u64 > MAX_BYTES) {
        let kept = newest_half(&path)?;
        super::file::write_atomically(&path, &kept)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    file.write_all(&line)?;
    file.sync_data()
}

/// The whole lines of the newer half of the file.
fn newest_half(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BYTES * 2)
        .read_to_end(&mut bytes)?;
    let middle = bytes.len() / 2;
    let start = bytes[middle..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| middle + i + 1);
    Ok(bytes[start..].to_vec())
}

/// Every record, oldest first, and how many lines were not records (torn by a crash, edited).
/// No file yet: none.
pub fn read(dir: &Path) -> std::io::Result<(Vec<ConfigRecord>, usize)> {
    let file = match std::fs::File::open(dir.join(FILE_NAME)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    let mut skipped = 0;
    for line in std::io::BufReader::new(file.take(MAX_BYTES * 2)).split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(r) => records.push(r),
            Err(_) => skipped += 1,
        }
    }
    records.sort_by(|a: &ConfigRecord, b| a.time.cmp(&b.time));
    Ok((records, skipped))
}
