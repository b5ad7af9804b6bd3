//! PROXY protocol in (issue 13, point 3 and 6): a real HAProxy in front (`send-proxy`,
//! `send-proxy-v2`) names the client, who then appears as `client=` in the log and as
//! `client_ip` in the session results while `peer=` is the balancer; bad headers from a trusted
//! balancer close the connection without a reply and are counted by reason; a PROXY line from
//! anyone else is a bad command answered with 500 5.5.2.

mod common;

use common::backend::EhloMode;
use common::haproxy::{Haproxy, Node};
use common::postfix::{Role, MAIL_DOMAIN};
use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

/// A TCP connection to `to` from `source`, as a balancer at that address would open it.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source address");
    socket.connect(&to.into()).expect("connect to the proxy");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads until the proxy closes; returns what it sent (nothing, for a rejected header).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        // A close with unread bytes in the proxy's socket is a reset: still a close.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("the proxy neither answered nor closed: {e} (got {got:?})"),
    }
}

#[track_caller]
fn expect_code(reply: Reply, code: u16) {
    assert_eq!(reply.code, code, "{reply:?}");
}

fn ip_of(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr:?} is not ADDR:PORT: {e}"))
        .ip()
        .to_string()
}

fn v2_header(version_command: u8, family_protocol: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    bytes.push(version_command);
    bytes.push(family_protocol);
    bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn v4_addresses() -> Vec<u8> {
    let mut body = vec![192, 0, 2, 7, 10, 0, 0, 25];
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&25u16.to_be_bytes());
    body
}

#[test]
fn haproxy_v1_and_v2_headers_name_the_real_client_to_logs_and_results() {
    let (dir, _ca, leaf) = setup("pp-haproxy");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    // The proxy's address is fixed first so both balancers can be pointed at it.
    let listen = SocketAddr::from((unique_ip(), 2525));
    let (v1_dir, v2_dir) = (dir.join("v1"), dir.join("v2"));
    std::fs::create_dir_all(&v1_dir).unwrap();
    std::fs::create_dir_all(&v2_dir).unwrap();
    let node = || {
        vec![Node {
            smtp: listen,
            admin: None,
            check_smtp: false,
        }]
    };
    let balancers = [
        (
            "send-proxy",
            Haproxy::start(&v1_dir, "send-proxy", unique_ip(), &node()),
        ),
        (
            "send-proxy-v2",
            Haproxy::start(&v2_dir, "send-proxy-v2", unique_ip(), &node()),
        ),
    ];
    let trusted = format!(
        "[\"{}\", \"{}/32\"]",
        balancers[0].1.source, balancers[1].1.source
    );
    let mut builder = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("proxy_protocol_from", &trusted);
    builder = builder.listen_on(listen);
    let proxy = builder.start();

    for (n, (how, balancer)) in balancers.iter().enumerate() {
        let client_ip = unique_ip().to_string();
        let run = swaks(
            balancer.front,
            &[
                "--local-interface",
                &client_ip,
                "--tls",
                "--from",
                "sender@partner.example",
                "--to",
                &format!("user@{MAIL_DOMAIN}"),
                "--header",
                &format!("Subject: through haproxy {how}"),
            ],
        );
        assert_eq!(run.code, 0, "swaks through haproxy {how}:\n{}", run.all());
        let sessions = proxy.wait_sessions(n + 1);
        let session = &sessions[n];
        assert_eq!(session["outcome"], "ok", "{session:?}");
        assert_eq!(ip_of(&session["client"]), client_ip, "{how}: {session:?}");
        assert_eq!(
            ip_of(&session["peer"]),
            balancer.source.to_string(),
            "{how}: {session:?}"
        );
        let results = proxy.results();
        assert_eq!(
            results[n]["client_ip"], client_ip,
            "{how}: results {results:?}"
        );
    }
    backend.wait_delivered(2);
    proxy.assert_metric(
        "starttls_proxy_proxy_protocol_errors_total",
        &[("listener", "mx"), ("reason", "missing")],
        0.0,
    );
}

