//! SMTP TLS Reporting (RFC 8460) as data: the `_smtp._tls` TXT record, and the daily report of
//! one policy domain built from session results. Pure: the results are read, the record looked
//! up and the report delivered elsewhere.

use crate::policy::ResultType;
use crate::state::results::{Direction, Outcome, PolicyType, SessionResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;

/// Where a domain wants its reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    Mailto(String),
    Https(String),
}

/// The parsed `v=TLSRPTv1` record: its `rua` destinations we can use, and those we cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRptRecord {
    pub rua: Vec<Rua>,
    /// URIs of other schemes (RFC 8460 §3: ignored), kept for the log.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsRptError {
    #[error("no v=TLSRPTv1 TXT record")]
    NoRecord,
    #[error("{0} v=TLSRPTv1 TXT records (exactly one allowed)")]
    SeveralRecords(usize),
    #[error("TXT record: {0}")]
    Invalid(String),
}

/// Picks the one `v=TLSRPTv1` record among a name's TXT strings and parses it.
pub fn parse_records<'a>(
    txts: impl IntoIterator<Item = &'a str>,
) -> Result<TlsRptRecord, TlsRptError> {
    let found: Vec<&str> = txts
        .into_iter()
        .filter(|t| crate::policy::txt::is_record(t, "v=TLSRPTv1"))
        .collect();
    match found.as_slice() {
        [] => Err(TlsRptError::NoRecord),
        [one] => parse_record(one),
        more => Err(TlsRptError::SeveralRecords(more.len())),
    }
}

/// `v=TLSRPTv1; rua=mailto:a@example,https://example/report` (RFC 8460 §3).
pub fn parse_record(txt: &str) -> Result<TlsRptRecord, TlsRptError> {
    let bad = |why: &str| TlsRptError::Invalid(format!("{why} in {txt:?}"));
    let fields = crate::policy::txt::fields(txt, "v=TLSRPTv1").map_err(bad)?;
    let mut record = None;
    for (name, value) in fields {
        if name != "rua" {
            continue; // extensions
        }
        if record.is_some() {
            return Err(bad("rua repeated"));
        }
        let mut parsed = TlsRptRecord {
            rua: Vec::new(),
            ignored: Vec::new(),
        };
        for uri in value.split(',').map(|u| u.trim_matches([' ', '\t'])) {
            if uri.is_empty() {
                return Err(bad("empty rua URI"));
            }
            match uri.split_once(':') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mailto") => {
                    let address = percent_decode(rest).ok_or_else(|| bad("bad mailto"))?;
                    if !address.contains('@') || address.contains([' ', '<', '>']) {
                        return Err(bad("bad mailto address"));
                    }
                    parsed.rua.push(Rua::Mailto(address));
                }
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
                    if !rest.starts_with("//")
                        || rest.len() < 3
                        || uri.contains(char::is_whitespace)
                    {
                        return Err(bad("bad https URI"));
                    }
                    parsed.rua.push(Rua::Https(uri.to_string()));
                }
                _ => parsed.ignored.push(uri.to_string()),
            }
        }
        record = Some(parsed);
    }
    record.ok_or_else(|| bad("no rua"))
}

/// `%40` and friends in a mailto address (RFC 6068).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Query parts (`?subject=`) are not ours to honour.
    let address = String::from_utf8(out).ok()?;
    Some(address.split('?').next().unwrap_or_default().to_string())
}

/// Who reports (the `[tls_reporting]` table).
#[derive(Debug, Clone)]
pub struct Reporter {
    pub organization: String,
    pub contact: String,
    pub submitter: String,
}

/// An RFC 8460 §4 report, field names as the RFC (and erratum 6241 for `mx-host`) spell them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(rename = "organization-name")]
    pub organization_name: String,
    #[serde(rename = "date-range")]
    pub date_range: DateRange,
    #[serde(rename = "contact-info")]
    pub contact_info: String,
    #[serde(rename = "report-id")]
    pub report_id: String,
    pub policies: Vec<PolicyReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DateRange {
    #[serde(rename = "start-datetime")]
    pub start: String,
    #[serde(rename = "end-datetime")]
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    pub policy: PolicyDescription,
    pub summary: Summary,
    #[serde(
        rename = "failure-details",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failure_details: Vec<FailureDetail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDescription {
    #[serde(rename = "policy-type")]
    pub policy_type: PolicyType,
    #[serde(
        rename = "policy-string",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub policy_string: Vec<String>,
    #[serde(rename = "policy-domain")]
    pub policy_domain: String,
    /// An array (erratum 6241); a single string, as RFC 8460's field description has it and
    /// some senders write it, reads as one entry.
    #[serde(
        rename = "mx-host",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub mx_host: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(rename = "total-successful-session-count")]
    pub successful: u64,
    #[serde(rename = "total-failure-session-count")]
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetail {
    #[serde(rename = "result-type")]
    pub result_type: ResultType,
    #[serde(rename = "sending-mta-ip", skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<IpAddr>,
    #[serde(
        rename = "receiving-mx-hostname",
        skip_serializing_if = "Option::is_none"
    )]
    pub receiving_mx_hostname: Option<String>,
    #[serde(rename = "receiving-ip", skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    #[serde(rename = "failed-session-count")]
    pub failed_session_count: u64,
}

