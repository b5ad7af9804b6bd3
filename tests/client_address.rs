//! `client_address` (issue 13, point 2): what the backend is told about the client, checked
//! where it counts, in what a real Postfix logged and wrote in its Received header.

mod common;

use common::postfix::MAIL_DOMAIN;
use common::*;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

/// Postfix reads PROXY v1 and v2 with this; no reverse look-ups (the test's addresses have no
/// PTR records, and the machine may have no DNS).
const POSTFIX_HAPROXY: &str =
    "smtpd_upstream_proxy_protocol = haproxy\nsmtpd_peername_lookup = no\n";

fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source address");
    socket.connect(&to.into()).expect("connect to the proxy");
    socket.into()
}

/// Sends one message with swaks over STARTTLS from `client_ip`; asserts Postfix's 250.
fn swaks_from(client_ip: Ipv4Addr, to: SocketAddr, subject: &str) {
    let run = swaks(
        to,
        &[
            "--local-interface",
            &client_ip.to_string(),
            "--tls",
            "--from",
            "sender@partner.example",
            "--to",
            &format!("user@{MAIL_DOMAIN}"),
            "--header",
            &format!("Subject: {subject}"),
        ],
    );
    assert_eq!(run.code, 0, "swaks:\n{}", run.all());
}

/// The message whose Subject is `subject`, as Postfix delivered it.
fn delivered_with(backend: &Postfix, n: usize, subject: &str) -> String {
    backend
        .wait_delivered(n)
        .into_iter()
        .find(|m| m.contains(subject))
        .unwrap_or_else(|| panic!("no message with {subject:?} delivered"))
}

fn postfix_sees_the_client(mode: &str) {
    let (dir, _ca, leaf) = setup(&format!("ca-{mode}"));
    let backend = Postfix::backend_with(dir.path(), "legacy", POSTFIX_HAPROXY);
    let balancer = unique_ip();
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("client_address", &format!("{mode:?}"))
        .listener_key("proxy_protocol_from", &format!("[\"{balancer}\"]"))
        .start();

    // A client straight at the proxy, over STARTTLS.
    let client_ip = unique_ip();
    swaks_from(client_ip, proxy.addr(), "direct client");
    let mail = delivered_with(&backend, 1, "direct client");
    assert!(
        mail.contains(&format!("(unknown [{client_ip}])")),
        "{mode}: Received header does not name the client {client_ip}:\n{mail}"
    );
    backend.wait_maillog(&format!("connect from unknown[{client_ip}]"));

    // A client behind a balancer: the address its header carried goes on to Postfix.
    let behind = unique_ip();
    let mut stream = connect_from(balancer, proxy.addr());
    stream
        .write_all(format!("PROXY TCP4 {behind} 10.0.0.25 40001 25\r\n").as_bytes())
        .unwrap();
    let mut client = SmtpClient::from_stream(stream);
    assert_eq!(client.reply().code, 220);
    assert_eq!(client.cmd("EHLO behind.test").code, 250);
    let replies = client.mail(
        "sender@partner.example",
        &[&format!("user@{MAIL_DOMAIN}")],
        "behind a balancer",
    );
    assert_eq!(replies.last().unwrap().code, 250, "{replies:?}");
    client.cmd("QUIT");
    drop(client);
    let mail = delivered_with(&backend, 2, "behind a balancer");
    assert!(
        mail.contains(&format!("(unknown [{behind}])")),
        "{mode}: Received header does not name the balancer's client {behind}:\n{mail}"
    );
    backend.wait_maillog(&format!("connect from unknown[{behind}]"));
    // The proxy's own address never reached Postfix as a client.
    assert!(
        !backend.maillog().contains("connect from localhost"),
        "{}",
        backend.maillog()
    );
}

#[test]
fn proxy_v1_tells_postfix_the_real_client() {
    postfix_sees_the_client("proxy-v1");
}

#[test]
fn proxy_v2_tells_postfix_the_real_client() {
    postfix_sees_the_client("proxy-v2");
}

/// Postfix trusting the proxy's address for XCLIENT (the proxy connects from 127.0.0.1).
const POSTFIX_XCLIENT: &str =
    "smtpd_authorized_xclient_hosts = 127.0.0.0/8\nsmtpd_peername_lookup = no\n";

