//! The partner certificate inventory (DESIGN, "Contract: operator monitoring"): every
//! certificate a remote MX presented, whatever its verdict, one entry per (recipient domain, MX
//! host, certificate), with what an operator asks of it (subject, issuer, names, expiry,
//! fingerprint, when first and last seen, verified and by which policy). Kept in
//! `state_directory/certificates.json` (the same JSON array `GET /certificates` serves),
//! bounded: past [`MAX_ENTRIES`] the entry seen longest ago goes, domains without a policy
//! entry first.
//!
//! A certificate is parsed once, when first seen for a host (x509-parser; see Cargo.toml), and
//! only a bounded part of what it says is kept: a peer's certificate is untrusted input.

use super::file::{self, Saver, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries kept at most (a few hundred bytes each): far more than the partners of any site.
pub const MAX_ENTRIES: usize = 10_000;
/// Names kept of a certificate's subjectAltName list; the rest is counted, not kept.
pub const MAX_SANS: usize = 100;
/// Longest subject, issuer or name kept, in bytes (a DNS name has at most 253).
const MAX_TEXT: usize = 1024;
/// A file larger than this is not ours (MAX_ENTRIES entries take a few MB).
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Last-seen times alone are written at most this often.
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// The file's name in `state_directory`.
pub const FILE_NAME: &str = "certificates.json";

/// One entry, as `GET /certificates` and the file show it (the contract's keys first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEntry {
    /// The recipient domain the MX was used for.
    pub domain: String,
    /// The MX host name as routed (an IP address in transparent mode).
    pub mx: String,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    /// RFC 3339 UTC; `null` when the certificate could not be parsed.
    pub not_after: Option<String>,
    /// Lowercase hex SHA-256 of the DER.
    pub sha256: String,
    pub first_seen: String,
    pub last_seen: String,
    /// Whether the last session that saw it verified it.
    pub verified: bool,
    /// The policy that judged it: `configured`, `mta-sts`, `dane` or `none` (as the metric
    /// label `policy` of `starttls_proxy_outbound_domain_sessions_total`).
    pub policy: String,
    /// Extension: the mode it was judged by (`verify`, `encrypt`, `opportunistic`, ...).
    #[serde(default)]
    pub mode: String,
    /// Extension: the domain had an `[[outbound_policy.domain]]` entry when last seen.
    #[serde(default)]
    pub policy_domain: bool,
    /// Extension: names left out of `sans` beyond [`MAX_SANS`] (or over-long).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sans_omitted: usize,
    /// Extension: why the certificate (or its name list) could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What one session saw of one MX host's certificate.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    pub domain: &'a str,
    pub mx: &'a str,
    /// The end-entity certificate, DER.
    pub leaf: &'a [u8],
    pub verified: bool,
    pub policy: &'static str,
    pub mode: &'static str,
    pub policy_domain: bool,
    /// Seconds since the epoch.
    pub now: i64,
}

/// What the inventory learnt from a sighting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learnt {
    pub sha256: String,
    /// notAfter, seconds since the epoch, when known.
    pub not_after: Option<i64>,
    /// The fingerprint of the certificate this host showed for this domain before, when it
    /// was another one.
    pub replaced: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    shown: CertificateEntry,
    last_seen: i64,
    not_after: Option<i64>,
}

struct Entries {
    /// By (domain, mx); each host's certificates in the order first seen.
    by_host: HashMap<(String, String), Vec<Entry>>,
    count: usize,
    /// At most this many entries ([`MAX_ENTRIES`]; tests use fewer).
    bound: usize,
    /// Something is not yet in the file.
    unsaved: bool,
}

/// The inventory, shared by every outbound session and the admin endpoint.
#[derive(Clone)]
pub struct Inventory {
    entries: Arc<Mutex<Entries>>,
    saver: Saver,
}

impl Inventory {
    /// Loads `dir/certificates.json` (a corrupt one is set aside and the inventory starts
    /// empty) and starts its writer.
    pub fn open(dir: &Path) -> Inventory {
        Self::open_bounded(dir, MAX_ENTRIES)
    }

