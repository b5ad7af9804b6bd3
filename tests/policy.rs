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
    // Issue 12, point 2 (inbound): each is a suspected downgrade, labelled by its entry.
    let m = proxy.metrics();
    let downgrades = |domain: &str| {
        metric_sum(
            &m,
            "starttls_proxy_downgrade_suspected_total",
            &[("direction", "inbound"), ("domain", domain)],
        )
    };
    assert_eq!(
        (downgrades("bank.example"), downgrades(".gov.example")),
        (2.0, 1.0),
        "{m}"
    );
    proxy.wait_event("downgrade_suspected", &[("domain", ".gov.example")]);

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

/// Sender spellings Postfix 3.7 accepts for a `secure.test` sender (checked first in each test,
/// straight at Postfix, so the list cannot drift from what the backend takes). The issue-15
/// bypass: `MAIL<TAB>FROM:` and `MAIL  FROM:` once passed as unknown commands.
const SENDER_SPELLINGS: &[&str] = &[
    "MAIL FROM:<alice@secure.test>",
    "MAIL\tFROM:<alice@secure.test>",
    "MAIL  FROM:<alice@secure.test>",
    " MAIL FROM:<alice@secure.test>",
    "\tMAIL\tFROM:<alice@secure.test>",
    "mail from:<alice@SECURE.test>",
    "MAIL FROM: <alice@secure.test>",
    "MAIL FROM:\t<alice@secure.test>",
    "MAIL FROM:< alice@secure.test >",
    "MAIL FROM:<alice @ secure.test>",
    "MAIL FROM:<alice@secure .test>",
    "MAIL FROM:alice@secure.test",
    "MAIL FROM:alice@secure.test(comment)",
    "MAIL FROM:<alice@(comment)secure.test>",
    "MAIL FROM:<(comment)alice@secure.test>",
    "MAIL FROM:(comment)<alice@secure.test>",
    "MAIL FROM:<alice@secure.test>(comment)",
    "MAIL FROM:<alice@secure.test(>",
    "MAIL FROM:<alice@secure.test.>",
    "MAIL FROM:<alice@\"secure.test\">",
    "MAIL FROM:<alice@secure\\.test>",
    "MAIL FROM:<<alice@secure.test>>",
    "MAIL FROM:alice@secure.test>",
    "MAIL FROM:<alice@secure.test,>",
    "MAIL FROM:<@relay.test:alice@secure.test>",
    "MAIL FROM:<\"a@b\"@secure.test>",
    "MAIL FROM:<secure.test!alice>",
    "MAIL FROM:<alice%secure.test@relay.test>",
    "MAIL FROM:<alice@secure.test> SIZE=10",
];

/// Recipient spellings Postfix accepts for `u@example.org` (the backend's own domain).
const RECIPIENT_SPELLINGS: &[&str] = &[
    "RCPT TO:<u@example.org>",
    "RCPT\tTO:<u@example.org>",
    "RCPT  TO:<u@example.org>",
    " RCPT TO:<u@example.org>",
    "rcpt to:<u@EXAMPLE.ORG.>",
    "RCPT TO: <u@example.org>",
    "RCPT TO:<u @ example.org>",
    "RCPT TO:u@example.org",
    "RCPT TO:<u@example.org(comment)>",
    "RCPT TO:<u@(comment)example.org>",
    "RCPT TO:(comment)<u@example.org>",
    "RCPT TO:<@relay.test:u@example.org>",
    "RCPT TO:<\"u\"@example.org>",
    "RCPT TO:<u@example.org> NOTIFY=NEVER",
];

/// Lines that look like MAIL or RCPT but that the proxy cannot read: under enforcement they
/// never reach the backend, whatever the backend would make of them.
const UNREADABLE: &[&str] = &[
    "MAIL FROM :<alice@secure.test>",
    "MAILFROM:<alice@secure.test>",
    "MAIL FROM:<alice@secure.test",
    "MAIL FROM:<alice@secure.test\r>",
    "SEND FROM:<alice@secure.test>",
];

/// Each spelling straight at the Postfix backend: it must take it (else it proves nothing).
fn assert_postfix_accepts(backend: &Postfix, mails: &[&str], rcpts: &[&str]) {
    let (mut c, _) = SmtpClient::greeted(backend.addr);
    c.cmd("EHLO probe.test");
    for mail in mails {
        c.cmd(mail).assert(250, "2.1.0");
        c.cmd("RSET").assert(250, "2.0.0");
    }
    c.cmd("MAIL FROM:<probe@probe.test>").assert(250, "2.1.0");
    for rcpt in rcpts {
        c.cmd(rcpt).assert(250, "2.1.5");
    }
    c.cmd("QUIT");
}

