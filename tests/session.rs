//! Issue 2, point 4: the inbound session with real peers. Greeting relayed, EHLO rewritten,
//! STARTTLS answered by the proxy and never forwarded, pipelined bytes discarded, the post-TLS
//! EHLO forwarded with STARTTLS stripped, then the streams relayed unchanged.

mod common;

use common::backend::EhloMode;
use common::peers::s_client_session;
use common::postfix::{Role, MAIL_DOMAIN};
use common::*;
use rustls::pki_types::pem::PemObject;

#[test]
fn swaks_delivers_over_starttls_to_postfix_backend() {
    let (dir, _ca, leaf) = setup("swaks-postfix");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();

    let run = swaks(
        proxy.addr(),
        &[
            "--tls",
            "--from",
            "sender@partner.example",
            "--to",
            &format!("user@{MAIL_DOMAIN}"),
            "--header",
            "Subject: proxied over STARTTLS",
            "--body",
            "line one\nline two\n",
        ],
    );
    assert_eq!(run.code, 0, "swaks failed:\n{}", run.all());
    // swaks marks replies read inside TLS with `<~`.
    assert!(
        run.stdout.contains("<~  250 2.0.0 Ok: queued as"),
        "no 250 from Postfix inside TLS:\n{}",
        run.stdout
    );
    let mail = backend.wait_delivered(1);
    assert!(
        mail[0].contains("Subject: proxied over STARTTLS"),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains("line one\nline two"), "{}", mail[0]);
    assert!(
        mail[0].contains("Return-Path: <sender@partner.example>"),
        "{}",
        mail[0]
    );

    let sessions = proxy.wait_sessions(1);
    let s = &sessions[0];
    assert_eq!(s["tls"], "yes", "{s:?}");
    assert_eq!(s["version"], "TLSv1.3", "{s:?}");
    assert_eq!(s["outcome"], "ok", "{s:?}");
}

#[test]
fn greeting_is_the_backends_own() {
    let (dir, _ca, leaf) = setup("greeting");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, greeting) = SmtpClient::greeted(proxy.addr());
    assert!(
        greeting.text().contains("legacy-banner"),
        "greeting not relayed from Postfix: {greeting:?}"
    );
    client.cmd("QUIT").assert(221, "2.0.0");
}

#[test]
fn ehlo_offers_starttls_in_front_of_plaintext_postfix() {
    let (dir, _ca, leaf) = setup("ehlo-plain-postfix");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    // Postfix itself does not offer STARTTLS...
    let (mut direct, _) = SmtpClient::greeted(backend.addr);
    let direct_ehlo = direct.cmd("EHLO client.test");
    assert!(!direct_ehlo.has_extension("STARTTLS"), "{direct_ehlo:?}");
    // ...the proxy in front of it does, and keeps Postfix's other extensions.
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let ehlo = client.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.has_extension("STARTTLS"), "{ehlo:?}");
    assert!(ehlo.has_extension("PIPELINING"), "{ehlo:?}");
    assert!(ehlo.lines[0].starts_with("legacy.postfix.test"), "{ehlo:?}");
}

#[test]
fn backends_own_starttls_is_stripped_and_replaced() {
    let (dir, ca, leaf) = setup("strip-backend-starttls");
    let backend_leaf = ca.leaf("backend", &["legacy.postfix.test"]);
    let backend = Postfix::start(
        dir.path(),
        "legacy",
        Role::Backend {
            tls: Some(&backend_leaf),
        },
    );
    // The backend really offers STARTTLS.
    let (mut direct, _) = SmtpClient::greeted(backend.addr);
    assert!(direct.cmd("EHLO client.test").has_extension("STARTTLS"));

    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let ehlo = client.cmd("EHLO client.test");
    let offers = ehlo
        .lines
        .iter()
        .skip(1)
        .filter(|l| l.eq_ignore_ascii_case("STARTTLS"))
        .count();
    assert_eq!(offers, 1, "STARTTLS must be offered exactly once: {ehlo:?}");
    client.starttls(&ca.path, "mx.test");
    // The certificate is the proxy's, not the backend's.
    assert_eq!(
        client.peer_leaf().unwrap(),
        rustls::pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
            .unwrap()
            .as_ref()
    );
    let ehlo = client.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(
        !ehlo.has_extension("STARTTLS"),
        "STARTTLS offered inside TLS: {ehlo:?}"
    );
    assert!(ehlo.lines[0].starts_with("legacy.postfix.test"), "{ehlo:?}");
    let reply = client
        .send_mail(
            "a@partner.example",
            &format!("u@{MAIL_DOMAIN}"),
            "Subject: t\r\n\r\nbody\r\n",
        )
        .expect("final reply");
    reply.assert(250, "2.0.0");
    backend.wait_delivered(1);
    // Postfix saw a plaintext session from the proxy: it never negotiated TLS itself.
    let log = backend.maillog();
    assert!(!log.contains("TLS connection established"), "{log}");
}

