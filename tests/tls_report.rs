//! Issue 14, point 2 (outgoing reports): `starttls-proxy tls-report` against real peers. A
//! Postfix sender relays through the proxy to a partner's Postfix MX, so the proxy records real
//! results; a second node's results file lies beside them; dnsmasq publishes the partner's
//! `_smtp._tls` record; the HTTPS responder takes the https report and a Postfix MX the mailed
//! one, which leaves through `send_via` (the same Postfix sender, through the proxy again: a
//! report delivery, which must never be counted in a report).

mod common;

use base64::Engine as _;
use common::https::{PolicyHost, Response};
use common::postfix::Role;
use common::proxy::run_cli;
use common::*;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const RUA: &str = "https://tlsrpt.rpt.test/report,mailto:tlsrpt@rpt.test";

fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// The proxy's configuration: an outbound relay listener on `listen`, the test's DNS and CA,
/// and `[tls_reporting]` with `send_via`.
fn config(dns: SocketAddr, ca: &Ca, listen: SocketAddr, send_via: SocketAddr) -> String {
    config_as("mx1.test", dns, ca, listen, send_via)
}

fn config_as(
    hostname: &str,
    dns: SocketAddr,
    ca: &Ca,
    listen: SocketAddr,
    send_via: SocketAddr,
) -> String {
    format!(
        r#"hostname = "{hostname}"
[resolver]
nameservers = ["{dns}"]
[[outbound]]
name = "relay"
listen = "{listen}"
mode = "relay"
mx_port = 25
[outbound_policy]
default = "opportunistic"
trust_anchors = "{ca}"
mta_sts_trust_anchors = "{ca}"
[tls_reporting]
organization = "Example Org"
contact = "mailto:postmaster@example.org"
submitter = "example.org"
send_via = "{send_via}"
from = "tlsrpt-noreply@example.org"
"#,
        ca = ca.path.display()
    )
}

/// A result line of another node, as `state::results` writes them.
fn foreign_result(day: &str, domain: &str, result: &str, id: &str) -> String {
    serde_json::json!({
        "time": format!("{day}T10:00:00Z"),
        "node": "mx2.test",
        "direction": "outbound",
        "domain": domain,
        "policy_type": "no-policy-found",
        "policy_strings": [],
        "mx_host": format!("mx.{domain}"),
        "mx_ip": "192.0.2.25",
        "local_ip": "198.51.100.2",
        "tls_version": if result == "success" { Some("TLSv1.3") } else { None },
        "cipher": null,
        "verified": false,
        "result": result,
        "session_id": id,
    })
    .to_string()
}

fn write_results(state: &Path, node: &str, day: &str, lines: &[String]) {
    let dir = state.join("results");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join(format!("{node}-{day}.jsonl")), text).unwrap();
}

fn tls_report(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["tls-report", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_cli(&all)
}

fn gunzip(bytes: &[u8]) -> serde_json::Value {
    let mut json = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut json)
        .expect("a gzip report");
    serde_json::from_str(&json).expect("a JSON report")
}

fn report_files(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("reports"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| f.to_string_lossy().ends_with(".json.gz"));
    files.sort();
    files
}

/// Unfolded header `name` of a message (first occurrence).
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\n\n").next().unwrap_or_default();
    head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