/// One policy applied to a domain that day: results grouped under it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PolicyKey {
    policy_type: PolicyType,
    policy_strings: Vec<String>,
    /// DANE policies are per MX host (each has its own TLSA RRset).
    tlsa_host: Option<String>,
}

/// What RFC 8460 §4.4 groups failed sessions by: result type, sending IP, MX name, MX IP.
type FailureKey = (ResultType, Option<IpAddr>, Option<String>, Option<IpAddr>);

#[derive(Default)]
struct Tally {
    successful: u64,
    mx_hosts: std::collections::BTreeSet<String>,
    failures: BTreeMap<FailureKey, u64>,
}

/// Builds the report of `domain` for UTC `day` (`YYYY-MM-DD`) from that day's results: outbound
/// sessions to `domain`, report deliveries left out (RFC 8460 §5.3). `None` when there were none.
pub fn build<'a>(
    reporter: &Reporter,
    domain: &str,
    day: &str,
    results: impl IntoIterator<Item = &'a SessionResult>,
) -> Option<Report> {
    let mut tally = DayTally::default();
    for r in results {
        if r.direction != Direction::Outbound
            || r.report_delivery
            || r.day() != day
            || r.domain.as_deref() != Some(domain)
        {
            continue;
        }
        tally.add(r);
    }
    tally.into_report(reporter, domain, day)
}

/// The counts a report of one domain and day is made of, added one result at a time: memory
/// grows with the policies and failure kinds seen, not with the sessions.
#[derive(Default)]
pub struct DayTally {
    policies: BTreeMap<PolicyKey, Tally>,
}

impl DayTally {
    /// Counts `r` (the caller has chosen it: outbound, the domain and day, not a report
    /// delivery).
    pub fn add(&mut self, r: &SessionResult) {
        let policies = &mut self.policies;
        let key = PolicyKey {
            policy_type: r.policy_type,
            policy_strings: r.policy_strings.clone(),
            tlsa_host: (r.policy_type == PolicyType::Tlsa)
                .then(|| r.mx_host.clone())
                .flatten(),
        };
        let tally = policies.entry(key).or_default();
        if let Some(host) = &r.mx_host {
            tally.mx_hosts.insert(host.clone());
        }
        match r.result {
            Outcome::Success => tally.successful += 1,
            Outcome::Failure(t) => {
                *tally
                    .failures
                    .entry((t, r.local_ip, r.mx_host.clone(), r.mx_ip))
                    .or_default() += 1
            }
        }
    }

    /// The report (`None`: nothing was counted).
    pub fn into_report(self, reporter: &Reporter, domain: &str, day: &str) -> Option<Report> {
        let policies = self.policies;
        if policies.is_empty() {
            return None;
        }
        let policies = policies
            .into_iter()
            .map(|(key, tally)| {
                let policy_type = key.policy_type;
                // STS: the policy's own patterns; DANE: the host; none: the hosts tried.
                let mx_host = match policy_type {
                    PolicyType::Sts => key
                        .policy_strings
                        .iter()
                        .filter_map(|l| l.strip_prefix("mx:"))
                        .map(|p| p.trim().to_string())
                        .collect(),
                    _ => tally.mx_hosts.iter().cloned().collect(),
                };
                let failure_details: Vec<FailureDetail> = tally
                    .failures
                    .into_iter()
                    .map(|((result_type, sending, host, ip), n)| FailureDetail {
                        result_type,
                        sending_mta_ip: sending,
                        receiving_mx_hostname: host,
                        receiving_ip: ip,
                        failed_session_count: n,
                    })
                    .collect();
                PolicyReport {
                    summary: Summary {
                        successful: tally.successful,
                        failed: failure_details.iter().map(|f| f.failed_session_count).sum(),
                    },
                    policy: PolicyDescription {
                        policy_type,
                        policy_string: key.policy_strings,
                        policy_domain: domain.to_string(),
                        mx_host,
                    },
                    failure_details,
                }
            })
            .collect();
        Some(Report {
            organization_name: reporter.organization.clone(),
            date_range: DateRange {
                start: format!("{day}T00:00:00Z"),
                end: format!("{day}T23:59:59Z"),
            },
            contact_info: reporter.contact.clone(),
            // The same for every node and every rebuild: a delivery ledger keyed by it never
            // sends one report twice.
            report_id: format!("{day}_{domain}_{}", reporter.submitter),
            policies,
        })
    }
}

impl Report {
    /// RFC 8460 §5.3: `submitter!policy-domain!begin!end!id.json.gz`, times in Unix seconds.
    pub fn file_name(&self, submitter: &str) -> String {
        let unix = |t: &str| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_or(0, |d| d.unix_timestamp())
        };
        let domain = self
            .policies
            .first()
            .map_or("", |p| p.policy.policy_domain.as_str());
        let id: String = self
            .report_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-._".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "{submitter}!{domain}!{}!{}!{id}.json.gz",
            unix(&self.date_range.start),
            unix(&self.date_range.end)
        )
    }

    /// The JSON, gzip-compressed (`application/tlsrpt+gzip`).
    pub fn to_gzip(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a report always serialises");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&json).expect("writing to memory");
        encoder.finish().expect("writing to memory")
    }
}

#[cfg(test)]
#[path = "tlsrpt_tests.rs"]
mod tests;
