//! Plaintext sessions under `require_tls_senders`: the proxy cannot splice them, so it relays
//! message bodies itself and must find where each one ends, or a sender could slip a refused
//! MAIL past it (SMTP smuggling). Real Postfix is the legacy MTA behind the proxy.

mod common;

use common::postfix::Role;
use common::*;

const LISTED: &str = "teller@bank.example";

fn start(tag: &str) -> (TempDir, Postfix, Proxy) {
    let (dir, _ca, leaf) = setup(tag);
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .require_tls_senders(&["bank.example"])
        .start();
    (dir, backend, proxy)
}

#[test]
fn inspected_body_is_delivered_and_the_next_transaction_is_still_checked() {
    let (_dir, backend, proxy) = start("inspect-data");
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");

    // A body that looks like commands, with dot-stuffing, and the next (refused) MAIL pipelined
    // right behind the terminator in the same write.
    client.open_data("ok@other.example", "u@example.org");
    client.send(
        b"Subject: one\r\n\r\n..stuffed\r\nMAIL FROM:<teller@bank.example>\r\n.\r\nMAIL FROM:<teller@bank.example>\r\n",
    );
    client.reply().assert(250, "2.0.0");
    client.reply().assert(450, "4.7.1");

    // After the refusal the session goes on, checked as before.
    client.cmd("RSET").assert(250, "2.0.0");
    client.open_data("ok@other.example", "u@example.org");
    client.send(b"Subject: two\r\n\r\nsecond\r\n.\r\n");
    client.reply().assert(250, "2.0.0");
    client.cmd("QUIT").assert(221, "2.0.0");

    let delivered = backend.wait_delivered(2);
    let first = delivered
        .iter()
        .find(|m| m.contains("Subject: one"))
        .expect("first message");
    assert!(
        first.contains("\n.stuffed"),
        "dot-stuffing undone once: {first}"
    );
    assert!(
        first.contains("MAIL FROM:<teller@bank.example>"),
        "body line kept: {first}"
    );
    assert!(
        !backend.maillog().contains(&format!("from=<{LISTED}>")),
        "the refused sender reached Postfix:\n{}",
        backend.maillog()
    );
}

#[test]
fn bare_lf_in_an_inspected_body_ends_the_session_with_421_and_nothing_is_delivered() {
    let (_dir, backend, proxy) = start("inspect-bare-lf");
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.open_data("ok@other.example", "u@example.org");
    // `LF.LF` ends the message for some MTAs and not for others: a smuggling attempt.
    client.send(b"Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<teller@bank.example>\r\n");
    client.expect_closed_after(421, "4.5.2");

    let sessions = proxy.wait_sessions(1);
    assert_eq!(sessions[0]["outcome"], "bare_lf", "{:?}", sessions[0]);
    assert_metric(
        &proxy.metrics(),
        "starttls_proxy_session_errors_total",
        &[
            ("listener", "mx"),
            ("direction", "inbound"),
            ("reason", "bare_lf"),
        ],
        1.0,
    );
    // Postfix sees the connection drop inside DATA, so it discards the partial message.
    backend.wait_maillog("lost connection after DATA");
    assert!(backend.delivered().is_empty(), "{:?}", backend.delivered());
    assert!(!backend.maillog().contains(&format!("from=<{LISTED}>")));
}

#[test]
fn bdat_chunks_are_relayed_and_the_next_transaction_is_still_checked() {
    let (_dir, backend, proxy) = start("inspect-bdat");
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let ehlo = client.cmd("EHLO client.test");
    assert!(
        ehlo.has_extension("CHUNKING"),
        "Postfix offers CHUNKING: {ehlo:?}"
    );

    client
        .cmd("MAIL FROM:<ok@other.example>")
        .assert(250, "2.1.0");
    client.cmd("RCPT TO:<u@example.org>").assert(250, "2.1.5");
    // BDAT content is counted, not delimited: a CRLF.CRLF inside is plain data.
    let first = b"Subject: chunked\r\n\r\nbefore\r\n.\r\n";
    let second = b"after\r\n";
    let mut bytes = format!("BDAT {}\r\n", first.len()).into_bytes();
    bytes.extend_from_slice(first);
    client.send(&bytes);
    client.reply().assert(250, "2.0.0");
    let mut bytes = format!("BDAT {} LAST\r\n", second.len()).into_bytes();
    bytes.extend_from_slice(second);
    client.send(&bytes);
    client.reply().assert(250, "2.0.0");

    client
        .cmd(&format!("MAIL FROM:<{LISTED}>"))
        .assert(450, "4.7.1");
    client.cmd("QUIT").assert(221, "2.0.0");

    let delivered = backend.wait_delivered(1);
    assert!(
        delivered[0].contains("before\n.\nafter"),
        "{}",
        delivered[0]
    );
}
