//! MTA-STS (RFC 8461) as data: the `_mta-sts` TXT record, the policy file, and MX pattern
//! matching. Pure and strict: the fetch and the cache live elsewhere and feed bytes in; anything
//! that does not parse is an error the caller counts (`invalid`) and treats as no policy.

use std::fmt;

/// RFC 8461 §3.2: a policy may live no longer than a year.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// The bound on a policy body (RFC 8461 §3.3 suggests 64 KiB); the fetcher enforces it too.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// Why a TXT record set or a policy file was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    /// No TXT record starting with `v=STSv1` (RFC 8461 §3.1: no policy).
    #[error("no v=STSv1 TXT record")]
    NoRecord,
    /// More than one (RFC 8461 §3.1: as if none).
    #[error("{0} v=STSv1 TXT records (exactly one allowed)")]
    SeveralRecords(usize),
    #[error("TXT record: {0}")]
    Record(String),
    #[error("policy: {0}")]
    Policy(String),
}

/// The one `v=STSv1` TXT record of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// 1–32 letters and digits; a change means a new policy to fetch.
    pub id: String,
}

/// `mode:` of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsMode {
    /// Deliver only to matching MX hosts over WebPKI-valid TLS.
    Enforce,
    /// Deliver as without a policy; failures are reported.
    Testing,
    /// As if there were no policy.
    None,
}

impl StsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StsMode::Enforce => "enforce",
            StsMode::Testing => "testing",
            StsMode::None => "none",
        }
    }
}

impl fmt::Display for StsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsPolicy {
    pub mode: StsMode,
    /// Seconds the policy may be cached (≤ [`MAX_AGE_LIMIT`]).
    pub max_age: u64,
    /// `mx:` patterns, lowercase, without a trailing dot: `mx.example.com` or `*.example.com`.
    pub mx: Vec<String>,
}

/// Picks the record out of a domain's TXT strings (each already joined from its
/// character-strings) and parses it.
pub fn parse_records<'a>(txts: impl IntoIterator<Item = &'a str>) -> Result<StsRecord, StsError> {
    let candidates: Vec<&str> = txts.into_iter().filter(|t| is_sts_record(t)).collect();
    match candidates.as_slice() {
        [] => Err(StsError::NoRecord),
        [one] => parse_record(one),
        several => Err(StsError::SeveralRecords(several.len())),
    }
}

fn is_sts_record(txt: &str) -> bool {
    super::txt::is_record(txt, "v=STSv1")
}

/// `v=STSv1; id=...; [ext=value;]...` (RFC 8461 §3.1).
pub fn parse_record(txt: &str) -> Result<StsRecord, StsError> {
    let bad = |why: &str| StsError::Record(format!("{why} in {txt:?}"));
    let fields = super::txt::fields(txt, "v=STSv1").map_err(bad)?;
    let mut id = None;
    for (name, value) in fields {
        if name == "id" {
            let valid =
                (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !valid || id.is_some() {
                return Err(bad("invalid or repeated id"));
            }
            id = Some(value.to_string());
        } else if !is_extension(name, value) {
            return Err(bad("malformed field"));
        }
    }
    id.map(|id| StsRecord { id }).ok_or_else(|| bad("no id"))
}

fn is_extension(name: &str, value: &str) -> bool {
    let name_ok = (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let value_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=');
    name_ok && value_ok
}

/// The policy file (RFC 8461 §3.2): `key: value` lines ended by LF or CRLF, values
/// case-sensitive, unknown keys ignored, `version`, `mode` and `max_age` exactly once, `mx` at
/// least once unless `mode: none`.
pub fn parse_policy(body: &[u8]) -> Result<StsPolicy, StsError> {
    let bad = |why: String| StsError::Policy(why);
    if body.len() > MAX_POLICY_BYTES {
        return Err(bad(format!(
            "{} bytes, over {MAX_POLICY_BYTES}",
            body.len()
        )));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
    let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_matches([' ', '\t']).is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("line {}: no `key: value`", n + 1)))?;
        let value = value.trim_matches([' ', '\t']);
        let once = |slot: &mut Option<String>| {
            if slot.replace(value.to_string()).is_some() {
                Err(bad(format!("line {}: `{key}` repeated", n + 1)))
            } else {
                Ok(())
            }
        };
        match key {
            "version" => once(&mut version)?,
            "mode" => once(&mut mode)?,
            "max_age" => once(&mut max_age)?,
            "mx" => mx.push(
                parse_mx_pattern(value)
                    .ok_or_else(|| bad(format!("line {}: mx pattern {value:?}", n + 1)))?,
            ),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err(bad(format!("version {version:?}, not STSv1")));
    }
    let mode = match mode.as_deref() {
        Some("enforce") => StsMode::Enforce,
        Some("testing") => StsMode::Testing,
        Some("none") => StsMode::None,
        other => return Err(bad(format!("mode {other:?}"))),
    };
    let max_age = max_age
        .filter(|v| (1..=10).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v <= MAX_AGE_LIMIT)
        .ok_or_else(|| bad(format!("max_age missing or over {MAX_AGE_LIMIT}")))?;
    if mx.is_empty() && mode != StsMode::None {
        return Err(bad("no mx".into()));
    }
    Ok(StsPolicy { mode, max_age, mx })
}

/// `mx.example.com` or `*.example.com`: LDH labels, a wildcard only as the whole leftmost label.
fn parse_mx_pattern(value: &str) -> Option<String> {
    let pattern = value.trim_end_matches('.').to_ascii_lowercase();
    let host = pattern.strip_prefix("*.").unwrap_or(&pattern);
    let labels_ok = host.split('.').count() >= 2
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    labels_ok.then_some(pattern)
}

impl StsPolicy {
    /// Whether `mx_host` may receive mail under this policy (RFC 8461 §4.1: a wildcard stands
    /// for exactly one leftmost label).
    pub fn allows_mx(&self, mx_host: &str) -> bool {
        let host = mx_host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }
}

#[cfg(test)]
#[path = "mta_sts_tests.rs"]
mod tests;
