use super::*;
use std::path::{Path, PathBuf};

fn unix(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

fn line(
    time: &str,
    direction: &str,
    domain: &str,
    tls: Option<&str>,
    verified: bool,
    result: &str,
) -> String {
    serde_json::json!({
        "time": time, "node": "n1", "direction": direction, "domain": domain,
        "policy_type": "no-policy-found", "policy_strings": [], "mx_host": null, "mx_ip": null,
        "client_ip": null, "tls_version": tls, "cipher": tls.map(|_| "TLS_AES_256_GCM_SHA384"),
        "verified": verified, "result": result, "session_id": "s"
    })
    .to_string()
}

fn state(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stp-evidence-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("results")).unwrap();
    dir
}

fn config(state: &Path) -> Config {
    let text = format!(
        r#"hostname = "mx1.example.org"
state_directory = {state:?}
[tls]
self_signed = true
min_version = "1.3"
[[inbound]]
name = "mx"
listen = "127.0.0.1:2525"
backend = "127.0.0.1:2526"
require_tls_senders = ["partner.test", ".gov.test"]
[[outbound]]
name = "relay"
listen = "127.0.0.1:10025"
[outbound_policy]
default = "opportunistic"
[[outbound_policy.domain]]
domain = "bank.test"
mode = "verify"
[[outbound_policy.domain]]
domain = "shop.test"
mode = "encrypt"
relax_until = "2026-12-01T00:00:00Z"
"#,
        state = state.display().to_string()
    );
    Config::parse(&text, Path::new("/etc/starttls-proxy/test.toml")).unwrap()
}

const NOW: &str = "2026-12-06T12:00:00Z";

fn record(time: &str, sha: &str, bank: &str, relax: Option<&str>) -> config_history::ConfigRecord {
    let snapshot = |mode: &str, relax: Option<&str>| config_history::PolicySnapshot {
        mode: mode.to_string(),
        relax_until: relax.map(str::to_string),
    };
    config_history::ConfigRecord {
        time: time.to_string(),
        node: "mx1.example.org".to_string(),
        reason: "reload".to_string(),
        config: "/etc/starttls-proxy/test.toml".to_string(),
        sha256: sha.to_string(),
        policies: [
            ("default".to_string(), snapshot("opportunistic", None)),
            ("bank.test".to_string(), snapshot(bank, relax)),
        ]
        .into_iter()
        .collect(),
        expired_relaxations: Vec::new(),
    }
}

