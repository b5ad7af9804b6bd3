//! Issue 2, point 8: SIGTERM/SIGINT drain sessions up to `shutdown_grace` and exit 0; SIGHUP
//! reloads configuration and certificate without dropping sessions; an invalid new
//! configuration is logged and the old one keeps serving.

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .as_ref()
        .to_vec()
}

/// A TLS session that has reached DATA (the proxy splices from there on).
fn session_in_data(proxy: &Proxy, ca: &Ca) -> SmtpClient {
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.ehlo_tls(&ca.path, "mx.test");
    client.open_data("a@partner.example", "u@example.org");
    client.send(b"Subject: in flight\r\n\r\nfirst part\r\n");
    client
}

#[test]
fn sigterm_drains_sessions_then_exits_0() {
    let (dir, ca, leaf) = setup("sigterm");
    let sink = SmtpSink::start(dir.path(), &[]);
    let mut proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .shutdown_grace("15s")
        .start();
    assert_eq!(proxy.healthz().0, 200);

    // A: idle in the plaintext dialogue. B: mid-message, inside TLS.
    let (mut a, _) = SmtpClient::greeted(proxy.addr());
    assert_eq!(a.cmd("EHLO client.test").code, 250);
    let mut b = session_in_data(&proxy, &ca);

    proxy.signal("TERM");
    proxy.wait_log(|l| l.contains("event=draining"), "event=draining");

    // A is told to come back later.
    a.expect_closed_after(421, "4.3.2");

    // Load balancers are told to move away while the drain lasts.
    let (status, body) = proxy.healthz();
    assert_eq!(status, 503, "{body}");

    // No new session is greeted.
    if let Ok(mut late) = std::net::TcpStream::connect(proxy.addr()) {
        use std::io::Read;
        late.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0u8; 64];
        let n = late.read(&mut buf).unwrap_or(0);
        assert!(
            !String::from_utf8_lossy(&buf[..n]).starts_with("220"),
            "a new session was greeted while draining"
        );
    }
    assert!(
        proxy.is_running(),
        "exited before the session in flight ended"
    );

    // B finishes its message: the backend's own 250, then QUIT.
    b.send(b"second part\r\n.\r\n");
    let r = b.reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(b.cmd("QUIT").code, 221);
    drop(b);
    sink.wait_messages(1);

    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", proxy.log_text());
    let stopped = proxy.wait_log(|l| l.contains("event=stopped"), "event=stopped");
    assert!(stopped.contains("sessions_cut=0"), "{stopped}");
}

#[test]
fn sigterm_cuts_sessions_after_shutdown_grace_and_exits_0() {
    let (dir, ca, leaf) = setup("sigterm-grace");
    let sink = SmtpSink::start(dir.path(), &[]);
    let mut proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .shutdown_grace("1s")
        .start();
    let mut stuck = session_in_data(&proxy, &ca);
    proxy.signal("TERM");
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", proxy.log_text());
    let stopped = proxy.wait_log(|l| l.contains("event=stopped"), "event=stopped");
    assert!(stopped.contains("sessions_cut=1"), "{stopped}");
    // The cut session never got a 250 for its unfinished message.
    let replies = stuck.expect_closed();
    assert!(replies.iter().all(|r| r.code != 250), "{replies:?}");
    assert!(sink.messages().is_empty());
}

#[test]
fn sigint_stops_an_idle_proxy_with_exit_0() {
    let (dir, _ca, leaf) = setup("sigint");
    let mut proxy = ProxyBuilder::new(dir.path(), &leaf, dead_addr()).start();
    proxy.signal("INT");
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", proxy.log_text());
}