#[test]
fn reports_of_several_nodes_go_by_https_and_by_mail_once_and_never_about_themselves() {
    let dir = TempDir::new("tls-report");
    let ca = Ca::new(dir.path(), "test-ca");
    let web = PolicyHost::builder(&ca).host("tlsrpt.rpt.test").start();
    let (partner_ip, rpt_ip, proxy_ip) = (unique_ip(), unique_ip(), unique_ip());
    let dns = Dns::start(
        Zone::default()
            .mx_at("partner.test", "mx.partner.test", partner_ip)
            .mx_at("rpt.test", "mx.rpt.test", rpt_ip)
            .a("tlsrpt.rpt.test", web.ip)
            .txt("_smtp._tls.partner.test", &format!("v=TLSRPTv1; rua={RUA}"))
            // Were report deliveries counted, rpt.test would get a report of its own.
            .txt(
                "_smtp._tls.rpt.test",
                "v=TLSRPTv1; rua=https://tlsrpt.rpt.test/rpt",
            ),
    );
    let partner = Postfix::mx(dir.path(), "partner", partner_ip, &["partner.test"], None);
    let rpt = Postfix::mx(dir.path(), "rpt", rpt_ip, &["rpt.test"], None);
    let listen = SocketAddr::from((proxy_ip, 10025));
    let sender = Postfix::start(dir.path(), "sender", Role::relay_to(listen));
    let proxy = Proxy::start_text(dir.path(), &config(dns.addr, &ca, listen, sender.addr));
    let state = dir.join("state");
    let day = today();

    sender.submit("alice@sender.test", "bob@partner.test", "to the partner");
    partner.wait_delivered(1);
    let ours = eventually("the proxy's result for partner.test", || {
        proxy
            .results()
            .into_iter()
            .find(|r| r["domain"] == "partner.test")
    });
    write_results(
        &state,
        "mx2.test",
        &day,
        &[
            foreign_result(&day, "partner.test", "success", "mx2-1"),
            foreign_result(&day, "partner.test", "certificate-expired", "mx2-2"),
        ],
    );

    // Built and kept, not sent.
    let (code, out, err) = tls_report(&proxy.config, &["--day", &day]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.contains("not sent (use --send)"), "{out}");
    assert!(web.posts().is_empty());
    let files = report_files(&state);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let parts: Vec<&str> = name.trim_end_matches(".json.gz").split('!').collect();
    assert_eq!(parts[..2], ["example.org", "partner.test"], "{name}");
    assert_eq!(parts.len(), 5, "{name}");

    let (code, out, err) = tls_report(&proxy.config, &["--day", &day, "--send"]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    let stored = std::fs::read(&files[0]).unwrap();

    // https: the stored bytes, gzip'd JSON, the RFC's media type, both nodes merged.
    let posts = web.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].path, "/report");
    assert_eq!(
        posts[0].header("content-type"),
        Some("application/tlsrpt+gzip")
    );
    assert_eq!(posts[0].body, stored);
    let report = gunzip(&posts[0].body);
    assert_eq!(report["organization-name"], "Example Org");
    assert_eq!(report["contact-info"], "mailto:postmaster@example.org");
    assert_eq!(
        report["date-range"]["start-datetime"],
        format!("{day}T00:00:00Z")
    );
    let policies = report["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{report:#}");
    let policy = &policies[0];
    assert_eq!(policy["policy"]["policy-domain"], "partner.test");
    assert_eq!(policy["policy"]["policy-type"], "no-policy-found");
    let ours_ok = u64::from(ours["result"] == "success");
    assert_eq!(
        policy["summary"]["total-successful-session-count"],
        1 + ours_ok,
        "{report:#}"
    );
    assert_eq!(
        policy["summary"]["total-failure-session-count"],
        2 - ours_ok,
        "{report:#}"
    );
    let details = policy["failure-details"].as_array().unwrap();
    assert!(
        details
            .iter()
            .any(|d| d["result-type"] == "certificate-expired" && d["failed-session-count"] == 1),
        "{report:#}"
    );

    // mailto: through send_via (and the proxy) into the reporting domain's MX.
    let mail = rpt.wait_delivered(1).remove(0);
    let report_id = report["report-id"].as_str().unwrap();
    assert_eq!(
        header(&mail, "Subject"),
        Some(
            format!("Report Domain: partner.test Submitter: example.org Report-ID: <{report_id}>")
                .as_str()
        ),
        "{mail}"
    );
    assert_eq!(header(&mail, "TLS-Report-Domain"), Some("partner.test"));
    assert_eq!(header(&mail, "TLS-Report-Submitter"), Some("example.org"));
    assert_eq!(header(&mail, "TLS-Required"), Some("No"));
    assert_eq!(header(&mail, "From"), Some("tlsrpt-noreply@example.org"));
    let content_type = header(&mail, "Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/report; report-type=\"tlsrpt\"; boundary="),
        "{content_type}"
    );
    let attachment = mail
        .split("Content-Type: application/tlsrpt+gzip")
        .nth(1)
        .expect("a tlsrpt+gzip part");
    assert!(
        attachment.contains(&format!("filename=\"{name}\"")),
        "{attachment}"
    );
    let encoded: String = attachment
        .split("\n\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    let attached = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap();
    assert_eq!(attached, stored, "the mailed report is the stored one");

    // The report's own session is recorded as a report delivery...
    let delivery = eventually("the report delivery's result", || {
        proxy
            .results()
            .into_iter()
            .find(|r| r["domain"] == "rpt.test")
    });
    assert_eq!(delivery["report_delivery"], true, "{delivery}");
    // ...and never makes a report; what went is not sent again.
    let (code, out, err) = tls_report(&proxy.config, &["--day", &day, "--send"]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(!out.contains("\n  rpt.test:"), "{out}");
    assert_eq!(out.matches("sent before").count(), 2, "{out}");
    assert_eq!(web.posts().len(), 1);
    assert_eq!(report_files(&state).len(), 1);
    let ledger =
        std::fs::read_to_string(state.join(format!("reports/ledger/{name}.jsonl"))).unwrap();
    assert_eq!(ledger.lines().count(), 2, "{ledger}");
    assert!(
        ledger.lines().all(|l| l.contains("\"result\":\"sent\"")),
        "{ledger}"
    );
}

/// Every delivery ledger line under `state`, all reports together.
fn ledger_text(state: &Path) -> String {
    std::fs::read_dir(state.join("reports/ledger"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

/// A standalone world for the failure cases: results written by hand, no proxy running.
struct Offline {
    dir: TempDir,
    web: PolicyHost,
    _dns: Dns,
    config: PathBuf,
}

fn offline(tag: &str, rua: &str, send_via: SocketAddr) -> Offline {
    offline_with(tag, rua, send_via, "")
}

/// [`offline`] with `extra` lines in `[tls_reporting]`.
fn offline_with(tag: &str, rua: &str, send_via: SocketAddr, extra: &str) -> Offline {
    offline_in(tag, rua, send_via, extra, |zone| zone)
}

/// [`offline_with`] with records of the test's own in the zone.
fn offline_in(
    tag: &str,
    rua: &str,
    send_via: SocketAddr,
    extra: &str,
    records: impl FnOnce(Zone) -> Zone,
) -> Offline {
    let dir = TempDir::new(tag);
    let ca = Ca::new(dir.path(), "test-ca");
    let web = PolicyHost::builder(&ca)
        .route("tlsrpt.rpt.test", "/report", Response::status(500))
        .start();
    let dns = Dns::start(records(
        Zone::default()
            .a("tlsrpt.rpt.test", web.ip)
            .txt("_smtp._tls.partner.test", &format!("v=TLSRPTv1; rua={rua}"))
            .txt("_smtp._tls.broken.test", "v=TLSRPTv1; nothing=here"),
    ));
    let text = format!(
        "state_directory = {:?}\n{}{extra}",
        dir.join("state").display().to_string(),
        config(dns.addr, &ca, unique_addr(10025), send_via)
    );
    let config = dir.join("starttls-proxy.toml");
    std::fs::write(&config, text).unwrap();
    Offline {
        dir,
        web,
        _dns: dns,
        config,
    }
}

#[test]
fn a_failed_delivery_exits_1_and_the_next_run_sends_only_what_is_missing() {
    let w = offline(
        "tls-report-retry",
        "https://tlsrpt.rpt.test/report,ftp://tlsrpt.rpt.test/x",
        dead_addr(),
    );
    let day = "2026-11-30";
    let state = w.dir.join("state");
    write_results(
        &state,
        "mx1.test",
        day,
        &[
            foreign_result(day, "partner.test", "starttls-not-supported", "a"),
            foreign_result(day, "broken.test", "success", "b"),
            foreign_result(day, "none.test", "success", "c"),
            // A line torn by a crash: skipped, never fatal.
            "{\"time\":\"2026-11-30T1".to_string(),
        ],
    );
    let (code, out, err) = tls_report(&w.config, &["--day", day, "--send"]);
    assert_eq!(code, 1, "stdout: {out} stderr: {err}");
    assert!(
        out.contains("https://tlsrpt.rpt.test/report: FAILED: the receiver answered HTTP 500"),
        "{out}"
    );
    assert!(out.contains("ftp://tlsrpt.rpt.test/x: ignored"), "{out}");
    assert!(
        out.contains("broken.test: unusable _smtp._tls record"),
        "{out}"
    );
    assert!(out.contains("none.test: no _smtp._tls record"), "{out}");
    assert!(out.contains("1 unreadable"), "{out}");
    assert!(err.contains("not delivered"), "{err}");
    assert_eq!(w.web.posts().len(), 1);

    w.web
        .set_route("tlsrpt.rpt.test", "/report", Response::status(201));
    let (code, out, err) = tls_report(&w.config, &["--day", day, "--send"]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(
        out.contains("https://tlsrpt.rpt.test/report: sent (HTTP 201)"),
        "{out}"
    );
    let posts = w.web.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].body, posts[1].body, "a retry sends the same bytes");
    let (code, out, _) = tls_report(&w.config, &["--day", day, "--send"]);
    assert_eq!(code, 0);
    assert!(out.contains("sent before"), "{out}");
    assert_eq!(w.web.posts().len(), 2);
}

#[test]
fn a_relay_that_does_not_answer_is_a_failed_mailto_delivery() {
    let w = offline("tls-report-relay", "mailto:tlsrpt@rpt.test", dead_addr());
    let day = "2026-11-30";
    write_results(
        &w.dir.join("state"),
        "mx1.test",
        day,
        &[foreign_result(day, "partner.test", "success", "a")],
    );
    let (code, out, err) = tls_report(&w.config, &["--day", day, "--send"]);
    assert_eq!(code, 1, "stdout: {out} stderr: {err}");
    assert!(
        out.contains("mailto:tlsrpt@rpt.test: FAILED: relay"),
        "{out}"
    );
    let ledger = ledger_text(&w.dir.join("state"));
    assert!(ledger.contains("\"result\":\"failed\""), "{ledger}");
}

/// A report endpoint that takes the connection and never answers: the attempt ends at its
/// bound (60 s), is recorded as failed, and the run exits 1; nothing hangs.
#[test]
fn an_endpoint_that_never_answers_is_a_failed_delivery_at_the_bound() {
    let silent_ip = unique_ip();
    // Bound and listening but never accepting: the kernel completes the TCP handshake, nobody
    // ever speaks TLS.
    let _silent = std::net::TcpListener::bind((silent_ip, 443)).expect("bind the silent endpoint");
    let w = offline_in(
        "tls-report-silent",
        "https://silent.rpt.test/report",
        dead_addr(),
        "",
        |zone| zone.a("silent.rpt.test", silent_ip),
    );
    let day = "2026-11-30";
    write_results(
        &w.dir.join("state"),
        "mx1.test",
        day,
        &[foreign_result(day, "partner.test", "success", "a")],
    );
    let (code, out, err) = tls_report(&w.config, &["--day", day, "--send"]);
    assert_eq!(code, 1, "stdout: {out} stderr: {err}");
    assert!(
        out.contains("https://silent.rpt.test/report: FAILED"),
        "{out}"
    );
    let ledger = ledger_text(&w.dir.join("state"));
    assert!(ledger.contains("\"result\":\"failed\""), "{ledger}");
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let w = offline("tls-report-usage", "mailto:tlsrpt@rpt.test", dead_addr());
    for bad in ["2026-13-01", "yesterday", "2026-02-30"] {
        let (code, _, err) = tls_report(&w.config, &["--day", bad]);
        assert_eq!(code, 2, "--day {bad}: {err}");
        assert!(err.contains("YYYY-MM-DD"), "{err}");
    }
    let without = w.dir.join("without.toml");
    let text = std::fs::read_to_string(&w.config).unwrap();
    let text = text.split("[tls_reporting]").next().unwrap().to_string();
    std::fs::write(&without, text).unwrap();
    let (code, _, err) = tls_report(&without, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no [tls_reporting] table"), "{err}");
    let bad_from = w.dir.join("bad-from.toml");
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("tlsrpt-noreply@example.org", "not a mailbox");
    std::fs::write(&bad_from, text).unwrap();
    let (code, _, err) = tls_report(&bad_from, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tls_reporting.from"), "{err}");
    // No results that day: nothing to do is a success.
    let (code, out, err) = tls_report(&w.config, &["--day", "2020-01-01", "--send"]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.contains("0 policy domains"), "{out}");
}

#[test]
fn only_with_failures_reports_only_days_with_a_failure() {
    let w = offline_with(
        "tls-report-failures-only",
        "https://tlsrpt.rpt.test/report",
        dead_addr(),
        "only_with_failures = true\n",
    );
    w.web
        .set_route("tlsrpt.rpt.test", "/report", Response::status(201));
    write_results(
        &w.dir.join("state"),
        "mx1.test",
        "2026-11-29",
        &[foreign_result("2026-11-29", "partner.test", "success", "a")],
    );
    write_results(
        &w.dir.join("state"),
        "mx1.test",
        "2026-11-30",
        &[foreign_result(
            "2026-11-30",
            "partner.test",
            "certificate-not-trusted",
            "b",
        )],
    );
    let (code, out, err) = tls_report(&w.config, &["--day", "2026-11-29", "--send"]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(
        out.contains("no failure: no report (only_with_failures)"),
        "{out}"
    );
    assert!(report_files(&w.dir.join("state")).is_empty());
    let (code, out, err) = tls_report(&w.config, &["--day", "2026-11-30", "--send"]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.contains("sent (HTTP 201)"), "{out}");
    assert_eq!(w.web.posts().len(), 1);
}

#[test]
fn a_destination_failing_day_after_day_is_suppressed() {
    let w = offline_with(
        "tls-report-suppressed",
        "https://tlsrpt.rpt.test/report",
        dead_addr(),
        "suppress_after_days = 3\n",
    );
    let state = w.dir.join("state");
    // Three earlier report days, each of whose attempts failed.
    let ledger = state.join("reports/ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    for (i, begin) in [1795737600, 1795824000, 1795910400].iter().enumerate() {
        let name = format!(
            "example.org!partner.test!{begin}!{}!old{i}.json.gz.jsonl",
            begin + 86399
        );
        let line = r#"{"time":"2026-11-27T01:00:00Z","node":"mx1.test","rua":"https://tlsrpt.rpt.test/report","result":"failed","detail":"the receiver answered HTTP 500"}"#;
        std::fs::write(ledger.join(name), format!("{line}\n{line}\n")).unwrap();
    }
    let day = "2026-11-30";
    write_results(
        &state,
        "mx1.test",
        day,
        &[foreign_result(
            day,
            "partner.test",
            "certificate-expired",
            "a",
        )],
    );
    let (code, out, err) = tls_report(&w.config, &["--day", day, "--send"]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(
        out.contains("https://tlsrpt.rpt.test/report: suppressed: every attempt failed on the last 3 report days"),
        "{out}"
    );
    assert!(w.web.posts().is_empty());
}

/// Point 2's schedule: the running proxy delivers the last day's reports by itself (here at
/// once: `send_spread = "0s"` and a start after midnight catch up), each exactly once however
/// many nodes share the state directory and however often they restart.
#[test]
fn running_nodes_deliver_yesterdays_reports_once_across_nodes_and_restarts() {
    let dir = TempDir::new("tls-report-schedule");
    let ca = Ca::new(dir.path(), "test-ca");
    let web = PolicyHost::builder(&ca).host("tlsrpt.rpt.test").start();
    let rpt_ip = unique_ip();
    let dns = Dns::start(
        Zone::default()
            .mx_at("rpt.test", "mx.rpt.test", rpt_ip)
            .a("tlsrpt.rpt.test", web.ip)
            .txt("_smtp._tls.partner.test", &format!("v=TLSRPTv1; rua={RUA}")),
    );
    let rpt = Postfix::mx(dir.path(), "rpt", rpt_ip, &["rpt.test"], None);
    // The nodes' relay hands mailed reports straight to the reporting domain's MX.
    let relay = Postfix::start(dir.path(), "relay", Role::relay_to(rpt.addr));
    let state = dir.join("state");
    let yesterday = (time::OffsetDateTime::now_utc()
        .date()
        .previous_day()
        .unwrap())
    .to_string();
    write_results(
        &state,
        "mx2.test",
        &yesterday,
        &[
            foreign_result(&yesterday, "partner.test", "success", "a"),
            foreign_result(&yesterday, "partner.test", "certificate-expired", "b"),
        ],
    );
    let node = |name: &str| {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let text = format!(
            "state_directory = {:?}\n{}send_spread = \"0s\"\n",
            state.display().to_string(),
            config_as(name, dns.addr, &ca, unique_addr(10025), relay.addr)
        )
        .replacen(
            "[resolver]",
            &format!("[admin]\nlisten = \"{}:0\"\n[resolver]", unique_ip()),
            1,
        );
        Proxy::start_text(&node_dir, &text)
    };
    let done = |proxy: &Proxy| proxy.wait_event("tls_reports_run", &[("day", yesterday.as_str())]);
    let (one, two) = (node("mx1.test"), node("mx2.test"));
    let runs = [done(&one), done(&two)];
    assert!(
        runs.iter()
            .any(|r| r["complete"] == "true" && r["sent"] == "2"),
        "{runs:?}"
    );
    let posts = web.posts();
    assert_eq!(posts.len(), 1, "{runs:?}");
    // The contract's counter, across both nodes: each destination once, nothing failed.
    let sent = |transport: &str, result: &str| {
        [&one, &two]
            .iter()
            .map(|p| {
                metric_sum(
                    &p.metrics(),
                    "starttls_proxy_tls_reports_total",
                    &[("transport", transport), ("result", result)],
                )
            })
            .sum::<f64>()
    };
    assert_eq!(sent("https", "sent"), 1.0);
    assert_eq!(sent("mailto", "sent"), 1.0);
    assert_eq!(sent("https", "failed") + sent("mailto", "failed"), 0.0);
    assert_eq!(report_files(&state).len(), 1);
    let mail = rpt.wait_delivered(1);
    assert_eq!(
        relay
            .maillog()
            .matches("from=<tlsrpt-noreply@example.org>")
            .count(),
        1,
        "{}",
        relay.maillog()
    );
    assert_eq!(header(&mail[0], "TLS-Report-Domain"), Some("partner.test"));
    drop((one, two));
    // A restart finds the day delivered.
    let again = node("mx1.test");
    let run = done(&again);
    assert_eq!(run["complete"], "true", "{run:?}");
    assert_eq!(run["sent"], "0", "{run:?}");
    assert_eq!(web.posts().len(), 1);
    let ledger = std::fs::read_dir(state.join("reports/ledger"))
        .unwrap()
        .count();
    assert_eq!(ledger, 1);
}