#[test]
fn every_figure_comes_from_what_the_proxy_kept() {
    let dir = state("figures");
    let c = config(&dir);
    std::fs::write(
        dir.join("results/n1-2026-12-05.jsonl"),
        [
            line(
                "2026-12-05T10:00:00Z",
                "outbound",
                "bank.test",
                Some("TLSv1.3"),
                true,
                "success",
            ),
            line(
                "2026-12-05T10:05:00Z",
                "outbound",
                "bank.test",
                Some("TLSv1.2"),
                false,
                "certificate-expired",
            ),
            line(
                "2026-12-05T10:06:00Z",
                "outbound",
                "bank.test",
                Some("TLSv1.2"),
                false,
                "certificate-expired",
            ),
            line(
                "2026-12-05T11:00:00Z",
                "outbound",
                "other.test",
                None,
                false,
                "starttls-not-supported",
            ),
            line(
                "2026-12-05T12:00:00Z",
                "inbound",
                "partner.test",
                Some("TLSv1.3"),
                false,
                "success",
            ),
            line(
                "2026-12-05T12:01:00Z",
                "inbound",
                "partner.test",
                None,
                false,
                "starttls-not-supported",
            ),
            "{\"torn".to_string(),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    // Older than the period: not counted.
    std::fs::write(
        dir.join("results/n1-2026-11-01.jsonl"),
        line(
            "2026-11-01T10:00:00Z",
            "outbound",
            "bank.test",
            None,
            false,
            "starttls-not-supported",
        ) + "\n",
    )
    .unwrap();
    // Before the period: the baseline; in it: relaxed, then enforced again.
    for r in [
        record("2026-11-20T08:00:00Z", "aaa", "verify", None),
        record(
            "2026-12-02T08:00:00Z",
            "bbb",
            "verify",
            Some("2026-12-09T00:00:00Z"),
        ),
        record("2026-12-04T08:00:00Z", "ccc", "encrypt", None),
    ] {
        config_history::append(&dir, &r).unwrap();
    }
    std::fs::write(
        dir.join("certificates.json"),
        serde_json::json!([{
            "domain": "bank.test", "mx": "mx.bank.test", "subject": "CN=mx.bank.test",
            "issuer": "CN=ca", "sans": ["mx.bank.test"], "not_after": "2026-12-16T12:00:00Z",
            "sha256": "ab", "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-12-05T10:06:00Z",
            "verified": false, "policy": "configured", "mode": "verify", "policy_domain": true
        }])
        .to_string(),
    )
    .unwrap();

    let e = build(&c, 7, unix(NOW)).unwrap();
    // The same rows as `coverage` for the same period.
    let cov = coverage::compute(&dir.join("results"), "2026-11-29T12:00:00Z", NOW).unwrap();
    assert_eq!(e.coverage, cov.rows);
    assert_eq!(
        (e.sources.result_lines, e.sources.unreadable_result_lines),
        (7, 1)
    );
    let out = e
        .summary
        .iter()
        .find(|s| s.direction == "outbound")
        .unwrap();
    assert_eq!(
        (out.sessions, out.tls_sessions, out.verified_sessions),
        (4, 3, 1)
    );
    assert_eq!((out.failed_sessions, out.enforced_failed_sessions), (3, 2));
    assert_eq!(out.versions.get("TLSv1.2"), Some(&2));
    let inbound = e.summary.iter().find(|s| s.direction == "inbound").unwrap();
    assert_eq!((inbound.sessions, inbound.enforced_failed_sessions), (2, 1));
    let expired = &e.failures[0];
    assert_eq!(
        (
            expired.domain.as_deref(),
            expired.result.as_str(),
            expired.sessions,
            expired.enforced
        ),
        (Some("bank.test"), "certificate-expired", 2, true)
    );
    assert_eq!(
        (expired.first.as_str(), expired.last.as_str()),
        ("2026-12-05T10:05:00Z", "2026-12-05T10:06:00Z")
    );
    assert!(e
        .failures
        .iter()
        .any(|f| f.domain.as_deref() == Some("other.test") && !f.enforced));
    // Policy changes: the relaxation added, then the mode changed and the relaxation dropped.
    assert_eq!(e.configuration_loads.len(), 2);
    assert_eq!(e.policy_changes.len(), 2, "{:#?}", e.policy_changes);
    let relaxed = &e.policy_changes[0];
    assert_eq!(
        (
            relaxed.domain.as_str(),
            relaxed.relax_until_to.as_deref(),
            relaxed.sha256.as_str()
        ),
        ("bank.test", Some("2026-12-09T00:00:00Z"), "bbb")
    );
    let changed = &e.policy_changes[1];
    assert_eq!(
        (
            changed.from.as_deref(),
            changed.to.as_deref(),
            changed.relax_until_to.as_deref()
        ),
        (Some("verify"), Some("encrypt"), None)
    );
    // The configuration's own expired relaxation is reported, not silently ignored.
    assert_eq!(
        e.enforced_partners.expired_relaxations,
        vec![config_history::ExpiredRelaxation {
            domain: "shop.test".into(),
            relax_until: "2026-12-01T00:00:00Z".into()
        }]
    );
    assert!(e
        .enforced_partners
        .outbound
        .iter()
        .all(|p| p.relax_until.is_none()));
    assert_eq!(
        e.enforced_partners.inbound[0].require_tls_senders,
        vec![".gov.test", "partner.test"]
    );
    assert_eq!(e.partner_certificates[0].days_left, Some(10));
    let inbound_tls = e.tls.inbound.as_ref().unwrap();
    assert_eq!(inbound_tls.versions, vec!["TLSv1.3"]);
    assert!(inbound_tls
        .cipher_suites
        .iter()
        .all(|s| s.starts_with("TLS_AES") || s.starts_with("TLS_CHACHA")));
    let outbound_tls = e.tls.outbound.as_ref().unwrap();
    assert!(outbound_tls
        .cipher_suites
        .contains(&"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));

    let md = e.render(Format::Md);
    for needle in [
        "## Summary",
        "**outbound**: 4 sessions, 3 of them over TLS (75.0 %), 1 with a verified certificate",
        "## TLS settings",
        "| bank.test | verify | TLS always, certificate verified | - |",
        "shop.test: relax_until 2026-12-01T00:00:00Z",
        "| outbound | bank.test | certificate-expired | 2 | 2026-12-05T10:05:00Z | 2026-12-05T10:06:00Z | yes |",
        "| bank.test | verify | encrypt | 2026-12-09T00:00:00Z | - | `ccc` |",
        "| bank.test | mx.bank.test | 2026-12-16T12:00:00Z | 10 | no | yes | `ab` |",
        "## Sources",
    ] {
        assert!(md.contains(needle), "{needle:?} not in:\n{md}");
    }
    let json: serde_json::Value = serde_json::from_str(&e.render(Format::Json)).unwrap();
    assert_eq!(
        json["coverage"][0]["sessions"],
        serde_json::json!(cov.rows[0].sessions)
    );
    assert_eq!(json["product"]["name"], "starttls-proxy");
}

#[test]
fn a_node_that_kept_nothing_yet_gives_an_empty_document_not_an_error() {
    let dir = state("empty");
    std::fs::remove_dir_all(dir.join("results")).unwrap();
    let e = build(&config(&dir), 30, unix(NOW)).unwrap();
    assert!(e.coverage.is_empty() && e.failures.is_empty() && e.policy_changes.is_empty());
    assert!(e
        .render(Format::Md)
        .contains("No session was recorded in the period."));
    // A corrupt inventory is named, never fatal, and never moved by a reader.
    std::fs::write(dir.join("certificates.json"), b"[{").unwrap();
    let e = build(&config(&dir), 30, unix(NOW)).unwrap();
    assert!(e.sources.inventory_error.is_some());
    assert!(dir.join("certificates.json").is_file());
}