#[test]
fn sighup_reloads_certificate_and_config_without_dropping_sessions() {
    let dir = TempDir::new("sighup");
    let ca = Ca::new(dir.path(), "test-ca");
    let old = ca.leaf_with("mx", &["mx.test"], common::pki::KeyKind::EcdsaPkcs8, 30);
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &old, sink.addr).start();
    let expiry = |p: &Proxy| {
        metric(
            &p.metrics(),
            "starttls_proxy_certificate_expiry_timestamp_seconds",
            &[],
        )
        .expect("certificate expiry gauge")
    };
    assert_eq!(expiry(&proxy), old.not_after_unix as f64);

    // A session in the middle of a transaction when the reload happens.
    let mut open = session_in_data(&proxy, &ca);
    assert_eq!(open.peer_leaf().unwrap(), der(&old.cert_pem));
    // One more that is still in the dialogue (plaintext, no enforcement yet).
    let (mut plain, _) = SmtpClient::greeted(proxy.addr());
    plain.cmd("EHLO client.test");

    // New certificate and key at the same paths; require_tls switched on.
    let new = ca.leaf_with("mx", &["mx.test"], common::pki::KeyKind::RsaPkcs1, 90);
    let text = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        text.replace("require_tls = false", "require_tls = true"),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_log(|l| l.contains("event=reloaded"), "event=reloaded");

    // New sessions: the new certificate and the new policy.
    let (mut fresh, _) = SmtpClient::greeted(proxy.addr());
    fresh.cmd("EHLO client.test");
    fresh
        .cmd("MAIL FROM:<a@partner.example>")
        .assert(530, "5.7.0");
    fresh.starttls(&ca.path, "mx.test");
    assert_eq!(fresh.peer_leaf().unwrap(), der(&new.cert_pem));
    assert_eq!(expiry(&proxy), new.not_after_unix as f64);

    // The sessions from before the reload carry on under the old configuration.
    open.send(b"second part\r\n.\r\n");
    let r = open.reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(open.cmd("QUIT").code, 221);
    drop(open);
    plain
        .cmd("MAIL FROM:<a@partner.example>")
        .assert(250, "2.1.0");
    sink.wait_messages(1);
}

#[test]
fn sighup_with_invalid_config_keeps_the_old_one_serving() {
    let (dir, ca, leaf) = setup("sighup-invalid");
    let sink = SmtpSink::start(dir.path(), &[]);
    let mut proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .require_tls()
        .start();
    let mut open = session_in_data(&proxy, &ca);
    let good = std::fs::read_to_string(&proxy.config).unwrap();

    // 1. A syntax/type error in the TOML.
    std::fs::write(
        &proxy.config,
        format!("{good}\n[limits]\nidle_timeout = \"forever\"\n"),
    )
    .unwrap();
    proxy.signal("HUP");
    let failed = proxy.wait_log(|l| l.contains("event=reload_failed"), "event=reload_failed");
    assert!(failed.contains("idle_timeout"), "{failed}");
    assert!(
        failed.contains(&format!("{}:", proxy.config.display())),
        "the error must name the file: {failed}"
    );

    // 2. A certificate whose key does not match.
    std::fs::write(&proxy.config, &good).unwrap();
    let other = ca.leaf("other", &["other.test"]);
    std::fs::copy(&other.cert, &leaf.cert).unwrap();
    proxy.signal("HUP");
    proxy.wait_log_count(
        |l| l.contains("event=reload_failed"),
        2,
        "a second event=reload_failed",
    );

    // Still serving, with the old certificate and the old policy.
    assert!(proxy.is_running());
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let ehlo = client.cmd("EHLO client.test");
    assert!(ehlo.has_extension("STARTTLS"), "{ehlo:?}");
    client
        .cmd("MAIL FROM:<a@partner.example>")
        .assert(530, "5.7.0");
    client.starttls(&ca.path, "mx.test");
    assert_eq!(client.peer_leaf().unwrap(), der(&leaf.cert_pem));
    // The session from before both reloads completes.
    open.send(b"second part\r\n.\r\n");
    assert_eq!(open.reply().code, 250);
    sink.wait_messages(1);
    assert!(proxy.is_running());
}

/// `event=ready` is the readiness signal: a SIGHUP sent right after it must reload, not kill
/// (SIGHUP's default action terminates the process).
#[test]
fn sighup_right_after_ready_reloads_instead_of_killing() {
    let (dir, _ca, leaf) = setup("sighup-at-ready");
    let mut proxy = ProxyBuilder::new(dir.path(), &leaf, dead_addr()).start();
    proxy.signal("HUP");
    proxy.wait_log(|l| l.contains("event=reloaded"), "event=reloaded");
    assert!(proxy.is_running(), "{}", proxy.log_text());
}

