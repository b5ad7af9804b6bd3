//! `starttls-proxy evidence` on a real run: swaks sessions over STARTTLS and in plaintext
//! through the proxy to a Postfix legacy MTA, a reload that changes the outbound policy, then
//! the document: its coverage is `coverage`'s, its counts are the session results', its policy
//! changes and configuration loads are the reload's (with the files' SHA-256), both formats.

mod common;

use common::postfix::{Role, MAIL_DOMAIN};
use common::proxy::run_cli;
use common::*;

fn sha256_file(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn evidence_of_a_real_run_shows_its_sessions_failures_and_policy_changes() {
    let (dir, _ca, leaf) = setup("evidence");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_senders(&["partner.test"])
        .start();
    let config = proxy.config.clone();
    let first_sha = sha256_file(&config);
    let to = format!("u@{MAIL_DOMAIN}");
    swaks(
        proxy.addr(),
        &["--tls", "--from", "a@partner.test", "--to", &to],
    )
    .assert_success();
    // The enforced partner in plaintext is refused (450 4.7.1) and recorded as a failure.
    let refused = swaks(proxy.addr(), &["--from", "b@partner.test", "--to", &to]);
    assert!(refused.all().contains("450"), "{}", refused.all());
    swaks(proxy.addr(), &["--from", "c@plain.test", "--to", &to]).assert_success();
    proxy.wait_sessions(3);

    // A policy change by reload: an enforced outbound partner appears.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[outbound_policy]\ndefault = \"opportunistic\"\n[[outbound_policy.domain]]\ndomain = \"bank.test\"\nmode = \"verify\"\n"),
    )
    .unwrap();
    let second_sha = sha256_file(&config);
    proxy.signal("HUP");
    proxy.wait_event("reloaded", &[]);

    let path = config.to_str().unwrap();
    let (code, json, err) = run_cli(&[
        "evidence", "--config", path, "--days", "1", "--format", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|x| panic!("{x}: {json}"));
    let (code, coverage, err) = run_cli(&[
        "coverage", "--config", path, "--days", "1", "--format", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let coverage: serde_json::Value = serde_json::from_str(&coverage).unwrap();
    assert_eq!(e["coverage"], coverage, "evidence and coverage disagree");

    // The counts are the session results'.
    let results = proxy.results();
    assert_eq!(results.len(), 3, "{results:#?}");
    let inbound = e["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["direction"] == "inbound")
        .unwrap_or_else(|| panic!("{e:#}"));
    let tls = results
        .iter()
        .filter(|r| !r["tls_version"].is_null())
        .count();
    assert_eq!(inbound["sessions"], 3);
    assert_eq!(inbound["tls_sessions"], tls as u64);
    assert_eq!(inbound["enforced_failed_sessions"], 1, "{inbound:#}");
    let failure = e["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["domain"] == "partner.test")
        .unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!(
        (
            &failure["result"],
            &failure["sessions"],
            &failure["enforced"]
        ),
        (
            &serde_json::json!("starttls-not-supported"),
            &serde_json::json!(1),
            &serde_json::json!(true)
        )
    );
    assert_eq!(
        e["enforced_partners"]["inbound"][0]["require_tls_senders"],
        serde_json::json!(["partner.test"])
    );

    // Change control: the start and the reload with their files' SHA-256, and what changed.
    let loads: Vec<(&str, &str)> = e["configuration_loads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["reason"].as_str().unwrap(), l["sha256"].as_str().unwrap()))
        .collect();
    assert_eq!(
        loads,
        vec![
            ("start", first_sha.as_str()),
            ("reload", second_sha.as_str())
        ]
    );
    let change = e["policy_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["domain"] == "bank.test")
        .unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!(
        (&change["from"], &change["to"]),
        (&serde_json::Value::Null, &serde_json::json!("verify"))
    );
    assert_eq!(change["sha256"], second_sha.as_str());
    assert_eq!(e["enforced_partners"]["outbound"][0]["domain"], "bank.test");
    assert_eq!(
        e["tls"]["inbound"]["certificate"]["path"],
        leaf.cert.display().to_string().as_str()
    );
    assert_eq!(e["product"]["version"], env!("CARGO_PKG_VERSION"));

    let (code, md, err) = run_cli(&["evidence", "--config", path, "--days", "1"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "# Mail transport security evidence: proxy.test",
        "**inbound**: 3 sessions",
        "| inbound | partner.test | starttls-not-supported | 1 |",
        "| bank.test | - | verify |",
        &format!("reload `{second_sha}`"),
    ] {
        assert!(md.contains(needle), "{needle:?} not in:\n{md}");
    }
}

#[test]
fn evidence_answers_bad_input_clearly() {
    let (dir, _ca, leaf) = setup("evidence-bad");
    let path = ProxyBuilder::new(dir.path(), &leaf, dead_addr()).write_config();
    let path = path.to_str().unwrap();
    let (code, _, err) = run_cli(&["evidence", "--config", path, "--days", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(&["evidence", "--config", path, "--format", "pdf"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(&["evidence", "--config", "/nonexistent/starttls-proxy.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/starttls-proxy.toml"), "{err}");
    // Nothing kept yet: a document that says so, not a failure.
    let (code, md, err) = run_cli(&["evidence", "--config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        md.contains("No session was recorded in the period."),
        "{md}"
    );
}