    /// [`Inventory::open`] keeping at most `bound` entries.
    pub fn open_bounded(dir: &Path, bound: usize) -> Inventory {
        let path = dir.join(FILE_NAME);
        let mut entries = Entries {
            by_host: HashMap::new(),
            count: 0,
            bound: bound.max(1),
            unsaved: false,
        };
        let loaded: Vec<CertificateEntry> =
            file::load(&path, "certificates", MAX_FILE_BYTES).unwrap_or_default();
        let mut unreadable = 0usize;
        for shown in loaded {
            match restore(shown) {
                Some(entry) => entries.insert(entry),
                None => unreadable += 1,
            }
        }
        if unreadable > 0 {
            crate::metrics::state_file_error("certificates", "corrupt");
            crate::log::warn("state_file_corrupt")
                .field("file", path.display())
                .field(
                    "detail",
                    format!("{unreadable} entries with unreadable times dropped"),
                )
                .emit();
            entries.unsaved = true;
        }
        while entries.count > entries.bound {
            entries.evict_one();
        }
        let entries = Arc::new(Mutex::new(entries));
        let weak = Arc::downgrade(&entries);
        let saver = Saver::start(path, "certificates", SAVE_INTERVAL, move || {
            let Some(entries) = weak.upgrade() else {
                return Snapshot::Gone;
            };
            let Ok(mut entries) = entries.lock() else {
                return Snapshot::Gone;
            };
            if !entries.unsaved {
                return Snapshot::Clean;
            }
            entries.unsaved = false;
            Snapshot::Dirty(render(&entries.list()))
        });
        Inventory { entries, saver }
    }

    /// Records a sighting; a certificate not seen before for this host is parsed and written
    /// to the file at once.
    pub fn observe(&self, seen: &Sighting<'_>) -> Learnt {
        let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, seen.leaf).as_ref());
        let Ok(mut entries) = self.entries.lock() else {
            return Learnt {
                sha256,
                not_after: None,
                replaced: None,
            };
        };
        let key = (seen.domain.to_string(), seen.mx.to_string());
        let now_text = crate::log::format_unix(seen.now);
        let latest = entries.by_host.get(&key).and_then(|list| {
            list.iter()
                .max_by_key(|e| e.last_seen)
                .map(|e| e.shown.sha256.clone())
        });
        let known = entries
            .by_host
            .get_mut(&key)
            .and_then(|list| list.iter_mut().find(|e| e.shown.sha256 == sha256));
        if let Some(entry) = known {
            let judged_anew = entry.shown.verified != seen.verified
                || entry.shown.policy != seen.policy
                || entry.shown.mode != seen.mode
                || entry.shown.policy_domain != seen.policy_domain;
            entry.last_seen = entry.last_seen.max(seen.now);
            entry.shown.last_seen = crate::log::format_unix(entry.last_seen);
            entry.shown.verified = seen.verified;
            entry.shown.policy = seen.policy.to_string();
            entry.shown.mode = seen.mode.to_string();
            entry.shown.policy_domain = seen.policy_domain;
            let not_after = entry.not_after;
            entries.unsaved = true;
            drop(entries);
            if judged_anew || latest.as_deref() != Some(sha256.as_str()) {
                self.saver.wake();
            }
            return Learnt {
                replaced: latest.filter(|old| *old != sha256),
                sha256,
                not_after,
            };
        }
        let facts = describe(seen.leaf);
        let entry = Entry {
            not_after: facts.not_after,
            last_seen: seen.now,
            shown: CertificateEntry {
                domain: seen.domain.to_string(),
                mx: seen.mx.to_string(),
                subject: facts.subject,
                issuer: facts.issuer,
                sans: facts.sans,
                not_after: facts.not_after.map(crate::log::format_unix),
                sha256: sha256.clone(),
                first_seen: now_text.clone(),
                last_seen: now_text,
                verified: seen.verified,
                policy: seen.policy.to_string(),
                mode: seen.mode.to_string(),
                policy_domain: seen.policy_domain,
                sans_omitted: facts.sans_omitted,
                parse_error: facts.error,
            },
        };
        entries.insert(entry);
        while entries.count > entries.bound {
            entries.evict_one();
        }
        entries.unsaved = true;
        drop(entries);
        self.saver.wake();
        Learnt {
            sha256,
            not_after: facts.not_after,
            replaced: latest,
        }
    }

    /// Every entry: by domain, MX host, then first seen.
    pub fn list(&self) -> Vec<CertificateEntry> {
        self.entries.lock().map(|e| e.list()).unwrap_or_default()
    }

    /// The JSON array `GET /certificates` serves.
    pub fn to_json(&self) -> String {
        String::from_utf8(render(&self.list())).unwrap_or_else(|_| "[]".into())
    }

    /// Per (domain, MX host): the notAfter of the certificate seen last, for the expiry gauge.
    pub fn current_expiries(&self) -> Vec<(String, String, i64)> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .by_host
            .iter()
            .filter_map(|((domain, mx), list)| {
                let latest = list.iter().max_by_key(|e| e.last_seen)?;
                Some((domain.clone(), mx.clone(), latest.not_after?))
            })
            .collect()
    }

    /// Writes what is unsaved now (at shutdown).
    pub fn flush(&self) {
        self.saver.flush();
    }
}