/// `sha256sum FILE`'s hash (coreutils: a real peer computes what the proxy must log).
fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

/// Issue 15, item 4 (change control): every configuration loaded is logged as
/// `event=config_loaded sha256=<hash of the file>`, reloads are counted by result, the loaded
/// timestamp moves only when a configuration is applied, and a reload to a configuration
/// without listeners fails with the old one still serving.
#[test]
fn reloads_are_counted_and_every_loaded_configuration_is_logged_with_its_sha256() {
    let (dir, _ca, leaf) = setup("reload-metrics");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    const RELOADS: &str = "starttls_proxy_config_reloads_total";
    const LOADED: &str = "starttls_proxy_config_loaded_timestamp_seconds";
    let first = proxy.wait_event("config_loaded", &[]);
    assert_eq!(first["sha256"], sha256sum(&proxy.config), "{first:?}");
    let m = proxy.metrics();
    assert_metric(&m, RELOADS, &[("result", "ok")], 0.0);
    assert_metric(&m, RELOADS, &[("result", "failed")], 0.0);
    let started = metric(&m, LOADED, &[]).expect("loaded timestamp");
    assert!(started > 1.7e9, "{m}");

    // A good reload of an edited file.
    let good = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(&proxy.config, format!("{good}# edited\n")).unwrap();
    proxy.signal("HUP");
    proxy.wait_log(|l| l.contains("event=reloaded"), "event=reloaded");
    let loaded = proxy.events("config_loaded");
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert_eq!(loaded[1]["sha256"], sha256sum(&proxy.config));
    assert_ne!(loaded[1]["sha256"], first["sha256"]);
    let m = proxy.metrics();
    assert_metric(&m, RELOADS, &[("result", "ok")], 1.0);
    assert_metric(&m, RELOADS, &[("result", "failed")], 0.0);
    let reloaded = metric(&m, LOADED, &[]).expect("loaded timestamp");
    assert!(reloaded >= started, "{m}");

    // A configuration without listeners: refused, counted, the old one keeps serving.
    let tls_only = &good[..good.find("[[inbound]]").unwrap()];
    std::fs::write(&proxy.config, tls_only).unwrap();
    proxy.signal("HUP");
    let failed = proxy.wait_log(|l| l.contains("event=reload_failed"), "event=reload_failed");
    assert!(failed.contains("no listener is configured"), "{failed}");
    let m = proxy.metrics();
    assert_metric(&m, RELOADS, &[("result", "ok")], 1.0);
    assert_metric(&m, RELOADS, &[("result", "failed")], 1.0);
    assert_metric(&m, LOADED, &[], reloaded);
    assert_eq!(proxy.events("config_loaded").len(), 2);
    let (mut client, greeting) = SmtpClient::greeted(proxy.addr());
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(client.cmd("QUIT").code, 221);
}

/// Issue 15, item 4: `backend = "localhost:PORT"` is resolved at start and sessions reach it.
#[test]
fn backend_by_host_name_is_resolved_at_start() {
    use std::io::{BufRead, BufReader, Write};
    let (dir, _ca, leaf) = setup("backend-localhost");
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = backend.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.write_all(b"220 named.backend ESMTP\r\n");
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let quit = line.to_ascii_uppercase().starts_with("QUIT");
                line.clear();
                let _ = stream.write_all(if quit {
                    b"221 2.0.0 Bye\r\n"
                } else {
                    b"250 ok\r\n"
                });
                if quit {
                    break;
                }
            }
        }
    });
    let placeholder = dead_addr();
    let text = ProxyBuilder::new(dir.path(), &leaf, placeholder)
        .config_text()
        .replace(&placeholder.to_string(), &format!("localhost:{port}"));
    let proxy = Proxy::start_text(dir.path(), &text);
    let (mut client, greeting) = SmtpClient::greeted(proxy.addr());
    assert!(greeting.text().contains("named.backend"), "{greeting:?}");
    assert_eq!(client.cmd("QUIT").code, 221);
    drop(client);
    let session = proxy.wait_session_outcome("ok");
    assert_eq!(
        session["backend"],
        format!("127.0.0.1:{port}"),
        "{session:?}"
    );
}
