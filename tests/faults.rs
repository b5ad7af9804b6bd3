//! Issue 2, point 7 (and the "no panic on any input" clause): limits and faults with real
//! peers. Over-long lines, garbage instead of a ClientHello, silent clients, max_connections,
//! an unreachable backend, and a backend that dies during DATA.

mod common;

use common::backend::EhloMode;
use common::postfix::{Role, MAIL_DOMAIN};
use common::*;

fn labels<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("listener", "mx"), ("direction", "inbound")];
    l.extend_from_slice(extra);
    l
}

/// The client must see a close and refusals only, never a positive reply the backend did not
/// send.
#[track_caller]
fn assert_closed_without_success(client: &mut SmtpClient, context: &str) {
    let replies = client.expect_closed();
    assert!(
        replies.iter().all(|r| r.code >= 400),
        "{context}: the client saw a positive reply the backend never sent: {replies:?}"
    );
}

#[test]
fn overlong_command_line_gets_500_5_5_2_and_session_continues() {
    let (dir, ca, leaf) = setup("overlong");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    // Default max_line_length is 2048.
    let long = format!("EHLO {}", "a".repeat(3000));
    client.cmd(&long).assert(500, "5.5.2");
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    client.starttls(&ca.path, "mx.test");
    // Inside TLS too.
    let long = format!("NOOP {}", "b".repeat(5000));
    client.cmd(&long).assert(500, "5.5.2");
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    let reply = client
        .send_mail(
            "a@partner.example",
            &format!("u@{MAIL_DOMAIN}"),
            "Subject: after long lines\r\n\r\nok\r\n",
        )
        .expect("final reply");
    reply.assert(250, "2.0.0");
    let mail = backend.wait_delivered(1);
    assert!(!mail[0].contains("aaaaaaaa"), "{}", mail[0]);
}

/// Issue 15: the 500 came only once the line's end arrived, or at the idle timeout.
#[test]
fn overlong_line_is_answered_before_its_end_arrives_and_an_endless_one_is_cut() {
    let (dir, ca, leaf) = setup("overlong-unended");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .limit("max_line_length", "512")
        .limit("max_errors", "4")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.send(format!("NOOP {}", "x".repeat(600)).as_bytes());
    client.reply().assert(500, "5.5.2");
    client.send(b"the same line goes on\r\n");
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    client.starttls(&ca.path, "mx.test");
    client.send(format!("NOOP {}", "y".repeat(600)).as_bytes());
    client.reply().assert(500, "5.5.2");
    // Still no line end: every further 512 bytes count as an error, without more replies,
    // until max_errors ends the session.
    let _ = client.try_send("y".repeat(512 * 4).as_bytes());
    let replies = client.expect_closed();
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies[0].assert(421, "4.7.0");
    proxy.wait_session_outcome("too_many_errors");
}

#[test]
fn configured_max_line_length_is_enforced() {
    let (dir, _ca, leaf) = setup("max-line");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .limit("max_line_length", "512")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    // 510 octets + CRLF fits; 600 does not.
    let fits = format!("NOOP {}", "c".repeat(505));
    assert_eq!(client.cmd(&fits).code, 250);
    let too_long = format!("NOOP {}", "c".repeat(600));
    client.cmd(&too_long).assert(500, "5.5.2");
}

#[test]
fn repeated_overlong_lines_end_the_session_with_421() {
    let (dir, _ca, leaf) = setup("max-errors");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .limit("max_errors", "3")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let long = format!("HELP {}\r\n", "z".repeat(4000));
    let _ = client.try_send(long.repeat(5).as_bytes());
    let replies = client.expect_closed();
    assert!(replies.len() >= 2, "expected 500s then a 421: {replies:?}");
    for r in &replies[..replies.len() - 1] {
        r.assert(500, "5.5.2");
    }
    replies.last().unwrap().assert(421, "4.7.0");
    proxy.wait_session_outcome("too_many_errors");
}