#[test]
fn bad_headers_from_a_trusted_balancer_close_without_a_reply_counted_by_reason() {
    let (dir, _ca, leaf) = setup("pp-bad");
    let backend = FakeBackend::start(EhloMode::Extensions(vec!["PIPELINING".into()]));
    let balancer = unique_ip();
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("proxy_protocol_from", &format!("[\"{balancer}/32\"]"))
        .limit("handshake_timeout", "\"1s\"")
        .start();
    let long_v1 = format!("PROXY TCP4 {} 10.0.0.25 1 2\r\n", "1".repeat(100));
    // (what, bytes, close our side after sending, reason)
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "SMTP without a header",
            b"EHLO client.test\r\n".to_vec(),
            false,
            "missing",
        ),
        ("connect and close", Vec::new(), true, "missing"),
        (
            "silent until handshake_timeout",
            Vec::new(),
            false,
            "timeout",
        ),
        (
            "v1 cut short",
            b"PROXY TCP4 192.0.2.7 ".to_vec(),
            true,
            "truncated",
        ),
        (
            "v1 never finished",
            b"PROXY TCP4 192.0.2.7 ".to_vec(),
            false,
            "timeout",
        ),
        (
            "v1 over 107 bytes",
            long_v1.into_bytes(),
            false,
            "invalid_v1",
        ),
        (
            "v1 bad address",
            b"PROXY TCP4 192.0.2.999 10.0.0.25 1 2\r\n".to_vec(),
            false,
            "invalid_v1",
        ),
        (
            "v2 version 3",
            v2_header(0x31, 0x11, &v4_addresses()),
            false,
            "invalid_v2",
        ),
        (
            "v2 command 15",
            v2_header(0x2f, 0x11, &v4_addresses()),
            false,
            "invalid_v2",
        ),
        (
            "v2 family 5",
            v2_header(0x21, 0x51, &v4_addresses()),
            false,
            "invalid_v2",
        ),
        (
            "v2 short address block",
            v2_header(0x21, 0x11, &[192, 0, 2, 7]),
            false,
            "invalid_v2",
        ),
        (
            "v2 TLV overrunning the length",
            v2_header(
                0x21,
                0x11,
                &[v4_addresses(), vec![0x04, 0x00, 0x20, 1]].concat(),
            ),
            false,
            "invalid_v2",
        ),
        (
            "v2 cut inside the addresses",
            v2_header(0x21, 0x11, &v4_addresses())[..20].to_vec(),
            true,
            "truncated",
        ),
    ];
    let mut expected = std::collections::HashMap::<&str, usize>::new();
    for (what, bytes, close, reason) in &cases {
        let mut stream = connect_from(balancer, proxy.addr());
        if !bytes.is_empty() {
            stream.write_all(bytes).unwrap();
        }
        if *close {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let got = read_to_close(&mut stream);
        assert!(
            got.is_empty(),
            "{what}: the proxy replied {:?}",
            String::from_utf8_lossy(&got)
        );
        *expected.entry(reason).or_default() += 1;
        proxy.wait_log_count(
            |l| l.contains("event=proxy_protocol_error") && l.contains(&format!("reason={reason}")),
            expected[reason],
            &format!("{what}: proxy_protocol_error reason={reason}"),
        );
    }
    let metrics = proxy.metrics();
    for reason in [
        "missing",
        "timeout",
        "invalid_v1",
        "invalid_v2",
        "truncated",
    ] {
        assert_metric(
            &metrics,
            "starttls_proxy_proxy_protocol_errors_total",
            &[("listener", "mx"), ("reason", reason)],
            expected.get(reason).copied().unwrap_or(0) as f64,
        );
    }
    let event = &proxy.events("proxy_protocol_error")[0];
    assert_eq!(ip_of(&event["peer"]), balancer.to_string(), "{event:?}");
    // None of them reached the backend, and none was a session.
    assert!(backend.lines().is_empty(), "{:?}", backend.lines());
    assert!(proxy.sessions().is_empty(), "{:?}", proxy.sessions());
}

#[test]
fn trusted_headers_v2_local_v1_tcp6_and_pipelined_bytes_after_the_header() {
    let (dir, _ca, leaf) = setup("pp-good");
    let backend = FakeBackend::start(EhloMode::Extensions(vec!["PIPELINING".into()]));
    let balancer = unique_ip();
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("proxy_protocol_from", &format!("[\"{balancer}/32\"]"))
        .start();

    // v2 LOCAL: a balancer's health check; the client is the balancer itself.
    let mut check = connect_from(balancer, proxy.addr());
    check.write_all(&v2_header(0x20, 0x00, &[])).unwrap();
    let mut check = SmtpClient::from_stream(check);
    expect_code(check.reply(), 220);
    check.cmd("QUIT").assert(221, "2.0.0");
    let local = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(local["client"], local["peer"], "{local:?}");
    assert_eq!(ip_of(&local["peer"]), balancer.to_string(), "{local:?}");

    // v1 TCP6, with the client's first command in the same segment as the header: the
    // header is consumed exactly, the command reaches the dialogue.
    let mut v6 = connect_from(balancer, proxy.addr());
    v6.write_all(b"PROXY TCP6 2001:db8::7 2001:db8::25 40000 25\r\nNOOP\r\n")
        .unwrap();
    let mut v6 = SmtpClient::from_stream(v6);
    expect_code(v6.reply(), 220);
    expect_code(v6.reply(), 250);
    v6.cmd("QUIT").assert(221, "2.0.0");
    let session = proxy.wait_sessions(2).swap_remove(1);
    assert_eq!(session["client"], "[2001:db8::7]:40000", "{session:?}");
    assert_eq!(ip_of(&session["peer"]), balancer.to_string(), "{session:?}");
    let results = proxy.results();
    assert_eq!(results[1]["client_ip"], "2001:db8::7", "{results:?}");

    // v2 TCP4 with a TLV (HAProxy's unique-id kind) names the IPv4 client.
    let body = [v4_addresses(), vec![0x05, 0x00, 0x02, b'i', b'd']].concat();
    let mut v4 = connect_from(balancer, proxy.addr());
    v4.write_all(&v2_header(0x21, 0x11, &body)).unwrap();
    let mut v4 = SmtpClient::from_stream(v4);
    expect_code(v4.reply(), 220);
    v4.cmd("QUIT").assert(221, "2.0.0");
    let session = proxy.wait_sessions(3).swap_remove(2);
    assert_eq!(session["client"], "192.0.2.7:40000", "{session:?}");

    proxy.assert_metric(
        "starttls_proxy_proxy_protocol_errors_total",
        &[("listener", "mx"), ("reason", "invalid_v2")],
        0.0,
    );
}

