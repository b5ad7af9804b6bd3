//! The MTA-STS policy cache (RFC 8461 §5): every policy fetched, kept in
//! `state_directory/mta-sts/<domain>.json` so a restart does not forget a policy an attacker
//! could otherwise strip (the point of the cache: a blocked TXT or HTTPS lookup must not
//! downgrade a domain that published `enforce`). Written atomically (temporary file, sync,
//! rename); a file that does not parse is logged and dropped at open, never fatal.

use crate::policy::mta_sts::{parse_policy, StsPolicy};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One domain's policy as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPolicy {
    pub domain: String,
    /// The TXT record's `id` it was fetched under.
    pub id: String,
    /// The body as served (TLS reports quote it line by line as `policy-string`).
    pub text: String,
    pub policy: StsPolicy,
    /// Unix seconds.
    pub fetched_at: i64,
}

impl CachedPolicy {
    /// Unix seconds after which the policy is no longer in force (`max_age` from the fetch).
    pub fn expires_at(&self) -> i64 {
        self.fetched_at
            .saturating_add(i64::try_from(self.policy.max_age).unwrap_or(i64::MAX))
    }

    pub fn is_valid_at(&self, now: i64) -> bool {
        now < self.expires_at()
    }

    /// The policy's lines, for `policy-string` (RFC 8460 §4.3).
    pub fn policy_strings(&self) -> Vec<String> {
        self.text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// The file's shape: the text is kept, the parsed policy is rebuilt from it at open.
#[derive(Serialize, Deserialize)]
struct Stored {
    domain: String,
    id: String,
    text: String,
    fetched_at: i64,
}

/// The cache, shared by every session; cheap reads, a file write per fetched policy.
#[derive(Debug)]
pub struct StsCache {
    dir: PathBuf,
    entries: Mutex<HashMap<String, CachedPolicy>>,
}

impl StsCache {
    /// Creates `dir` if needed and loads what it holds.
    pub fn open(dir: &Path) -> std::io::Result<StsCache> {
        std::fs::create_dir_all(dir)?;
        let mut entries = HashMap::new();
        for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match load(&path) {
                Ok(policy) => {
                    entries.insert(policy.domain.clone(), policy);
                }
                Err(why) => {
                    crate::log::warn("mta_sts_cache_dropped")
                        .field("file", path.display())
                        .field("error", &why)
                        .emit();
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(StsCache {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
        })
    }

    pub fn get(&self, domain: &str) -> Option<CachedPolicy> {
        self.lock().get(domain).cloned()
    }

    /// Every cached policy (for refresh and for `policy DOMAIN`).
    pub fn all(&self) -> Vec<CachedPolicy> {
        self.lock().values().cloned().collect()
    }

    /// Keeps `policy` in memory and on disk. A disk failure is returned; memory has it anyway.
    pub fn put(&self, policy: CachedPolicy) -> std::io::Result<()> {
        let stored = Stored {
            domain: policy.domain.clone(),
            id: policy.id.clone(),
            text: policy.text.clone(),
            fetched_at: policy.fetched_at,
        };
        let path = self.dir.join(format!("{}.json", policy.domain));
        self.lock().insert(policy.domain.clone(), policy);
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(&stored).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets `domain` (its policy went to `mode: none` and expired, or the operator asked).
    pub fn remove(&self, domain: &str) {
        self.lock().remove(domain);
        let _ = std::fs::remove_file(self.dir.join(format!("{domain}.json")));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedPolicy>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn load(path: &Path) -> Result<CachedPolicy, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let domain_ok = !stored.domain.is_empty()
        && stored
            .domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !domain_ok || path.file_stem().and_then(|s| s.to_str()) != Some(stored.domain.as_str()) {
        return Err(format!(
            "domain {:?} does not match its file",
            stored.domain
        ));
    }
    let policy = parse_policy(stored.text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(CachedPolicy {
        domain: stored.domain,
        id: stored.id,
        text: stored.text,
        policy,
        fetched_at: stored.fetched_at,
    })
}

#[cfg(test)]
#[path = "mta_sts_tests.rs"]
mod tests;