impl Entries {
    fn insert(&mut self, entry: Entry) {
        let key = (entry.shown.domain.clone(), entry.shown.mx.clone());
        let list = self.by_host.entry(key).or_default();
        match list
            .iter_mut()
            .find(|e| e.shown.sha256 == entry.shown.sha256)
        {
            // A file with a duplicate (edited by hand): the later sighting wins.
            Some(existing) if existing.last_seen <= entry.last_seen => *existing = entry,
            Some(_) => {}
            None => {
                list.push(entry);
                self.count += 1;
            }
        }
    }

    /// Drops the entry seen longest ago, of a domain without a policy entry if there is one.
    fn evict_one(&mut self) {
        let victim = self
            .by_host
            .iter()
            .flat_map(|(key, list)| {
                list.iter()
                    .enumerate()
                    .map(move |(i, e)| ((e.shown.policy_domain, e.last_seen), key, i))
            })
            .min_by_key(|(rank, _, _)| *rank)
            .map(|(_, key, i)| (key.clone(), i));
        let Some((key, index)) = victim else {
            self.count = 0;
            return;
        };
        if let Some(list) = self.by_host.get_mut(&key) {
            list.remove(index);
            self.count -= 1;
            if list.is_empty() {
                self.by_host.remove(&key);
            }
        }
    }

    fn list(&self) -> Vec<CertificateEntry> {
        let mut keys: Vec<&(String, String)> = self.by_host.keys().collect();
        keys.sort();
        keys.into_iter()
            .flat_map(|k| self.by_host[k].iter().map(|e| e.shown.clone()))
            .collect()
    }
}

/// The inventory as the file holds it, for readers beside the running proxy (`evidence`): it
/// never moves or rewrites the file. No file yet: empty.
pub fn read(dir: &Path) -> Result<Vec<CertificateEntry>, String> {
    use std::io::Read;
    let path = dir.join(FILE_NAME);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// An entry read back from the file; `None` when its times cannot be read.
fn restore(shown: CertificateEntry) -> Option<Entry> {
    let last_seen = parse_time(&shown.last_seen)?;
    parse_time(&shown.first_seen)?;
    let not_after = match &shown.not_after {
        Some(t) => Some(parse_time(t)?),
        None => None,
    };
    Some(Entry {
        shown,
        last_seen,
        not_after,
    })
}

fn parse_time(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn render(list: &[CertificateEntry]) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(list).unwrap_or_else(|_| b"[]".to_vec());
    bytes.push(b'\n');
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is kept of a certificate's contents.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Described {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub sans_omitted: usize,
    pub not_after: Option<i64>,
    pub error: Option<String>,
}

/// Subject, issuer, DNS and IP names and notAfter of a DER certificate, bounded; whatever
/// cannot be read is named in `error` and left empty.
pub fn describe(der: &[u8]) -> Described {
    use x509_parser::extensions::GeneralName;
    let cert = match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert,
        Err(e) => {
            return Described {
                error: Some(bounded(&format!("not a readable X.509 certificate: {e}"))),
                ..Described::default()
            }
        }
    };
    let mut described = Described {
        subject: bounded(&cert.subject().to_string()),
        issuer: bounded(&cert.issuer().to_string()),
        not_after: Some(cert.validity().not_after.timestamp()),
        ..Described::default()
    };
    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            for name in &san.value.general_names {
                let text = match name {
                    GeneralName::DNSName(n) => n.to_string(),
                    GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .map(|b| std::net::IpAddr::from(b).to_string())
                            .unwrap_or_default(),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .map(|b| std::net::IpAddr::from(b).to_string())
                            .unwrap_or_default(),
                        _ => String::new(),
                    },
                    // Mail addresses, URIs and directory names say nothing of an MX host.
                    _ => continue,
                };
                if text.is_empty() || text.len() > 253 || described.sans.len() >= MAX_SANS {
                    described.sans_omitted += 1;
                } else {
                    described.sans.push(text);
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            described.error = Some(bounded(&format!("unreadable subjectAltName: {e}")));
        }
    }
    described
}

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;
