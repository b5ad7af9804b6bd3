//! Issue 2, point 9: `/metrics` and `/healthz` on `admin.listen` with every inbound metric of
//! the contract, and one log line per session with the contract's fields (text and JSON).

mod common;

use common::postfix::{Role, MAIL_DOMAIN};
use common::proxy::json_fields;
use common::*;

const INBOUND: [(&str, &str); 2] = [("listener", "mx"), ("direction", "inbound")];

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = INBOUND.to_vec();
    l.extend_from_slice(extra);
    l
}

#[test]
fn healthz_answers_ok() {
    let (dir, _ca, leaf) = setup("healthz");
    let proxy = ProxyBuilder::new(dir.path(), &leaf, dead_addr()).start();
    let (status, body) = proxy.healthz();
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "ok");
    let (status, _) = http_get(proxy.admin.unwrap(), "/nonexistent");
    assert_eq!(status, 404);
}

#[test]
fn metrics_cover_every_inbound_metric_of_the_contract() {
    let (dir, _ca, leaf) = setup("metrics");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_recipients(&["bank.example"])
        .start();

    // Before any session, the listener's series exist.
    let before = proxy.metrics();
    assert_metric(&before, "starttls_proxy_connections_total", &INBOUND, 0.0);

    let to = format!("u@{MAIL_DOMAIN}");
    // 1: TLS session delivering a message.
    let tls = swaks(
        proxy.addr(),
        &["--tls", "--from", "a@partner.example", "--to", &to],
    );
    tls.assert_success();
    // 2: plaintext session delivering a message.
    let plain = swaks(proxy.addr(), &["--from", "a@partner.example", "--to", &to]);
    plain.assert_success();
    // 3: a policy refusal.
    let refused = swaks(
        proxy.addr(),
        &["--from", "a@partner.example", "--to", "ceo@bank.example"],
    );
    refused.assert_stdout_contains("450 4.7.1");
    // 4: a failed handshake.
    let (mut garbage, _) = SmtpClient::greeted(proxy.addr());
    garbage.cmd("EHLO x");
    garbage.cmd("STARTTLS").assert(220, "2.0.0");
    let _ = garbage.try_send(b"not a client hello\r\n");
    garbage.expect_closed();
    drop(garbage);
    backend.wait_delivered(2);
    proxy.wait_sessions(4);

    let m = proxy.metrics();
    let get = |name: &str, extra: &[(&str, &str)]| {
        metric(&m, name, &with(extra)).unwrap_or_else(|| panic!("no {name} {extra:?} in:\n{m}"))
    };
    assert_eq!(get("starttls_proxy_connections_total", &[]), 4.0);
    assert_eq!(get("starttls_proxy_connections_active", &[]), 0.0);
    assert_eq!(get("starttls_proxy_sessions_total", &[("tls", "yes")]), 1.0);
    assert_eq!(get("starttls_proxy_sessions_total", &[("tls", "no")]), 3.0);
    assert_eq!(
        get(
            "starttls_proxy_tls_handshakes_total",
            &[("version", "TLSv1.3"), ("cipher", "TLS_AES_256_GCM_SHA384")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "starttls_proxy_tls_handshake_failures_total", &INBOUND),
        1.0,
        "{m}"
    );
    assert_eq!(
        get("starttls_proxy_tls_handshake_duration_seconds_count", &[]),
        2.0,
        "one observation per handshake attempt"
    );
    assert!(
        m.contains("starttls_proxy_tls_handshake_duration_seconds_bucket{"),
        "histogram buckets expected:\n{m}"
    );
    assert_eq!(
        get(
            "starttls_proxy_policy_rejections_total",
            &[("reason", "recipient_requires_tls")]
        ),
        1.0
    );
    assert!(get("starttls_proxy_bytes_total", &[]) > 1000.0, "{m}");
    let expiry = metric(
        &m,
        "starttls_proxy_certificate_expiry_timestamp_seconds",
        &[],
    )
    .unwrap_or_else(|| panic!("no expiry gauge:\n{m}"));
    assert_eq!(expiry, leaf.not_after_unix as f64);
    assert!(
        m.contains("# TYPE starttls_proxy_tls_handshake_duration_seconds histogram"),
        "{m}"
    );
    assert!(
        m.contains("# TYPE starttls_proxy_connections_active gauge"),
        "{m}"
    );
    assert!(
        m.contains("# TYPE starttls_proxy_sessions_total counter"),
        "{m}"
    );
}

#[test]
fn active_connections_gauge_follows_open_sessions() {
    let (dir, ca, leaf) = setup("active");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut a, _) = SmtpClient::greeted(proxy.addr());
    let (mut b, _) = SmtpClient::greeted(proxy.addr());
    b.cmd("EHLO x");
    b.starttls(&ca.path, "mx.test");
    let m = proxy.metrics();
    assert_metric(&m, "starttls_proxy_connections_active", &INBOUND, 2.0);
    assert_eq!(a.cmd("QUIT").code, 221);
    drop(a);
    drop(b);
    proxy.wait_sessions(2);
    let m = proxy.metrics();
    assert_metric(&m, "starttls_proxy_connections_active", &INBOUND, 0.0);
}

