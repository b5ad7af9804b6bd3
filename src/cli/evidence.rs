//! `starttls-proxy evidence`: one document for an auditor (ISM-0572 and the Email TLS
//! pattern's audit tips; DESIGN "Contract: operator monitoring"): that TLS is on inbound and
//! outbound and how strong it is, which partners are enforced and how, coverage per partner
//! (the very figures of `coverage`, from the same aggregation), what failed, what was relaxed
//! and when, the policy changes made, and the partners' certificate expiries.
//!
//! Every figure comes from a file in `state_directory` an auditor can open: the session results
//! (coverage and failures), `config-history.jsonl` (loads and policy changes) and
//! `certificates.json` (partner certificates); the settings come from the configuration file,
//! whose SHA-256 is stated. Reading never changes any of them.

use super::coverage::{self, Row};
use crate::config::Config;
use crate::state::{config_history, inventory};
use serde::Serialize;
use std::collections::BTreeMap;

/// How `evidence` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown, for reading and printing.
    Md,
    Json,
}

#[derive(Debug, Serialize)]
pub struct Evidence {
    pub product: Product,
    pub generated_at: String,
    pub node: String,
    pub period: Period,
    pub configuration: ConfigurationFile,
    /// Per direction: the totals of the coverage rows.
    pub summary: Vec<DirectionSummary>,
    pub tls: TlsSettings,
    pub enforced_partners: EnforcedPartners,
    /// The rows of `coverage` for the same period.
    pub coverage: Vec<Row>,
    /// Failed sessions per direction, domain and RFC 8460 result type.
    pub failures: Vec<FailureRow>,
    pub configuration_loads: Vec<ConfigurationLoad>,
    pub policy_changes: Vec<PolicyChangeRow>,
    pub partner_certificates: Vec<PartnerCertificate>,
    pub sources: Sources,
}