#[test]
fn garbage_instead_of_client_hello_is_counted_and_closed() {
    let (dir, _ca, leaf) = setup("garbage-hello");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.cmd("STARTTLS").assert(220, "2.0.0");
    let _ = client.try_send(b"EHLO this is not a TLS ClientHello\r\nMAIL FROM:<x@y>\r\n");
    let replies = client.expect_closed();
    assert!(
        replies.is_empty(),
        "no plaintext SMTP reply may follow the 220: {replies:?}"
    );
    let s = proxy.wait_session_outcome("tls_handshake");
    assert_eq!(s["tls"], "no", "{s:?}");
    let metrics = proxy.metrics();
    let failures = metric_sum(
        &metrics,
        "starttls_proxy_tls_handshake_failures_total",
        &labels(&[]),
    );
    assert_eq!(failures, 1.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "starttls_proxy_tls_handshake_failures_total",
            &labels(&[("reason", "not_tls")])
        )
        .is_some(),
        "reason label for garbage should be not_tls:\n{metrics}"
    );
    // The proxy is still serving.
    let (mut next, _) = SmtpClient::greeted(proxy.addr());
    assert_eq!(next.cmd("EHLO client.test").code, 250);
}

#[test]
fn binary_garbage_and_nul_bytes_do_not_break_the_proxy() {
    let (dir, ca, leaf) = setup("binary-garbage");
    let sink = SmtpSink::start(dir.path(), &[]);
    let mut proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .require_tls_senders(&["bank.example"])
        .start();
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"MAIL FROM:<\xff\xfe@\x00>\r\nRCPT TO:<@@@>\r\n".to_vec(),
        b"EHLO \r\nSTARTTLS \t\r\nMAIL FROM:\r\nRCPT TO:\r\nBDAT x LAST\r\n".to_vec(),
        b"\n\n\r\r\n.\r\n".to_vec(),
        vec![b'A'; 70_000],
    ];
    for input in inputs {
        let (mut client, _) = SmtpClient::greeted(proxy.addr());
        let _ = client.try_send(&input);
        let _ = client.try_send(b"\r\nQUIT\r\n");
        client.expect_closed();
    }
    assert!(proxy.is_running(), "the proxy died on garbage");
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.starttls(&ca.path, "mx.test");
    assert_eq!(client.cmd("EHLO client.test").code, 250);
    assert!(
        !proxy.log_text().contains("panicked"),
        "{}",
        proxy.log_text()
    );
}

#[test]
fn silent_client_after_starttls_hits_handshake_timeout() {
    let (dir, _ca, leaf) = setup("handshake-timeout");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .limit("handshake_timeout", "\"1s\"")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.cmd("STARTTLS").assert(220, "2.0.0");
    // Say nothing: the proxy must give up and close.
    let replies = client.expect_closed();
    assert!(replies.is_empty(), "{replies:?}");
    proxy.wait_session_outcome("tls_handshake");
    proxy.assert_metric(
        "starttls_proxy_tls_handshake_failures_total",
        &labels(&[("reason", "timeout")]),
        1.0,
    );
}

#[test]
fn silent_client_gets_421_after_idle_timeout() {
    let (dir, _ca, leaf) = setup("idle");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .limit("idle_timeout", "\"1s\"")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.expect_closed_after(421, "4.4.2");
    proxy.wait_session_outcome("idle_timeout");
}

#[test]
fn silent_client_inside_tls_is_closed_after_idle_timeout() {
    let (dir, ca, leaf) = setup("idle-tls");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .limit("idle_timeout", "\"1s\"")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.ehlo_tls(&ca.path, "mx.test");
    let replies = client.expect_closed();
    assert!(replies.len() <= 1, "{replies:?}");
    if let Some(r) = replies.first() {
        r.assert(421, "4.4.2");
    }
    proxy.wait_session_outcome("idle_timeout");
}