#[test]
fn helo_only_smtp_sink_backend_still_gets_starttls_offered() {
    let (dir, ca, leaf) = setup("helo-only-sink");
    // smtp-sink -e: EHLO disabled, as in an MTA from before ESMTP.
    let sink = SmtpSink::start(dir.path(), &["-e"]);
    let (mut direct, _) = SmtpClient::greeted(sink.addr);
    assert!(direct.cmd("EHLO client.test").code >= 500);
    drop(direct);

    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let ehlo = client.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "synthesised EHLO reply expected: {ehlo:?}");
    assert!(ehlo.has_extension("STARTTLS"), "{ehlo:?}");
    client.starttls(&ca.path, "mx.test");
    let ehlo = client.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(!ehlo.has_extension("STARTTLS"), "{ehlo:?}");
    let reply = client
        .send_mail(
            "a@partner.example",
            "u@example.org",
            "Subject: helo only\r\n\r\nhi\r\n",
        )
        .expect("final reply");
    assert_eq!(reply.code, 250, "{reply:?}");
    let m = sink.wait_messages(1);
    assert!(m[0].contains("Subject: helo only"), "{}", m[0]);
}

#[test]
fn helo_only_fake_backend_gets_helo_and_client_gets_starttls() {
    let (dir, ca, leaf) = setup("helo-only-fake");
    let backend = FakeBackend::start(EhloMode::Unsupported);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let ehlo = client.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.has_extension("STARTTLS"), "{ehlo:?}");
    client.starttls(&ca.path, "mx.test");
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    client.cmd("QUIT").assert(221, "2.0.0");
    let lines = backend.lines();
    assert_eq!(
        lines,
        vec![
            "EHLO client.test",
            "HELO client.test",
            "EHLO client.test",
            "HELO client.test",
            "QUIT"
        ],
        "backend saw: {lines:?}"
    );
}

#[test]
fn starttls_discards_pipelined_rset() {
    let (dir, ca, leaf) = setup("pipelined-rset");
    let backend = FakeBackend::start(EhloMode::Extensions(vec!["PIPELINING".into()]));
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    // One write: the RSET is a plaintext command injected ahead of the TLS session.
    client.send(b"STARTTLS\r\nRSET\r\n");
    let r = client.reply();
    r.assert(220, "2.0.0");
    assert!(
        client.buffered().is_empty(),
        "plaintext after the 220: {:?}",
        String::from_utf8_lossy(client.buffered())
    );
    client
        .handshake(&ca.path, "mx.test", None)
        .expect("handshake");
    // The first reply inside TLS must answer our EHLO, not the injected RSET.
    let ehlo = client.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(
        ehlo.lines.len() > 1 && ehlo.lines[0].starts_with("fake.backend.test"),
        "first reply inside TLS is not the EHLO reply (RSET answered?): {ehlo:?}"
    );
    let noop = client.cmd("NOOP");
    noop.assert(250, "2.0.0");
    client.cmd("QUIT").assert(221, "2.0.0");
    let lines = backend.lines();
    assert!(
        !lines.iter().any(|l| l.eq_ignore_ascii_case("RSET")),
        "the pipelined RSET reached the backend: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("STARTTLS")),
        "STARTTLS was forwarded to the backend: {lines:?}"
    );
    proxy.wait_sessions(1);
    assert!(
        proxy.log_text().contains("event=pipelined_after_starttls"),
        "discarded bytes not logged"
    );
}

