//! Issue 14, point 1: session results against real peers. One JSON line per accepted inbound
//! connection (swaks over STARTTLS and in plaintext, Postfix as the legacy MTA) in
//! `state_directory/results/<node>-<UTC day>.jsonl`, on disk before the session's log line, and
//! all of it still there after `kill -9`.

mod common;

use common::postfix::{Role, MAIL_DOMAIN};
use common::*;

#[test]
fn every_inbound_connection_leaves_one_result_with_its_tls_facts() {
    let (dir, _ca, leaf) = setup("results-inbound");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let to = format!("u@{MAIL_DOMAIN}");
    swaks(
        proxy.addr(),
        &["--tls", "--from", "a@partner.test", "--to", &to],
    )
    .assert_success();
    swaks(proxy.addr(), &["--from", "b@plain.test", "--to", &to]).assert_success();
    let sessions = proxy.wait_sessions(2);
    let results = proxy.results();
    assert_eq!(results.len(), 2, "{results:#?}");
    let day = time_today();
    let file = dir.join(&format!("state/results/proxy.test-{day}.jsonl"));
    assert!(file.exists(), "{}", file.display());
    let tls = &results[0];
    assert_eq!(tls["direction"], "inbound");
    assert_eq!(tls["node"], "proxy.test");
    assert_eq!(tls["domain"], "partner.test");
    assert_eq!(tls["result"], "success");
    assert_eq!(tls["policy_type"], "no-policy-found");
    assert!(
        tls["tls_version"].as_str().unwrap().starts_with("TLSv1."),
        "{tls}"
    );
    assert!(tls["cipher"].as_str().unwrap().starts_with("TLS_"), "{tls}");
    assert_eq!(tls["verified"], false);
    assert_eq!(tls["client_ip"], "127.0.0.1");
    assert_eq!(tls["session_id"].as_str(), Some(sessions[0]["id"].as_str()));
    assert!(tls["time"].as_str().unwrap().starts_with(&day), "{tls}");
    let plain = &results[1];
    assert_eq!(plain["domain"], "plain.test");
    assert_eq!(plain["result"], "starttls-not-supported");
    assert_eq!(plain["tls_version"], serde_json::Value::Null);
    assert_eq!(
        plain["session_id"].as_str(),
        Some(sessions[1]["id"].as_str())
    );
}

/// What was logged is on disk: each session's result is there by the time its log line is,
/// and a `kill -9` right after loses none of them.
#[test]
fn results_are_on_disk_before_the_log_line_and_survive_kill_9() {
    let (dir, _ca, leaf) = setup("results-durable");
    let sink = SmtpSink::start(dir.path(), &[]);
    let mut proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let mut logged = Vec::new();
    for i in 0..5 {
        let from = format!("s{i}@partner.test");
        swaks(
            proxy.addr(),
            &["--tls", "--from", &from, "--to", "u@example.org"],
        )
        .assert_success();
        let sessions = proxy.wait_sessions(i + 1);
        let id = sessions[i]["id"].clone();
        // The log line is out: its result must already be in the file.
        assert!(
            proxy
                .results()
                .iter()
                .any(|r| r["session_id"] == id.as_str()),
            "session {id} logged before its result was written"
        );
        logged.push(id);
    }
    proxy.signal("KILL");
    proxy.wait_exit();
    let ids: Vec<String> = proxy
        .results()
        .iter()
        .map(|r| r["session_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, logged);
}

fn time_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