#[test]
fn silent_client_in_spliced_transaction_is_closed_after_idle_timeout() {
    let (dir, ca, leaf) = setup("idle-spliced");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .limit("idle_timeout", "\"1s\"")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.ehlo_tls(&ca.path, "mx.test");
    client.open_data("a@partner.example", "u@example.org");
    client.send(b"Subject: stalled\r\n\r\nhalf a mess");
    let replies = client.expect_closed();
    assert!(
        !replies.iter().any(|r| r.code == 250),
        "a stalled message must not be acknowledged: {replies:?}"
    );
    proxy.wait_sessions(1);
    assert!(sink.messages().is_empty(), "{:?}", sink.messages());
}

#[test]
fn max_connections_turns_away_with_421_4_7_0() {
    let (dir, _ca, leaf) = setup("max-connections");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .limit("max_connections", "2")
        .start();
    let (mut a, _) = SmtpClient::greeted(proxy.addr());
    let (_b, _) = SmtpClient::greeted(proxy.addr());
    let mut c = SmtpClient::connect(proxy.addr());
    c.expect_closed_after(421, "4.7.0");
    // A slot freed is a slot usable again.
    assert_eq!(a.cmd("QUIT").code, 221);
    a.expect_closed();
    proxy.wait_sessions(1);
    let (mut d, _) = SmtpClient::greeted(proxy.addr());
    assert_eq!(d.cmd("EHLO client.test").code, 250);
    let metrics = proxy.metrics();
    assert_metric(
        &metrics,
        "starttls_proxy_connections_total",
        &labels(&[]),
        4.0,
    );
    assert_metric(
        &metrics,
        "starttls_proxy_connections_active",
        &labels(&[]),
        2.0,
    );
}

#[test]
fn unreachable_backend_gets_421_4_4_1() {
    let (dir, _ca, leaf) = setup("backend-down");
    let proxy = ProxyBuilder::new(dir.path(), &leaf, dead_addr()).start();
    let mut client = SmtpClient::connect(proxy.addr());
    client.expect_closed_after(421, "4.4.1");
    proxy.wait_session_outcome("backend_unreachable");
    proxy.assert_metric(
        "starttls_proxy_session_errors_total",
        &labels(&[("reason", "backend_unreachable")]),
        1.0,
    );
}

#[test]
fn backend_stopped_after_start_gets_421_4_4_1() {
    let (dir, _ca, leaf) = setup("backend-stopped");
    let mut sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut ok, _) = SmtpClient::greeted(proxy.addr());
    ok.cmd("QUIT");
    sink.kill();
    let mut client = SmtpClient::connect(proxy.addr());
    client.expect_closed_after(421, "4.4.1");
}

/// Starts a message over TLS, kills the backend mid-body, finishes the message: the client
/// must see a close or a 4xx, never a 250.
#[test]
fn backend_killed_during_data_never_yields_250() {
    let (dir, ca, leaf) = setup("kill-during-data");
    let mut sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.ehlo_tls(&ca.path, "mx.test");
    client.open_data("a@partner.example", "u@example.org");
    client.send(b"Subject: doomed\r\n\r\nfirst half\r\n");
    sink.kill();
    let _ = client.try_send(b"second half\r\n.\r\n");
    assert_closed_without_success(&mut client, "the backend died");
    drop(client);
    proxy.wait_sessions(1);
    assert!(sink.messages().is_empty());
}

/// Same, in a plaintext session the proxy still inspects (require_tls_senders configured).
#[test]
fn backend_killed_during_data_in_inspected_plaintext_session_gets_4xx() {
    let (dir, _ca, leaf) = setup("kill-during-data-plain");
    let mut sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .require_tls_senders(&["bank.example"])
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.cmd("EHLO client.test");
    client.open_data("a@partner.example", "u@example.org");
    client.send(b"Subject: doomed\r\n\r\nfirst half\r\n");
    sink.kill();
    let _ = client.try_send(b"second half\r\n.\r\n");
    assert_closed_without_success(&mut client, "the backend died");
}