/// The backend's first `n` sessions (Postfix's disconnect summaries) show none of `fields`.
fn assert_backend_never_saw(backend: &Postfix, n: usize, fields: &[&str]) {
    let summaries = eventually(&format!("{n} sessions in the maillog"), || {
        let log = backend.maillog();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("disconnect from"))
            .map(str::to_string)
            .collect();
        (lines.len() >= n).then_some(lines)
    });
    for line in &summaries[..n] {
        for field in fields {
            assert!(
                !line.contains(field),
                "a refused command reached Postfix: {line}"
            );
        }
    }
}

/// Tries a whole plaintext transaction through the proxy with `mail` and `rcpt`: the refused
/// command gets `code`/`enhanced`, and DATA never gets its 354.
fn attempt(proxy: &Proxy, mail: &str, rcpt: &str, refused: &str, code: u16, enhanced: &str) {
    let (mut c, _) = SmtpClient::greeted(proxy.addr());
    c.cmd("EHLO dodger.test");
    let m = c.cmd(mail);
    let r = c.cmd(rcpt);
    let got = if refused == mail { &m } else { &r };
    assert!(
        got.code == code && got.enhanced() == enhanced,
        "{refused:?} through the proxy: {got:?} (MAIL {m:?}, RCPT {r:?})"
    );
    let data = c.cmd("DATA");
    assert_ne!(data.code, 354, "{mail:?} / {rcpt:?}: DATA accepted");
    c.cmd("QUIT");
}

#[test]
fn postfix_spellings_of_a_listed_sender_never_pass_in_plaintext() {
    let (dir, _ca, leaf) = setup("spellings-senders");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_senders(&["secure.test"])
        .start();
    let rcpt = format!("RCPT TO:<u@{MAIL_DOMAIN}>");
    for mail in SENDER_SPELLINGS {
        attempt(&proxy, mail, &rcpt, mail, 450, "4.7.1");
    }
    for mail in UNREADABLE {
        attempt(&proxy, mail, &rcpt, mail, 501, "5.5.4");
    }
    assert_eq!(
        rejections(&proxy, "sender_requires_tls"),
        SENDER_SPELLINGS.len() as f64
    );
    assert_eq!(
        rejections(&proxy, "unreadable_path"),
        UNREADABLE.len() as f64
    );
    assert_backend_never_saw(
        &backend,
        SENDER_SPELLINGS.len() + UNREADABLE.len(),
        &["mail="],
    );
    assert_postfix_accepts(&backend, SENDER_SPELLINGS, &[]);
    // An unlisted sender still passes in plaintext, however it is spelled.
    let (mut c, _) = SmtpClient::greeted(proxy.addr());
    c.cmd("EHLO partner.test");
    c.cmd("MAIL\tFROM:<a@partner.test>").assert(250, "2.1.0");
    c.cmd(&rcpt).assert(250, "2.1.5");
    c.cmd("DATA").assert(354, "");
    c.cmd("Subject: plain\r\n\r\nok\r\n.").assert(250, "2.0.0");
    c.cmd("QUIT");
    let delivered = backend.wait_delivered(1);
    assert_eq!(delivered.len(), 1, "only the unlisted sender's message");
    assert!(!delivered[0].contains("secure.test"), "{delivered:?}");
}

#[test]
fn postfix_spellings_of_a_listed_recipient_never_pass_in_plaintext() {
    let (dir, _ca, leaf) = setup("spellings-recipients");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_recipients(&[MAIL_DOMAIN])
        .start();
    for rcpt in RECIPIENT_SPELLINGS {
        attempt(
            &proxy,
            "MAIL FROM:<a@partner.test>",
            rcpt,
            rcpt,
            450,
            "4.7.1",
        );
    }
    for rcpt in ["RCPT TO :<u@example.org>", "RCPTTO:<u@example.org>"] {
        attempt(
            &proxy,
            "MAIL FROM:<a@partner.test>",
            rcpt,
            rcpt,
            501,
            "5.5.4",
        );
    }
    assert_eq!(
        rejections(&proxy, "recipient_requires_tls"),
        RECIPIENT_SPELLINGS.len() as f64
    );
    assert_backend_never_saw(&backend, RECIPIENT_SPELLINGS.len() + 2, &["rcpt="]);
    assert_postfix_accepts(&backend, &[], RECIPIENT_SPELLINGS);
}

#[test]
fn postfix_spellings_get_530_under_require_tls() {
    let (dir, _ca, leaf) = setup("spellings-require-tls");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls()
        .start();
    for mail in SENDER_SPELLINGS.iter().chain(UNREADABLE) {
        attempt(&proxy, mail, "RCPT TO:<u@example.org>", mail, 530, "5.7.0");
    }
    for rcpt in RECIPIENT_SPELLINGS {
        attempt(
            &proxy,
            "MAIL FROM:<a@partner.test>",
            rcpt,
            rcpt,
            530,
            "5.7.0",
        );
    }
    let attempts = SENDER_SPELLINGS.len() + UNREADABLE.len() + RECIPIENT_SPELLINGS.len();
    assert_backend_never_saw(&backend, attempts, &["mail=", "rcpt="]);
}