#[test]
fn proxy_line_from_an_untrusted_address_is_500_and_the_session_goes_on() {
    let (dir, _ca, leaf) = setup("pp-untrusted");
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let balancer = unique_ip();
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("proxy_protocol_from", &format!("[\"{balancer}/32\"]"))
        .start();
    let stranger = unique_ip();
    let mut stream = connect_from(stranger, proxy.addr());
    // Sent first, as a balancer would: it must not be honoured nor reach Postfix.
    stream
        .write_all(b"PROXY TCP4 192.0.2.7 10.0.0.25 40000 25\r\n")
        .unwrap();
    let mut client = SmtpClient::from_stream(stream);
    expect_code(client.reply(), 220);
    client.reply().assert(500, "5.5.2");
    expect_code(client.cmd("EHLO client.test"), 250);
    let replies = client.mail(
        "sender@partner.example",
        &[&format!("user@{MAIL_DOMAIN}")],
        "after a refused PROXY line",
    );
    assert_eq!(replies.last().unwrap().code, 250, "{replies:?}");
    client.cmd("QUIT");
    drop(client);
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(
        ip_of(&session["client"]),
        stranger.to_string(),
        "{session:?}"
    );
    assert_eq!(session["client"], session["peer"], "{session:?}");
    let mail = backend.wait_delivered(1);
    assert!(!mail[0].contains("192.0.2.7"), "{}", mail[0]);
    assert!(
        !backend.maillog().contains("PROXY"),
        "the PROXY line reached Postfix:\n{}",
        backend.maillog()
    );
    proxy.assert_metric(
        "starttls_proxy_proxy_protocol_errors_total",
        &[("listener", "mx"), ("reason", "missing")],
        0.0,
    );
}

#[test]
fn haproxy_health_checks_with_check_send_proxy_are_v2_local_not_errors() {
    let (dir, _ca, leaf) = setup("pp-haproxy-check");
    let backend = FakeBackend::start(EhloMode::Extensions(vec!["PIPELINING".into()]));
    let listen = SocketAddr::from((unique_ip(), 2525));
    let balancer = unique_ip();
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listen_on(listen)
        .listener_key("proxy_protocol_from", &format!("[\"{balancer}\"]"))
        .start();
    let _haproxy = Haproxy::start(
        dir.path(),
        "send-proxy-v2",
        balancer,
        &[Node {
            smtp: listen,
            admin: None,
            check_smtp: true,
        }],
    );
    // Each check is a connection with a LOCAL header: a session whose client is the balancer.
    let sessions = proxy.wait_sessions(2);
    for session in &sessions {
        assert_eq!(session["client"], session["peer"], "{session:?}");
        assert_eq!(ip_of(&session["peer"]), balancer.to_string(), "{session:?}");
    }
    let metrics = proxy.metrics();
    for reason in [
        "missing",
        "timeout",
        "invalid_v1",
        "invalid_v2",
        "truncated",
    ] {
        assert_metric(
            &metrics,
            "starttls_proxy_proxy_protocol_errors_total",
            &[("listener", "mx"), ("reason", reason)],
            0.0,
        );
    }
}

#[test]
fn v2_header_from_an_untrusted_address_is_500_and_never_reaches_the_backend() {
    let (dir, _ca, leaf) = setup("pp-untrusted-v2");
    let backend = FakeBackend::start(EhloMode::Extensions(vec!["PIPELINING".into()]));
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr).start();
    let stranger = unique_ip();
    let mut stream = connect_from(stranger, proxy.addr());
    // As HAProxy's send-proxy-v2 would send it, with a TLV, before the greeting.
    let body = [v4_addresses(), vec![0x05, 0x00, 0x02, b'i', b'd']].concat();
    stream.write_all(&v2_header(0x21, 0x11, &body)).unwrap();
    let mut client = SmtpClient::from_stream(stream);
    expect_code(client.reply(), 220);
    client.reply().assert(500, "5.5.2");
    expect_code(client.cmd("EHLO client.test"), 250);
    client.cmd("QUIT").assert(221, "2.0.0");
    drop(client);
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(
        ip_of(&session["client"]),
        stranger.to_string(),
        "{session:?}"
    );
    assert_eq!(
        backend.lines(),
        vec!["EHLO client.test".to_string(), "QUIT".to_string()]
    );
}