/// A real MTA killed between the body and its reply: Postfix's smtpd is SIGKILLed while the
/// client still has the terminating dot to send.
#[test]
fn postfix_smtpd_killed_during_data_never_yields_250() {
    let (dir, ca, leaf) = setup("kill-postfix-during-data");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.ehlo_tls(&ca.path, "mx.test");
    client.open_data("a@partner.example", &format!("u@{MAIL_DOMAIN}"));
    client.send(b"Subject: doomed\r\n\r\nfirst half\r\n");
    // The smtpd serving this session is the one that logged its client.
    let line = backend.wait_maillog("client=localhost");
    let pid = line
        .split("smtpd[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no smtpd pid in {line:?}"));
    send_signal(pid, "KILL");
    let _ = client.try_send(b"second half\r\n.\r\n");
    assert_closed_without_success(&mut client, "the backend died");
    assert!(backend.delivered().is_empty());
}

/// smtp-sink -q .: the backend hangs up at the end of DATA without replying.
#[test]
fn backend_hanging_up_at_end_of_data_never_yields_250() {
    let (dir, ca, leaf) = setup("hangup-at-dot");
    let sink = SmtpSink::start(dir.path(), &["-q", "."]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    for tls in [true, false] {
        let (mut client, _) = SmtpClient::greeted(proxy.addr());
        client.cmd("EHLO client.test");
        if tls {
            client.starttls(&ca.path, "mx.test");
            client.cmd("EHLO client.test");
        }
        client.open_data("a@partner.example", "u@example.org");
        client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
        assert_closed_without_success(&mut client, &format!("tls={tls}"));
    }
}

#[test]
fn backend_closing_after_greeting_gets_a_4xx_not_a_hang() {
    let (dir, _ca, leaf) = setup("backend-quits");
    // smtp-sink -q EHLO: disconnects without replying when EHLO arrives.
    let sink = SmtpSink::start(dir.path(), &["-q", "EHLO"]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    client.send(b"EHLO client.test\r\n");
    client.expect_closed_after(421, "4.4.2");
}

#[test]
fn fake_backend_lines_show_starttls_never_forwarded_under_load_of_sessions() {
    let (dir, ca, leaf) = setup("many-sessions");
    let backend = FakeBackend::start(EhloMode::Extensions(vec!["STARTTLS".into()]));
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (addr, ca) = (proxy.addr(), ca.path.clone());
            std::thread::spawn(move || {
                let (mut c, _) = SmtpClient::greeted(addr);
                c.cmd("EHLO client.test");
                c.starttls(&ca, "mx.test");
                c.cmd("EHLO client.test");
                let r = c
                    .send_mail("a@partner.example", "u@example.org", "S: x\r\n\r\nb\r\n")
                    .expect("final reply");
                r.assert(250, "2.0.0");
                c.cmd("QUIT").assert(221, "2.0.0");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("session thread");
    }
    proxy.wait_sessions(8);
    let lines = backend.lines();
    assert_eq!(
        lines.iter().filter(|l| *l == "<end of data>").count(),
        8,
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")));
}

/// Issue 15, item 4: the 421 written to a client whose backend is down is counted in the
/// session's `bytes_out`.
#[test]
fn unreachable_backend_session_counts_the_421_it_wrote() {
    let (dir, _ca, leaf) = setup("backend-down-bytes");
    let backend = dead_addr();
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend).start();
    let mut client = SmtpClient::connect(proxy.addr());
    client.expect_closed_after(421, "4.4.1");
    let session = proxy.wait_session_outcome("backend_unreachable");
    let written = "421 4.4.1 proxy.test Service not available: mail server unreachable\r\n";
    assert_eq!(
        session["bytes_out"],
        written.len().to_string(),
        "{session:?}"
    );
    assert_eq!(session["bytes_in"], "0", "{session:?}");
    assert_eq!(session["backend"], backend.to_string(), "{session:?}");
}