#[derive(Debug, Serialize)]
pub struct Product {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Period {
    pub days: u32,
    pub since: String,
    pub until: String,
}

#[derive(Debug, Serialize)]
pub struct ConfigurationFile {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct DirectionSummary {
    pub direction: String,
    pub sessions: u64,
    pub tls_sessions: u64,
    pub tls_share: f64,
    pub verified_sessions: u64,
    pub verified_share: f64,
    pub versions: BTreeMap<String, u64>,
    pub failed_sessions: u64,
    pub enforced_failed_sessions: u64,
}

#[derive(Debug, Serialize)]
pub struct TlsSettings {
    /// `None`: no inbound listener.
    pub inbound: Option<InboundTls>,
    /// `None`: no outbound listener.
    pub outbound: Option<OutboundTls>,
}

#[derive(Debug, Serialize)]
pub struct InboundTls {
    pub versions: Vec<&'static str>,
    pub cipher_suites: Vec<&'static str>,
    pub certificate: Option<ServedCertificate>,
    pub listeners: Vec<InboundListener>,
}

#[derive(Debug, Serialize)]
pub struct ServedCertificate {
    pub path: String,
    pub subject: String,
    pub not_after: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InboundListener {
    pub name: String,
    pub listen: String,
    pub require_tls: bool,
    pub require_tls_senders: Vec<String>,
    pub require_tls_recipients: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OutboundTls {
    pub versions: Vec<&'static str>,
    pub cipher_suites: Vec<&'static str>,
    pub default_mode: &'static str,
    pub mta_sts: bool,
    pub trust_anchors: String,
    pub listeners: Vec<OutboundListener>,
}

#[derive(Debug, Serialize)]
pub struct OutboundListener {
    pub name: String,
    pub listen: String,
    pub mode: &'static str,
}

#[derive(Debug, Serialize)]
pub struct EnforcedPartners {
    /// `[[outbound_policy.domain]]` entries.
    pub outbound: Vec<OutboundPartner>,
    /// `relax_until` values that had passed when a configuration was loaded in the period (or
    /// now): not applied, reported.
    pub expired_relaxations: Vec<config_history::ExpiredRelaxation>,
    /// Inbound listeners that require TLS, entirely or from listed domains.
    pub inbound: Vec<InboundListener>,
}

#[derive(Debug, Serialize)]
pub struct OutboundPartner {
    pub domain: String,
    pub mode: &'static str,
    /// Mail may never leave in plaintext (`encrypt`, `verify`, `dane-only`).
    pub tls_required: bool,
    /// What the mode promises, in words.
    pub enforcement: &'static str,
    /// A relaxation in force now: until then failures fall back to opportunistic.
    pub relax_until: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FailureRow {
    pub direction: String,
    pub domain: Option<String>,
    pub result: String,
    pub sessions: u64,
    pub first: String,
    pub last: String,
    /// The domain is enforced now (TLS required by its outbound policy, DANE where published,
    /// or an inbound listener requires TLS from it).
    pub enforced: bool,
}

#[derive(Debug, Serialize)]
pub struct ConfigurationLoad {
    pub time: String,
    pub node: String,
    pub reason: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct PolicyChangeRow {
    pub time: String,
    pub node: String,
    pub domain: String,
    /// `None`: the entry did not exist.
    pub from: Option<String>,
    pub to: Option<String>,
    pub relax_until_from: Option<String>,
    pub relax_until_to: Option<String>,
    /// The configuration that made the change.
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct PartnerCertificate {
    pub domain: String,
    pub mx: String,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub verified: bool,
    pub policy: String,
    pub policy_domain: bool,
    pub subject: String,
    pub sha256: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
pub struct Sources {
    pub results_directory: String,
    pub results_files: usize,
    pub result_lines: u64,
    pub unreadable_result_lines: u64,
    pub config_history: String,
    pub unreadable_config_history_lines: usize,
    pub inventory: String,
    /// Why the inventory could not be read, if it could not.
    pub inventory_error: Option<String>,
}

/// Builds the document for the `days` × 24 h up to `now` (Unix seconds).
pub fn build(config: &Config, days: u32, now: i64) -> std::io::Result<Evidence> {
    let since = crate::log::format_unix(now - i64::from(days) * 86_400);
    let until = crate::log::format_unix(now);
    let results_dir = config.state.results_dir();
    let coverage = match coverage::compute(&results_dir, &since, &until) {
        Ok(c) => c,
        // A node that has not served yet has no results: nothing to count, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => coverage::Coverage::default(),
        Err(e) => return Err(e),
    };
    let (history, unreadable_history) = config_history::read(&config.state.directory)?;
    let (inventory, inventory_error) = match inventory::read(&config.state.directory) {
        Ok(list) => (list, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let enforced = |direction: &str, domain: Option<&str>| -> bool {
        match (direction, domain) {
            // `dane` enforces wherever a secure TLSA record is published.
            ("outbound", Some(d)) => {
                let mode = config.outbound_policy.lookup(d, now).mode;
                mode.is_tls_required() || mode == crate::policy::Mode::Dane
            }
            ("inbound", d) => config
                .inbound
                .iter()
                .any(|l| l.require_tls || d.is_some_and(|d| l.require_tls_senders.contains(d))),
            _ => false,
        }
    };
    let mut failures = Vec::new();
    for row in &coverage.rows {
        for (result, f) in &row.failures {
            failures.push(FailureRow {
                direction: row.direction.clone(),
                domain: row.domain.clone(),
                result: result.clone(),
                sessions: f.sessions,
                first: f.first.clone(),
                last: f.last.clone(),
                enforced: enforced(&row.direction, row.domain.as_deref()),
            });
        }
    }
    failures.sort_by(|a, b| {
        (b.enforced, b.sessions, &a.direction, &a.domain, &a.result).cmp(&(
            a.enforced,
            a.sessions,
            &b.direction,
            &b.domain,
            &b.result,
        ))
    });
    let mut summary: BTreeMap<String, DirectionSummary> = BTreeMap::new();
    for row in &coverage.rows {
        let s = summary
            .entry(row.direction.clone())
            .or_insert_with(|| DirectionSummary {
                direction: row.direction.clone(),
                sessions: 0,
                tls_sessions: 0,
                tls_share: 0.0,
                verified_sessions: 0,
                verified_share: 0.0,
                versions: BTreeMap::new(),
                failed_sessions: 0,
                enforced_failed_sessions: 0,
            });
        s.sessions += row.sessions;
        s.tls_sessions += row.tls_sessions;
        s.verified_sessions += row.verified_sessions;
        for (v, n) in &row.versions {
            *s.versions.entry(v.clone()).or_default() += n;
        }
    }
    for f in &failures {
        if let Some(s) = summary.get_mut(&f.direction) {
            s.failed_sessions += f.sessions;
            if f.enforced {
                s.enforced_failed_sessions += f.sessions;
            }
        }
    }
    for s in summary.values_mut() {
        let share = |n: u64| n as f64 / s.sessions.max(1) as f64;
        s.tls_share = share(s.tls_sessions);
        s.verified_share = share(s.verified_sessions);
    }
    let (configuration_loads, policy_changes, mut expired) =
        history_in_period(&history, &since, &until);
    for e in &config.expired_relaxations {
        let e = config_history::ExpiredRelaxation {
            domain: e.domain.clone(),
            relax_until: crate::log::format_unix(e.relax_until),
        };
        if !expired.contains(&e) {
            expired.push(e);
        }
    }
    let mut partner_certificates: Vec<PartnerCertificate> = inventory
        .into_iter()
        .map(|c| {
            let not_after_unix = c.not_after.as_deref().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(|t| t.unix_timestamp())
            });
            PartnerCertificate {
                days_left: not_after_unix.map(|t| (t - now).div_euclid(86_400)),
                domain: c.domain,
                mx: c.mx,
                not_after: c.not_after,
                verified: c.verified,
                policy: c.policy,
                policy_domain: c.policy_domain,
                subject: c.subject,
                sha256: c.sha256,
                last_seen: c.last_seen,
            }
        })
        .collect();
    partner_certificates.sort_by(|a, b| {
        (
            !a.policy_domain,
            a.days_left.unwrap_or(i64::MIN),
            &a.domain,
            &a.mx,
        )
            .cmp(&(
                !b.policy_domain,
                b.days_left.unwrap_or(i64::MIN),
                &b.domain,
                &b.mx,
            ))
    });
    let inbound_listeners: Vec<InboundListener> = config
        .inbound
        .iter()
        .map(|l| InboundListener {
            name: l.name.clone(),
            listen: l.listen.to_string(),
            require_tls: l.require_tls,
            require_tls_senders: l.require_tls_senders.entries(),
            require_tls_recipients: l.require_tls_recipients.entries(),
        })
        .collect();
    let tls = TlsSettings {
        inbound: (!config.inbound.is_empty()).then(|| {
            let versions = config
                .tls
                .as_ref()
                .map_or(&[][..], |t| crate::tls::versions_from(t.min_version))
                .to_vec();
            InboundTls {
                cipher_suites: crate::tls::suite_names(&versions),
                versions,
                certificate: config.tls.as_ref().map(|t| ServedCertificate {
                    path: t.label.clone(),
                    subject: t.subject.clone(),
                    not_after: t.not_after.map(crate::log::format_unix),
                }),
                listeners: inbound_listeners.clone(),
            }
        }),
        outbound: (!config.outbound.is_empty()).then(|| {
            // Outbound always offers TLS 1.3 and 1.2 (tls::client_config).
            let versions = crate::tls::versions_from(crate::tls::MinVersion::Tls12).to_vec();
            OutboundTls {
                cipher_suites: crate::tls::suite_names(&versions),
                versions,
                default_mode: config.outbound_policy.default.as_str(),
                mta_sts: config.outbound_policy.mta_sts,
                trust_anchors: format!(
                    "{} ({} CAs)",
                    config.outbound_policy.trust_anchors.label,
                    config.outbound_policy.trust_anchors.count
                ),
                listeners: config
                    .outbound
                    .iter()
                    .map(|l| OutboundListener {
                        name: l.name.clone(),
                        listen: l.listen.to_string(),
                        mode: match l.mode {
                            crate::config::OutboundMode::Relay => "relay",
                            crate::config::OutboundMode::Transparent => "transparent",
                        },
                    })
                    .collect(),
            }
        }),
    };
    let enforced_partners = EnforcedPartners {
        outbound: config
            .outbound_policy
            .domains
            .iter()
            .map(|d| OutboundPartner {
                domain: d.domain.clone(),
                mode: d.mode.as_str(),
                tls_required: d.mode.is_tls_required(),
                enforcement: enforcement(d.mode),
                relax_until: d
                    .relax_until
                    .filter(|t| *t > now)
                    .map(crate::log::format_unix),
            })
            .collect(),
        expired_relaxations: expired,
        inbound: inbound_listeners
            .into_iter()
            .filter(|l| {
                l.require_tls
                    || !l.require_tls_senders.is_empty()
                    || !l.require_tls_recipients.is_empty()
            })
            .collect(),
    };
    Ok(Evidence {
        product: Product {
            name: "starttls-proxy",
            version: env!("CARGO_PKG_VERSION"),
        },
        generated_at: until.clone(),
        node: config.hostname.clone(),
        period: Period { days, since, until },
        configuration: ConfigurationFile {
            path: config.source.display().to_string(),
            sha256: config.sha256.clone(),
        },
        summary: summary.into_values().collect(),
        tls,
        enforced_partners,
        coverage: coverage.rows,
        failures,
        configuration_loads,
        policy_changes,
        partner_certificates,
        sources: Sources {
            results_directory: results_dir.display().to_string(),
            results_files: coverage.files,
            result_lines: coverage.lines,
            unreadable_result_lines: coverage.skipped,
            config_history: config
                .state
                .directory
                .join(config_history::FILE_NAME)
                .display()
                .to_string(),
            unreadable_config_history_lines: unreadable_history,
            inventory: config
                .state
                .directory
                .join(inventory::FILE_NAME)
                .display()
                .to_string(),
            inventory_error,
        },
    })
}

/// The loads in the period, the policy changes they made (each node's load against its
/// previous one, which may be older than the period), and the expired relaxations they named.
fn history_in_period(
    history: &[config_history::ConfigRecord],
    since: &str,
    until: &str,
) -> (
    Vec<ConfigurationLoad>,
    Vec<PolicyChangeRow>,
    Vec<config_history::ExpiredRelaxation>,
) {
    let mut loads = Vec::new();
    let mut changes = Vec::new();
    let mut expired: Vec<config_history::ExpiredRelaxation> = Vec::new();
    let mut previous: BTreeMap<&str, &config_history::ConfigRecord> = BTreeMap::new();
    for record in history {
        let in_period = record.time.as_str() >= since && record.time.as_str() <= until;
        if in_period {
            loads.push(ConfigurationLoad {
                time: record.time.clone(),
                node: record.node.clone(),
                reason: record.reason.clone(),
                sha256: record.sha256.clone(),
            });
            for e in &record.expired_relaxations {
                if !expired.contains(e) {
                    expired.push(e.clone());
                }
            }
            if let Some(before) = previous.get(record.node.as_str()) {
                let mut domains: Vec<&String> = before
                    .policies
                    .keys()
                    .chain(record.policies.keys())
                    .collect();
                domains.sort();
                domains.dedup();
                for domain in domains {
                    let (b, a) = (before.policies.get(domain), record.policies.get(domain));
                    if b == a {
                        continue;
                    }
                    changes.push(PolicyChangeRow {
                        time: record.time.clone(),
                        node: record.node.clone(),
                        domain: domain.clone(),
                        from: b.map(|p| p.mode.clone()),
                        to: a.map(|p| p.mode.clone()),
                        relax_until_from: b.and_then(|p| p.relax_until.clone()),
                        relax_until_to: a.and_then(|p| p.relax_until.clone()),
                        sha256: record.sha256.clone(),
                    });
                }
            }
        }
        previous.insert(record.node.as_str(), record);
    }
    (loads, changes, expired)
}

impl Evidence {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
                text.push('\n');
                text
            }
            Format::Md => self.markdown(),
        }
    }

    fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let pct = |share: f64| format!("{:.1} %", 100.0 * share);
        let or_dash = |s: Option<&str>| s.unwrap_or("-").to_string();
        let _ = writeln!(out, "# Mail transport security evidence: {}\n", self.node);
        let _ = writeln!(
            out,
            "Produced by {} {} on {} for the {} days from {} to {} (UTC), from the session \
             results, configuration history and certificate inventory this node keeps \
             (section \"Sources\"). Configuration: `{}`, SHA-256 `{}`.\n",
            self.product.name,
            self.product.version,
            self.generated_at,
            self.period.days,
            self.period.since,
            self.period.until,
            self.configuration.path,
            self.configuration.sha256
        );
        let _ = writeln!(out, "## Summary\n");
        if self.summary.is_empty() {
            let _ = writeln!(out, "No session was recorded in the period.\n");
        }
        for s in &self.summary {
            let versions: Vec<String> = s
                .versions
                .iter()
                .map(|(v, n)| format!("{v}: {n}"))
                .collect();
            let _ = writeln!(
                out,
                "- **{}**: {} sessions, {} of them over TLS ({}), {} with a verified certificate \
                 ({}); TLS versions {}. {} sessions failed, {} of them to or from an enforced \
                 partner.",
                s.direction,
                s.sessions,
                s.tls_sessions,
                pct(s.tls_share),
                s.verified_sessions,
                pct(s.verified_share),
                if versions.is_empty() {
                    "-".to_string()
                } else {
                    versions.join(", ")
                },
                s.failed_sessions,
                s.enforced_failed_sessions
            );
        }
        let _ = writeln!(out, "\n## TLS settings\n");
        match &self.tls.inbound {
            Some(i) => {
                let _ = writeln!(
                    out,
                    "Inbound (internet senders to this node): STARTTLS offered to every client; \
                     versions {}; cipher suites (all forward secret) {}.",
                    i.versions.join(", "),
                    i.cipher_suites.join(", ")
                );
                if let Some(c) = &i.certificate {
                    let _ = writeln!(
                        out,
                        "Certificate `{}` ({}), valid until {}.",
                        c.path,
                        c.subject,
                        or_dash(c.not_after.as_deref())
                    );
                }
                let _ = writeln!(
                    out,
                    "\n| listener | address | TLS required | senders that must use TLS | recipients that must be reached over TLS |\n|---|---|---|---|---|"
                );
                for l in &i.listeners {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} |",
                        l.name,
                        l.listen,
                        if l.require_tls { "yes" } else { "no" },
                        list(&l.require_tls_senders),
                        list(&l.require_tls_recipients)
                    );
                }
            }
            None => {
                let _ = writeln!(out, "Inbound: no inbound listener is configured.");
            }
        }
        match &self.tls.outbound {
            Some(o) => {
                let _ = writeln!(
                    out,
                    "\nOutbound (this node to partner MX hosts): STARTTLS originated whenever \
                     offered; versions {}; cipher suites {}; default policy `{}`; MTA-STS {}; \
                     trust anchors {}.",
                    o.versions.join(", "),
                    o.cipher_suites.join(", "),
                    o.default_mode,
                    if o.mta_sts { "applied" } else { "not applied" },
                    o.trust_anchors
                );
                for l in &o.listeners {
                    let _ = writeln!(
                        out,
                        "- listener {} on {} ({} mode)",
                        l.name, l.listen, l.mode
                    );
                }
            }
            None => {
                let _ = writeln!(out, "\nOutbound: no outbound listener is configured.");
            }
        }
        let _ = writeln!(out, "\n## Enforced partners\n");
        if self.enforced_partners.outbound.is_empty() {
            let _ = writeln!(out, "No outbound partner domain has its own policy.");
        } else {
            let _ = writeln!(
                out,
                "| partner domain (outbound) | mode | enforcement | relaxed until |\n|---|---|---|---|"
            );
            for p in &self.enforced_partners.outbound {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    p.domain,
                    p.mode,
                    p.enforcement,
                    or_dash(p.relax_until.as_deref())
                );
            }
        }
        for l in &self.enforced_partners.inbound {
            let _ = writeln!(
                out,
                "\nInbound listener {}: TLS required from every client: {}; from senders {}; to recipients {}.",
                l.name,
                if l.require_tls { "yes" } else { "no" },
                list(&l.require_tls_senders),
                list(&l.require_tls_recipients)
            );
        }
        if !self.enforced_partners.expired_relaxations.is_empty() {
            let _ = writeln!(
                out,
                "\nRelaxations found expired at load (not applied; enforcement in force):"
            );
            for e in &self.enforced_partners.expired_relaxations {
                let _ = writeln!(out, "- {}: relax_until {}", e.domain, e.relax_until);
            }
        }
        let _ = writeln!(
            out,
            "\n## Coverage per partner\n\nThe figures of `starttls-proxy coverage --days {}`.\n\n\
             | direction | domain | sessions | TLS | verified | versions | last failure |\n|---|---|---|---|---|---|---|",
            self.period.days
        );
        for r in &self.coverage {
            let versions: Vec<String> =
                r.versions.iter().map(|(v, n)| format!("{v}={n}")).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.direction,
                or_dash(r.domain.as_deref()),
                r.sessions,
                pct(r.tls_share),
                pct(r.verified_share),
                versions.join(" "),
                r.last_failure
                    .as_ref()
                    .map_or("-".to_string(), |f| format!("{} {}", f.time, f.result))
            );
        }
        let _ = writeln!(out, "\n## Failures\n");
        if self.failures.is_empty() {
            let _ = writeln!(out, "No session failed in the period.");
        } else {
            let _ = writeln!(
                out,
                "Sessions whose TLS result was not `success` (RFC 8460 result types); enforced \
                 partners first.\n\n| direction | domain | result | sessions | first | last | enforced |\n|---|---|---|---|---|---|---|"
            );
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    f.direction,
                    or_dash(f.domain.as_deref()),
                    f.result,
                    f.sessions,
                    f.first,
                    f.last,
                    if f.enforced { "yes" } else { "no" }
                );
            }
        }
        let _ = writeln!(out, "\n## Policy changes\n");
        if self.policy_changes.is_empty() {
            let _ = writeln!(out, "No policy change in the period.");
        } else {
            let _ = writeln!(
                out,
                "| time | node | domain | from | to | relaxed until (before) | relaxed until (after) | configuration SHA-256 |\n|---|---|---|---|---|---|---|---|"
            );
            for c in &self.policy_changes {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | `{}` |",
                    c.time,
                    c.node,
                    c.domain,
                    or_dash(c.from.as_deref()),
                    or_dash(c.to.as_deref()),
                    or_dash(c.relax_until_from.as_deref()),
                    or_dash(c.relax_until_to.as_deref()),
                    c.sha256
                );
            }
        }
        let _ = writeln!(
            out,
            "\nConfiguration loads in the period: {}.",
            self.configuration_loads.len()
        );
        for l in &self.configuration_loads {
            let _ = writeln!(out, "- {} {} {} `{}`", l.time, l.node, l.reason, l.sha256);
        }
        let _ = writeln!(out, "\n## Partner certificates\n");
        if self.partner_certificates.is_empty() {
            let _ = writeln!(out, "No partner certificate recorded.");
        } else {
            let _ = writeln!(
                out,
                "Policy domains first, soonest expiry first.\n\n| domain | MX host | expires | days left | verified | policy domain | SHA-256 |\n|---|---|---|---|---|---|---|"
            );
            for c in &self.partner_certificates {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | `{}` |",
                    c.domain,
                    c.mx,
                    or_dash(c.not_after.as_deref()),
                    c.days_left.map_or("-".to_string(), |d| d.to_string()),
                    if c.verified { "yes" } else { "no" },
                    if c.policy_domain { "yes" } else { "no" },
                    c.sha256
                );
            }
        }
        let s = &self.sources;
        let _ = writeln!(
            out,
            "\n## Sources\n\n- Session results: `{}`, {} files, {} lines ({} unreadable, not \
             counted). Each session is one JSON line; for example the outbound sessions of a \
             domain: `jq -c 'select(.direction == \"outbound\" and .domain == \"DOMAIN\")' \
             {}/*.jsonl`.\n- Configuration history: `{}` ({} unreadable lines).\n- Certificate \
             inventory: `{}`{}.",
            s.results_directory,
            s.results_files,
            s.result_lines,
            s.unreadable_result_lines,
            s.results_directory,
            s.config_history,
            s.unreadable_config_history_lines,
            s.inventory,
            s.inventory_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (unreadable: {e})"))
        );
        out
    }
}

/// What `mode` promises an auditor, in words.
fn enforcement(mode: crate::policy::Mode) -> &'static str {
    use crate::policy::Mode;
    match mode {
        Mode::None => "never TLS",
        Mode::Opportunistic => "TLS when offered",
        Mode::Dane => "authenticated TLS where DANE (TLSA) is published, else TLS when offered",
        Mode::DaneOnly => "authenticated TLS by DANE, always",
        Mode::Encrypt => "TLS always",
        Mode::Verify => "TLS always, certificate verified",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
#[path = "evidence_tests.rs"]
mod tests;
