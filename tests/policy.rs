//! Issue 2, point 5: enforcement before any MAIL/RCPT is passed on in plaintext.
//! `require_tls` → 530 5.7.0; listed sender/recipient domains → 450 4.7.1; each refusal counted
//! in starttls_proxy_policy_rejections_total, and the refused command never reaches the MTA.

mod common;

use common::backend::EhloMode;
use common::postfix::{Role, MAIL_DOMAIN};
use common::*;

const REJECTIONS: &str = "starttls_proxy_policy_rejections_total";

fn rejections(proxy: &Proxy, reason: &str) -> f64 {
    metric_sum(
        &proxy.metrics(),
        REJECTIONS,
        &[
            ("listener", "mx"),
            ("direction", "inbound"),
            ("reason", reason),
        ],
    )
}

#[test]
fn require_tls_refuses_plaintext_mail_with_530_and_swaks_tls_gets_through() {
    let (dir, _ca, leaf) = setup("require-tls");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls()
        .start();
    let to = format!("u@{MAIL_DOMAIN}");

    let plain = swaks(proxy.addr(), &["--from", "a@partner.example", "--to", &to]);
    assert_ne!(plain.code, 0, "{}", plain.all());
    plain.assert_stdout_contains("<** 530 5.7.0 Must issue a STARTTLS command first");
    assert_eq!(rejections(&proxy, "require_tls"), 1.0);

    let tls = swaks(
        proxy.addr(),
        &["--tls", "--from", "a@partner.example", "--to", &to],
    );
    tls.assert_success();
    let mail = backend.wait_delivered(1);
    assert_eq!(mail.len(), 1);
    assert_eq!(rejections(&proxy, "require_tls"), 1.0);
    // Postfix never saw the refused MAIL.
    let first_session = backend.wait_maillog("disconnect from");
    assert!(!first_session.contains("mail="), "{first_session}");
}

#[test]
fn require_tls_refuses_rcpt_too_and_never_forwards_them() {
    let (dir, ca, leaf) = setup("require-tls-raw");
    let backend = FakeBackend::start(EhloMode::Extensions(vec!["PIPELINING".into()]));
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls()
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client
        .cmd("MAIL FROM:<a@partner.example>")
        .assert(530, "5.7.0");
    client.cmd("RCPT TO:<u@example.org>").assert(530, "5.7.0");
    client.cmd("NOOP").assert(250, "2.0.0");
    client.starttls(&ca.path, "mx.test");
    client.cmd("EHLO client.test");
    let reply = client
        .send_mail(
            "a@partner.example",
            "u@example.org",
            "Subject: x\r\n\r\ny\r\n",
        )
        .expect("final reply");
    reply.assert(250, "2.0.0");
    client.cmd("QUIT").assert(221, "2.0.0");
    client.expect_closed();
    drop(client);
    proxy.wait_sessions(1);
    let lines = backend.lines();
    let mails = lines.iter().filter(|l| l.starts_with("MAIL")).count();
    assert_eq!(
        mails, 1,
        "only the MAIL inside TLS may reach the MTA: {lines:?}"
    );
    assert_eq!(rejections(&proxy, "require_tls"), 2.0);
}

#[test]
fn listed_sender_domain_is_refused_with_450_in_plaintext() {
    let (dir, _ca, leaf) = setup("require-senders");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .require_tls_senders(&["bank.example", ".gov.example"])
        .start();

    let refused = swaks(
        proxy.addr(),
        &["--from", "teller@bank.example", "--to", "u@example.org"],
    );
    refused.assert_stdout_contains("<** 450 4.7.1 Session encryption is required");
    let sub = swaks(
        proxy.addr(),
        &["--from", "clerk@tax.gov.example", "--to", "u@example.org"],
    );
    assert!(
        sub.stdout
            .contains("<** 450 4.7.1 Session encryption is required"),
        "subdomain rule `.gov.example` must match: {}",
        sub.stdout
    );
    // Case does not matter in domains.
    let upper = swaks(
        proxy.addr(),
        &["--from", "teller@BANK.Example", "--to", "u@example.org"],
    );
    upper.assert_stdout_contains("<** 450 4.7.1");
    assert_eq!(
        rejections(&proxy, "sender_requires_tls"),
        3.0,
        "{}",
        proxy.metrics()
    );

    // Unlisted senders pass in plaintext; listed ones pass over TLS.
    let other = swaks(
        proxy.addr(),
        &["--from", "a@partner.example", "--to", "u@example.org"],
    );
    other.assert_success();
    let tls = swaks(
        proxy.addr(),
        &[
            "--tls",
            "--from",
            "teller@bank.example",
            "--to",
            "u@example.org",
        ],
    );
    tls.assert_success();
    let m = sink.wait_messages(2);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(m
        .iter()
        .any(|x| x.contains("X-Mail-Args: <teller@bank.example>")));
    assert!(!m.iter().any(|x| x.contains("tax.gov.example")));
}

#[test]
fn listed_recipient_domain_is_refused_with_450_in_plaintext() {
    let (dir, _ca, leaf) = setup("require-recipients");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_recipients(&[MAIL_DOMAIN])
        .start();
    let to = format!("u@{MAIL_DOMAIN}");
    let refused = swaks(proxy.addr(), &["--from", "a@partner.example", "--to", &to]);
    refused.assert_stdout_contains("<** 450 4.7.1 Session encryption is required");
    assert_eq!(rejections(&proxy, "recipient_requires_tls"), 1.0);
    let tls = swaks(
        proxy.addr(),
        &["--tls", "--from", "a@partner.example", "--to", &to],
    );
    tls.assert_success();
    assert_eq!(backend.wait_delivered(1).len(), 1);
    assert_eq!(rejections(&proxy, "recipient_requires_tls"), 1.0);
}

#[test]
fn listed_recipient_among_others_is_refused_alone() {
    let (dir, _ca, leaf) = setup("require-recipients-mixed");
    let backend = FakeBackend::start(EhloMode::Extensions(vec![]));
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_recipients(&["bank.example"])
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client
        .cmd("MAIL FROM:<a@partner.example>")
        .assert(250, "2.1.0");
    client.cmd("RCPT TO:<u@example.org>").assert(250, "2.1.5");
    client
        .cmd("RCPT TO:<ceo@bank.example>")
        .assert(450, "4.7.1");
    client.cmd("RCPT TO:<x@Bank.Example.>").assert(450, "4.7.1");
    client.cmd("QUIT").assert(221, "2.0.0");
    proxy.wait_sessions(1);
    let lines = backend.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.to_ascii_lowercase().contains("bank.example")),
        "a refused RCPT reached the MTA: {lines:?}"
    );
}