#[test]
fn starttls_discards_pipelined_commands_in_front_of_postfix() {
    let (dir, ca, leaf) = setup("pipelined-postfix");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    client.send(
        format!("STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<u@{MAIL_DOMAIN}>\r\n")
            .as_bytes(),
    );
    client.reply().assert(220, "2.0.0");
    client
        .handshake(&ca.path, "mx.test", None)
        .expect("handshake");
    let ehlo = client.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.lines.len() > 1, "not an EHLO reply: {ehlo:?}");
    // No transaction was started by the injected MAIL: a DATA now is out of sequence.
    let data = client.cmd("DATA");
    data.assert(503, "5.5.1");
    client.cmd("QUIT").assert(221, "2.0.0");
    // Postfix counts the commands it saw: one mail= would mean the injection got through.
    let line = backend.wait_maillog("disconnect from");
    assert!(!line.contains("mail="), "{line}");
    assert!(!line.contains("rset="), "{line}");
    assert!(!line.contains("starttls="), "{line}");
}

#[test]
fn starttls_twice_is_refused_with_554() {
    let (dir, ca, leaf) = setup("starttls-twice");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.ehlo_tls(&ca.path, "mx.test");
    client.cmd("STARTTLS").assert(554, "5.5.1");
    // The session goes on inside TLS.
    let reply = client
        .send_mail(
            "a@partner.example",
            &format!("u@{MAIL_DOMAIN}"),
            "Subject: after refusal\r\n\r\nx\r\n",
        )
        .expect("final reply");
    reply.assert(250, "2.0.0");
    backend.wait_delivered(1);
}

#[test]
fn starttls_twice_before_ehlo_inside_tls_is_refused_with_554() {
    let (dir, ca, leaf) = setup("starttls-twice-no-ehlo");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.starttls(&ca.path, "mx.test");
    client.cmd("STARTTLS").assert(554, "5.5.1");
}

#[test]
fn starttls_with_arguments_is_refused_with_501() {
    let (dir, ca, leaf) = setup("starttls-args");
    let backend = FakeBackend::start(EhloMode::Extensions(vec![]));
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.cmd("STARTTLS now").assert(501, "5.5.4");
    // Still plaintext and STARTTLS still possible.
    client.starttls(&ca.path, "mx.test");
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    let lines = backend.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("STARTTLS")),
        "{lines:?}"
    );
}

#[test]
fn starttls_after_mail_is_not_answered_with_220() {
    let (dir, _ca, leaf) = setup("starttls-after-mail");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client
        .cmd("MAIL FROM:<a@partner.example>")
        .assert(250, "2.1.0");
    let r = client.cmd("STARTTLS");
    assert!(
        r.code >= 500 && r.code != 554 || r.code == 503,
        "STARTTLS inside a transaction must be refused, got {r:?}"
    );
    assert_ne!(r.code, 220, "{r:?}");
    client.cmd("RSET").assert(250, "2.0.0");
}

#[test]
fn starttls_after_mail_in_inspected_session_gets_503() {
    let (dir, _ca, leaf) = setup("starttls-after-mail-inspected");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_recipients(&["bank.example"])
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client
        .cmd("MAIL FROM:<a@partner.example>")
        .assert(250, "2.1.0");
    client.cmd("STARTTLS").assert(503, "5.5.1");
    client.cmd("RSET").assert(250, "2.0.0");
}