const SESSION_FIELDS: [&str; 15] = [
    "id",
    "listener",
    "direction",
    "peer",
    "backend",
    "tls",
    "version",
    "cipher",
    "sni",
    "verdict",
    "outcome",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "level",
];

#[test]
fn one_session_log_line_per_session_with_contract_fields() {
    let (dir, ca, leaf) = setup("session-log");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let ca_path = ca.path.display().to_string();
    let tls = openssl_s_client(
        proxy.addr(),
        &["-CAfile", &ca_path, "-servername", "mx.test"],
        "EHLO openssl.test\nQUIT\n",
    );
    assert!(tls.stdout.contains("221"), "{}", tls.all());
    let plain = swaks(
        proxy.addr(),
        &["--from", "a@partner.example", "--to", "u@example.org"],
    );
    plain.assert_success();
    let (mut aborted, _) = SmtpClient::greeted(proxy.addr());
    aborted.cmd("EHLO x");
    drop(aborted);

    let sessions = proxy.wait_sessions(3);
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    for s in &sessions {
        for field in SESSION_FIELDS {
            assert!(s.contains_key(field), "session line lacks {field}: {s:?}");
        }
        assert_eq!(s["listener"], "mx");
        assert_eq!(s["direction"], "inbound");
        assert_eq!(s["backend"], sink.addr.to_string());
        assert!(s["peer"].starts_with("127."), "{s:?}");
        assert!(s["duration_ms"].parse::<u64>().is_ok(), "{s:?}");
        assert!(s["bytes_in"].parse::<u64>().unwrap() > 0, "{s:?}");
        assert!(s["bytes_out"].parse::<u64>().unwrap() > 0, "{s:?}");
    }
    let mut ids: Vec<&str> = sessions.iter().map(|s| s["id"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "session ids must be unique: {sessions:?}");

    let tls_line = sessions
        .iter()
        .find(|s| s["tls"] == "yes")
        .unwrap_or_else(|| panic!("no TLS session line: {sessions:?}"));
    assert_eq!(tls_line["version"], "TLSv1.3");
    assert_eq!(tls_line["cipher"], "TLS_AES_256_GCM_SHA384");
    assert_eq!(tls_line["sni"], "mx.test");
    assert_eq!(tls_line["outcome"], "ok");
    assert_eq!(
        sessions.iter().filter(|s| s["tls"] == "no").count(),
        2,
        "{sessions:?}"
    );
}

#[test]
fn json_log_format_gives_one_json_object_per_line() {
    let (dir, _ca, leaf) = setup("json-log");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .json_logs()
        .start();
    let run = swaks(
        proxy.addr(),
        &[
            "--tls",
            "--tls-sni",
            "mx.test",
            "--from",
            "a@partner.example",
            "--to",
            "u@example.org",
        ],
    );
    run.assert_success();
    let line = proxy.wait_log(|l| l.contains("\"event\":\"session\""), "JSON session line");
    for l in proxy.lines() {
        assert!(
            l.starts_with('{') && l.ends_with('}'),
            "not a JSON object line: {l}"
        );
    }
    let f = json_fields(&line);
    for field in SESSION_FIELDS {
        assert!(
            f.contains_key(field),
            "JSON session line lacks {field}: {line}"
        );
    }
    assert_eq!(f["tls"], "yes");
    assert_eq!(f["sni"], "mx.test");
    assert_eq!(f["version"], "TLSv1.3");
}
