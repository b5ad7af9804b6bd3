//! What each MX host offered before, for downgrade detection (DESIGN, "Contract: operator
//! monitoring"): per host, when it last offered STARTTLS and the newest TLS version it reached
//! and when. An MX that offered STARTTLS within `[monitoring] downgrade_window` and now does not,
//! or now reaches an older version than it did within the window, is a suspected downgrade (a
//! STARTTLS-stripping or version-rollback attacker on the path, or a partner's broken change).
//! Kept in `state_directory/mx-tls.json`, bounded: past [`MAX_HOSTS`] the host seen longest ago
//! is forgotten.

use super::file::{self, Saver, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hosts remembered at most.
pub const MAX_HOSTS: usize = 10_000;
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Last-seen times alone are written at most this often.
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// The file's name in `state_directory`.
pub const FILE_NAME: &str = "mx-tls.json";

/// One host's memory, as the file keeps it (times in seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMemory {
    pub mx: String,
    pub last_seen: i64,
    /// When it last offered STARTTLS.
    pub starttls_offered_at: Option<i64>,
    /// The newest TLS version it reached (`TLSv1.3`, ...) and when it last did.
    pub best_version: Option<String>,
    pub best_version_at: Option<i64>,
    /// The session last counted as a suspected downgrade: one count per session and host.
    #[serde(skip)]
    counted_session: Option<String>,
}

/// What one attempt showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown<'a> {
    /// STARTTLS was not in the EHLO reply.
    NoStarttls,
    /// STARTTLS was offered; the TLS version reached, if the handshake finished.
    Starttls(Option<&'a str>),
}

/// Why an attempt is a suspected downgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suspicion {
    /// No STARTTLS now; it was offered at this time.
    StarttlsGone { offered_at: i64 },
    /// This version now; the newer one before.
    OlderVersion { before: String, now: String },
}

impl Suspicion {
    /// The log's `detail`.
    pub fn describe(&self) -> String {
        match self {
            Suspicion::StarttlsGone { offered_at } => format!(
                "STARTTLS not offered; it was at {}",
                crate::log::format_unix(*offered_at)
            ),
            Suspicion::OlderVersion { before, now } => {
                format!("reached {now}; it reached {before} before")
            }
        }
    }
}

#[derive(Default)]
struct Hosts {
    by_mx: HashMap<String, HostMemory>,
    unsaved: bool,
}

/// The memory, shared by every outbound session.
#[derive(Clone)]
pub struct MxTlsMemory {
    hosts: Arc<Mutex<Hosts>>,
    saver: Saver,
}

impl MxTlsMemory {
    /// Loads `dir/mx-tls.json` (a corrupt one is set aside and the memory starts empty).
    pub fn open(dir: &Path) -> MxTlsMemory {
        let path = dir.join(FILE_NAME);
        let loaded: Vec<HostMemory> =
            file::load(&path, "mx_tls", MAX_FILE_BYTES).unwrap_or_default();
        let mut hosts = Hosts::default();
        for host in loaded {
            hosts.by_mx.insert(host.mx.clone(), host);
        }
        hosts.bound();
        let hosts = Arc::new(Mutex::new(hosts));
        let weak = Arc::downgrade(&hosts);
        let saver = Saver::start(path, "mx_tls", SAVE_INTERVAL, move || {
            let Some(hosts) = weak.upgrade() else {
                return Snapshot::Gone;
            };
            let Ok(mut hosts) = hosts.lock() else {
                return Snapshot::Gone;
            };
            if !hosts.unsaved {
                return Snapshot::Clean;
            }
            hosts.unsaved = false;
            let mut list: Vec<&HostMemory> = hosts.by_mx.values().collect();
            list.sort_by(|a, b| a.mx.cmp(&b.mx));
            let mut bytes = serde_json::to_vec_pretty(&list).unwrap_or_else(|_| b"[]".to_vec());
            bytes.push(b'\n');
            Snapshot::Dirty(bytes)
        });
        MxTlsMemory { hosts, saver }
    }

    /// Remembers what `mx` showed in `session` at `now`; a suspected downgrade within `window`
    /// is answered once per session.
    pub fn observe(
        &self,
        mx: &str,
        shown: Shown<'_>,
        session: &str,
        now: i64,
        window: Duration,
    ) -> Option<Suspicion> {
        let Ok(mut hosts) = self.hosts.lock() else {
            return None;
        };
        let since = now.saturating_sub(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
        let first_time = !hosts.by_mx.contains_key(mx);
        let host = hosts
            .by_mx
            .entry(mx.to_string())
            .or_insert_with(|| HostMemory {
                mx: mx.to_string(),
                last_seen: now,
                starttls_offered_at: None,
                best_version: None,
                best_version_at: None,
                counted_session: None,
            });
        host.last_seen = host.last_seen.max(now);
        let before_offered = host.starttls_offered_at;
        let suspicion = match shown {
            Shown::NoStarttls => before_offered
                .filter(|t| *t >= since)
                .map(|offered_at| Suspicion::StarttlsGone { offered_at }),
            Shown::Starttls(version) => {
                host.starttls_offered_at = Some(now);
                match version {
                    None => None,
                    Some(v) => {
                        let recent_best = host
                            .best_version
                            .clone()
                            .filter(|_| host.best_version_at.is_some_and(|t| t >= since));
                        match recent_best {
                            Some(best) if rank(v) < rank(&best) => Some(Suspicion::OlderVersion {
                                before: best,
                                now: v.to_string(),
                            }),
                            _ => {
                                host.best_version = Some(v.to_string());
                                host.best_version_at = Some(now);
                                None
                            }
                        }
                    }
                }
            }
        };
        let suspicion = suspicion.filter(|_| {
            let fresh = host.counted_session.as_deref() != Some(session);
            host.counted_session = Some(session.to_string());
            fresh
        });
        let news = first_time || before_offered.is_none() != host.starttls_offered_at.is_none();
        hosts.unsaved = true;
        if first_time {
            hosts.bound();
        }
        drop(hosts);
        if news || suspicion.is_some() {
            self.saver.wake();
        }
        suspicion
    }

    /// What is remembered of `mx`.
    pub fn host(&self, mx: &str) -> Option<HostMemory> {
        self.hosts.lock().ok()?.by_mx.get(mx).cloned()
    }

    /// Writes what is unsaved now (at shutdown).
    pub fn flush(&self) {
        self.saver.flush();
    }
}

impl Hosts {
    fn bound(&mut self) {
        while self.by_mx.len() > MAX_HOSTS {
            let Some(oldest) = self
                .by_mx
                .values()
                .min_by_key(|h| h.last_seen)
                .map(|h| h.mx.clone())
            else {
                return;
            };
            self.by_mx.remove(&oldest);
        }
    }
}

/// Newer versions rank higher; anything unknown lowest.
fn rank(version: &str) -> u8 {
    match version {
        "TLSv1.3" => 4,
        "TLSv1.2" => 3,
        "TLSv1.1" => 2,
        "TLSv1.0" | "TLSv1" => 1,
        _ => 0,
    }
}

#[cfg(test)]
#[path = "mx_tls_tests.rs"]
mod tests;