#[test]
fn openssl_s_client_sees_backend_ehlo_without_starttls_inside_tls() {
    let (dir, ca, leaf) = setup("openssl-ehlo");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let ca_path = ca.path.display().to_string();
    let run = openssl_s_client(
        proxy.addr(),
        &[
            "-CAfile",
            &ca_path,
            "-verify_return_error",
            "-servername",
            "mx.test",
            "-verify_hostname",
            "mx.test",
        ],
        "EHLO openssl.test\nQUIT\n",
    );
    assert!(
        run.stdout.contains("Verify return code: 0 (ok)"),
        "{}",
        run.all()
    );
    let (protocol, _) = s_client_session(&run).expect("handshake completed");
    assert_eq!(protocol, "TLSv1.3");
    let after = run
        .stdout
        .split("250 legacy.postfix.test")
        .nth(1)
        .unwrap_or("");
    assert!(
        run.stdout.contains("250-legacy.postfix.test"),
        "no backend EHLO inside TLS:\n{}",
        run.stdout
    );
    assert!(!after.contains("STARTTLS"), "{}", run.stdout);
    let ehlo_inside: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("250-legacy.postfix.test"))
        .take_while(|l| l.starts_with("250"))
        .collect();
    assert!(!ehlo_inside.is_empty(), "{}", run.stdout);
    assert!(
        !ehlo_inside.iter().any(|l| l.contains("STARTTLS")),
        "{ehlo_inside:?}"
    );
    run.assert_stdout_contains("221 2.0.0 Bye");
    let sessions = proxy.wait_sessions(1);
    assert_eq!(sessions[0]["sni"], "mx.test", "{:?}", sessions[0]);
}

#[test]
fn message_bytes_reach_smtp_sink_unchanged() {
    let (dir, ca, leaf) = setup("unchanged");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.ehlo_tls(&ca.path, "mx.test");
    let long_line = "x".repeat(900);
    let body = format!(
        "Subject: bytes\r\nX-Test: 1\r\n\r\n..leading dot stuffed\r\n{long_line}\r\n\tTab and trailing space \r\n\r\nlast\r\n"
    );
    let reply = client
        .send_mail("a@partner.example", "u@example.org", &body)
        .expect("final reply");
    assert_eq!(reply.code, 250, "{reply:?}");
    let m = sink.wait_messages(1);
    assert!(
        m[0].contains("X-Mail-Args: <a@partner.example>"),
        "{}",
        m[0]
    );
    assert!(m[0].contains("X-Rcpt-Args: <u@example.org>"), "{}", m[0]);
    // smtp-sink undoes dot-stuffing and writes LF line ends.
    let expected = body.replace("..leading", ".leading").replace("\r\n", "\n");
    assert!(
        m[0].contains(&expected),
        "message altered:\n{}\nexpected:\n{expected}",
        m[0]
    );
}

#[test]
fn plaintext_session_without_starttls_is_relayed_when_not_enforced() {
    let (dir, _ca, leaf) = setup("plaintext");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let run = swaks(
        proxy.addr(),
        &[
            "--from",
            "a@partner.example",
            "--to",
            &format!("u@{MAIL_DOMAIN}"),
        ],
    );
    run.assert_success();
    backend.wait_delivered(1);
    let s = proxy.wait_sessions(1);
    assert_eq!(s[0]["tls"], "no", "{:?}", s[0]);
    assert_eq!(s[0]["outcome"], "ok", "{:?}", s[0]);
}

#[test]
fn postfix_sender_delivers_through_proxy_with_encrypt_to_postfix_backend() {
    let (dir, ca, leaf) = setup("postfix-to-postfix");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let sender = Postfix::start(
        dir.path(),
        "sender",
        Role::Sender {
            relayhost: proxy.addr(),
            level: "encrypt",
            ca: Some(&ca),
            bind: None,
        },
    );
    let run = swaks(
        sender.addr,
        &[
            "--from",
            "alice@partner.example",
            "--to",
            &format!("bob@{MAIL_DOMAIN}"),
            "--header",
            "Subject: postfix to postfix via the proxy",
        ],
    );
    run.assert_success();
    // Postfix refuses to send in plaintext at level encrypt: delivery proves TLS was used.
    let tls_line = sender.wait_maillog("TLS connection established to");
    assert!(tls_line.contains("Trusted"), "{tls_line}");
    assert!(tls_line.contains("TLSv1.3"), "{tls_line}");
    let sent = sender.wait_maillog("status=sent");
    assert!(sent.contains("250 2.0.0 Ok: queued as"), "{sent}");
    let mail = backend.wait_delivered(1);
    assert!(
        mail[0].contains("Subject: postfix to postfix via the proxy"),
        "{}",
        mail[0]
    );
    let s = proxy.wait_sessions(1);
    assert_eq!(s[0]["tls"], "yes", "{:?}", s[0]);
}