#[test]
fn xclient_tells_an_authorizing_postfix_the_client_around_starttls() {
    let (dir, _ca, leaf) = setup("ca-xclient");
    let backend = Postfix::backend_with(dir.path(), "legacy", POSTFIX_XCLIENT);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("client_address", "\"xclient\"")
        .start();
    let client_ip = unique_ip();
    let run = swaks(
        proxy.addr(),
        &[
            "--local-interface",
            &client_ip.to_string(),
            "--ehlo",
            "client.example",
            "--tls",
            "--from",
            "sender@partner.example",
            "--to",
            &format!("user@{MAIL_DOMAIN}"),
            "--header",
            "Subject: xclient over starttls",
        ],
    );
    assert_eq!(run.code, 0, "swaks:\n{}", run.all());
    // The client never sees XCLIENT offered, before or inside TLS.
    assert!(!run.stdout.contains("XCLIENT"), "{}", run.stdout);
    let mail = delivered_with(&backend, 1, "xclient over starttls");
    assert!(
        mail.contains(&format!("from client.example (unknown [{client_ip}])")),
        "Received header does not name the client {client_ip} and its EHLO:\n{mail}"
    );
    backend.wait_maillog(&format!("client=unknown[{client_ip}]"));
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(session["client_address"], "xclient", "{session:?}");
    assert_eq!(session["tls"], "yes", "{session:?}");
    proxy.assert_metric(
        "starttls_proxy_xclient_unavailable_total",
        &[("listener", "mx")],
        0.0,
    );
}

#[test]
fn xclient_not_offered_by_postfix_goes_on_as_none_counted_and_logged() {
    let (dir, _ca, leaf) = setup("ca-xclient-no");
    // Postfix offers XCLIENT only to smtpd_authorized_xclient_hosts: here, nobody.
    let backend = Postfix::backend_with(dir.path(), "legacy", "smtpd_peername_lookup = no\n");
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("client_address", "\"xclient\"")
        .start();
    let client_ip = unique_ip();
    swaks_from(client_ip, proxy.addr(), "xclient unavailable");
    let mail = delivered_with(&backend, 1, "xclient unavailable");
    assert!(
        !mail.contains(&format!("[{client_ip}]")),
        "the client reached Postfix without XCLIENT?\n{mail}"
    );
    let event = proxy.wait_event("xclient_unavailable", &[("reason", "not_offered")]);
    assert_eq!(event["listener"], "mx", "{event:?}");
    assert_eq!(
        event["client"].split(':').next(),
        Some(client_ip.to_string().as_str())
    );
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(session["client_address"], "none", "{session:?}");
    assert_eq!(session["outcome"], "ok", "{session:?}");
    proxy.assert_metric(
        "starttls_proxy_xclient_unavailable_total",
        &[("listener", "mx")],
        1.0,
    );
}

#[test]
fn xclient_refused_leaves_the_backend_as_it_was_and_clients_cannot_send_it() {
    let (dir, _ca, leaf) = setup("ca-xclient-refused");
    // Offers XCLIENT, then answers it 502: the one case Postfix itself cannot show.
    let backend = FakeBackend::start(common::backend::EhloMode::Extensions(vec![
        "PIPELINING".into(),
        "XCLIENT NAME ADDR PORT HELO".into(),
    ]));
    let proxy = ProxyBuilder::new(dir.path(), &leaf, backend.addr)
        .listener_key("client_address", "\"xclient\"")
        .start();
    let (mut client, _) = SmtpClient::greeted(proxy.addr());
    let ehlo = client.cmd("EHLO client.example");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(!ehlo.has_extension("XCLIENT"), "{ehlo:?}");
    assert!(ehlo.has_extension("STARTTLS"), "{ehlo:?}");
    // A client's own XCLIENT never reaches the backend.
    client.cmd("XCLIENT ADDR=192.0.2.1").assert(550, "5.7.0");
    client.cmd("XFORWARD ADDR=192.0.2.1").assert(550, "5.7.0");
    assert_eq!(client.cmd("NOOP").code, 250);
    client.cmd("QUIT");
    drop(client);
    proxy.wait_event("xclient_unavailable", &[("reason", "refused")]);
    let lines = backend.lines();
    assert_eq!(lines[0], "EHLO proxy.test", "{lines:?}");
    assert!(lines[1].starts_with("XCLIENT ADDR="), "{lines:?}");
    assert_eq!(lines[2], "EHLO client.example", "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("192.0.2.1")), "{lines:?}");
    let session = proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(session["client_address"], "none", "{session:?}");
    proxy.assert_metric(
        "starttls_proxy_xclient_unavailable_total",
        &[("listener", "mx")],
        1.0,
    );
}
